// Which database errors mean "the database is not available now" (a 503 the client may retry), as
// opposed to a fault in the statement (a 500). The same answer decides that a connection which
// produced the error is dropped from the pool, never lent out again: it is dead, or it reached a
// server that cannot take our writes (a standby still in recovery), which a failover moves away from.
import {
  ConnectionAcquireTimeoutError,
  ConnectionError,
  ConnectionRefusedError,
  ConnectionTimedOutError,
  DatabaseError,
  HostNotFoundError,
  HostNotReachableError,
} from 'sequelize';

// SQLSTATEs: class 08 connection exception; 57P01 admin_shutdown (a fast or immediate shutdown, a
// failover terminating sessions, pg_terminate_backend), 57P02 crash_shutdown, 57P03 cannot_connect_now
// (starting or stopping); 25006 read_only_sql_transaction (the server is a standby, or was put in
// read-only mode); 53300 too_many_connections.
const UNAVAILABLE_SQLSTATE = /^(08...|57P0[1-3]|25006|53300)$/;

// Errors with no SQLSTATE: the socket (refused, reset, unreachable, a name that does not resolve
// while it moves), pg's own timeouts (connecting; a query read timeout: no answer from a connection
// that may be black-holed) and a client that already lost its connection.
const LOST_CONNECTION =
  /Connection terminated|not queryable|ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|timeout exceeded when trying to connect|Query read timeout/;

/** A SQLSTATE that means the server cannot serve us now (not that our statement is wrong). */
export const isUnavailableSqlState = (code: unknown): boolean => typeof code === 'string' && UNAVAILABLE_SQLSTATE.test(code);

/**
 * The database cannot be used now. Errors come from Sequelize (the pool, ORM queries: a
 * ConnectionError, or a DatabaseError around pg's error) or from pg itself (the hand-written
 * statements in database.ts).
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  if (err instanceof ConnectionError) return true; // cannot connect, and the pool's acquire timeout
  return saysUnavailable(err instanceof DatabaseError ? err.original : err);
}

/** pg's own error (or the socket's): a SQLSTATE or a code or message of a lost connection. */
function saysUnavailable(cause: unknown): boolean {
  const e = cause as { code?: unknown; message?: unknown } | undefined;
  if (!e || typeof e !== 'object') return false;
  if (isUnavailableSqlState(e.code)) return true;
  if (typeof e.code === 'string' && LOST_CONNECTION.test(e.code)) return true;
  return typeof e.message === 'string' && LOST_CONNECTION.test(e.message);
}

/** What the database or the connection said, for a person: Node leaves some messages empty. */
export function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  // A refused connection to a name with two addresses (localhost: ::1 and 127.0.0.1) is an
  // AggregateError with a code and no message; Sequelize copies the empty message.
  const cause = (err as { original?: { code?: unknown } }).original;
  const code = (err as { code?: unknown }).code ?? cause?.code;
  return err.message || (typeof code === 'string' ? code : err.name);
}

/**
 * The database cannot be used yet but may come up by waiting: not listening yet, starting up, its
 * name not yet resolvable, or no answer in time. Anything else is final, and a connection error
 * Sequelize reports only as a ConnectionError counts by its cause: a wrong password or database name
 * (class 28, 3D000), an SSL mismatch or a bad setting will not change by waiting.
 */
export function mayComeUp(err: unknown): boolean {
  if (
    err instanceof ConnectionRefusedError ||
    err instanceof HostNotFoundError ||
    err instanceof HostNotReachableError ||
    err instanceof ConnectionTimedOutError ||
    err instanceof ConnectionAcquireTimeoutError
  ) {
    return true;
  }
  return saysUnavailable(err instanceof ConnectionError || err instanceof DatabaseError ? err.original : err);
}
