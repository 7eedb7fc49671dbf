// The Sequelize instance (one connection pool per process) and the models on it (models.ts).
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { Sequelize } from 'sequelize';
import { NO_OUTBOX, type OutboxSettings } from '../events/outbox';
import { defineModels } from './models';

export interface DatabaseOptions {
  url: string;
  poolMax: number;
  /** Tag for pg_stat_activity. */
  applicationName?: string;
  /** Which security events the changes made through this database record, for which receivers (app/events/). */
  outbox?: OutboxSettings;
}

export type Database = ReturnType<typeof createDatabase>;

export function createDatabase(options: DatabaseOptions) {
  const sequelize = new Sequelize(options.url, {
    dialect: 'postgres',
    logging: false,
    pool: { max: options.poolMax, min: 0, idle: 10_000, acquire: 10_000 },
    dialectOptions: {
      application_name: options.applicationName ?? 'koa-auth-stack',
      // Fail fast when the database is away, so /readyz and the token endpoints answer at once
      // instead of hanging on a dead connection attempt.
      connectionTimeoutMillis: 3_000,
      keepAlive: true,
    },
  });
  const models = defineModels(sequelize);

  // How many statements this process has sent (through the models and hand-written), for tests that
  // prove a path sends none.
  let statements = 0;
  sequelize.addHook('beforeQuery', () => {
    statements += 1;
  });

  // Hand-written SQL, for the statements a measurement showed the ORM's pipeline to cost too much on
  // (each names its measurement where it is written). It goes straight to pg on a connection of
  // Sequelize's own pool, as a named prepared statement (parsed once per connection).
  const statementNames = new Map<string, string>();
  const nameOf = (sql: string) => {
    let name = statementNames.get(sql);
    if (!name) statementNames.set(sql, (name = `q${createHash('sha1').update(sql).digest('hex').slice(0, 16)}`));
    return name;
  };

  /** A parameterised statement ($1, $2, …) returning its rows. */
  async function rows<T extends object>(sql: string, values: unknown[]): Promise<T[]> {
    statements += 1;
    const client = (await sequelize.connectionManager.getConnection({ type: 'write' })) as pg.Client;
    try {
      return (await client.query<T>({ name: nameOf(sql), text: sql, values })).rows;
    } finally {
      await sequelize.connectionManager.releaseConnection(client);
    }
  }

  return {
    sequelize,
    models,
    /** Read by recordEvent (app/events/outbox.ts), inside the domain functions' transactions. */
    outbox: options.outbox ?? NO_OUTBOX,
    rows,
    statementCount: () => statements,
    close: () => sequelize.close(),
  };
}
