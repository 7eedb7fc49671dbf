// Schema migrations with umzug, recorded in the table "schema_migrations". Migrations are listed in
// code rather than found by a glob, so the same list runs from TypeScript sources and from dist/.
import type { Sequelize } from 'sequelize';
import { SequelizeStorage, Umzug, type RunnableMigration } from 'umzug';
import { initial } from './migrations/0001_initial';
import { revocations } from './migrations/0002_revocations';
import { throttle } from './migrations/0003_throttle';
import { sessions } from './migrations/0004_sessions';
import { hardening } from './migrations/0005_hardening';
import { clientsAndClaims } from './migrations/0006_clients_and_claims';
import { webhookOutbox } from './migrations/0007_webhook_outbox';

export type Migration = RunnableMigration<Sequelize>;

export const MIGRATIONS: readonly Migration[] = [initial, revocations, throttle, sessions, hardening, clientsAndClaims, webhookOutbox];

// Any fixed number: every process that migrates takes the same Postgres advisory lock, so two
// migrators started at once (two deploys, a CLI beside a start) run one after the other.
const MIGRATION_LOCK_ID = 7_411_023;

export interface MigrationLog {
  info(message: string): void;
}

export function createMigrator(sequelize: Sequelize, log: MigrationLog) {
  return new Umzug<Sequelize>({
    migrations: [...MIGRATIONS],
    context: sequelize,
    storage: new SequelizeStorage({ sequelize, tableName: 'schema_migrations' }),
    logger: {
      info: (e) => log.info(`${String(e.event)} ${String(e.name ?? '')}`.trim()),
      warn: (e) => log.info(JSON.stringify(e)),
      error: (e) => log.info(JSON.stringify(e)),
      debug: () => {},
    },
  });
}

/** Runs `work` holding the migration lock on one dedicated connection. */
export async function withMigrationLock<T>(sequelize: Sequelize, work: () => Promise<T>): Promise<T> {
  // A transaction pins one connection for the lock; umzug's own queries use other pool connections,
  // which is fine: the lock only has to exclude other migrators.
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
