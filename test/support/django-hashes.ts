// Password hashes written by Django, for the tests of every hasher Django ships.
//
// Sources:
// - [T41] Django's tests/auth_tests/test_hashers.py at commit 02dbf1667c6da61ea9346f7c9f174a158b896811
//   (Django 4.1 development): test_pbkdf2, test_low_level_pbkdf2(_sha1), test_sha1, test_md5,
//   test_unsalted_md5, test_unsalted_sha1, test_argon2 (argon2i with and without the version field),
//   test_argon2_version_upgrade (argon2id at Django's defaults, m=102400,t=2,p=8), test_scrypt.
// - [T111] the same file at commit d7087c398d7234b0a49417ce9409cd6c7807e86f (Django 1.11): test_pbkdf2,
//   test_low_level_pbkdf2_sha1 at 30,000 iterations.
// - [T42] Django ≥ 4.2's test_scrypt (parallelism 5, Django's default since), as quoted in the
//   search index's copy of test_hashers.py.
// - [D32] made with Django 3.2.25 itself (Debian bookworm's python3-django, python3-bcrypt 3.2.2,
//   python3-argon2 21.1.0): Django's bcrypt tests make their hashes with random salts, so there are
//   no fixed vectors to copy; these are make_password(…, hasher=…) output, as Django stores them:
//     make_password('lètmein', hasher='bcrypt_sha256')
//     make_password('lètmein', salt=bcrypt.gensalt(4, prefix=b'2a'), hasher='bcrypt')   # py-bcrypt's $2a$
//     get_hasher('pbkdf2_sha256').encode('lètmein', 'seasalt', 870000)                 # Django 5.1's default
//   Each was checked with Django's check_password before it was copied here.
// Every entry: the stored string, the password that matches it, and passwords that must not.

export interface DjangoVector {
  name: string;
  source: string;
  encoded: string;
  password: string;
  wrong: string[];
  /** The hasher's kind, as importusers reports it. */
  kind: string;
  /** md5/sha1: accepted, wrapped, flagged weak. */
  weak?: boolean;
}

const LONG = 'VSK0UYV6FFQVZ0KG88DYN9WADAADZO1CTSIVDJUNZSUML6IBX7LN7ZS3R5JGB3RGZ7VI7G7DJQ9NI8BQFSRPTG6UWTTVESA5ZPUN';

export const DJANGO_VECTORS: DjangoVector[] = [
  // pbkdf2_sha256
  { name: 'pbkdf2_sha256, Django 5.1 default', source: 'D32', kind: 'pbkdf2_sha256', encoded: 'pbkdf2_sha256$870000$seasalt$wJSpLMQRQz0Dhj/pFpbyjMj71B2gUYp6HJS5AU+32Ac=', password: 'lètmein', wrong: ['lètmeinz'] },
  { name: 'pbkdf2_sha256, Django 4.1', source: 'T41 test_pbkdf2', kind: 'pbkdf2_sha256', encoded: 'pbkdf2_sha256$390000$seasalt$8xBlGd3jVgvJ+92hWPxi5ww0uuAuAnKgC45eudxro7c=', password: 'lètmein', wrong: ['lètmeinz', 'letmein'] },
  { name: 'pbkdf2_sha256, low level', source: 'T41 test_low_level_pbkdf2', kind: 'pbkdf2_sha256', encoded: 'pbkdf2_sha256$390000$seasalt2$geC/uZ92nRXDSjSxeoiBqYyRcrLzMm8xK3ro1QS1uo8=', password: 'lètmein', wrong: ['lètmeinz'] },
  { name: 'pbkdf2_sha256, Django 1.11', source: 'T111 test_pbkdf2', kind: 'pbkdf2_sha256', encoded: 'pbkdf2_sha256$30000$seasalt$VrX+V8drCGo68wlvy6rfu8i1d1pfkdeXA4LJkRGJodY=', password: 'lètmein', wrong: ['lètmeinz'] },
  // pbkdf2_sha1
  { name: 'pbkdf2_sha1, low level', source: 'T41 test_low_level_pbkdf2_sha1', kind: 'pbkdf2_sha1', encoded: 'pbkdf2_sha1$390000$seasalt2$aDapRanzW8aHTz97v2TcfHzWD+I=', password: 'lètmein', wrong: ['lètmeinz'] },
  { name: 'pbkdf2_sha1, Django 1.11', source: 'T111 test_low_level_pbkdf2_sha1', kind: 'pbkdf2_sha1', encoded: 'pbkdf2_sha1$30000$seasalt2$pMzU1zNPcydf6wjnJFbiVKwgULc=', password: 'lètmein', wrong: ['lètmeinz'] },
  // argon2 (argon2-cffi's encoding after "argon2")
  { name: 'argon2id at Django\'s defaults', source: 'T41 test_argon2_version_upgrade', kind: 'argon2', encoded: 'argon2$argon2id$v=19$m=102400,t=2,p=8$Y041dExhNkljRUUy$TMa6A8fPJhCAUXRhJXCXdw', password: 'secret', wrong: ['wrong', 'Secret'] },
  { name: 'argon2i with the version field', source: 'T41 test_argon2', kind: 'argon2', encoded: 'argon2$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$YC9+jJCrQhs5R6db7LlN8Q', password: 'secret', wrong: ['wrong'] },
  { name: 'argon2i without the version field (Argon2 1.0)', source: 'T41 test_argon2', kind: 'argon2', encoded: 'argon2$argon2i$m=8,t=1,p=1$c29tZXNhbHQ$gwQOXSNhxiOxPOA0+PY10P9QFO4NAYysnqRt1GSQLE55m+2GYDt9FEjPMHhP2Cuf0nOEXXMocVrsJAtNSsKyfg', password: 'secret', wrong: ['wrong'] },
  // bcrypt_sha256 and bcrypt
  { name: 'bcrypt_sha256, 12 rounds', source: 'D32', kind: 'bcrypt_sha256', encoded: 'bcrypt_sha256$$2b$12$y7yn8CuSuH6li3lBfT3/fejZRwDy/NMptq321RDsc.LPvRkNgah5a', password: 'lètmein', wrong: ['lètmeinz'] },
  { name: 'bcrypt_sha256 of a 100-character password (no truncation)', source: 'D32 (test_bcrypt_sha256\'s password)', kind: 'bcrypt_sha256', encoded: 'bcrypt_sha256$$2b$12$MJ0VdP/kW7Jc7OdqDf.z8u8EQbQJOb0u5YNC5uRBlAcdDX03.rbdO', password: LONG, wrong: [LONG.slice(0, 72)] },
  { name: 'bcrypt_sha256, $2a$ (older bcrypt libraries)', source: 'D32', kind: 'bcrypt_sha256', encoded: 'bcrypt_sha256$$2a$04$FdTI.0xzH8PFaEGCXBUfqe.zcA9Suxpz.4kJD/2ZhamBmxGE.XqRm', password: 'lètmein', wrong: ['lètmeinz'] },
  { name: 'bcrypt_sha256, 5 rounds', source: 'D32', kind: 'bcrypt_sha256', encoded: 'bcrypt_sha256$$2b$05$HwAvWARLwBew3uEJKE/LFOLLTVJq/GKRQDyHs3Y6aCfg1NYyJm0E2', password: 'lètmein', wrong: ['lètmeinz', ''] },
  { name: 'bcrypt, 12 rounds', source: 'D32', kind: 'bcrypt', encoded: 'bcrypt$$2b$12$shreaiZ8xfGoh4fTCi88IeDysdNwjiIC0tnOjmlm3ssHNiFhOSlca', password: 'lètmein', wrong: ['lètmeinz'] },
  // bcrypt itself reads 72 bytes: Django's BCryptPasswordHasher accepts the first 72 characters too.
  { name: 'bcrypt of a 100-character password (bcrypt truncates at 72 bytes)', source: 'D32', kind: 'bcrypt', encoded: 'bcrypt$$2b$12$ynSAD.hZN1ccwfTKKIj3/ub.H3SkXlv/yf16C9NcxbGlqMADHm1IC', password: LONG.slice(0, 72), wrong: [LONG.slice(0, 71)] },
  { name: 'bcrypt, $2a$', source: 'D32', kind: 'bcrypt', encoded: 'bcrypt$$2a$04$hexfDn8MPkOv3tufxHqjVO2P8pxkDxB6V2f7TG2PalrHghyuPxFYC', password: 'lètmein', wrong: ['lètmeinz'] },
  { name: 'bcrypt, 5 rounds', source: 'D32', kind: 'bcrypt', encoded: 'bcrypt$$2b$05$tjifH77ndK8iZkt3oXwHG.mNhl930.vhsWsXQnP9F5aCwm5jtd.aG', password: 'lètmein', wrong: ['lètmeinz'] },
  // scrypt
  { name: 'scrypt, Django 4.1 (p=1)', source: 'T41 test_scrypt', kind: 'scrypt', encoded: 'scrypt$16384$seasalt$8$1$Qj3+9PPyRjSJIebHnG81TMjsqtaIGxNQG/aEB/NYafTJ7tibgfYz71m0ldQESkXFRkdVCBhhY8mx7rQwite/Pw==', password: 'lètmein', wrong: ['lètmeinz'] },
  { name: 'scrypt, Django ≥ 4.2 default (p=5)', source: 'T42 test_scrypt', kind: 'scrypt', encoded: 'scrypt$16384$seasalt$8$5$ECMIUp+LMxMSK8xB/IVyba+KYGTI7FTnet025q/1f/vBAVnnP3hdYqJuRi+mJn6ji6ze3Fbb7JEFPKGpuEf5vw==', password: 'lètmein', wrong: ['lètmeinz'] },
  // The legacy digests.
  { name: 'md5', source: 'T41 test_md5', kind: 'md5', weak: true, encoded: 'md5$seasalt$3f86d0d3d465b7b458c231bf3555c0e3', password: 'lètmein', wrong: ['lètmeinz'] },
  { name: 'sha1', source: 'T41 test_sha1', kind: 'sha1', weak: true, encoded: 'sha1$seasalt$cff36ea83f5706ce9aa7454e63e431fc726b2dc8', password: 'lètmein', wrong: ['lètmeinz'] },
  { name: 'unsalted_md5', source: 'T41 test_unsalted_md5', kind: 'unsalted_md5', weak: true, encoded: '88a434c88cca4e900f7874cd98123f43', password: 'lètmein', wrong: ['lètmeinz'] },
  { name: 'unsalted_md5, "md5$$" syntax', source: 'T41 test_unsalted_md5', kind: 'unsalted_md5', weak: true, encoded: 'md5$$88a434c88cca4e900f7874cd98123f43', password: 'lètmein', wrong: ['lètmeinz'] },
  { name: 'unsalted_sha1', source: 'T41 test_unsalted_sha1', kind: 'unsalted_sha1', weak: true, encoded: 'sha1$$6d138ca3ae545631b3abd71a4f076ce759c5700b', password: 'lètmein', wrong: ['lètmeinz'] },
];

/** Strings Django never verifies (test_unsalted_sha1: "raw SHA1 isn't acceptable"; test_unusable; test_bad_algorithm). */
export const DJANGO_NEVER: { name: string; encoded: string; password: string }[] = [
  { name: 'raw SHA1 without its prefix', encoded: '6d138ca3ae545631b3abd71a4f076ce759c5700b', password: 'lètmein' },
  { name: 'an unusable password', encoded: '!XkvWnVdqGaANvq9D2E5wwcSvyNbmTYzUKJcE0xO8', password: '' },
  { name: 'an unknown algorithm', encoded: 'lolcat$salt$hash', password: 'lètmein' },
  { name: 'the crypt hasher (removed in Django 5.0)', encoded: 'crypt$$ab1Hv2Lg7ltQo', password: 'lètmei' },
];
