// Which database errors are "unavailable" (503 + Retry-After, and the connection dropped) and which
// are faults (500). The errors are built as Sequelize and pg build them; test/integration/
// database-unavailable.test.ts causes each for real against Postgres.
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import {
  ConnectionAcquireTimeoutError,
  ConnectionError,
  ConnectionRefusedError,
  ConnectionTimedOutError,
  DatabaseError,
  HostNotFoundError,
  HostNotReachableError,
  UniqueConstraintError,
} from 'sequelize';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorText, isDatabaseUnavailable, isUnavailableSqlState, mayComeUp } from '../../app/db/availability';
import { StandbyError } from '../../app/db/database';
import { errorHandler } from '../../app/http/errors';
import { createLogger } from '../../app/logger';
import { request } from '../support/http';

/** An error as pg gives it: a message and, from the server, a SQLSTATE. */
const pgError = (message: string, code?: string) => Object.assign(new Error(message), code ? { code } : {});
/** The same, as Sequelize hands it on from an ORM query. */
const viaOrm = (err: Error) => new DatabaseError(err as Error & { sql: string; parameters: object });

const UNAVAILABLE: [string, unknown][] = [
  ['57P01 admin_shutdown (a failover, pg_terminate_backend)', pgError('terminating connection due to administrator command', '57P01')],
  ['57P02 crash_shutdown', pgError('terminating connection because of crash of another server process', '57P02')],
  ['57P03 cannot_connect_now', pgError('the database system is starting up', '57P03')],
  ['25006 read_only_sql_transaction (a standby in recovery)', pgError('cannot execute INSERT in a read-only transaction', '25006')],
  ['53300 too_many_connections', pgError('sorry, too many clients already', '53300')],
  ['08006 connection_failure', pgError('connection failure', '08006')],
  ['a reset socket', pgError('read ECONNRESET', 'ECONNRESET')],
  ['a refused connection', pgError('connect ECONNREFUSED 10.0.0.1:5432', 'ECONNREFUSED')],
  ['a name that does not resolve (moving)', pgError('getaddrinfo ENOTFOUND postgres', 'ENOTFOUND')],
  ['a connection closed under a query', pgError('Connection terminated unexpectedly')],
  ['a client that lost its connection', pgError('Client has encountered a connection error and is not queryable')],
  ['no answer within the query timeout', pgError('Query read timeout')],
  ['pg\'s connect timeout', pgError('timeout exceeded when trying to connect')],
  ['the standby check', new StandbyError()],
  ['Sequelize: cannot connect', new ConnectionError(pgError('x'))],
  ['Sequelize: refused', new ConnectionRefusedError(pgError('connect ECONNREFUSED', 'ECONNREFUSED'))],
  ['Sequelize: host not found', new HostNotFoundError(pgError('getaddrinfo ENOTFOUND postgres', 'ENOTFOUND'))],
  ['Sequelize: the pool\'s acquire timeout', new ConnectionAcquireTimeoutError(new Error('TimeoutError'))],
];

const FAULTS: [string, unknown][] = [
  ['23505 unique_violation', pgError('duplicate key value violates unique constraint', '23505')],
  ['42P01 undefined_table', pgError('relation "nope" does not exist', '42P01')],
  ['42601 syntax_error', pgError('syntax error at or near "SELEC"', '42601')],
  ['22P02 invalid_text_representation', pgError('invalid input syntax for type uuid', '22P02')],
  ['Sequelize: a unique violation', new UniqueConstraintError({})],
  ['a plain error', new Error('boom')],
  ['not an error', 'ECONNRESET'],
  ['nothing', undefined],
];

describe('isDatabaseUnavailable', () => {
  it.each(UNAVAILABLE)('%s: unavailable', (_, err) => {
    expect(isDatabaseUnavailable(err)).toBe(true);
    if (err instanceof Error && !(err instanceof ConnectionError) && !(err instanceof StandbyError)) {
      expect(isDatabaseUnavailable(viaOrm(err))).toBe(true);
    }
  });

  it.each(FAULTS)('%s: a fault, not unavailable', (_, err) => {
    expect(isDatabaseUnavailable(err)).toBe(false);
    if (err instanceof Error && !(err instanceof UniqueConstraintError)) expect(isDatabaseUnavailable(viaOrm(err))).toBe(false);
  });

  it('knows the SQLSTATEs exactly, not by prefix', () => {
    for (const code of ['57P01', '57P02', '57P03', '25006', '53300', '08000', '08003', '08006', '08P01']) expect(isUnavailableSqlState(code)).toBe(true);
    for (const code of ['57P04', '57014', '25001', '25P02', '53100', '53200', '23505', '0800', '080001', undefined, 57]) {
      expect(isUnavailableSqlState(code)).toBe(false);
    }
  });
});

describe('mayComeUp (worth waiting for: `cli migrate --wait`)', () => {
  // Sequelize reports some causes only as a ConnectionError: that one counts by its cause, below.
  it.each(UNAVAILABLE.filter(([name]) => name !== 'Sequelize: cannot connect'))('%s: yes', (_, err) => {
    expect(mayComeUp(err)).toBe(true);
  });

  it.each([
    ['starting up (57P03), met while connecting', new ConnectionError(pgError('the database system is starting up', '57P03'))],
    ['a connection closed while connecting', new ConnectionError(pgError('Connection terminated unexpectedly'))],
    ['no answer while connecting', new ConnectionTimedOutError(pgError('timeout exceeded when trying to connect'))],
    ['unreachable', new HostNotReachableError(pgError('connect EHOSTUNREACH 10.0.0.1:5432', 'EHOSTUNREACH'))],
  ])('%s: yes', (_, err) => {
    expect(mayComeUp(err)).toBe(true);
  });

  it.each(FAULTS)('%s: no', (_, err) => {
    expect(mayComeUp(err)).toBe(false);
  });

  // The server answered and refused us: as pg hands the error to Sequelize's connect (a
  // ConnectionError around it), and as a statement would meet it.
  it.each([
    ['28P01 invalid_password', pgError('password authentication failed for user "app"', '28P01')],
    ['28000 invalid_authorization_specification (no pg_hba.conf entry)', pgError('no pg_hba.conf entry for host', '28000')],
    ['3D000 invalid_catalog_name', pgError('database "nope" does not exist', '3D000')],
    ['an SSL mismatch', pgError('The server does not support SSL connections')],
    ['no password given', pgError('SASL: SCRAM-SERVER-FIRST-MESSAGE: client password must be a string')],
  ])('%s: no, though unavailable', (_, err) => {
    expect(isDatabaseUnavailable(new ConnectionError(err))).toBe(true); // a 503 to a client, all the same
    expect(mayComeUp(new ConnectionError(err))).toBe(false);
    expect(mayComeUp(viaOrm(err))).toBe(false);
  });
});

describe('errorText', () => {
  it('says what the error says, or its code when Node left the message empty', () => {
    expect(errorText(new ConnectionRefusedError(pgError('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED')))).toBe('connect ECONNREFUSED 127.0.0.1:5432');
    // localhost refused on ::1 and 127.0.0.1: an AggregateError with a code and no message.
    const both = Object.assign(new AggregateError([pgError('connect ECONNREFUSED ::1:5432'), pgError('connect ECONNREFUSED 127.0.0.1:5432')]), { code: 'ECONNREFUSED' });
    expect(errorText(new ConnectionRefusedError(both))).toBe('ECONNREFUSED');
    expect(errorText(both)).toBe('ECONNREFUSED');
    expect(errorText(new Error(''))).toBe('Error');
    expect(errorText('plain')).toBe('plain');
  });
});

describe('the error handler', () => {
  let url: string;
  let server: ReturnType<Koa['listen']>;
  let next: unknown;
  beforeAll(async () => {
    const app = new Koa();
    app.use(errorHandler({ logger: createLogger('silent'), authScheme: 'Bearer' }));
    app.use(() => {
      throw next;
    });
    server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    server.close();
  });

  it('answers 503 with Retry-After for every unavailable database', async () => {
    for (const [what, err] of UNAVAILABLE) {
      next = err;
      const r = await request(url, 'GET', '/');
      expect([what, r.status, r.headers.get('retry-after'), r.json]).toEqual([
        what,
        503,
        '2',
        { detail: 'The database is not answering; try again shortly.', code: 'database_unavailable' },
      ]);
    }
  });

  it('answers 500 for a fault', async () => {
    next = viaOrm(pgError('relation "nope" does not exist', '42P01'));
    const r = await request(url, 'GET', '/');
    expect(r.status).toBe(500);
    expect(r.json).toEqual({ detail: 'A server error occurred.', code: 'server_error' });
  });
});
