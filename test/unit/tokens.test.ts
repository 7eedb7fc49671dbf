import { describe, expect, it } from 'vitest';
import { keySetFromSettings } from '../../app/auth/keys';
import { createTokenService, TokenError } from '../../app/auth/tokens';
import { loadConfig } from '../../app/config';
import { decodeJwt, signHs } from '../support/http';

const KEY = 'unit-test-signing-key-0123456789abcdef';
const T0 = Date.UTC(2026, 0, 1) ;

function service(env: Record<string, string> = {}, now = () => T0) {
  const { config } = loadConfig({ DATABASE_URL: 'postgres://x/y', SIGNING_KEY: KEY, ...env });
  return createTokenService(config.jwt, keySetFromSettings(config.jwt), now);
}
const message = (f: () => unknown) => {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(TokenError);
    return (err as Error).message;
  }
  return 'no error';
};

describe('token service', () => {
  it('signs simplejwt claims in order, with the header {"alg":"HS256","typ":"JWT"}', () => {
    const s = service();
    const { token, jti, expiresAt } = s.sign('access', 7, T0, { sid: 'fam' });
    const { header, payload } = decodeJwt(token);
    expect(header).toEqual({ alg: 'HS256', typ: 'JWT' });
    expect(Object.keys(payload)).toEqual(['token_type', 'exp', 'iat', 'jti', 'user_id', 'sid']);
    expect(payload).toMatchObject({ token_type: 'access', iat: T0 / 1000, exp: T0 / 1000 + 300, jti, user_id: 7, sid: 'fam' });
    expect(expiresAt.getTime()).toBe(T0 + 300_000);
    expect(s.sign('refresh', 7, T0).expiresAt.getTime()).toBe(T0 + 86_400_000);
  });

  it('adds aud and iss when configured, and requires them then', () => {
    const s = service({ AUDIENCE: 'api', ISSUER: 'auth' });
    const { token } = s.sign('access', 1, T0);
    expect(decodeJwt(token).payload).toMatchObject({ aud: 'api', iss: 'auth' });
    expect(s.verify(token, 'access').user_id).toBe(1);
    expect(message(() => s.verify(service().sign('access', 1, T0).token, 'access'))).toBe('Token is invalid or expired');
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
    const iat = T0 / 1000;
    const ok = { token_type: 'access', exp: iat + 300, iat, jti: 'a'.repeat(32), user_id: 1 };
    const sign = (p: object) => signHs(p, KEY);
    const drop = (k: string) => Object.fromEntries(Object.entries(ok).filter(([key]) => key !== k));
    expect(message(() => s.verify(sign(drop('exp')), 'access'))).toBe("Token has no 'exp' claim");
    expect(message(() => s.verify(sign(drop('jti')), 'access'))).toBe('Token has no id');
    expect(message(() => s.verify(sign(drop('token_type')), 'access'))).toBe('Token has no type');
    expect(message(() => s.verify(sign(ok), 'refresh'))).toBe('Token has wrong type');
    expect(message(() => s.verify(sign({ ...ok, token_type: 'other' }), undefined))).toBe('Token has wrong type');
    expect(message(() => s.verify(sign({ ...drop('exp'), jti: undefined }), 'access'))).toBe("Token has no 'exp' claim");
    expect(message(() => s.verify(sign({ ...ok, iat: iat + 5 }), 'access'))).toBe('Token is invalid or expired');
    expect(message(() => s.verify(sign({ ...ok, iat: 'yesterday' }), 'access'))).toBe('Token is invalid or expired');
    expect(message(() => s.verify(sign({ ...ok, exp: String(iat + 300) }), 'access'))).toBe('Token is invalid or expired');
    expect(message(() => s.verify(sign({ ...ok, jti: 'x'.repeat(65) }), 'access'))).toBe('Token is invalid or expired');
    expect(s.verify(sign(ok), undefined).jti).toBe(ok.jti);
  });

  it('refuses other algorithms, none, and a kid it does not know', () => {
    const s = service();
    const iat = T0 / 1000;
    const p = { token_type: 'access', exp: iat + 300, iat, jti: 'a'.repeat(32), user_id: 1 };
    for (const header of [{ alg: 'none', typ: 'JWT' }, { alg: 'HS512', typ: 'JWT' }, { alg: 'HS256', typ: 'JWT', kid: 'other' }]) {
      expect(message(() => s.verify(signHs(p, KEY, header), 'access'))).toBe('Token is invalid or expired');
    }
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
