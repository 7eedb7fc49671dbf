// Password hashing: argon2id in PHC string form, and verification of every hash Django writes
// (app/auth/hash-formats.ts), so users exported from Django keep working and are upgraded to argon2id
// on their next successful login. Argon2 (both versions) is @node-rs/argon2's, called on libuv's
// threads: the same tags as node:crypto's (OpenSSL's) in about half the CPU on this project's machines,
// and version 1.0 besides (docs/PERFORMANCE.md, "The hash itself"). A hash with p > 1 (Django's
// p=8) runs its lanes on the library's own threads, up to one per core.
//
// Failed logins all cost the same (issue 15, item 5). Each check runs in one hashing slot: the stored
// hash, then, when that cost less than a configured argon2id (a legacy or weaker hash, a malformed or
// over-cap one, an unknown user), one configured argon2id besides; and a failure is not answered
// before FAILED_LOGIN_MIN_TIME has passed since its slot began. The floor is a timer, not work: it
// costs no CPU and covers the slowest hash that may be stored (HASH_CAPS) with room, so an imported
// pbkdf2_sha256 at 870,000 iterations, Django's argon2 (m=100 MiB, p=8) and bcrypt fail in the same
// time as an unknown username or one of our own hashes. Successes are not held: they are told apart
// anyway. The weakest imports, one fast digest (md5, sha1, unsalted_*), are wrapped in argon2id at
// import (hasher.forStorage), so the database never holds them bare.
import { createHash, pbkdf2, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Algorithm, hashRaw, Version } from '@node-rs/argon2';
import {
  formatWrapped,
  overArgon2Caps,
  overCaps,
  parseArgon2,
  parseStored,
  weakDigest,
  type Argon2Variant,
  type ParsedArgon2,
  type StoredHash,
} from './hash-formats';
import { createJsHashWorkers } from './js-hash-workers';

export { HASH_CAPS, storedHashProblem, summarize, type HashSummary } from './hash-formats';

const pbkdf2Async = promisify(pbkdf2);
const scryptAsync = promisify<string | Buffer, string | Buffer, number, ScryptOptions, Buffer>(scrypt);

export interface Argon2Params {
  memory: number; // KiB
  passes: number;
  parallelism: number;
  tagLength: number; // bytes
  saltLength: number; // bytes
}

// OWASP Password Storage Cheat Sheet, argon2id option 2: m=19 MiB, t=2, p=1.
export const OWASP_ARGON2ID: Readonly<Argon2Params> = { memory: 19456, passes: 2, parallelism: 1, tagLength: 32, saltLength: 16 };

export interface VerifyResult {
  ok: boolean;
  /** The hash is valid but not in the current format or parameters: store a fresh one. */
  needsRehash: boolean;
}

const b64 = (buf: Buffer) => buf.toString('base64').replace(/=+$/, '');

export function formatArgon2id(params: Argon2Params, salt: Buffer, hash: Buffer): string {
  return `$argon2id$v=19$m=${params.memory},t=${params.passes},p=${params.parallelism}$${b64(salt)}$${b64(hash)}`;
}

const ALGORITHMS: Readonly<Record<Argon2Variant, Algorithm>> = { argon2d: Algorithm.Argon2d, argon2i: Algorithm.Argon2i, argon2id: Algorithm.Argon2id };

function argon2Of(variant: Argon2Variant, message: Buffer, salt: Buffer, p: Omit<Argon2Params, 'saltLength'>, version: 0x10 | 0x13 = 0x13): Promise<Buffer> {
  return hashRaw(message, {
    algorithm: ALGORITHMS[variant],
    version: version === 0x13 ? Version.V0x13 : Version.V0x10,
    salt,
    memoryCost: p.memory,
    timeCost: p.passes,
    parallelism: p.parallelism,
    outputLen: p.tagLength,
  });
}

function safeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

const utf8 = (s: string) => Buffer.from(s, 'utf8');

/** The hashing queue is full: the caller should answer 503 and ask the client to come back. */
export class HashQueueFull extends Error {
  override name = 'HashQueueFull';
}

/** The client went away while its hash waited: the hash was never run. */
export class HashAborted extends Error {
  override name = 'HashAborted';
}

/**
 * At most `limit` of the wrapped calls at once; at most `maxWaiting` more wait in line (HashQueueFull
 * beyond that); a waiting call whose signal aborts leaves the line without running. Hashes are CPU-
 * and memory-bound: running more at once than there are cores only makes each slower and the
 * process larger (19 MiB per argon2id hash in flight), and a line longer than a few seconds' work
 * only serves clients that have given up.
 */
export function limiter(limit: number, maxWaiting = Infinity) {
  let running = 0;
  const waiting: { start: () => void; signal: AbortSignal | undefined }[] = [];
  const run = async function run<T>(task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw new HashAborted();
    if (running >= limit) {
      if (waiting.length >= maxWaiting) throw new HashQueueFull();
      await new Promise<void>((resolve, reject) => {
        const entry = { start: resolve, signal };
        waiting.push(entry);
        signal?.addEventListener(
          'abort',
          () => {
            const i = waiting.indexOf(entry);
            if (i >= 0) {
              waiting.splice(i, 1);
              reject(new HashAborted());
            }
          },
          { once: true },
        );
      });
    } else {
      running += 1;
    }
    try {
      return await task();
    } finally {
      const next = waiting.shift();
      if (next) next.start();
      else running -= 1;
    }
  };
  return Object.assign(run, { waiting: () => waiting.length });
}

export interface VerifyOptions {
  /** Aborts a check still waiting for its slot (the client went away): HashAborted. */
  signal?: AbortSignal | undefined;
  /** The answer is a failure whatever the password (an inactive account): checked, burnt and held alike. */
  refuse?: boolean;
}

export interface PasswordHasher {
  readonly params: Readonly<Argon2Params>;
  hash(password: string): Promise<string>;
  /**
   * Checks a password against a stored hash. A failure always costs at least one hash at the
   * configured parameters, whatever the reason (a wrong password, a cheaper legacy hash, a malformed,
   * capped or unsupported one), and is answered no sooner than the failure floor after its check
   * began, so timing does not tell them apart. Over-cap hashes are never run. May throw
   * HashQueueFull, or HashAborted when the signal aborts while the check waits for a slot.
   */
  verify(password: string, encoded: string, options?: VerifyOptions): Promise<VerifyResult>;
  /** Spends the time of one failed verification, for logins of unknown users. */
  burn(password: string, signal?: AbortSignal): Promise<void>;
  /** The form an imported hash is stored in: a weak digest wrapped in argon2id, any other as it is. */
  forStorage(encoded: string): Promise<string>;
  /** How many hashes this process has computed: for tests and metrics. */
  computed(): number;
  /** How many checks wait for a slot now. */
  queued(): number;
  /** Stops the hashing threads (bcrypt runs on worker threads). */
  close(): Promise<void>;
}

/** The monotonic clock and the wait the failure floor uses; tests inject their own. */
export interface FloorTimer {
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

const realTimer: FloorTimer = {
  now: () => performance.now(),
  sleep: (ms, signal) => sleep(ms, undefined, signal ? { signal } : {}),
};

export interface HasherOptions {
  /** Hashes run at once (PASSWORD_HASH_CONCURRENCY). */
  concurrency?: number;
  /** Hashes that may wait for a slot (PASSWORD_HASH_QUEUE); more are refused with HashQueueFull. */
  queueLimit?: number;
  /** FAILED_LOGIN_MIN_TIME in milliseconds: no failure is answered sooner after its check began. 0: off. */
  failureFloorMs?: number;
  timer?: FloorTimer;
}

interface Checked extends VerifyResult {
  /** Whether the check cost at least a hash at the configured parameters. */
  fullCost: boolean;
}

const failed = (fullCost: boolean): Checked => ({ ok: false, needsRehash: false, fullCost });

export function createPasswordHasher(params: Readonly<Argon2Params> = OWASP_ARGON2ID, options: HasherOptions = {}): PasswordHasher {
  const concurrency = options.concurrency ?? 1;
  const limited = limiter(concurrency, options.queueLimit ?? Infinity);
  const threads = createJsHashWorkers(concurrency);
  const timer = options.timer ?? realTimer;
  const floorMs = options.failureFloorMs ?? 0;
  let computed = 0;
  // Every hash computed, counted: the checks' slot is taken once around all of a check's hashes.
  const counted = <T>(work: T): T => {
    computed += 1;
    return work;
  };
  const configuredWork = params.memory * params.passes;

  async function hash(password: string): Promise<string> {
    const salt = randomBytes(params.saltLength);
    return formatArgon2id(params, salt, await limited(() => counted(argon2Of('argon2id', utf8(password), salt, params))));
  }

  // The hash burn() checks against: made once, outside the queue (a full queue must not poison it).
  let dummy: Promise<string> | undefined;
  function dummyHash(): Promise<string> {
    if (!dummy) {
      const salt = randomBytes(params.saltLength);
      dummy = argon2Of('argon2id', randomBytes(16), salt, params).then((h) => formatArgon2id(params, salt, h));
      dummy.catch(() => (dummy = undefined));
    }
    return dummy;
  }

  // The configured parameters are trusted even above the caps (an operator's choice); the caps bound
  // what a stored hash may ask beyond them.
  const argon2OverCaps = (p: ParsedArgon2) =>
    overArgon2Caps(p) && (p.memory > params.memory || p.memory * p.passes > configuredWork || p.parallelism > params.parallelism);

  /** Whether `message` hashes to `p` (argon2 of either version); the second: it cost a configured hash at least. */
  async function argon2Matches(message: Buffer, p: ParsedArgon2): Promise<[boolean, boolean]> {
    const tagged = { memory: p.memory, passes: p.passes, parallelism: p.parallelism, tagLength: p.hash.length };
    const computedHash = await counted(argon2Of(p.variant, message, p.salt, tagged, p.version));
    // Either version costs what its m×t says (both native), so either can be the configured hash's worth.
    return [safeEqual(computedHash, p.hash), p.memory * p.passes >= configuredWork];
  }

  // One stored hash against one password, without the slot (the caller holds it).
  async function check(password: string, s: StoredHash): Promise<Checked> {
    switch (s.kind) {
      case 'argon2': {
        if (argon2OverCaps(s.p)) return failed(false);
        const [ok, fullCost] = await argon2Matches(utf8(password), s.p);
        const current =
          !s.django &&
          s.p.variant === 'argon2id' &&
          s.p.version === 0x13 &&
          s.p.memory === params.memory &&
          s.p.passes === params.passes &&
          s.p.parallelism === params.parallelism &&
          s.p.hash.length === params.tagLength &&
          s.p.salt.length === params.saltLength;
        return { ok, needsRehash: ok && !current, fullCost };
      }
      case 'wrapped': {
        if (argon2OverCaps(s.p)) return failed(false);
        const digest = counted(weakDigest(s.inner, s.salt, password));
        const [ok, fullCost] = await argon2Matches(Buffer.from(digest, 'ascii'), s.p);
        return { ok, needsRehash: ok, fullCost };
      }
      default:
        // Another algorithm: its cost is not comparable with argon2's, so a failure burns as well.
        if (overCaps(s) !== undefined) return failed(false);
        return { ...(await checkLegacy(password, s)), fullCost: false };
    }
  }

  async function checkLegacy(password: string, s: StoredHash): Promise<VerifyResult> {
    let ok: boolean;
    switch (s.kind) {
      case 'pbkdf2_sha256':
      case 'pbkdf2_sha1': {
        // Django: pbkdf2(password, salt, iterations) with dklen the digest's size, base64.
        const digest = s.kind === 'pbkdf2_sha256' ? 'sha256' : 'sha1';
        const keylen = digest === 'sha256' ? 32 : 20;
        ok = safeEqual(await counted(pbkdf2Async(utf8(password), utf8(s.salt), s.iterations, keylen, digest)), s.hash);
        break;
      }
      case 'bcrypt':
      case 'bcrypt_sha256': {
        // Django's BCryptSHA256PasswordHasher hashes the password first, so bcrypt's 72-byte limit
        // does not cut it: bcrypt over the hex of its SHA-256 (every Django version since 1.6).
        const input = s.kind === 'bcrypt_sha256' ? createHash('sha256').update(password, 'utf8').digest('hex') : password;
        ok = safeEqual(Buffer.from(await counted(threads.bcrypt(input, s.data.slice(0, 29))), 'ascii'), Buffer.from(s.data, 'ascii'));
        break;
      }
      case 'scrypt': {
        // Django: hashlib.scrypt(password, salt, n, r, p, dklen=64), base64. Within the caps the
        // memory is at most 128 MiB; node's default bound (32 MiB) is raised to fit.
        const maxmem = 2 * 128 * s.n * s.r + 16 * 1024 * 1024;
        ok = safeEqual(await counted(scryptAsync(utf8(password), utf8(s.salt), 64, { N: s.n, r: s.r, p: s.p, maxmem })), s.hash);
        break;
      }
      case 'md5':
      case 'sha1':
      case 'unsalted_md5':
      case 'unsalted_sha1':
        ok = safeEqual(Buffer.from(counted(weakDigest(s.kind, s.salt, password)), 'ascii'), Buffer.from(s.hex, 'ascii'));
        break;
      default:
        // Django's unusable passwords ("!…"), malformed hashes and formats we do not support never verify.
        return { ok: false, needsRehash: false };
    }
    return { ok, needsRehash: ok };
  }

  /** Holds a failure until the floor: `began` is when its check took its slot. */
  async function hold(began: number, signal: AbortSignal | undefined): Promise<void> {
    const wait = began + floorMs - timer.now();
    if (floorMs <= 0 || wait <= 0) return;
    try {
      await timer.sleep(wait, signal);
    } catch (err) {
      if (!signal?.aborted) throw err; // the client has gone: nobody waits for the answer
    }
  }

  async function burnInSlot(password: string, dummyPhc: string): Promise<void> {
    await argon2Matches(utf8(password), parseArgon2(dummyPhc)!);
  }

  async function verify(password: string, encoded: string, options: VerifyOptions = {}): Promise<VerifyResult> {
    const stored = parseStored(encoded);
    const dummyPhc = await dummyHash();
    let began = 0;
    const checked = await limited(async () => {
      began = timer.now();
      const c = await check(password, stored);
      if ((!c.ok || options.refuse) && !c.fullCost) await burnInSlot(password, dummyPhc);
      return c;
    }, options.signal);
    const ok = checked.ok && !options.refuse;
    if (!ok) await hold(began, options.signal);
    return { ok, needsRehash: ok && checked.needsRehash };
  }

  async function burn(password: string, signal?: AbortSignal): Promise<void> {
    const dummyPhc = await dummyHash();
    let began = 0;
    await limited(async () => {
      began = timer.now();
      await burnInSlot(password, dummyPhc);
    }, signal);
    await hold(began, signal);
  }

  async function forStorage(encoded: string): Promise<string> {
    const s = parseStored(encoded);
    if (s.kind !== 'md5' && s.kind !== 'sha1' && s.kind !== 'unsalted_md5' && s.kind !== 'unsalted_sha1') return encoded;
    // argon2id over the digest's hex, at the configured parameters: a stolen database yields no md5.
    const salt = randomBytes(params.saltLength);
    const tag = await limited(() => counted(argon2Of('argon2id', Buffer.from(s.hex, 'ascii'), salt, params)));
    return formatWrapped(s.kind, s.salt, formatArgon2id(params, salt, tag));
  }

  return { params, hash, verify, burn, forStorage, computed: () => computed, queued: limited.waiting, close: () => threads.close() };
}
