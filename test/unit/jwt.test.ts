// jsonwebtoken signs and verifies every token; these pin what it does for us against published vectors,
// and the checks the token service puts around it.
import { generateKeyPairSync } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { describe, expect, it } from 'vitest';
import { buildKeySet, generateKey } from '../../app/auth/keys';
import { createTokenService, TokenError } from '../../app/auth/tokens';
import { loadConfig, type JwtSettings } from '../../app/config';
import { tamper } from '../support/http';
import { thrown } from '../support/thrown';

const message = (f: () => unknown) => thrown(f, TokenError).message;

// RFC 7515 appendix A: the same payload signed with HS256 (A.1) and ES256 (A.3), headers without kid.
const RFC_PAYLOAD = 'eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ';
const A1 = `eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.${RFC_PAYLOAD}.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk`;
const A1_KEY = { kty: 'oct', alg: 'HS256', k: 'AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow' };
const A3 = `eyJhbGciOiJFUzI1NiJ9.${RFC_PAYLOAD}.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q`;
const A3_KEY = { kty: 'EC', alg: 'ES256', crv: 'P-256', x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU', y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0' };
const RFC_TIME = 1_300_819_300_000; // a minute before the vectors' exp

function settingsWith(keys: JwtSettings['keys']): JwtSettings {
  const { config } = loadConfig({ DATABASE_URL: 'postgres://x/y', SIGNING_KEY: 'unit-test-signing-key-0123456789abcdef' });
  return { ...config.jwt, keys };
}

describe('jsonwebtoken under the token service', () => {
  it('verifies the RFC 7515 examples: A.1 (HS256) as a verify-only key, A.3 (ES256) with the service\'s options', () => {
    const keys = buildKeySet({ algorithm: 'HS256', signingKey: 'active-key', signingKeyId: 'active', verifyingKeys: JSON.stringify({ keys: [A1_KEY] }) });
    const tokens = createTokenService(settingsWith(keys), () => RFC_TIME);
    // The signature and times pass jsonwebtoken; what stops the token is simplejwt's own check.
    expect(message(() => tokens.verify(A1, undefined))).toBe('Token has no id');
    expect(message(() => tokens.verify(tamper(A1), undefined))).toBe('Token is invalid or expired');
    const later = createTokenService(settingsWith(keys), () => RFC_TIME + 120_000);
    expect(message(() => later.verify(A1, undefined))).toBe('Token is invalid or expired');
    // An asymmetric key always has a kid (its thumbprint) and A.3 names none, so jsonwebtoken verifies
    // it directly, with the options the service and the guard hand it (clock, leeway, algorithms).
    const es = buildKeySet({ algorithm: 'HS256', signingKey: 'k', signingKeyId: 'a', verifyingKeys: JSON.stringify({ keys: [A3_KEY] }) });
    const esTokens = createTokenService(settingsWith(es), () => RFC_TIME);
    const key = es.keys.find((k) => k.alg === 'ES256')!;
    expect(jwt.verify(A3, key.verifying, esTokens.verifyOptions)).toMatchObject({ iss: 'joe', exp: 1300819380 });
    expect(() => jwt.verify(tamper(A3), key.verifying, esTokens.verifyOptions)).toThrow(/invalid signature/);
    expect(() => jwt.verify(A3, key.verifying, createTokenService(settingsWith(es), () => RFC_TIME + 120_000).verifyOptions)).toThrow(/expired/);
  });

  it('signs byte for byte as the reference does (jwt.io\'s HS256 example; HMAC is deterministic)', () => {
    expect(jwt.sign({ sub: '1234567890', name: 'John Doe', iat: 1516239022 }, 'your-256-bit-secret')).toBe(
      'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c',
    );
  });

  it('refuses a public key used as an HMAC secret (algorithm confusion)', () => {
    const rs = generateKey('RS256');
    const keys = buildKeySet({ algorithm: 'RS256', signingKey: rs.signingKey });
    const tokens = createTokenService(settingsWith(keys), Date.now);
    const publicPem = keys.active.verifying.export({ format: 'pem', type: 'spki' }).toString();
    const now = Math.floor(Date.now() / 1000);
    const forged = jwt.sign({ token_type: 'access', exp: now + 60, iat: now, jti: 'a'.repeat(32), user_id: 1 }, publicPem, {
      algorithm: 'HS256',
      keyid: rs.kid,
    });
    expect(message(() => tokens.verify(forged, 'access'))).toBe('Token is invalid or expired');
  });

  it('accepts only canonical base64url before anything parses the token: no padding, no +/, no stray low bits', () => {
    const es = generateKey('ES256');
    const keys = buildKeySet({ algorithm: 'ES256', signingKey: es.signingKey });
    const tokens = createTokenService(settingsWith(keys), Date.now);
    // A token whose signature has a '-' or '_', so that its standard-base64 spelling differs.
    let token = '';
    for (let n = 1; !/[-_]/.test(token.split('.')[2] ?? ''); n++) token = tokens.sign('access', n, Date.now()).token;
    const [h, p, s] = token.split('.') as [string, string, string];
    expect(tokens.verify(token, 'access').token_type).toBe('access');
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const sibling = alphabet[alphabet.indexOf(s.at(-1)!) ^ 1]!; // differs only in unused low bits
    const respelled = [`${token}=`, `${h}.${p}.${s.replaceAll('-', '+').replaceAll('_', '/')}`, `${h}.${p}.${s.slice(0, -1)}${sibling}`];
    for (const bad of [...respelled, '', 'a.b', 'a.b.c.d', `${h}.${p}.`, `${h}..${s}`, `${h}=.${p}.${s}`, `${token}${'A'.repeat(5000)}`]) {
      expect(() => tokens.preflight(bad), bad).toThrow(TokenError);
      expect(message(() => tokens.verify(bad, 'access')), bad).toBe('Token is invalid or expired');
    }
    // Why the preflight exists: jsonwebtoken alone refuses padding and +/ but decodes an ECDSA
    // signature leniently, so a second spelling of the same token would verify.
    expect(jwt.verify(respelled[2]!, keys.active.verifying, tokens.verifyOptions)).toMatchObject({ token_type: 'access' });
  });

  it('refuses a token signed by another key under a known kid', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const es = generateKey('ES256');
    const keys = buildKeySet({ algorithm: 'ES256', signingKey: es.signingKey });
    const tokens = createTokenService(settingsWith(keys), Date.now);
    const now = Math.floor(Date.now() / 1000);
    const foreign = jwt.sign({ token_type: 'access', exp: now + 60, jti: 'j', user_id: 1 }, ec.privateKey, { algorithm: 'ES256', keyid: es.kid });
    expect(message(() => tokens.verify(foreign, 'access'))).toBe('Token is invalid or expired');
    expect(keys.algorithms).toEqual(['ES256']);
  });
});
