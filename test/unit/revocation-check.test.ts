// The guard's revocation check: memory while the feed vouches for it, with no read at all; past the
// feed's bound, the database, each answer kept briefly with one read in flight per key; memory again
// when the database does not answer either.
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createRevocationCheck, LOOKUP_TIMEOUT_MS, LOOKUP_TTL_MS, UNAVAILABLE_BACKOFF_MS, type RevocationLookup } from '../../app/auth/revocation-check';
import { RevocationStore } from '../../app/auth/revocations';
import type { Claims } from '../../app/auth/tokens';
import { createLogger } from '../../app/logger';
import type { UnvouchedSource } from '../../app/metrics/worker';

const T = 1_800_000_000; // seconds
const FAMILY = '0b6c8a8e-6a7c-4f7e-9d55-3c1f2f0c9a01';
const OTHER = '5d2f4e1a-9b8c-4d3e-8f7a-6b5c4d3e2f1a';
const claims = (over: Partial<Claims> = {}): Claims => ({ token_type: 'access', exp: T + 300, iat: T, jti: 'j', sid: FAMILY, ...over });

afterEach(() => {
  vi.useRealTimers();
});

function setup(state: { revoked?: Set<string>; cutoffs?: Map<number, number>; clientCutoffs?: Map<string, number> } = {}) {
  const revoked = state.revoked ?? new Set<string>();
  const cutoffs = state.cutoffs ?? new Map<number, number>();
  const clientCutoffs = state.clientCutoffs ?? new Map<string, number>();
  let now = 0;
  const feed = { live: true, current: () => feed.live };
  const reads: string[] = [];
  let fail: Error | undefined;
  let hang = false;
  const answer = <V>(key: string, value: () => V): Promise<V> => {
    reads.push(key);
    if (hang) return new Promise(() => {});
    return fail ? Promise.reject(fail) : Promise.resolve(value());
  };
  const lookup: RevocationLookup = {
    familyRevoked: (id) => answer(`f:${id}`, () => revoked.has(id)),
    userCutoff: (userId) => answer(`u:${userId}`, () => cutoffs.get(userId)),
    clientCutoff: (clientId) => answer(`c:${clientId}`, () => clientCutoffs.get(clientId)),
  };
  const store = new RevocationStore(600_000, () => T * 1000);
  const logs: string[] = [];
  const logger = createLogger('info', {}, new Writable({ write: (chunk: Buffer, _e, done) => (logs.push(JSON.parse(chunk.toString()).msg), done()) }));
  const counted: UnvouchedSource[] = [];
  const check = createRevocationCheck({ store, feed, lookup, logger, onUnvouched: (s) => counted.push(s), monotonic: () => now });
  return {
    check,
    store,
    feed,
    reads,
    logs,
    counted,
    revoked,
    cutoffs,
    advance: (ms: number) => (now += ms),
    failWith: (err: Error | undefined) => (fail = err),
    hangReads: () => (hang = true),
  };
}

describe('createRevocationCheck', () => {
  it('answers from memory with no read while the feed vouches for it', async () => {
    const t = setup({ revoked: new Set([FAMILY]) }); // the database knows; memory does not
    expect(await t.check.isRevoked(claims(), 1)).toBe(false);
    t.store.revokeFamily(FAMILY);
    expect(await t.check.isRevoked(claims(), 1)).toBe(true);
    expect(t.reads).toEqual([]);
    expect(t.counted).toEqual([]);
  });

  it('past the bound, reads the family and the user cutoff, and keeps what is revoked in memory', async () => {
    const t = setup({ revoked: new Set([FAMILY]), cutoffs: new Map([[2, T + 10]]) });
    t.feed.live = false;
    expect(await t.check.isRevoked(claims(), 1)).toBe(true);
    expect(await t.check.isRevoked(claims({ sid: OTHER }), 1)).toBe(false);
    expect(await t.check.isRevoked(claims({ sid: OTHER }), 2)).toBe(true); // issued before the cutoff
    expect(await t.check.isRevoked(claims({ sid: OTHER, iat: T + 10 }), 2)).toBe(false); // in its second: kept
    expect(t.reads.sort()).toEqual([`f:${FAMILY}`, `f:${OTHER}`, 'u:1', 'u:2'].sort());
    expect(t.counted).toEqual(['database', 'database', 'database', 'database']);
    expect(t.logs.filter((m) => m.includes('checking revocations in the database'))).toHaveLength(1);
    // Memory learned both: once the feed is back, no read is needed to refuse them.
    t.feed.live = true;
    expect(await t.check.isRevoked(claims(), 1)).toBe(true);
    expect(await t.check.isRevoked(claims({ sid: OTHER }), 2)).toBe(true);
    expect(await t.check.isRevoked(claims({ sid: OTHER }), 1)).toBe(false);
    expect(t.reads).toHaveLength(4);
    expect(t.logs.at(-1)).toMatch(/current again/);
  });

  it('keeps an answer for its second, and shares one read in flight per key', async () => {
    const t = setup();
    t.feed.live = false;
    const at = await Promise.all(Array.from({ length: 10 }, () => t.check.isRevoked(claims(), 1)));
    expect(at).toEqual(Array(10).fill(false));
    expect(t.reads).toEqual([`f:${FAMILY}`, 'u:1']);
    t.advance(LOOKUP_TTL_MS - 1);
    expect(await t.check.isRevoked(claims(), 1)).toBe(false);
    expect(t.reads).toHaveLength(2);
    // A logout lands; the second is up: the next check reads again and finds it.
    t.revoked.add(FAMILY);
    t.advance(1);
    expect(await t.check.isRevoked(claims(), 1)).toBe(true);
    expect(t.reads).toEqual([`f:${FAMILY}`, 'u:1', `f:${FAMILY}`, 'u:1']);
  });

  it("checks a machine client's token against its client's cutoff, in memory or past the bound in the database", async () => {
    const t = setup({ clientCutoffs: new Map([['svc', T + 5]]) });
    expect(await t.check.isClientRevoked('svc', T)).toBe(false); // the feed vouches: memory, no read
    expect(t.reads).toEqual([]);
    t.feed.live = false;
    expect(await t.check.isClientRevoked('svc', T)).toBe(true); // issued before the secret was rotated
    expect(await t.check.isClientRevoked('svc', T + 5)).toBe(false); // issued in the cutoff's second or later
    expect(await t.check.isClientRevoked('other', T)).toBe(false);
    expect(t.reads).toEqual(['c:svc', 'c:other']);
    t.feed.live = true;
    expect(await t.check.isClientRevoked('svc', T)).toBe(true); // memory learned it
  });

  it('reads only the user cutoff for a token without a family', async () => {
    const t = setup({ cutoffs: new Map([[1, T + 1]]) });
    t.feed.live = false;
    const { sid: _sid, ...noSid } = claims();
    expect(await t.check.isRevoked(noSid as Claims, 1)).toBe(true);
    expect(t.reads).toEqual(['u:1']);
  });

  it('answers from memory when the database fails too, and asks it again after a moment', async () => {
    const t = setup({ revoked: new Set([FAMILY]) });
    t.feed.live = false;
    t.failWith(new Error('connect ECONNREFUSED'));
    t.store.revokeFamily(OTHER);
    expect(await t.check.isRevoked(claims(), 1)).toBe(false); // what memory knows: not revoked
    expect(await t.check.isRevoked(claims({ sid: OTHER }), 1)).toBe(true); // memory's own revocations stand
    expect(await t.check.isRevoked(claims(), 1)).toBe(false);
    expect(t.reads).toHaveLength(2); // the one failed attempt; then memory, with no read, for a moment
    expect(t.counted).toEqual(['memory', 'memory']);
    expect(t.logs.filter((m) => m.includes('both unreachable'))).toHaveLength(1);
    t.failWith(undefined);
    t.advance(UNAVAILABLE_BACKOFF_MS);
    expect(await t.check.isRevoked(claims(), 1)).toBe(true);
    expect(t.counted.at(-1)).toBe('database');
  });

  it('counts a read that does not answer in time as the database not answering', async () => {
    vi.useFakeTimers();
    const t = setup();
    t.feed.live = false;
    t.hangReads();
    const answer = t.check.isRevoked(claims(), 1);
    await vi.advanceTimersByTimeAsync(LOOKUP_TIMEOUT_MS);
    expect(await answer).toBe(false);
    expect(t.counted).toEqual(['memory']);
  });
});
