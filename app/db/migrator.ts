// Schema migrations with umzug, recorded in the table "schema_migrations". Migrations are listed in
// code rather than found by a glob (migrations/index.ts), so the same list runs from TypeScript
// sources and from dist/.
//
// Each migration runs in a transaction of its own, together with its row in schema_migrations: one
// that fails leaves the schema as it was before it, and is still pending. Migrations are written to be
// safe while the previous release still serves (expand now, contract in a later release): README,
// "Migrations".
import { type QueryOptions, type Sequelize, type Transaction } from 'sequelize';
import { MigrationError, SequelizeStorage, Umzug, type MigrationParams, type UmzugStorage } from 'umzug';
import { MIGRATIONS, MIGRATIONS_TABLE, type Migration } from './migrations';

// Any fixed number: every process that migrates takes the same Postgres advisory lock, so two
// migrators started at once (two deploys, a CLI beside a start) run one after the other.
const MIGRATION_LOCK_ID = 7_411_023;

// How long a migration waits for a table lock before it gives up (and rolls back). While it waits,
// every request that needs the same table queues behind it: a migration that cannot get its lock
// soon must fail, not stall the serving release.
export const MIGRATION_LOCK_TIMEOUT_MS = 5_000;

export interface MigrationLog {
  info(message: string): void;
}

export interface MigratorOptions {
  /** The migrations to run (tests add their own); the release's list by default. */
  migrations?: readonly Migration[];
  lockTimeoutMs?: number;
}

/**
 * The Sequelize instance a migration sees: the same, except that `query` runs in the migration's
 * transaction (the migrations' code stays plain `sequelize.query(sql)`).
 */
function inTransaction(sequelize: Sequelize, transaction: Transaction): Sequelize {
  const query = (sql: string | { query: string; values: unknown[] }, options?: QueryOptions) => sequelize.query(sql, { ...options, transaction });
  return new Proxy(sequelize, {
    get: (target, prop, receiver) => (prop === 'query' ? query : Reflect.get(target, prop, receiver)),
  });
}

export function createMigrator(sequelize: Sequelize, log: MigrationLog, options: MigratorOptions = {}) {
  // umzug's own storage keeps the table (and creates it on first use); the rows are written below.
  const recorded = new SequelizeStorage({ sequelize, tableName: MIGRATIONS_TABLE });
  const lockTimeoutMs = options.lockTimeoutMs ?? MIGRATION_LOCK_TIMEOUT_MS;

  /** Runs one step of a migration and its bookkeeping in one transaction. */
  const step = (work: (context: Sequelize, t: Transaction) => Promise<unknown>) =>
    sequelize.transaction(async (t) => {
      await sequelize.query(`SET LOCAL lock_timeout = ${Math.trunc(lockTimeoutMs)}`, { transaction: t });
      await work(inTransaction(sequelize, t), t);
    });

  const migrations = (options.migrations ?? MIGRATIONS).map(
    (m): Migration => ({
      name: m.name,
      up: (params: MigrationParams<Sequelize>) =>
        step(async (context, transaction) => {
          await m.up({ ...params, context });
          await sequelize.query(`INSERT INTO ${MIGRATIONS_TABLE} (name) VALUES (:name)`, { replacements: { name: m.name }, transaction });
        }),
      down: (params: MigrationParams<Sequelize>) =>
        step(async (context, transaction) => {
          await m.down?.({ ...params, context });
          await sequelize.query(`DELETE FROM ${MIGRATIONS_TABLE} WHERE name = :name`, { replacements: { name: m.name }, transaction });
        }),
    }),
  );
  // The rows are written inside each migration's transaction (above), not after it.
  const storage: UmzugStorage<Sequelize> = {
    executed: () => recorded.executed(),
    logMigration: async () => {},
    unlogMigration: async () => {},
  };

  return new Umzug<Sequelize>({
    migrations,
    context: sequelize,
    storage,
    logger: {
      info: (e) => log.info(`${String(e.event)} ${String(e.name ?? '')}`.trim()),
      warn: (e) => log.info(JSON.stringify(e)),
      error: (e) => log.info(JSON.stringify(e)),
      debug: () => {},
    },
  });
}

/** What a failed migration tells the operator: which one, why, and that nothing of it stayed. */
export function describeMigrationFailure(err: unknown): string | undefined {
  if (!(err instanceof MigrationError)) return undefined;
  const { name, direction } = err.migration as { name: string; direction: string };
  const cause = err.cause instanceof Error ? err.cause.message : String(err.cause);
  const hint = /lock timeout/.test(cause) ? ' (it waited too long for a table lock held by others: run it again when the load is lower)' : '';
  return `migration ${name} (${direction}) failed: ${cause}${hint}. Its transaction was rolled back: the schema is as it was before it, and it is still ${direction === 'up' ? 'pending' : 'applied'}`;
}

/** Runs `work` holding the migration lock on one dedicated connection. */
export async function withMigrationLock<T>(sequelize: Sequelize, work: () => Promise<T>): Promise<T> {
  // A transaction pins one connection for the lock; the migrations' own transactions use other pool
  // connections, which is fine: the lock only has to exclude other migrators.
  const t = await sequelize.transaction();
  try {
    await sequelize.query('SELECT pg_advisory_xact_lock(:id)', { replacements: { id: MIGRATION_LOCK_ID }, transaction: t });
    const result = await work();
    await t.commit();
    return result;
  } catch (err) {
    await t.rollback();
    throw err;
  }
}
