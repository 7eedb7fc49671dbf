// JWS compact serialisation (RFC 7515) on node:crypto: HS256/384/512, RS256, ES256 and EdDSA
// (Ed25519). Strict by construction: the signature must be canonical unpadded base64url, each key
// verifies exactly one algorithm, `crit` is refused, and nothing in a header (jku, x5u, jwk) is ever
// followed. Synchronous: verification never waits behind password hashes in libuv's threadpool.
import { createHmac, sign as cryptoSign, timingSafeEqual, verify as cryptoVerify, type KeyObject } from 'node:crypto';

export const ALGORITHMS = ['HS256', 'HS384', 'HS512', 'RS256', 'ES256', 'EdDSA'] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

export const isHmac = (alg: Algorithm): boolean => alg.startsWith('HS');

const HMAC_HASH: Partial<Record<Algorithm, string>> = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' };

const B64URL = /^[A-Za-z0-9_-]*$/;

/** Decodes base64url only in its canonical form: no padding, no other alphabet, no stray bits. */
function decodeSegment(segment: string): Buffer | null {
  if (!B64URL.test(segment) || segment.length % 4 === 1) return null;
  const bytes = Buffer.from(segment, 'base64url');
  return bytes.toString('base64url') === segment ? bytes : null;
}

function parseJsonObject(bytes: Buffer): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(bytes.toString('utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

export interface Decoded {
  header: Record<string, unknown>;
  payload: Record<string, unknown>;
  signingInput: string;
  signature: Buffer;
}

/** Splits and decodes a compact JWS without verifying it; null when it is not well-formed. */
export function decode(token: string, maxLength: number): Decoded | null {
  if (token.length > maxLength) return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  const [h, p, s] = parts as [string, string, string];
  const headerBytes = decodeSegment(h);
  const payloadBytes = decodeSegment(p);
  const signature = decodeSegment(s);
  if (!headerBytes || !payloadBytes || !signature || signature.length === 0) return null;
  const header = parseJsonObject(headerBytes);
  const payload = parseJsonObject(payloadBytes);
  if (!header || !payload) return null;
  return { header, payload, signingInput: `${h}.${p}`, signature };
}

function rawSignature(alg: Algorithm, input: string, key: KeyObject): Buffer {
  const hash = HMAC_HASH[alg];
  if (hash) return createHmac(hash, key).update(input).digest();
  if (alg === 'EdDSA') return cryptoSign(null, Buffer.from(input), key);
  // ES256 signatures are the raw r||s pair (RFC 7518 §3.4), not DER.
  return cryptoSign('sha256', Buffer.from(input), alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key);
}

export function sign(header: Record<string, unknown>, payload: Record<string, unknown>, alg: Algorithm, key: KeyObject): string {
  const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  return `${input}.${rawSignature(alg, input, key).toString('base64url')}`;
}

/** Whether the decoded token's signature is valid for `alg` under `key`. */
export function verifySignature(decoded: Decoded, alg: Algorithm, key: KeyObject): boolean {
  const hash = HMAC_HASH[alg];
  if (hash) {
    const expected = createHmac(hash, key).update(decoded.signingInput).digest();
    return expected.length === decoded.signature.length && timingSafeEqual(expected, decoded.signature);
  }
  const data = Buffer.from(decoded.signingInput);
  try {
    if (alg === 'EdDSA') return cryptoVerify(null, data, key, decoded.signature);
    return cryptoVerify('sha256', data, alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key, decoded.signature);
  } catch {
    return false; // a signature of the wrong size for the key
  }
}
