// The real Koa app over real HTTP, on its own fresh database in the shared Postgres container, with
// a clock the test can move.
import net, { type AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import type Koa from 'koa';
import pg from 'pg';
import { inject } from 'vitest';
import { createApp } from '../../app/app';
import type { Argon2Params, PasswordHasher } from '../../app/auth/passwords';
import type { RevocationStore } from '../../app/auth/revocations';
import type { TokenService } from '../../app/auth/tokens';
import { createUser } from '../../app/auth/users';
import { loadConfig, type Config } from '../../app/config';
import { createDatabase, type Database } from '../../app/db/database';
import { createMigrator } from '../../app/db/migrator';
import { createHttpServer } from '../../app/http/listen';
import { createLogger } from '../../app/logger';
import { createServices, type Services } from '../../app/services';
import { request, type Reply, type RequestOptions } from './http';

export const TEST_SIGNING_KEY = 'test-signing-key-for-integration-tests-only-0123456789';

export interface TestClock {
  (): number;
  advance(seconds: number): void;
  /** Stops real time from moving it (until reset): a step that must land just before a deadline in
   * whole seconds cannot straddle a second boundary of the real clock. */
  freeze(): void;
  /** Back to real time (the database's now() knows no other). */
  reset(): void;
}

export function testClock(): TestClock {
  let offset = 0;
  let frozenAt: number | undefined;
  const clock = (() => (frozenAt ?? Date.now()) + offset) as TestClock;
  clock.advance = (seconds) => {
    offset += seconds * 1000;
  };
  clock.freeze = () => {
    frozenAt = Date.now();
  };
  clock.reset = () => {
    offset = 0;
    frozenAt = undefined;
  };
  return clock;
}

/** Polls `check` until it returns true (revocations reach workers asynchronously, by NOTIFY). */
export async function eventually(check: () => Promise<boolean> | boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

let counter = 0;

/** A new, migrated database; returns its URL. */
export async function freshDatabase(): Promise<string> {
  const adminUrl = inject('postgresAdminUrl');
  const name = `t_${process.pid}_${Date.now().toString(36)}_${counter++}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

export interface TestApp {
  url: string;
  /** The Koa application itself, for tests that inspect its routes. */
  koa: Koa;
  config: Config;
  db: Database;
  tokens: TokenService;
  hasher: PasswordHasher;
  revocations: RevocationStore;
  services: Services;
  clock: TestClock;
  logs: string[];
  request(method: string, path: string, opts?: RequestOptions): Promise<Reply>;
  post(path: string, json: unknown): Promise<Reply>;
  user(username: string, password: string, options?: { active?: boolean }): Promise<number>;
  login(username: string, password: string): Promise<{ access: string; refresh: string }>;
  stop(): Promise<void>;
}

export interface TestAppOptions {
  /** Reuse a database (several "workers" on one database) instead of making a fresh one. */
  databaseUrl?: string;
  reconnectDelayMs?: number;
  /** Password hashing parameters other than OWASP's (a slow hash, to hold work in line). */
  argon2?: Argon2Params;
  /** Listen on this port (say, one the app's ISSUER names) instead of any free one. */
  port?: number;
}

/** A port free now, for an app whose configuration must name its own address before it listens. */
export async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

export async function startTestApp(env: Record<string, string> = {}, options: TestAppOptions = {}): Promise<TestApp> {
  const existingDatabaseUrl = options.databaseUrl;
  const databaseUrl = existingDatabaseUrl ?? (await freshDatabase());
  const { config } = loadConfig({
    NODE_ENV: 'test',
    DATABASE_URL: databaseUrl,
    SIGNING_KEY: TEST_SIGNING_KEY,
    LOG_LEVEL: 'info',
    // Tests refresh one account far more often than a person does; throttle.test.ts tests the limit.
    REFRESH_THROTTLE_PER_MINUTE: '0',
    // Tests fail logins by the hundred and count their work, not their time; passwords.test.ts sets
    // the floor and checks it.
    FAILED_LOGIN_MIN_TIME: '0',
    // Race tests hold row locks while they queue requests, for as long as a loaded runner takes to
    // queue them; the query timeout's own behaviour is tested in database-unavailable.test.ts.
    DB_QUERY_TIMEOUT: '120s',
    ...env,
  });
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      logs.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  const logger = createLogger(config.logLevel, {}, sink);
  const migrationDb = createDatabase({ url: config.databaseUrl, poolMax: 2 });
  await createMigrator(migrationDb.sequelize, { info: () => {} }).up();
  await migrationDb.close();
  const clock = testClock();
  const services = createServices(config, logger, clock, options);
  const { db, tokens, hasher, revocations } = services;
  await services.feed.ready;
  const app = createApp({ config, logger, clock, ...services });
  const server = createHttpServer(app.callback(), { keepAliveTimeoutMs: config.keepAliveTimeoutMs });
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const t: TestApp = {
    url,
    koa: app,
    config,
    db,
    tokens,
    hasher,
    revocations,
    services,
    clock,
    logs,
    request: (method, path, opts) => request(url, method, path, opts),
    post: (path, json) => request(url, 'POST', path, { json }),
    async user(username, password, options = {}) {
      return (await createUser(db, hasher, { username, password, isActive: options.active ?? true })).id;
    },
    async login(username, password) {
      const r = await t.post('/api/token/', { username, password });
      if (r.status !== 200) throw new Error(`login ${username}: ${r.status} ${r.text}`);
      return r.json as { access: string; refresh: string };
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await services.close();
    },
  };
  return t;
}
