// The guard for protected routes: koa-jwt, with simplejwt's rules around it. Its getToken reads the
// Authorization header as simplejwt does; its secret is the key the token's kid names (retired keys
// included); jsonwebtoken, under koa-jwt, checks the signature, the times (LEEWAY), audience and
// issuer, with the algorithms the key set allows; its isRevoked hook makes simplejwt's claim checks,
// then asks the in-memory revocation store (no database query for an ordinary request). Failures
// answer exactly as simplejwt's JWTAuthentication does.
import type { Context, Middleware } from 'koa';
import koaJwt from 'koa-jwt';
import type { Database } from '../db/database';
import { ApiError, authenticationFailed, notAuthenticated } from '../http/errors';
import type { RevocationCheck } from './revocations';
import { TOKEN_MESSAGES, TokenError, UserIdError, type Claims, type TokenService } from './tokens';
import { findUserById } from './users';

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
    /** Set by koa-jwt: the verified payload, or why verification failed. */
    jwt?: unknown;
    jwtOriginalError?: unknown;
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
  /** Access tokens revoked before they expire (logout, family revocation); from memory while the feed is live. */
  revocations: RevocationCheck;
}

// Every guard createGuard made, so a test can prove each protected route has one.
const guards = new WeakSet<Middleware>();
export const isGuard = (middleware: unknown): boolean => guards.has(middleware as Middleware);

/** A failed verification in simplejwt's words; jsonwebtoken's own reasons are never shown. */
function rejection(err: unknown): ApiError {
  if (err instanceof UserIdError) return authenticationFailed(err.message, 'token_not_valid'); // no `messages`
  if (err instanceof TokenError) return invalidAccessToken(err.message);
  return invalidAccessToken(TOKEN_MESSAGES.invalidOrExpired);
}

export function createGuard({ tokens, authHeaderTypes, revocations }: GuardOptions): Middleware {
  // koa-jwt hands these options to jsonwebtoken's verify as they are; the property descriptors are
  // copied so that the clock stays a getter, read at each verification.
  const options = Object.defineProperties(
    {
      // simplejwt's header rules; the length and form checks come before any parsing. It never
      // answers "no token" (it throws), so koa-jwt's own, case-insensitive header resolver never runs.
      getToken(ctx: Context): string {
        const raw = bearerToken(authorizationHeader(ctx), authHeaderTypes);
        try {
          tokens.preflight(raw);
        } catch (err) {
          throw rejection(err);
        }
        return raw;
      },
      // koa-jwt's types predate KeyObject secrets, which jsonwebtoken 9 takes.
      secret: (async (header: Record<string, unknown>) => tokens.keyFor(header).verifying) as unknown as koaJwt.SecretLoader,
      // koa-jwt's last hook before it accepts a token: simplejwt's claim checks, then revocation.
      async isRevoked(_ctx: Context, payload: object): Promise<boolean> {
        const claims = tokens.checkClaims(payload, 'access');
        if (await revocations.isRevoked(claims, tokens.userIdOf(claims))) throw new TokenError(TOKEN_MESSAGES.blacklisted);
        return false;
      },
      key: 'jwt',
      // Failures come to us (ctx.state.jwtOriginalError) to be answered in simplejwt's shapes.
      passthrough: true,
    },
    Object.getOwnPropertyDescriptors(tokens.verifyOptions),
  ) as koaJwt.Options;
  const verify = koaJwt(options);

  const guard: Middleware = async function guard(ctx, next) {
    await verify(ctx, async () => {
      if (ctx.state.jwtOriginalError !== undefined) throw rejection(ctx.state.jwtOriginalError);
      const claims = ctx.state.jwt as Claims | undefined;
      if (claims === undefined) throw notAuthenticated(); // koa-jwt accepted nothing: never let it through
      ctx.state.auth = { userId: tokens.userIdOf(claims), claims };
      await next();
    });
  };
  guards.add(guard);
  return guard;
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
    const user = await findUserById(db, auth.userId);
    if (!user) throw authenticationFailed('User not found', 'user_not_found');
    if (!user.isActive) throw authenticationFailed('User is inactive', 'user_inactive');
    ctx.state.user = { id: user.id, username: user.username };
    await next();
  };
}
