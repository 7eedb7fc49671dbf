// Sessions per device: a family (one login) is a session. Its owner lists the live ones and ends any of
// them; an ended session's access tokens stop at once (revoking the family notifies every worker).
// Every end is a `session.ended` event (app/events/), also the end a session simply reaches.
import { col, fn, literal, Op, type Transaction } from 'sequelize';
import type { Database } from '../db/database';
import { recordEvent } from '../events/outbox';
import type { Client } from './families';
import type { Session } from './schemas';

// Raw fragments here are whole subqueries with their own aliases, compared with a column Sequelize
// names itself (`id IN (…)`): none refers to the alias Sequelize gives the outer table.
const usable = (db: Database, alias: string, now: Date) =>
  `${alias}.rotated_at IS NULL AND ${alias}.revoked_at IS NULL AND ${alias}.expires_at > ${db.sequelize.escape(now.toISOString())}`;

// Live: not revoked, not past the session's end, and holding a refresh token that can still be used.
const hasUsableToken = (db: Database, now: Date) => ({ id: { [Op.in]: literal(`(SELECT t.family_id FROM refresh_tokens t WHERE ${usable(db, 't', now)})`) } });

/** The user's live sessions, most recently used first; `current` marks the one with id `currentId`. */
export async function listSessions(db: Database, userId: number, currentId: string | undefined, now: Date): Promise<Session[]> {
  const rows = await db.models.TokenFamily.findAll({
    where: { userId, revokedAt: null, expiresAt: { [Op.gt]: now }, ...hasUsableToken(db, now) },
    order: [['lastUsedAt', 'DESC'], ['id', 'ASC']],
  });
  return rows.map((f) => ({
    id: f.id,
    created_at: f.createdAt.toISOString(),
    last_used_at: f.lastUsedAt.toISOString(),
    user_agent: f.lastUserAgent,
    ip: f.lastIp,
    current: f.id === currentId,
  }));
}

/** Ends one session of the user; false when the user has no such session (or it has already ended). */
export async function endSession(db: Database, userId: number, sessionId: string, now: Date, client?: Client): Promise<boolean> {
  return db.sequelize.transaction(async (transaction) => {
    const [count] = await db.models.TokenFamily.update(
      { revokedAt: now, revokeReason: 'session_ended' },
      { where: { id: sessionId, userId, revokedAt: null }, transaction },
    );
    if (count === 0) return false;
    await recordEvent(db, transaction, { type: 'session.ended', at: now, user: { id: userId }, sessionId, origin: client, details: { reason: 'deleted' } });
    return true;
  });
}

// Ended at `now` without being revoked: past the session's absolute end (SESSION_MAX_LIFETIME), or
// holding no refresh token that can still be used (the last one expired unused). The candidates come
// by index: families past their end (migration 0007's partial index of unannounced live families),
// and families of chains whose newest token expired (refresh_tokens_expires_at_idx, `since` to `now`).
// `since` bounds the second: tokens that expired before it were looked at by an earlier sweep.
const reachedItsEnd = (db: Database, now: Date, since: Date | undefined) => {
  const at = db.sequelize.escape(now.toISOString());
  const after = since ? `AND t.expires_at > ${db.sequelize.escape(since.toISOString())}` : '';
  const lastExpired = literal(`(SELECT t.family_id FROM refresh_tokens t
    WHERE t.rotated_at IS NULL AND t.revoked_at IS NULL AND t.expires_at <= ${at} ${after}
      AND NOT EXISTS (SELECT 1 FROM refresh_tokens u WHERE u.family_id = t.family_id AND ${usable(db, 'u', now)}))`);
  return { [Op.or]: [{ expiresAt: { [Op.lte]: now } }, { id: { [Op.in]: lastExpired } }] };
};

/** When each family ended: its absolute end, or when its last unrotated refresh token expired, whichever came first. */
async function endTimes(db: Database, families: { id: string; expiresAt: Date }[], transaction: Transaction): Promise<Map<string, Date>> {
  const last = (await db.models.RefreshToken.findAll({
    attributes: ['familyId', [fn('max', col('expires_at')), 'lastExpiry']],
    where: { familyId: families.map((f) => f.id), rotatedAt: null, revokedAt: null },
    group: ['familyId'],
    raw: true,
    transaction,
  })) as unknown as { familyId: string; lastExpiry: Date | string }[];
  const lastOf = new Map(last.map((r) => [r.familyId, new Date(r.lastExpiry)]));
  return new Map(families.map((f) => [f.id, new Date(Math.min(f.expiresAt.getTime(), (lastOf.get(f.id) ?? f.expiresAt).getTime()))]));
}

/**
 * Announces, once each, the sessions that reached their end without being revoked (a revoked one was
 * announced by what revoked it): marks them and records their `session.ended` events (reason
 * "expired", with the address and user agent of their last use) in one transaction, `limit` at a time.
 * Run by the delivery process every minute and by flushexpiredtokens before it deletes anything; the
 * row locks (skipped when taken) keep several of them from announcing one session twice. With
 * `since` (the delivery process's previous sweep, less a margin), only refresh tokens that expired
 * after it are looked at; flushexpiredtokens looks at all. Returns the number announced.
 */
export async function announceEndedSessions(db: Database, now: Date, options: { since?: Date; limit?: number } = {}): Promise<number> {
  const limit = options.limit ?? 500;
  const { TokenFamily, User } = db.models;
  let total = 0;
  for (let found = limit; found === limit; total += found) {
    found = await db.sequelize.transaction(async (transaction) => {
      const ended = await TokenFamily.findAll({
        where: { revokedAt: null, endAnnouncedAt: null, ...reachedItsEnd(db, now, options.since) },
        attributes: ['id', 'userId', 'lastIp', 'lastUserAgent', 'expiresAt'],
        include: [{ model: User, as: 'user', attributes: ['username'] }],
        order: [['id', 'ASC']],
        limit,
        lock: { level: transaction.LOCK.UPDATE, of: TokenFamily },
        skipLocked: true,
        transaction,
      });
      if (ended.length === 0) return 0;
      await TokenFamily.update({ endAnnouncedAt: now }, { where: { id: ended.map((f) => f.id) }, transaction });
      const endedAt = await endTimes(db, ended, transaction);
      for (const f of ended) {
        await recordEvent(db, transaction, {
          type: 'session.ended',
          at: endedAt.get(f.id)!,
          recordedAt: now,
          user: { id: f.userId, ...(f.user ? { username: f.user.username } : {}) },
          sessionId: f.id,
          origin: { ip: f.lastIp, userAgent: f.lastUserAgent },
          details: { reason: 'expired' },
        });
      }
      return ended.length;
    });
  }
  return total;
}
