// Sessions per device: a family (one login) is a session. Its owner lists the live ones and ends any of
// them; an ended session's access tokens stop at once (revoking the family notifies every worker).
import { Op, literal } from 'sequelize';
import type { Database } from '../db/database';
import type { Session } from './schemas';

// Live: not revoked, not past the session's end, and holding a refresh token that can still be used.
const hasUsableToken = (db: Database, now: Date) =>
  literal(
    `EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = "TokenFamily".id
       AND t.rotated_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > ${db.sequelize.escape(now.toISOString())})`,
  );

/** The user's live sessions, most recently used first; `current` marks the one with id `currentId`. */
export async function listSessions(db: Database, userId: number, currentId: string | undefined, now: Date): Promise<Session[]> {
  const rows = await db.models.TokenFamily.findAll({
    where: { userId, revokedAt: null, expiresAt: { [Op.gt]: now }, [Op.and]: [hasUsableToken(db, now)] },
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
export async function endSession(db: Database, userId: number, sessionId: string, now: Date): Promise<boolean> {
  const [count] = await db.models.TokenFamily.update(
    { revokedAt: now, revokeReason: 'session_ended' },
    { where: { id: sessionId, userId, revokedAt: null } },
  );
  return count > 0;
}
