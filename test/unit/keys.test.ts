import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ALGORITHMS, buildKeySet, generateKey, KeyError, thumbprint } from '../../app/auth/keys';
import { createTokenService } from '../../app/auth/tokens';
import { ConfigError, loadConfig } from '../../app/config';
import { decodeJwt } from '../support/http';
import { thrown } from '../support/thrown';

const keyError = (f: () => unknown) => thrown(f, KeyError).message;

describe('keys', () => {
  it('computes RFC 7638 thumbprints (the RFC example)', () => {
    const jwk = {
      kty: 'RSA',
      e: 'AQAB',
      n: '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw',
    };
    expect(thumbprint(createPublicKey({ key: jwk, format: 'jwk' }))).toBe('NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs');
  });

  it('generates a working key for every algorithm; tokens carry its kid and verify', () => {
    for (const alg of ALGORITHMS) {
      const generated = generateKey(alg);
      const { config } = loadConfig({
        DATABASE_URL: 'postgres://x/y',
        ALGORITHM: alg,
        SIGNING_KEY: generated.signingKey,
        ...(alg.startsWith('HS') ? { SIGNING_KEY_ID: generated.kid } : {}),
      });
      const tokens = createTokenService(config.jwt, Date.now);
      const { token } = tokens.sign('access', 1, Date.now());
      expect(decodeJwt(token).header).toEqual({ alg, typ: 'JWT', kid: generated.kid });
      expect(tokens.verify(token, 'access').user_id).toBe(1);
      if (!alg.startsWith('HS')) expect(config.jwt.keys.jwks().keys.map((k) => k.kid)).toEqual([generated.kid]);
    }
  });

  it('publishes public keys only, never an HMAC secret or a private member', () => {
    const es = generateKey('ES256');
    const hs = generateKey('HS256');
    const set = buildKeySet({
      algorithm: 'PS256',
      signingKey: generateKey('PS256').signingKey,
      verifyingKeys: JSON.stringify({ keys: [es.jwk, hs.jwk] }),
    });
    const published = set.jwks().keys;
    expect(published.map((k) => k.alg)).toEqual(['PS256', 'ES256']);
    expect(set.algorithms).toEqual(['PS256', 'ES256', 'HS256']);
    for (const k of published) {
      expect(Object.keys(k)).not.toContain('d');
      expect(k.use).toBe('sig');
    }
    expect(set.find(hs.kid)!.alg).toBe('HS256');
    expect(set.find('nope')).toBeUndefined();
    expect(set.find(undefined)).toBeUndefined(); // asymmetric keys always have a kid (their thumbprint)
  });

  it('takes a VERIFYING_KEY that is the public half of SIGNING_KEY', () => {
    const a = generateKey('ES384');
    const publicPem = createPublicKey(a.signingKey).export({ format: 'pem', type: 'spki' }).toString();
    const set = buildKeySet({ algorithm: 'ES384', signingKey: a.signingKey, verifyingKey: publicPem });
    expect(set.active.kid).toBe(a.kid);
    expect(set.active.verifying.type).toBe('public');
  });

  it('reads a private JWK in the verify-only set as its public half', () => {
    const pair = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const privateJwk = { ...pair.privateKey.export({ format: 'jwk' }), alg: 'ES256', kid: 'old' };
    const set = buildKeySet({ algorithm: 'HS256', signingKey: 's', signingKeyId: 'new', verifyingKeys: JSON.stringify({ keys: [privateJwk] }) });
    expect(set.find('old')!.verifying.type).toBe('public');
  });

  it('refuses keys that do not fit their algorithm, mismatched pairs and clashing kids', () => {
    const rsa1024 = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    expect(keyError(() => buildKeySet({ algorithm: 'RS256', signingKey: rsa1024 }))).toMatch(/at least 2048 bits/);
    const p384 = generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    expect(keyError(() => buildKeySet({ algorithm: 'ES256', signingKey: p384 }))).toMatch(/P-256/);
    expect(keyError(() => buildKeySet({ algorithm: 'ES512', signingKey: p384 }))).toMatch(/P-521/);
    expect(keyError(() => buildKeySet({ algorithm: 'PS256', signingKey: 'not a pem' }))).toMatch(/PEM private key/);
    const a = generateKey('ES256');
    const b = generateKey('ES256');
    const bPublic = createPublicKey(b.signingKey).export({ format: 'pem', type: 'spki' }).toString();
    expect(keyError(() => buildKeySet({ algorithm: 'ES256', signingKey: a.signingKey, verifyingKey: bPublic }))).toMatch(/not the public half/);
    const hs = generateKey('HS256');
    const legacy = { kty: 'oct', alg: 'HS256', k: hs.jwk.k };
    expect(keyError(() => buildKeySet({ algorithm: 'HS256', signingKey: 'x', verifyingKeys: JSON.stringify({ keys: [legacy] }) }))).toMatch(/SIGNING_KEY_ID/);
    expect(keyError(() => buildKeySet({ algorithm: 'HS256', signingKey: 'x', signingKeyId: hs.kid, verifyingKeys: JSON.stringify({ keys: [hs.jwk] }) }))).toMatch(/two keys have the kid/);
    // The active key listed again (a JWK Set saved from our own endpoint) is the same key: fine.
    expect(buildKeySet({ algorithm: 'ES256', signingKey: a.signingKey, verifyingKeys: JSON.stringify({ keys: [a.jwk] }) }).keys).toHaveLength(1);
    expect(keyError(() => buildKeySet({ algorithm: 'HS256', signingKey: 'x', verifyingKeys: '{"keys":[{"kty":"oct","k":"eA"}]}' }))).toMatch(/"alg" must be/);
    expect(keyError(() => buildKeySet({ algorithm: 'HS256', signingKey: 'x', verifyingKeys: 'nope' }))).toMatch(/not JSON/);
  });

  it('has no EdDSA: an EdDSA setting or an Ed25519 key stops the start, naming the algorithms there are', () => {
    const supported = /jsonwebtoken.*has no EdDSA.*HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512/;
    const ed = generateKeyPairSync('ed25519');
    const edPem = ed.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    const configError = (env: Record<string, string>) =>
      thrown(() => loadConfig({ DATABASE_URL: 'postgres://x/y', ...env }), ConfigError).message;
    expect(configError({ ALGORITHM: 'EdDSA', SIGNING_KEY: 'k'.repeat(40) })).toMatch(supported);
    expect(configError({ ALGORITHM: 'ES256', SIGNING_KEY: edPem })).toMatch(supported);
    const okp = { ...(ed.publicKey.export({ format: 'jwk' }) as object), alg: 'EdDSA', kid: 'ed' };
    expect(keyError(() => buildKeySet({ algorithm: 'HS256', signingKey: 'x', verifyingKeys: JSON.stringify({ keys: [okp] }) }))).toMatch(supported);
  });
});
