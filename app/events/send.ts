// One delivery attempt: a POST to a receiver, on Node's own http/https (no redirect is ever
// followed: a 3xx is a failed attempt, as the Standard Webhooks spec advises), with a deadline for
// connecting and one for the whole exchange, reading at most a small part of the answer. A 2xx is a
// delivery; anything else, or no answer in time, is a failed attempt to retry.
import http from 'node:http';
import https from 'node:https';

export type Attempt =
  | { ok: true; status: number }
  | { ok: false; status?: number; error: string; /** From Retry-After on a 429 or 503. */ retryAfterMs?: number };

export interface SendOptions {
  timeoutMs: number;
  connectTimeoutMs: number;
  /** Bytes of the answer read at most; the connection is dropped beyond. */
  responseLimitBytes?: number;
  clock?: () => number;
}

export type Send = (url: string, headers: Record<string, string>, body: string) => Promise<Attempt>;

const USER_AGENT = 'koa-auth-stack-webhooks/1';
const RESPONSE_LIMIT = 16 * 1024;

/** Retry-After in milliseconds: delay-seconds or an HTTP-date (RFC 9110 §10.2.3). */
export function retryAfterMs(header: string | undefined, now: number): number | undefined {
  if (!header) return undefined;
  const value = header.trim();
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** A sender with its own kept-alive connections. */
export function createSender(options: SendOptions): Send & { close(): void } {
  const agents = {
    'http:': new http.Agent({ keepAlive: true, maxSockets: 32 }),
    'https:': new https.Agent({ keepAlive: true, maxSockets: 32 }),
  };
  const limit = options.responseLimitBytes ?? RESPONSE_LIMIT;
  const clock = options.clock ?? Date.now;

  const send: Send = (url, headers, body) =>
    new Promise<Attempt>((resolve) => {
      const target = new URL(url);
      const payload = Buffer.from(body);
      const lib = target.protocol === 'https:' ? https : http;
      let settled = false;
      let connectTimer: NodeJS.Timeout | undefined;
      const finish = (attempt: Attempt) => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        clearTimeout(connectTimer);
        resolve(attempt);
      };
      const req = lib.request(target, {
        method: 'POST',
        agent: agents[target.protocol as 'http:' | 'https:'],
        headers: { ...headers, 'content-type': 'application/json', 'content-length': payload.length, 'user-agent': USER_AGENT },
      });
      const deadline = setTimeout(() => req.destroy(new Error(`no answer within ${options.timeoutMs} ms`)), options.timeoutMs);
      req.on('socket', (socket) => {
        if (!socket.connecting) return; // a kept-alive connection
        connectTimer = setTimeout(() => req.destroy(new Error(`could not connect within ${options.connectTimeoutMs} ms`)), options.connectTimeoutMs);
        socket.once('connect', () => clearTimeout(connectTimer));
      });
      req.on('error', (err: NodeJS.ErrnoException) => finish({ ok: false, error: err.code && err.code !== 'ERR_STREAM_DESTROYED' ? `${err.code}: ${err.message}` : err.message }));
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        let read = 0;
        const settle = () => {
          if (status >= 200 && status < 300) return finish({ ok: true, status });
          const wait = status === 429 || status === 503 ? retryAfterMs(res.headers['retry-after'], clock()) : undefined;
          const error = status >= 300 && status < 400 ? `HTTP ${status} (redirects are not followed)` : `HTTP ${status}`;
          finish({ ok: false, status, error, ...(wait !== undefined ? { retryAfterMs: wait } : {}) });
        };
        res.on('data', (chunk: Buffer) => {
          read += chunk.length;
          // The status is what counts; a receiver that answers at length gets its connection closed.
          if (read > limit) {
            res.destroy();
            settle();
          }
        });
        res.on('end', settle);
        res.on('error', settle);
        res.on('close', settle);
      });
      req.end(payload);
    });

  return Object.assign(send, {
    close() {
      agents['http:'].destroy();
      agents['https:'].destroy();
    },
  });
}
