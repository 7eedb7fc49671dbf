// The token endpoints, wire-compatible with simplejwt's views: obtain, refresh, verify, blacklist;
// and logout-all, which simplejwt lacks. Handlers are thin: parse, validate, call the domain
// functions, answer.
import type Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import type { JwtSettings } from '../config';
import type { Database } from '../db/database';
import { createBodyReader } from '../http/body';
import { endpoint } from '../http/endpoint';
import { ApiError, clientClosed, loginOverloaded, noActiveAccount, noRefreshCookie, throttled, tokenNotValid } from '../http/errors';
import { noStore } from '../http/no-store';
import { sendJson } from '../http/respond';
import { validated } from '../http/validation';
import { recordEvent } from '../events/outbox';
import { clientOf } from './caller';
import { clearRefreshCookie, legacyRefreshCookie, refreshCookie, setRefreshCookie, wantsCookie } from './cookie';
import type { AuthEvents } from './events';
import * as families from './families';
import { beginLogin, recordSuccessfulLogin } from './logins';
import { HashAborted, HashQueueFull, type PasswordHasher } from './passwords';
import { CookieRefreshRequest, LogoutAllQuery, ObtainRequest, RefreshRequest, VerifyRequest, type AccessOnly, type RotatedPair, type TokenPair } from './schemas';
import { requireRecentLogin } from './recent-login';
import type { RevocationCheck } from './revocations';
import * as throttle from './throttle';
import { newJti, TOKEN_MESSAGES, TokenError, type Claims, type Clock, type TokenService, type TokenType } from './tokens';
import { loadUserClaims } from './user-claims';
import { authenticate, normalizeUsername } from './users';

export interface TokenRouteDeps {
  db: Database;
  tokens: TokenService;
  hasher: PasswordHasher;
  settings: JwtSettings;
  clock: Clock;
  maxBodyBytes: number;
  /** Revoked access tokens: verify answers "blacklisted" for them. */
  revocations: RevocationCheck;
  /** The bearer-token guard, for logout-all. */
  guard: Middleware;
  throttle: throttle.ThrottleSettings;
  /** Security outcomes: counted, and logged with the request id. */
  events: AuthEvents;
}


/** Aborts when the client goes away before its answer, so its queued password hash is never run. */
function clientGone(ctx: Context): AbortSignal {
  const gone = new AbortController();
  ctx.res.once('close', () => {
    if (!ctx.res.writableFinished) gone.abort();
  });
  return gone.signal;
}

function refused(refusal: families.Refusal): ApiError {
  switch (refusal) {
    case 'inactive':
      return noActiveAccount(true);
    case 'reused':
    case 'revoked':
      return tokenNotValid(TOKEN_MESSAGES.blacklisted);
    case 'unknown':
      return tokenNotValid(TOKEN_MESSAGES.invalidOrExpired);
  }
}

export function tokenRoutes(router: Router, deps: TokenRouteDeps): void {
  const { db, tokens, hasher, settings, clock, maxBodyBytes } = deps;
  const body = createBodyReader(maxBodyBytes);

  /**
   * The refresh token a request presents: the body's `refresh` field, or with the cookie transport
   * the cookie when the body has none (a 400 when the cookie's name comes twice). A 401 in cookie
   * mode clears the cookie, which is useless then. The previous release's cookie (cookie.ts) is read
   * only to end its session (`legacy: 'end'`): a refresh that finds only it clears it and answers 401.
   */
  async function presentedRefresh(ctx: Context, cookie: boolean, legacy: 'end' | 'refuse'): Promise<string> {
    if (!cookie) return validated(RefreshRequest, await body.fields(ctx)).refresh;
    const fromCookie = refreshCookie(ctx);
    const token = validated(CookieRefreshRequest, await body.fields(ctx)).refresh ?? fromCookie;
    if (token !== undefined) return token;
    const old = legacyRefreshCookie(ctx);
    if (old !== undefined && legacy === 'end') return old;
    if (old !== undefined) clearRefreshCookie(ctx);
    throw noRefreshCookie();
  }

  /** Runs `work`; in cookie mode a refusal (401) also clears the cookie. */
  async function clearingCookieOnRefusal(ctx: Context, cookie: boolean, work: () => Promise<void>): Promise<void> {
    try {
      await work();
    } catch (err) {
      if (cookie && err instanceof ApiError && err.status === 401) clearRefreshCookie(ctx);
      throw err;
    }
  }

  /** A refused refresh: counted and logged (events.ts), then answered. */
  const refusedRefresh = (ctx: Context, refusal: families.Refusal) => {
    deps.events.refreshRefused(ctx, refusal);
    return refused(refusal);
  };

  /**
   * A new refresh token with its access token: in the body, or with the cookie transport the refresh
   * token in the cookie and only the access token in the body. `pair` keeps simplejwt's key order.
   */
  function answerTokens(ctx: Context, cookie: boolean, refresh: { token: string; expiresAt: Date }, pair: TokenPair | RotatedPair): void {
    if (!cookie) return sendJson(ctx, 200, pair);
    setRefreshCookie(ctx, refresh.token, secondsUntil(refresh.expiresAt));
    sendJson(ctx, 200, { access: pair.access } satisfies AccessOnly);
  }

  // A refreshed access token names its session, ends with it, and keeps its login's time (auth_time).
  const accessExtras = (s: families.Renewal & { ok: true }) => ({ sid: s.familyId, username: s.username, notAfter: s.sessionEnds, loginAt: s.loginAt });
  const secondsUntil = (date: Date) => Math.floor((date.getTime() - clock()) / 1000);
  // Whole seconds, as a token's exp: the database's expiries and the tokens' agree exactly.
  const secondsFrom = (now: Date, seconds: number) => new Date((Math.floor(now.getTime() / 1000) + seconds) * 1000);
  /**
   * A login attempt that changed nothing (failed, throttled), as an event of its own. A name longer
   * than any username is cut and marked with "…", which no username holds, so it names nobody.
   */
  const loginEvent = (ctx: Context, type: 'login.failed' | 'login.throttled', name: string, now: Date, details?: Record<string, unknown>) => {
    const username = name.length > 150 ? `${name.slice(0, 150)}…` : name;
    return recordEvent(db, undefined, { type, at: now, user: { username }, origin: clientOf(ctx), ...(details ? { details } : {}) });
  };

  function verified(token: string, type: TokenType | undefined, onInvalid?: () => void): { claims: Claims; userId: number } {
    try {
      const claims = tokens.verify(token, type);
      return { claims, userId: tokens.userIdOf(claims) };
    } catch (err) {
      if (!(err instanceof TokenError)) throw err;
      onInvalid?.();
      throw tokenNotValid(err.message);
    }
  }

  async function obtain(ctx: Context) {
    const cookie = wantsCookie(ctx);
    const { username, password } = validated(ObtainRequest, await body.fields(ctx));
    const now = new Date(clock());
    // The attempt is counted before the password is hashed: concurrent guesses cannot all pass.
    const name = normalizeUsername(username);
    const keys = throttle.loginKeys(name, ctx.ip);
    const { reservation, account } = await beginLogin(db, keys, name, now, deps.throttle);
    if (!reservation.ok) {
      deps.events.login(ctx, 'throttled');
      await loginEvent(ctx, 'login.throttled', name, now, { retry_after: reservation.waitSeconds, bound: reservation.bound });
      throw throttled(reservation.waitSeconds);
    }
    const user = await authenticate(db, hasher, account, password, { signal: clientGone(ctx) }).catch(
      (err: unknown) => {
        if (err instanceof HashQueueFull) throw loginOverloaded();
        if (err instanceof HashAborted) throw clientClosed();
        throw err;
      },
    );
    const failed = async () => {
      deps.events.login(ctx, 'failure');
      await loginEvent(ctx, 'login.failed', name, now);
      return noActiveAccount(false);
    };
    if (!user) throw await failed();
    const sessionEnds = secondsFrom(now, settings.sessionMaxLifetime);
    const refresh = tokens.sign('refresh', user.id, now.getTime(), { notAfter: sessionEnds });
    // Recorded only if the user is as the login read it: a password change, deactivation or
    // logout-all that landed while the password was being hashed wins.
    const familyId = await recordSuccessfulLogin(db, {
      userId: user.id,
      generation: user.generation,
      token: refresh,
      now,
      sessionEnds,
      client: clientOf(ctx),
      lastLogin: settings.updateLastLogin,
      throttle: keys,
    });
    if (!familyId) throw await failed();
    const claims = await loadUserClaims(db, user.id, settings.accessTokenClaims);
    const access = tokens.sign('access', user.id, now.getTime(), { sid: familyId, username: user.username, notAfter: sessionEnds, loginAt: now, claims });
    deps.events.login(ctx, 'success');
    answerTokens(ctx, cookie, refresh, { refresh: refresh.token, access: access.token } satisfies TokenPair);
  }

  async function refresh(ctx: Context) {
    const cookie = wantsCookie(ctx);
    const presented = await presentedRefresh(ctx, cookie, 'refuse');
    await clearingCookieOnRefusal(ctx, cookie, () => rotate(ctx, presented, cookie));
  }

  async function rotate(ctx: Context, presented: string, cookie: boolean) {
    const { claims, userId } = verified(presented, 'refresh', () => deps.events.refresh(ctx, 'invalid'));
    const now = new Date(clock());
    const ref = { jti: claims.jti, userId };
    // Counted against the token's family, and only when the token could be used.
    const wait = await throttle.refreshWaitSeconds(db, ref, now, deps.throttle);
    if (wait > 0) {
      deps.events.refresh(ctx, 'throttled');
      throw throttled(wait);
    }
    if (!settings.rotateRefreshTokens) {
      const outcome = await families.use(db, ref, now, clientOf(ctx));
      if (!outcome.ok) throw refusedRefresh(ctx, outcome.refusal);
      const record = await loadUserClaims(db, userId, settings.accessTokenClaims);
      const access = tokens.sign('access', userId, now.getTime(), { ...accessExtras(outcome), claims: record });
      deps.events.refresh(ctx, 'refreshed');
      return sendJson(ctx, 200, { access: access.token } satisfies AccessOnly);
    }
    // The database records the child first and caps its expiry at the session's end; the token is
    // then signed to match. Within REFRESH_REUSE_INTERVAL a parent presented again gets the child its
    // first rotation made: the same jti, iat and exp, signed again (the same token) with a fresh access token.
    const child = { jti: newJti(), expiresAt: secondsFrom(now, settings.refreshTokenLifetime) };
    const outcome = await families.rotate(db, ref, child, {
      blacklistOld: settings.blacklistAfterRotation,
      now,
      client: clientOf(ctx),
      reuseIntervalSeconds: settings.refreshReuseInterval,
    });
    if (!outcome.ok) throw refusedRefresh(ctx, outcome.refusal);
    const next = tokens.sign('refresh', userId, outcome.issuedAt.getTime(), { jti: outcome.jti, notAfter: outcome.expiresAt });
    // Read again at every refresh, so a change to the user's record reaches the next access token.
    const record = await loadUserClaims(db, userId, settings.accessTokenClaims);
    const access = tokens.sign('access', userId, now.getTime(), { ...accessExtras(outcome), claims: record });
    deps.events.refresh(ctx, outcome.reissued ? 'reissued' : 'rotated');
    answerTokens(ctx, cookie, next, { access: access.token, refresh: next.token } satisfies RotatedPair);
  }

  /** A machine client's access token (RFC 9068): valid, and not of a deleted client or an old secret. */
  async function verifyClientToken(token: string): Promise<void> {
    let claims;
    try {
      claims = tokens.verifyClient(token);
    } catch (err) {
      if (err instanceof TokenError) throw tokenNotValid(err.message);
      throw err;
    }
    if (await deps.revocations.isClientRevoked(claims.client_id, claims.iat)) throw new ApiError(400, { non_field_errors: [TOKEN_MESSAGES.blacklisted] });
  }

  async function verify(ctx: Context) {
    const { token } = validated(VerifyRequest, await body.fields(ctx));
    if (tokens.isClientToken(token)) {
      await verifyClientToken(token);
      return sendJson(ctx, 200, {});
    }
    const { claims, userId } = verified(token, undefined);
    const current =
      claims.token_type === 'refresh'
        ? await families.isCurrent(db, claims.jti)
        : !(await deps.revocations.isRevoked(claims, userId));
    // simplejwt answers this one with a validation error, not a 401.
    if (!current) throw new ApiError(400, { non_field_errors: [TOKEN_MESSAGES.blacklisted] });
    sendJson(ctx, 200, {});
  }

  async function blacklist(ctx: Context) {
    const cookie = wantsCookie(ctx);
    const presented = await presentedRefresh(ctx, cookie, 'end');
    await clearingCookieOnRefusal(ctx, cookie, async () => {
      const { claims, userId } = verified(presented, 'refresh');
      const outcome = await families.logout(db, { jti: claims.jti, userId }, new Date(clock()), clientOf(ctx));
      if (!outcome.ok) throw refused(outcome.refusal); // logout works for inactive accounts too: never 'inactive'
      deps.events.revoked(ctx, 'logout');
      if (cookie) clearRefreshCookie(ctx);
      sendJson(ctx, 200, {});
    });
  }

  /**
   * scope=all: ends every session of the caller, all families and every access token issued until now.
   * scope=others: every session but the caller's (its access tokens stop by their family); it needs a
   * recent login, since it keeps the caller's session, which may be a thief's. scope=all needs none: it
   * ends the caller's session too, so it only ever takes access away, and an owner who fears a theft
   * must be able to throw everyone out (the thief included) without first logging in again.
   */
  async function logoutAll(ctx: Context) {
    const { scope } = validated(LogoutAllQuery, ctx.query);
    const { userId, claims } = ctx.state.auth!;
    if (scope === 'others') requireRecentLogin(claims, clock(), settings.sessionReauthAge);
    const now = new Date(clock());
    const event = { client: clientOf(ctx), session: claims.sid };
    if (scope === 'others') await families.revokeAllForUser(db, userId, 'logout_others', now, { keep: claims.sid, ...event });
    else await families.revokeAllForUser(db, userId, 'logout_all', now, event);
    deps.events.revoked(ctx, scope === 'others' ? 'logout_others' : 'logout_all');
    sendJson(ctx, 200, {});
  }

  router.all('/api/token', noStore, endpoint({ POST: obtain }));
  router.all('/api/token/refresh', noStore, endpoint({ POST: refresh }));
  router.all('/api/token/verify', noStore, endpoint({ POST: verify }));
  router.all('/api/token/blacklist', noStore, endpoint({ POST: blacklist }));
  router.all('/api/token/logout-all', noStore, deps.guard, endpoint({ POST: logoutAll }));
}
