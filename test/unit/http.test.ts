import { describe, expect, it } from 'vitest';
import { bearerToken } from '../../app/auth/guard';
import { ApiError } from '../../app/http/errors';
import { z } from 'zod';
import { charField, choiceField, validated } from '../../app/http/validation';
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

const chars = (...names: string[]) => z.object(Object.fromEntries(names.map((n) => [n, charField])));

describe('validated (zod schemas answering as DRF serializers)', () => {
  it('trims, and renders numbers as text', () => {
    expect(validated(chars('a', 'b'), { a: '  x ', b: 12 })).toEqual({ a: 'x', b: '12' });
  });

  it('collects every field error in field order', () => {
    const e = apiError(() => validated(chars('a', 'b', 'c', 'd', 'e', 'f'), { f: 'x\ud800', e: 'a\0b', d: [], c: null, b: '' }));
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

  it('gives every message of a field, as DRF runs every validator', () => {
    const e = apiError(() => validated(chars('a', 'b'), { a: 'x\0\udc00', b: true }));
    expect(e.body).toEqual({ a: ['Null characters are not allowed.', 'Surrogate characters are not allowed: U+DC00.'], b: ['Not a valid string.'] });
  });

  it('does not read inherited properties', () => {
    const e = apiError(() => validated(chars('a', 'toString'), JSON.parse('{"__proto__": {"a": "x"}}') as Record<string, unknown>));
    expect(e.body).toEqual({ a: ['This field is required.'], toString: ['This field is required.'] });
  });

  it('answers a bad choice in DRF\'s words', () => {
    const e = apiError(() => validated(z.object({ scope: choiceField(['all', 'others']).default('all') }), { scope: 'mine' }));
    expect(e.body).toEqual({ scope: ['"mine" is not a valid choice.'] });
    expect(validated(z.object({ scope: choiceField(['all', 'others']).default('all') }), {})).toEqual({ scope: 'all' });
  });
});
