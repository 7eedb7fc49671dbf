// The cookie transport for browsers (X-Token-Transport: cookie) and the CORS policy that keeps other
// origins from using it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt, type Reply } from '../support/http';
import { eventually, startTestApp, type TestApp } from '../support/test-app';

const ALLOWED = 'https://app.example.test';
const COOKIE = { 'X-Token-Transport': 'cookie' };

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp({ CORS_ALLOWED_ORIGINS: `${ALLOWED}, http://localhost:5173` });
  await t.user('dana', 'dana-password-1');
});
afterAll(() => t.stop());

const setCookies = (r: Reply) => r.headers.getSetCookie();
/** The refresh token the answer set, checked to carry every attribute. */
function refreshFrom(r: Reply): string {
  const [header, ...more] = setCookies(r);
  expect(more).toEqual([]);
  // A __Host- cookie: Secure, Path=/, and no Domain, so no other host can set one that shadows it.
  const m = /^__Host-refresh=([^;]+); Max-Age=(\d+); Path=\/; HttpOnly; Secure; SameSite=Strict$/.exec(header ?? '');
  expect(m, header).not.toBeNull();
  const token = m![1]!;
  const { exp } = decodeJwt(token).payload;
  expect(Math.abs(Number(m![2]) - (exp - Math.floor(t.clock() / 1000)))).toBeLessThanOrEqual(1);
  return token;
}
function expectCleared(r: Reply) {
  expect(setCookies(r)).toEqual(['__Host-refresh=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Strict']);
}
const login = () => t.request('POST', '/api/token/', { json: { username: 'dana', password: 'dana-password-1' }, headers: COOKIE });
const withCookie = (token: string, headers: Record<string, string> = COOKIE) => ({ headers: { ...headers, Cookie: `__Host-refresh=${token}` } });
const LEGACY_CLEARED = '__Secure-refresh=; Max-Age=0; Path=/api/token/; HttpOnly; Secure; SameSite=Strict';

describe('cookie transport', () => {
  it('logs in with the refresh token in an HttpOnly cookie and only the access token in the body', async () => {
    const r = await login();
    expect(r.status, r.text).toBe(200);
    expect(Object.keys(r.json)).toEqual(['access']);
    expect(r.headers.get('cache-control')).toBe('no-store');
    const refresh = refreshFrom(r);
    expect(decodeJwt(refresh).payload.token_type).toBe('refresh');
    expect(decodeJwt(refresh).payload.exp - decodeJwt(refresh).payload.iat).toBe(86400);
    expect((await t.request('GET', '/api/me/', { headers: { Authorization: `Bearer ${r.json.access}` } })).status).toBe(200);
  });

  it('refreshes from the cookie with no body, rotating it; the old cookie is then a replay', async () => {
    const first = refreshFrom(await login());
    const r = await t.request('POST', '/api/token/refresh/', withCookie(first));
    expect(r.status, r.text).toBe(200);
    expect(Object.keys(r.json)).toEqual(['access']);
    const second = refreshFrom(r);
    expect(decodeJwt(second).payload.jti).not.toBe(decodeJwt(first).payload.jti);
    // Replaying the rotated token revokes the family, and the answer clears the cookie.
    const replay = await t.request('POST', '/api/token/refresh/', withCookie(first));
    expect(replay.status).toBe(401);
    expect(replay.json).toEqual({ detail: 'Token is blacklisted', code: 'token_not_valid' });
    expectCleared(replay);
    expect((await t.request('POST', '/api/token/refresh/', withCookie(second))).status).toBe(401);
  });

  it('also takes the refresh token from the body, still answering with the cookie', async () => {
    const json = await t.post('/api/token/', { username: 'dana', password: 'dana-password-1' });
    const r = await t.request('POST', '/api/token/refresh/', { json: { refresh: json.json.refresh }, headers: COOKIE });
    expect(r.status, r.text).toBe(200);
    expect(Object.keys(r.json)).toEqual(['access']);
    refreshFrom(r);
    const blank = await t.request('POST', '/api/token/refresh/', { json: { refresh: ' ' }, headers: COOKIE });
    expect(blank.status).toBe(400);
    expect(blank.json).toEqual({ refresh: ['This field may not be blank.'] });
  });

  it('ignores the cookie without the header: no refresh, no logout, the session unharmed', async () => {
    const token = refreshFrom(await login());
    for (const path of ['/api/token/refresh/', '/api/token/blacklist/']) {
      const r = await t.request('POST', path, withCookie(token, {}));
      expect(r.status, path).toBe(400);
      expect(r.json).toEqual({ refresh: ['This field is required.'] });
      expect(setCookies(r)).toEqual([]);
      // A form post (what a cross-site page can send without a preflight) is no different.
      const form = await t.request('POST', path, { ...withCookie(token, {}), body: new URLSearchParams({ x: '1' }) });
      expect(form.status).toBe(400);
    }
    expect((await t.request('POST', '/api/token/refresh/', withCookie(token))).status).toBe(200);
  });

  it('logs out from the cookie: the family is revoked and the cookie cleared', async () => {
    const r0 = await login();
    const token = refreshFrom(r0);
    const out = await t.request('POST', '/api/token/blacklist/', withCookie(token));
    expect(out.status, out.text).toBe(200);
    expect(out.json).toEqual({});
    expectCleared(out);
    const again = await t.request('POST', '/api/token/refresh/', withCookie(token));
    expect(again.status).toBe(401);
    expectCleared(again);
    // Its access token stops too, once the revocation has reached the worker (NOTIFY).
    await eventually(async () => (await t.request('GET', '/api/me/', { headers: { Authorization: `Bearer ${r0.json.access}` } })).status === 401);
  });

  it('answers 401 when the browser has no cookie, and 400 for another transport', async () => {
    for (const path of ['/api/token/refresh/', '/api/token/blacklist/']) {
      const r = await t.request('POST', path, { headers: COOKIE });
      expect(r.status).toBe(401);
      expect(r.json).toEqual({ detail: 'Authentication credentials were not provided.', code: 'not_authenticated' });
      expect(r.headers.get('www-authenticate')).toBe('Bearer realm="api"');
    }
    const r = await t.request('POST', '/api/token/', { json: { username: 'dana', password: 'dana-password-1' }, headers: { 'X-Token-Transport': 'body' } });
    expect(r.status).toBe(400);
    expect(r.json).toEqual({ detail: 'X-Token-Transport must be "cookie" when sent.', code: 'bad_token_transport' });
    expect(setCookies(r)).toEqual([]);
  });
});

describe('a planted cookie (issue 15, item 2)', () => {
  it('refuses a request that carries the refresh cookie twice with 400, and clears and rotates nothing', async () => {
    const token = refreshFrom(await login());
    // What a page on a sibling subdomain could once make the browser send: its cookie first, ours after.
    for (const cookie of [`__Host-refresh=junk; __Host-refresh=${token}`, `__Host-refresh=${token}; other=1; __Host-refresh=${token}`]) {
      for (const path of ['/api/token/refresh/', '/api/token/blacklist/']) {
        const r = await t.request('POST', path, { headers: { ...COOKIE, Cookie: cookie } });
        expect(r.status, `${path} ${r.text}`).toBe(400);
        expect(r.json).toEqual({
          detail: 'The __Host-refresh cookie was sent more than once; another site may have set one. Nothing was changed.',
          code: 'duplicate_refresh_cookie',
        });
        expect(setCookies(r)).toEqual([]);
      }
    }
    // Two Cookie header lines are one list to the server (Node joins them): the same answer.
    const raw = await fetch(`${t.url}/api/token/refresh/`, { method: 'POST', headers: [['X-Token-Transport', 'cookie'], ['Cookie', '__Host-refresh=junk'], ['Cookie', `__Host-refresh=${token}`]] });
    expect(raw.status).toBe(400);
    expect(raw.headers.getSetCookie()).toEqual([]);
    // The real session was never touched: its cookie still refreshes.
    const r = await t.request('POST', '/api/token/refresh/', withCookie(token));
    expect(r.status, r.text).toBe(200);
    // Look-alike names are other cookies: not read, not counted.
    const alike = await t.request('POST', '/api/token/refresh/', { headers: { ...COOKIE, Cookie: `__host-refresh=junk; __Host-refresh=${refreshFrom(r)}; x__Host-refresh=1` } });
    expect(alike.status, alike.text).toBe(200);
  });

  it("never continues a session from the previous release's __Secure-refresh cookie: refresh answers 401 and clears it", async () => {
    const json = await t.post('/api/token/', { username: 'dana', password: 'dana-password-1' });
    const legacy = json.json.refresh as string; // what a browser kept in __Secure-refresh before the upgrade
    const r = await t.request('POST', '/api/token/refresh/', { headers: { ...COOKIE, Cookie: `__Secure-refresh=${legacy}` } });
    expect(r.status).toBe(401);
    expect(r.json).toEqual({ detail: 'Authentication credentials were not provided.', code: 'not_authenticated' });
    expect(setCookies(r)).toEqual(['__Host-refresh=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Strict', LEGACY_CLEARED]);
    // Not stuck: a login sets the new cookie, and the old one is dropped on the way.
    const again = await t.request('POST', '/api/token/', { json: { username: 'dana', password: 'dana-password-1' }, headers: { ...COOKIE, Cookie: `__Secure-refresh=${legacy}` } });
    expect(again.status).toBe(200);
    expect(setCookies(again)).toEqual([expect.stringMatching(/^__Host-refresh=[^;]+; Max-Age=\d+; Path=\/;/), LEGACY_CLEARED]);
    // With both, the new one is used and the old one dropped.
    const both = await t.request('POST', '/api/token/refresh/', { headers: { ...COOKIE, Cookie: `__Secure-refresh=${legacy}; __Host-refresh=${/^__Host-refresh=([^;]+)/.exec(setCookies(again)[0]!)![1]}` } });
    expect(both.status, both.text).toBe(200);
    expect(setCookies(both)).toEqual([expect.stringMatching(/^__Host-refresh=/), LEGACY_CLEARED]);
  });

  it("ends the previous release's session on logout, and clears its cookie", async () => {
    const r0 = await t.post('/api/token/', { username: 'dana', password: 'dana-password-1' });
    const out = await t.request('POST', '/api/token/blacklist/', { headers: { ...COOKIE, Cookie: `__Secure-refresh=${r0.json.refresh}` } });
    expect(out.status, out.text).toBe(200);
    expect(setCookies(out)).toEqual(['__Host-refresh=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Strict', LEGACY_CLEARED]);
    expect((await t.post('/api/token/refresh/', { refresh: r0.json.refresh })).status).toBe(401);
    // Sent twice, it is refused like the new name, and nothing is ended.
    const r1 = await t.post('/api/token/', { username: 'dana', password: 'dana-password-1' });
    const twice = await t.request('POST', '/api/token/blacklist/', { headers: { ...COOKIE, Cookie: `__Secure-refresh=junk; __Secure-refresh=${r1.json.refresh}` } });
    expect(twice.status).toBe(400);
    expect(twice.json.code).toBe('duplicate_refresh_cookie');
    expect(setCookies(twice)).toEqual([]);
    expect((await t.post('/api/token/refresh/', { refresh: r1.json.refresh })).status).toBe(200);
  });
});

describe('CORS', () => {
  const preflight = (origin: string, method = 'POST', headers = 'content-type, x-token-transport') =>
    t.request('OPTIONS', '/api/token/refresh/', {
      headers: { Origin: origin, 'Access-Control-Request-Method': method, 'Access-Control-Request-Headers': headers },
    });

  it('answers a preflight from a listed origin, credentials and the transport header allowed', async () => {
    const r = await preflight(ALLOWED);
    expect(r.status).toBe(204);
    expect(r.headers.get('access-control-allow-origin')).toBe(ALLOWED);
    expect(r.headers.get('access-control-allow-credentials')).toBe('true');
    expect(r.headers.get('access-control-allow-headers')).toBe('Authorization,Content-Type,X-Token-Transport');
    expect(r.headers.get('access-control-allow-methods')).toBe('GET,HEAD,POST,DELETE');
    expect(r.headers.get('vary')).toMatch(/Origin/);
  });

  it('refuses a preflight from any other origin, and sends no CORS header to it', async () => {
    for (const origin of ['https://evil.example.test', 'https://app.example.test:8443', 'http://app.example.test', 'null', 'https://APP.example.test']) {
      const r = await preflight(origin);
      expect(r.status, origin).toBe(403);
      expect(r.json).toEqual({ detail: 'Cross-origin requests from this origin are not allowed.', code: 'cors_origin_not_allowed' });
      expect(r.headers.get('access-control-allow-origin')).toBeNull();
      expect(r.headers.get('access-control-allow-credentials')).toBeNull();
    }
  });

  it('labels answers for a listed origin, errors included, and no others', async () => {
    const ok = await t.request('POST', '/api/token/', { json: { username: 'dana', password: 'dana-password-1' }, headers: { ...COOKIE, Origin: ALLOWED } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('access-control-allow-origin')).toBe(ALLOWED);
    expect(ok.headers.get('vary')).toBe('Origin, Accept');
    const denied = await t.request('GET', '/api/me/', { headers: { Origin: ALLOWED } });
    expect(denied.status).toBe(401);
    expect(denied.headers.get('access-control-allow-origin')).toBe(ALLOWED);
    expect(denied.headers.get('access-control-allow-credentials')).toBe('true');
    const other = await t.request('POST', '/api/token/', { json: { username: 'dana', password: 'dana-password-1' }, headers: { Origin: 'https://evil.example.test' } });
    expect(other.status).toBe(200); // a simple request reaches the server; the browser withholds the answer
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });
});
