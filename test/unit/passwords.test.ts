import { describe, expect, it } from 'vitest';
import { createPasswordHasher, formatArgon2id, limiter, OWASP_ARGON2ID } from '../../app/auth/passwords';

// Small parameters keep unit tests quick; the format and logic are the same.
const fast = createPasswordHasher({ memory: 64, passes: 1, parallelism: 1, tagLength: 32, saltLength: 16 });

describe('argon2id (node:crypto) in PHC form', () => {
  it('hashes to a PHC string that verifies, and rejects a wrong password', async () => {
    const hash = await fast.hash('correct horse');
    expect(hash).toMatch(/^\$argon2id\$v=19\$m=64,t=1,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
    expect(await fast.verify('correct horse', hash)).toEqual({ ok: true, needsRehash: false });
    expect(await fast.verify('correct horsf', hash)).toEqual({ ok: false, needsRehash: false });
  });

  it('uses a fresh salt for every hash', async () => {
    expect(await fast.hash('same')).not.toBe(await fast.hash('same'));
  });

  it('uses the OWASP parameters by default', async () => {
    const hash = await createPasswordHasher().hash('x');
    expect(hash.startsWith('$argon2id$v=19$m=19456,t=2,p=1$')).toBe(true);
    expect(OWASP_ARGON2ID).toMatchObject({ memory: 19456, passes: 2, parallelism: 1 });
  });

  it('asks for a rehash when a hash has other parameters than the current ones', async () => {
    const old = await createPasswordHasher({ ...OWASP_ARGON2ID, memory: 32, passes: 1 }).hash('pw');
    expect(await fast.verify('pw', old)).toEqual({ ok: true, needsRehash: true });
  });

  it("verifies the reference implementation's vector (phc-winner-argon2, src/test.c)", async () => {
    // argon2id, t=2, m=65536, p=1, password "password", salt "somesalt".
    const phc = '$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc';
    expect((await fast.verify('password', phc)).ok).toBe(true);
    expect((await fast.verify('passwore', phc)).ok).toBe(false);
  });

  it('refuses malformed or out-of-bounds hashes without throwing', async () => {
    for (const bad of ['', '$argon2id$v=19$m=64,t=1,p=1$short', '$argon2id$v=16$m=64,t=1,p=1$c29tZXNhbHQ$AAAA',
      '$argon2id$v=19$m=99999999,t=1,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc', '!unusable', 'md5$x$y']) {
      expect((await fast.verify('password', bad)).ok).toBe(false);
    }
  });

  it('formats PHC strings without base64 padding', () => {
    const s = formatArgon2id(OWASP_ARGON2ID, Buffer.alloc(16, 1), Buffer.alloc(32, 2));
    expect(s.split('$').slice(4)).toEqual(['AQEBAQEBAQEBAQEBAQEBAQ', 'AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI']);
  });
});

describe('Django hashes', () => {
  it('verifies Django pbkdf2_sha256 (the vector from Django test_hashers) and asks for an upgrade', async () => {
    const django = 'pbkdf2_sha256$870000$seasalt$wJSpLMQRQz0Dhj/pFpbyjMj71B2gUYp6HJS5AU+32Ac=';
    expect(await fast.verify('lètmein', django)).toEqual({ ok: true, needsRehash: true });
    expect(await fast.verify('lètmeinz', django)).toEqual({ ok: false, needsRehash: false });
  });

  it('verifies Django pbkdf2_sha1', async () => {
    // Django's PBKDF2SHA1PasswordHasher: pbkdf2_sha1$<iterations>$<salt>$<base64 of 20 bytes>.
    const { pbkdf2Sync } = await import('node:crypto');
    const encoded = `pbkdf2_sha1$1000$salty$${pbkdf2Sync('pw', 'salty', 1000, 20, 'sha1').toString('base64')}`;
    expect(await fast.verify('pw', encoded)).toEqual({ ok: true, needsRehash: true });
  });

  it("verifies Django's argon2 format (\"argon2\" + PHC) and asks for an upgrade", async () => {
    const phc = '$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc';
    expect(await fast.verify('password', `argon2${phc}`)).toEqual({ ok: true, needsRehash: true });
  });

  it('never verifies an unusable password', async () => {
    expect((await fast.verify('', '!abcdef'))).toEqual({ ok: false, needsRehash: false });
  });
});

describe('the hashing limiter', () => {
  it('runs at most `limit` tasks at once, in arrival order, and survives failures', async () => {
    const run = limiter(2);
    let running = 0;
    let peak = 0;
    const order: number[] = [];
    const releases: (() => void)[] = [];
    const task = (i: number, fail = false) =>
      run(async () => {
        running += 1;
        peak = Math.max(peak, running);
        order.push(i);
        await new Promise<void>((resolve) => releases.push(resolve));
        running -= 1;
        if (fail) throw new Error('boom');
        return i;
      });
    const settled = Promise.allSettled([task(0), task(1, true), task(2), task(3)]);
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 0));
      releases.shift()?.();
    }
    const results = await settled;
    expect(peak).toBe(2);
    expect(order).toEqual([0, 1, 2, 3]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
  });
});
