// Sessions per device (a family is a session): the list, ending one, logout of the others, the
// metadata from the trusted proxy hop only, and the absolute lifetime no rotation can pass.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt, signHs } from '../support/http';
import { eventually, startTestApp, TEST_SIGNING_KEY, type TestApp } from '../support/test-app';

let t: TestApp;
beforeAll(async () => {
  // One trusted proxy in front, as behind nginx: the last X-Forwarded-For entry is the client.
  t = await startTestApp({ TRUST_PROXY_HOPS: '1' });
  await t.user('frank', 'frank-password-1');
  await t.user('grace', 'grace-password-1');
});
afterAll(() => t.stop());

const device = (userAgent: string, forwardedFor: string) => ({ 'User-Agent': userAgent, 'X-Forwarded-For': forwardedFor });
async function login(username: string, headers: Record<string, string> = {}) {
  const r = await t.request('POST', '/api/token/', { json: { username, password: `${username}-password-1` }, headers });
  expect(r.status, r.text).toBe(200);
  return { ...(r.json as { access: string; refresh: string }), sid: decodeJwt(r.json.access).payload.sid as string };
}
const bearer = (access: string) => ({ headers: { Authorization: `Bearer ${access}` } });
const sessions = async (access: string) => {
  const r = await t.request('GET', '/api/sessions/', bearer(access));
  expect(r.status, r.text).toBe(200);
  return r.json as { id: string; created_at: string; last_used_at: string; user_agent: string; ip: string; current: boolean }[];
};
const endAll = async (username: string) => (await t.request('POST', '/api/token/logout-all/', bearer((await login(username)).access))).status;

describe('GET /api/sessions/', () => {
  it('lists the live sessions with their device, the client address from the trusted hop only, and marks the current one', async () => {
    await endAll('frank');
    const laptop = await login('frank', device('laptop-browser', '198.51.100.66, 192.0.2.10'));
    const before = Date.now();
    const phone = await login('frank', device('phone-app', '192.0.2.20'));
    const list = await sessions(laptop.access);
    expect(list.map((s) => [s.id, s.user_agent, s.ip, s.current])).toEqual([
      [phone.sid, 'phone-app', '192.0.2.20', false],
      [laptop.sid, 'laptop-browser', '192.0.2.10', true], // not 198.51.100.66, which the client wrote
    ]);
    const p = list[0]!;
    expect(Object.keys(p)).toEqual(['id', 'created_at', 'last_used_at', 'user_agent', 'ip', 'current']);
    expect(new Date(p.created_at).toISOString()).toBe(p.created_at);
    expect(Date.parse(p.created_at)).toBeGreaterThanOrEqual(before - 1000);
    expect(p.last_used_at).toBe(p.created_at);
    const r = await t.request('GET', '/api/sessions/', bearer(phone.access));
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect((r.json as { current: boolean; id: string }[]).find((s) => s.current)!.id).toBe(phone.sid);
  });

  it('records each refresh: when, and from which device and address', async () => {
    await endAll('frank');
    const s = await login('frank', device('old-agent', '192.0.2.30'));
    t.clock.advance(60);
    const r = await t.request('POST', '/api/token/refresh/', { json: { refresh: s.refresh }, headers: device('new-agent', '192.0.2.31') });
    expect(r.status).toBe(200);
    const [listed] = await sessions(r.json.access);
    expect(listed).toMatchObject({ id: s.sid, user_agent: 'new-agent', ip: '192.0.2.31', current: true });
    expect(Date.parse(listed!.last_used_at) - Date.parse(listed!.created_at)).toBeGreaterThanOrEqual(59_000);
    const [row] = await t.db.rows<{ login_user_agent: string; login_ip: string }>('SELECT login_user_agent, login_ip FROM token_families WHERE id = $1', [s.sid]);
    expect(row).toEqual({ login_user_agent: 'old-agent', login_ip: '192.0.2.30' });
    t.clock.reset();
  });

  it('leaves out ended, expired and replayed sessions', async () => {
    await endAll('frank');
    const live = await login('frank');
    const loggedOut = await login('frank');
    await t.post('/api/token/blacklist/', { refresh: loggedOut.refresh });
    const replayed = await login('frank');
    await t.post('/api/token/refresh/', { refresh: replayed.refresh });
    await t.post('/api/token/refresh/', { refresh: replayed.refresh }); // a replay: the family is revoked
    expect((await sessions(live.access)).map((s) => s.id)).toEqual([live.sid]);
    t.clock.advance(86400 + 1); // every refresh token has expired
    const fresh = await login('frank');
    expect((await sessions(fresh.access)).map((s) => s.id)).toEqual([fresh.sid]);
    t.clock.reset();
  });
});

describe('DELETE /api/sessions/<id>/', () => {
  it("ends one of the caller's sessions: its access tokens stop at once, its refresh token is refused", async () => {
    const mine = await login('frank');
    const other = await login('frank');
    const r = await t.request('DELETE', `/api/sessions/${other.sid}/`, bearer(mine.access));
    expect(r.status, r.text).toBe(204);
    expect(r.text).toBe('');
    await eventually(async () => (await t.request('GET', '/api/me/', bearer(other.access))).status === 401);
    expect((await t.post('/api/token/refresh/', { refresh: other.refresh })).status).toBe(401);
    expect((await t.request('GET', '/api/me/', bearer(mine.access))).status).toBe(200);
    expect((await sessions(mine.access)).map((s) => s.id)).not.toContain(other.sid);
    // Ended already: nothing left to end.
    expect((await t.request('DELETE', `/api/sessions/${other.sid}/`, bearer(mine.access))).status).toBe(404);
  });

  it("answers 404 for another user's session, which goes on working, and for ids that are not sessions", async () => {
    const franks = await login('frank');
    const graces = await login('grace');
    const r = await t.request('DELETE', `/api/sessions/${graces.sid}/`, bearer(franks.access));
    expect(r.status).toBe(404);
    expect(r.json).toEqual({ detail: 'Not found.', code: 'not_found' });
    expect((await t.post('/api/token/refresh/', { refresh: graces.refresh })).status).toBe(200);
    for (const id of ['not-a-uuid', '00000000-0000-0000-0000-000000000000', crypto.randomUUID(), `${franks.sid.toUpperCase()}x`]) {
      expect((await t.request('DELETE', `/api/sessions/${id}/`, bearer(franks.access))).status, id).toBe(404);
    }
    expect((await t.request('DELETE', `/api/sessions/${graces.sid}/`)).status).toBe(401);
    expect((await t.request('GET', '/api/sessions/')).status).toBe(401);
  });

  it('leaves no usable token when ending a session races its refresh', async () => {
    const mine = await login('frank');
    for (let i = 0; i < 10; i++) {
      const victim = await login('frank');
      const [refreshed] = await Promise.all([
        t.post('/api/token/refresh/', { refresh: victim.refresh }),
        t.request('DELETE', `/api/sessions/${victim.sid}/`, bearer(mine.access)),
      ]);
      // Whichever came first, the session is over: a token the refresh may have won is refused too.
      if (refreshed.status === 200) expect((await t.post('/api/token/refresh/', { refresh: refreshed.json.refresh })).status).toBe(401);
      expect((await t.post('/api/token/refresh/', { refresh: victim.refresh })).status).toBe(401);
    }
  });
});

describe('POST /api/token/logout-all/?scope=others', () => {
  it("ends every session but the caller's, which goes on", async () => {
    const keep = await login('frank');
    const others = [await login('frank'), await login('frank')];
    const graces = await login('grace');
    const r = await t.request('POST', '/api/token/logout-all/?scope=others', bearer(keep.access));
    expect(r.status, r.text).toBe(200);
    expect(r.json).toEqual({});
    for (const o of others) {
      await eventually(async () => (await t.request('GET', '/api/me/', bearer(o.access))).status === 401);
      expect((await t.post('/api/token/refresh/', { refresh: o.refresh })).status).toBe(401);
    }
    expect((await t.request('GET', '/api/me/', bearer(keep.access))).status).toBe(200);
    expect((await t.post('/api/token/refresh/', { refresh: keep.refresh })).status).toBe(200);
    expect((await t.post('/api/token/refresh/', { refresh: graces.refresh })).status).toBe(200);
  });

  it('refuses an unknown scope as DRF does; scope=all (the default) ends the caller too', async () => {
    const s = await login('frank');
    const bad = await t.request('POST', '/api/token/logout-all/?scope=mine', bearer(s.access));
    expect(bad.status).toBe(400);
    expect(bad.json).toEqual({ scope: ['"mine" is not a valid choice.'] });
    expect((await t.request('POST', '/api/token/logout-all/?scope=all', bearer(s.access))).status).toBe(200);
    await eventually(async () => (await t.request('GET', '/api/me/', bearer(s.access))).status === 401);
    expect((await t.post('/api/token/refresh/', { refresh: s.refresh })).status).toBe(401);
  });
});

describe('SESSION_MAX_LIFETIME', () => {
  let short: TestApp;
  beforeAll(async () => {
    short = await startTestApp({ SESSION_MAX_LIFETIME: '2h', REFRESH_TOKEN_LIFETIME: '1h' }, { databaseUrl: t.config.databaseUrl });
  });
  afterAll(() => short.stop());

  it('no rotation carries a session past it: tokens and the cookie are capped, then refused', async () => {
    short.clock.freeze();
    const start = Math.floor(short.clock() / 1000);
    const end = start + 7200;
    let { refresh } = await short.login('frank', 'frank-password-1');
    expect(decodeJwt(refresh).payload.exp).toBe(start + 3600);
    short.clock.advance(50 * 60);
    refresh = (await short.post('/api/token/refresh/', { refresh })).json.refresh;
    expect(decodeJwt(refresh).payload.exp).toBe(start + 50 * 60 + 3600); // still short of the end
    short.clock.advance(50 * 60); // 1h40m: a rotation now would run to 2h40m
    const capped = await short.request('POST', '/api/token/refresh/', { json: { refresh }, headers: { 'X-Token-Transport': 'cookie' } });
    expect(capped.status, capped.text).toBe(200);
    const cookie = capped.headers.getSetCookie()[0]!;
    refresh = /^__Host-refresh=([^;]+)/.exec(cookie)![1]!;
    expect(decodeJwt(refresh).payload.exp).toBe(end);
    // 20 minutes, not an hour, and never beyond the session's end.
    const maxAge = Number(/Max-Age=(\d+);/.exec(cookie)![1]);
    expect(maxAge).toBeLessThanOrEqual(end - short.clock() / 1000);
    expect(maxAge).toBeGreaterThan(end - short.clock() / 1000 - 1);
    const [row] = await short.db.rows<{ expires_at: Date }>('SELECT expires_at FROM refresh_tokens WHERE jti = $1', [decodeJwt(refresh).payload.jti]);
    expect(row!.expires_at.getTime()).toBe(end * 1000);
    short.clock.advance(18 * 60); // 1h58m: the access token ends with the session too
    const late = await short.post('/api/token/refresh/', { refresh });
    expect(late.status).toBe(200);
    expect(decodeJwt(late.json.access).payload.exp).toBe(end);
    expect(decodeJwt(late.json.refresh).payload.exp).toBe(end);
    short.clock.advance(3 * 60); // 2h01m
    const over = await short.post('/api/token/refresh/', { refresh: late.json.refresh });
    expect(over.status).toBe(401);
    expect(over.json).toEqual({ detail: 'Token is invalid or expired', code: 'token_not_valid' });
    short.clock.reset();
  });

  it('is enforced by the database, whatever a token says', async () => {
    const { refresh } = await short.login('frank', 'frank-password-1');
    const { jti } = decodeJwt(refresh).payload;
    // As if the session had started long ago: its end has passed, though the token has not expired.
    await short.db.rows(
      `UPDATE token_families SET expires_at = now() - interval '1 second' WHERE id = (SELECT family_id FROM refresh_tokens WHERE jti = $1)`,
      [jti],
    );
    const r = await short.post('/api/token/refresh/', { refresh });
    expect(r.status).toBe(401);
    expect(r.json).toEqual({ detail: 'Token is invalid or expired', code: 'token_not_valid' });
  });
});

describe('a recent login for listing and ending sessions (SESSION_REAUTH_AGE, auth_time)', () => {
  let app: TestApp;
  let frozen: TestApp;
  beforeAll(async () => {
    await t.user('heidi', 'heidi-password-1');
    app = await startTestApp({ SESSION_REAUTH_AGE: '15m' }, { databaseUrl: t.config.databaseUrl });
    frozen = await startTestApp({ ROTATE_REFRESH_TOKENS: 'false' }, { databaseUrl: t.config.databaseUrl });
  });
  afterAll(async () => {
    await app.stop();
    await frozen.stop();
  });
  const heidi = async (on: TestApp) => {
    const pair = await on.login('heidi', 'heidi-password-1');
    return { ...pair, sid: decodeJwt(pair.access).payload.sid as string };
  };
  const forbidden = { detail: 'This needs a login from the last 15 minutes: log in again and retry with the new access token.', code: 'reauthentication_required' };
  const as = (on: TestApp, access: string) => ({
    list: () => on.request('GET', '/api/sessions/', bearer(access)),
    end: (id: string) => on.request('DELETE', `/api/sessions/${id}/`, bearer(access)),
    logoutAll: (scope: string) => on.request('POST', `/api/token/logout-all/?scope=${scope}`, bearer(access)),
  });

  it('puts the login time in auth_time and keeps it across refreshes, rotating or not', async () => {
    for (const on of [app, frozen]) {
      on.clock.freeze();
      const login = await heidi(on);
      const loginAt = Math.floor(on.clock() / 1000);
      expect(decodeJwt(login.access).payload).toMatchObject({ auth_time: loginAt, iat: loginAt });
      expect(decodeJwt(login.refresh).payload.auth_time).toBeUndefined(); // the refresh token's session row has it
      on.clock.advance(10 * 60);
      const r = await on.post('/api/token/refresh/', { refresh: login.refresh });
      expect(r.status, r.text).toBe(200);
      expect(decodeJwt(r.json.access).payload).toMatchObject({ auth_time: loginAt, iat: loginAt + 600 });
      on.clock.reset();
    }
  });

  it('past the age, answers 403 reauthentication_required to listing, ending one and logout of the others, and ends nothing', async () => {
    const other = await heidi(app);
    const old = await heidi(app);
    app.clock.advance(15 * 60 + 1);
    try {
      // The access token is minutes old; its login is not.
      const refreshed = await app.post('/api/token/refresh/', { refresh: old.refresh });
      expect(refreshed.status).toBe(200);
      const stale = as(app, refreshed.json.access);
      for (const r of [await stale.list(), await stale.end(other.sid), await stale.logoutAll('others')]) {
        expect(r.status, r.text).toBe(403);
        expect(r.json).toEqual(forbidden);
      }
      // Nothing was ended: the other session still refreshes.
      const still = await app.post('/api/token/refresh/', { refresh: other.refresh });
      expect(still.status, still.text).toBe(200);
      // A fresh login (the password again) may: it lists both and ends the other.
      const fresh = as(app, (await heidi(app)).access);
      const listed = await fresh.list();
      expect(listed.status).toBe(200);
      expect((listed.json as { id: string }[]).map((s) => s.id)).toEqual(expect.arrayContaining([other.sid, old.sid]));
      expect((await fresh.end(other.sid)).status).toBe(204);
    } finally {
      app.clock.reset();
    }
  });

  it('lets an old login log out everywhere (scope=all): it ends the caller too, the thief included', async () => {
    await t.user('ivan', 'ivan-password-1');
    const elsewhere = await app.login('ivan', 'ivan-password-1');
    const old = await app.login('ivan', 'ivan-password-1');
    app.clock.advance(30 * 60);
    try {
      const refreshed = await app.post('/api/token/refresh/', { refresh: old.refresh });
      const everywhere = await as(app, refreshed.json.access).logoutAll('all');
      expect(everywhere.status, everywhere.text).toBe(200);
      await eventually(async () => (await app.request('GET', '/api/me/', bearer(refreshed.json.access))).status === 401);
      for (const refresh of [elsewhere.refresh, refreshed.json.refresh]) expect((await app.post('/api/token/refresh/', { refresh })).status).toBe(401);
    } finally {
      app.clock.reset();
    }
  });

  it('within the age, lists and ends; exactly at the age still counts', async () => {
    app.clock.freeze();
    try {
      const a = await heidi(app);
      const b = await heidi(app);
      app.clock.advance(15 * 60);
      const r = await app.post('/api/token/refresh/', { refresh: a.refresh });
      expect((await as(app, r.json.access).list()).status).toBe(200);
      expect((await as(app, r.json.access).end(b.sid)).status).toBe(204);
    } finally {
      app.clock.reset();
    }
  });

  it('counts a token without auth_time (from the previous release) as an old login', async () => {
    const s = await heidi(app);
    const { auth_time: _, ...claims } = decodeJwt(s.access).payload;
    const legacy = signHs(claims, TEST_SIGNING_KEY);
    expect((await app.request('GET', '/api/me/', bearer(legacy))).status).toBe(200);
    const r = await as(app, legacy).list();
    expect(r.status).toBe(403);
    expect(r.json).toEqual(forbidden);
    // A malformed auth_time is no token of ours.
    for (const bad of ['yesterday', -5, 1.5, Math.floor(Date.now() / 1000) + 3600]) {
      const odd = await app.request('GET', '/api/me/', bearer(signHs({ ...claims, auth_time: bad }, TEST_SIGNING_KEY)));
      expect(odd.status, String(bad)).toBe(401);
    }
  });
});
