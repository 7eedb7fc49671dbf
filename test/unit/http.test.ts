import { describe, expect, it } from 'vitest';
import { bearerToken } from '../../app/auth/guard';
import { ApiError } from '../../app/http/errors';
import { charFields } from '../../app/http/fields';
import { thrown } from '../support/thrown';

const apiError = (f: () => unknown) => thrown(f, ApiError);

describe('bearerToken (simplejwt header rules)', () => {
  it('splits on runs of ASCII whitespace', () => {
    expect(bearerToken('Bearer abc', ['Bearer'])).toBe('abc');
    expect(bearerToken(' Bearer \t\n abc  ', ['Bearer'])).toBe('abc');
    expect(bearerToken('JWT abc', ['Bearer', 'JWT'])).toBe('abc');
  });

  it('treats no header or another scheme as no credentials', () => {
    for (const h of ['', '   ', 'bearer abc', 'Basic abc', 'abc']) {
      expect(apiError(() => bearerToken(h, ['Bearer'])).body).toEqual({ detail: 'Authentication credentials were not provided.' });
    }
  });

  it('answers bad_authorization_header for the right scheme with other than one token', () => {
    for (const h of ['Bearer', 'Bearer a b']) {
      expect(apiError(() => bearerToken(h, ['Bearer'])).body).toEqual({
        detail: 'Authorization header must contain two space-delimited values',
        code: 'bad_authorization_header',
      });
    }
  });
});

describe('charFields (DRF CharField)', () => {
  it('trims, and renders numbers as text', () => {
    expect(charFields({ a: '  x ', b: 12 }, ['a', 'b'])).toEqual({ a: 'x', b: '12' });
  });

  it('collects every field error in field order', () => {
    const e = apiError(() => charFields({ b: '', c: null, d: [], e: 'a\0b', f: 'x\ud800' }, ['a', 'b', 'c', 'd', 'e', 'f']));
    expect(e.status).toBe(400);
    expect(e.body).toEqual({
      a: ['This field is required.'],
      b: ['This field may not be blank.'],
      c: ['This field may not be null.'],
      d: ['Not a valid string.'],
      e: ['Null characters are not allowed.'],
      f: ['Surrogate characters are not allowed: U+D800.'],
    });
  });

  it('does not read inherited properties', () => {
    const e = apiError(() => charFields(JSON.parse('{"__proto__": {"a": "x"}}') as Record<string, unknown>, ['a', 'toString']));
    expect(Object.keys(e.body)).toEqual(['a', 'toString']);
  });
});
