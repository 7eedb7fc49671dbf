// The property every generated request is held to, at the app and through nginx: an answer (no
// hang), a 2xx or 4xx (a 5xx only where the document says 503), JSON in the contract's shape (a
// documented answer's schema for errors: DRF's field errors or {detail, code, …}), and the security
// headers. And the suite that runs it, per route and per layer, with a fixed seed.
import http from 'node:http';
import https from 'node:https';
import { fc, it } from '@fast-check/vitest';
import { afterAll, describe, expect } from 'vitest';
import { ErrorBody, FieldErrors, OAuthErrorBody } from '../../../app/http/openapi';
import { SECURITY_HEADERS } from '../hostile';
import { documents, operationsOf, requestsFor, tokenRequests, type GenRequest, type OpenApiDocument, type Operation, type RequestWorld } from './openapi-requests';

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** Sends one request on a keep-alive connection; rejects when no answer comes within `timeoutMs`. */
export function send(base: string, req: GenRequest, agent: http.Agent, timeoutMs = 15_000): Promise<Answer> {
  const url = new URL(base);
  const client = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const r = client.request(
      {
        host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
        port: url.port,
        method: req.method,
        path: req.target,
        agent,
        // Raw headers, so a name may come twice; Node adds no Host to those: it is written here.
        // A body's length is always given, as browsers and fetch do (Node would chunk a POST's).
        headers: [
          ...(req.noHost ? [] : ['Host', url.host]),
          ...req.headers.flat(),
          ...(req.body !== undefined || !['GET', 'HEAD', 'DELETE', 'OPTIONS'].includes(req.method) ? ['Content-Length', String(req.body?.length ?? 0)] : []),
        ],
        rejectUnauthorized: false,
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    r.on('timeout', () => r.destroy(new Error(`no answer within ${timeoutMs} ms (a hang)`)));
    r.on('error', reject);
    r.end(req.body);
  });
}

// The app's own headers on every answer (nginx replaces them with SECURITY_HEADERS).
const APP_HEADERS: Record<string, RegExp> = {
  'x-content-type-options': /^nosniff$/,
  'x-frame-options': /^DENY$/,
  'referrer-policy': /^same-origin$/,
};

const isDocs = (req: GenRequest) => /^\/api\/docs(\/|$|\?)/.test(req.target);

/** What is wrong with an answer; nothing for one that keeps the contract. */
export function problems(req: GenRequest, answer: Answer, via: 'app' | 'nginx', op: Operation | undefined): string[] {
  const out: string[] = [];
  const { status } = answer;
  if (status >= 500 && !(status === 503 && op !== undefined && documents(op, 503) && req.method === op.method)) out.push(`status ${status}`);
  if (status < 200 || status >= 600) out.push(`status ${status}`);
  for (const [name, pattern] of Object.entries(via === 'nginx' ? SECURITY_HEADERS : APP_HEADERS)) {
    const value = answer.headers[name];
    if (typeof value !== 'string' || !pattern.test(value)) out.push(`header ${name}: ${JSON.stringify(value)}`);
  }
  const bodyless = req.method === 'HEAD' || status === 204 || status === 304;
  if (bodyless) return out;
  const type = answer.headers['content-type'] ?? '';
  // The docs page and its assets are HTML, scripts and images; everything else is JSON.
  if (isDocs(req) && status === 200) return out;
  if (!/^application\/json(;|$)/.test(type)) return [...out, `content-type ${JSON.stringify(type)}`];
  let body: unknown;
  try {
    body = JSON.parse(answer.body.toString('utf8'));
  } catch {
    return [...out, `body is not JSON: ${answer.body.toString('utf8').slice(0, 80)}`];
  }
  if (status >= 400) {
    // DRF's {detail, code, …} or field errors; RFC 6749's {error, error_description} at the OAuth token endpoint.
    const shaped =
      ErrorBody.safeParse(body).success ||
      (FieldErrors.safeParse(body).success && Object.keys(body as object).length > 0) ||
      (OAuthErrorBody.safeParse(body).success && req.target.startsWith('/api/oauth/'));
    if (!shaped) out.push(`error body not in the contract's shape: ${JSON.stringify(body).slice(0, 120)}`);
  }
  return out;
}

/**
 * A login for the world's fresh sessions. A 503 (the database restarting on a loaded runner: the
 * routes document it) is waited out, polling up to a minute; anything else but a 200 fails.
 */
export async function loggedIn(login: () => Promise<{ status: number; json: unknown; text: string }>): Promise<{ access: string; refresh: string }> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const r = await login();
    if (r.status === 200) return r.json as { access: string; refresh: string };
    if (r.status !== 503 || Date.now() > deadline) throw new Error(`login for the generated suite: ${r.status} ${r.text}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** Whether an operation reads a token: a bearer token, the refresh cookie, or a token in its body. */
const readsTokens = (op: Operation) =>
  (op.spec.security ?? []).some((s) => Object.keys(s).length > 0) || JSON.stringify(op.spec.requestBody ?? {}).includes('TokenVerifyRequest');

export interface SuiteTarget {
  url: string;
  via: 'app' | 'nginx';
  world: RequestWorld;
  document: OpenApiDocument;
  /**
   * Gives the world fresh real sessions; called before each route's first case, so that every route
   * reaches the paths only a live session reaches (the cases before it end sessions by the dozen).
   */
  renew(): Promise<void>;
}

export interface SuiteOptions {
  /** Read when the tests run (the target exists by then). */
  target: () => SuiteTarget;
  /** The document the operations are taken from at collection time (checked equal to the served one). */
  document: OpenApiDocument;
  /** Requests per route; CI runs the default. */
  cases?: number;
  /** Requests in flight at once (one property run sends this many). */
  parallel?: number;
  timeoutMs?: number;
}

// A fixed seed: CI replays the same cases every time. FC_SEED explores others; a failure prints its
// seed and the case, which goes into regressions.ts.
export const SEED = Number(process.env.FC_SEED ?? 15_2026);
const DEFAULT_CASES = Number(process.env.FC_CASES ?? 1000);

interface RouteStats {
  layer: string;
  cases: number;
  ms: number;
  statuses: Map<number, number>;
}

/** Registers the generated suite: one property per documented operation, one per token route. */
export function generativeSuite(options: SuiteOptions): void {
  const cases = options.cases ?? DEFAULT_CASES;
  const parallel = options.parallel ?? 8;
  const runs = Math.ceil(cases / parallel);
  const stats = new Map<string, RouteStats>();
  const agent = new http.Agent({ keepAlive: true, maxSockets: parallel });
  const httpsAgent = new https.Agent({ keepAlive: true, maxSockets: parallel });
  const operations = operationsOf(options.document);

  async function check(layer: string, route: string, operation: string, batch: GenRequest[]): Promise<void> {
    const target = options.target();
    const op = operations.find((o) => o.id === operation);
    let s = stats.get(route);
    if (!s) {
      // Only routes that read a token use up sessions (public, token-free ones need none renewed).
      if (layer === 'tokens' || (op && readsTokens(op))) await target.renew();
      s = { layer, cases: 0, ms: 0, statuses: new Map<number, number>() };
      stats.set(route, s);
    }
    const started = Date.now();
    const answers = await Promise.all(
      batch.map((req) =>
        send(target.url, req, target.url.startsWith('https:') ? httpsAgent : agent, options.timeoutMs).then(
          (a) => ({ req, a, error: undefined as string | undefined }),
          (err: Error) => ({ req, a: undefined, error: err.message }),
        ),
      ),
    );
    s.ms += Date.now() - started;
    s.cases += batch.length;
    for (const { req, a, error } of answers) {
      if (a) s.statuses.set(a.status, (s.statuses.get(a.status) ?? 0) + 1);
      const wrong = a ? problems(req, a, target.via, op) : [`no answer: ${error}`];
      const summary = { ...req, body: req.body?.toString('latin1').slice(0, 300) };
      expect(wrong, `${JSON.stringify(summary)}\n→ ${a?.status} ${a?.body.toString('utf8').slice(0, 200)}`).toEqual([]);
    }
  }

  const property = (layer: string, route: string, operation: string, requests: fc.Arbitrary<GenRequest>) =>
    it.prop([fc.array(requests, { minLength: parallel, maxLength: parallel })], { seed: SEED, numRuns: runs, endOnFailure: false })(
      `${route}: ${runs * parallel} generated requests, never a 5xx, a hang or an answer out of the contract`,
      (batch) => check(layer, route, operation, batch),
      240_000,
    );

  describe('layer 1: requests generated from the OpenAPI document', () => {
    for (const op of operations) property('openapi', op.id, op.id, fc.constant(null).chain(() => requestsFor(options.target().document, op, options.target().world)));
  });

  describe('layer 2: tokens from the grammar, at every place a token arrives', () => {
    // Built lazily: the world (real sessions) exists once the tests run.
    for (const { route, operation } of tokenRequests(placeholderWorld)) {
      property('tokens', route, operation, fc.constant(null).chain(() => tokenRequests(options.target().world).find((r) => r.route === route)!.requests));
    }
  });

  afterAll(() => {
    agent.destroy();
    httpsAgent.destroy();
    const lines = [...stats].map(
      ([route, s]) =>
        `  ${s.layer.padEnd(8)} ${route.padEnd(40)} ${String(s.cases).padStart(5)} cases ${(s.ms / 1000).toFixed(1).padStart(6)} s  ` +
        [...s.statuses].sort(([a], [b]) => a - b).map(([code, n]) => `${code}×${n}`).join(' '),
    );
    const total = (layer: string) => [...stats.values()].filter((s) => s.layer === layer).reduce((t, s) => t + s.ms, 0) / 1000;
    console.log(
      `generated requests (${options.target().via}, seed ${SEED}):\n${lines.join('\n')}\n` +
        `  layer 1 (openapi) ${total('openapi').toFixed(1)} s, layer 2 (tokens) ${total('tokens').toFixed(1)} s`,
    );
  });
}

// Only for the route names at collection time; never generates.
const placeholderWorld: RequestWorld = {
  current: { secret: '', kid: undefined },
  sessions: [],
  clientIds: [],
  clientTokens: [],
  clients: [],
  now: () => 0,
  users: [],
  allowedOrigin: '',
  cookie: { name: '', legacy: '' },
};
