// The stored password hash formats: ours (argon2id in PHC form) and every hasher Django ships
// (django.contrib.auth.hashers): what a stored string is, whether it may be stored (HASH_CAPS), and
// the weak digests that are wrapped in argon2id at import. Parsing only: passwords.ts checks them.
//
//   $argon2id$v=19$m=…,t=…,p=…$salt$hash               ours
//   argon2$argon2id$v=19$m=102400,t=2,p=8$salt$hash    Django's Argon2PasswordHasher (argon2-cffi's PHC);
//                                                      also argon2i/argon2d, and "no v=" (version 1.0)
//   pbkdf2_sha256$870000$salt$base64                   PBKDF2PasswordHasher (and pbkdf2_sha1)
//   bcrypt_sha256$$2b$12$<53>                          BCryptSHA256PasswordHasher: bcrypt over hex(sha256(password))
//   bcrypt$$2b$12$<53>                                 BCryptPasswordHasher ($2a$ from older py-bcrypt too)
//   scrypt$16384$salt$8$5$base64                       ScryptPasswordHasher: N, salt, r, p, 64-byte key
//   md5$salt$hex, sha1$salt$hex                        MD5PasswordHasher, SHA1PasswordHasher
//   <32 hex>, md5$$<32 hex>, sha1$$<40 hex>            UnsaltedMD5PasswordHasher, UnsaltedSHA1PasswordHasher
//   wrapped_md5$salt$$argon2id$…                       ours: a weak digest wrapped in argon2id at import
//   !…                                                 Django's unusable password: never verifies
import { createHash } from 'node:crypto';

// What a stored hash may ask of a login at most, so a corrupt or hostile import cannot make a login
// allocate a gigabyte or spin for seconds. Django's own defaults stay inside, with room: argon2-cffi's
// (m=100 MiB, t=2, p=8), pbkdf2 at Django 5.2's 1,000,000 iterations, bcrypt's 12 rounds, scrypt's
// N=2^14, r=8, p=5. At the caps a check costs at most about half a second on the reference machine
// (2 cores): argon2 m=128 MiB t=2 ≈ 0.1–0.3 s (0.6 s with node:crypto's), bcrypt 13 rounds ≈ 0.52 s,
// scrypt N·r·p = 2^21 ≈ 0.42 s, pbkdf2 2M ≈ 0.26 s (scripts/bench/login-timing.ts prints the real
// ones), so FAILED_LOGIN_MIN_TIME's 1 s covers every hash that may be stored.
export const HASH_CAPS = {
  argon2MemoryKiB: 128 * 1024,
  /** memory × passes, in KiB: the work of t=2 at the memory cap. */
  argon2Work: 2 * 128 * 1024,
  argon2Parallelism: 16,
  pbkdf2Iterations: 2_000_000,
  /** bcrypt's log2 cost: Django's default is 12; bcryptjs takes 0.26 s for it here. */
  bcryptRounds: 13,
  /** 128·N·r bytes: scrypt's memory. */
  scryptMemoryBytes: 128 * 1024 * 1024,
  /** N·r·p: scrypt's work (Django's default: 2^14 · 8 · 5 = 655,360). */
  scryptWork: 2 ** 21,
} as const;

export type Argon2Variant = 'argon2id' | 'argon2i' | 'argon2d';

export interface ParsedArgon2 {
  variant: Argon2Variant;
  /** 0x13 (v=19), or 0x10 for the old encoding without "v=" (or with v=16). */
  version: 0x10 | 0x13;
  memory: number;
  passes: number;
  parallelism: number;
  salt: Buffer;
  hash: Buffer;
}

/** Django's hashers whose stored digest is one fast hash: accepted, flagged, wrapped, upgraded. */
export const WEAK_KINDS = ['md5', 'sha1', 'unsalted_md5', 'unsalted_sha1'] as const;
export type WeakKind = (typeof WEAK_KINDS)[number];

export type StoredHash =
  /** Ours (`django` false) or Django's argon2 (argon2-cffi's PHC string after "argon2"). */
  | { kind: 'argon2'; django: boolean; p: ParsedArgon2 }
  | { kind: 'pbkdf2_sha256' | 'pbkdf2_sha1'; iterations: number; salt: string; hash: Buffer }
  /** `data` is the whole bcrypt string ($2b$12$ + 22 salt + 31 hash characters). */
  | { kind: 'bcrypt' | 'bcrypt_sha256'; rounds: number; data: string }
  | { kind: 'scrypt'; n: number; r: number; p: number; salt: string; hash: Buffer }
  | { kind: WeakKind; salt: string; hex: string }
  /** A weak digest (`inner`, of `salt` + password) wrapped in argon2id at import. */
  | { kind: 'wrapped'; inner: WeakKind; salt: string; p: ParsedArgon2 }
  | { kind: 'unusable' }
  /** Names a format we know but does not parse. */
  | { kind: 'malformed'; algorithm: string }
  /** A format we do not verify (Django's removed crypt hasher, a custom one): never matches. */
  | { kind: 'unsupported'; algorithm: string };

const PHC = /^\$(argon2id|argon2i|argon2d)\$(?:v=(16|19)\$)?m=(\d{1,8}),t=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/;

export function parseArgon2(phc: string): ParsedArgon2 | null {
  const m = PHC.exec(phc);
  if (!m) return null;
  const [, variant, version, memory, passes, parallelism, salt, hash] = m;
  const parsed: ParsedArgon2 = {
    variant: variant as Argon2Variant,
    version: version === '19' ? 0x13 : 0x10,
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

const PBKDF2 = /^pbkdf2_(sha256|sha1)\$(\d{1,9})\$([^$]+)\$([A-Za-z0-9+/]+={0,2})$/;
const BCRYPT = /^(bcrypt|bcrypt_sha256)\$(\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53})$/;
const SCRYPT = /^scrypt\$(\d{1,10})\$([^$]+)\$(\d{1,4})\$(\d{1,4})\$([A-Za-z0-9+/]+={0,2})$/;
const SALTED = /^(md5|sha1)\$([^$]+)\$([0-9a-f]+)$/;
const WRAPPED = /^wrapped_(md5|sha1|unsalted_md5|unsalted_sha1)\$([^$]*)\$(\$argon2id\$.*)$/;
const KNOWN = new Set(['argon2', 'pbkdf2_sha256', 'pbkdf2_sha1', 'bcrypt', 'bcrypt_sha256', 'scrypt', 'md5', 'sha1']);
const DIGEST_HEX_LENGTH: Record<'md5' | 'sha1', number> = { md5: 32, sha1: 40 };

/** What a stored string is, by Django's own rules (identify_hasher) where they apply. */
export function parseStored(encoded: string): StoredHash {
  if (encoded.startsWith('!')) return { kind: 'unusable' };
  if (encoded.startsWith('$argon2')) {
    const p = parseArgon2(encoded);
    return p ? { kind: 'argon2', django: false, p } : { kind: 'malformed', algorithm: 'argon2' };
  }
  // Django's identify_hasher: ancient unsalted MD5 (bare, or with an empty salt) and SHA1.
  if (/^[0-9a-f]{32}$/.test(encoded)) return { kind: 'unsalted_md5', salt: '', hex: encoded };
  if (/^md5\$\$[0-9a-f]{32}$/.test(encoded)) return { kind: 'unsalted_md5', salt: '', hex: encoded.slice(5) };
  if (/^sha1\$\$[0-9a-f]{40}$/.test(encoded)) return { kind: 'unsalted_sha1', salt: '', hex: encoded.slice(6) };
  const algorithm = encoded.split('$', 1)[0]!;
  const malformed = { kind: 'malformed', algorithm } as const;
  if (algorithm === 'argon2') {
    const p = parseArgon2(encoded.slice('argon2'.length));
    return p ? { kind: 'argon2', django: true, p } : malformed;
  }
  let m: RegExpExecArray | null;
  if ((m = PBKDF2.exec(encoded))) {
    return { kind: m[1] === 'sha256' ? 'pbkdf2_sha256' : 'pbkdf2_sha1', iterations: Number(m[2]), salt: m[3]!, hash: Buffer.from(m[4]!, 'base64') };
  }
  if ((m = BCRYPT.exec(encoded))) return { kind: m[1] as 'bcrypt' | 'bcrypt_sha256', rounds: Number(m[3]), data: m[2]! };
  if ((m = SCRYPT.exec(encoded))) {
    return { kind: 'scrypt', n: Number(m[1]), salt: m[2]!, r: Number(m[3]), p: Number(m[4]), hash: Buffer.from(m[5]!, 'base64') };
  }
  if ((m = SALTED.exec(encoded))) {
    const kind = m[1] as 'md5' | 'sha1';
    return m[3]!.length === DIGEST_HEX_LENGTH[kind] ? { kind, salt: m[2]!, hex: m[3]! } : malformed;
  }
  if ((m = WRAPPED.exec(encoded))) {
    const p = parseArgon2(m[3]!);
    return p ? { kind: 'wrapped', inner: m[1] as WeakKind, salt: m[2]!, p } : { kind: 'malformed', algorithm: `wrapped_${m[1]}` };
  }
  if (KNOWN.has(algorithm) || algorithm.startsWith('wrapped_')) return malformed;
  return { kind: 'unsupported', algorithm };
}

/** Either version of argon2 (both native: app/auth/passwords.ts). */
export const overArgon2Caps = (p: Pick<ParsedArgon2, 'memory' | 'passes' | 'parallelism'>) =>
  p.memory > HASH_CAPS.argon2MemoryKiB ||
  p.memory * p.passes > HASH_CAPS.argon2Work ||
  p.parallelism > HASH_CAPS.argon2Parallelism;

/** Why this parsed hash asks more of a login than HASH_CAPS allow (or cannot be computed at all). */
export function overCaps(s: StoredHash): string | undefined {
  switch (s.kind) {
    case 'argon2':
    case 'wrapped': {
      const { memory: m, passes: t, parallelism: p } = s.p;
      if (!overArgon2Caps(s.p)) return undefined;
      return `argon2 parameters m=${m},t=${t},p=${p} exceed the cap (m ≤ ${HASH_CAPS.argon2MemoryKiB}, m×t ≤ ${HASH_CAPS.argon2Work}, p ≤ ${HASH_CAPS.argon2Parallelism})`;
    }
    case 'pbkdf2_sha256':
    case 'pbkdf2_sha1':
      return s.iterations < 1 || s.iterations > HASH_CAPS.pbkdf2Iterations
        ? `${s.iterations} pbkdf2 iterations exceed the cap (1 to ${HASH_CAPS.pbkdf2Iterations})`
        : undefined;
    case 'bcrypt':
    case 'bcrypt_sha256':
      return s.rounds < 4 || s.rounds > HASH_CAPS.bcryptRounds ? `bcrypt cost ${s.rounds} exceeds the cap (4 to ${HASH_CAPS.bcryptRounds})` : undefined;
    case 'scrypt': {
      const { n, r, p } = s;
      const powerOfTwo = n >= 2 && (n & (n - 1)) === 0 && n <= 2 ** 30;
      if (!powerOfTwo || r < 1 || p < 1) return `scrypt parameters N=${n},r=${r},p=${p} are not valid (N a power of 2, r and p at least 1)`;
      if (128 * n * r > HASH_CAPS.scryptMemoryBytes || n * r * p > HASH_CAPS.scryptWork) {
        return `scrypt parameters N=${n},r=${r},p=${p} exceed the cap (128·N·r ≤ ${HASH_CAPS.scryptMemoryBytes} bytes, N·r·p ≤ ${HASH_CAPS.scryptWork})`;
      }
      return undefined;
    }
    default:
      return undefined;
  }
}

/**
 * Why a stored hash must not be imported: it asks for more work than HASH_CAPS allows, or it names a
 * supported format and does not parse. Undefined when it may be stored (including formats we never
 * verify, such as Django's unusable "!…" passwords: they simply never match).
 */
export function storedHashProblem(encoded: string): string | undefined {
  const s = parseStored(encoded);
  if (s.kind === 'malformed') return `a malformed ${s.algorithm} hash`;
  return overCaps(s);
}

/** The hex digest a weak Django hasher stores: md5/sha1 of salt + password (UTF-8), as Django's encode. */
export function weakDigest(kind: WeakKind, salt: string, password: string): string {
  const algorithm = kind === 'md5' || kind === 'unsalted_md5' ? 'md5' : 'sha1';
  return createHash(algorithm).update(salt + password, 'utf8').digest('hex');
}

/** The stored form of a weak digest wrapped in argon2id (`phc`, over the digest's hex string). */
export const formatWrapped = (kind: WeakKind, salt: string, phc: string) => `wrapped_${kind}$${salt}$${phc}`;

/** What the import's report says of a stored hash. */
export interface HashSummary {
  /** Django's hasher name (argon2, pbkdf2_sha256, …), "argon2id" for ours, or "unusable"/"unsupported". */
  kind: string;
  /** One fast digest (md5, sha1, unsalted_*), whether wrapped or not. */
  weak: boolean;
  /** Whether a password can ever match it. */
  usable: boolean;
}

export function summarize(encoded: string): HashSummary {
  const s = parseStored(encoded);
  switch (s.kind) {
    case 'argon2':
      return { kind: s.django ? 'argon2' : 'argon2id', weak: false, usable: true };
    case 'wrapped':
      return { kind: s.inner, weak: true, usable: true };
    case 'unusable':
      return { kind: 'unusable', weak: false, usable: false };
    case 'malformed':
    case 'unsupported':
      return { kind: `unsupported (${s.algorithm || 'empty'})`, weak: false, usable: false };
    default:
      return { kind: s.kind, weak: (WEAK_KINDS as readonly string[]).includes(s.kind), usable: true };
  }
}
