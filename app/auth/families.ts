// Refresh-token families: one per login. Every refresh token belongs to a family; rotation replaces a
// token with its child in one atomic statement; presenting a token that was already rotated means it
// was stolen or replayed, and revokes the whole family. Only jtis are stored, never tokens.
//
// Everything goes through the models (app/db/models.ts) except the two statements of the refresh
// endpoint, rotate and use: written by hand because a measurement says so (see USABLE below). A
// family is started by a login (logins.ts).
import { literal, Op, type Transaction } from 'sequelize';
import type { Database } from '../db/database';
import { recordEvent } from '../events/outbox';
import type { RevokeReason } from './outcomes';
import { findUserById } from './users';

/** Why a refresh token cannot be used. */
export type Refusal =
  | 'inactive' // the user is gone or inactive
  | 'reused' // the token was rotated already: its family is now revoked
  | 'revoked' // the token or its family was revoked
  | 'unknown'; // no such token (or it names another user, or has expired)

export type Outcome = { ok: true; familyId: string } | { ok: false; refusal: Refusal };
/** A refresh that succeeded: the session, its login, and when it ends (SESSION_MAX_LIFETIME after its login). */
export type Renewal = { ok: true; familyId: string; username: string; loginAt: Date; sessionEnds: Date } | { ok: false; refusal: Refusal };
/**
 * A rotation that succeeded: the refresh token to answer with, its jti, when it was issued and when it
 * expires (never after the session ends). `reissued`: it is the child an earlier rotation of the same
 * parent made, presented again within REFRESH_REUSE_INTERVAL; the caller signs it again with these
 * claims, so it is the same token (byte for byte with HS* and RS*).
 */
export type Rotation =
  | (Renewal & { ok: true; jti: string; issuedAt: Date; expiresAt: Date; reissued: boolean })
  | { ok: false; refusal: Refusal };

/** Who is calling: the User-Agent and the client address (the trusted proxy's), for the session list. */
export interface Client {
  userAgent: string;
  ip: string;
  /** The request's id, for the security events it causes (app/events/). */
  requestId?: string | undefined;
}

export interface RefreshTokenRef {
  jti: string;
  userId: number;
}

export interface NewToken {
  jti: string;
  expiresAt: Date;
}

// Hand-written, measured: the refresh endpoint's statements. `npm run bench:orm` (scripts/bench/orm.ts;
// the figures are in docs/PERFORMANCE.md, "Sequelize and hand-written SQL") puts the models' forms of
// rotate and use at a fraction of these prepared statements' rate on one pool at concurrency 16: the
// ORM's rotation needs a transaction of five statements (lock the usable token, mark it rotated,
// create its child) where this is one, and its usability check (the "usable" scope) spends
// milliseconds of worker CPU building the joined query. The predicate is the RefreshToken "usable"
// scope's, in SQL; test/integration/models.test.ts holds the two together.
// $1 jti, $2 user id, $3 now: the token is current, unexpired, in a live family (not revoked, not
// past its session's end) of an active user.
export const USABLE = `
  t.jti = $1 AND t.rotated_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > $3
  AND f.id = t.family_id AND f.revoked_at IS NULL AND f.user_id = $2 AND f.expires_at > $3
  AND u.id = f.user_id AND u.is_active`;

// Records the refresh on its family: $3 now, then the user agent and address at `$ua`, `$ip`.
const touch = (from: string, ua: string, ip: string) =>
  `UPDATE token_families SET last_used_at = $3, last_user_agent = ${ua}, last_ip = ${ip} FROM ${from} WHERE id = ${from}.family_id`;

/**
 * Replaces a refresh token with a child (`next.jti`), expiring at `next.expiresAt` or at the session's
 * end, whichever comes first: the answer says when, and the caller signs the token to match. With
 * `blacklistOld` (BLACKLIST_AFTER_ROTATION) the old token is marked rotated by a conditional UPDATE: of
 * any number of concurrent calls with one token exactly one matches the row (the others wait on its
 * lock, then see it rotated), so exactly one succeeds. The family records the refresh.
 */
export async function rotate(
  db: Database,
  ref: RefreshTokenRef,
  next: NewToken,
  options: { blacklistOld: boolean; now: Date; client: Client; reuseIntervalSeconds?: number },
): Promise<Rotation> {
  const claim = options.blacklistOld
    ? `UPDATE refresh_tokens t SET rotated_at = $3 FROM token_families f, users u WHERE ${USABLE}
       RETURNING t.family_id, u.username, f.created_at AS login_at, f.expires_at AS session_ends`
    : `SELECT t.family_id, u.username, f.created_at AS login_at, f.expires_at AS session_ends FROM refresh_tokens t, token_families f, users u WHERE ${USABLE}`;
  const [row] = await db.rows<{ family_id: string; username: string; login_at: Date; session_ends: Date; expires_at: Date }>(
    `WITH claimed AS (${claim}),
     inserted AS (
       INSERT INTO refresh_tokens (jti, family_id, parent_jti, created_at, expires_at)
       SELECT $4, family_id, $1, $3, LEAST($5, session_ends) FROM claimed RETURNING family_id, expires_at
     ),
     touched AS (${touch('inserted', '$6', '$7')})
     SELECT inserted.family_id, inserted.expires_at, claimed.username, claimed.login_at, claimed.session_ends FROM inserted, claimed`,
    [ref.jti, ref.userId, options.now, next.jti, next.expiresAt, options.client.userAgent, options.client.ip],
  );
  if (row) {
    return {
      ok: true,
      familyId: row.family_id,
      username: row.username,
      loginAt: row.login_at,
      sessionEnds: row.session_ends,
      jti: next.jti,
      issuedAt: options.now,
      expiresAt: row.expires_at,
      reissued: false,
    };
  }
  // Not usable: rotated already? Within the interval, the same child again; else refuse (and a
  // replay revokes the family). Its own statement, after the rotation's: a refresh that waited on the
  // parent's row for a concurrent rotation sees that rotation's child here.
  if (options.blacklistOld && (options.reuseIntervalSeconds ?? 0) > 0) {
    const again = await reissue(db, ref, options.now, options.reuseIntervalSeconds!, options.client);
    if (again) return again;
  }
  return refuse(db, ref, options.now, { checkUser: true, client: options.client });
}

// The child of a parent rotated within the interval ($4 seconds before $3, now), if the child is
// unused (not rotated, not revoked, unexpired) and its family live and the user active: only the
// immediate parent qualifies, since a grandparent's child is rotated. The child's row is share-locked,
// so a rotation of the child in flight is waited for and then seen (the child is no longer unused:
// the replay is refused and revokes the family), never answered as if it had not happened. The family
// records the refresh. Through the family's index (refresh_tokens_family_id_idx), no index of its own.
export const REISSUE = `
  WITH child AS (
    SELECT c.jti, c.created_at, c.expires_at, c.family_id, u.username, f.created_at AS login_at, f.expires_at AS session_ends
      FROM refresh_tokens p, refresh_tokens c, token_families f, users u
     WHERE p.jti = $1 AND p.revoked_at IS NULL AND p.rotated_at > $3::timestamptz - make_interval(secs => $4)
       AND c.family_id = p.family_id AND c.parent_jti = p.jti
       AND c.rotated_at IS NULL AND c.revoked_at IS NULL AND c.expires_at > $3
       AND f.id = p.family_id AND f.revoked_at IS NULL AND f.user_id = $2 AND f.expires_at > $3
       AND u.id = f.user_id AND u.is_active
       FOR SHARE OF c
  ),
  touched AS (${touch('child', '$5', '$6')})
  SELECT jti, created_at, expires_at, family_id, username, login_at, session_ends FROM child`;

async function reissue(db: Database, ref: RefreshTokenRef, now: Date, intervalSeconds: number, client: Client): Promise<Rotation | null> {
  const [row] = await db.rows<{ jti: string; created_at: Date; expires_at: Date; family_id: string; username: string; login_at: Date; session_ends: Date }>(REISSUE, [
    ref.jti,
    ref.userId,
    now,
    intervalSeconds,
    client.userAgent,
    client.ip,
  ]);
  if (!row) return null;
  return {
    ok: true,
    familyId: row.family_id,
    username: row.username,
    loginAt: row.login_at,
    sessionEnds: row.session_ends,
    jti: row.jti,
    issuedAt: row.created_at,
    expiresAt: row.expires_at,
    reissued: true,
  };
}

/** Checks a refresh token without rotating it (ROTATE_REFRESH_TOKENS off); the family records the refresh. */
export async function use(db: Database, ref: RefreshTokenRef, now: Date, client: Client): Promise<Renewal> {
  const [row] = await db.rows<{ family_id: string; username: string; login_at: Date; session_ends: Date }>(
    `WITH usable AS (
       SELECT t.family_id, u.username, f.created_at AS login_at, f.expires_at AS session_ends FROM refresh_tokens t, token_families f, users u WHERE ${USABLE}
     ),
     touched AS (${touch('usable', '$4', '$5')})
     SELECT family_id, username, login_at, session_ends FROM usable`,
    [ref.jti, ref.userId, now, client.userAgent, client.ip],
  );
  if (!row) return refuse(db, ref, now, { checkUser: true, client });
  return { ok: true, familyId: row.family_id, username: row.username, loginAt: row.login_at, sessionEnds: row.session_ends };
}

/** Logout of one session: revokes the token and its family (and so every token of it). */
export async function logout(db: Database, ref: RefreshTokenRef, now: Date, client?: Client): Promise<Outcome> {
  const { RefreshToken, TokenFamily } = db.models;
  const familyId = await db.sequelize.transaction(async (transaction) => {
    // The token's row stays locked to the end: a refresh of the same token racing this logout waits,
    // then finds it revoked; a logout that waited on a rotation finds the token rotated (a replay).
    const token = await RefreshToken.scope('current').findOne({
      where: { jti: ref.jti },
      include: [{ model: TokenFamily.scope('live'), as: 'family', required: true, where: { userId: ref.userId }, attributes: [] }],
      lock: { level: transaction.LOCK.UPDATE, of: RefreshToken },
      transaction,
    });
    if (!token) return null;
    await token.update({ revokedAt: now }, { transaction });
    await revokeFamily(db, token.familyId, 'logout', now, transaction);
    await recordEvent(db, transaction, {
      type: 'session.ended',
      at: now,
      user: { id: ref.userId },
      sessionId: token.familyId,
      origin: client,
      details: { reason: 'logout' },
    });
    return token.familyId;
  });
  return familyId ? { ok: true, familyId } : refuse(db, ref, now, { checkUser: false, client });
}

/** Whether a refresh token is still current (for the verify endpoint). */
export async function isCurrent(db: Database, jti: string): Promise<boolean> {
  const { RefreshToken, TokenFamily } = db.models;
  const found = await RefreshToken.scope('current').count({
    where: { jti },
    include: [{ model: TokenFamily.scope('live'), as: 'family', required: true, attributes: [] }],
  });
  return found > 0;
}

// Explains a refusal; a replay of a rotated token revokes its family here, in its own transaction
// (with its token.reuse_detected event), so the revocation stands whatever happens to the request
// that found it.
async function refuse(
  db: Database,
  ref: RefreshTokenRef,
  now: Date,
  options: { checkUser: boolean; client?: Client | undefined },
): Promise<{ ok: false; refusal: Refusal }> {
  const { RefreshToken, TokenFamily, User } = db.models;
  const token = await RefreshToken.findByPk(ref.jti, {
    include: [
      {
        model: TokenFamily,
        as: 'family',
        attributes: ['id', 'userId', 'revokedAt', 'expiresAt'],
        include: [{ model: User, as: 'user', attributes: ['id', 'username', 'isActive'] }],
      },
    ],
  });
  // A token of another user names that user's family, not the claimed user's: ask for the claimed one.
  const family = token?.family?.userId === ref.userId ? token.family : undefined;
  if (options.checkUser) {
    const active = family ? family.user?.isActive : (await findUserById(db, ref.userId))?.isActive;
    if (active !== true) return { ok: false, refusal: 'inactive' };
  }
  if (!token || !family) return { ok: false, refusal: 'unknown' };
  if (token.rotatedAt) {
    await db.sequelize.transaction(async (transaction) => {
      // Announced by whichever replay revoked the family: once.
      if (!(await revokeFamily(db, family.id, 'reuse', now, transaction))) return;
      await recordEvent(db, transaction, {
        type: 'token.reuse_detected',
        at: now,
        user: { id: family.userId, ...(family.user ? { username: family.user.username } : {}) },
        sessionId: family.id,
        origin: options.client,
      });
    });
    return { ok: false, refusal: 'reused' };
  }
  if (token.revokedAt || family.revokedAt) return { ok: false, refusal: 'revoked' };
  if (token.expiresAt <= now || family.expiresAt <= now) return { ok: false, refusal: 'unknown' };
  // The token was usable a moment ago but the state moved under us (say, the user was reactivated):
  // refuse this once rather than guess.
  return { ok: false, refusal: 'revoked' };
}

/** Revokes a live family (the trigger tells every worker); false when it was not live. */
export async function revokeFamily(
  db: Database,
  familyId: string,
  reason: RevokeReason,
  now: Date,
  transaction?: Transaction,
): Promise<boolean> {
  const [revoked] = await db.models.TokenFamily.scope('live').update(
    { revokedAt: now, revokeReason: reason },
    { where: { id: familyId }, transaction },
  );
  return revoked > 0;
}

/**
 * Ends sessions of the user in one transaction: every live family (`keep` aside) is revoked, and the
 * user's generation moves, so a login in flight, which read the user before, records no session after
 * (logins.ts). Without `keep` (logout everywhere) it also records "access tokens issued before now
 * are void". Returns the number of sessions ended. Its `sessions.revoked` event names `session` (the
 * caller's) and the request (`client`).
 */
export async function revokeAllForUser(
  db: Database,
  userId: number,
  reason: RevokeReason,
  now: Date,
  options: { keep?: string | undefined; client?: Client | undefined; session?: string | undefined } = {},
): Promise<number> {
  const { TokenFamily, User, UserRevocation } = db.models;
  return db.sequelize.transaction(async (transaction) => {
    await User.increment('tokenGeneration', { where: { id: userId }, transaction });
    const others = options.keep !== undefined ? { id: { [Op.ne]: options.keep } } : {};
    const [sessions] = await TokenFamily.scope('live').update(
      { revokedAt: now, revokeReason: reason },
      { where: { userId, ...others }, transaction },
    );
    if (options.keep === undefined) await UserRevocation.create({ userId, notBefore: now, reason }, { transaction });
    await recordEvent(db, transaction, {
      type: 'sessions.revoked',
      at: now,
      user: { id: userId },
      sessionId: options.session ?? options.keep ?? null,
      origin: options.client,
      details: { scope: options.keep === undefined ? 'all' : 'others', sessions },
    });
    return sessions;
  });
}

export interface FlushResult {
  tokens: number;
  families: number;
  cutoffs: number;
}

/**
 * Deletes what can no longer void or refuse anything, in batches so a large backlog never holds long
 * locks: refresh tokens past their expiry, then families left with no tokens that were never revoked;
 * revoked families (with their tokens) and per-user cutoffs older than `revocationWindowMs`, the
 * longest any access token they could stop stays valid. Until then a revoked family's row is what
 * refuses its tokens and what a worker reloads on start, even once it has no refresh token left (with
 * ROTATE_REFRESH_TOKENS off an access token outlives the refresh token it came from); after, its
 * refresh tokens are refused as unknown. A daily job, so the
 * models' forms: each batch is one DELETE … WHERE key IN (SELECT … LIMIT n) either way.
 */
export async function flushExpired(db: Database, now: Date, revocationWindowMs: number, batchSize = 5000): Promise<FlushResult> {
  const { RefreshToken, TokenFamily, UserRevocation } = db.models;
  const result: FlushResult = { tokens: 0, families: 0, cutoffs: 0 };
  const drain = async (destroy: () => Promise<number>) => {
    let total = 0;
    for (let deleted = batchSize; deleted === batchSize; total += deleted) deleted = await destroy();
    return total;
  };
  const horizon = new Date(now.getTime() - revocationWindowMs);
  result.tokens = await drain(() => RefreshToken.scope({ method: ['expired', now] }).destroy({ limit: batchSize }));
  // Sequelize has no operator for NOT EXISTS: a whole subquery with its own aliases, matched on a
  // column Sequelize names. A family found empty stays empty: tokens are only added to a family by
  // rotating one of its own.
  const empty = { id: { [Op.in]: literal('(SELECT f.id FROM token_families f WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = f.id))') } };
  result.families = await drain(() =>
    TokenFamily.destroy({
      where: { [Op.or]: [{ ...empty, revokedAt: null }, { revokedAt: { [Op.lte]: horizon } }] },
      limit: batchSize,
    }),
  );
  result.cutoffs = await drain(() => UserRevocation.destroy({ where: { notBefore: { [Op.lte]: horizon } }, limit: batchSize }));
  return result;
}
