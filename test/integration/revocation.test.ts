// Instant revocation across workers: two app instances on one database stand for two PM2 workers.
import { QueryTypes } from 'sequelize';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Claims } from '../../app/auth/tokens';
import { changePassword, deactivateUser } from '../../app/auth/users';
import { decodeJwt, type Reply } from '../support/http';
import { eventually, freshDatabase, startTestApp, type TestApp } from '../support/test-app';

let a: TestApp;
let b: TestApp;
beforeAll(async () => {
  const databaseUrl = await freshDatabase();
  a = await startTestApp({}, { databaseUrl });
  b = await startTestApp({}, { databaseUrl, reconnectDelayMs: 1_500 });
});
afterAll(async () => {
  await a.stop();
  await b.stop();
});

const bearer = (token: string) => ({ headers: { Authorization: `Bearer ${token}` } });
const me = (app: TestApp, access: string) => app.request('GET', '/api/me/', bearer(access));
const isBlacklisted = (r: Reply) => r.status === 401 && r.json?.messages?.[0]?.message === 'Token is blacklisted';
const rejectedBy = async (app: TestApp, access: string) => isBlacklisted(await me(app, access));

let n = 0;
async function newUser() {
  const name = `user${n++}`;
  await a.user(name, `${name}-password`);
  return { name, login: () => a.login(name, `${name}-password`) };
}

describe('revocation reaches every worker', () => {
  it('logout (blacklist) stops the access tokens of that session in the other worker', async () => {
    const u = await newUser();
    const session = await u.login();
    const other = await u.login();
    expect((await me(b, session.access)).status).toBe(200);
    expect((await a.post('/api/token/blacklist/', { refresh: session.refresh })).status).toBe(200);
    await eventually(() => rejectedBy(b, session.access));
    expect(await rejectedBy(a, session.access)).toBe(true);
    expect((await me(b, other.access)).status).toBe(200); // another session lives on
    const verify = await b.post('/api/token/verify/', { token: session.access });
    expect(verify.status).toBe(400);
    expect(verify.json).toEqual({ non_field_errors: ['Token is blacklisted'] });
  });

  it('a replayed refresh token stops every access token of its family', async () => {
    const u = await newUser();
    const first = await u.login();
    const rotated = (await a.post('/api/token/refresh/', { refresh: first.refresh })).json;
    expect((await me(b, rotated.access)).status).toBe(200);
    expect((await b.post('/api/token/refresh/', { refresh: first.refresh })).status).toBe(401); // the replay
    await eventually(() => rejectedBy(a, rotated.access));
    await eventually(() => rejectedBy(b, first.access));
  });

  it('logout-all ends every session of the caller, and nobody else', async () => {
    const u = await newUser();
    const v = await newUser();
    const s1 = await u.login();
    const s2 = await u.login();
    const bystander = await v.login();
    // Frozen from the logout-all to the next login: that login's token is issued in the cutoff's
    // own second, the closest a token can come to it and survive.
    a.clock.freeze();
    try {
      const cutoffSecond = Math.floor(a.clock() / 1000);
      const r = await a.request('POST', '/api/token/logout-all/', bearer(s1.access));
      expect(r.status).toBe(200);
      expect(r.json).toEqual({});
      for (const s of [s1, s2]) {
        await eventually(() => rejectedBy(b, s.access));
        expect((await b.post('/api/token/refresh/', { refresh: s.refresh })).json.detail).toBe('Token is blacklisted');
      }
      expect((await me(b, bystander.access)).status).toBe(200);
      // b holds the cutoff (its families alone would refuse s1 and s2): a token of the second before is void.
      const claims = decodeJwt(s1.access).payload as Claims;
      await eventually(() => b.revocations.isRevoked({ ...claims, sid: undefined, iat: cutoffSecond - 1 }, Number(claims.user_id)));
      const again = await u.login();
      expect(decodeJwt(again.access).payload.iat).toBe(cutoffSecond);
      expect((await me(b, again.access)).status).toBe(200);
    } finally {
      a.clock.reset();
    }
  });

  it('logout-all needs a valid access token', async () => {
    expect((await a.request('POST', '/api/token/logout-all/')).status).toBe(401);
    const u = await newUser();
    const s = await u.login();
    expect((await a.request('POST', '/api/token/logout-all/', bearer(s.refresh))).json.messages[0].message).toBe('Token has wrong type');
    expect((await a.request('GET', '/api/token/logout-all/', bearer(s.access))).status).toBe(405);
  });

  it('a password change or a deactivation (from the CLI) stops access tokens at once', async () => {
    const u = await newUser();
    const s = await u.login();
    await changePassword(a.db, a.hasher, u.name, 'a-brand-new-password', new Date());
    await eventually(() => rejectedBy(b, s.access));

    const w = await newUser();
    const t = await w.login();
    await deactivateUser(a.db, w.name, new Date());
    await eventually(() => rejectedBy(b, t.access));
  });

  it('an operator deactivating or deleting with plain SQL is heard too (triggers)', async () => {
    const u = await newUser();
    const s = await u.login();
    await a.db.sequelize.query('UPDATE users SET is_active = false WHERE username = $1', { bind: [u.name] });
    await eventually(() => rejectedBy(b, s.access));

    const w = await newUser();
    const t = await w.login();
    await a.db.sequelize.query('DELETE FROM users WHERE username = $1', { bind: [w.name] });
    await eventually(() => rejectedBy(b, t.access));
  });
});

describe('no database query per request', () => {
  it('serves GET /api/me/ with a valid token without touching the database', async () => {
    const u = await newUser();
    const s = await u.login();
    const before = b.db.statementCount();
    for (let i = 0; i < 20; i++) expect((await me(b, s.access)).status).toBe(200);
    expect(b.db.statementCount()).toBe(before);
    // The counter does count: a login sends statements.
    await b.login(u.name, `${u.name}-password`);
    expect(b.db.statementCount()).toBeGreaterThan(before);
  });
});

describe('the state is reloaded in full', () => {
  it('on start: a worker started after a revocation knows it', async () => {
    const u = await newUser();
    const s = await u.login();
    expect((await a.post('/api/token/blacklist/', { refresh: s.refresh })).status).toBe(200);
    const late = await startTestApp({}, { databaseUrl: a.config.databaseUrl });
    try {
      expect(await rejectedBy(late, s.access)).toBe(true);
    } finally {
      await late.stop();
    }
  });

  it('on reconnect: a revocation made while the feed was disconnected is picked up', async () => {
    const u = await newUser();
    const s = await u.login();
    const sid = decodeJwt(s.access).payload.sid as string;
    // Cut worker b's LISTEN connection; it reconnects after 1.5 s.
    const [cut] = await a.db.sequelize.query<{ ok: boolean }>('SELECT pg_terminate_backend($1) AS ok', {
      bind: [b.services.feed.backendPid()],
      type: QueryTypes.SELECT,
    });
    expect(cut?.ok).toBe(true);
    await eventually(() => !b.services.feed.connected(), 2_000);
    // Revoke while b is not listening: its notification is lost to b.
    await a.db.sequelize.query(`UPDATE token_families SET revoked_at = now(), revoke_reason = 'logout' WHERE id = $1`, { bind: [sid] });
    await eventually(() => b.services.feed.connected(), 10_000);
    expect(await rejectedBy(b, s.access)).toBe(true);
  });
});
