// Revocations against what races them or skews them, each forced rather than left to timing:
// - a login in flight (it read the user, then hashed the password) while a password change, a
//   deactivation or a logout-all lands: the login records no session;
// - one clock: an app whose clock runs ahead of the database's still voids the tokens it issued
//   (the triggers stamp with the app's time), keeps an operator's SQL revocation for the whole window,
//   and reloads it after a reconnection;
// - the reload reads revoked families through their index, not the whole table.
import { QueryTypes, type Transaction } from 'sequelize';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RELOAD_FAMILIES } from '../../app/auth/revocations';
import { changePassword, deactivateUser } from '../../app/auth/users';
import { eventually, freshDatabase, startTestApp, type TestApp } from '../support/test-app';

let databaseUrl: string;
let t: TestApp;

beforeAll(async () => {
  databaseUrl = await freshDatabase();
  t = await startTestApp({}, { databaseUrl });
});
afterAll(() => t.stop());

let n = 0;
const newUser = async () => {
  const name = `racer${++n}`;
  const password = `${name}-password-1`;
  const id = await t.user(name, password);
  return { id, name, password };
};
const liveSessions = (userId: number) => t.db.models.TokenFamily.scope('live').count({ where: { userId } });
const me = (app: TestApp, access: string) => app.request('GET', '/api/me/', { headers: { Authorization: `Bearer ${access}` } });

/** Statements of this database waiting for a lock, now. */
async function lockWaiters(): Promise<number> {
  const [row] = await t.db.sequelize.query<{ n: string }>(
    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    { type: QueryTypes.SELECT },
  );
  return Number(row!.n);
}
async function untilLockWaiters(count: number): Promise<void> {
  const deadline = Date.now() + 15_000;
  while ((await lockWaiters()) < count) {
    if (Date.now() > deadline) throw new Error(`expected ${count} statement(s) waiting for a lock`);
    await sleep(20);
  }
}

describe('a login in flight loses to a change that ends the user\'s sessions', () => {
  // The interleaving, forced with a row lock the test holds on the user: the change queues for the
  // row first; then the login reads the user (the change is not committed: it sees the old state),
  // spends its hash, and queues to record its session; the test lets go; the change commits; the
  // login, which read the user before the change, must not record a session after it.
  async function race(user: { id: number; name: string; password: string }, change: () => Promise<unknown>, app: TestApp = t) {
    const hold: Transaction = await t.db.sequelize.transaction();
    let changed: Promise<unknown> | undefined;
    let login: Promise<Awaited<ReturnType<TestApp['post']>>> | undefined;
    try {
      await t.db.models.User.findOne({ where: { id: user.id }, lock: hold.LOCK.UPDATE, transaction: hold });
      changed = change();
      await untilLockWaiters(1);
      login = app.post('/api/token/', { username: user.name, password: user.password });
      await untilLockWaiters(2);
    } finally {
      await hold.commit();
    }
    await changed;
    return login!;
  }

  const refused = { detail: 'No active account found with the given credentials' }; // simplejwt's body, as the contract records it

  it('a password change', async () => {
    const u = await newUser();
    const r = await race(u, () => changePassword(t.db, t.hasher, u.name, 'a-brand-new-password-2', new Date(t.clock())));
    expect(r.json, r.text).toEqual(refused);
    expect(await liveSessions(u.id)).toBe(0);
    // The new password works, as ever.
    expect((await t.post('/api/token/', { username: u.name, password: 'a-brand-new-password-2' })).status).toBe(200);
  });

  it('a password change and a logout-all, with UPDATE_LAST_LOGIN (the login\'s record then updates the user row it gates on)', async () => {
    const app = await startTestApp({ UPDATE_LAST_LOGIN: 'true' }, { databaseUrl });
    try {
      const u = await newUser();
      const r = await race(u, () => changePassword(t.db, t.hasher, u.name, 'a-brand-new-password-5', new Date(t.clock())), app);
      expect(r.json, r.text).toEqual(refused);
      expect(await liveSessions(u.id)).toBe(0);
      expect((await t.db.models.User.findByPk(u.id))!.lastLogin).toBeNull();

      const v = await newUser();
      const phone = await t.login(v.name, v.password);
      const r2 = await race(v, async () => expect((await t.request('POST', '/api/token/logout-all/', { headers: { Authorization: `Bearer ${phone.access}` } })).status).toBe(200), app);
      expect(r2.status, r2.text).toBe(401);
      expect(await liveSessions(v.id)).toBe(0);
      expect((await t.db.models.User.findByPk(v.id))!.lastLogin).toBeNull();
    } finally {
      await app.stop();
    }
  });

  it('a deactivation', async () => {
    const u = await newUser();
    const r = await race(u, () => deactivateUser(t.db, u.name, new Date(t.clock())));
    expect(r.status, r.text).toBe(401);
    expect(await liveSessions(u.id)).toBe(0);
  });

  it('a logout-all, and a logout of the other sessions', async () => {
    for (const path of ['/api/token/logout-all/', '/api/token/logout-all/?scope=others']) {
      const u = await newUser();
      const phone = await t.login(u.name, u.password);
      const r = await race(u, async () => {
        const out = await t.request('POST', path, { headers: { Authorization: `Bearer ${phone.access}` } });
        expect(out.status, out.text).toBe(200);
      });
      expect(r.status, r.text).toBe(401);
      // Every session is over but, for scope=others, the caller's own.
      expect(await liveSessions(u.id)).toBe(path.endsWith('others') ? 1 : 0);
      // A login after it is a new session, as ever.
      expect((await t.post('/api/token/', { username: u.name, password: u.password })).status).toBe(200);
    }
  });

  it('the other order: a session recorded first is ended by the change', async () => {
    const u = await newUser();
    const s = await t.login(u.name, u.password);
    await changePassword(t.db, t.hasher, u.name, 'another-new-password-3', new Date(t.clock()));
    expect(await liveSessions(u.id)).toBe(0);
    await eventually(async () => (await me(t, s.access)).status === 401);
  });
});

describe('one clock: an app whose clock runs ten minutes ahead of the database\'s', () => {
  let ahead: TestApp;
  beforeAll(async () => {
    ahead = await startTestApp({}, { databaseUrl, reconnectDelayMs: 50 });
    ahead.clock.advance(600);
  });
  afterAll(() => ahead.stop());

  it('voids the access tokens it issued before a password change (the trigger stamps with the app\'s time)', async () => {
    const u = await newUser();
    // A token without a session id: only the user's cutoff can stop it.
    const token = ahead.tokens.sign('access', u.id, ahead.clock() - 2_000).token;
    expect((await me(ahead, token)).status).toBe(200);
    await changePassword(ahead.db, ahead.hasher, u.name, 'skewed-new-password-4', new Date(ahead.clock()));
    await eventually(async () => (await me(ahead, token)).status === 401);
  });

  it('keeps an operator\'s SQL revocation (the database\'s clock) for the whole window, and reloads it', async () => {
    const u = await newUser();
    const s = await ahead.login(u.name, u.password);
    const sid = JSON.parse(Buffer.from(s.access.split('.')[1]!, 'base64url').toString()).sid as string;
    await ahead.db.sequelize.query("UPDATE token_families SET revoked_at = now(), revoke_reason = 'admin' WHERE id = $1", { bind: [sid] });
    await eventually(async () => (await me(ahead, s.access)).status === 401);
    // Stamped ten minutes before "now" on this worker's clock, longer ago than an access token lives:
    // pruning by that stamp would forget it while the token is still valid.
    ahead.revocations.prune();
    expect((await me(ahead, s.access)).status).toBe(401);
    // A reconnection reloads the state from the database with the skewed clock: still refused.
    const before = ahead.services.feed.backendPid();
    await t.db.sequelize.query('SELECT pg_terminate_backend($1)', { bind: [before] });
    await eventually(() => ahead.services.feed.connected() && ahead.services.feed.backendPid() !== before, 10_000);
    expect((await me(ahead, s.access)).status).toBe(401);
    expect(ahead.revocations.size.families).toBeGreaterThanOrEqual(1);
  });
});

describe('the reload', () => {
  it('reads revoked families through token_families_revoked_at_idx', async () => {
    const plan = await t.db.sequelize.transaction(async (transaction) => {
      await t.db.sequelize.query('SET LOCAL enable_seqscan = off', { transaction });
      const sql = `EXPLAIN ${RELOAD_FAMILIES.replace('$1', `'${new Date().toISOString()}'`).replace('$2', '360')}`;
      return t.db.sequelize.query<{ 'QUERY PLAN': string }>(sql, { type: QueryTypes.SELECT, transaction });
    });
    expect(plan.map((r) => r['QUERY PLAN']).join('\n')).toContain('token_families_revoked_at_idx');
  });
});
