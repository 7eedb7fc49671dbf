import { describe, expect, it } from 'vitest';
import { statement } from '../../app/db/statement';

describe('statement (named parameters for hand-written SQL)', () => {
  it('numbers each name once, in the order the text first uses it, and passes the values in that order', () => {
    const s = statement<{ key: string; now: Date; limit: number; unused: string }>((p) => `SELECT ${p.now}, ${p.key} WHERE ${p.key} <> '' AND ${p.limit} > 0 AND ${p.now} IS NOT NULL`);
    expect(s.text).toBe(`SELECT $1, $2 WHERE $2 <> '' AND $3 > 0 AND $1 IS NOT NULL`);
    const now = new Date(0);
    expect(s.values({ key: 'k', now, limit: 5, unused: 'x' })).toEqual([now, 'k', 5]);
  });

  it('offers only the names the parameters declare, also when they extend Record<string, unknown> (type-checked by npm test)', () => {
    interface Params extends Record<string, unknown> {
      key: string;
    }
    const s = statement<Params>((p) => {
      // @ts-expect-error a name the parameters do not declare (a misspelling) does not compile
      const misspelled = p.kye;
      return `SELECT ${p.key}, ${misspelled}`;
    });
    // At run time the builder still numbers any name it is asked for: the type is the guard.
    expect(s.text).toBe('SELECT $2, $1');
  });
});
