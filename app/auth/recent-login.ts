// Ending or listing sessions needs a recent login, not just a valid access token: a stolen access
// token (or one refreshed from a stolen refresh token) must not be able to end its owner's other
// sessions, the owner's included. The access token's auth_time is its session's login, kept across
// refreshes; a token without one (issued by an earlier release) counts as an old login.
import { ApiError } from '../http/errors';
import type { Claims } from './tokens';

/** 403: log in again (with the password) and retry with the new access token. */
export const reauthenticationRequired = (maxAgeSeconds: number) =>
  new ApiError(403, {
    detail: `This needs a login from the last ${describe(maxAgeSeconds)}: log in again and retry with the new access token.`,
    code: 'reauthentication_required',
  });

function describe(seconds: number): string {
  if (seconds % 3600 === 0) return plural(seconds / 3600, 'hour');
  if (seconds % 60 === 0) return plural(seconds / 60, 'minute');
  return plural(seconds, 'second');
}
const plural = (n: number, unit: string) => (n === 1 ? unit : `${n} ${unit}s`);

/** Whether the token's login (auth_time) is at most `maxAgeSeconds` old at `nowMs`. */
export function isRecentLogin(claims: Claims, nowMs: number, maxAgeSeconds: number): boolean {
  const loginAt = claims.auth_time;
  return typeof loginAt === 'number' && Math.floor(nowMs / 1000) - loginAt <= maxAgeSeconds;
}

/** Throws reauthentication_required unless the token's login is recent. */
export function requireRecentLogin(claims: Claims, nowMs: number, maxAgeSeconds: number): void {
  if (!isRecentLogin(claims, nowMs, maxAgeSeconds)) throw reauthenticationRequired(maxAgeSeconds);
}
