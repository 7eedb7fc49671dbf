// A password login's two hand-written statements, one on each side of its hash. Before the hash,
// beginLogin: the throttle's reservation and the account's lookup, in one statement where they were
// two, the lookup through the models (docs/PERFORMANCE.md, "A login's first statement": a third of
// the CPU, and a round trip fewer). After it, a successful login recorded: the
// session (a token family) with its first refresh token, the user's last_login (UPDATE_LAST_LOGIN),
// and the throttle's success (the address's count cleared, the address known to the account from now
// on). All of it in one statement, because a measurement says so: through the models it took eight
// statements and four commits after the hash (the last login's UPDATE, a transaction of five, a
// DELETE, an upsert), 3.2 ms of worker CPU where this takes 0.2 (`npm run bench:orm -- --only
// recordLogin`), the largest cost of a login besides its hash. The throttle's part is
// throttle.successCtes, which a machine client's login (no session) writes on its own.
import { randomUUID } from 'node:crypto';
import type { Database } from '../db/database';
import { statement } from '../db/statement';
import { recordEvent, wantsEvent } from '../events/outbox';
import type { Client, NewToken } from './families';
import {
  readReservation,
  reservationColumns,
  reservationCtes,
  reservationValues,
  successCtes,
  type LoginKeys,
  type Reservation,
  type ReservationRow,
  type ReserveParams,
  type SuccessParams,
  type ThrottleSettings,
} from './throttle';
import type { LoginAccount } from './users';

interface BeginParams extends ReserveParams {
  username: string;
}

// The attempt is counted (throttle.ts), and the account read, in one statement. The account is read
// whatever the reservation answers; a refused attempt leaves it unused.
const BEGIN = statement<BeginParams>(
  (p) => `
  WITH ${reservationCtes(p)}
  SELECT ${reservationColumns(p)},
         u.id, u.username, u.password_hash, u.is_active, u.token_generation
  FROM (SELECT 1) AS attempt LEFT JOIN users u ON u.username = ${p.username}::varchar`,
);

export interface LoginStart {
  reservation: Reservation;
  /** The account the username names, or null when there is none. */
  account: LoginAccount | null;
}

/**
 * A password login's first statement: its attempt counted before the password is hashed (refused
 * while its address waits or the account's shared budget is spent), and the account `username`
 * (normalised) names.
 */
export async function beginLogin(db: Database, keys: LoginKeys, username: string, now: Date, s: ThrottleSettings): Promise<LoginStart> {
  type Row = ReservationRow & { id: number | null; username: string; password_hash: string; is_active: boolean; token_generation: number };
  const [row] = await db.rows<Row>(BEGIN.text, BEGIN.values({ ...reservationValues(keys, now, s), username }));
  const account =
    row!.id === null
      ? null
      : { id: row!.id, username: row!.username, passwordHash: row!.password_hash, isActive: row!.is_active, tokenGeneration: row!.token_generation };
  return { reservation: readReservation(row!, now, s), account };
}

interface RecordParams extends SuccessParams {
  userId: number;
  generation: number;
  familyId: string;
  sessionEnds: Date;
  userAgent: string;
  ip: string;
  jti: string;
  tokenExpiresAt: Date;
}

// The user row is the gate. A password change, deactivation or logout-all since the login read the
// user moved its generation or its state, and the session must not outlive it: the row lock (the
// UPDATE's, or FOR SHARE when last_login is not kept) holds such a change back until this session is
// recorded (so the change revokes it), or, if the change came first, the re-checked WHERE finds no
// row and nothing below is written. Every other part reads `u` (or what read it), so all or nothing.
const recordLogin = (lastLogin: boolean) =>
  statement<RecordParams>((p) => {
    const user = `id = ${p.userId} AND token_generation = ${p.generation} AND is_active`;
    return `
  WITH u AS (
    ${lastLogin ? `UPDATE users SET last_login = ${p.now}::timestamptz WHERE ${user} RETURNING id, username` : `SELECT id, username FROM users WHERE ${user} FOR SHARE`}
  ),
  family AS (
    INSERT INTO token_families (id, user_id, created_at, expires_at, last_used_at, login_user_agent, login_ip, last_user_agent, last_ip)
    SELECT ${p.familyId}::uuid, u.id, ${p.now}::timestamptz, ${p.sessionEnds}::timestamptz, ${p.now}::timestamptz,
           ${p.userAgent}::varchar, ${p.ip}::varchar, ${p.userAgent}::varchar, ${p.ip}::varchar FROM u
    RETURNING id
  ),
  token AS (
    INSERT INTO refresh_tokens (jti, family_id, created_at, expires_at)
    SELECT ${p.jti}::varchar, family.id, ${p.now}::timestamptz, ${p.tokenExpiresAt}::timestamptz FROM family
    RETURNING jti
  ),${successCtes(p, 'token')}
  SELECT u.id, u.username FROM u, token`;
  });
const WITH_LAST_LOGIN = recordLogin(true);
const WITHOUT_LAST_LOGIN = recordLogin(false);

export interface LoginRecord {
  userId: number;
  /** The user's token generation when the login read it. */
  generation: number;
  /** The first refresh token's jti and expiry. */
  token: NewToken;
  now: Date;
  sessionEnds: Date;
  client: Client;
  /** UPDATE_LAST_LOGIN. */
  lastLogin: boolean;
  throttle: Pick<LoginKeys, 'address' | 'known'>;
}

/**
 * Records a login whose password was right: its new session's id, or null, recording nothing, when
 * the user is inactive or gone, or its generation is no longer `generation`. With a webhook receiver
 * for login.succeeded, the statement and the event share one transaction (the outbox's rule).
 */
export async function recordSuccessfulLogin(db: Database, login: LoginRecord): Promise<string | null> {
  const familyId = randomUUID();
  const s = login.lastLogin ? WITH_LAST_LOGIN : WITHOUT_LAST_LOGIN;
  const values = s.values({
    userId: login.userId,
    generation: login.generation,
    familyId,
    now: login.now,
    sessionEnds: login.sessionEnds,
    userAgent: login.client.userAgent,
    ip: login.client.ip,
    jti: login.token.jti,
    tokenExpiresAt: login.token.expiresAt,
    addressKey: login.throttle.address,
    knownKey: login.throttle.known,
  });
  type Row = { id: number; username: string };
  if (!wantsEvent(db, 'login.succeeded')) return (await db.rows<Row>(s.text, values)).length ? familyId : null;
  return db.sequelize.transaction(async (transaction) => {
    const [user] = await db.rows<Row>(s.text, values, transaction);
    if (!user) return null;
    await recordEvent(db, transaction, { type: 'login.succeeded', at: login.now, user, sessionId: familyId, origin: login.client });
    return familyId;
  });
}
