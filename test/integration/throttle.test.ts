// Brute-force throttling: progressive delays per (account, client address), shared by workers,
// surviving restarts, never a lockout of the real user; and a per-account refresh limit.
import { QueryTypes } from 'sequelize';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { flushThrottle, loginKey, recordLoginFailure, refreshWaitSeconds } from '../../app/auth/throttle';
import { freshDatabase, startTestApp, type TestApp } from '../support/test-app';

const ENV = {
  TRUST_PROXY_HOPS: '1', // addresses come from X-Forwarded-For, as behind nginx
  LOGIN_THROTTLE_FREE_ATTEMPTS: '3',
  LOGIN_THROTTLE_MAX_DELAY: '8s',
  LOGIN_THROTTLE_QUIET: '10m',
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
    // Three free failures; the fourth earns the first wait.
    for (let i = 0; i < 4; i++) expect((await login(a, 'alice', 'wrong', from)).status).toBe(401);
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
    for (let i = 0; i < 4; i++) expect((await login(a, 'alice', 'wrong', from)).status).toBe(401);
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
    for (let i = 0; i < 4; i++) await login(a, 'alice', 'wrong', from);
    expect((await login(a, 'alice', 'wrong', from)).status).toBe(429);
    a.clock.advance(11 * 60);
    expect((await login(a, 'alice', 'wrong', from)).status).toBe(401); // counted afresh: free again
    a.clock.reset();
  });

  it('throttles usernames that do not exist the same way (no probing)', async () => {
    const from = '203.0.113.100';
    for (let i = 0; i < 4; i++) expect((await login(a, 'nobody', 'x', from)).status).toBe(401);
    expect((await login(a, 'nobody', 'x', from)).status).toBe(429);
  });

  it('stores neither usernames nor addresses in clear', async () => {
    const rows = JSON.stringify(await a.db.sequelize.query('SELECT * FROM auth_throttle', { type: QueryTypes.SELECT }));
    expect(rows).not.toContain('alice');
    expect(rows).not.toContain('203.0.113');
  });
});

describe('refresh throttling', () => {
  it('limits refreshes per account per minute, with Retry-After', async () => {
    const app = await startTestApp({ REFRESH_THROTTLE_PER_MINUTE: '5' });
    try {
      await app.user('carl', 'carl-password-1');
      let { refresh } = await app.login('carl', 'carl-password-1');
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
      app.clock.advance(61);
      // The throttled attempt did not consume the token: it still rotates.
      expect((await app.post('/api/token/refresh/', { refresh })).status).toBe(200);
    } finally {
      await app.stop();
    }
  });
});

describe('counting is atomic (many connections at once)', () => {
  const times = <T>(k: number, f: () => Promise<T>) => Promise.all(Array.from({ length: k }, f));

  it('counts every one of 30 concurrent failures: from no record, and again when a quiet period restarts it', async () => {
    const s = a.config.throttle;
    const key = loginKey('racer', '203.0.113.200');
    const count = async () => (await a.db.models.Throttle.findByPk(key))!.count;
    const now = new Date();
    await times(30, () => recordLoginFailure(a.db, key, now, s));
    expect(await count()).toBe(30);
    // The restart happens once: the other 29 count against the new run, none restarts it again.
    const later = new Date(now.getTime() + (s.loginQuietSeconds + 1) * 1000);
    await times(30, () => recordLoginFailure(a.db, key, later, s));
    expect(await count()).toBe(30);
  });

  it('lets exactly the limit through of 40 concurrent refreshes of one account, in a new window too', async () => {
    const s = { ...a.config.throttle, refreshPerMinute: 5 };
    const userId = 1_000_001; // the counter needs no user row
    const now = new Date();
    expect((await times(40, () => refreshWaitSeconds(a.db, userId, now, s))).filter((w) => w === 0)).toHaveLength(5);
    const nextMinute = new Date(now.getTime() + 61_000);
    expect((await times(40, () => refreshWaitSeconds(a.db, userId, nextMinute, s))).filter((w) => w === 0)).toHaveLength(5);
  });
});

describe('flushThrottle', () => {
  it('drops records quiet for the quiet period and not blocking, keeps the rest', async () => {
    const { Throttle } = a.db.models;
    const s = a.config.throttle;
    const now = new Date();
    const quietAgo = new Date(now.getTime() - (s.loginQuietSeconds + 1) * 1000);
    const key = (name: string) => loginKey(`flush-${name}`, '192.0.2.1');
    await recordLoginFailure(a.db, key('stale'), quietAgo, s);
    await recordLoginFailure(a.db, key('fresh'), now, s);
    // Quiet for long, but still blocking (a long LOGIN_THROTTLE_MAX_DELAY): kept until the wait is over.
    await Throttle.create({ key: key('blocking'), count: 50, startedAt: quietAgo, updatedAt: quietAgo, blockedUntil: new Date(now.getTime() + 60_000) });
    const before = await Throttle.count();
    expect(await flushThrottle(a.db, now, s)).toBeGreaterThanOrEqual(1);
    expect(await Throttle.findByPk(key('stale'))).toBeNull();
    expect(await Throttle.findByPk(key('fresh'))).not.toBeNull();
    expect(await Throttle.findByPk(key('blocking'))).not.toBeNull();
    expect(await Throttle.count()).toBeLessThan(before);
  });
});
