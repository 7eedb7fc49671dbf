// The cookie transport for browsers, opted into per request with `X-Token-Transport: cookie`: the
// refresh token travels in an HttpOnly cookie that page scripts cannot read, scoped to the token
// endpoints, and the answer's body carries only the access token. Without the header the cookie is
// never read, so a cross-site form or a fetch that could not send the header (CORS refuses its
// preflight) can neither refresh nor log out.
import { parse, serialize } from 'cookie';
import type { Context } from 'koa';
import { ApiError } from '../http/errors';

export const TRANSPORT_HEADER = 'X-Token-Transport';
export const REFRESH_COOKIE = '__Secure-refresh';
export const REFRESH_COOKIE_PATH = '/api/token/';

/** Whether the request asked for the cookie transport; any value but `cookie` is a 400. */
export function wantsCookie(ctx: Context): boolean {
  const value = ctx.get(TRANSPORT_HEADER);
  if (value === '') return false;
  if (value.trim().toLowerCase() === 'cookie') return true;
  throw new ApiError(400, { detail: `${TRANSPORT_HEADER} must be "cookie" when sent.`, code: 'bad_token_transport' });
}

/** The refresh token from the cookie, if the browser sent one. */
export function refreshCookie(ctx: Context): string | undefined {
  const header = ctx.get('Cookie');
  return header === '' ? undefined : parse(header)[REFRESH_COOKIE];
}

// Secure is always set: browsers keep it from https:// pages and from localhost (http:// is a
// potentially trustworthy origin there), so the plain-HTTP development stack works on localhost.
const attributes = { httpOnly: true, secure: true, sameSite: 'strict', path: REFRESH_COOKIE_PATH } as const;

export function setRefreshCookie(ctx: Context, token: string, maxAgeSeconds: number): void {
  ctx.append('Set-Cookie', serialize(REFRESH_COOKIE, token, { ...attributes, maxAge: Math.max(0, maxAgeSeconds) }));
}

export function clearRefreshCookie(ctx: Context): void {
  ctx.append('Set-Cookie', serialize(REFRESH_COOKIE, '', { ...attributes, maxAge: 0 }));
}

/** No refresh token in the body or the cookie: the browser has no session. */
export const noRefreshCookie = () =>
  new ApiError(401, { detail: 'Authentication credentials were not provided.', code: 'not_authenticated' });
