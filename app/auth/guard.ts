// The guard for protected routes, shaped like koa-jwt (token from the Authorization header → verify →
// revocation hook → ctx.state) but verifying with our JWS (koa-jwt's jsonwebtoken has no EdDSA).
// Failures answer exactly as simplejwt's JWTAuthentication does. No database query for an ordinary
// request: revocation is answered from memory.
import type { Context, Middleware } from 'koa';
import type { Database } from '../db/database';
import { ApiError, authenticationFailed, notAuthenticated } from '../http/errors';
import type { RevocationCheck } from './revocations';
import { TOKEN_MESSAGES, TokenError, type Claims, type TokenService } from './tokens';

export interface AuthState {
  userId: number;
  claims: Claims;
}

export interface AuthenticatedUser {
  id: number;
  username: string;
}

declare module 'koa' {
  interface DefaultState {
    auth?: AuthState;
    user?: AuthenticatedUser;
  }
}

/** A token failure on a protected route, in JWTAuthentication's shape. */
export function invalidAccessToken(message: string): ApiError {
  return new ApiError(401, {
    detail: 'Given token not valid for any token type',
    code: 'token_not_valid',
    messages: [{ token_class: 'AccessToken', token_type: 'access', message }],
  });
}

// Python's bytes.split(): runs of ASCII whitespace.
const WHITESPACE = /[ \t\n\r\v\f]+/;

/**
 * The raw token from the Authorization header, by simplejwt's rules: an absent header or another scheme
 * means "not provided" (the scheme is case-sensitive); the right scheme with other than one token is
 * `bad_authorization_header`.
 */
export function bearerToken(header: string, types: readonly string[]): string {
  const parts = header.trim().split(WHITESPACE).filter(Boolean);
  if (parts.length === 0 || !types.includes(parts[0]!)) throw notAuthenticated();
  if (parts.length !== 2) {
    throw authenticationFailed('Authorization header must contain two space-delimited values', 'bad_authorization_header');
  }
  return parts[1]!;
}

/** The Authorization header, refused when sent more than once (Node would silently keep the first). */
function authorizationHeader(ctx: Context): string {
  const values = ctx.req.headersDistinct.authorization;
  if (values && values.length > 1) {
    throw authenticationFailed('Authorization header must be sent once', 'bad_authorization_header');
  }
  return values?.[0] ?? '';
}

export interface GuardOptions {
  tokens: TokenService;
  authHeaderTypes: readonly string[];
  /** Access tokens revoked before they expire (logout, family revocation); answered from memory. */
  revocations: RevocationCheck;
}

export function createGuard({ tokens, authHeaderTypes, revocations }: GuardOptions): Middleware {
  return async function guard(ctx, next) {
    const raw = bearerToken(authorizationHeader(ctx), authHeaderTypes);
    let claims: Claims;
    let userId: number;
    try {
      claims = tokens.verify(raw, 'access');
    } catch (err) {
      if (err instanceof TokenError) throw invalidAccessToken(err.message);
      throw err;
    }
    try {
      userId = tokens.userIdOf(claims);
    } catch (err) {
      // simplejwt answers this one without `messages`.
      throw authenticationFailed((err as TokenError).message, 'token_not_valid');
    }
    if (revocations.isRevoked(claims, userId)) throw invalidAccessToken(TOKEN_MESSAGES.blacklisted);
    ctx.state.auth = { userId, claims };
    await next();
  };
}

/**
 * The authenticated user. Tokens we issue name the user (`username`), and deactivation or deletion
 * revokes them at once, so no query is needed; a token without the claim (crafted, or from an older
 * release) is checked against the database: "User not found" / "User is inactive", simplejwt's words.
 */
export function requireUser(db: Database): Middleware {
  return async function loadUser(ctx, next) {
    const auth = ctx.state.auth;
    if (!auth) throw notAuthenticated();
    if (typeof auth.claims.username === 'string') {
      ctx.state.user = { id: auth.userId, username: auth.claims.username };
      return next();
    }
    const [user] = await db.rows<{ id: number; username: string; is_active: boolean }>(
      'SELECT id, username, is_active FROM users WHERE id = $1',
      [auth.userId],
    );
    if (!user) throw authenticationFailed('User not found', 'user_not_found');
    if (!user.is_active) throw authenticationFailed('User is inactive', 'user_inactive');
    ctx.state.user = { id: user.id, username: user.username };
    await next();
  };
}
