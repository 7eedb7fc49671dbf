// Refresh-token families: one per login. Every refresh token belongs to a family; rotation replaces a
// token with its child in one atomic statement; presenting a token that was already rotated means it
// was stolen or replayed, and revokes the whole family. Only jtis are stored, never tokens.
import type { Database } from '../db/database';

export type RevokeReason = 'logout' | 'reuse' | 'logout_all' | 'logout_others' | 'session_ended' | 'password_change' | 'deactivated';

/** Why a refresh token cannot be used. */
export type Refusal =
  | 'inactive' // the user is gone or inactive
  | 'reused' // the token was rotated already: its family is now revoked
  | 'revoked' // the token or its family was revoked
  | 'unknown'; // no such token (or it names another user, or has expired)

export type Outcome = { ok: true; familyId: string } | { ok: false; refusal: Refusal };
/** A refresh that succeeded: the session, and when it ends (SESSION_MAX_LIFETIME after its login). */
export type Renewal = { ok: true; familyId: string; username: string; sessionEnds: Date } | { ok: false; refusal: Refusal };
/** A rotation that succeeded: also when the new refresh token expires (never after the session ends). */
export type Rotation = (Renewal & { ok: true; expiresAt: Date }) | { ok: false; refusal: Refusal };

/** Who is calling: the User-Agent and the client address (the trusted proxy's), for the session list. */
export interface Client {
  userAgent: string;
  ip: string;
}

export interface RefreshTokenRef {
  jti: string;
  userId: number;
}

export interface NewToken {
  jti: string;
  expiresAt: Date;
}

/** Starts a family (a session, ending at `sessionEnds`) with its first refresh token, in one statement. */
export async function startFamily(
  db: Database,
  input: { familyId: string; userId: number; token: NewToken; now: Date; sessionEnds: Date; client: Client },
): Promise<void> {
  await db.rows(
    `WITH family AS (
       INSERT INTO token_families (id, user_id, created_at, expires_at, last_used_at, login_user_agent, login_ip, last_user_agent, last_ip)
       VALUES ($1, $2, $3, $6, $3, $7, $8, $7, $8) RETURNING id
     )
     INSERT INTO refresh_tokens (jti, family_id, created_at, expires_at)
     SELECT $4, id, $3, $5 FROM family RETURNING jti`,
    [input.familyId, input.userId, input.now, input.token.jti, input.token.expiresAt, input.sessionEnds, input.client.userAgent, input.client.ip],
  );
}

// $1 jti, $2 user id, $3 now: the token is current, unexpired, in a live family (not revoked, not
// past its session's end) of an active user.
const USABLE = `
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
  options: { blacklistOld: boolean; now: Date; client: Client },
): Promise<Rotation> {
  const claim = options.blacklistOld
    ? `UPDATE refresh_tokens t SET rotated_at = $3 FROM token_families f, users u WHERE ${USABLE}
       RETURNING t.family_id, u.username, f.expires_at AS session_ends`
    : `SELECT t.family_id, u.username, f.expires_at AS session_ends FROM refresh_tokens t, token_families f, users u WHERE ${USABLE}`;
  const [row] = await db.rows<{ family_id: string; username: string; session_ends: Date; expires_at: Date }>(
    `WITH claimed AS (${claim}),
     inserted AS (
       INSERT INTO refresh_tokens (jti, family_id, parent_jti, created_at, expires_at)
       SELECT $4, family_id, $1, $3, LEAST($5, session_ends) FROM claimed RETURNING family_id, expires_at
     ),
     touched AS (${touch('inserted', '$6', '$7')})
     SELECT inserted.family_id, inserted.expires_at, claimed.username, claimed.session_ends FROM inserted, claimed`,
    [ref.jti, ref.userId, options.now, next.jti, next.expiresAt, options.client.userAgent, options.client.ip],
  );
  if (!row) return refuse(db, ref, options.now, { checkUser: true });
  return { ok: true, familyId: row.family_id, username: row.username, sessionEnds: row.session_ends, expiresAt: row.expires_at };
}

/** Checks a refresh token without rotating it (ROTATE_REFRESH_TOKENS off); the family records the refresh. */
export async function use(db: Database, ref: RefreshTokenRef, now: Date, client: Client): Promise<Renewal> {
  const [row] = await db.rows<{ family_id: string; username: string; session_ends: Date }>(
    `WITH usable AS (
       SELECT t.family_id, u.username, f.expires_at AS session_ends FROM refresh_tokens t, token_families f, users u WHERE ${USABLE}
     ),
     touched AS (${touch('usable', '$4', '$5')})
     SELECT family_id, username, session_ends FROM usable`,
    [ref.jti, ref.userId, now, client.userAgent, client.ip],
  );
  if (!row) return refuse(db, ref, now, { checkUser: true });
  return { ok: true, familyId: row.family_id, username: row.username, sessionEnds: row.session_ends };
}

/** Logout of one session: revokes the token's family (and so every token of it). */
export async function logout(db: Database, ref: RefreshTokenRef, now: Date): Promise<Outcome> {
  const [row] = await db.rows<{ family_id: string | null }>(
    `WITH tok AS (
       UPDATE refresh_tokens t SET revoked_at = $3 FROM token_families f
       WHERE t.jti = $1 AND t.rotated_at IS NULL AND t.revoked_at IS NULL
         AND f.id = t.family_id AND f.user_id = $2 AND f.revoked_at IS NULL
       RETURNING t.family_id
     ), fam AS (
       UPDATE token_families f SET revoked_at = $3, revoke_reason = 'logout' FROM tok
       WHERE f.id = tok.family_id AND f.revoked_at IS NULL RETURNING f.id
     )
     SELECT (SELECT id FROM fam) AS family_id`,
    [ref.jti, ref.userId, now],
  );
  return row?.family_id ? { ok: true, familyId: row.family_id } : refuse(db, ref, now, { checkUser: false });
}

/** Whether a refresh token is still current (for the verify endpoint). */
export async function isCurrent(db: Database, jti: string): Promise<boolean> {
  const rows = await db.rows(
    `SELECT 1 FROM refresh_tokens t JOIN token_families f ON f.id = t.family_id
     WHERE t.jti = $1 AND t.rotated_at IS NULL AND t.revoked_at IS NULL AND f.revoked_at IS NULL`,
    [jti],
  );
  return rows.length > 0;
}

interface Diagnosis {
  user_active: boolean | null;
  family_id: string | null;
  user_id: number | null;
  rotated_at: Date | null;
  revoked_at: Date | null;
  family_revoked_at: Date | null;
  expires_at: Date | null;
  session_ends: Date | null;
}

// Explains a refusal; a replay of a rotated token revokes its family here, in its own statement, so
// the revocation stands whatever happens to the request that found it.
async function refuse(
  db: Database,
  ref: RefreshTokenRef,
  now: Date,
  options: { checkUser: boolean },
): Promise<{ ok: false; refusal: Refusal }> {
  const [d] = await db.rows<Diagnosis>(
    `SELECT (SELECT is_active FROM users WHERE id = $2) AS user_active,
            t.family_id, f.user_id, t.rotated_at, t.revoked_at, f.revoked_at AS family_revoked_at, t.expires_at,
            f.expires_at AS session_ends
     FROM (SELECT 1) AS one
     LEFT JOIN refresh_tokens t ON t.jti = $1
     LEFT JOIN token_families f ON f.id = t.family_id`,
    [ref.jti, ref.userId],
  );
  if (!d) return { ok: false, refusal: 'unknown' };
  if (options.checkUser && d.user_active !== true) return { ok: false, refusal: 'inactive' };
  if (!d.family_id || d.user_id !== ref.userId) return { ok: false, refusal: 'unknown' };
  if (d.rotated_at) {
    await revokeFamily(db, d.family_id, 'reuse', now);
    return { ok: false, refusal: 'reused' };
  }
  if (d.revoked_at || d.family_revoked_at) return { ok: false, refusal: 'revoked' };
  if ((d.expires_at && d.expires_at <= now) || (d.session_ends && d.session_ends <= now)) return { ok: false, refusal: 'unknown' };
  // The token was usable a moment ago but the state moved under us (say, the user was reactivated):
  // refuse this once rather than guess.
  return { ok: false, refusal: 'revoked' };
}

export async function revokeFamily(db: Database, familyId: string, reason: RevokeReason, now: Date): Promise<boolean> {
  const rows = await db.rows(
    `UPDATE token_families SET revoked_at = $2, revoke_reason = $3 WHERE id = $1 AND revoked_at IS NULL RETURNING id`,
    [familyId, now, reason],
  );
  return rows.length > 0;
}

/**
 * Logout everywhere, in one statement: revokes every live family of the user and records "access
 * tokens issued before now are void". Returns the number of sessions ended.
 */
export async function revokeAllForUser(db: Database, userId: number, reason: RevokeReason, now: Date): Promise<number> {
  const [row] = await db.rows<{ sessions: number }>(
    `WITH revoked AS (
       UPDATE token_families SET revoked_at = $2, revoke_reason = $3 WHERE user_id = $1 AND revoked_at IS NULL RETURNING id
     ), cut AS (
       INSERT INTO user_revocations (user_id, not_before, reason) VALUES ($1, $2, $3) RETURNING id
     )
     SELECT (SELECT count(*) FROM revoked)::int AS sessions, (SELECT count(*) FROM cut) AS cut`,
    [userId, now, reason],
  );
  return row!.sessions;
}

export interface FlushResult {
  tokens: number;
  families: number;
}

/**
 * Deletes refresh tokens past their expiry, then families left with no tokens, in batches so a large
 * backlog never holds long locks. Revoked families go once their last token has expired; until then
 * their rows are what keeps their tokens refused.
 */
export async function flushExpired(db: Database, now: Date, batchSize = 5000): Promise<FlushResult> {
  const result: FlushResult = { tokens: 0, families: 0 };
  for (;;) {
    const deleted = await db.rows(
      `DELETE FROM refresh_tokens WHERE jti IN (SELECT jti FROM refresh_tokens WHERE expires_at <= $1 LIMIT $2) RETURNING 1`,
      [now, batchSize],
    );
    result.tokens += deleted.length;
    if (deleted.length < batchSize) break;
  }
  for (;;) {
    const deleted = await db.rows(
      `DELETE FROM token_families WHERE id IN (
         SELECT f.id FROM token_families f
         WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = f.id) LIMIT $1)
       RETURNING 1`,
      [batchSize],
    );
    result.families += deleted.length;
    if (deleted.length < batchSize) break;
  }
  return result;
}
