// Cases the generated suite found, kept as regression tests: each runs on every run, at the app and
// through nginx, before the generated ones. Each names the seed that found it (FC_SEED replays it).
import type { GenRequest, RequestWorld } from './openapi-requests';
import { signHs } from '../http';

export interface Regression {
  name: string;
  request: (world: RequestWorld) => GenRequest;
}

const json = (route: string, target: string, body: unknown): GenRequest => ({
  route,
  method: 'POST',
  target,
  headers: [['Content-Type', 'application/json']],
  body: Buffer.from(JSON.stringify(body)),
});
const bearer = (route: string, method: string, target: string, token: string): GenRequest => ({ route, method, target, headers: [['Authorization', `Bearer ${token}`]] });
const header = (w: RequestWorld) => ({ alg: 'HS256', typ: 'JWT', ...(w.current.kid !== undefined ? { kid: w.current.kid } : {}) });
/** Claims of a real session's access token with some changed, signed with the key the app signs with. */
const forged = (w: RequestWorld, changes: Record<string, unknown>, from: 'access' | 'refresh' = 'access') => {
  const s = w.sessions[0]!;
  const claims = JSON.parse(Buffer.from((from === 'access' ? s.access : s.refresh).split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
  return signHs({ ...claims, ...changes }, w.current.secret, header(w));
};

export const REGRESSIONS: Regression[] = [
  // Seed 152026, the first run: the app's own answer to a request without Host (written before Koa)
  // carried none of the security headers.
  { name: 'no Host header: a 400 with the security headers', request: () => ({ route: 'me', method: 'GET', target: '/api/me/', headers: [], noHost: true }) },
  // Seed 152026, 400 cases: a refresh token signed with our key whose jti holds a NUL reached Postgres,
  // which refuses NUL in text: 500 at refresh (and so at blacklist and verify, which look it up too).
  { name: 'refresh: a jti with a NUL', request: (w) => json('tokenRefresh', '/api/token/refresh/', { refresh: forged(w, { jti: '\u0000a' }, 'refresh') }) },
  { name: 'blacklist: a jti with a NUL', request: (w) => json('tokenBlacklist', '/api/token/blacklist/', { refresh: forged(w, { jti: '\u0000a' }, 'refresh') }) },
  { name: 'verify: a refresh token whose jti holds a NUL', request: (w) => json('tokenVerify', '/api/token/verify/', { token: forged(w, { jti: 'a\u0000' }, 'refresh') }) },
  // Found by reading what the jti case suggested, then generated: a sid that is no UUID reached the
  // uuid column in logout-all?scope=others (the session it keeps).
  {
    name: 'logout-all?scope=others: a sid that is not a UUID',
    request: (w) => bearer('tokenLogoutAll', 'POST', '/api/token/logout-all/?scope=others', forged(w, { sid: 'not-a-uuid', auth_time: w.now(), iat: w.now() })),
  },
  // Seed 152026 through nginx: answers on the docs path other than the page and its assets (an
  // OPTIONS, a missing asset) carried no Content-Security-Policy: nginx left the path to the app's.
  { name: 'docs: OPTIONS /api/docs/', request: () => ({ route: 'docs', method: 'OPTIONS', target: '/api/docs/', headers: [] }) },
  { name: 'docs: a missing asset', request: () => ({ route: 'docsAsset', method: 'GET', target: '/api/docs/%01', headers: [] }) },
  { name: 'docs: a path under the docs that no route serves', request: () => ({ route: 'docsAsset', method: 'GET', target: '/api/docs/a/b', headers: [] }) },
  // Issue 15, item 1 (found by a hostile client before this suite existed): a payload that is not JSON.
  { name: 'verify: a payload segment that is truncated JSON', request: () => json('tokenVerify', '/api/token/verify/', { token: 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhIjo.c2ln' }) },
  { name: 'refresh: a payload signed with our key that is not JSON', request: (w) => json('tokenRefresh', '/api/token/refresh/', { refresh: signHs('{"a":', w.current.secret, header(w)) }) },
];
