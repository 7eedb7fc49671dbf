// A small HTTP client and JWT helpers for tests (no dependency on the code under test).
import { createHmac } from 'node:crypto';
import https from 'node:https';

export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- test assertions read arbitrary JSON
}

export interface RequestOptions {
  json?: unknown;
  body?: string | Buffer | URLSearchParams | FormData;
  headers?: Record<string, string>;
  /** Aborts the request (AbortSignal.timeout(ms): a hang becomes an error instead of a stuck test). */
  signal?: AbortSignal;
}

export async function request(base: string, method: string, path: string, opts: RequestOptions = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...opts.headers };
  let body: RequestInit['body'];
  if (opts.json !== undefined) {
    body = JSON.stringify(opts.json);
    if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) headers['Content-Type'] = 'application/json';
  } else if (opts.body !== undefined) {
    body = opts.body as RequestInit['body'];
  }
  const res = await fetch(base + path, { method, headers, body, redirect: 'manual', ...(opts.signal ? { signal: opts.signal } : {}) });
  const text = await res.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

export const b64url = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

export function decodeJwt(token: string): { header: any; payload: any; raw: string[] } { // eslint-disable-line @typescript-eslint/no-explicit-any -- decoded JSON
  const raw = token.split('.');
  return {
    header: JSON.parse(Buffer.from(raw[0]!, 'base64url').toString()),
    payload: JSON.parse(Buffer.from(raw[1]!, 'base64url').toString()),
    raw,
  };
}

/** Signs any header and payload with HMAC (or none), for crafting odd tokens. */
export function signHs(payload: unknown, key: string, header: Record<string, unknown> = { alg: 'HS256', typ: 'JWT' }): string {
  const input = `${b64url(header)}.${b64url(payload)}`;
  const alg = header.alg;
  if (alg === 'none') return `${input}.`;
  const digest = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[alg as string] ?? 'sha256';
  return `${input}.${createHmac(digest, key).update(input).digest('base64url')}`;
}

/** Flips a character in the middle of the signature (the last one may only touch padding bits). */
export function tamper(token: string): string {
  const [h, p, s] = token.split('.') as [string, string, string];
  const i = Math.floor(s.length / 2);
  return `${h}.${p}.${s.slice(0, i)}${s[i] === 'A' ? 'B' : 'A'}${s.slice(i + 1)}`;
}

/**
 * `request`, over HTTPS with a CA of the test's own (fetch has no per-request CA): keep-alive
 * connections, the server's certificate checked against `ca` for the name `servername` whatever
 * address is dialled (a certificate for a name, served by several nodes).
 */
export function tlsRequester(options: { ca: string; servername: string; timeoutMs?: number }) {
  const agent = new https.Agent({ keepAlive: true, ca: options.ca, servername: options.servername, maxSockets: 32 });
  const send = (base: string, method: string, path: string, opts: RequestOptions = {}): Promise<Reply> => {
    const headers: Record<string, string> = { ...opts.headers };
    let body: string | Buffer | undefined;
    if (opts.json !== undefined) {
      body = JSON.stringify(opts.json);
      if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) headers['Content-Type'] = 'application/json';
    } else if (typeof opts.body === 'string' || Buffer.isBuffer(opts.body)) {
      body = opts.body;
    } else if (opts.body !== undefined) {
      throw new Error('tlsRequester sends strings and buffers only');
    }
    return new Promise((resolve, reject) => {
      const req = https.request(new URL(path, base), { method, headers, agent, timeout: options.timeoutMs ?? 60_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const h = new Headers();
          for (const [name, value] of Object.entries(res.headers)) {
            for (const v of Array.isArray(value) ? value : [value]) if (v !== undefined) h.append(name, v);
          }
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: h, text, json });
        });
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${options.timeoutMs ?? 60_000} ms`)));
      req.on('error', reject);
      req.end(body);
    });
  };
  return { request: send, close: () => agent.destroy() };
}
