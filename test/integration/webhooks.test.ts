// Security events as signed webhooks from the transactional outbox (issue 18), against a real
// Postgres and a real receiver that verifies every delivery with `standardwebhooks`: every event type
// and its payload; an event exists if and only if its change committed; the receiver down for a
// minute of the injected clock; several delivery processes on one outbox; the delivery process
// killed mid-batch (a real child process, SIGKILL) and started again.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createClient, deleteClient } from '../../app/auth/clients';
import { announceEndedSessions } from '../../app/auth/sessions';
import { changePassword, deactivateUser, importUsers } from '../../app/auth/users';
import { retryEvents } from '../../app/events/admin';
import { clientEventRecorder } from '../../app/events/client-events';
import { recordEvent } from '../../app/events/outbox';
import { decodeJwt } from '../support/http';
import { ROOT } from '../support/images';
import { freePort, startTestApp, type TestApp } from '../support/test-app';
import { startReceiver, type Receiver } from '../support/webhook-receiver';
import { drain, newSecret, outboxRows, testDelivery, type TestDelivery } from '../support/webhooks';

const SECRET = newSecret();
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function setup(env: Record<string, string> = {}): Promise<{ t: TestApp; receiver: Receiver }> {
  const receiver = await startReceiver({ secret: SECRET });
  const t = await startTestApp({ WEBHOOK_URL: receiver.url, WEBHOOK_SECRET: SECRET, ...env });
  cleanups.push(() => receiver.stop(), () => t.stop());
  return { t, receiver };
}

function deliveryFor(t: TestApp, overrides: Partial<TestApp['config']['webhooks']> = {}, options: { random?: () => number } = {}): TestDelivery {
  const d = testDelivery(t.config.databaseUrl, { ...t.config.webhooks, pollMs: 20, ...overrides }, t.clock, options);
  cleanups.push(() => d.close());
  return d;
}

const login = async (t: TestApp, username: string, password: string, headers: Record<string, string> = {}) => {
  const r = await t.request('POST', '/api/token/', { json: { username, password }, headers });
  expect(r.status, r.text).toBe(200);
  return { access: r.json.access as string, refresh: r.json.refresh as string, sid: decodeJwt(r.json.access).payload.sid as string, requestId: r.headers.get('x-request-id') };
};
const bearer = (access: string, extra: Record<string, string> = {}) => ({ Authorization: `Bearer ${access}`, ...extra });

describe('every event type', () => {
  it('is delivered once, signed (standardwebhooks verifies it), as {type, timestamp, data} naming user, session, client and request, never a secret', async () => {
    const { t, receiver } = await setup({ LOGIN_THROTTLE_FREE_ATTEMPTS: '2', REFRESH_TOKEN_LIFETIME: '60' });
    const ua = { 'User-Agent': 'events-test/1.0' };
    const secrets: string[] = ['alice-password-1', 'alice-password-2', 'bob-password-1', 'carol-password-1', 'wrong-password-9'];

    const alice = await t.user('alice', 'alice-password-1');
    const bob = await t.user('bob', 'bob-password-1');
    const carol = await t.user('carol', 'carol-password-1');

    const first = await login(t, 'alice', 'alice-password-1', { ...ua, 'X-Request-Id': 'req-login-1' });
    expect((await t.request('POST', '/api/token/', { json: { username: 'alice', password: 'wrong-password-9' }, headers: { 'X-Request-Id': 'req-failed-1' } })).status).toBe(401);
    expect((await t.post('/api/token/', { username: 'nobody', password: 'wrong-password-9' })).status).toBe(401);
    let throttled;
    for (let i = 0; i < 10 && throttled?.status !== 429; i++) throttled = await t.post('/api/token/', { username: 'bob', password: 'wrong-password-9' });
    expect(throttled!.status).toBe(429);

    const rotated = await t.request('POST', '/api/token/refresh/', { json: { refresh: first.refresh }, headers: ua });
    expect(rotated.status).toBe(200);
    const replay = await t.request('POST', '/api/token/refresh/', { json: { refresh: first.refresh }, headers: { 'X-Request-Id': 'req-replay-1' } });
    expect(replay.status).toBe(401);
    expect((await t.post('/api/token/refresh/', { refresh: first.refresh })).status).toBe(401); // a second replay: announced once

    const loggedOut = await login(t, 'alice', 'alice-password-1');
    expect((await t.post('/api/token/blacklist/', { refresh: loggedOut.refresh })).status).toBe(200);
    const deleted = await login(t, 'alice', 'alice-password-1');
    const keeper = await login(t, 'alice', 'alice-password-1');
    expect((await t.request('DELETE', `/api/sessions/${deleted.sid}/`, { headers: bearer(keeper.access) })).status).toBe(204);
    await login(t, 'alice', 'alice-password-1');
    expect((await t.request('POST', '/api/token/logout-all/?scope=others', { headers: bearer(keeper.access, { 'X-Request-Id': 'req-others-1' }) })).status).toBe(200);
    expect((await t.request('POST', '/api/token/logout-all/', { headers: bearer(keeper.access) })).status).toBe(200);

    await changePassword(t.db, t.hasher, 'alice', 'alice-password-2', new Date(t.clock()));
    await deactivateUser(t.db, 'bob', new Date(t.clock()));
    await deactivateUser(t.db, 'bob', new Date(t.clock())); // no change: no event
    await importUsers(t.db, t.hasher, [{ id: 500, username: 'django', password: 'pbkdf2_sha256$870000$c2FsdA$aGFzaA==', is_active: true }]);

    // Carol's session reaches its end: its refresh token (60 s) expires unused.
    const idle = await login(t, 'carol', 'carol-password-1', ua);
    t.clock.advance(61);
    expect(await announceEndedSessions(t.db, new Date(t.clock()))).toBe(1);
    expect(await announceEndedSessions(t.db, new Date(t.clock()))).toBe(0); // once

    const rows = await outboxRows(t.db);
    const delivery = deliveryFor(t);
    delivery.start();
    await expect.poll(() => receiver.received.filter((r) => r.acknowledged).length, { timeout: 15_000 }).toBe(rows.length);
    await delivery.stop();

    // Signed and delivered exactly once each, with the outbox's ids and bodies (different users' events
    // go in parallel; one user's in order, below).
    expect(receiver.received.map((r) => r.error)).toEqual(rows.map(() => undefined));
    const byId = (list: { id: string; body: string }[]) => list.map((r) => `${r.id} ${r.body}`).sort();
    expect(byId(receiver.received)).toEqual(byId(rows.map((r) => ({ id: r.message_id, body: r.body }))));
    expect((await outboxRows(t.db)).every((r) => r.status === 'delivered' && r.attempts === 1)).toBe(true);
    for (const r of receiver.received) {
      expect(r.id).toMatch(/^msg_[0-9a-f]{32}$/);
      expect(r.signature).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
      expect(Object.keys(r.payload!)).toEqual(['type', 'timestamp', 'data']);
      expect(new Date(r.payload!.timestamp).toISOString()).toBe(r.payload!.timestamp);
      expect(Object.keys(r.payload!.data).slice(0, 6)).toEqual(['user_id', 'username', 'session_id', 'ip', 'user_agent', 'request_id']);
      // Never a token, a password or a hash.
      for (const secret of [...secrets, first.access, first.refresh, loggedOut.refresh, keeper.access, '$argon2', 'pbkdf2', 'password_hash']) {
        expect(r.body).not.toContain(secret);
      }
    }

    // In the order they were written.
    const events = rows.map((row) => receiver.received.find((r) => r.id === row.message_id)!.payload!);
    const of = (type: string) => events.filter((e) => e.type === type).map((e) => e.data);
    const sample = (type: string) => events.find((e) => e.type === type);
    expect(new Set(events.map((e) => e.type))).toEqual(
      new Set(['user.created', 'login.succeeded', 'login.failed', 'login.throttled', 'token.reuse_detected', 'session.ended', 'sessions.revoked', 'user.password_changed', 'user.deactivated']),
    );
    expect(of('user.created')).toEqual([
      expect.objectContaining({ user_id: alice, username: 'alice', is_active: true, imported: false }),
      expect.objectContaining({ user_id: bob, username: 'bob' }),
      expect.objectContaining({ user_id: carol, username: 'carol' }),
      expect.objectContaining({ user_id: 500, username: 'django', imported: true }),
    ]);
    expect(of('login.succeeded')[0]).toEqual({
      user_id: alice, username: 'alice', session_id: first.sid, ip: expect.stringMatching(/127\.0\.0\.1$/), user_agent: 'events-test/1.0', request_id: 'req-login-1',
    });
    expect(first.requestId).toBe('req-login-1');
    expect(of('login.failed')).toEqual([
      expect.objectContaining({ user_id: alice, username: 'alice', session_id: null, request_id: 'req-failed-1' }),
      expect.objectContaining({ user_id: null, username: 'nobody' }),
      ...of('login.failed').slice(2).map(() => expect.objectContaining({ user_id: bob, username: 'bob' })),
    ]);
    expect(of('login.throttled')).toEqual([expect.objectContaining({ user_id: bob, username: 'bob', bound: 'address', retry_after: expect.any(Number) })]);
    expect(of('token.reuse_detected')).toEqual([expect.objectContaining({ user_id: alice, username: 'alice', session_id: first.sid, request_id: 'req-replay-1' })]);
    expect(of('session.ended')).toEqual([
      expect.objectContaining({ user_id: alice, session_id: loggedOut.sid, reason: 'logout' }),
      expect.objectContaining({ user_id: alice, session_id: deleted.sid, reason: 'deleted' }),
      expect.objectContaining({ user_id: carol, username: 'carol', session_id: idle.sid, reason: 'expired', user_agent: 'events-test/1.0' }),
    ]);
    // An expiry is dated when the session ended (its token's expiry), not when it was noticed.
    expect(Date.parse(events.filter((e) => e.type === 'session.ended')[2]!.timestamp)).toBe(decodeJwt(idle.refresh).payload.exp * 1000);
    expect(of('sessions.revoked')).toEqual([
      expect.objectContaining({ user_id: alice, session_id: keeper.sid, scope: 'others', sessions: 1, request_id: 'req-others-1' }),
      expect.objectContaining({ user_id: alice, session_id: keeper.sid, scope: 'all', sessions: 1 }),
    ]);
    expect(of('user.password_changed')).toEqual([{ user_id: alice, username: 'alice', session_id: null, ip: null, user_agent: null, request_id: null, sessions: 0 }]);
    expect(of('user.deactivated')).toEqual([expect.objectContaining({ user_id: bob, username: 'bob', sessions: 0 })]);

    // One user's events arrive in the order they were written.
    const aliceIds = rows.filter((r) => r.user_id === alice).map((r) => r.message_id);
    expect(receiver.received.filter((r) => r.payload!.data.user_id === alice).map((r) => r.id)).toEqual(aliceIds);
    if (process.env.WEBHOOK_SAMPLES) {
      for (const type of new Set(events.map((e) => e.type))) process.stdout.write(`${JSON.stringify(sample(type))}\n`);
    }
  });

  it('records only what WEBHOOK_EVENTS names, and nothing at all without WEBHOOK_URL', async () => {
    const { t } = await setup({ WEBHOOK_EVENTS: 'login.*,user.deactivated' });
    await t.user('dave', 'dave-password-1');
    const s = await login(t, 'dave', 'dave-password-1');
    await t.post('/api/token/blacklist/', { refresh: s.refresh });
    await t.post('/api/token/', { username: 'dave', password: 'wrong-password-9' });
    expect((await outboxRows(t.db)).map((r) => r.type)).toEqual(['login.succeeded', 'login.failed']);

    const quiet = await startTestApp();
    cleanups.push(() => quiet.stop());
    await quiet.user('erin', 'erin-password-1');
    await login(quiet, 'erin', 'erin-password-1');
    expect(await outboxRows(quiet.db)).toEqual([]);
  });

  it('writes one row per receiver, each delivered on its own', async () => {
    const other = await startReceiver({ secret: SECRET, path: '/other' });
    cleanups.push(() => other.stop());
    const first = await startReceiver({ secret: SECRET });
    cleanups.push(() => first.stop());
    const t = await startTestApp({ WEBHOOK_URL: `${first.url}, ${other.url}`, WEBHOOK_SECRET: SECRET });
    cleanups.push(() => t.stop());
    other.setMode('failing');
    await t.user('fran', 'fran-password-1');
    const d = deliveryFor(t);
    await drain(d);
    expect(first.received.map((r) => r.payload?.type)).toEqual(['user.created']);
    expect(other.received.map((r) => [r.id, r.acknowledged])).toEqual([[first.received[0]!.id, false]]);
    expect((await outboxRows(t.db)).map((r) => r.status).sort()).toEqual(['delivered', 'pending']);
  });
});

describe("machine clients' events", () => {
  it('client.token_issued (with the request) and client.deleted (from the CLI), in order per client', async () => {
    const receiver = await startReceiver({ secret: SECRET });
    cleanups.push(() => receiver.stop());
    const port = await freePort();
    const t = await startTestApp({ ISSUER: `http://127.0.0.1:${port}`, WEBHOOK_URL: receiver.url, WEBHOOK_SECRET: SECRET }, { port });
    cleanups.push(() => t.stop());
    const { client, secret } = await createClient(t.db, { name: 'billing', scopes: ['invoices:read', 'invoices:write'], now: new Date(t.clock()) });
    const basic = Buffer.from(`${encodeURIComponent(client.clientId)}:${encodeURIComponent(secret)}`).toString('base64');
    const grant = await t.request('POST', '/api/oauth/token/', {
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'invoices:read' }),
      headers: { Authorization: `Basic ${basic}`, 'X-Request-Id': 'req-grant-1', 'User-Agent': 'billing-service/2' },
    });
    expect(grant.status, grant.text).toBe(200);
    await deleteClient(t.db, 'billing', t.clock, clientEventRecorder(t.db, t.clock));
    const rows = await outboxRows(t.db);
    await drain(deliveryFor(t));
    expect(receiver.received.map((r) => r.id)).toEqual(rows.map((r) => r.message_id)); // one client's: in order
    expect(receiver.received.map((r) => r.payload)).toEqual([
      {
        type: 'client.token_issued',
        timestamp: expect.any(String),
        data: {
          user_id: null, username: null, session_id: null, ip: expect.stringMatching(/127\.0\.0\.1$/), user_agent: 'billing-service/2', request_id: 'req-grant-1',
          client_id: client.clientId, client_name: 'billing', scopes: ['invoices:read'], jti: decodeJwt(grant.json.access_token).payload.jti,
          expires_at: new Date(decodeJwt(grant.json.access_token).payload.exp * 1000).toISOString(),
        },
      },
      {
        type: 'client.deleted',
        timestamp: expect.any(String),
        data: { user_id: null, username: null, session_id: null, ip: null, user_agent: null, request_id: null, client_id: client.clientId, client_name: 'billing', scopes: ['invoices:read', 'invoices:write'] },
      },
    ]);
    expect(receiver.received.map((r) => r.body).join()).not.toContain(grant.json.access_token);
    expect(receiver.received.map((r) => r.body).join()).not.toContain(secret);
    if (process.env.WEBHOOK_SAMPLES) for (const r of receiver.received) process.stdout.write(`${r.body}\n`);
  });
});

describe('an event exists if and only if its change committed', () => {
  it('a login whose transaction rolls back at commit records no event; an outbox row that cannot commit undoes the login', async () => {
    const { t, receiver } = await setup();
    await t.user('doomed', 'doomed-password-1');
    await t.user('cursed', 'cursed-password-1');
    await t.user('fine', 'fine-password-1');
    // Checked at COMMIT, after every statement of the login (the family, its token, the outbox row)
    // has run: the first fails a family of "doomed", the second an outbox row naming "cursed".
    await t.db.sequelize.query(`
      CREATE FUNCTION refuse_doomed_family() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF (SELECT username FROM users WHERE id = NEW.user_id) = 'doomed' THEN RAISE EXCEPTION 'refused at commit'; END IF;
        RETURN NULL;
      END $$;
      CREATE CONSTRAINT TRIGGER doomed_family AFTER INSERT ON token_families DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION refuse_doomed_family();
      CREATE FUNCTION refuse_cursed_event() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.type = 'login.succeeded' AND NEW.body LIKE '%"username":"cursed"%' THEN RAISE EXCEPTION 'refused at commit'; END IF;
        RETURN NULL;
      END $$;
      CREATE CONSTRAINT TRIGGER cursed_event AFTER INSERT ON webhook_outbox DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION refuse_cursed_event();
    `);
    const before = (await outboxRows(t.db)).length;
    expect((await t.post('/api/token/', { username: 'doomed', password: 'doomed-password-1' })).status).toBe(500);
    expect((await t.post('/api/token/', { username: 'cursed', password: 'cursed-password-1' })).status).toBe(500);
    await login(t, 'fine', 'fine-password-1');

    const families = await t.db.rows<{ username: string }>('SELECT u.username FROM token_families f JOIN users u ON u.id = f.user_id', []);
    expect(families.map((f) => f.username)).toEqual(['fine']);
    const rows = (await outboxRows(t.db)).slice(before);
    expect(rows.map((r) => [r.type, JSON.parse(r.body).data.username])).toEqual([['login.succeeded', 'fine']]);
    await drain(deliveryFor(t));
    expect(receiver.received.filter((r) => r.payload?.type === 'login.succeeded').map((r) => r.payload!.data.username)).toEqual(['fine']);
  });
});

describe('delivery', () => {
  it('keeps every event through a minute with the receiver down, then delivers each once, in order per user, under one id each', async () => {
    const { t, receiver } = await setup();
    t.clock.freeze();
    // Waits of 5 s doubling up to 60 s; jitter drawn from the test's sequence.
    let n = 0;
    const d = deliveryFor(t, { retryBaseMs: 5_000, retryMaxMs: 60_000 }, { random: () => [0.1, 0.9, 0.5, 0.3, 0.7][n++ % 5]! });
    const users = ['una', 'vic', 'wes', 'xia', 'yan'];
    for (const u of users) await t.user(u, `${u}-password-1`);
    await receiver.down();
    for (const u of users) {
      const s = await login(t, u, `${u}-password-1`);
      await login(t, u, `${u}-password-1`);
      await t.post('/api/token/blacklist/', { refresh: s.refresh });
    }
    const written = await outboxRows(t.db);
    expect(written).toHaveLength(20);

    // A minute of the clock, in steps: every due row is tried and fails (connection refused).
    for (let second = 0; second <= 60; second += 5) {
      await drain(d);
      t.clock.advance(5);
    }
    const down = await outboxRows(t.db);
    expect(down.every((r) => r.status === 'pending')).toBe(true);
    expect(receiver.received).toEqual([]);
    const attemptsWhileDown = d.outcomes.filter((o) => o === 'retried').length;
    // The head of each user's line was tried again and again (1 + 5 s, 10 s, 20 s, 40 s waits); the rows
    // behind it waited their turn, never overtaking it.
    expect(down.filter((r) => r.attempts > 0).map((r) => r.user_id).sort()).toEqual(written.filter((r) => r.type === 'user.created').map((r) => r.user_id).sort());
    expect(Math.min(...down.filter((r) => r.attempts > 0).map((r) => r.attempts))).toBeGreaterThanOrEqual(3);

    await receiver.up();
    t.clock.advance(60); // the longest wait
    await drain(d);
    const after = await outboxRows(t.db);
    expect(after.map((r) => r.status)).toEqual(written.map(() => 'delivered'));
    // Each event once, under its own id: as many deliveries as events, as many ids, as many bodies.
    expect(receiver.received.map((r) => r.error)).toEqual(written.map(() => undefined));
    expect(receiver.received).toHaveLength(written.length);
    expect(new Set(receiver.received.map((r) => r.id)).size).toBe(written.length);
    expect(new Set(receiver.received.map((r) => r.body)).size).toBe(written.length);
    for (const u of users) {
      const id = written.find((r) => r.type === 'user.created' && JSON.parse(r.body).data.username === u)!.user_id;
      expect(receiver.received.filter((r) => r.payload!.data.user_id === id).map((r) => r.id)).toEqual(written.filter((r) => r.user_id === id).map((r) => r.message_id));
    }
    process.stdout.write(`receiver down: ${written.length} events, ${attemptsWhileDown} failed attempts while down, ${receiver.received.length} deliveries after, ${new Set(receiver.received.map((r) => r.id)).size} distinct ids\n`);
    t.clock.reset();
  });

  it('gives up after WEBHOOK_MAX_AGE (the last attempt at the deadline), and `retry --failed` sends it again', async () => {
    const { t, receiver } = await setup();
    t.clock.freeze();
    const d = deliveryFor(t, { retryBaseMs: 60_000, retryMaxMs: 3_600_000, maxAgeMs: 3 * 3_600_000 });
    receiver.setMode('failing');
    await t.user('zed', 'zed-password-1');
    for (let i = 0; i < 40 && (await outboxRows(t.db))[0]!.status === 'pending'; i++) {
      await drain(d);
      t.clock.advance(3600);
    }
    const [row] = await outboxRows(t.db);
    expect(row!.status).toBe('failed');
    expect(d.outcomes.at(-1)).toBe('failed');
    expect(row!.attempts).toBe(d.outcomes.length);
    // Back to real time: a receiver refuses a signature more than 5 minutes off its clock.
    t.clock.reset();
    receiver.setMode('up');
    expect(await retryEvents(t.db, new Date(t.clock()), { failed: true })).toEqual({ pending: 0, failed: 1 });
    await drain(d);
    expect((await outboxRows(t.db))[0]!.status).toBe('delivered');
    expect(new Set(receiver.received.map((r) => r.id)).size).toBe(1);
  });

  it('several delivery processes sharing one outbox deliver each event once', async () => {
    const { t, receiver } = await setup();
    const processes = [0, 1, 2].map(() => deliveryFor(t, { batchSize: 4 }));
    const users = Array.from({ length: 12 }, (_, i) => `share${i}`);
    const ids = new Map<string, number>();
    for (const u of users) ids.set(u, await t.user(u, `${u}-password-1`));
    for (const p of processes) p.start();
    // More events while they run (written as a login writes them, without the password hashing).
    await Promise.all(users.map(async (u) => {
      for (let i = 0; i < 3; i++) {
        await t.db.sequelize.transaction((transaction) =>
          recordEvent(t.db, transaction, { type: 'login.succeeded', at: new Date(t.clock()), user: { id: ids.get(u)!, username: u }, sessionId: randomUUID() }),
        );
      }
    }));
    const written = await outboxRows(t.db);
    expect(written).toHaveLength(48);
    await expect.poll(() => receiver.received.length, { timeout: 30_000 }).toBeGreaterThanOrEqual(written.length);
    await expect.poll(async () => (await outboxRows(t.db)).every((r) => r.status === 'delivered'), { timeout: 20_000 }).toBe(true);
    await Promise.all(processes.map((p) => p.stop()));
    expect(receiver.received.map((r) => r.id).sort()).toEqual(written.map((r) => r.message_id).sort());
    for (const u of users) {
      const id = written.find((r) => JSON.parse(r.body).data.username === u)!.user_id;
      expect(receiver.received.filter((r) => r.payload!.data.user_id === id).map((r) => r.id)).toEqual(written.filter((r) => r.user_id === id).map((r) => r.message_id));
    }
    process.stdout.write(`shared outbox: ${written.length} events, ${receiver.received.length} deliveries, by process ${processes.map((p) => p.outcomes.length).join('/')}\n`);
  });
});

describe('the CLI', () => {
  const cli = (t: TestApp, receiver: Receiver, ...args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        [path.join(ROOT, 'scripts/run.js'), 'cli', ...args],
        { cwd: ROOT, env: { ...process.env, NODE_ENV: 'test', DATABASE_URL: t.config.databaseUrl, WEBHOOK_URL: receiver.url, WEBHOOK_SECRET: SECRET } },
        (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }),
      );
    });

  it('webhooks status and retry [--failed]; flushexpiredtokens announces ended sessions and prunes delivered events', async () => {
    const { t, receiver } = await setup({ REFRESH_TOKEN_LIFETIME: '60' });
    receiver.setMode('failing');
    await t.user('gus', 'gus-password-1');
    const d = deliveryFor(t, { maxAgeMs: 0 }); // the first failed attempt is the last
    await drain(d);
    expect(d.outcomes).toEqual(['failed']);
    const status = await cli(t, receiver, 'webhooks', 'status');
    expect(status.stdout.split('\n')).toEqual([
      'pending: 0',
      'failed: 1',
      expect.stringMatching(/^receiver http:\/\/127\.0\.0\.1:\d+\/hook \[[0-9a-f]{16}\]: 0 pending, 1 failed, 0 delivered \(not yet pruned\)$/),
      '',
    ]);
    expect((await cli(t, receiver, 'webhooks', 'retry')).stdout).toBe('0 pending webhook(s) due now\n');
    expect((await cli(t, receiver, 'webhooks', 'retry', '--failed')).stdout).toBe('0 pending webhook(s) due now, 1 failed one(s) pending again\n');
    receiver.setMode('up');
    const again = deliveryFor(t);
    await drain(again);
    expect((await outboxRows(t.db)).map((r) => r.status)).toEqual(['delivered']);

    // A session that ended two minutes ago (its refresh token lived 60 s), in real time.
    t.clock.advance(-180);
    const ended = await login(t, 'gus', 'gus-password-1');
    t.clock.reset();
    await drain(again);
    const flush = await cli(t, receiver, 'flushexpiredtokens');
    expect(flush.stdout).toMatch(/^announced 1 session\(s\) that reached their end$/m);
    expect(flush.stdout).toMatch(/^deleted 2 delivered and 0 old failed webhook\(s\)$/m);
    const left = await outboxRows(t.db);
    expect(left.map((r) => [r.type, r.status, JSON.parse(r.body).data.session_id, JSON.parse(r.body).data.reason])).toEqual([
      ['session.ended', 'pending', ended.sid, 'expired'],
    ]);
    const secret = await cli(t, receiver, 'webhooks', 'secret');
    expect(secret.stdout).toMatch(/^whsec_[A-Za-z0-9+/]{43}=\n$/);
  });
});

describe('the delivery process', () => {
  let child: ChildProcess | undefined;
  const startProcess = (t: TestApp, receiver: Receiver) => {
    const p = spawn(process.execPath, [path.join(ROOT, 'scripts/run.js'), 'webhooks'], {
      cwd: ROOT,
      env: {
        ...process.env,
        NODE_ENV: 'test',
        DATABASE_URL: t.config.databaseUrl,
        WEBHOOK_URL: receiver.url,
        WEBHOOK_SECRET: SECRET,
        WEBHOOK_BATCH_SIZE: '8',
        WEBHOOK_POLL_INTERVAL: '1',
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    child = p;
    return p;
  };
  const exited = (p: ChildProcess) => new Promise((resolve) => (p.exitCode !== null || p.signalCode !== null ? resolve(null) : p.once('exit', resolve)));
  afterAll(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited(child);
    }
  });

  it('killed mid-batch (SIGKILL, requests in flight), delivers every event after its restart, again only under the same ids', async () => {
    const { t, receiver } = await setup();
    const users = Array.from({ length: 12 }, (_, i) => `kill${i}`);
    for (const u of users) await t.user(u, `${u}-password-1`);
    const written = await outboxRows(t.db);
    receiver.setMode('holding');
    const first = startProcess(t, receiver);
    // A whole batch in flight, none answered.
    await expect.poll(() => receiver.received.length, { timeout: 30_000 }).toBe(8);
    first.kill('SIGKILL');
    await exited(first);
    receiver.release(); // too late: the sender is gone
    receiver.setMode('up');
    const inFlight = receiver.received.length;
    expect((await outboxRows(t.db)).every((r) => r.status === 'pending' && r.attempts === 0)).toBe(true);

    const second = startProcess(t, receiver);
    await expect.poll(async () => (await outboxRows(t.db)).every((r) => r.status === 'delivered'), { timeout: 30_000 }).toBe(true);
    second.kill('SIGTERM');
    expect(await exited(second)).toBe(0);
    const ids = receiver.received.map((r) => r.id);
    expect([...new Set(ids)].sort()).toEqual(written.map((r) => r.message_id).sort());
    // The killed batch's rows went twice, under their own ids; the rest once.
    const twice = [...new Set(ids)].filter((id) => ids.filter((x) => x === id).length === 2);
    expect(twice.sort()).toEqual(receiver.received.slice(0, inFlight).map((r) => r.id).sort());
    expect(ids).toHaveLength(written.length + inFlight);
    expect(receiver.received.every((r) => r.error === undefined)).toBe(true);
    process.stdout.write(`killed mid-batch: ${written.length} events, ${inFlight} in flight at the kill, ${ids.length} deliveries, ${new Set(ids).size} distinct ids, ${twice.length} sent twice under the same id\n`);
  });
});
