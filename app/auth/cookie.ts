// The cookie transport for browsers, opted into per request with `X-Token-Transport: cookie`: the
// refresh token travels in an HttpOnly cookie that page scripts cannot read, and the answer's body
// carries only the access token. Without the header the cookie is never read, so a cross-site form or
// a fetch that could not send the header (CORS refuses its preflight) can neither refresh nor log out.
//
// The cookie is a `__Host-` cookie (Secure, Path=/, no Domain): a page on a sibling subdomain cannot
// set one for our host, so it cannot plant a cookie of the same name that the browser would send
// before ours (a `__Secure-` cookie with a narrower Path could be planted so, and logged the victim
// out). It goes with every request to the origin, but only the token endpoints read it, and only with
// the transport header. A request that still carries the name twice is refused (400) and clears nothing.
//
// The previous release's cookie, `__Secure-refresh` (Path=/api/token/), is a name a sibling can
// plant, so it never continues a session: a refresh that finds only it answers 401 (log in again) and
// clears it; a logout reads it, so the session it names ends, and clears it.
import { parse, serialize } from 'cookie';
import type { Context } from 'koa';
import { badTokenTransport, duplicateRefreshCookie } from '../http/errors';

export const TRANSPORT_HEADER = 'X-Token-Transport';
export const REFRESH_COOKIE = '__Host-refresh';
export const REFRESH_COOKIE_PATH = '/';
/** The previous release's cookie (and its path), which browsers may still hold after an upgrade. */
export const LEGACY_REFRESH_COOKIE = '__Secure-refresh';
export const LEGACY_REFRESH_COOKIE_PATH = '/api/token/';

/** Whether the request asked for the cookie transport; any value but `cookie` is a 400. */
export function wantsCookie(ctx: Context): boolean {
  const value = ctx.get(TRANSPORT_HEADER);
  if (value === '') return false;
  if (value.trim().toLowerCase() === 'cookie') return true;
  throw badTokenTransport(TRANSPORT_HEADER);
}

/** How many cookies of this name the request carries (Node joins repeated Cookie headers with "; "). */
function count(ctx: Context, name: string): number {
  const header = ctx.get('Cookie');
  if (header === '') return 0;
  return header.split(';').filter((pair) => pair.slice(0, pair.includes('=') ? pair.indexOf('=') : undefined).trim() === name).length;
}

/** The one cookie of this name, if sent; a 400 when the name comes more than once (which one is ours?). */
function single(ctx: Context, name: string): string | undefined {
  const n = count(ctx, name);
  if (n === 0) return undefined;
  if (n > 1) {
    throw duplicateRefreshCookie(name);
  }
  return parse(ctx.get('Cookie'))[name];
}

/** The refresh token from the cookie, if the browser sent one. */
export const refreshCookie = (ctx: Context): string | undefined => single(ctx, REFRESH_COOKIE);

/** The previous release's refresh cookie, if the browser still holds one. */
export const legacyRefreshCookie = (ctx: Context): string | undefined => single(ctx, LEGACY_REFRESH_COOKIE);

// Secure is always set: browsers keep it from https:// pages and from localhost (http:// is a
// potentially trustworthy origin there), so the plain-HTTP development stack works on localhost.
const attributes = { httpOnly: true, secure: true, sameSite: 'strict', path: REFRESH_COOKIE_PATH } as const;
const legacyAttributes = { ...attributes, path: LEGACY_REFRESH_COOKIE_PATH } as const;

/** A browser that still sends the previous release's cookie is told to drop it. */
function dropLegacy(ctx: Context): void {
  if (count(ctx, LEGACY_REFRESH_COOKIE) > 0) ctx.append('Set-Cookie', serialize(LEGACY_REFRESH_COOKIE, '', { ...legacyAttributes, maxAge: 0 }));
}

export function setRefreshCookie(ctx: Context, token: string, maxAgeSeconds: number): void {
  ctx.append('Set-Cookie', serialize(REFRESH_COOKIE, token, { ...attributes, maxAge: Math.max(0, maxAgeSeconds) }));
  dropLegacy(ctx);
}

export function clearRefreshCookie(ctx: Context): void {
  ctx.append('Set-Cookie', serialize(REFRESH_COOKIE, '', { ...attributes, maxAge: 0 }));
  dropLegacy(ctx);
}
