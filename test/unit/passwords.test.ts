import { describe, expect, it } from 'vitest';
import { createPasswordHasher, formatArgon2id, HASH_CAPS, HashAborted, HashQueueFull, limiter, OWASP_ARGON2ID, storedHashProblem } from '../../app/auth/passwords';

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

describe('bounded work', () => {
  const salt = Buffer.alloc(16, 1).toString('base64').replace(/=+$/, '');
  const tag = Buffer.alloc(32, 2).toString('base64').replace(/=+$/, '');
  const argon = (m: number, t: number, p: number) => `$argon2id$v=19$m=${m},t=${t},p=${p}$${salt}$${tag}`;
  const pbkdf2 = (n: number) => `pbkdf2_sha256$${n}$salt$${Buffer.alloc(32, 3).toString('base64')}`;

  it('refuses to store hashes above the caps, and keeps Django\'s own defaults', () => {
    for (const over of [argon(1 << 20, 2, 1), argon(262144, 8, 1), argon(65536, 64, 1), argon(131072, 3, 1), argon(19456, 2, 32), pbkdf2(10_000_000), pbkdf2(HASH_CAPS.pbkdf2Iterations + 1)]) {
      expect(storedHashProblem(over), over).toMatch(/exceed the cap/);
    }
    expect(storedHashProblem('$argon2id$v=19$m=x')).toMatch(/malformed/);
    for (const fine of [argon(102400, 2, 8), `argon2${argon(102400, 2, 8)}`, argon(19456, 2, 1), pbkdf2(1_000_000), pbkdf2(870_000), '!unusable', 'bcrypt$whatever']) {
      expect(storedHashProblem(fine), fine).toBeUndefined();
    }
  });

  it('spends at least one hash at the configured cost on every failure, and never runs an over-cap hash', async () => {
    const h = createPasswordHasher({ memory: 64, passes: 1, parallelism: 1, tagLength: 32, saltLength: 16 });
    const spent = async (encoded: string, password = 'pw') => {
      const before = h.computed();
      const r = await h.verify(password, encoded);
      return { ok: r.ok, hashes: h.computed() - before };
    };
    const current = await h.hash('pw');
    expect(await spent(current)).toEqual({ ok: true, hashes: 1 });
    expect(await spent(current, 'wrong')).toEqual({ ok: false, hashes: 1 }); // the check itself is full cost
    expect(await spent(argon(1 << 20, 2, 1))).toEqual({ ok: false, hashes: 1 }); // never run: the burn only
    expect(await spent(pbkdf2(10_000_000))).toEqual({ ok: false, hashes: 1 });
    for (const malformed of ['$argon2id$v=19$m=x', 'pbkdf2_sha256$x', '!unusable', 'bcrypt$2b$12$abc', '']) {
      expect(await spent(malformed), malformed).toEqual({ ok: false, hashes: 1 });
    }
    // A cheaper hash than the configured one (a legacy import) fails slower than itself: + a burn.
    expect(await spent(argon(8, 1, 1))).toEqual({ ok: false, hashes: 2 });
    expect(await spent(pbkdf2(1000))).toEqual({ ok: false, hashes: 2 });
  });

  it('always runs hashes at the configured parameters, even above the caps', async () => {
    const heavy = { memory: 8 * 17, passes: 1, parallelism: 17, tagLength: 32, saltLength: 16 }; // p over the cap, yet quick
    const h = createPasswordHasher(heavy);
    const stored = await h.hash('pw');
    expect(storedHashProblem(stored)).toMatch(/exceed the cap/); // not importable
    const before = h.computed();
    expect(await h.verify('pw', stored)).toEqual({ ok: true, needsRehash: false });
    await h.burn('x');
    expect(h.computed() - before).toBe(2);
  });
});

describe('the hashing queue', () => {
  it('refuses work beyond its length at once, and drops waiting work whose client has gone', async () => {
    const run = limiter(1, 2);
    let release!: () => void;
    const ran: number[] = [];
    const first = run(async () => {
      ran.push(0);
      await new Promise<void>((resolve) => (release = resolve));
    });
    const gone = new AbortController();
    const second = run(async () => void ran.push(1), gone.signal);
    const third = run(async () => void ran.push(2));
    await expect(run(async () => void ran.push(3))).rejects.toBeInstanceOf(HashQueueFull);
    gone.abort();
    await expect(second).rejects.toBeInstanceOf(HashAborted);
    const fourth = run(async () => void ran.push(4)); // the freed place in line is usable
    release();
    await Promise.all([first, third, fourth]);
    expect(ran).toEqual([0, 2, 4]);
    const aborted = new AbortController();
    aborted.abort();
    await expect(run(async () => void ran.push(5), aborted.signal)).rejects.toBeInstanceOf(HashAborted);
  });
});
