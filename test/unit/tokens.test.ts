import { fc, test } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import { createTokenService, isCanonicalBase64url, TokenError } from '../../app/auth/tokens';
import { loadConfig } from '../../app/config';
import { decodeJwt, signHs } from '../support/http';
import { UNPARSABLE_TOKENS } from '../support/hostile';
import { thrown } from '../support/thrown';

const KEY = 'unit-test-signing-key-0123456789abcdef';
const T0 = Date.UTC(2026, 0, 1);
const S0 = T0 / 1000;

function service(env: Record<string, string> = {}, now = () => T0) {
  const { config } = loadConfig({ DATABASE_URL: 'postgres://x/y', SIGNING_KEY: KEY, ...env });
  return createTokenService(config.jwt, now);
}
const message = (f: () => unknown) => thrown(f, TokenError).message;
const ok = { token_type: 'access', exp: S0 + 300, iat: S0, jti: 'a'.repeat(32), user_id: 1 };
const sign = (p: object, header?: Record<string, unknown>) => signHs(p, KEY, header);
const without = (k: string) => Object.fromEntries(Object.entries(ok).filter(([key]) => key !== k));

describe('canonical base64url', () => {
  // The definition: decoding and encoding again gives the segment back (no padding, no other
  // alphabet, no stray bits); the check on every request must agree with it without doing either.
  const byRoundTrip = (s: string) => /^[A-Za-z0-9_-]+$/.test(s) && s.length % 4 !== 1 && Buffer.from(s, 'base64url').toString('base64url') === s;
  const alphabet = fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/= .'.split(''));
  test.prop([fc.string({ unit: alphabet, maxLength: 12 })], { numRuns: 2000 })('agrees with decoding and encoding again', (s) => {
    expect(isCanonicalBase64url(s)).toBe(byRoundTrip(s));
  });
  test.prop([fc.uint8Array({ maxLength: 40 }), fc.integer({ min: 0, max: 63 })])('accepts every encoding, refuses it with stray bits', (bytes, noise) => {
    const s = Buffer.from(bytes).toString('base64url');
    expect(isCanonicalBase64url(s)).toBe(s.length > 0);
    if (s.length % 4 === 0 || s.length === 0) return;
    const alphabetText = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const altered = s.slice(0, -1) + alphabetText[(alphabetText.indexOf(s.at(-1)!) & ~(s.length % 4 === 2 ? 0x0f : 0x03)) | (noise & (s.length % 4 === 2 ? 0x0f : 0x03))];
    expect(isCanonicalBase64url(altered)).toBe(altered === s);
  });
});

describe('token service', () => {
  it('signs simplejwt claims in order, with the header {"alg":"HS256","typ":"JWT"}', () => {
    const s = service();
    const { token, jti, expiresAt } = s.sign('access', 7, T0, { sid: 'fam', username: 'ann' });
    const { header, payload } = decodeJwt(token);
    expect(token.split('.')[0]).toBe('eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9');
    expect(header).toEqual({ alg: 'HS256', typ: 'JWT' });
    expect(Object.keys(payload)).toEqual(['token_type', 'exp', 'iat', 'jti', 'user_id', 'sid', 'username']);
    expect(payload).toMatchObject({ token_type: 'access', iat: S0, exp: S0 + 300, jti, user_id: 7, sid: 'fam', username: 'ann' });
    expect(jti).toMatch(/^[0-9a-f]{32}$/);
    expect(expiresAt.getTime()).toBe(T0 + 300_000);
    expect(s.sign('refresh', 7, T0).expiresAt.getTime()).toBe(T0 + 86_400_000);
  });

  it('adds aud and iss when configured, and requires them then', () => {
    const s = service({ AUDIENCE: 'api', ISSUER: 'auth' });
    const { token } = s.sign('access', 1, T0);
    expect(decodeJwt(token).payload).toMatchObject({ aud: 'api', iss: 'auth' });
    expect(s.verify(token, 'access').user_id).toBe(1);
    expect(s.verify(sign({ ...ok, aud: ['other', 'api'], iss: 'auth' }), 'access').jti).toBe(ok.jti);
    expect(message(() => s.verify(service().sign('access', 1, T0).token, 'access'))).toBe('Token is invalid or expired');
    expect(message(() => s.verify(sign({ ...ok, aud: 'other', iss: 'auth' }), 'access'))).toBe('Token is invalid or expired');
    expect(message(() => s.verify(sign({ ...ok, aud: 'api', iss: 'evil' }), 'access'))).toBe('Token is invalid or expired');
  });

  it('uses the USER_ID_CLAIM name', () => {
    const s = service({ USER_ID_CLAIM: 'uid' });
    const claims = s.verify(s.sign('access', 3, T0).token, 'access');
    expect(claims.uid).toBe(3);
    expect(s.userIdOf(claims)).toBe(3);
  });

  it('expires exactly at exp, later with LEEWAY, by the injected clock', () => {
    let now = T0;
    const s = service({}, () => now);
    const { token } = s.sign('access', 1, T0);
    now = T0 + 299_000;
    expect(s.verify(token, 'access').token_type).toBe('access');
    now = T0 + 300_000;
    expect(message(() => s.verify(token, 'access'))).toBe('Token is invalid or expired');
    const lenient = service({ LEEWAY: '30' }, () => T0 + 320_000);
    expect(lenient.verify(token, 'access').user_id).toBe(1);
  });

  it('gives simplejwt messages, in simplejwt order', () => {
    const s = service();
    expect(message(() => s.verify(sign(without('exp')), 'access'))).toBe("Token has no 'exp' claim");
    expect(message(() => s.verify(sign(without('jti')), 'access'))).toBe('Token has no id');
    expect(message(() => s.verify(sign(without('token_type')), 'access'))).toBe('Token has no type');
    expect(message(() => s.verify(sign(ok), 'refresh'))).toBe('Token has wrong type');
    expect(message(() => s.verify(sign({ ...ok, token_type: 'other' }), undefined))).toBe('Token has wrong type');
    expect(message(() => s.verify(sign({ ...without('exp'), jti: undefined }), 'access'))).toBe("Token has no 'exp' claim");
    expect(s.verify(sign(ok), undefined).jti).toBe(ok.jti);
    expect(s.verify(sign(without('iat')), 'access').jti).toBe(ok.jti); // iat is optional, as in simplejwt
  });

  it('refuses times of the wrong type or range', () => {
    const s = service();
    const bad: Record<string, unknown>[] = [
      { exp: String(S0 + 300) }, { exp: S0 + 300.5 }, { exp: 1e308 }, { exp: null }, { exp: [S0 + 300] }, { exp: -1 },
      { exp: S0 + 86400 * 365 }, // far beyond any lifetime we issue
      { iat: S0 + 5 }, { iat: 'yesterday' }, { iat: 1.5 }, { iat: null },
      { nbf: S0 + 5 }, { nbf: '0' }, { nbf: 1e308 },
    ];
    for (const over of bad) expect(message(() => s.verify(sign({ ...ok, ...over }), 'access')), JSON.stringify(over)).toBe('Token is invalid or expired');
    expect(s.verify(sign({ ...ok, nbf: S0 }), 'access').jti).toBe(ok.jti);
  });

  it('refuses ids, families and usernames of the wrong type or size', () => {
    const s = service();
    // Ids reach queries: a NUL (which Postgres text refuses) or a sid that is no UUID (a uuid column) is no token of ours.
    const odd = [{ jti: '\u0000a' }, { jti: 'a b' }, { jti: 'é' }, { sid: 'not-a-uuid' }, { sid: '0C8E6C1E-1B7A-4F0E-9A55-3D2F8C7B6A01x' }];
    for (const over of [{ jti: 'x'.repeat(65) }, { jti: 7 }, { jti: '' }, { sid: 5 }, { sid: 'x'.repeat(65) }, { username: ['a'] }, { username: 'u'.repeat(151) }, ...odd]) {
      expect(message(() => s.verify(sign({ ...ok, ...over }), 'access')), JSON.stringify(over)).toBe('Token is invalid or expired');
    }
  });

  it('refuses other algorithms, none, an unknown kid, crit, and over-long tokens', () => {
    const s = service();
    for (const header of [
      { alg: 'none', typ: 'JWT' },
      { alg: 'HS512', typ: 'JWT' },
      { alg: 'HS256', typ: 'JWT', kid: 'other' },
      { alg: 'HS256', typ: 'JWT', kid: 7 },
      { alg: 'HS256', typ: 'JWT', crit: ['exp'] },
    ]) {
      expect(message(() => s.verify(sign(ok, header), 'access')), JSON.stringify(header)).toBe('Token is invalid or expired');
    }
    // jku / x5u are never fetched: a header naming them changes nothing.
    expect(s.verify(sign(ok, { alg: 'HS256', typ: 'JWT', jku: 'https://evil.example/jwks' }), 'access').jti).toBe(ok.jti);
    expect(message(() => s.verify(sign({ ...ok, pad: 'x'.repeat(5000) }), 'access'))).toBe('Token is invalid or expired');
  });

  it('knows a header it has seen, and still refuses what the rest of the token gets wrong', () => {
    const s = service();
    const first = s.inspect(sign(ok));
    const again = sign({ ...ok, jti: 'b'.repeat(32) });
    expect(s.inspect(again)).toBe(first); // the same header: looked up, not parsed again
    expect(s.verify(again, 'access').jti).toBe('b'.repeat(32));
    const [h, p, sig] = again.split('.') as [string, string, string];
    for (const bad of [`${h}.${p}=.${sig}`, `${h}.${p}`, `${h}.${p}.${sig}.x`, `${h}.${p}.${sig.slice(0, -1)}+`, `${h}.${'A'.repeat(5000)}.${sig}`]) {
      expect(() => s.inspect(bad), bad).toThrow(TokenError);
      expect(message(() => s.verify(bad, 'access'))).toBe('Token is invalid or expired');
    }
    expect(message(() => s.verify(`${h}.${p}.${sig.slice(0, -2)}AA`, 'access'))).toBe('Token is invalid or expired'); // the signature
  });

  it('refuses a header or payload that does not parse as an invalid token, never another error', () => {
    const s = service();
    const cases = [...UNPARSABLE_TOKENS, { name: 'signed, payload not JSON', token: sign('{"a":' as unknown as object) }];
    for (const { name, token } of cases) {
      expect(message(() => s.verify(token, undefined)), name).toBe('Token is invalid or expired');
      if (name.includes('header')) expect(() => s.inspect(token), name).toThrow(TokenError);
    }
    // The one header parser: strict UTF-8 JSON, an object; a well-formed one names its key.
    expect(s.inspect(sign(ok)).key.alg).toBe('HS256');
  });

  it('reads user ids as positive Postgres integers only', () => {
    const s = service();
    const claims = (user_id: unknown) => ({ token_type: 'access' as const, exp: 1, iat: 1, jti: 'j', user_id });
    expect(s.userIdOf(claims(42))).toBe(42);
    for (const bad of ['42', 4.2, 0, -1, 2 ** 31, null, undefined, [1]]) {
      expect(message(() => s.userIdOf(claims(bad)))).toBe('Token contained no recognizable user identification');
    }
  });
});
