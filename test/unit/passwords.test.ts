import { argon2Sync } from 'node:crypto';
import { fc, test } from '@fast-check/vitest';
import { afterAll, describe, expect, it } from 'vitest';
import { createPasswordHasher, formatArgon2id, HASH_CAPS, HashAborted, HashQueueFull, limiter, OWASP_ARGON2ID, storedHashProblem, summarize, type FloorTimer } from '../../app/auth/passwords';
import { createJsHashWorkers } from '../../app/auth/js-hash-workers';
import { DJANGO_NEVER, DJANGO_VECTORS } from '../support/django-hashes';

// Small parameters keep unit tests quick; the format and logic are the same.
const fast = createPasswordHasher({ memory: 64, passes: 1, parallelism: 1, tagLength: 32, saltLength: 16 });

describe('argon2id (@node-rs/argon2) in PHC form', () => {
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

  // The argon2 the app computes is @node-rs/argon2's; node:crypto's (OpenSSL's) is the oracle here, so
  // a library update that changed a single tag (and locked every user out) fails this first.
  const b64 = (b: Buffer) => b.toString('base64').replace(/=+$/, '');
  const argon2Case = fc.record({
    variant: fc.constantFrom('argon2id', 'argon2i', 'argon2d'),
    password: fc.string({ unit: 'grapheme', maxLength: 40 }),
    salt: fc.uint8Array({ minLength: 8, maxLength: 32 }).map((a) => Buffer.from(a)),
    parallelism: fc.integer({ min: 1, max: 4 }),
    extraMemory: fc.integer({ min: 0, max: 96 }),
    passes: fc.integer({ min: 1, max: 3 }),
    tagLength: fc.integer({ min: 4, max: 64 }),
  });
  test.prop([argon2Case], { numRuns: 60 })('computes the tags node:crypto computes, for generated passwords, salts and parameters', async (c) => {
    const memory = 8 * c.parallelism + c.extraMemory;
    const tag = argon2Sync(c.variant, { message: c.password, nonce: c.salt, memory, passes: c.passes, parallelism: c.parallelism, tagLength: c.tagLength });
    const phc = `$${c.variant}$v=19$m=${memory},t=${c.passes},p=${c.parallelism}$${b64(c.salt)}$${b64(tag)}`;
    expect((await fast.verify(c.password, phc)).ok).toBe(true);
    expect((await fast.verify(`${c.password}x`, phc)).ok).toBe(false);
  });

  it('writes hashes node:crypto verifies', async () => {
    for (const password of ['correct horse', '', 'pässwörd 🔑']) {
      const [, , , params, salt, tag] = (await fast.hash(password)).split('$');
      expect(params).toBe('m=64,t=1,p=1');
      const again = argon2Sync('argon2id', { message: password, nonce: Buffer.from(salt!, 'base64'), memory: 64, passes: 1, parallelism: 1, tagLength: 32 });
      expect(b64(again)).toBe(tag);
    }
  });

  it("verifies the reference implementation's vector (phc-winner-argon2, src/test.c)", async () => {
    // argon2id, t=2, m=65536, p=1, password "password", salt "somesalt".
    const phc = '$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc';
    expect((await fast.verify('password', phc)).ok).toBe(true);
    expect((await fast.verify('passwore', phc)).ok).toBe(false);
  });

  it("verifies the reference implementation's version 1.0 vector (t=2: where 1.0 and 1.3 differ)", async () => {
    // phc-winner-argon2 src/test.c, hashtest(ARGON2_VERSION_10, 2, 16, 1, "password", "somesalt", …, Argon2_i).
    const phc = '$argon2i$m=65536,t=2,p=1$c29tZXNhbHQ$9sTbSlTio3Biev89thdrlKKiCaYsjjYVJxGAL3swxpQ';
    expect(await fast.verify('password', phc)).toEqual({ ok: true, needsRehash: true });
    expect((await fast.verify('passwore', phc)).ok).toBe(false);
  });

  it('refuses malformed or out-of-bounds hashes without throwing', async () => {
    for (const bad of ['', '$argon2id$v=19$m=64,t=1,p=1$short', '$argon2id$v=16$m=64,t=1,p=1$c29tZXNhbHQ$AAAA',
      '$argon2id$v=19$m=99999999,t=1,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc', '!unusable', 'md5$x$y',
      // Parameters argon2 does not allow (the parser refuses them before any hash): a 4-byte salt,
      // m < 8·p, t=0, p=0, a 3-byte tag.
      ...['m=64,t=1,p=1$c2FsdA', 'm=4,t=1,p=1$c29tZXNhbHQ', 'm=64,t=0,p=1$c29tZXNhbHQ', 'm=64,t=1,p=0$c29tZXNhbHQ'].map((x) => `$argon2id$v=19$${x}$${'A'.repeat(43)}`),
      '$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$AAAA']) {
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

describe("every hasher Django ships, against Django's vectors (test/support/django-hashes.ts)", () => {
  // Two slots: bcrypt runs on worker threads, two at once.
  const h = createPasswordHasher({ memory: 64, passes: 1, parallelism: 1, tagLength: 32, saltLength: 16 }, { concurrency: 2 });
  afterAll(() => h.close());

  it.each(DJANGO_VECTORS.map((v) => [v.name, v] as const))('%s', async (_name, v) => {
    expect(await h.verify(v.password, v.encoded)).toEqual({ ok: true, needsRehash: true });
    for (const wrong of v.wrong) expect(await h.verify(wrong, v.encoded), wrong).toEqual({ ok: false, needsRehash: false });
    expect(summarize(v.encoded)).toEqual({ kind: v.kind, weak: v.weak === true, usable: true });
  }, 60_000); // Django's argon2 (100 MiB, t=2, p=8) and bcrypt at 12 rounds take a while on a busy machine

  it.each(DJANGO_NEVER.map((v) => [v.name, v] as const))('never verifies %s', async (_name, v) => {
    expect(await h.verify(v.password, v.encoded)).toEqual({ ok: false, needsRehash: false });
    expect(summarize(v.encoded).usable).toBe(false);
  });

  it('checks bcrypt off the event loop: it keeps turning through a 12-round check', async () => {
    const v = DJANGO_VECTORS.find((x) => x.encoded.startsWith('bcrypt$$2b$12$'))!;
    let turns = 0;
    let spinning = true;
    const spin = () => {
      turns += 1;
      if (spinning) setImmediate(spin);
    };
    spin();
    const r = await h.verify(v.password, v.encoded);
    spinning = false;
    expect(r.ok).toBe(true);
    // bcryptjs on this thread would run 2^12 rounds without yielding (or yield every 100 ms).
    expect(turns).toBeGreaterThan(50);
  }, 60_000);
});

describe('the hashing threads', () => {
  it('run bcrypt on at most `size` threads, start on demand and stop on close', async () => {
    const threads = createJsHashWorkers(2);
    expect(threads.threads()).toBe(0);
    const bcrypts = DJANGO_VECTORS.filter((v) => /^bcrypt\$\$2[ab]\$0[45]\$/.test(v.encoded));
    let peak = 0;
    const results = await Promise.all(
      [...bcrypts, ...bcrypts, ...bcrypts].map(async (v) => {
        const out = threads.bcrypt(v.password, v.encoded.slice('bcrypt$'.length, 'bcrypt$'.length + 29));
        peak = Math.max(peak, threads.threads());
        return (await out) === v.encoded.slice('bcrypt$'.length);
      }),
    );
    expect(results.every(Boolean)).toBe(true);
    expect(peak).toBe(2);
    await expect(threads.bcrypt('x', '$2b$99$' + 'a'.repeat(22))).rejects.toThrow(/password hash thread/);
    await threads.close();
    expect(threads.threads()).toBe(0);
  });
});

describe('weak digests at rest', () => {
  const h = createPasswordHasher({ memory: 64, passes: 1, parallelism: 1, tagLength: 32, saltLength: 16 });

  it('wraps md5/sha1 digests in argon2id for storage; they verify as before and ask for an upgrade', async () => {
    for (const v of DJANGO_VECTORS.filter((x) => x.weak)) {
      const stored = await h.forStorage(v.encoded);
      expect(stored, v.name).toMatch(new RegExp(`^wrapped_${v.kind}\\$[^$]*\\$\\$argon2id\\$v=19\\$m=64,t=1,p=1\\$`));
      // The digest itself is gone: a stolen database yields argon2id, not md5.
      expect(stored).not.toContain(v.encoded.split('$').pop());
      expect(storedHashProblem(stored)).toBeUndefined();
      expect(summarize(stored)).toEqual({ kind: v.kind, weak: true, usable: true });
      expect(await h.verify(v.password, stored), v.name).toEqual({ ok: true, needsRehash: true });
      for (const wrong of v.wrong) expect((await h.verify(wrong, stored)).ok, wrong).toBe(false);
    }
  });

  it('stores every other hash as it is', async () => {
    for (const v of DJANGO_VECTORS.filter((x) => !x.weak)) expect(await h.forStorage(v.encoded)).toBe(v.encoded);
    expect(await h.forStorage('!unusable')).toBe('!unusable');
  });
});

describe('the failure floor (FAILED_LOGIN_MIN_TIME)', () => {
  // A timer the test drives: now() reads a clock the test sets, sleep() records its deadline and waits
  // until the test lets it go. Hashes run for real; time is the test's.
  function driven() {
    let t = 0;
    const sleeps: { deadline: number; release: () => void }[] = [];
    const timer: FloorTimer = {
      now: () => t,
      sleep: (ms, signal) =>
        new Promise<void>((resolve, reject) => {
          sleeps.push({ deadline: t + ms, release: resolve });
          signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
        }),
    };
    return { timer, sleeps, set: (now: number) => void (t = now) };
  }
  const params = { memory: 64, passes: 1, parallelism: 1, tagLength: 32, saltLength: 16 };
  const until = async (check: () => boolean) => {
    while (!check()) await new Promise((resolve) => setTimeout(resolve, 1));
  };

  it('holds every failure, whatever the stored hash, until the floor after its check began; never a success', async () => {
    const { timer, sleeps, set } = driven();
    const h = createPasswordHasher(params, { failureFloorMs: 1000, timer });
    const own = await h.hash('pw');
    const kinds = [own, ...DJANGO_VECTORS.filter((v) => !v.encoded.includes('m=102400')).map((v) => v.encoded), '!unusable', 'crypt$$ab1Hv2Lg7ltQo'];
    for (const [i, encoded] of kinds.entries()) {
      set(10_000 * i); // the check begins now
      const failing = h.verify('not-the-password', encoded);
      await until(() => sleeps.length === i + 1);
      expect(sleeps[i]!.deadline, encoded).toBe(10_000 * i + 1000);
      sleeps[i]!.release();
      expect(await failing).toEqual({ ok: false, needsRehash: false });
    }
    set(0);
    const unknown = h.burn('anything');
    await until(() => sleeps.length === kinds.length + 1);
    expect(sleeps.at(-1)!.deadline).toBe(1000);
    sleeps.at(-1)!.release();
    await unknown;
    // Successes go at once; so does a failure whose check ran past the floor.
    expect(await h.verify('pw', own)).toEqual({ ok: true, needsRehash: false });
    const count = sleeps.length;
    const late = createPasswordHasher(params, { failureFloorMs: 1000, timer: { now: (() => { let n = 0; return () => (n++ % 2 === 0 ? 0 : 1500); })(), sleep: timer.sleep } });
    expect(await late.verify('wrong', own)).toEqual({ ok: false, needsRehash: false });
    expect(sleeps.length).toBe(count);
  }, 60_000);

  it('holds an inactive account\'s right password like a wrong one', async () => {
    const { timer, sleeps } = driven();
    const h = createPasswordHasher(params, { failureFloorMs: 500, timer });
    const own = await h.hash('pw');
    const refused = h.verify('pw', own, { refuse: true });
    await until(() => sleeps.length === 1);
    sleeps[0]!.release();
    expect(await refused).toEqual({ ok: false, needsRehash: false });
  });

  it('waits outside the hashing slot: a held failure does not hold the next check back', async () => {
    const { timer, sleeps } = driven();
    const h = createPasswordHasher(params, { concurrency: 1, failureFloorMs: 1000, timer });
    const own = await h.hash('pw');
    const first = h.verify('wrong', own);
    await until(() => sleeps.length === 1);
    // The first is held; with one slot, the second can only be checked if the hold left it free.
    expect(await h.verify('pw', own)).toEqual({ ok: true, needsRehash: false });
    const second = h.verify('wrong', own);
    await until(() => sleeps.length === 2);
    for (const s of sleeps) s.release();
    await Promise.all([first, second]);
  });

  it('lets go of a held failure whose client has gone', async () => {
    const { timer, sleeps } = driven();
    const h = createPasswordHasher(params, { failureFloorMs: 1000, timer });
    const gone = new AbortController();
    const held = h.verify('wrong', await h.hash('pw'), { signal: gone.signal });
    await until(() => sleeps.length === 1);
    gone.abort();
    expect(await held).toEqual({ ok: false, needsRehash: false });
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

  const bcrypt = (rounds: number) => `bcrypt$$2b$${String(rounds).padStart(2, '0')}$${'a'.repeat(53)}`;
  const scrypt = (n: number, r: number, p: number) => `scrypt$${n}$seasalt$${r}$${p}$${Buffer.alloc(64, 4).toString('base64')}`;
  const argonV10 = (m: number, t: number) => `argon2$argon2i$m=${m},t=${t},p=1$${salt}$${tag}`;

  it('refuses to store hashes above the caps, and keeps Django\'s own defaults', () => {
    const overs = [
      argon(1 << 20, 2, 1), argon(262144, 8, 1), argon(65536, 64, 1), argon(131072, 3, 1), argon(19456, 2, 32),
      pbkdf2(10_000_000), pbkdf2(HASH_CAPS.pbkdf2Iterations + 1),
      bcrypt(HASH_CAPS.bcryptRounds + 1), bcrypt(31), `bcrypt_sha256$${bcrypt(14).slice('bcrypt$'.length)}`,
      scrypt(2 ** 20, 8, 1), scrypt(2 ** 18, 8, 1), scrypt(2 ** 14, 8, 32), scrypt(2 ** 17, 8, 3),
      argonV10(1 << 20, 1), argonV10(131072, 3), `wrapped_md5$seasalt$${argon(1 << 20, 2, 1)}`,
    ];
    for (const over of overs) expect(storedHashProblem(over), over).toMatch(/exceeds? the cap/);
    for (const bad of ['$argon2id$v=19$m=x', 'bcrypt$whatever', 'scrypt$16384$salt$8', 'md5$seasalt$nothex', 'sha1$salt$abc', 'pbkdf2_sha1$x', bcrypt(3)]) {
      expect(storedHashProblem(bad), bad).toMatch(/malformed|exceeds the cap/);
    }
    expect(storedHashProblem(scrypt(1000, 8, 1))).toMatch(/not valid/);
    const fine = [
      argon(102400, 2, 8), `argon2${argon(102400, 2, 8)}`, argon(19456, 2, 1), pbkdf2(1_000_000), pbkdf2(870_000),
      bcrypt(12), bcrypt(HASH_CAPS.bcryptRounds), scrypt(2 ** 14, 8, 5), argonV10(512, 2),
      // Version 1.0 is native too now: the same caps as 1.3.
      argonV10(32768, 1), argonV10(4096, 8), argonV10(131072, 2),
      '!unusable', 'crypt$$ab1Hv2Lg7ltQo', 'lolcat$salt$hash', '',
    ];
    for (const ok of fine) expect(storedHashProblem(ok), ok).toBeUndefined();
    for (const v of DJANGO_VECTORS) expect(storedHashProblem(v.encoded), v.name).toBeUndefined();
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
    expect(await spent(bcrypt(HASH_CAPS.bcryptRounds + 2))).toEqual({ ok: false, hashes: 1 });
    expect(await spent(scrypt(2 ** 20, 8, 1))).toEqual({ ok: false, hashes: 1 });
    for (const malformed of ['$argon2id$v=19$m=x', 'pbkdf2_sha256$x', '!unusable', 'bcrypt$2b$12$abc', '', 'crypt$$ab1Hv2Lg7ltQo']) {
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
