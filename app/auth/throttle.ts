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
import type { Database } from '../db/database';

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
  const [row] = await db.rows<{ blocked_until: Date | null }>('SELECT blocked_until FROM auth_throttle WHERE key = $1', [key]);
  const wait = row?.blocked_until ? Math.ceil((row.blocked_until.getTime() - now.getTime()) / 1000) : 0;
  return { waitSeconds: Math.max(0, wait), recorded: row !== undefined };
}

export async function recordLoginFailure(db: Database, key: string, now: Date, s: ThrottleSettings): Promise<void> {
  const [row] = await db.rows<{ count: number }>(
    `INSERT INTO auth_throttle (key, count, started_at, updated_at) VALUES ($1, 1, $2, $2)
     ON CONFLICT (key) DO UPDATE SET
       count = CASE WHEN auth_throttle.updated_at <= $2 - make_interval(secs => $3) THEN 1 ELSE auth_throttle.count + 1 END,
       updated_at = $2
     RETURNING count`,
    [key, now, s.loginQuietSeconds],
  );
  const delay = loginDelaySeconds(row!.count, s);
  await db.rows('UPDATE auth_throttle SET blocked_until = $2 WHERE key = $1 RETURNING 1', [
    key,
    delay > 0 ? new Date(now.getTime() + delay * 1000) : null,
  ]);
}

export async function clearLoginFailures(db: Database, key: string): Promise<void> {
  await db.rows('DELETE FROM auth_throttle WHERE key = $1 RETURNING 1', [key]);
}

/** Counts a refresh for the account; the seconds to wait when over the limit, else 0. */
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
  const rows = await db.rows(
    `DELETE FROM auth_throttle
     WHERE updated_at <= $1::timestamptz - make_interval(secs => greatest($2::float8, 60))
       AND (blocked_until IS NULL OR blocked_until <= $1::timestamptz)
     RETURNING 1`,
    [now, s.loginQuietSeconds],
  );
  return rows.length;
}
