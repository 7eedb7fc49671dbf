// Token claims, signing and verification, with simplejwt's claim set and error messages:
// header {"alg","typ"} (+ kid), claims token_type, exp, iat, jti, <user id claim>, then our own.
import { randomUUID } from 'node:crypto';
import jwt, { type JwtHeader, type VerifyOptions } from 'jsonwebtoken';
import type { JwtSettings } from '../config';
import type { KeySet } from './keys';

export type TokenType = 'access' | 'refresh';
export type Clock = () => number; // milliseconds since the epoch

/** simplejwt's wording, which clients may match on. */
export const TOKEN_MESSAGES = {
  invalidOrExpired: 'Token is invalid or expired',
  noExp: "Token has no 'exp' claim",
  noId: 'Token has no id',
  noType: 'Token has no type',
  wrongType: 'Token has wrong type',
  blacklisted: 'Token is blacklisted',
  noUserId: 'Token contained no recognizable user identification',
} as const;

/** A token failed validation; `message` is the simplejwt text shown to the client. */
export class TokenError extends Error {
  override name = 'TokenError';
}

export interface Claims {
  token_type: TokenType;
  exp: number;
  iat: number;
  jti: string;
  /** The family (one per login) an access token belongs to. */
  sid?: string;
  /** The account's username, so routes can name the user without a query. */
  username?: string;
  [claim: string]: unknown;
}

export interface IssuedToken {
  token: string;
  jti: string;
  expiresAt: Date;
}

// Column and sanity bounds: a validly signed token must still never reach the database with values
// it cannot hold.
const MAX_JTI_LENGTH = 64;
const MAX_USER_ID = 2_147_483_647; // Postgres integer

export const newJti = (): string => randomUUID().replaceAll('-', '');

/** What access tokens carry beyond simplejwt's claims. */
export interface AccessExtras {
  sid?: string;
  username?: string;
}

export interface TokenService {
  readonly settings: JwtSettings;
  sign(type: TokenType, userId: number, now: number, extra?: AccessExtras): IssuedToken;
  /** Verifies signature, lifetime and simplejwt's claim checks; `type` undefined accepts either type. */
  verify(token: string, type: TokenType | undefined): Claims;
  /** Options for jsonwebtoken.verify, shared with the koa-jwt guard so both check the same things. */
  readonly verifyOptions: VerifyOptions;
  /** The key for a token header (koa-jwt's secret provider). */
  keyFor(header: JwtHeader | undefined): string | Buffer;
  /** The simplejwt checks that follow the signature check. */
  checkClaims(payload: unknown, type: TokenType | undefined): Claims;
  /** The user id claim as a positive integer, or a TokenError. */
  userIdOf(claims: Claims): number;
}

export function createTokenService(settings: JwtSettings, keys: KeySet, clock: Clock): TokenService {
  const nowSeconds = () => Math.floor(clock() / 1000);

  const verifyOptions: VerifyOptions = {
    algorithms: keys.algorithms,
    clockTolerance: settings.leeway,
    ...(settings.audience !== undefined ? { audience: settings.audience } : {}),
    ...(settings.issuer !== undefined ? { issuer: settings.issuer } : {}),
  };
  // jsonwebtoken copies its options on every call, so a getter gives each verification the injected
  // clock's current time (koa-jwt passes this same object).
  Object.defineProperty(verifyOptions, 'clockTimestamp', { enumerable: true, get: nowSeconds });

  function sign(type: TokenType, userId: number, now: number, extra: AccessExtras = {}): IssuedToken {
    const iat = Math.floor(now / 1000);
    const exp = iat + (type === 'access' ? settings.accessTokenLifetime : settings.refreshTokenLifetime);
    const jti = newJti();
    const payload: Record<string, unknown> = { token_type: type, exp, iat, jti, [settings.userIdClaim]: userId };
    if (extra.sid !== undefined) payload.sid = extra.sid;
    if (extra.username !== undefined) payload.username = extra.username;
    if (settings.audience !== undefined) payload.aud = settings.audience;
    if (settings.issuer !== undefined) payload.iss = settings.issuer;
    const key = keys.active;
    const token = jwt.sign(payload, key.signWith, {
      algorithm: key.alg,
      ...(key.kid !== undefined ? { keyid: key.kid } : {}),
    });
    return { token, jti, expiresAt: new Date(exp * 1000) };
  }

  function keyFor(header: JwtHeader | undefined): string | Buffer {
    const key = header ? keys.find(header.kid) : undefined;
    if (!key || key.alg !== header?.alg) throw new TokenError(TOKEN_MESSAGES.invalidOrExpired);
    return key.verifyWith;
  }

  function checkClaims(payload: unknown, type: TokenType | undefined): Claims {
    if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
      throw new TokenError(TOKEN_MESSAGES.invalidOrExpired);
    }
    const p = payload as Record<string, unknown>;
    // PyJWT rejects a non-numeric or future iat before simplejwt looks at anything else.
    if (p.iat !== undefined) {
      if (typeof p.iat !== 'number' || !Number.isFinite(p.iat) || p.iat > nowSeconds() + settings.leeway) {
        throw new TokenError(TOKEN_MESSAGES.invalidOrExpired);
      }
    }
    if (p.exp === undefined) throw new TokenError(TOKEN_MESSAGES.noExp);
    if (p.jti === undefined) throw new TokenError(TOKEN_MESSAGES.noId);
    if (typeof p.jti !== 'string' || p.jti.length === 0 || p.jti.length > MAX_JTI_LENGTH) {
      throw new TokenError(TOKEN_MESSAGES.invalidOrExpired);
    }
    if (p.token_type === undefined) throw new TokenError(TOKEN_MESSAGES.noType);
    if (type !== undefined ? p.token_type !== type : p.token_type !== 'access' && p.token_type !== 'refresh') {
      throw new TokenError(TOKEN_MESSAGES.wrongType);
    }
    return p as Claims;
  }

  function verify(token: string, type: TokenType | undefined): Claims {
    let payload: unknown;
    try {
      const decoded = jwt.decode(token, { complete: true });
      payload = jwt.verify(token, keyFor(decoded?.header), verifyOptions);
    } catch {
      // PyJWT's own reasons are never shown: all of them read "Token is invalid or expired".
      throw new TokenError(TOKEN_MESSAGES.invalidOrExpired);
    }
    return checkClaims(payload, type);
  }

  function userIdOf(claims: Claims): number {
    const id = claims[settings.userIdClaim];
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 1 || id > MAX_USER_ID) {
      throw new TokenError(TOKEN_MESSAGES.noUserId);
    }
    return id;
  }

  return { settings, sign, verify, verifyOptions, keyFor, checkClaims, userIdOf };
}
