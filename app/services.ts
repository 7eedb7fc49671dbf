// Everything a worker runs on, built from the Config: the pool, the token service, the hasher and
// the revocation state with its feed, the metrics. Shared by server.ts and the tests.
import type { Logger } from 'pino';
import { createPasswordHasher, type Argon2Params, type PasswordHasher } from './auth/passwords';
import { createRevocationCheck, databaseLookup } from './auth/revocation-check';
import { RevocationStore, revocationWindowMs, startRevocationFeed, type RevocationCheck, type RevocationFeed } from './auth/revocations';
import { createTokenService, type Clock, type TokenService } from './auth/tokens';
import type { Config } from './config';
import { createDatabase, type Database } from './db/database';
import { outboxSettings } from './events/outbox';
import { createWorkerMetrics, type WorkerIdentity, type WorkerMetrics } from './metrics/worker';

export interface Services {
  db: Database;
  tokens: TokenService;
  hasher: PasswordHasher;
  /** What the feed brought: revoked families and users' cutoffs, in memory. */
  revocations: RevocationStore;
  feed: RevocationFeed;
  /** The guard's question: memory while the feed vouches for it, else the database (revocation-check.ts). */
  revocationCheck: RevocationCheck;
  metrics: WorkerMetrics;
  close(): Promise<void>;
}

export function createServices(
  config: Config,
  logger: Logger,
  clock: Clock,
  options: { argon2?: Argon2Params; reconnectDelayMs?: number; heartbeatMs?: number; identity?: WorkerIdentity } = {},
): Services {
  const identity = options.identity ?? { worker: '0', pid: process.pid };
  // Each worker's connections are tagged with its PM2 instance in pg_stat_activity (the failover
  // drill finds every worker's pool and feed on the new primary by them).
  const db = createDatabase({
    url: config.databaseUrl,
    poolMax: config.dbPoolMax,
    queryTimeoutMs: config.dbQueryTimeoutMs,
    applicationName: `koa-auth-stack worker ${identity.worker}`,
    outbox: outboxSettings(config.webhooks),
  });
  const tokens = createTokenService(config.jwt, clock, config.clients);
  // An entry matters while an access token issued before it can still be valid.
  const windowMs = revocationWindowMs(config.jwt);
  const revocations = new RevocationStore(windowMs, clock);
  const feed = startRevocationFeed({
    databaseUrl: config.databaseUrl,
    store: revocations,
    windowMs,
    clock,
    logger,
    applicationName: `koa-auth-stack revocations worker ${identity.worker}`,
    ...(options.reconnectDelayMs !== undefined ? { reconnectDelayMs: options.reconnectDelayMs } : {}),
    ...(options.heartbeatMs !== undefined ? { heartbeatMs: options.heartbeatMs } : {}),
  });
  const metrics = createWorkerMetrics(identity, {
    // Sequelize's pool (sequelize-pool); its types leave it out of ConnectionManager.
    pool: db.poolStats,
    feed,
    clock,
  });
  const revocationCheck = createRevocationCheck({
    store: revocations,
    feed,
    lookup: databaseLookup(db),
    logger,
    onUnvouched: metrics.unvouchedCheck,
  });
  const hasher = createPasswordHasher(options.argon2, {
    concurrency: config.hashConcurrency,
    queueLimit: config.hashQueue,
    failureFloorMs: config.failedLoginMinTimeMs,
  });
  return {
    db,
    tokens,
    hasher,
    revocations,
    feed,
    revocationCheck,
    metrics,
    async close() {
      await feed.stop();
      await hasher.close();
      await db.close();
    },
  };
}
