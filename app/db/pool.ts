// Sequelize's connection pool, borrowed raw for hand-written SQL (database.ts's rows()). Sequelize
// offers no public API for it: every use of its internals (connectionManager, the pool, the `_invalid`
// mark) is here, so an upgrade that changes them breaks this file alone.
import type pg from 'pg';
import type { Sequelize } from 'sequelize';
import { isDatabaseUnavailable, isUnavailableSqlState } from './availability';

/** The pool's counters (sequelize-pool's Pool), for the metrics. */
export interface PoolStats {
  readonly size: number;
  readonly available: number;
  readonly using: number;
  readonly waiting: number;
  readonly maxSize: number;
}

// Sequelize's own mark for a connection its pool must not lend again: its postgres dialect sets it
// on a socket error, and validate() reads it each time the pool hands a connection out.
type PoolConnection = pg.Client & { _invalid?: boolean };

interface ConnectionManager {
  getConnection(options: { type: 'write' }): Promise<unknown>;
  releaseConnection(connection: unknown): void;
  destroyConnection(connection: unknown): Promise<void>;
  pool?: PoolStats;
}

export interface RawPool {
  /**
   * A connection of the pool for `use`, given back after it, or destroyed when `use` failed because
   * the database is unavailable: such a connection is dead, or on a server we must not use.
   */
  withConnection<T>(use: (client: pg.Client) => Promise<T>): Promise<T>;
  stats(): PoolStats | undefined;
}

export function rawPool(sequelize: Sequelize): RawPool {
  const manager = sequelize.connectionManager as unknown as ConnectionManager;

  // A connection that answered "unavailable" (57P01 admin shutdown, 25006 a standby, …; see
  // availability.ts) is never lent again, whichever path sent the statement (the ORM or rows()).
  // pg's Client hands a server error to the query only; its Connection says it first (the client
  // listens there too); errors of the socket itself end the client, and Sequelize drops it.
  sequelize.addHook('afterConnect', (connection) => {
    const client = connection as PoolConnection;
    client.connection.on('errorMessage', (msg: { code?: unknown }) => {
      if (isUnavailableSqlState(msg.code)) client._invalid = true;
    });
  });

  return {
    async withConnection(use) {
      const client = (await manager.getConnection({ type: 'write' })) as PoolConnection;
      let result;
      try {
        result = await use(client);
      } catch (err) {
        // Not awaited: ending a black-holed connection can take as long as TCP does.
        if (isDatabaseUnavailable(err) || client._invalid) void manager.destroyConnection(client).catch(() => {});
        else manager.releaseConnection(client);
        throw err;
      }
      manager.releaseConnection(client);
      return result;
    },
    stats: () => manager.pool,
  };
}
