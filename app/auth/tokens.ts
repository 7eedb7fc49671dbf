// Token claims, signing and verification, with simplejwt's claim set and error messages:
// header {"alg","typ"} (+ kid), claims token_type, exp, iat, jti, <user id claim>, then our own.
// Machine clients' access tokens follow RFC 9068 instead (header typ "at+jwt"; iss, sub, aud,
// client_id, scope, iat, exp, jti): signed by the same keys, held to the same preflight, key and
// jsonwebtoken checks, then to their own claim checks. The header's typ tells the two apart, and
// neither kind passes the other's checks.
// jsonwebtoken signs and verifies; around it stand the checks simplejwt and our contract add, in the
// pieces the guard (koa-jwt) composes too, so a token is held to one set of rules wherever it arrives:
//   preflight   before any parsing: the length bound, three canonical unpadded base64url segments;
//   headerOf    the one place a token's header is parsed (strict UTF-8 JSON, an object; anything else,
//               whatever it throws, is an invalid token); inspect is it, then keyFor, remembered;
//   keyFor      from the header: no `crit`, the key its `kid` names, and that key's one algorithm;
//   (jsonwebtoken: the signature, exp/nbf with LEEWAY, aud, iss, the algorithm allow-list)
//   checkClaims simplejwt's claim checks, exp required and bounded, iat not in the future, sizes.
import { randomUUID } from 'node:crypto';
import jwt, { type VerifyOptions } from 'jsonwebtoken';
import type { ClientSettings, JwtSettings } from '../config';
import type { Key } from './keys';
import type { UserClaimValues } from './user-claims';

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

/** The token is valid but names no user: simplejwt answers this one in another shape. */
export class UserIdError extends TokenError {
  override name = 'UserIdError';
  constructor() {
    super(TOKEN_MESSAGES.noUserId);
  }
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
  /** When the user logged in (seconds; OpenID Connect's claim), kept across refreshes. */
  auth_time?: number;
  [claim: string]: unknown;
}

export interface IssuedToken {
  token: string;
  jti: string;
  expiresAt: Date;
}

/** What access tokens carry beyond simplejwt's claims, and how a token's times may be set. */
export interface AccessExtras {
  sid?: string;
  username?: string;
  /** Its jti, when the database has recorded it already (a rotation); a fresh one otherwise. */
  jti?: string;
  /** Its exp is never later than this (the session's end). */
  notAfter?: Date;
  /** When the session's login happened: the auth_time claim. */
  loginAt?: Date;
  /** Claims from the user record (ACCESS_TOKEN_CLAIMS). */
  claims?: UserClaimValues;
}

/** A machine client's access token's claims (RFC 9068 §2.2). */
export interface ClientClaims {
  iss: string;
  /** The client id (no resource owner in the client credentials grant). */
  sub: string;
  aud?: string | string[];
  client_id: string;
  /** Space-separated; absent when the client was granted none. */
  scope?: string;
  iat: number;
  exp: number;
  jti: string;
  [claim: string]: unknown;
}

/** RFC 9068 §2.1: the header's typ of a JWT access token ("application/at+jwt" is the same media type). */
export const CLIENT_TOKEN_TYP = 'at+jwt';
export const isClientTokenHeader = (header: Readonly<Record<string, unknown>>): boolean =>
  typeof header.typ === 'string' && ['at+jwt', 'application/at+jwt'].includes(header.typ.toLowerCase());

// Bounds that keep a validly signed but odd token away from the database and from arithmetic
// surprises: our tokens are a few hundred bytes, their ids short, their times whole seconds.
export const MAX_TOKEN_LENGTH = 4096;
const MAX_USER_ID = 2_147_483_647; // Postgres integer
// Ids as we issue them, so that no odd one reaches a query: a jti (ours are 32 hex digits, simplejwt's
// uuid4().hex) is visible ASCII, never a NUL, which Postgres text refuses; a sid is a family's UUID,
// which a uuid column would refuse to compare with anything else.
const JTI = /^[\x21-\x7e]{1,64}$/;
const SID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MAX_USERNAME_LENGTH = 150;
export const MAX_CLIENT_ID_LENGTH = 64;
const MAX_SCOPE_LENGTH = 8192;
const MAX_GROUP_NAME_LENGTH = 150;

export const newJti = (): string => randomUUID().replaceAll('-', '');

const B64URL_SEGMENT = /^[A-Za-z0-9_-]+$/;
const B64URL_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * Whether a segment is base64url in its one canonical form: no padding, no other alphabet, no stray
 * bits. The same answer as decoding and encoding it again (test/unit/tokens.test.ts holds them equal),
 * without doing either on every request: a last character that carries 4 (length ≡ 2 mod 4) or 2
 * (≡ 3) unused bits must have them zero.
 */
export function isCanonicalBase64url(segment: string): boolean {
  if (!B64URL_SEGMENT.test(segment)) return false;
  const rest = segment.length % 4;
  if (rest === 1) return false;
  if (rest === 0) return true;
  const last = B64URL_ALPHABET.indexOf(segment[segment.length - 1]!);
  return (last & (rest === 2 ? 0x0f : 0x03)) === 0;
}

export interface TokenService {
  readonly settings: JwtSettings;
  sign(type: TokenType, userId: number, now: number, extra?: AccessExtras): IssuedToken;
  /** The whole check (preflight, key, jsonwebtoken, claims); `type` undefined accepts either type. */
  verify(token: string, type: TokenType | undefined): Claims;
  /** The user id claim as a positive integer, or a UserIdError. */
  userIdOf(claims: Claims): number;
  /** Refuses, before any parsing, a token that is too long or not three canonical base64url segments. */
  preflight(token: string): void;
  /** The key that verifies a token with this header, or a TokenError. */
  keyFor(header: Readonly<Record<string, unknown>>): Key;
  /**
   * Preflight, the header parsed, the key it names, and whether it is a machine client's token (the
   * guard's one look at it): a TokenError for anything else, never another error.
   */
  inspect(token: string): InspectedToken;
  /** jsonwebtoken's options: algorithms from the key set, audience, issuer, leeway, our clock. */
  readonly verifyOptions: VerifyOptions;
  /** simplejwt's checks on a payload jsonwebtoken has verified. */
  checkClaims(payload: unknown, type: TokenType | undefined): Claims;
  /** A machine client's access token (RFC 9068); only with machine clients on. */
  signClient(client: { clientId: string; scopes: readonly string[] }, now: number): IssuedToken;
  /** The whole check of a machine client's token (preflight, key, jsonwebtoken, its claims). */
  verifyClient(token: string): ClientClaims;
  /** RFC 9068's checks on a payload jsonwebtoken has verified; a TokenError when machine clients are off. */
  checkClientClaims(payload: unknown): ClientClaims;
  /** Whether a token's header says it is a machine client's (typ at+jwt), without verifying it. */
  isClientToken(token: string): boolean;
}

/** What a token's header tells before verification: the key to verify it with, and its kind. */
export interface InspectedToken {
  readonly key: Key;
  /** The header's typ is at+jwt: a machine client's access token (RFC 9068). */
  readonly client: boolean;
}

// Headers whose key was found, by the header segment's exact text: every token one key signs has the
// same header, so an ordinary request neither decodes nor parses it. Refused headers are never kept;
// the bound only stops odd (but valid) headers from growing it: when full, it starts again.
const MAX_KNOWN_HEADERS = 256;

const isSeconds = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

// RFC 7515 §5.2: the header is UTF-8; a byte sequence that is not is refused, not replaced.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export function createTokenService(settings: JwtSettings, clock: Clock, clients?: ClientSettings): TokenService {
  const { keys, leeway } = settings;
  // No token we sign lives longer than this; a signed exp further out is not ours.
  const longestLifetime = Math.max(settings.accessTokenLifetime, settings.refreshTokenLifetime);
  const invalid = () => new TokenError(TOKEN_MESSAGES.invalidOrExpired);
  const nowSeconds = () => Math.floor(clock() / 1000);

  const verifyOptions: VerifyOptions = {
    algorithms: keys.algorithms,
    clockTolerance: leeway,
    ...(settings.audience !== undefined ? { audience: settings.audience } : {}),
    ...(settings.issuer !== undefined ? { issuer: settings.issuer } : {}),
    // A getter, read on every verification (jsonwebtoken copies its options first), so tests can
    // move the clock; in production the clock is Date.now, as jsonwebtoken's own default.
    get clockTimestamp() {
      return nowSeconds();
    },
  };

  function sign(type: TokenType, userId: number, now: number, extra: AccessExtras = {}): IssuedToken {
    const iat = Math.floor(now / 1000);
    const lifetime = type === 'access' ? settings.accessTokenLifetime : settings.refreshTokenLifetime;
    const exp = Math.min(iat + lifetime, extra.notAfter ? Math.floor(extra.notAfter.getTime() / 1000) : Infinity);
    const jti = extra.jti ?? newJti();
    const payload: Record<string, unknown> = { token_type: type, exp, iat, jti, [settings.userIdClaim]: userId };
    if (extra.sid !== undefined) payload.sid = extra.sid;
    if (extra.username !== undefined) payload.username = extra.username;
    if (extra.loginAt !== undefined) payload.auth_time = Math.floor(extra.loginAt.getTime() / 1000);
    if (extra.claims !== undefined) Object.assign(payload, extra.claims);
    if (settings.audience !== undefined) payload.aud = settings.audience;
    if (settings.issuer !== undefined) payload.iss = settings.issuer;
    const key = keys.active;
    // jsonwebtoken writes the header {"alg","typ":"JWT"} (+ "kid"), simplejwt's exactly.
    const token = jwt.sign(payload, key.signing, { algorithm: key.alg, ...(key.kid !== undefined ? { keyid: key.kid } : {}) });
    return { token, jti, expiresAt: new Date(exp * 1000) };
  }

  function preflight(token: string): void {
    if (token.length > MAX_TOKEN_LENGTH) throw invalid();
    const parts = token.split('.');
    if (parts.length !== 3 || !parts.every(isCanonicalBase64url)) throw invalid();
  }

  function keyFor(header: Readonly<Record<string, unknown>>): Key {
    // We implement no JWS extension, so a critical one can only be refused (RFC 7515 §4.1.11). jku,
    // x5u and jwk are never read: the key comes from our own set, by kid.
    if (header.crit !== undefined) throw invalid();
    const key = keys.find(header.kid);
    if (!key || header.alg !== key.alg) throw invalid();
    return key;
  }

  /**
   * The one parser of a token's header, after the preflight: strict UTF-8, JSON, an object. Whatever
   * the untrusted bytes make it throw is an invalid token, never an error of ours (a 500).
   */
  function headerOf(token: string): Record<string, unknown> {
    preflight(token);
    let header: unknown;
    try {
      header = JSON.parse(utf8.decode(Buffer.from(token.slice(0, token.indexOf('.')), 'base64url')));
    } catch {
      throw invalid();
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) throw invalid();
    return header as Record<string, unknown>;
  }

  const knownHeaders = new Map<string, InspectedToken>();
  const headerSegment = (token: string) => token.slice(0, token.indexOf('.'));

  // A parsed header's key and kind, kept for the next token with the same header segment.
  function remember(segment: string, header: Record<string, unknown>): InspectedToken {
    const inspected: InspectedToken = Object.freeze({ key: keyFor(header), client: isClientTokenHeader(header) });
    if (knownHeaders.size >= MAX_KNOWN_HEADERS) knownHeaders.clear();
    knownHeaders.set(segment, inspected);
    return inspected;
  }

  function inspect(token: string): InspectedToken {
    const segment = headerSegment(token);
    const known = knownHeaders.get(segment);
    if (known) {
      preflight(token); // the rest of the token is new every time
      return known;
    }
    return remember(segment, headerOf(token));
  }

  function checkClaims(payload: unknown, type: TokenType | undefined): Claims {
    if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) throw invalid();
    const p = payload as Record<string, unknown>;
    const now = nowSeconds();
    // jsonwebtoken has checked exp and nbf when present; simplejwt requires exp, and we bound it.
    if (p.exp === undefined) throw new TokenError(TOKEN_MESSAGES.noExp);
    if (!isSeconds(p.exp) || p.exp > now + longestLifetime + leeway) throw invalid();
    if (p.iat !== undefined && !(isSeconds(p.iat) && p.iat <= now + leeway)) throw invalid();
    if (p.nbf !== undefined && !isSeconds(p.nbf)) throw invalid();
    if (p.jti === undefined) throw new TokenError(TOKEN_MESSAGES.noId);
    if (typeof p.jti !== 'string' || !JTI.test(p.jti)) throw invalid();
    if (p.token_type === undefined) throw new TokenError(TOKEN_MESSAGES.noType);
    if (type !== undefined ? p.token_type !== type : p.token_type !== 'access' && p.token_type !== 'refresh') {
      throw new TokenError(TOKEN_MESSAGES.wrongType);
    }
    if (p.sid !== undefined && !(typeof p.sid === 'string' && SID.test(p.sid))) throw invalid();
    if (p.username !== undefined && !(typeof p.username === 'string' && p.username.length <= MAX_USERNAME_LENGTH)) throw invalid();
    if (p.auth_time !== undefined && !(isSeconds(p.auth_time) && p.auth_time <= now + leeway)) throw invalid();
    for (const flag of ['is_staff', 'is_superuser', 'groups_overage']) {
      if (p[flag] !== undefined && typeof p[flag] !== 'boolean') throw invalid();
    }
    if (p.groups !== undefined) {
      const ok = Array.isArray(p.groups) && p.groups.every((g) => typeof g === 'string' && g.length <= MAX_GROUP_NAME_LENGTH);
      if (!ok) throw invalid();
    }
    return p as Claims;
  }

  function signClient(client: { clientId: string; scopes: readonly string[] }, now: number): IssuedToken {
    if (!clients) throw new Error('machine clients are off (ISSUER is not an issuer identifier)');
    const iat = Math.floor(now / 1000);
    const exp = iat + settings.accessTokenLifetime;
    const jti = newJti();
    // RFC 9068 §2.2's claims, in its order; aud only when AUDIENCE is set (see README).
    const payload: Record<string, unknown> = { iss: clients.issuer, sub: client.clientId };
    if (settings.audience !== undefined) payload.aud = settings.audience;
    payload.client_id = client.clientId;
    if (client.scopes.length > 0) payload.scope = client.scopes.join(' ');
    Object.assign(payload, { iat, exp, jti });
    const key = keys.active;
    const token = jwt.sign(payload, key.signing, {
      algorithm: key.alg,
      header: { alg: key.alg, typ: CLIENT_TOKEN_TYP, ...(key.kid !== undefined ? { kid: key.kid } : {}) },
    });
    return { token, jti, expiresAt: new Date(exp * 1000) };
  }

  function checkClientClaims(payload: unknown): ClientClaims {
    if (!clients) throw invalid();
    if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) throw invalid();
    const p = payload as Record<string, unknown>;
    const now = nowSeconds();
    // jsonwebtoken has checked exp, nbf, aud and iss (ISSUER is set whenever machine clients are on);
    // RFC 9068 requires these, and no claim of a user's token may appear.
    if (p.iss !== clients.issuer) throw invalid();
    if (!isSeconds(p.exp) || p.exp > now + settings.accessTokenLifetime + leeway) throw invalid();
    if (!(isSeconds(p.iat) && p.iat <= now + leeway)) throw invalid();
    if (p.nbf !== undefined && !isSeconds(p.nbf)) throw invalid();
    if (typeof p.jti !== 'string' || !JTI.test(p.jti)) throw invalid();
    if (typeof p.client_id !== 'string' || p.client_id.length === 0 || p.client_id.length > MAX_CLIENT_ID_LENGTH) throw invalid();
    if (p.sub !== p.client_id) throw invalid();
    if (p.scope !== undefined && !(typeof p.scope === 'string' && p.scope.length <= MAX_SCOPE_LENGTH)) throw invalid();
    if (p.token_type !== undefined || p[settings.userIdClaim] !== undefined) throw invalid();
    return p as ClientClaims;
  }

  function verifyClient(token: string): ClientClaims {
    const header = headerOf(token);
    if (!isClientTokenHeader(header)) throw invalid();
    const key = keyFor(header);
    let payload: unknown;
    try {
      payload = jwt.verify(token, key.verifying, verifyOptions);
    } catch {
      throw invalid();
    }
    return checkClientClaims(payload);
  }

  // The verify route's dispatch: a known header from memory, else the one parser (never a throw).
  function isClientToken(token: string): boolean {
    const known = knownHeaders.get(headerSegment(token));
    if (known) return known.client;
    try {
      return isClientTokenHeader(headerOf(token));
    } catch {
      return false;
    }
  }

  function userIdOf(claims: Claims): number {
    const id = claims[settings.userIdClaim];
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 1 || id > MAX_USER_ID) throw new UserIdError();
    return id;
  }

  function verify(token: string, type: TokenType | undefined): Claims {
    // A machine client's token is no user's token, whatever its claims (nor its key).
    const segment = headerSegment(token);
    let inspected = knownHeaders.get(segment);
    if (inspected) preflight(token);
    else {
      // Parsed once; the kind is told before the key is looked for.
      const header = headerOf(token);
      if (isClientTokenHeader(header)) throw new TokenError(TOKEN_MESSAGES.wrongType);
      inspected = remember(segment, header);
    }
    const { key, client } = inspected;
    if (client) throw new TokenError(TOKEN_MESSAGES.wrongType);
    let payload: unknown;
    try {
      // jsonwebtoken parses the payload only here, and every failure of its (a payload that is not
      // JSON included) comes back as an exception caught below.
      payload = jwt.verify(token, key.verifying, verifyOptions);
    } catch {
      // PyJWT's reasons are never shown by simplejwt: all of them read "invalid or expired".
      throw invalid();
    }
    return checkClaims(payload, type);
  }

  return { settings, sign, verify, userIdOf, preflight, keyFor, inspect, verifyOptions, checkClaims, signClient, verifyClient, checkClientClaims, isClientToken };
}
