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

// Bounds on what a stored hash may ask of us, so a corrupt or hostile import cannot make a login
// allocate gigabytes or spin for minutes.
const MAX_ARGON2_MEMORY_KIB = 1 << 20;
const MAX_ARGON2_PASSES = 64;
const MAX_PBKDF2_ITERATIONS = 10_000_000;

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
    parsed.parallelism <= 255 &&
    parsed.memory >= 8 * parsed.parallelism &&
    parsed.memory <= MAX_ARGON2_MEMORY_KIB &&
    parsed.passes >= 1 &&
    parsed.passes <= MAX_ARGON2_PASSES &&
    parsed.salt.length >= 8 &&
    parsed.hash.length >= 4;
  return valid ? parsed : null;
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

/**
 * At most `limit` of the wrapped calls at once; the rest wait in line. Hashes are CPU- and
 * memory-bound: running more at once than there are cores only makes each slower and the process
 * larger (19 MiB per argon2id hash in flight).
 */
export function limiter(limit: number) {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async function run<T>(task: () => Promise<T>): Promise<T> {
    if (running >= limit) await new Promise<void>((resolve) => waiting.push(resolve));
    else running += 1;
    try {
      return await task();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else running -= 1;
    }
  };
}

export interface PasswordHasher {
  readonly params: Readonly<Argon2Params>;
  hash(password: string): Promise<string>;
  verify(password: string, encoded: string): Promise<VerifyResult>;
  /** Spends the time of one verification against a dummy hash, for logins of unknown users. */
  burn(password: string): Promise<void>;
}

export function createPasswordHasher(params: Readonly<Argon2Params> = OWASP_ARGON2ID, concurrency = 1): PasswordHasher {
  let dummy: Promise<string> | undefined;
  const limited = limiter(concurrency);
  const argon2Raw = (...args: Parameters<typeof argon2Unlimited>) => limited(() => argon2Unlimited(...args));
  const pbkdf2Limited = (...args: Parameters<typeof pbkdf2Async>) => limited(() => pbkdf2Async(...args));

  async function hash(password: string): Promise<string> {
    const salt = randomBytes(params.saltLength);
    return formatArgon2id(params, salt, await argon2Raw('argon2id', password, salt, params));
  }

  async function verifyArgon2(password: string, phc: string): Promise<VerifyResult> {
    const p = parseArgon2(phc);
    if (!p) return { ok: false, needsRehash: false };
    const computed = await argon2Raw(p.variant, password, p.salt, { ...p, tagLength: p.hash.length });
    const ok = safeEqual(computed, p.hash);
    const current =
      p.variant === 'argon2id' &&
      p.memory === params.memory &&
      p.passes === params.passes &&
      p.parallelism === params.parallelism &&
      p.hash.length === params.tagLength &&
      p.salt.length === params.saltLength;
    return { ok, needsRehash: ok && !current };
  }

  async function verifyDjangoPbkdf2(password: string, encoded: string): Promise<VerifyResult> {
    // <algorithm>$<iterations>$<salt>$<base64 hash>, with Django's dklen = the digest size.
    const m = /^pbkdf2_(sha256|sha1)\$(\d{1,9})\$([^$]*)\$([A-Za-z0-9+/]+={0,2})$/.exec(encoded);
    if (!m) return { ok: false, needsRehash: false };
    const [, digest, iterations, salt, expectedB64] = m;
    const n = Number(iterations);
    if (n < 1 || n > MAX_PBKDF2_ITERATIONS) return { ok: false, needsRehash: false };
    const expected = Buffer.from(expectedB64!, 'base64');
    const keylen = digest === 'sha256' ? 32 : 20;
    const computed = await pbkdf2Limited(Buffer.from(password, 'utf8'), Buffer.from(salt!, 'utf8'), n, keylen, digest!);
    const ok = safeEqual(computed, expected);
    return { ok, needsRehash: ok };
  }

  async function verify(password: string, encoded: string): Promise<VerifyResult> {
    if (encoded.startsWith('$argon2')) return verifyArgon2(password, encoded);
    // Django's Argon2PasswordHasher stores "argon2" followed by argon2-cffi's PHC string.
    if (encoded.startsWith('argon2$argon2')) {
      const r = await verifyArgon2(password, encoded.slice('argon2'.length));
      return { ok: r.ok, needsRehash: r.ok };
    }
    if (encoded.startsWith('pbkdf2_')) return verifyDjangoPbkdf2(password, encoded);
    // Django's unusable passwords ("!…") and formats we do not support never verify, but still
    // cost the time of a real check so they cannot be told apart from a wrong password.
    await burn(password);
    return { ok: false, needsRehash: false };
  }

  async function burn(password: string): Promise<void> {
    dummy ??= hash(randomBytes(16).toString('hex'));
    await verifyArgon2(password, await dummy);
  }

  return { params, hash, verify, burn };
}
