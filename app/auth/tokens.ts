// Token claims, signing and verification, with simplejwt's claim set and error messages:
// header {"alg","typ"} (+ kid), claims token_type, exp, iat, jti, <user id claim>, then our own.
import { randomUUID } from 'node:crypto';
import type { JwtSettings } from '../config';
import * as jws from './jws';

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
  iat?: number;
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

/** What access tokens carry beyond simplejwt's claims. */
export interface AccessExtras {
  sid?: string;
  username?: string;
}

// Bounds that keep a validly signed but odd token away from the database and from arithmetic
// surprises: our tokens are a few hundred bytes, their ids short, their times whole seconds.
export const MAX_TOKEN_LENGTH = 4096;
const MAX_JTI_LENGTH = 64;
const MAX_USER_ID = 2_147_483_647; // Postgres integer
const MAX_SID_LENGTH = 64;
const MAX_USERNAME_LENGTH = 150;
// Tokens whose signature and times checked out, by their exact text. A client sends the same access
// token with every request until it expires, so most requests skip decoding and the HMAC or signature
// check; only expiry is checked again. Only validly signed tokens get in, so the bound is the only
// protection it needs.
const VERIFIED_CACHE_SIZE = 10_000;

export const newJti = (): string => randomUUID().replaceAll('-', '');

export interface TokenService {
  readonly settings: JwtSettings;
  sign(type: TokenType, userId: number, now: number, extra?: AccessExtras): IssuedToken;
  /** Signature, lifetime and simplejwt's claim checks; `type` undefined accepts either type. */
  verify(token: string, type: TokenType | undefined): Claims;
  /** The user id claim as a positive integer, or a TokenError. */
  userIdOf(claims: Claims): number;
}

const isSeconds = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

export function createTokenService(settings: JwtSettings, clock: Clock): TokenService {
  const { keys, leeway } = settings;
  // No token we sign lives longer than this; a signed exp further out is not ours.
  const longestLifetime = Math.max(settings.accessTokenLifetime, settings.refreshTokenLifetime);
  const invalid = () => new TokenError(TOKEN_MESSAGES.invalidOrExpired);
  const verified = new Map<string, Readonly<Record<string, unknown>>>();

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
    const header = key.kid === undefined ? { alg: key.alg, typ: 'JWT' } : { alg: key.alg, typ: 'JWT', kid: key.kid };
    return { token: jws.sign(header, payload, key.alg, key.signing), jti, expiresAt: new Date(exp * 1000) };
  }

  // The checks PyJWT makes before simplejwt's: signature, algorithm, times, audience, issuer. All of
  // them answer "Token is invalid or expired".
  function verifyJwt(token: string): Readonly<Record<string, unknown>> {
    const known = verified.get(token);
    if (known) {
      if (known.exp === undefined || (known.exp as number) > Math.floor(clock() / 1000) - leeway) return known;
      verified.delete(token);
      throw invalid();
    }
    const decoded = jws.decode(token, MAX_TOKEN_LENGTH);
    if (!decoded) throw invalid();
    const { header, payload } = decoded;
    // We implement no JWS extension, so a critical one can only be refused (RFC 7515 §4.1.11).
    if (header.crit !== undefined) throw invalid();
    const key = keys.find(header.kid);
    if (!key || header.alg !== key.alg || !jws.verifySignature(decoded, key.alg, key.verifying)) throw invalid();

    const now = Math.floor(clock() / 1000);
    const { exp, iat, nbf } = payload;
    if (exp !== undefined && !(isSeconds(exp) && exp > now - leeway && exp <= now + longestLifetime + leeway)) throw invalid();
    if (iat !== undefined && !(isSeconds(iat) && iat <= now + leeway)) throw invalid();
    if (nbf !== undefined && !(isSeconds(nbf) && nbf <= now + leeway)) throw invalid();
    if (settings.audience !== undefined) {
      const aud = payload.aud;
      if (!(aud === settings.audience || (Array.isArray(aud) && aud.includes(settings.audience)))) throw invalid();
    }
    if (settings.issuer !== undefined && payload.iss !== settings.issuer) throw invalid();
    if (verified.size >= VERIFIED_CACHE_SIZE) verified.delete(verified.keys().next().value!);
    verified.set(token, Object.freeze(payload));
    return payload;
  }

  function checkClaims(p: Readonly<Record<string, unknown>>, type: TokenType | undefined): Claims {
    if (p.exp === undefined) throw new TokenError(TOKEN_MESSAGES.noExp);
    if (p.jti === undefined) throw new TokenError(TOKEN_MESSAGES.noId);
    if (typeof p.jti !== 'string' || p.jti.length === 0 || p.jti.length > MAX_JTI_LENGTH) throw invalid();
    if (p.token_type === undefined) throw new TokenError(TOKEN_MESSAGES.noType);
    if (type !== undefined ? p.token_type !== type : p.token_type !== 'access' && p.token_type !== 'refresh') {
      throw new TokenError(TOKEN_MESSAGES.wrongType);
    }
    if (p.sid !== undefined && !(typeof p.sid === 'string' && p.sid.length <= MAX_SID_LENGTH)) throw invalid();
    if (p.username !== undefined && !(typeof p.username === 'string' && p.username.length <= MAX_USERNAME_LENGTH)) throw invalid();
    return p as Claims;
  }

  function userIdOf(claims: Claims): number {
    const id = claims[settings.userIdClaim];
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 1 || id > MAX_USER_ID) {
      throw new TokenError(TOKEN_MESSAGES.noUserId);
    }
    return id;
  }

  return { settings, sign, verify: (token, type) => checkClaims(verifyJwt(token), type), userIdOf };
}
