// The key set: one active key signs; it and older verify-only keys verify, each found by the `kid` in
// a token's header and bound to one algorithm. Public keys are published as a JWK Set. The algorithms
// are jsonwebtoken's, which signs and verifies every token: it has no EdDSA, so neither do we.
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  generateKeyPairSync,
  randomBytes,
  type JsonWebKey,
  type KeyObject,
} from 'node:crypto';

export const ALGORITHMS = [
  'HS256', 'HS384', 'HS512',
  'RS256', 'RS384', 'RS512',
  'PS256', 'PS384', 'PS512',
  'ES256', 'ES384', 'ES512',
] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

export const isHmac = (alg: Algorithm): boolean => alg.startsWith('HS');

export const MIN_HMAC_KEY_BYTES = 32;

/** Why an EdDSA configuration cannot start: the card's library (jsonwebtoken) has no EdDSA. */
export const NO_EDDSA = `EdDSA (Ed25519) is not supported: jsonwebtoken, which signs and verifies every token, has no EdDSA; use one of ${ALGORITHMS.join(', ')}`;

export interface Key {
  /** The JWT header's `kid`; undefined for a key without one (its tokens carry none). */
  kid: string | undefined;
  alg: Algorithm;
  verifying: KeyObject;
}

export interface SigningKey extends Key {
  signing: KeyObject;
}

export interface KeySet {
  active: SigningKey;
  keys: readonly Key[];
  /** Every algorithm a key of the set verifies: what jsonwebtoken may accept, never what a token says. */
  algorithms: Algorithm[];
  /** The key a token's header names, or undefined: an unknown kid is never guessed at. */
  find(kid: unknown): Key | undefined;
  /** The public keys as a JWK Set; HMAC secrets are never in it. */
  jwks(): { keys: JsonWebKey[] };
}

export class KeyError extends Error {
  override name = 'KeyError';
}

export interface KeyMaterial {
  algorithm: Algorithm;
  /** The HMAC secret, or a PEM private key for the RS, PS and ES algorithms. */
  signingKey: string;
  /** A PEM public key; derived from the private key when absent. */
  verifyingKey?: string | undefined;
  signingKeyId?: string | undefined;
  /** A JWK Set (JSON) of further keys that verify only: retired ones, or the next one. */
  verifyingKeys?: string | undefined;
}

// The curve each ECDSA algorithm signs on (RFC 7518 §3.4), as Node names it.
const EC_CURVES: Partial<Record<Algorithm, { node: string; jose: string }>> = {
  ES256: { node: 'prime256v1', jose: 'P-256' },
  ES384: { node: 'secp384r1', jose: 'P-384' },
  ES512: { node: 'secp521r1', jose: 'P-521' },
};

// What each algorithm's key must be (RFC 7518). jsonwebtoken checks the same when it signs and
// verifies; checking here too makes a wrong key stop the start, not every request.
function checkAsymmetric(alg: Algorithm, key: KeyObject, what: string): void {
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails;
  if (type === 'ed25519' || type === 'ed448') throw new KeyError(`${what}: ${NO_EDDSA}`);
  if (alg.startsWith('RS') || alg.startsWith('PS')) {
    if (!(type === 'rsa' && (details?.modulusLength ?? 0) >= 2048)) {
      throw new KeyError(`${what} must be an RSA key of at least 2048 bits for ${alg}`);
    }
    return;
  }
  const curve = EC_CURVES[alg];
  if (curve && !(type === 'ec' && details?.namedCurve === curve.node)) {
    throw new KeyError(`${what} must be an EC key on ${curve.jose} for ${alg}`);
  }
}

const REQUIRED_MEMBERS: Record<string, string[]> = { RSA: ['e', 'kty', 'n'], EC: ['crv', 'kty', 'x', 'y'] };

/** RFC 7638 JWK thumbprint (SHA-256, base64url): a kid that names the key itself. */
export function thumbprint(publicKey: KeyObject): string {
  const jwk = publicKey.export({ format: 'jwk' }) as Record<string, string>;
  const members = REQUIRED_MEMBERS[jwk.kty!];
  if (!members) throw new KeyError(`no thumbprint for key type ${jwk.kty}`);
  const canonical = `{${members.map((m) => `${JSON.stringify(m)}:${JSON.stringify(jwk[m])}`).join(',')}}`;
  return createHash('sha256').update(canonical).digest('base64url');
}

function importSigningKey(m: KeyMaterial): SigningKey {
  const alg = m.algorithm;
  if (isHmac(alg)) {
    const secret = createSecretKey(Buffer.from(m.signingKey, 'utf8'));
    return { kid: m.signingKeyId, alg, signing: secret, verifying: secret };
  }
  let signing: KeyObject;
  try {
    signing = createPrivateKey(m.signingKey);
  } catch {
    throw new KeyError(`SIGNING_KEY must be a PEM private key for ${alg} (make one: npm run cli -- genkey ${alg})`);
  }
  checkAsymmetric(alg, signing, 'SIGNING_KEY');
  const derived = createPublicKey(signing);
  let verifying = derived;
  if (m.verifyingKey) {
    try {
      verifying = createPublicKey(m.verifyingKey);
    } catch {
      throw new KeyError('VERIFYING_KEY must be a PEM public key');
    }
    if (thumbprint(verifying) !== thumbprint(derived)) throw new KeyError('VERIFYING_KEY is not the public half of SIGNING_KEY');
  }
  return { kid: m.signingKeyId ?? thumbprint(verifying), alg, signing, verifying };
}

function importVerifyingKeys(json: string): Key[] {
  let set: unknown;
  try {
    set = JSON.parse(json);
  } catch {
    throw new KeyError('VERIFYING_KEYS is not JSON (expected a JWK Set: {"keys": [...]})');
  }
  const list = (set as { keys?: unknown })?.keys;
  if (!Array.isArray(list)) throw new KeyError('VERIFYING_KEYS must be a JWK Set: {"keys": [...]}');
  return list.map((entry, i) => {
    const jwk = entry as Record<string, unknown>;
    const where = `VERIFYING_KEYS key ${i}${typeof jwk.kid === 'string' ? ` (kid ${jwk.kid})` : ''}`;
    if (jwk.alg === 'EdDSA' || jwk.kty === 'OKP') throw new KeyError(`${where}: ${NO_EDDSA}`);
    if (typeof jwk.alg !== 'string' || !(ALGORITHMS as readonly string[]).includes(jwk.alg)) {
      throw new KeyError(`${where}: "alg" must be one of ${ALGORITHMS.join(', ')}`);
    }
    const alg = jwk.alg as Algorithm;
    if (jwk.kid !== undefined && typeof jwk.kid !== 'string') throw new KeyError(`${where}: "kid" must be a string`);
    if (isHmac(alg)) {
      if (jwk.kty !== 'oct' || typeof jwk.k !== 'string') throw new KeyError(`${where}: an ${alg} key is {"kty":"oct","k":…}`);
      const bytes = Buffer.from(jwk.k, 'base64url');
      // A short secret can be guessed offline from any token it signed (RFC 7518 §3.2 asks for at
      // least the hash's size; 32 bytes is our floor for every HMAC key).
      if (bytes.length < MIN_HMAC_KEY_BYTES) throw new KeyError(`${where}: an HMAC key must be at least ${MIN_HMAC_KEY_BYTES} bytes (this one is ${bytes.length})`);
      const secret = createSecretKey(bytes);
      return { kid: jwk.kid as string | undefined, alg, verifying: secret };
    }
    let verifying: KeyObject;
    try {
      // Only the public members: a private JWK pasted here must not become a signing key.
      const { d, p, q, dp, dq, qi, ...publicMembers } = jwk;
      verifying = createPublicKey({ key: publicMembers as JsonWebKey, format: 'jwk' });
    } catch {
      throw new KeyError(`${where}: not a valid public JWK`);
    }
    checkAsymmetric(alg, verifying, where);
    return { kid: (jwk.kid as string | undefined) ?? thumbprint(verifying), alg, verifying };
  });
}

export function buildKeySet(material: KeyMaterial): KeySet {
  const active = importSigningKey(material);
  const others = material.verifyingKeys ? importVerifyingKeys(material.verifyingKeys) : [];
  // The active key may also be listed (a JWK Set saved from our own endpoint): keep one copy.
  const same = (k: Key) => k.kid === active.kid && k.alg === active.alg && k.verifying.equals(active.verifying);
  const keys: Key[] = [active, ...others.filter((k) => !same(k))];
  const byKid = new Map<string | undefined, Key>();
  for (const key of keys) {
    if (byKid.has(key.kid)) {
      throw new KeyError(
        key.kid === undefined
          ? 'two keys have no kid: give the new signing key one (SIGNING_KEY_ID) so tokens can say which key signed them'
          : `two keys have the kid "${key.kid}"`,
      );
    }
    byKid.set(key.kid, key);
  }
  const jwks = {
    keys: keys
      .filter((k) => !isHmac(k.alg))
      .map((k) => ({ ...(k.verifying.export({ format: 'jwk' }) as JsonWebKey), kid: k.kid, alg: k.alg, use: 'sig' })),
  };
  return {
    active,
    keys,
    algorithms: [...new Set(keys.map((k) => k.alg))],
    find: (kid) => (kid === undefined || typeof kid === 'string' ? byKid.get(kid) : undefined),
    jwks: () => jwks,
  };
}

export interface GeneratedKey {
  alg: Algorithm;
  kid: string;
  /** What SIGNING_KEY takes: the HMAC secret, or the PEM private key. */
  signingKey: string;
  /** The key as a JWK for a VERIFYING_KEYS file (for HMAC, the secret itself: keep it private). */
  jwk: JsonWebKey;
}

/** A new key for `alg`, for the CLI's genkey. */
export function generateKey(alg: Algorithm): GeneratedKey {
  if (isHmac(alg)) {
    const bytes = alg === 'HS256' ? 32 : alg === 'HS384' ? 48 : 64;
    const secret = randomBytes(bytes + 16).toString('base64url');
    const kid = `hs-${createHash('sha256').update(secret).digest('base64url').slice(0, 16)}`;
    return { alg, kid, signingKey: secret, jwk: { kty: 'oct', kid, alg, k: Buffer.from(secret, 'utf8').toString('base64url') } };
  }
  const curve = EC_CURVES[alg];
  const pair = curve
    ? generateKeyPairSync('ec', { namedCurve: curve.node })
    : generateKeyPairSync('rsa', { modulusLength: 3072 });
  const kid = thumbprint(pair.publicKey);
  return {
    alg,
    kid,
    signingKey: pair.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    jwk: { ...(pair.publicKey.export({ format: 'jwk' }) as JsonWebKey), kid, alg, use: 'sig' },
  };
}
