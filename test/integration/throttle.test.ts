// Brute-force throttling: progressive delays per (account, client address), shared by workers,
// surviving restarts, never a lockout of the real user; a per-account budget for addresses the account
// never logged in from; attempts reserved before hashing; and a per-session refresh limit that only
// usable tokens count against.
import { QueryTypes } from 'sequelize';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { beginLogin } from '../../app/auth/logins';
import { flushThrottle, loginKeys, reserveLoginAttempt, refreshWaitSeconds } from '../../app/auth/throttle';
import { freshDatabase, startTestApp, type TestApp } from '../support/test-app';

const ENV = {
  TRUST_PROXY_HOPS: '1', // addresses come from X-Forwarded-For, as behind nginx
  LOGIN_THROTTLE_FREE_ATTEMPTS: '3',
  LOGIN_THROTTLE_MAX_DELAY: '8s',
  LOGIN_THROTTLE_QUIET: '10m',
  // The per-account budget has its own tests below; here it stays out of the way.
  LOGIN_THROTTLE_ACCOUNT_BUDGET: '1000',
};
let databaseUrl: string;
let a: TestApp;
let b: TestApp;

beforeAll(async () => {
  databaseUrl = await freshDatabase();
  a = await startTestApp(ENV, { databaseUrl });
  b = await startTestApp(ENV, { databaseUrl });
  await a.user('alice', 'alice-password-1');
  await a.user('bob', 'bob-password-1');
});
afterAll(async () => {
  await a.stop();
  await b.stop();
});

const login = (app: TestApp, username: string, password: string, address: string) =>
  app.request('POST', '/api/token/', { json: { username, password }, headers: { 'X-Forwarded-For': address } });

describe('login throttling', () => {
  it('gives free attempts, then doubling waits up to the cap, with 429 and Retry-After', async () => {
    const from = '203.0.113.1';
    // Three free attempts; the fourth waits.
    for (let i = 0; i < 3; i++) expect((await login(a, 'alice', 'wrong', from)).status).toBe(401);
    const waits: number[] = [];
    for (let i = 0; i < 5; i++) {
      // During a wait even the right password is refused, without spending a hash.
      const blocked = await login(a, 'alice', 'alice-password-1', from);
      expect(blocked.status).toBe(429);
      expect(blocked.json.code).toBe('throttled');
      const wait = Number(blocked.headers.get('retry-after'));
      expect(blocked.json.detail).toBe(`Request was throttled. Expected available in ${wait} second${wait === 1 ? '' : 's'}.`);
      waits.push(wait);
      a.clock.advance(wait);
      expect((await login(a, 'alice', 'wrong', from)).status).toBe(401);
    }
    expect(waits).toEqual([1, 2, 4, 8, 8]);
    a.clock.advance(8);
    // The right password clears the record: the free attempts are back.
    expect((await login(a, 'alice', 'alice-password-1', from)).status).toBe(200);
    for (let i = 0; i < 3; i++) expect((await login(a, 'alice', 'wrong', from)).status).toBe(401);
    a.clock.reset();
  });

  it('never locks the real user out: an attacker slows only its own address', async () => {
    const attacker = '198.51.100.7';
    for (let i = 0; i < 10; i++) await login(a, 'bob', 'guess', attacker);
    expect((await login(a, 'bob', 'bob-password-1', attacker)).status).toBe(429);
    expect((await login(a, 'bob', 'bob-password-1', '192.0.2.44')).status).toBe(200);
  });

  it('is shared by every worker and survives a restart (it lives in Postgres)', async () => {
    const from = '203.0.113.9';
    // The failures are a minute ahead on a's clock, so the one-second wait they earn outlasts the
    // restart below however slow the machine is (the other workers read the real clock).
    a.clock.advance(60);
    for (let i = 0; i < 3; i++) expect((await login(a, 'alice', 'wrong', from)).status).toBe(401);
    a.clock.reset();
    expect((await login(b, 'alice', 'alice-password-1', from)).status).toBe(429);
    const restarted = await startTestApp(ENV, { databaseUrl });
    try {
      expect((await login(restarted, 'alice', 'alice-password-1', from)).status).toBe(429);
    } finally {
      await restarted.stop();
    }
  });

  it('forgets failures after a quiet period', async () => {
    const from = '203.0.113.77';
    for (let i = 0; i < 3; i++) await login(a, 'alice', 'wrong', from);
    expect((await login(a, 'alice', 'wrong', from)).status).toBe(429);
    a.clock.advance(11 * 60);
    expect((await login(a, 'alice', 'wrong', from)).status).toBe(401); // counted afresh: free again
    a.clock.reset();
  });

  it('throttles usernames that do not exist the same way (no probing)', async () => {
    const from = '203.0.113.100';
    for (let i = 0; i < 3; i++) expect((await login(a, 'nobody', 'x', from)).status).toBe(401);
    expect((await login(a, 'nobody', 'x', from)).status).toBe(429);
  });

  it('stores neither usernames nor addresses in clear', async () => {
    const rows = JSON.stringify(await a.db.sequelize.query('SELECT * FROM auth_throttle', { type: QueryTypes.SELECT }));
    expect(rows).not.toContain('alice');
    expect(rows).not.toContain('203.0.113');
  });
});

describe('refresh throttling', () => {
  it('limits refreshes per session per minute, with Retry-After', async () => {
    const app = await startTestApp({ REFRESH_THROTTLE_PER_MINUTE: '5' });
    try {
      await app.user('carl', 'carl-password-1');
      let { refresh } = await app.login('carl', 'carl-password-1');
      const other = await app.login('carl', 'carl-password-1');
      for (let i = 0; i < 5; i++) {
        const r = await app.post('/api/token/refresh/', { refresh });
        expect(r.status).toBe(200);
        refresh = r.json.refresh;
      }
      const flood = await app.post('/api/token/refresh/', { refresh });
      expect(flood.status).toBe(429);
      expect(flood.json.code).toBe('throttled');
      expect(Number(flood.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(Number(flood.headers.get('retry-after'))).toBeLessThanOrEqual(60);
      // Another session of the same account has its own count.
      expect((await app.post('/api/token/refresh/', { refresh: other.refresh })).status).toBe(200);
      app.clock.advance(61);
      // The throttled attempt did not consume the token: it still rotates.
      expect((await app.post('/api/token/refresh/', { refresh })).status).toBe(200);
    } finally {
      await app.stop();
    }
  });

  it('counts nothing for revoked, rotated or unknown tokens: an old token cannot lock the victim out', async () => {
    const app = await startTestApp({ REFRESH_THROTTLE_PER_MINUTE: '3' });
    try {
      await app.user('vic', 'vic-password-1');
      // The attacker holds tokens of the victim's that are dead: one from a session that logged out,
      // one rotated away (presenting it revokes its family: reuse), and a signed one the database never had.
      const ended = await app.login('vic', 'vic-password-1');
      expect((await app.post('/api/token/blacklist/', { refresh: ended.refresh })).status).toBe(200);
      const stolen = await app.login('vic', 'vic-password-1');
      const rotated = await app.post('/api/token/refresh/', { refresh: stolen.refresh });
      expect(rotated.status).toBe(200);
      const userId = Number(JSON.parse(Buffer.from(stolen.access.split('.')[1]!, 'base64url').toString()).user_id);
      const unknown = app.tokens.sign('refresh', userId, app.clock()).token;
      for (let i = 0; i < 20; i++) {
        for (const refresh of [ended.refresh, stolen.refresh, unknown]) {
          expect((await app.post('/api/token/refresh/', { refresh })).status).toBe(401);
        }
      }
      // The victim's live session refreshes as often as the limit allows.
      let { refresh } = await app.login('vic', 'vic-password-1');
      for (let i = 0; i < 3; i++) {
        const r = await app.post('/api/token/refresh/', { refresh });
        expect(r.status, r.text).toBe(200);
        refresh = r.json.refresh;
      }
      expect((await app.post('/api/token/refresh/', { refresh })).status).toBe(429);
    } finally {
      await app.stop();
    }
  });
});

describe('counting is atomic (many connections at once)', () => {
  const times = <T>(k: number, f: () => Promise<T>) => Promise.all(Array.from({ length: k }, f));

  it('lets exactly the free attempts through of 40 concurrent reservations, from no record and after a quiet period', async () => {
    const s = { ...a.config.throttle, loginAccountBudget: 0 };
    const keys = loginKeys('racer', '203.0.113.200');
    const now = new Date();
    const passed = async (at: Date) => (await times(40, () => reserveLoginAttempt(a.db, keys, at, s))).filter((r) => r.ok).length;
    expect(await passed(now)).toBe(s.loginFreeAttempts);
    // The quiet period restarts the record once: the others count against the new run.
    expect(await passed(new Date(now.getTime() + (s.loginQuietSeconds + 1) * 1000))).toBe(s.loginFreeAttempts);
  });

  it('hashes at most the free attempts of 40 parallel wrong passwords from one address for one account', async () => {
    const app = await startTestApp({ ...ENV, LOGIN_THROTTLE_FREE_ATTEMPTS: '5', PASSWORD_HASH_QUEUE: '64' });
    try {
      await app.user('target', 'target-password-1');
      const hashedBefore = app.hasher.computed();
      const replies = await times(40, () => login(app, 'target', 'wrong-guess', '198.51.100.40'));
      const statuses = replies.map((r) => r.status);
      expect(statuses.filter((x) => x === 401)).toHaveLength(5);
      expect(statuses.filter((x) => x === 429)).toHaveLength(35);
      expect(app.hasher.computed() - hashedBefore).toBe(5);
    } finally {
      await app.stop();
    }
  });

  it('lets exactly the limit through of 40 concurrent refreshes of one session, in a new window too', async () => {
    const s = { ...a.config.throttle, refreshPerMinute: 5 };
    const { refresh } = await a.login('alice', 'alice-password-1');
    const claims = JSON.parse(Buffer.from(refresh.split('.')[1]!, 'base64url').toString()) as { jti: string; user_id: number };
    const ref = { jti: claims.jti, userId: Number(claims.user_id) };
    const now = new Date(a.clock());
    expect((await times(40, () => refreshWaitSeconds(a.db, ref, now, s))).filter((w) => w === 0)).toHaveLength(5);
    const nextMinute = new Date(now.getTime() + 61_000);
    expect((await times(40, () => refreshWaitSeconds(a.db, ref, nextMinute, s))).filter((w) => w === 0)).toHaveLength(5);
  });
});

describe('the per-account budget across addresses', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startTestApp({ ...ENV, LOGIN_THROTTLE_ACCOUNT_BUDGET: '6', LOGIN_THROTTLE_ACCOUNT_WINDOW: '1h' }, { databaseUrl });
    await app.user('dana', 'dana-password-1');
    await app.user('fred', 'fred-password-1');
  });
  afterAll(() => app.stop());

  it('bounds a botnet\'s guesses however many addresses it has, and the user\'s known address never waits', async () => {
    // The user logs in from home: that address is known to the account from now on.
    const home = '192.0.2.10';
    expect((await login(app, 'dana', 'dana-password-1', home)).status).toBe(200);
    // 30 bots, one guess each (within every address's free attempts), share the account's budget of
    // 6 attempts an hour from unknown addresses; the first login from home, unknown then, was one.
    const hashedBefore = app.hasher.computed();
    const bots = await Promise.all(Array.from({ length: 30 }, (_, i) => login(app, 'dana', 'guess', `198.18.0.${i + 1}`)));
    expect(bots.map((r) => `${r.status} ${r.json.code ?? ''}`).sort()).toEqual([...Array(5).fill('401 '), ...Array(25).fill('429 throttled')]);
    const refused = bots.filter((r) => r.status === 429);
    expect(app.hasher.computed() - hashedBefore).toBe(5);
    // The wait is the rest of the window.
    const wait = Number(refused[0]!.headers.get('retry-after'));
    expect(wait).toBeGreaterThan(3500);
    expect(wait).toBeLessThanOrEqual(3600);
    // Even the right password from a new address waits: that is the budget's price…
    expect((await login(app, 'dana', 'dana-password-1', '203.0.113.250')).status).toBe(429);
    // …which the user's known address never pays, and its failures do not spend the budget.
    expect((await login(app, 'dana', 'typo', home)).status).toBe(401);
    expect((await login(app, 'dana', 'dana-password-1', home)).status).toBe(200);
    // Other accounts are untouched.
    expect((await login(app, 'fred', 'fred-password-1', '198.18.0.1')).status).toBe(200);
    // The next window has a budget again.
    app.clock.advance(3601);
    try {
      expect((await login(app, 'dana', 'dana-password-1', '203.0.113.250')).status).toBe(200);
    } finally {
      app.clock.reset();
    }
  });

  it('forgets a known address after LOGIN_KNOWN_ADDRESS_TTL', async () => {
    const s = { ...app.config.throttle, loginAccountBudget: 1 };
    const keys = loginKeys('erik', '192.0.2.20');
    const now = new Date();
    await app.db.models.KnownAddress.upsert({ key: keys.known, seenAt: now });
    const known = await Promise.all(Array.from({ length: 3 }, () => reserveLoginAttempt(app.db, keys, now, s)));
    expect(known.every((r) => r.ok)).toBe(true);
    const later = new Date(now.getTime() + (s.loginKnownAddressSeconds + 1) * 1000);
    const other = { ...keys, address: loginKeys('erik', '192.0.2.21').address };
    expect((await reserveLoginAttempt(app.db, keys, later, s)).ok).toBe(true);
    expect(await reserveLoginAttempt(app.db, other, later, s)).toMatchObject({ ok: false, bound: 'account' });
  });
});

describe('a password login\'s first statement (logins.ts, beginLogin)', () => {
  it('counts the attempt and reads the account in one statement, whatever the reservation answers', async () => {
    const id = await a.user('bea', 'bea-password-1');
    const inactive = await a.user('ida', 'ida-password-1', { active: false });
    const s = { ...a.config.throttle, loginFreeAttempts: 1, loginAccountBudget: 0 };
    const now = new Date();
    const begin = async (name: string, address: string) => {
      const before = a.db.statementCount();
      const start = await beginLogin(a.db, loginKeys(name, address), name, now, s);
      expect(a.db.statementCount() - before).toBe(1);
      return start;
    };
    const first = await begin('bea', '192.0.2.30');
    expect(first.reservation).toEqual({ ok: true });
    expect(first.account).toMatchObject({ id, username: 'bea', isActive: true, tokenGeneration: 0 });
    expect(first.account!.passwordHash).toMatch(/^\$argon2id\$/);
    // The free attempt is spent: refused, and the account is still read.
    expect(await begin('bea', '192.0.2.30')).toMatchObject({ reservation: { ok: false, bound: 'address', waitSeconds: 1 }, account: { id } });
    expect((await begin('ida', '192.0.2.30')).account).toMatchObject({ id: inactive, isActive: false });
    // No such account: counted all the same.
    expect(await begin('nobody-here', '192.0.2.30')).toEqual({ reservation: { ok: true }, account: null });
    expect(await begin('nobody-here', '192.0.2.30')).toMatchObject({ reservation: { ok: false }, account: null });
  });

  it('a whole login is two statements: this one, and its record after the hash', async () => {
    await a.user('lotte', 'lotte-password-1');
    const before = a.db.statementCount();
    expect((await login(a, 'lotte', 'lotte-password-1', '192.0.2.31')).status).toBe(200);
    expect(a.db.statementCount() - before).toBe(2);
  });
});

describe('flushThrottle', () => {
  it('drops records quiet for the quiet period and not blocking, and forgotten addresses; keeps the rest', async () => {
    const { KnownAddress, Throttle } = a.db.models;
    const s = { ...a.config.throttle, loginAccountBudget: 0 };
    const now = new Date();
    const quietAgo = new Date(now.getTime() - (Math.max(s.loginQuietSeconds, s.loginAccountWindowSeconds) + 1) * 1000);
    const keys = (name: string) => loginKeys(`flush-${name}`, '192.0.2.1');
    await reserveLoginAttempt(a.db, keys('stale'), quietAgo, s);
    await reserveLoginAttempt(a.db, keys('fresh'), now, s);
    // Quiet for long, but still blocking (a long LOGIN_THROTTLE_MAX_DELAY): kept until the wait is over.
    await Throttle.create({ key: keys('blocking').address, count: 50, startedAt: quietAgo, updatedAt: quietAgo, blockedUntil: new Date(now.getTime() + 60_000) });
    await KnownAddress.upsert({ key: keys('forgotten').known, seenAt: new Date(now.getTime() - (s.loginKnownAddressSeconds + 1) * 1000) });
    await KnownAddress.upsert({ key: keys('remembered').known, seenAt: now });
    expect(await flushThrottle(a.db, now, s)).toBeGreaterThanOrEqual(2);
    expect(await Throttle.findByPk(keys('stale').address)).toBeNull();
    expect(await Throttle.findByPk(keys('fresh').address)).not.toBeNull();
    expect(await Throttle.findByPk(keys('blocking').address)).not.toBeNull();
    expect(await KnownAddress.findByPk(keys('forgotten').known)).toBeNull();
    expect(await KnownAddress.findByPk(keys('remembered').known)).not.toBeNull();
  });
});
