// Per-account brute-force throttling in Postgres, shared by all workers and surviving restarts.
//
// Logins: failures are counted per (account, client address), as Auth0's brute-force protection does:
// after a few free attempts each further failure doubles a wait, up to a cap; a success clears it;
// a quiet period forgets it. An attacker's failures therefore slow the attacker's own address only,
// and never lock the real user out, for a while or forever. Addresses are nginx's view of the client
// (one trusted proxy hop); per-address request rates are nginx's job.
//
// Refreshes: a fixed one-minute window per account.
import { createHash } from 'node:crypto';
import { Op, UniqueConstraintError, literal } from 'sequelize';
import type { Database } from '../db/database';
import type { ThrottleRow } from '../db/models';

export interface ThrottleSettings {
  loginFreeAttempts: number;
  loginMaxDelaySeconds: number;
  /** Failures are forgotten after this long without one. */
  loginQuietSeconds: number;
  /** Refreshes per account per minute; 0 turns the limit off. */
  refreshPerMinute: number;
}

const hashKey = (...parts: string[]) => createHash('sha256').update(parts.join('\u0000')).digest('hex');

export const loginKey = (username: string, address: string) => hashKey('login', username, address);
const refreshKey = (userId: number) => hashKey('refresh', String(userId));

/** The wait a failure count earns: none for the free attempts, then 1 s, 2 s, 4 s … up to the cap. */
export function loginDelaySeconds(failures: number, s: ThrottleSettings): number {
  const over = failures - s.loginFreeAttempts;
  return over <= 0 ? 0 : Math.min(2 ** Math.min(over - 1, 30), s.loginMaxDelaySeconds);
}

export interface LoginState {
  /** Seconds to wait before the next attempt; 0 when one may be made now. */
  waitSeconds: number;
  /** Whether failures are on record (a success then clears them). */
  recorded: boolean;
}

export async function loginState(db: Database, key: string, now: Date): Promise<LoginState> {
  const row = await db.models.Throttle.findByPk(key, { attributes: ['blockedUntil'] });
  const wait = row?.blockedUntil ? Math.ceil((row.blockedUntil.getTime() - now.getTime()) / 1000) : 0;
  return { waitSeconds: Math.max(0, wait), recorded: row !== null };
}

/**
 * Counts one attempt against `key` and returns the record. The count is one UPDATE … SET count =
 * count + 1 … RETURNING: atomic, so of concurrent attempts each gets a count of its own. A record with
 * no attempt after `quietSince` (or none) restarts at this attempt; of concurrent restarts one wins and
 * the others count against it.
 */
async function countAttempt(db: Database, key: string, now: Date, quietSince: Date): Promise<ThrottleRow> {
  const { Throttle } = db.models;
  for (let tries = 0; tries < 5; tries++) {
    const [, [counted]] = await Throttle.update(
      { count: literal('"count" + 1'), updatedAt: now },
      { where: { key, updatedAt: { [Op.gt]: quietSince } }, returning: true },
    );
    if (counted) return counted;
    const fresh = { count: 1, startedAt: now, updatedAt: now, blockedUntil: null };
    const [, [restarted]] = await Throttle.update(fresh, { where: { key, updatedAt: { [Op.lte]: quietSince } }, returning: true });
    if (restarted) return restarted;
    try {
      return await Throttle.create({ key, ...fresh });
    } catch (err) {
      if (!(err instanceof UniqueConstraintError)) throw err; // another attempt created it: count again
    }
  }
  throw new Error(`throttle record ${key} keeps changing under us`);
}

export async function recordLoginFailure(db: Database, key: string, now: Date, s: ThrottleSettings): Promise<void> {
  const record = await countAttempt(db, key, now, new Date(now.getTime() - s.loginQuietSeconds * 1000));
  const delay = loginDelaySeconds(record.count, s);
  if (delay === 0 && record.blockedUntil === null) return;
  await db.models.Throttle.update(
    { blockedUntil: delay > 0 ? new Date(now.getTime() + delay * 1000) : null },
    { where: { key } },
  );
}

export async function clearLoginFailures(db: Database, key: string): Promise<void> {
  await db.models.Throttle.destroy({ where: { key } });
}

/**
 * Counts a refresh for the account; the seconds to wait when over the limit, else 0. A window of one
 * minute from its first refresh, counted in one statement written by hand: it runs on every refresh,
 * and `npm run bench:orm` ("refreshThrottle"; docs/PERFORMANCE.md, "Sequelize and hand-written SQL")
 * measured the models' form (countAttempt's UPDATE) at a fraction of this prepared statement's rate,
 * for several times its worker CPU.
 */
export async function refreshWaitSeconds(db: Database, userId: number, now: Date, s: ThrottleSettings): Promise<number> {
  if (s.refreshPerMinute === 0) return 0;
  const [row] = await db.rows<{ count: number; started_at: Date }>(
    `INSERT INTO auth_throttle (key, count, started_at, updated_at) VALUES ($1, 1, $2, $2)
     ON CONFLICT (key) DO UPDATE SET
       count = CASE WHEN auth_throttle.started_at <= $2 - interval '1 minute' THEN 1 ELSE auth_throttle.count + 1 END,
       started_at = CASE WHEN auth_throttle.started_at <= $2 - interval '1 minute' THEN $2 ELSE auth_throttle.started_at END,
       updated_at = $2
     RETURNING count, started_at`,
    [refreshKey(userId), now],
  );
  if (row!.count <= s.refreshPerMinute) return 0;
  return Math.max(1, Math.ceil((row!.started_at.getTime() + 60_000 - now.getTime()) / 1000));
}

/** Drops state nobody needs any more (for flushexpiredtokens). */
export async function flushThrottle(db: Database, now: Date, s: ThrottleSettings): Promise<number> {
  const quiet = new Date(now.getTime() - Math.max(s.loginQuietSeconds, 60) * 1000);
  return db.models.Throttle.destroy({
    where: { updatedAt: { [Op.lte]: quiet }, [Op.or]: [{ blockedUntil: null }, { blockedUntil: { [Op.lte]: now } }] },
  });
}
