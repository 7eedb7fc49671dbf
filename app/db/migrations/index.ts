// The release's migrations, in order, and which of them a database lacks. Apart from the migrator
// (migrator.ts, umzug), so a worker, which only checks, does not load umzug: 4.6 MB of RSS among the
// modules a worker loads (docs/PERFORMANCE.md, "A worker's memory, from the libraries up").
import { QueryTypes, type Sequelize } from 'sequelize';
import type { RunnableMigration } from 'umzug';
import { initial } from './0001_initial';
import { revocations } from './0002_revocations';
import { throttle } from './0003_throttle';
import { sessions } from './0004_sessions';
import { hardening } from './0005_hardening';
import { clientsAndClaims } from './0006_clients_and_claims';
import { webhookOutbox } from './0007_webhook_outbox';

/** A migration: SQL through `context.query`, which runs inside the migration's transaction. */
export type Migration = RunnableMigration<Sequelize>;

export const MIGRATIONS: readonly Migration[] = [initial, revocations, throttle, sessions, hardening, clientsAndClaims, webhookOutbox];

/** Where the applied migrations are recorded, one row each. */
export const MIGRATIONS_TABLE = 'schema_migrations';

/**
 * The migrations of this release that the database has not applied. A database ahead of the release
 * (migrations it does not know) is fine: that is the previous release serving after the next one's
 * expand migrations ran.
 */
export async function pendingMigrations(sequelize: Sequelize, migrations: readonly Migration[] = MIGRATIONS): Promise<string[]> {
  let applied: Set<string>;
  try {
    const rows = await sequelize.query<{ name: string }>(`SELECT name FROM ${MIGRATIONS_TABLE}`, { type: QueryTypes.SELECT });
    applied = new Set(rows.map((r) => r.name));
  } catch (err) {
    // 42P01 undefined_table: no migration has ever run here.
    if ((err as { parent?: { code?: string } }).parent?.code !== '42P01') throw err;
    applied = new Set();
  }
  return migrations.map((m) => m.name).filter((name) => !applied.has(name));
}
