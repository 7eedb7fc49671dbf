// The database going away, as a failover makes it go, each way caused for real against Postgres: a
// connection that reached a standby still in recovery (25006), pg_terminate_backend (57P01), a role
// out of connection slots (53300), a reset TCP connection, a black-holed one. Each is "unavailable"
// (a 503 with Retry-After, never a 500), and the connection that met it is dropped from the pool,
// never lent again. Then the failover in small, through the app over HTTP: the primary dies, the name
// (here a TCP proxy) moves to the standby before and after its promotion.
//
// A primary and a synchronous standby of their own, made with deploy/postgres/ as the compose
// profile makes them (pg_hba.conf, standby.sh), on a network of their own.
import path from 'node:path';
import { Writable } from 'node:stream';
import { PostgreSqlContainer, type StartedPostgreSqlContainer } from '@testcontainers/postgresql';
import pg from 'pg';
import { DatabaseError } from 'sequelize';
import { GenericContainer, Network, Wait, type StartedNetwork, type StartedTestContainer } from 'testcontainers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RevocationStore, startRevocationFeed } from '../../app/auth/revocations';
import { isDatabaseUnavailable } from '../../app/db/availability';
import { createDatabase, StandbyError, type Database } from '../../app/db/database';
import { createLogger } from '../../app/logger';
import { images, ROOT } from '../support/images';
import { postgresHealthCheck } from '../support/postgres-health';
import { run } from '../support/stack';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy';
import { startTestApp, type TestApp } from '../support/test-app';

const USER = 'app';
const PASSWORD = 'primary-password';
const DB = 'app';
const MOUNT = '/etc/koa-auth-stack/postgres';
const SERVER = ['postgres', '-c', `hba_file=${MOUNT}/pg_hba.conf`, '-c', 'fsync=off'];

let network: StartedNetwork;
let primary: StartedPostgreSqlContainer;
let standby: StartedTestContainer;
let admin: pg.Client; // the primary, as its superuser
const opened: { close(): Promise<void> }[] = [];

const url = (host: string, port: number, user = USER, password = PASSWORD) =>
  `postgres://${user}:${encodeURIComponent(password)}@${host}:${port}/${DB}`;
const primaryUrl = () => url(primary.getHost(), primary.getMappedPort(5432));
const standbyUrl = () => url(standby.getHost(), standby.getMappedPort(5432));
const proxyUrl = (proxy: TcpProxy) => url('127.0.0.1', proxy.port);

function database(dbUrl: string, options: { queryTimeoutMs?: number } = {}): Database {
  // One connection: the statement after a failure shows whether the pool lent the same one again.
  const db = createDatabase({ url: dbUrl, poolMax: 1, ...options });
  opened.push(db);
  return db;
}
async function proxy(): Promise<TcpProxy> {
  const p = await startTcpProxy({ host: primary.getHost(), port: primary.getMappedPort(5432) });
  opened.unshift(p); // closed first: frozen sockets must not hold the rest
  return p;
}
const backendPid = async (db: Database) => (await db.rows<{ pid: number }>('SELECT pg_backend_pid() AS pid', []))[0]!.pid;
async function failure(work: Promise<unknown>): Promise<unknown> {
  try {
    await work;
  } catch (err) {
    return err;
  }
  throw new Error('expected the statement to fail');
}
const sqlState = (err: unknown) => (err instanceof DatabaseError ? (err.original as { code?: string }).code : (err as { code?: string }).code);
/** Waits until the primary runs `sql` in some session, and returns that session's pid. */
async function runningPid(sqlLike: string): Promise<number> {
  for (const deadline = Date.now() + 10_000; Date.now() < deadline; ) {
    const r = await admin.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()", [sqlLike]);
    if (r.rows[0]) return r.rows[0].pid;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`no session runs ${sqlLike}`);
}

beforeAll(async () => {
  const { POSTGRES_IMAGE } = images();
  const files = [{ source: path.join(ROOT, 'deploy/postgres'), target: MOUNT }];
  network = await new Network().start();
  primary = await new PostgreSqlContainer(POSTGRES_IMAGE)
    .withUsername(USER)
    .withPassword(PASSWORD)
    .withDatabase(DB)
    .withHealthCheck(postgresHealthCheck(USER, DB))
    .withNetwork(network)
    .withNetworkAliases('postgres')
    .withCopyDirectoriesToContainer(files)
    .withCommand(SERVER)
    .start();
  standby = await new GenericContainer(POSTGRES_IMAGE)
    .withNetwork(network)
    .withEnvironment({ POSTGRES_USER: USER, POSTGRES_PASSWORD: PASSWORD, POSTGRES_DB: DB, REPLICATION_PASSWORD: "replication 'pass\\word" })
    .withCopyDirectoriesToContainer(files)
    .withEntrypoint(['bash', `${MOUNT}/standby.sh`])
    .withCommand(SERVER)
    .withExposedPorts(5432)
    .withWaitStrategy(Wait.forLogMessage(/the primary now waits for this standby/))
    .withStartupTimeout(120_000)
    .start();
  admin = new pg.Client({ connectionString: primaryUrl() });
  admin.on('error', () => {}); // the primary is killed in the last test
  await admin.connect();
}, 180_000);

afterAll(async () => {
  for (const o of opened) await o.close().catch(() => {});
  await admin?.end().catch(() => {});
  await standby?.stop({ remove: true, removeVolumes: true });
  await primary?.stop({ remove: true, removeVolumes: true });
  await network?.stop();
}, 60_000);

describe('the standby profile (deploy/postgres/)', () => {
  it('streams synchronously: the primary names it, and a commit is on the standby when acknowledged', async () => {
    const r = await admin.query("SELECT application_name, state, sync_state FROM pg_stat_replication");
    expect(r.rows).toEqual([{ application_name: 'postgres_standby', state: 'streaming', sync_state: 'sync' }]);
    await admin.query('CREATE TABLE acknowledged (n int)');
    await admin.query('INSERT INTO acknowledged VALUES (1)');
    const onStandby = new pg.Client({ connectionString: standbyUrl() });
    await onStandby.connect();
    try {
      // Synchronous means flushed on the standby before the acknowledgement, not yet replayed: the
      // row shows once replay catches up (promotion replays everything flushed).
      await expect.poll(async () => (await onStandby.query('SELECT count(*)::int AS n FROM acknowledged').catch(() => ({ rows: [{ n: 0 }] }))).rows[0].n).toBe(1);
    } finally {
      await onStandby.end();
    }
  });
});

describe('a connection that reached a standby still in recovery', () => {
  it('answers 25006 to a write, through the ORM and by hand, and is dropped from the pool each time', async () => {
    const db = database(standbyUrl());
    const first = await backendPid(db);
    const orm = await failure(db.sequelize.query('CREATE TABLE nope (a int)'));
    expect(sqlState(orm)).toBe('25006');
    expect(isDatabaseUnavailable(orm)).toBe(true);
    const second = await backendPid(db);
    expect(second).not.toBe(first);
    const byHand = await failure(db.rows('CREATE TABLE nope (a int)', []));
    expect(sqlState(byHand)).toBe('25006');
    expect(isDatabaseUnavailable(byHand)).toBe(true);
    expect(await backendPid(db)).not.toBe(second);
  });

  it('is not a primary: readiness\'s check fails and drops it', async () => {
    const db = database(standbyUrl());
    const first = await backendPid(db);
    const err = await failure(db.checkPrimary());
    expect(err).toBeInstanceOf(StandbyError);
    expect(isDatabaseUnavailable(err)).toBe(true);
    expect(await backendPid(db)).not.toBe(first);
  });

  it('is no revocation feed (no NOTIFY reaches it); the feed retries, never more than its cap apart', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        done();
      },
    });
    const feed = startRevocationFeed({
      databaseUrl: standbyUrl(),
      store: new RevocationStore(60_000, Date.now),
      windowMs: 60_000,
      clock: Date.now,
      logger: createLogger('info', {}, sink),
      reconnectDelayMs: 20,
      maxReconnectDelayMs: 80,
    });
    try {
      const failures = () => lines.filter((l) => l.msg === 'revocation feed cannot connect yet');
      await expect.poll(() => failures().length, { timeout: 20_000 }).toBeGreaterThanOrEqual(5);
      expect(feed.connected()).toBe(false);
      expect(failures().every((l) => String(l.err).includes('standby in recovery'))).toBe(true);
      expect(failures().slice(0, 5).map((l) => l.retry_in_ms)).toEqual([20, 40, 80, 80, 80]);
    } finally {
      await feed.stop();
    }
  });
});

describe('the primary, made unavailable', () => {
  it('pg_terminate_backend: the statement in flight fails with 57P01, and the pool lends another connection', async () => {
    const db = database(primaryUrl());
    for (const send of [(sql: string) => db.rows(sql, []), (sql: string) => db.sequelize.query(sql)]) {
      const first = await backendPid(db);
      const sleeping = failure(send('SELECT pg_sleep(60) AS terminated_57p01'));
      await admin.query('SELECT pg_terminate_backend($1)', [await runningPid('%terminated_57p01%')]);
      const err = await sleeping;
      expect(sqlState(err)).toBe('57P01');
      expect(isDatabaseUnavailable(err)).toBe(true);
      expect(await backendPid(db)).not.toBe(first);
    }
  });

  it('no connection slot left (53300): unavailable', async () => {
    await admin.query("CREATE ROLE limited LOGIN PASSWORD 'limited-password' CONNECTION LIMIT 1");
    await admin.query(`GRANT CONNECT ON DATABASE ${DB} TO limited`);
    const holder = new pg.Client({ connectionString: url(primary.getHost(), primary.getMappedPort(5432), 'limited', 'limited-password') });
    await holder.connect();
    try {
      const db = database(url(primary.getHost(), primary.getMappedPort(5432), 'limited', 'limited-password'));
      const err = await failure(db.rows('SELECT 1', []));
      expect((err as { original?: { code?: string } }).original?.code).toBe('53300');
      expect(isDatabaseUnavailable(err)).toBe(true);
    } finally {
      await holder.end();
    }
  });

  it('a connection reset under a statement: unavailable, and the pool connects afresh', async () => {
    const p = await proxy();
    const db = database(proxyUrl(p));
    for (const send of [(sql: string) => db.rows(sql, []), (sql: string) => db.sequelize.query(sql)]) {
      const first = await backendPid(db);
      const sleeping = failure(send('SELECT pg_sleep(60) AS reset_under_me'));
      await runningPid('%reset_under_me%');
      p.reset();
      const err = await sleeping;
      expect(isDatabaseUnavailable(err)).toBe(true);
      expect(String((err as Error).message)).toMatch(/ECONNRESET|Connection terminated/);
      expect(await backendPid(db)).not.toBe(first);
    }
  });

  it('a black-holed connection: the statement fails at the query timeout, not minutes later, and the connection is dropped', async () => {
    const p = await proxy();
    const db = database(proxyUrl(p), { queryTimeoutMs: 1_000 });
    for (const send of [(sql: string) => db.rows(sql, []), (sql: string) => db.sequelize.query(sql)]) {
      const first = await backendPid(db);
      p.freeze(); // this connection goes silent; new ones pass
      const err = await failure(send('SELECT 1'));
      expect(String((err as Error).message)).toBe('Query read timeout');
      expect(isDatabaseUnavailable(err)).toBe(true);
      expect(await backendPid(db)).not.toBe(first);
    }
  });
});

describe('a failover, through the app', () => {
  let app: TestApp;
  let name: TcpProxy; // the database's name, as the app resolves it
  beforeAll(async () => {
    name = await proxy();
    app = await startTestApp({}, { databaseUrl: proxyUrl(name), reconnectDelayMs: 100 });
    opened.unshift({ close: () => app.stop() });
  });

  const me = (access: string) => app.request('GET', '/api/me/', { headers: { Authorization: `Bearer ${access}` } });
  const login = (username: string) => app.post('/api/token/', { username, password: `${username}-password-1` });
  const expect503 = (r: { status: number; headers: Headers; json: { code?: string } }) => {
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toBe('2');
    expect(r.json.code).toBe('database_unavailable');
  };

  it('rides through: 503 while the name has no primary, guarded reads from memory, nothing acknowledged lost', async () => {
    await app.user('alice', 'alice-password-1');
    await app.user('bob', 'bob-password-1');
    const alice = await app.login('alice', 'alice-password-1');
    const refreshed = await app.post('/api/token/refresh/', { refresh: alice.refresh });
    expect(refreshed.status).toBe(200); // acknowledged: its child token must survive
    const bob = await app.login('bob', 'bob-password-1');
    expect((await app.post('/api/token/blacklist/', { refresh: bob.refresh })).status).toBe(200); // acknowledged

    // The primary dies.
    expect((await run('docker', ['kill', primary.getId()])).code).toBe(0);
    expect503(await login('alice'));
    expect((await me(alice.access)).status).toBe(200);
    expect((await app.request('GET', '/readyz')).status).toBe(503);

    // The name moves to the standby before its promotion has finished: it answers, read-only.
    name.retarget({ host: standby.getHost(), port: standby.getMappedPort(5432) });
    expect503(await login('alice'));
    expect503(await app.post('/api/token/refresh/', { refresh: refreshed.json.refresh }));
    const ready = await app.request('GET', '/readyz');
    expect(ready.status).toBe(503);
    expect(ready.json).toMatchObject({ database: 'unavailable' });
    expect(app.services.feed.connected()).toBe(false);
    expect((await me(alice.access)).status).toBe(200);

    // Promoted: the app is on it with no restart, its feed reloaded from it.
    const promoted = await standby.exec(['psql', '-U', USER, '-d', DB, '-tAc', 'SELECT pg_promote()']);
    expect(promoted.output.trim()).toBe('t');
    await expect.poll(async () => (await app.request('GET', '/readyz')).status, { timeout: 15_000 }).toBe(200);
    expect(app.services.feed.connected()).toBe(true);
    const again = await login('alice');
    expect(again.status).toBe(200);
    expect((await app.post('/api/token/refresh/', { refresh: refreshed.json.refresh })).status).toBe(200);
    // Bob's logout came back with the reload from the new primary (the state was replaced, not kept).
    expect((await app.post('/api/token/refresh/', { refresh: bob.refresh })).status).toBe(401);
    expect((await me(bob.access)).status).toBe(401);
    // A logout on the new primary reaches the feed (NOTIFY from the new primary).
    expect((await me(again.json.access)).status).toBe(200);
    expect((await app.post('/api/token/blacklist/', { refresh: again.json.refresh })).status).toBe(200);
    await expect.poll(async () => (await me(again.json.access)).status, { timeout: 5_000, interval: 20 }).toBe(401);
  });
});
