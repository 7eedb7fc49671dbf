// Password hashing: argon2id from node:crypto in PHC string form, and verification of the hashes
// Django writes (pbkdf2_sha256, pbkdf2_sha1, argon2) so users exported from Django keep working and
// are upgraded to argon2id on their next successful login.
import { argon2, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';

const argon2Async = promisify(argon2);
const pbkdf2Async = promisify(pbkdf2);

export interface Argon2Params {
  memory: number; // KiB
  passes: number;
  parallelism: number;
  tagLength: number; // bytes
  saltLength: number; // bytes
}

// OWASP Password Storage Cheat Sheet, argon2id option 2: m=19 MiB, t=2, p=1.
export const OWASP_ARGON2ID: Readonly<Argon2Params> = { memory: 19456, passes: 2, parallelism: 1, tagLength: 32, saltLength: 16 };

// What a stored hash may ask of a login at most, so a corrupt or hostile import cannot make a login
// allocate a gigabyte or spin for seconds. Django's own hashes stay inside: argon2-cffi's defaults
// (m=100 MiB, t=2, p=8) and pbkdf2_sha256 at Django 5.2's 1,000,000 iterations. At the cap an
// argon2 hash takes about 8× the configured one's time here (m=128 MiB, t=2: scripts/bench/hash-rate.js).
export const HASH_CAPS = {
  argon2MemoryKiB: 128 * 1024,
  /** memory × passes, in KiB: the work of t=2 at the memory cap. */
  argon2Work: 2 * 128 * 1024,
  argon2Parallelism: 16,
  pbkdf2Iterations: 2_000_000,
} as const;

export interface VerifyResult {
  ok: boolean;
  /** The hash is valid but not in the current format or parameters: store a fresh one. */
  needsRehash: boolean;
}

type Argon2Variant = 'argon2id' | 'argon2i' | 'argon2d';

interface ParsedArgon2 {
  variant: Argon2Variant;
  memory: number;
  passes: number;
  parallelism: number;
  salt: Buffer;
  hash: Buffer;
}

const b64 = (buf: Buffer) => buf.toString('base64').replace(/=+$/, '');

export function formatArgon2id(params: Argon2Params, salt: Buffer, hash: Buffer): string {
  return `$argon2id$v=19$m=${params.memory},t=${params.passes},p=${params.parallelism}$${b64(salt)}$${b64(hash)}`;
}

function parseArgon2(phc: string): ParsedArgon2 | null {
  const m = /^\$(argon2id|argon2i|argon2d)\$v=19\$m=(\d{1,8}),t=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/.exec(phc);
  if (!m) return null;
  const [, variant, memory, passes, parallelism, salt, hash] = m;
  const parsed: ParsedArgon2 = {
    variant: variant as Argon2Variant,
    memory: Number(memory),
    passes: Number(passes),
    parallelism: Number(parallelism),
    salt: Buffer.from(salt!, 'base64'),
    hash: Buffer.from(hash!, 'base64'),
  };
  const valid =
    parsed.parallelism >= 1 &&
    parsed.memory >= 8 * parsed.parallelism &&
    parsed.passes >= 1 &&
    parsed.salt.length >= 8 &&
    parsed.hash.length >= 4;
  return valid ? parsed : null;
}

const overArgon2Caps = (p: { memory: number; passes: number; parallelism: number }) =>
  p.memory > HASH_CAPS.argon2MemoryKiB || p.memory * p.passes > HASH_CAPS.argon2Work || p.parallelism > HASH_CAPS.argon2Parallelism;

const PBKDF2 = /^pbkdf2_(sha256|sha1)\$(\d{1,9})\$([^$]*)\$([A-Za-z0-9+/]+={0,2})$/;

/**
 * Why a stored hash must not be imported: it asks for more work than HASH_CAPS allows, or it claims
 * a supported format and does not parse. Undefined when it may be stored (including formats we never
 * verify, such as Django's unusable "!…" passwords: they simply never match).
 */
export function storedHashProblem(encoded: string): string | undefined {
  const phc = encoded.startsWith('argon2$argon2') ? encoded.slice('argon2'.length) : encoded;
  if (phc.startsWith('$argon2')) {
    const p = parseArgon2(phc);
    if (!p) return 'a malformed argon2 hash';
    if (overArgon2Caps(p)) {
      return `argon2 parameters m=${p.memory},t=${p.passes},p=${p.parallelism} exceed the cap (m ≤ ${HASH_CAPS.argon2MemoryKiB}, m×t ≤ ${HASH_CAPS.argon2Work}, p ≤ ${HASH_CAPS.argon2Parallelism})`;
    }
    return undefined;
  }
  if (encoded.startsWith('pbkdf2_')) {
    const m = PBKDF2.exec(encoded);
    if (!m) return 'a malformed pbkdf2 hash';
    const n = Number(m[2]);
    if (n < 1 || n > HASH_CAPS.pbkdf2Iterations) return `${n} pbkdf2 iterations exceed the cap (${HASH_CAPS.pbkdf2Iterations})`;
  }
  return undefined;
}

async function argon2Unlimited(variant: Argon2Variant, password: string, salt: Buffer, p: Omit<Argon2Params, 'saltLength'>) {
  return argon2Async(variant, {
    message: Buffer.from(password, 'utf8'),
    nonce: salt,
    memory: p.memory,
    passes: p.passes,
    parallelism: p.parallelism,
    tagLength: p.tagLength,
  });
}

function safeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

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

export interface PasswordHasher {
  readonly params: Readonly<Argon2Params>;
  hash(password: string): Promise<string>;
  /**
   * Checks a password against a stored hash. A failure always costs at least one hash at the
   * configured parameters, whatever the reason (a wrong password, a cheaper legacy hash, a malformed,
   * capped or unsupported one), so timing does not tell them apart. Over-cap hashes are never run.
   * May throw HashQueueFull, or HashAborted when `signal` aborts while the hash waits.
   */
  verify(password: string, encoded: string, signal?: AbortSignal): Promise<VerifyResult>;
  /** Spends the time of one verification against a dummy hash, for logins of unknown users. */
  burn(password: string, signal?: AbortSignal): Promise<void>;
  /** How many hashes this process has computed: for tests and metrics. */
  computed(): number;
  /** How many hashes wait for a slot now. */
  queued(): number;
}

export interface HasherOptions {
  /** Hashes run at once (PASSWORD_HASH_CONCURRENCY). */
  concurrency?: number;
  /** Hashes that may wait for a slot (PASSWORD_HASH_QUEUE); more are refused with HashQueueFull. */
  queueLimit?: number;
}

interface Checked extends VerifyResult {
  /** Whether the check cost at least a hash at the configured parameters. */
  fullCost: boolean;
}

const failed = (fullCost: boolean): Checked => ({ ok: false, needsRehash: false, fullCost });

export function createPasswordHasher(params: Readonly<Argon2Params> = OWASP_ARGON2ID, options: HasherOptions = {}): PasswordHasher {
  const limited = limiter(options.concurrency ?? 1, options.queueLimit ?? Infinity);
  let computed = 0;
  const counted = <T>(work: () => Promise<T>) => () => {
    computed += 1;
    return work();
  };
  const argon2Raw = (signal: AbortSignal | undefined, ...args: Parameters<typeof argon2Unlimited>) =>
    limited(counted(() => argon2Unlimited(...args)), signal);
  const pbkdf2Limited = (signal: AbortSignal | undefined, ...args: Parameters<typeof pbkdf2Async>) =>
    limited(counted(() => pbkdf2Async(...args)), signal);
  const configuredWork = params.memory * params.passes;

  async function hash(password: string): Promise<string> {
    const salt = randomBytes(params.saltLength);
    return formatArgon2id(params, salt, await argon2Raw(undefined, 'argon2id', password, salt, params));
  }

  // The hash burn() checks against: made once, outside the queue (a full queue must not poison it).
  let dummy: Promise<string> | undefined;
  function dummyHash(): Promise<string> {
    if (!dummy) {
      const salt = randomBytes(params.saltLength);
      dummy = argon2Unlimited('argon2id', randomBytes(16).toString('hex'), salt, params).then((h) => formatArgon2id(params, salt, h));
      dummy.catch(() => (dummy = undefined));
    }
    return dummy;
  }

  // The configured parameters are trusted even above the caps (an operator's choice); the caps bound
  // what a stored hash may ask beyond them.
  const overCaps = (p: ParsedArgon2) =>
    overArgon2Caps(p) && (p.memory > params.memory || p.memory * p.passes > configuredWork || p.parallelism > params.parallelism);

  async function checkArgon2(password: string, phc: string, signal: AbortSignal | undefined): Promise<Checked> {
    const p = parseArgon2(phc);
    if (!p || overCaps(p)) return failed(false);
    const computedHash = await argon2Raw(signal, p.variant, password, p.salt, { ...p, tagLength: p.hash.length });
    const ok = safeEqual(computedHash, p.hash);
    const current =
      p.variant === 'argon2id' &&
      p.memory === params.memory &&
      p.passes === params.passes &&
      p.parallelism === params.parallelism &&
      p.hash.length === params.tagLength &&
      p.salt.length === params.saltLength;
    return { ok, needsRehash: ok && !current, fullCost: p.memory * p.passes >= configuredWork };
  }

  async function checkDjangoPbkdf2(password: string, encoded: string, signal: AbortSignal | undefined): Promise<Checked> {
    // <algorithm>$<iterations>$<salt>$<base64 hash>, with Django's dklen = the digest size.
    const m = PBKDF2.exec(encoded);
    if (!m) return failed(false);
    const [, digest, iterations, salt, expectedB64] = m;
    const n = Number(iterations);
    if (n < 1 || n > HASH_CAPS.pbkdf2Iterations) return failed(false);
    const expected = Buffer.from(expectedB64!, 'base64');
    const keylen = digest === 'sha256' ? 32 : 20;
    const computedHash = await pbkdf2Limited(signal, Buffer.from(password, 'utf8'), Buffer.from(salt!, 'utf8'), n, keylen, digest!);
    const ok = safeEqual(computedHash, expected);
    // Another algorithm: its cost is not comparable with argon2's, so a failure burns as well.
    return { ok, needsRehash: ok, fullCost: false };
  }

  async function check(password: string, encoded: string, signal: AbortSignal | undefined): Promise<Checked> {
    if (encoded.startsWith('$argon2')) return checkArgon2(password, encoded, signal);
    // Django's Argon2PasswordHasher stores "argon2" followed by argon2-cffi's PHC string.
    if (encoded.startsWith('argon2$argon2')) {
      const r = await checkArgon2(password, encoded.slice('argon2'.length), signal);
      return { ...r, needsRehash: r.ok };
    }
    if (encoded.startsWith('pbkdf2_')) return checkDjangoPbkdf2(password, encoded, signal);
    // Django's unusable passwords ("!…") and formats we do not support never verify.
    return failed(false);
  }

  async function verify(password: string, encoded: string, signal?: AbortSignal): Promise<VerifyResult> {
    const { ok, needsRehash, fullCost } = await check(password, encoded, signal);
    if (!ok && !fullCost) await burn(password, signal);
    return { ok, needsRehash };
  }

  async function burn(password: string, signal?: AbortSignal): Promise<void> {
    await checkArgon2(password, await dummyHash(), signal);
  }

  return { params, hash, verify, burn, computed: () => computed, queued: limited.waiting };
}
