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

  it('keeps each entry for the window from when it learned of it, on its own clock', () => {
    let now = T * 1000;
    const store = new RevocationStore(300_000, () => now);
    store.apply(`f:old:${T}`);
    store.apply(`u:1:${T}`);
    now += 200_000;
    // Stamped 10 minutes ago by a clock that runs behind (an operator's SQL, the database's clock):
    // still kept for the whole window, since a token it stops may have been issued by a clock ahead.
    store.apply(`f:new:${T - 600}`);
    store.apply(`u:2:${T - 600}`);
    store.prune();
    expect(store.size).toEqual({ families: 2, users: 2 });
    now += 100_001;
    store.prune();
    expect(store.size).toEqual({ families: 1, users: 1 });
    expect(store.isRevoked(claims({ sid: 'new' }), 9)).toBe(true);
    now += 200_000;
    store.prune();
    expect(store.size).toEqual({ families: 0, users: 0 });
  });

  it('replaces its state from a snapshot', () => {
    const store = new RevocationStore(300_000, () => T * 1000);
    store.apply('f:gone:1');
    store.replace(['fam-1'], [[3, T]]);
    expect(store.isRevoked(claims({ sid: 'gone' }), 1)).toBe(false);
    expect(store.isRevoked(claims(), 1)).toBe(true);
    expect(store.isRevoked(claims({ sid: undefined, iat: T - 1 }), 3)).toBe(true);
  });
});
