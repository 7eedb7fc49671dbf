// Ending or listing sessions needs a recent login, not just a valid access token: a stolen access
// token (or one refreshed from a stolen refresh token) must not be able to end its owner's other
// sessions, the owner's included. The access token's auth_time is its session's login, kept across
// refreshes; a token without one (issued by an earlier release) counts as an old login.
import { reauthenticationRequired } from '../http/errors';
import type { Claims } from './tokens';


/** Whether the token's login (auth_time) is at most `maxAgeSeconds` old at `nowMs`. */
export function isRecentLogin(claims: Claims, nowMs: number, maxAgeSeconds: number): boolean {
  const loginAt = claims.auth_time;
  return typeof loginAt === 'number' && Math.floor(nowMs / 1000) - loginAt <= maxAgeSeconds;
}

/** Throws reauthentication_required unless the token's login is recent. */
export function requireRecentLogin(claims: Claims, nowMs: number, maxAgeSeconds: number): void {
  if (!isRecentLogin(claims, nowMs, maxAgeSeconds)) throw reauthenticationRequired(maxAgeSeconds);
}
