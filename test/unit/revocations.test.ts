import { describe, expect, it } from 'vitest';
import { RevocationStore } from '../../app/auth/revocations';
import type { Claims } from '../../app/auth/tokens';

const T = 1_800_000_000; // seconds
const claims = (over: Partial<Claims> = {}): Claims => ({ token_type: 'access', exp: T + 300, iat: T, jti: 'j', sid: 'fam-1', ...over });

describe('RevocationStore', () => {
  it('revokes the access tokens of a revoked family', () => {
    const store = new RevocationStore(300_000, () => T * 1000);
    expect(store.isRevoked(claims(), 1)).toBe(false);
    expect(store.apply(`f:fam-1:${T}.123`)).toBe(true);
    expect(store.isRevoked(claims(), 1)).toBe(true);
    expect(store.isRevoked(claims({ sid: 'fam-2' }), 1)).toBe(false);
  });

  it('voids tokens of a user issued before the cutoff second, not those issued in or after it', () => {
    const store = new RevocationStore(300_000, () => T * 1000);
    store.apply(`u:7:${T}.5`);
    expect(store.isRevoked(claims({ iat: T - 1, sid: undefined }), 7)).toBe(true);
    expect(store.isRevoked(claims({ iat: T, sid: undefined }), 7)).toBe(false);
    expect(store.isRevoked(claims({ iat: T - 1, sid: undefined }), 8)).toBe(false);
    // A token with no iat cannot prove it came after the cutoff.
    expect(store.isRevoked({ ...claims({ sid: undefined }), iat: undefined } as unknown as Claims, 7)).toBe(true);
  });

  it('keeps the latest cutoff', () => {
    const store = new RevocationStore(300_000, () => T * 1000);
    store.apply(`u:7:${T + 100}`);
    store.apply(`u:7:${T}`);
    expect(store.isRevoked(claims({ iat: T + 50 }), 7)).toBe(true);
  });

  it('ignores malformed payloads', () => {
    const store = new RevocationStore(300_000, () => T * 1000);
    for (const p of ['', 'x', 'f::1', 'u:abc:1', 'f:id:NaN', 'z:1:1']) expect(store.apply(p)).toBe(false);
    expect(store.size).toEqual({ families: 0, users: 0 });
  });

  it('forgets entries older than the access token lifetime', () => {
    let now = T * 1000;
    const store = new RevocationStore(300_000, () => now);
    store.apply(`f:old:${T - 400}`);
    store.apply(`f:new:${T - 100}`);
    store.apply(`u:1:${T - 400}`);
    store.apply(`u:2:${T - 100}`);
    store.prune();
    expect(store.size).toEqual({ families: 1, users: 1 });
    now += 300_000;
    store.prune();
    expect(store.size).toEqual({ families: 0, users: 0 });
  });

  it('replaces its state from a snapshot', () => {
    const store = new RevocationStore(300_000, () => T * 1000);
    store.apply('f:gone:1');
    store.replace([['fam-1', T * 1000]], [[3, T]]);
    expect(store.isRevoked(claims({ sid: 'gone' }), 1)).toBe(false);
    expect(store.isRevoked(claims(), 1)).toBe(true);
    expect(store.isRevoked(claims({ sid: undefined, iat: T - 1 }), 3)).toBe(true);
  });
});
