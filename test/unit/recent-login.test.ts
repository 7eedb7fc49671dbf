// A recent login (auth_time) for listing and ending sessions: the age bound, and tokens without one.
import { describe, expect, it } from 'vitest';
import { isRecentLogin, requireRecentLogin } from '../../app/auth/recent-login';
import { reauthenticationRequired } from '../../app/http/errors';
import type { Claims } from '../../app/auth/tokens';
import { ApiError } from '../../app/http/errors';
import { thrown } from '../support/thrown';

const T = 1_800_000_000; // seconds
// auth_time as a token may carry it: anything, checked by the guard before it gets here.
const claims = (auth_time?: unknown): Claims => ({ token_type: 'access', exp: T + 300, iat: T, jti: 'j', ...(auth_time !== undefined ? { auth_time } : {}) }) as Claims;

describe('recent login', () => {
  it('counts a login at most the age old, to the second', () => {
    expect(isRecentLogin(claims(T - 900), T * 1000, 900)).toBe(true);
    expect(isRecentLogin(claims(T - 900), T * 1000 + 999, 900)).toBe(true); // still the same second
    expect(isRecentLogin(claims(T - 901), T * 1000, 900)).toBe(false);
    expect(isRecentLogin(claims(T), T * 1000, 900)).toBe(true);
  });

  it('counts a token without auth_time, or with one of another type, as an old login', () => {
    for (const odd of [undefined, String(T), null, [T]]) expect(isRecentLogin(claims(odd), T * 1000, 900), String(odd)).toBe(false);
  });

  it('answers 403 reauthentication_required, naming the age', () => {
    const err = thrown(() => requireRecentLogin(claims(), T * 1000, 900), ApiError);
    expect(err.status).toBe(403);
    expect(err.body).toEqual({ detail: 'This needs a login from the last 15 minutes: log in again and retry with the new access token.', code: 'reauthentication_required' });
    expect(reauthenticationRequired(3600).body.detail).toMatch(/from the last hour:/);
    expect(reauthenticationRequired(90).body.detail).toMatch(/from the last 90 seconds:/);
    expect(() => requireRecentLogin(claims(T), T * 1000, 900)).not.toThrow();
  });
});
