// Refresh-token families: atomic rotation, reuse detection, logout, expiry, account state.
import { QueryTypes } from 'sequelize';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { flushExpired } from '../../app/auth/families';
import { recordSuccessfulLogin } from '../../app/auth/logins';
import { loginKeys } from '../../app/auth/throttle';
import { revocationWindowMs } from '../../app/auth/revocations';
import { changePassword, deactivateUser } from '../../app/auth/users';
import { decodeJwt, type Reply } from '../support/http';
import { eventually, startTestApp, type TestApp } from '../support/test-app';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
  await t.user('alice', 'alice-password-1');
});
afterAll(() => t.stop());

const refresh = (token: string) => t.post('/api/token/refresh/', { refresh: token });
const me = (access: string) => t.request('GET', '/api/me/', { headers: { Authorization: `Bearer ${access}` } });
const blacklisted = { detail: 'Token is blacklisted', code: 'token_not_valid' };

async function familyOf(refreshToken: string) {
  const jti = decodeJwt(refreshToken).payload.jti as string;
  const row = await t.db.models.RefreshToken.findByPk(jti);
  return t.db.models.TokenFamily.findByPk(row!.familyId);
}

describe('rotation', () => {
  it('chains tokens in one family, parent to child, and stores no raw token', async () => {
    const pair = await t.login('alice', 'alice-password-1');
    const r1 = await refresh(pair.refresh);
    const r2 = await refresh(r1.json.refresh);
    expect(r2.status).toBe(200);
    const jtis = [pair.refresh, r1.json.refresh, r2.json.refresh].map((tok) => decodeJwt(tok).payload.jti as string);
    const rows = await t.db.models.RefreshToken.findAll({ where: { jti: jtis } });
    const byJti = new Map(rows.map((r) => [r.jti, r]));
    expect(new Set(rows.map((r) => r.familyId)).size).toBe(1);
    expect(byJti.get(jtis[0]!)!.parentJti).toBeNull();
    expect(byJti.get(jtis[1]!)!.parentJti).toBe(jtis[0]);
    expect(byJti.get(jtis[2]!)!.parentJti).toBe(jtis[1]);
    expect(byJti.get(jtis[0]!)!.rotatedAt).not.toBeNull();
    expect(byJti.get(jtis[2]!)!.rotatedAt).toBeNull();
    // The access tokens name their family.
    expect(decodeJwt(r2.json.access).payload.sid).toBe(rows[0]!.familyId);
    const dump = JSON.stringify(await t.db.sequelize.query('SELECT * FROM refresh_tokens', { type: QueryTypes.SELECT }));
    for (const tok of [pair.refresh, r1.json.refresh]) expect(dump).not.toContain(tok.split('.')[2]);
  });

  it('revokes the whole family when a rotated token is replayed', async () => {
    const pair = await t.login('alice', 'alice-password-1');
    const r1 = await refresh(pair.refresh);
    const r2 = await refresh(r1.json.refresh);
    expect(r2.status).toBe(200);
    // An attacker replays the first token: refused, and every descendant dies with it.
    const replay = await refresh(pair.refresh);
    expect(replay.status).toBe(401);
    expect(replay.json).toEqual(blacklisted);
    expect((await refresh(r2.json.refresh)).json).toEqual(blacklisted);
    expect((await t.post('/api/token/blacklist/', { refresh: r2.json.refresh })).status).toBe(401);
    const family = await familyOf(pair.refresh);
    expect(family!.revokedAt).not.toBeNull();
    expect(family!.revokeReason).toBe('reuse');
    // Other sessions of the same user are untouched.
    const other = await t.login('alice', 'alice-password-1');
    expect((await refresh(other.refresh)).status).toBe(200);
  });

  it('lets exactly one of 50 concurrent refreshes of one token through', async () => {
    const pair = await t.login('alice', 'alice-password-1');
    const results = await Promise.all(Array.from({ length: 50 }, () => refresh(pair.refresh)));
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    expect(statuses.filter((s) => s === 401)).toHaveLength(49);
    for (const r of results.filter((x) => x.status === 401)) expect(r.json).toEqual(blacklisted);
    // One child token only.
    const jti = decodeJwt(pair.refresh).payload.jti;
    expect(await t.db.models.RefreshToken.count({ where: { parentJti: jti } })).toBe(1);
  });
});

describe('blacklist (logout of one session)', () => {
  it('revokes the family: no refresh from any of its tokens', async () => {
    const pair = await t.login('alice', 'alice-password-1');
    const r1 = await refresh(pair.refresh);
    expect((await t.post('/api/token/blacklist/', { refresh: r1.json.refresh })).status).toBe(200);
    const family = await familyOf(r1.json.refresh);
    expect(family!.revokeReason).toBe('logout');
    expect((await refresh(r1.json.refresh)).json).toEqual(blacklisted);
  });

  it('treats logging out with an already-rotated token as a replay', async () => {
    const pair = await t.login('alice', 'alice-password-1');
    const r1 = await refresh(pair.refresh);
    const r = await t.post('/api/token/blacklist/', { refresh: pair.refresh });
    expect(r.status).toBe(401);
    expect(r.json).toEqual(blacklisted);
    expect((await refresh(r1.json.refresh)).json).toEqual(blacklisted);
    expect((await familyOf(pair.refresh))!.revokeReason).toBe('reuse');
  });

  // A forced interleaving, not timing luck: the test holds the token's row lock, queues the two
  // requests behind it in a chosen order (watching them wait in pg_stat_activity), then lets go.
  async function inOrder(first: () => Promise<Reply>, second: () => Promise<Reply>, jti: string): Promise<[Reply, Reply]> {
    const waiting = async () => {
      const [row] = await t.db.sequelize.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
        { type: QueryTypes.SELECT },
      );
      return row!.n;
    };
    const blocker = await t.db.sequelize.transaction();
    let replies: Promise<[Reply, Reply]>;
    try {
      await t.db.models.RefreshToken.findByPk(jti, { lock: blocker.LOCK.UPDATE, transaction: blocker });
      const a = first();
      await eventually(async () => (await waiting()) === 1);
      const b = second();
      await eventually(async () => (await waiting()) === 2);
      replies = Promise.all([a, b]);
    } finally {
      await blocker.commit();
    }
    return replies;
  }

  it('orders a logout and a refresh of one token by its row: exactly one of them uses it, and the session ends', async () => {
    const logout = (token: string) => () => t.post('/api/token/blacklist/', { refresh: token });
    // The refresh first: the logout then presents a rotated token, a replay, and the family dies.
    const a = await t.login('alice', 'alice-password-1');
    const [renewed, late] = await inOrder(() => refresh(a.refresh), logout(a.refresh), decodeJwt(a.refresh).payload.jti);
    expect([renewed.status, late.status]).toEqual([200, 401]);
    expect(late.json).toEqual(blacklisted);
    expect((await familyOf(a.refresh))!.revokeReason).toBe('reuse');
    expect((await refresh(renewed.json.refresh)).json).toEqual(blacklisted);
    // The logout first: the refresh is refused.
    const b = await t.login('alice', 'alice-password-1');
    const [loggedOut, refused] = await inOrder(logout(b.refresh), () => refresh(b.refresh), decodeJwt(b.refresh).payload.jti);
    expect([loggedOut.status, refused.status]).toEqual([200, 401]);
    expect(refused.json).toEqual(blacklisted);
    expect((await familyOf(b.refresh))!.revokeReason).toBe('logout');
  });
});

describe('expiry (injected clock)', () => {
  afterEach(() => t.clock.reset());

  it('expires access tokens after ACCESS_TOKEN_LIFETIME and refresh tokens after REFRESH_TOKEN_LIFETIME', async () => {
    // Frozen: with real time running, a second boundary between the login and the check at 299 s
    // made the token one second older than the test meant (seen once in a `.ci/run`).
    t.clock.freeze();
    const pair = await t.login('alice', 'alice-password-1');
    t.clock.advance(299);
    expect((await me(pair.access)).status).toBe(200);
    t.clock.advance(1);
    expect((await me(pair.access)).json.messages[0].message).toBe('Token is invalid or expired');
    const renewed = await refresh(pair.refresh);
    expect(renewed.status).toBe(200);
    expect((await me(renewed.json.access)).status).toBe(200);
    t.clock.advance(86400);
    const late = await refresh(renewed.json.refresh);
    expect(late.status).toBe(401);
    expect(late.json).toEqual({ detail: 'Token is invalid or expired', code: 'token_not_valid' });
  });
});

describe('account state', () => {
  const noActive = { detail: 'No active account found with the given credentials', code: 'no_active_account' };

  it('refuses refresh for an inactive user, and deactivation ends every session', async () => {
    await t.user('dora', 'dora-password-1');
    const a = await t.login('dora', 'dora-password-1');
    const b = await t.login('dora', 'dora-password-1');
    const { revokedSessions } = await deactivateUser(t.db, 'dora', new Date());
    expect(revokedSessions).toBe(2);
    for (const pair of [a, b]) {
      const r = await refresh(pair.refresh);
      expect(r.status).toBe(401);
      expect(r.json).toEqual(noActive);
    }
  });

  it('refuses refresh for a deleted user', async () => {
    const id = await t.user('erin', 'erin-password-1');
    const pair = await t.login('erin', 'erin-password-1');
    await t.db.models.User.destroy({ where: { id } });
    const r = await refresh(pair.refresh);
    expect(r.status).toBe(401);
    expect(r.json).toEqual(noActive);
    // Deletion voids the user's access tokens in every worker at once (a trigger, then NOTIFY).
    await eventually(async () => (await me(pair.access)).json?.messages?.[0]?.message === 'Token is blacklisted');
  });

  it('ends every session on a password change; the new password works, the old does not', async () => {
    await t.user('fay', 'fay-password-1');
    const pair = await t.login('fay', 'fay-password-1');
    await changePassword(t.db, t.hasher, 'fay', 'fay-password-2', new Date(t.clock()));
    expect((await refresh(pair.refresh)).json).toEqual(blacklisted);
    expect((await t.post('/api/token/', { username: 'fay', password: 'fay-password-1' })).status).toBe(401);
    expect((await t.post('/api/token/', { username: 'fay', password: 'fay-password-2' })).status).toBe(200);
  });
});

describe('settings', () => {
  it('ROTATE_REFRESH_TOKENS=false: refresh gives only an access token and the refresh token stays valid', async () => {
    const app = await startTestApp({ ROTATE_REFRESH_TOKENS: 'false' });
    try {
      await app.user('gus', 'gus-password-1');
      const pair = await app.login('gus', 'gus-password-1');
      for (let i = 0; i < 2; i++) {
        const r = await app.post('/api/token/refresh/', { refresh: pair.refresh });
        expect(r.status).toBe(200);
        expect(Object.keys(r.json)).toEqual(['access']);
      }
      expect((await app.post('/api/token/blacklist/', { refresh: pair.refresh })).status).toBe(200);
      expect((await app.post('/api/token/refresh/', { refresh: pair.refresh })).json).toEqual(blacklisted);
    } finally {
      await app.stop();
    }
  });

  it('BLACKLIST_AFTER_ROTATION=false: rotation leaves the old token usable', async () => {
    const app = await startTestApp({ BLACKLIST_AFTER_ROTATION: 'false' });
    try {
      await app.user('hal', 'hal-password-1');
      const pair = await app.login('hal', 'hal-password-1');
      const r1 = await app.post('/api/token/refresh/', { refresh: pair.refresh });
      const r2 = await app.post('/api/token/refresh/', { refresh: pair.refresh });
      expect([r1.status, r2.status]).toEqual([200, 200]);
      expect(Object.keys(r1.json)).toEqual(['access', 'refresh']);
    } finally {
      await app.stop();
    }
  });
});

describe('a login\'s record (one statement: app/auth/logins.ts)', () => {
  it('writes the session, its first token and the throttle\'s success together; last_login only with UPDATE_LAST_LOGIN', async () => {
    for (const updateLastLogin of [false, true]) {
      const app = await startTestApp({ UPDATE_LAST_LOGIN: String(updateLastLogin) });
      try {
        const name = updateLastLogin ? 'lena' : 'lars';
        const id = await app.user(name, `${name}-password-1`);
        // A failed attempt first: the address has a throttle record, and is not known yet.
        expect((await app.post('/api/token/', { username: name, password: 'wrong-password-1' })).status).toBe(401);
        const pair = await app.login(name, `${name}-password-1`);
        const token = await app.db.models.RefreshToken.findByPk(decodeJwt(pair.refresh).payload.jti as string);
        const family = await app.db.models.TokenFamily.findByPk(token!.familyId);
        expect(family).toMatchObject({ userId: id, revokedAt: null, lastUsedAt: family!.createdAt });
        expect(Math.abs(family!.expiresAt.getTime() - family!.createdAt.getTime() - 30 * 86_400_000)).toBeLessThan(1000); // SESSION_MAX_LIFETIME's default
        expect(decodeJwt(pair.access).payload.sid).toBe(family!.id);
        expect(token!.expiresAt.getTime()).toBe((decodeJwt(pair.refresh).payload.exp as number) * 1000);
        const keys = loginKeys(name, family!.loginIp);
        const rows = await app.db.sequelize.query<{ key: string }>('SELECT key FROM auth_throttle WHERE key = :a UNION ALL SELECT key FROM auth_known_addresses WHERE key = :k', {
          replacements: { a: keys.address, k: keys.known },
          type: QueryTypes.SELECT,
        });
        expect(rows.map((r) => r.key)).toEqual([keys.known]); // the address's count cleared, the address known
        const user = await app.db.models.User.findByPk(id);
        expect(user!.lastLogin).toEqual(updateLastLogin ? family!.createdAt : null);
      } finally {
        await app.stop();
      }
    }
  });

  it('writes nothing for a user changed since the login read it (password, deactivation), or inactive', async () => {
    const changed = await t.user('pia', 'pia-password-1');
    await changePassword(t.db, t.hasher, 'pia', 'pia-password-2', new Date(t.clock())); // active, its generation moved
    const deactivated = await t.user('dirk', 'dirk-password-1');
    await deactivateUser(t.db, 'dirk', new Date(t.clock()));
    const inactive = await t.user('ines', 'ines-password-1', { active: false }); // generation 0, as read
    // The path with a webhook receiver for login.succeeded: the statement in a transaction with the event.
    const withEvents = { ...t.db, outbox: { endpoints: ['families-test'], events: new Set(['login.succeeded'] as const) } };
    const now = new Date(t.clock());
    for (const [name, userId] of [['pia', changed], ['dirk', deactivated], ['ines', inactive]] as const) {
      const keys = loginKeys(name, '127.0.0.1');
      // The address has a failed attempt on record: a refused record must leave it.
      await t.db.models.Throttle.create({ key: keys.address, count: 1, startedAt: now, updatedAt: now });
      const jti = `${name}-first-token`;
      const login = { userId, generation: 0, token: { jti, expiresAt: now }, now, sessionEnds: now, client: { userAgent: 'test', ip: '127.0.0.1' } };
      for (const db of [t.db, withEvents]) {
        for (const lastLogin of [false, true]) expect(await recordSuccessfulLogin(db, { ...login, lastLogin, throttle: keys })).toBeNull();
      }
      expect(await t.db.models.TokenFamily.count({ where: { userId } })).toBe(0);
      expect(await t.db.models.RefreshToken.findByPk(jti)).toBeNull();
      expect(await t.db.models.Throttle.count({ where: { key: keys.address } })).toBe(1);
      expect(await t.db.models.KnownAddress.count({ where: { key: keys.known } })).toBe(0);
      expect((await t.db.models.User.findByPk(userId))!.lastLogin).toBeNull();
    }
    expect(await t.db.models.WebhookOutbox.count({ where: { endpoint: 'families-test' } })).toBe(0);
  });
});

describe('flushExpired', () => {
  it('deletes revoked families and cutoffs once no access token they stop can still be valid, keeping newer ones', async () => {
    const { TokenFamily, UserRevocation } = t.db.models;
    const window = revocationWindowMs(t.config.jwt);
    await t.user('flush', 'flush-password-1');
    const old = await t.login('flush', 'flush-password-1');
    const recent = await t.login('flush', 'flush-password-1');
    const live = await t.login('flush', 'flush-password-1');
    const now = new Date(t.clock());
    const sidOf = (access: string) => decodeJwt(access).payload.sid as string;
    // Revoked just past the window, and just within it; a cutoff each side too.
    await TokenFamily.update({ revokedAt: new Date(now.getTime() - window - 1000), revokeReason: 'logout' }, { where: { id: sidOf(old.access) } });
    await TokenFamily.update({ revokedAt: new Date(now.getTime() - window + 60_000), revokeReason: 'logout' }, { where: { id: sidOf(recent.access) } });
    const userId = Number(decodeJwt(live.access).payload.user_id);
    const oldCut = await UserRevocation.create({ userId, notBefore: new Date(now.getTime() - window - 1000), reason: 'logout_all' });
    const newCut = await UserRevocation.create({ userId, notBefore: new Date(now.getTime() - window + 60_000), reason: 'logout_all' });

    const result = await flushExpired(t.db, now, window);
    expect(result.families).toBeGreaterThanOrEqual(1);
    expect(result.cutoffs).toBeGreaterThanOrEqual(1);
    expect(await TokenFamily.findByPk(sidOf(old.access))).toBeNull(); // its tokens went with it (cascade)
    expect(await t.db.models.RefreshToken.findByPk(decodeJwt(old.refresh).payload.jti as string)).toBeNull();
    expect(await TokenFamily.findByPk(sidOf(recent.access))).not.toBeNull();
    expect(await TokenFamily.findByPk(sidOf(live.access))).not.toBeNull();
    expect(await UserRevocation.findByPk(oldCut.id)).toBeNull();
    expect(await UserRevocation.findByPk(newCut.id)).not.toBeNull();
    // A flushed family's refresh token is refused as any unknown one; the live session still rotates.
    expect((await refresh(old.refresh)).status).toBe(401);
    expect((await refresh(live.refresh)).status).toBe(200);
  });

  it('keeps a family revoked within the window though it has no refresh token left: its access token stays refused across a flush and a reload', async () => {
    // ROTATE_REFRESH_TOKENS=false: the refresh token's expiry is fixed at its login, so an access token
    // taken from it just before it expires outlives it.
    const app = await startTestApp({ ROTATE_REFRESH_TOKENS: 'false' });
    let reloaded: TestApp | undefined;
    try {
      await app.user('flora', 'flora-password-1');
      const pair = await app.login('flora', 'flora-password-1');
      app.clock.advance(app.config.jwt.refreshTokenLifetime - 10);
      const late = await app.post('/api/token/refresh/', { refresh: pair.refresh });
      expect(late.status, late.text).toBe(200);
      const access = late.json.access as string;
      expect((await app.post('/api/token/blacklist/', { refresh: pair.refresh })).status).toBe(200);
      const sid = decodeJwt(access).payload.sid as string;
      // The refresh token expires; the access token (5 minutes) has most of its life left.
      app.clock.advance(20);
      const now = new Date(app.clock());
      const flushed = await flushExpired(app.db, now, revocationWindowMs(app.config.jwt));
      expect(flushed.tokens).toBe(1);
      expect(await app.db.models.TokenFamily.findByPk(sid)).not.toBeNull();
      // A worker that loads its state now (a restart, a feed reconnect) still knows the revocation.
      reloaded = await startTestApp({ ROTATE_REFRESH_TOKENS: 'false' }, { databaseUrl: app.config.databaseUrl });
      reloaded.clock.advance(app.config.jwt.refreshTokenLifetime + 10);
      const r = await reloaded.request('GET', '/api/me/', { headers: { Authorization: `Bearer ${access}` } });
      expect(r.status, r.text).toBe(401);
      expect(r.json.messages[0].message).toBe('Token is blacklisted');
      // Once the window has passed, the family goes: no access token it could stop is valid any more.
      const later = new Date(now.getTime() + revocationWindowMs(app.config.jwt) + 1000);
      await flushExpired(app.db, later, revocationWindowMs(app.config.jwt));
      expect(await app.db.models.TokenFamily.findByPk(sid)).toBeNull();
    } finally {
      await reloaded?.stop();
      await app.stop();
    }
  });
});
