// Everything a worker runs on, built from the Config: the pool, the token service, the hasher and
// the revocation state with its feed, the metrics. Shared by server.ts and the tests.
import type { Logger } from 'pino';
import { createPasswordHasher, type Argon2Params, type PasswordHasher } from './auth/passwords';
import { RevocationStore, revocationWindowMs, startRevocationFeed, type RevocationFeed } from './auth/revocations';
import { createTokenService, type Clock, type TokenService } from './auth/tokens';
import type { Config } from './config';
import { createDatabase, type Database } from './db/database';
import { outboxSettings } from './events/outbox';
import { createWorkerMetrics, type PoolStats, type WorkerIdentity, type WorkerMetrics } from './metrics/worker';

export interface Services {
  db: Database;
  tokens: TokenService;
  hasher: PasswordHasher;
  revocations: RevocationStore;
  feed: RevocationFeed;
  metrics: WorkerMetrics;
  close(): Promise<void>;
}

export function createServices(
  config: Config,
  logger: Logger,
  clock: Clock,
  options: { argon2?: Argon2Params; reconnectDelayMs?: number; identity?: WorkerIdentity } = {},
): Services {
  const db = createDatabase({ url: config.databaseUrl, poolMax: config.dbPoolMax, outbox: outboxSettings(config.webhooks) });
  const tokens = createTokenService(config.jwt, clock);
  // An entry matters while an access token issued before it can still be valid.
  const windowMs = revocationWindowMs(config.jwt);
  const revocations = new RevocationStore(windowMs, clock);
  const feed = startRevocationFeed({
    databaseUrl: config.databaseUrl,
    store: revocations,
    windowMs,
    clock,
    logger,
    ...(options.reconnectDelayMs !== undefined ? { reconnectDelayMs: options.reconnectDelayMs } : {}),
  });
  const metrics = createWorkerMetrics(options.identity ?? { worker: '0', pid: process.pid }, {
    // Sequelize's pool (sequelize-pool); its types leave it out of ConnectionManager.
    pool: () => (db.sequelize.connectionManager as unknown as { pool?: PoolStats }).pool,
    feed,
    clock,
  });
  return {
    db,
    tokens,
    hasher: createPasswordHasher(options.argon2, { concurrency: config.hashConcurrency, queueLimit: config.hashQueue }),
    revocations,
    feed,
    metrics,
    async close() {
      await feed.stop();
      await db.close();
    },
  };
}
