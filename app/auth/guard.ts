// The guard for protected routes: koa-jwt, with simplejwt's rules around it. Its getToken reads the
// Authorization header as simplejwt does and finds the key the token's kid names (retired keys
// included) with the token service's own header parser, handing it to koa-jwt as the request's
// secret (ctx.state.secret); jsonwebtoken, under koa-jwt, checks the signature, the times (LEEWAY),
// audience and issuer, with the algorithms the key set allows; its isRevoked hook makes simplejwt's claim checks,
// then asks the in-memory revocation store (no database query for an ordinary request). Failures
// answer exactly as simplejwt's JWTAuthentication does.
//
// Users and machines: the same koa-jwt verifies a machine client's access token (RFC 9068, header
// typ at+jwt) with its own claim checks and per-client revocations. `guard` lets users' tokens through
// only (a client's gets 403), so every route written for users stays theirs; `guard.orClient` lets
// both through, and the route declares what it accepts after it: requireUser, requireScope,
// requireClaim, requireGroup, or anyOf(...) of them.
import type { KeyObject } from 'node:crypto';
import type { Context, Middleware } from 'koa';
import koaJwt from 'koa-jwt';
import type { Database } from '../db/database';
import { badAuthorizationHeader, clientTokenRequired, insufficientScope, invalidAccessToken, notAuthenticated, permissionDenied, tokenNotValid, userInactive, userNotFound, userTokenRequired, ApiError, type ErrorCode } from '../http/errors';
import type { RevocationCheck } from './revocations';
import { TOKEN_MESSAGES, TokenError, UserIdError, type Claims, type ClientClaims, type TokenService } from './tokens';
import { userFlags, userGroups } from './user-claims';
import { findUserById } from './users';

/** A user's access token, verified. */
export interface AuthState {
  userId: number;
  claims: Claims;
}

/** A machine client's access token, verified (only on routes behind guard.orClient). */
export interface ClientState {
  clientId: string;
  scopes: string[];
  claims: ClientClaims;
}

export interface AuthenticatedUser {
  id: number;
  username: string;
}

declare module 'koa' {
  interface DefaultState {
    auth?: AuthState;
    client?: ClientState;
    user?: AuthenticatedUser;
    /** The key koa-jwt verifies this request's token with (set by the guard's getToken). */
    secret?: KeyObject;
    /** Whether the token's header says it is a machine client's (set by the guard's getToken). */
    clientToken?: boolean;
    /** Set by koa-jwt: the verified payload, or why verification failed. */
    jwt?: unknown;
    jwtOriginalError?: unknown;
  }
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
    throw badAuthorizationHeader('Authorization header must contain two space-delimited values');
  }
  return parts[1]!;
}

/**
 * The Authorization header, refused when sent more than once (Node would silently keep the first).
 * Counted in the raw headers: `headersDistinct` would build an object of every header per request.
 */
function authorizationHeader(ctx: Context): string {
  const raw = ctx.req.rawHeaders;
  let value: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length !== 13 || name.toLowerCase() !== 'authorization') continue;
    if (value !== undefined) throw badAuthorizationHeader('Authorization header must be sent once');
    value = raw[i + 1]!;
  }
  return value ?? '';
}

export interface GuardOptions {
  tokens: TokenService;
  authHeaderTypes: readonly string[];
  /** Access tokens revoked before they expire (logout, family revocation); from memory while the feed is live. */
  revocations: RevocationCheck;
}

/** The guard: users' tokens only; `orClient`, machine clients' too. */
export interface Guard extends Middleware {
  readonly orClient: Middleware;
}

// Every guard createGuard made, so a test can prove each protected route has one.
const guards = new WeakSet<Middleware>();
export const isGuard = (middleware: unknown): boolean => guards.has(middleware as Middleware);

/** A failed verification in simplejwt's words; jsonwebtoken's own reasons are never shown. */
function rejection(err: unknown): ApiError {
  if (err instanceof UserIdError) return tokenNotValid(err.message); // no `messages`
  if (err instanceof TokenError) return invalidAccessToken(err.message);
  return invalidAccessToken(TOKEN_MESSAGES.invalidOrExpired);
}

const verified = (): Promise<void> => Promise.resolve();

/** A revocation answer, now or later, as isRevoked's: revoked is the blacklisted TokenError. */
function answer(revoked: boolean | Promise<boolean>, accepted?: () => void): boolean | Promise<boolean> {
  const decide = (r: boolean): boolean => {
    if (r) throw new TokenError(TOKEN_MESSAGES.blacklisted);
    accepted?.();
    return false;
  };
  return typeof revoked === 'boolean' ? decide(revoked) : revoked.then(decide);
}

export function createGuard({ tokens, authHeaderTypes, revocations }: GuardOptions): Guard {
  // The payloads that passed a machine client's checks (koa-jwt hands the same object on).
  const clientPayloads = new WeakSet<object>();
  // koa-jwt hands these options to jsonwebtoken's verify as they are; the property descriptors are
  // copied so that the clock stays a getter, read at each verification.
  const options = Object.defineProperties(
    {
      // simplejwt's header rules; the length and form checks come before any parsing. It never
      // answers "no token" (it throws), so koa-jwt's own, case-insensitive header resolver never runs.
      // The token's header is parsed here, by the token service (the one parser of headers), not by
      // koa-jwt's secret loader: whatever the header holds, the answer is simplejwt's 401.
      getToken(ctx: Context): string {
        const raw = bearerToken(authorizationHeader(ctx), authHeaderTypes);
        try {
          const { key, client } = tokens.inspect(raw);
          // koa-jwt takes a request's secret from ctx.state.secret before its `secret` option.
          ctx.state.secret = key.verifying;
          ctx.state.clientToken = client;
        } catch (err) {
          throw rejection(err);
        }
        return raw;
      },
      // koa-jwt's last hook before it accepts a token: simplejwt's claim checks, then revocation; or,
      // for a machine client's token (its signed header says at+jwt: getToken looked), RFC 9068's and
      // the client's cutoff. Not async: memory answers an ordinary request with no promise made here.
      isRevoked(ctx: Context, payload: object): boolean | Promise<boolean> {
        if (ctx.state.clientToken === true) {
          const claims = tokens.checkClientClaims(payload);
          return answer(revocations.isClientRevoked(claims.client_id, claims.iat), () => clientPayloads.add(payload));
        }
        const claims = tokens.checkClaims(payload, 'access');
        return answer(revocations.isRevoked(claims, tokens.userIdOf(claims)));
      },
      key: 'jwt',
      // Failures come to us (ctx.state.jwtOriginalError) to be answered in simplejwt's shapes.
      passthrough: true,
    },
    Object.getOwnPropertyDescriptors(tokens.verifyOptions),
    // koa-jwt's types require a `secret` option; there is none: each request's comes from getToken.
  ) as unknown as koaJwt.Options;
  const verify = koaJwt(options);

  const admit = (clients: boolean): Middleware =>
    async function guard(ctx, next) {
      // With passthrough koa-jwt always ends by calling its next: one shared no-op, and the route's
      // own next runs here, after the checks (no closure per request).
      await verify(ctx, verified);
      if (ctx.state.jwtOriginalError !== undefined) throw rejection(ctx.state.jwtOriginalError);
      const payload = ctx.state.jwt as object | undefined;
      if (payload === undefined) throw notAuthenticated(); // koa-jwt accepted nothing: never let it through
      if (clientPayloads.has(payload)) {
        if (!clients) throw userTokenRequired();
        const claims = payload as ClientClaims;
        ctx.state.client = { clientId: claims.client_id, scopes: claims.scope?.split(' ') ?? [], claims };
      } else {
        const claims = payload as Claims;
        ctx.state.auth = { userId: tokens.userIdOf(claims), claims };
      }
      return next();
    };
  const orClient = admit(true);
  const guard = Object.assign(admit(false), { orClient });
  guards.add(guard);
  guards.add(orClient);
  return guard;
}

/** A route's condition on who calls it, after the guard; `check` throws the ApiError that refuses. */
export interface Requirement extends Middleware {
  readonly check: (ctx: Context) => Promise<void>;
}

/** `check` answers at once when it can (no promise: the token carries what it needs), else later. */
function requirement(check: (ctx: Context) => void | Promise<void>): Requirement {
  const middleware: Middleware = (ctx, next) => {
    const pending = check(ctx);
    return pending ? pending.then(() => next()) : next();
  };
  return Object.assign(middleware, { check: async (ctx: Context) => check(ctx) });
}

/** The caller must meet one of the requirements (say, a user, or a machine client with a scope). */
export function anyOf(...requirements: Requirement[]): Requirement {
  return requirement(async (ctx) => {
    const refusals: ApiError[] = [];
    for (const r of requirements) {
      try {
        return await r.check(ctx);
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        refusals.push(err);
      }
    }
    // The refusal that speaks to this kind of caller, rather than "you are the other kind".
    const wrongKind = new Set<ErrorCode | undefined>(['user_token_required', 'client_token_required']);
    throw refusals.find((e) => !wrongKind.has(e.body.code)) ?? refusals[0] ?? permissionDenied();
  });
}

/**
 * A machine client holding every one of `scopes` (RFC 6750 §3.1: 403 insufficient_scope, naming
 * them). Behind guard.orClient; a user's token is refused (combine with anyOf to admit users too).
 */
export function requireScope(...scopes: string[]): Requirement {
  return requirement(async (ctx) => {
    const client = ctx.state.client;
    if (!client) throw ctx.state.auth ? clientTokenRequired() : notAuthenticated();
    if (!scopes.every((s) => client.scopes.includes(s))) {
      throw insufficientScope(scopes);
    }
  });
}

/** The calling user's id, refusing a machine client. */
function userOf(ctx: Context): AuthState {
  if (ctx.state.client) throw userTokenRequired();
  if (!ctx.state.auth) throw notAuthenticated();
  return ctx.state.auth;
}

/**
 * A user whose record says `claim` (is_staff or is_superuser): from the token when it carries the
 * claim (ACCESS_TOKEN_CLAIMS: as of its login or last refresh), else from the database.
 */
export function requireClaim(db: Database, claim: 'is_staff' | 'is_superuser'): Requirement {
  return requirement(async (ctx) => {
    const auth = userOf(ctx);
    const carried = auth.claims[claim];
    const value = typeof carried === 'boolean' ? carried : (await userFlags(db, auth.userId))?.[claim];
    if (value !== true) throw permissionDenied();
  });
}

/**
 * A user in at least one of `groups`: from the token's `groups` when it carries them, else (not in
 * ACCESS_TOKEN_CLAIMS, or more groups than a token carries: `groups_overage`) from the database.
 */
export function requireGroup(db: Database, ...groups: string[]): Requirement {
  return requirement(async (ctx) => {
    const auth = userOf(ctx);
    const carried = auth.claims.groups;
    const mine = Array.isArray(carried) && auth.claims.groups_overage !== true ? (carried as string[]) : await userGroups(db, auth.userId);
    if (!groups.some((g) => mine.includes(g))) throw permissionDenied();
  });
}

/**
 * The authenticated user. Tokens we issue name the user (`username`), and deactivation or deletion
 * revokes them at once, so no query is needed; a token without the claim (crafted, or from an older
 * release) is checked against the database: "User not found" / "User is inactive", simplejwt's words.
 */
export function requireUser(db: Database): Requirement {
  const fromDatabase = async (ctx: Context, userId: number): Promise<void> => {
    const user = await findUserById(db, userId);
    if (!user) throw userNotFound();
    if (!user.isActive) throw userInactive();
    ctx.state.user = { id: user.id, username: user.username };
  };
  return requirement(function loadUser(ctx) {
    const auth = userOf(ctx);
    if (typeof auth.claims.username !== 'string') return fromDatabase(ctx, auth.userId);
    ctx.state.user = { id: auth.userId, username: auth.claims.username };
  });
}
