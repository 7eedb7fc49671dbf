// Brute-force throttling in Postgres, shared by all workers and surviving restarts.
//
// Logins, two bounds:
// - per (account, client address), as Auth0's brute-force protection: a few free attempts, then each
//   further one waits twice as long as the last, up to a cap; a success clears it; a quiet period
//   forgets it. An attacker's attempts slow the attacker's own address only.
// - per account across addresses, as Keycloak's brute-force detection counts failures per user
//   wherever they come from, but without its lockout of the real user: addresses that logged into
//   the account before (for LOGIN_KNOWN_ADDRESS_TTL) stay exempt, and all other addresses share a
//   slower budget (LOGIN_THROTTLE_ACCOUNT_BUDGET per LOGIN_THROTTLE_ACCOUNT_WINDOW). A botnet spread
//   over thousands of addresses gets that budget, no more; the user's usual places never wait for it.
// Every attempt is reserved before its password is hashed, in one statement, so concurrent attempts
// cannot all pass a check made before any of them is counted: at most the free attempts are hashed.
// Addresses are nginx's view of the client (one trusted proxy hop); request rates are nginx's job.
//
// Refreshes: a fixed one-minute window per family (session), counted only for a refresh token that
// could be used: an old, revoked token of the victim's counts for nothing, so it cannot lock them out.
import { createHash } from 'node:crypto';
import { Op } from 'sequelize';
import type { Database } from '../db/database';
import { statement, type Placeholders } from '../db/statement';
import { USABLE, type RefreshTokenRef } from './families';

export interface ThrottleSettings {
  loginFreeAttempts: number;
  loginMaxDelaySeconds: number;
  /** Attempts are forgotten after this long without one. */
  loginQuietSeconds: number;
  /** Attempts per window on one account from addresses it has not logged in from; 0 turns it off. */
  loginAccountBudget: number;
  loginAccountWindowSeconds: number;
  /** How long a successful login keeps its address exempt from the account's shared budget. */
  loginKnownAddressSeconds: number;
  /** Refreshes per family (session) per minute; 0 turns the limit off. */
  refreshPerMinute: number;
}

const hashKey = (...parts: string[]) => createHash('sha256').update(parts.join('\u0000')).digest('hex');

export interface LoginKeys {
  /** The (account, address) record. */
  address: string;
  /** The account's shared budget. */
  account: string;
  /** The address as one the account has logged in from. */
  known: string;
}

/** Hashes, so neither usernames nor addresses are stored in clear. */
export const loginKeys = (username: string, address: string): LoginKeys => ({
  address: hashKey('login', username, address),
  account: hashKey('login-account', username),
  known: hashKey('known-address', username, address),
});

/**
 * A machine client's attempts (the client credentials grant), counted like a login's: per (client id,
 * address) and per client id across addresses, under keys of their own.
 */
export const clientKeys = (clientId: string, address: string): LoginKeys => ({
  address: hashKey('client', clientId, address),
  account: hashKey('client-account', clientId),
  known: hashKey('client-known-address', clientId, address),
});

export type Reservation = { ok: true } | { ok: false; waitSeconds: number; bound: 'address' | 'account' };

export interface ReserveParams extends Record<string, unknown> {
  addressKey: string;
  accountKey: string;
  knownKey: string;
  now: Date;
  quietSeconds: number;
  freeAttempts: number;
  maxDelaySeconds: number;
  knownAddressSeconds: number;
  accountBudget: number;
  accountWindowSeconds: number;
}

// The reservation, written by hand because it must be one statement: it counts the attempt for its
// address (refused while the address must wait), then, unless the address logged into this account
// before, against the account's shared budget (refused when spent). Both records are locked and
// updated atomically (INSERT … ON CONFLICT DO UPDATE … WHERE re-checks the newest row under its lock).
// Its CTEs and columns are parts, as successCtes is: a password login reads its user in the same
// statement (logins.ts, beginLogin).
export const reservationCtes = (p: Placeholders<ReserveParams>): string => {
  const now = `${p.now}::timestamptz`;
  const quiet = `t.updated_at <= ${now} - make_interval(secs => ${p.quietSeconds})`;
  const counted = `CASE WHEN ${quiet} THEN 1 ELSE t.count + 1 END`;
  // When attempt n + 1 may come, once n are counted: no wait within the free attempts, then 1 s, 2 s,
  // 4 s … up to the cap (test/integration/throttle.test.ts reads the waits back).
  const blockedAfter = (n: string) =>
    `CASE WHEN ${n} + 1 - ${p.freeAttempts} <= 0 THEN NULL
          ELSE ${now} + make_interval(secs => least(power(2, least(${n} - ${p.freeAttempts}, 30)), ${p.maxDelaySeconds})) END`;
  const windowOver = `t.started_at <= ${now} - make_interval(secs => ${p.accountWindowSeconds})`;
  return `
  known AS (
    SELECT EXISTS (SELECT 1 FROM auth_known_addresses WHERE key = ${p.knownKey} AND seen_at > ${now} - make_interval(secs => ${p.knownAddressSeconds})) AS yes
  ),
  address AS (
    INSERT INTO auth_throttle AS t (key, count, started_at, updated_at, blocked_until)
    VALUES (${p.addressKey}, 1, ${p.now}, ${p.now}, ${blockedAfter('1')})
    ON CONFLICT (key) DO UPDATE SET
      count = ${counted},
      started_at = CASE WHEN ${quiet} THEN ${p.now} ELSE t.started_at END,
      updated_at = ${p.now},
      blocked_until = ${blockedAfter(counted)}
    WHERE ${quiet} OR t.blocked_until IS NULL OR t.blocked_until <= ${p.now}
    RETURNING t.count
  ),
  account AS (
    INSERT INTO auth_throttle AS t (key, count, started_at, updated_at)
    SELECT ${p.accountKey}, 1, ${p.now}, ${p.now} WHERE ${p.accountBudget} > 0 AND NOT (SELECT yes FROM known) AND EXISTS (SELECT 1 FROM address)
    ON CONFLICT (key) DO UPDATE SET
      count = CASE WHEN ${windowOver} THEN 1 ELSE t.count + 1 END,
      started_at = CASE WHEN ${windowOver} THEN ${p.now} ELSE t.started_at END,
      updated_at = ${p.now}
    WHERE ${windowOver} OR t.count < ${p.accountBudget}
    RETURNING t.count
  )`;
};

/** What the reservation answers: the select list of a statement with reservationCtes. */
export const reservationColumns = (p: Placeholders<ReserveParams>): string => `
         (SELECT count FROM address) AS address_count,
         (SELECT yes FROM known) AS known,
         (SELECT count FROM account) AS account_count,
         (SELECT blocked_until FROM auth_throttle WHERE key = ${p.addressKey}) AS address_blocked_until,
         (SELECT started_at FROM auth_throttle WHERE key = ${p.accountKey}) AS account_started_at`;

/** The row reservationColumns select. */
export interface ReservationRow {
  address_count: number | null;
  known: boolean;
  account_count: number | null;
  address_blocked_until: Date | null;
  account_started_at: Date | null;
}

/** The parameters of reservationCtes and reservationColumns, for one attempt. */
export const reservationValues = (keys: LoginKeys, now: Date, s: ThrottleSettings): ReserveParams => ({
  addressKey: keys.address,
  accountKey: keys.account,
  knownKey: keys.known,
  now,
  quietSeconds: s.loginQuietSeconds,
  freeAttempts: s.loginFreeAttempts,
  maxDelaySeconds: s.loginMaxDelaySeconds,
  knownAddressSeconds: s.loginKnownAddressSeconds,
  accountBudget: s.loginAccountBudget,
  accountWindowSeconds: s.loginAccountWindowSeconds,
});

/** The reservation's answer: passed, or refused with how long to wait and which bound refused it. */
export function readReservation(row: ReservationRow, now: Date, s: ThrottleSettings): Reservation {
  const secondsUntil = (at: Date | null | undefined) => Math.max(1, Math.ceil(((at?.getTime() ?? 0) - now.getTime()) / 1000));
  if (row.address_count === null) return { ok: false, bound: 'address', waitSeconds: secondsUntil(row.address_blocked_until) };
  if (s.loginAccountBudget > 0 && !row.known && row.account_count === null) {
    const windowEnds = row.account_started_at ? new Date(row.account_started_at.getTime() + s.loginAccountWindowSeconds * 1000) : null;
    return { ok: false, bound: 'account', waitSeconds: secondsUntil(windowEnds) };
  }
  return { ok: true };
}

const RESERVE = statement<ReserveParams>((p) => `WITH ${reservationCtes(p)} SELECT ${reservationColumns(p)}`);

/**
 * Counts a login attempt before its password is hashed; refused while its address waits or the
 * account's shared budget is spent. (A password login reserves and reads its user in one statement:
 * logins.ts, beginLogin.)
 */
export async function reserveLoginAttempt(db: Database, keys: LoginKeys, now: Date, s: ThrottleSettings): Promise<Reservation> {
  const [row] = await db.rows<ReservationRow>(RESERVE.text, RESERVE.values(reservationValues(keys, now, s)));
  return readReservation(row!, now, s);
}

/** The parameters a statement with successCtes binds. */
export interface SuccessParams extends Record<string, unknown> {
  addressKey: string;
  knownKey: string;
  now: Date;
}

/**
 * A login's success, as two CTEs for a statement: its address's record cleared, and the address known
 * to the account from now on, both only when `gate` (a CTE before them) has a row. The password
 * login writes them with its session (logins.ts), a client's on their own (loginSucceeded).
 */
export const successCtes = (p: Placeholders<SuccessParams>, gate: string): string => `
  cleared AS (
    DELETE FROM auth_throttle WHERE key = ${p.addressKey}::char(64) AND EXISTS (SELECT 1 FROM ${gate})
  ),
  known AS (
    INSERT INTO auth_known_addresses (key, seen_at) SELECT ${p.knownKey}::char(64), ${p.now}::timestamptz FROM ${gate}
    ON CONFLICT (key) DO UPDATE SET seen_at = EXCLUDED.seen_at
  )`;

const SUCCEEDED = statement<SuccessParams>((p) => `WITH attempt AS (SELECT 1),${successCtes(p, 'attempt')} SELECT 1 AS done`);

/** A machine client's login succeeded (its secret was right): the success, in one statement. */
export async function loginSucceeded(db: Database, keys: LoginKeys, now: Date): Promise<void> {
  await db.rows(SUCCEEDED.text, SUCCEEDED.values({ addressKey: keys.address, knownKey: keys.known, now }));
}

/**
 * Counts a refresh against its family, only when the token could be used now (the rotation's own
 * USABLE predicate); the seconds to wait when the family is over the limit, else 0. One statement
 * written by hand: it runs on every refresh, and \`npm run bench:orm\` ("refreshThrottle";
 * docs/PERFORMANCE.md, "Sequelize and hand-written SQL") measured the models' form at a fraction of
 * this prepared statement's rate, for several times its worker CPU.
 */
export async function refreshWaitSeconds(db: Database, ref: RefreshTokenRef, now: Date, s: ThrottleSettings): Promise<number> {
  if (s.refreshPerMinute === 0) return 0;
  const [row] = await db.rows<{ count: number; started_at: Date }>(
    `WITH usable AS (SELECT t.family_id FROM refresh_tokens t, token_families f, users u WHERE ${USABLE})
     INSERT INTO auth_throttle AS a (key, count, started_at, updated_at)
     SELECT encode(sha256(convert_to('refresh-family:' || family_id::text, 'UTF8')), 'hex'), 1, $3, $3 FROM usable
     ON CONFLICT (key) DO UPDATE SET
       count = CASE WHEN a.started_at <= $3::timestamptz - interval '1 minute' THEN 1 ELSE a.count + 1 END,
       started_at = CASE WHEN a.started_at <= $3::timestamptz - interval '1 minute' THEN $3 ELSE a.started_at END,
       updated_at = $3
     RETURNING count, started_at`,
    [ref.jti, ref.userId, now],
  );
  if (!row || row.count <= s.refreshPerMinute) return 0;
  return Math.max(1, Math.ceil((row.started_at.getTime() + 60_000 - now.getTime()) / 1000));
}

/** Drops state nobody needs any more (for flushexpiredtokens): idle records and forgotten addresses. */
export async function flushThrottle(db: Database, now: Date, s: ThrottleSettings): Promise<number> {
  // Idle for longer than any window a record can matter in: a quiet period, an account window, a minute.
  const idle = new Date(now.getTime() - Math.max(s.loginQuietSeconds, s.loginAccountWindowSeconds, 60) * 1000);
  const records = await db.models.Throttle.destroy({
    where: { updatedAt: { [Op.lte]: idle }, [Op.or]: [{ blockedUntil: null }, { blockedUntil: { [Op.lte]: now } }] },
  });
  const forgotten = new Date(now.getTime() - s.loginKnownAddressSeconds * 1000);
  return records + (await db.models.KnownAddress.destroy({ where: { seenAt: { [Op.lte]: forgotten } } }));
}
