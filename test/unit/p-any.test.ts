// koa-jwt's p-any is ours (package.json "overrides", vendor/p-any): p-any's API on Promise.any.
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

// The p-any koa-jwt itself loads.
const fromKoaJwt = createRequire(require.resolve('koa-jwt'));
const pAny = fromKoaJwt('p-any') as ((promises: Iterable<Promise<unknown>>) => Promise<unknown>) & { AggregateError: new (...a: never[]) => Error };

describe("koa-jwt's p-any", () => {
  it('is the vendored one', () => {
    expect(fromKoaJwt.resolve('p-any')).toContain(`${path.sep}p-any${path.sep}index.js`);
    expect((fromKoaJwt('p-any/package.json') as { version: string }).version).toMatch(/-kas\./);
  });

  it('resolves with the first fulfilled promise', async () => {
    await expect(pAny([Promise.reject(new Error('no')), Promise.resolve('yes')])).resolves.toBe('yes');
  });

  it('rejects with an AggregateError that koa-jwt can iterate for the first failure', async () => {
    const first = new Error('invalid signature');
    const err = await pAny([Promise.reject(first), Promise.reject(new Error('second'))]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(pAny.AggregateError);
    expect(err).toBeInstanceOf(AggregateError);
    // koa-jwt: `for (const e of err) throw e;`
    expect([...(err as Iterable<Error>)][0]).toBe(first);
  });
});
