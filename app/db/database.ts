// The Sequelize instance (one connection pool per process) and the models on it (models.ts).
import { createHash } from 'node:crypto';
import { QueryTypes, Sequelize, type Transaction } from 'sequelize';
import { NO_OUTBOX, type OutboxSettings } from '../events/outbox';
import { errorText, mayComeUp } from './availability';
import { defineModels } from './models';
import { rawPool } from './pool';

export interface DatabaseOptions {
  url: string;
  poolMax: number;
  /** Tag for pg_stat_activity. */
  applicationName?: string;
  /** Which security events the changes made through this database record, for which receivers (app/events/). */
  outbox?: OutboxSettings;
  /**
   * How long a statement may go unanswered before its connection counts as lost (pg's query_timeout):
   * a server that vanished without closing its sockets (a failover that took the machine) would
   * otherwise hold every request on it until TCP gives up, minutes later. None by default; the
   * workers set it (DB_QUERY_TIMEOUT), the CLI's long statements do not.
   */
  queryTimeoutMs?: number;
}

/** Thrown when the pool reached a server still in recovery (a standby): it cannot take our writes. */
export class StandbyError extends Error {
  override name = 'StandbyError';
  // read_only_sql_transaction, as the standby itself answers a write: "unavailable" (availability.ts).
  readonly code = '25006';
  constructor() {
    super('the database is a standby in recovery');
  }
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
      ...(options.queryTimeoutMs ? { query_timeout: options.queryTimeoutMs } : {}),
    },
  });
  const models = defineModels(sequelize);

  const pool = rawPool(sequelize);

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

  /**
   * A parameterised statement ($1, $2, …) returning its rows. In a transaction (one that must also
   * hold model writes) it goes through Sequelize, on the transaction's connection, unprepared.
   */
  async function rows<T extends object>(sql: string, values: unknown[], transaction?: Transaction): Promise<T[]> {
    if (transaction) return sequelize.query<T>(sql, { bind: values, transaction, type: QueryTypes.SELECT }); // counted by the hook
    statements += 1;
    return pool.withConnection(async (client) => (await client.query<T>({ name: nameOf(sql), text: sql, values })).rows);
  }

  /**
   * Resolves when the pool reaches a primary; rejects when the database cannot be reached, or with
   * StandbyError when the server is still in recovery (the name points at a standby not yet promoted),
   * and that connection is dropped. Readiness asks this.
   */
  async function checkPrimary(): Promise<void> {
    statements += 1;
    await pool.withConnection(async (client) => {
      const { rows: [row] } = await client.query<{ recovery: boolean }>('SELECT pg_is_in_recovery() AS recovery');
      if (row?.recovery) throw new StandbyError();
    });
  }

  /**
   * Resolves once the database takes a connection, trying for up to `seconds` while it may still
   * come up (not listening yet, starting: availability.ts); rejects at once on a final refusal (our
   * password, role or database name). onWait hears the first failed attempt's reason. The retries are
   * Sequelize's own (retry-as-promised), with the deadline in the match.
   */
  async function reachable(seconds: number, onWait?: (reason: string) => void): Promise<void> {
    const deadline = Date.now() + seconds * 1000;
    let told = false;
    // An arrow function, not a class: retry-as-promised then calls it with the error.
    const retryable = (err: Error) => {
      if (!mayComeUp(err) || Date.now() >= deadline) return false;
      if (!told) onWait?.(errorText(err));
      told = true;
      return true;
    };
    await sequelize.authenticate({ retry: { max: Number.POSITIVE_INFINITY, match: [retryable], backoffBase: 500, backoffExponent: 1 } });
  }

  return {
    sequelize,
    models,
    /** Read by recordEvent (app/events/outbox.ts), inside the domain functions' transactions. */
    outbox: options.outbox ?? NO_OUTBOX,
    rows,
    /** The pool's counters (metrics). */
    poolStats: pool.stats,
    checkPrimary,
    reachable,
    statementCount: () => statements,
    close: () => sequelize.close(),
  };
}
