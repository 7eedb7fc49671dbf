// The environment, read and validated once at start into one typed Config.
// Token settings keep djangorestframework-simplejwt's names so a Django team recognises them.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { ALGORITHMS, buildKeySet, generateKey, isHmac, KeyError, MIN_HMAC_KEY_BYTES, NO_EDDSA, type KeySet } from './auth/keys';
import type { ThrottleSettings } from './auth/throttle';
import { EVENT_TYPES, type EventType } from './events/types';

/** What of the user record access tokens may carry (ACCESS_TOKEN_CLAIMS), as simplejwt users add them. */
export const USER_CLAIMS = ['is_staff', 'is_superuser', 'groups'] as const;
export type UserClaim = (typeof USER_CLAIMS)[number];

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** The one shape of a configuration error: every bad variable on its own line, with what it expects. */
function configError(problems: readonly string[]): ConfigError {
  return new ConfigError(`Invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
}

function invalid(name: string, message: string): ConfigError {
  return configError([`${name}: ${message}`]);
}

/** Parses the environment with a schema; an empty value counts as unset, as in a .env file with `ISSUER=`. */
function parseEnv<T extends z.ZodObject>(shape: T, env: Record<string, string | undefined>): z.infer<T> {
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = shape.safeParse(present);
  if (parsed.success) return parsed.data;
  throw configError(
    parsed.error.issues.map((issue) => {
      const name = issue.path.join('.') || '(environment)';
      return `${name}: ${issue.code === 'invalid_type' && present[name] === undefined ? 'is required' : issue.message}`;
    }),
  );
}

// Keys that are public (our compose development default, the contract's test key) or plainly
// placeholders: refused in production or beyond loopback whatever their length.
const PUBLIC_KEYS = new Set([
  'insecure-development-signing-key-do-not-use-in-production',
  'ref-simplejwt-signing-key-test-only-do-not-deploy',
]);
const PLACEHOLDER = /insecure|do-not-(use|deploy)|change-?me|replace-?me|example|^(secret|password)/i;

/** Whether an address (or host name) reaches this machine only: 127.0.0.0/8, ::1, localhost. */
export function isLoopback(address: string): boolean {
  const a = address.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1');
  return a === 'localhost' || a === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(a);
}

// docker-compose.yml's default POSTGRES_PASSWORD, printed in the repository for anyone to read.
export const PUBLISHED_DATABASE_PASSWORD = 'app-dev-password';

function weakKeyReason(key: string): string | undefined {
  if (Buffer.byteLength(key) < MIN_HMAC_KEY_BYTES) return `must be at least ${MIN_HMAC_KEY_BYTES} bytes`;
  if (PUBLIC_KEYS.has(key) || PLACEHOLDER.test(key)) return 'is a published default or a placeholder, not a secret';
  if (new Set(key).size < 10) return 'is too repetitive to be a random secret';
  return undefined;
}

const DURATION = /^(\d+)\s*(s|m|h|d)?$/i;
const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

const duration = (what: string) =>
  z.string().transform((raw, ctx) => {
    const m = DURATION.exec(raw.trim());
    const seconds = m ? Number(m[1]) * UNIT_SECONDS[(m[2] ?? 's').toLowerCase()]! : NaN;
    if (!Number.isSafeInteger(seconds) || seconds <= 0) {
      ctx.addIssue({ code: 'custom', message: `expected ${what} like 300, 300s, 5m, 1h or 1d (got ${JSON.stringify(raw)})` });
      return z.NEVER;
    }
    return seconds;
  });

// A duration that may be 0 (a feature turned off), in whole seconds; with `ms`, milliseconds too.
const DURATION_MS = /^(\d+)\s*(ms|s|m|h|d)?$/i;
const durationMs = (what: string, maxMs: number) =>
  z.string().transform((raw, ctx) => {
    const m = DURATION_MS.exec(raw.trim());
    const unit = (m?.[2] ?? 's').toLowerCase();
    const ms = m ? Number(m[1]) * (unit === 'ms' ? 1 : UNIT_SECONDS[unit]! * 1000) : NaN;
    if (!Number.isSafeInteger(ms) || ms > maxMs) {
      ctx.addIssue({ code: 'custom', message: `expected ${what} like 0, 750ms, 1s or 2s, at most ${maxMs / 1000}s (got ${JSON.stringify(raw)})` });
      return z.NEVER;
    }
    return ms;
  });
const durationOrZero = (what: string) =>
  z.string().transform((raw, ctx) => {
    const m = DURATION.exec(raw.trim());
    const seconds = m ? Number(m[1]) * UNIT_SECONDS[(m[2] ?? 's').toLowerCase()]! : NaN;
    if (!Number.isSafeInteger(seconds)) {
      ctx.addIssue({ code: 'custom', message: `expected ${what} like 0, 10, 10s or 1m (got ${JSON.stringify(raw)})` });
      return z.NEVER;
    }
    return seconds;
  });

// As the user writes it: "true", "Yes ", "off"…
const bool = z
  .string()
  .trim()
  .pipe(z.stringbool({ truthy: ['1', 'true', 'yes', 'on'], falsy: ['0', 'false', 'no', 'off'], error: (issue) => `expected true or false (got ${JSON.stringify(issue.input)})` }));

const int = (min: number, max: number) =>
  z.string().transform((raw, ctx) => {
    const n = Number(raw.trim());
    if (raw.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
      ctx.addIssue({ code: 'custom', message: `expected a whole number from ${min} to ${max} (got ${JSON.stringify(raw)})` });
      return z.NEVER;
    }
    return n;
  });

const optionalText = z
  .string()
  .transform((s) => s.trim())
  .transform((s) => (s === '' ? undefined : s));

const databaseUrl = z.string().refine(
  (s) => {
    try {
      return ['postgres:', 'postgresql:'].includes(new URL(s).protocol);
    } catch {
      return false;
    }
  },
  { message: 'expected a URL like postgres://user:password@host:5432/dbname' },
);

// Every variable once: its name, how it is read, and its default. Every value is a string in the
// environment; defaults are given as a user would write them (prefault), parsed by the same rules. An
// empty value is unset (loadConfig): compose and the Swarm stack pass `${NAME:-}` through.
const environment = z.enum(['production', 'development', 'test']);
const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);
const schema = z.object({
  NODE_ENV: environment.prefault('development'),
  HOST: z.string().min(1).prefault('0.0.0.0'),
  // Where the stack is reachable from: the address nginx's port is published on (compose passes its
  // HTTP_BIND); HOST when the app is reached directly. Decides whether a published key may be used.
  HTTP_BIND: optionalText.optional(),
  PORT: int(0, 65535).prefault('3000'),
  LISTEN_SOCKET: optionalText.optional(),
  DATABASE_URL: databaseUrl,
  DATABASE_PASSWORD_FILE: optionalText.optional(),
  DB_POOL_MAX: int(1, 1000).prefault('10'),
  DB_CONNECT_TIMEOUT: duration('a duration').prefault('30s'),
  // Shorter than nginx's 15 s proxy_read_timeout: the app answers 503 itself, with its own body.
  DB_QUERY_TIMEOUT: duration('a duration').prefault('5s'),
  LOG_LEVEL: logLevel.prefault('info'),
  TRUST_PROXY_HOPS: int(0, 10).prefault('0'),
  // nginx keeps idle upstream connections for 60 s (keepalive_timeout in nginx/); Node must keep them
  // longer, or nginx reuses a socket Node is closing and answers 502.
  KEEP_ALIVE_TIMEOUT: duration('a duration').prefault('65s'),
  SHUTDOWN_TIMEOUT: duration('a duration').prefault('10s'),
  // Behind a proxy that learns of a stopping replica late (nginx follow mode on Swarm: stack.yml).
  SHUTDOWN_DELAY: durationOrZero('a duration').prefault('0'),
  MAX_BODY_BYTES: int(64, 10 * 1024 * 1024).prefault('65536'),
  PASSWORD_HASH_CONCURRENCY: int(1, 256).optional(),
  // Logins that may wait for a hashing slot, per worker; more get 503 + Retry-After at once.
  PASSWORD_HASH_QUEUE: int(0, 100_000).prefault('32'),
  // Every failed login takes at least this long from its password check, so the slowest stored hash
  // (an imported Django one) cannot be told from an unknown user by time: as PAM's pam_faildelay.
  FAILED_LOGIN_MIN_TIME: durationMs('a duration', 10_000).prefault('1s'),
  ACCESS_TOKEN_LIFETIME: duration('a duration').prefault('5m'),
  REFRESH_TOKEN_LIFETIME: duration('a duration').prefault('1d'),
  SESSION_MAX_LIFETIME: duration('a duration').prefault('30d'),
  // Listing or ending sessions needs a login at most this old (the access token's auth_time).
  SESSION_REAUTH_AGE: duration('a duration').prefault('15m'),
  REFRESH_REUSE_INTERVAL: durationOrZero('a duration').prefault('0'),
  ROTATE_REFRESH_TOKENS: bool.prefault('true'),
  BLACKLIST_AFTER_ROTATION: bool.prefault('true'),
  UPDATE_LAST_LOGIN: bool.prefault('false'),
  ALGORITHM: z
    .enum(ALGORITHMS, {
      error: (issue) => (issue.input === 'EdDSA' ? NO_EDDSA : `expected one of ${ALGORITHMS.join(', ')} (got ${JSON.stringify(issue.input)})`),
    })
    .prefault('HS256'),
  SIGNING_KEY: optionalText.optional(),
  SIGNING_KEY_FILE: optionalText.optional(),
  SIGNING_KEY_ID: z.string().regex(/^[A-Za-z0-9._~-]{1,64}$/, 'expected 1 to 64 letters, digits and . _ ~ -').optional(),
  VERIFYING_KEY: optionalText.optional(),
  VERIFYING_KEY_FILE: optionalText.optional(),
  VERIFYING_KEYS_FILE: optionalText.optional(),
  AUDIENCE: optionalText.optional(),
  ISSUER: optionalText.optional(),
  LEEWAY: int(0, 3600).prefault('0'),
  AUTH_HEADER_TYPES: z
    .string()
    .transform((s) => s.split(/[\s,]+/).filter(Boolean))
    .refine((types) => types.length > 0 && types.every((t) => /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(t)), {
      message: 'expected one or more comma-separated scheme names, such as Bearer or Bearer,JWT',
    })
    .prefault('Bearer'),
  LOGIN_THROTTLE_FREE_ATTEMPTS: int(1, 1000).prefault('5'),
  LOGIN_THROTTLE_MAX_DELAY: duration('a duration').prefault('5m'),
  LOGIN_THROTTLE_QUIET: duration('a duration').prefault('15m'),
  // Logins to one account from addresses that never logged into it share this budget per window.
  LOGIN_THROTTLE_ACCOUNT_BUDGET: int(0, 1_000_000).prefault('20'),
  LOGIN_THROTTLE_ACCOUNT_WINDOW: duration('a duration').prefault('1h'),
  LOGIN_KNOWN_ADDRESS_TTL: duration('a duration').prefault('90d'),
  REFRESH_THROTTLE_PER_MINUTE: int(0, 1_000_000).prefault('60'),
  CORS_ALLOWED_ORIGINS: z
    .string()
    .transform((s, ctx) => {
      const origins = s.split(/[\s,]+/).filter(Boolean);
      for (const origin of origins) {
        if (!isOrigin(origin)) {
          ctx.addIssue({ code: 'custom', message: `expected origins like https://app.example.com, comma-separated (got ${JSON.stringify(origin)})` });
        }
      }
      return origins;
    })
    .prefault(''),
  METRICS_SOCKET_DIR: optionalText.optional(),
  SLOW_REQUEST_MS: int(0, 3_600_000).prefault('1000'),
  USER_ID_CLAIM: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected a claim name such as user_id').prefault('user_id'),
  WEBHOOK_URL: z
    .string()
    .transform((s, ctx) => {
      const urls = [...new Set(s.split(/[\s,]+/).filter(Boolean))];
      for (const url of urls) {
        const problem = webhookUrlProblem(url);
        if (problem) ctx.addIssue({ code: 'custom', message: `${problem} (got ${JSON.stringify(url)})` });
      }
      return urls;
    })
    .prefault(''),
  WEBHOOK_SECRET: optionalText.optional(),
  WEBHOOK_SECRET_FILE: optionalText.optional(),
  WEBHOOK_EVENTS: z
    .string()
    .transform((s, ctx) => {
      const wanted = new Set<EventType>();
      for (const item of s.split(/[\s,]+/).filter(Boolean)) {
        const matches = EVENT_TYPES.filter((t) => item === '*' || t === item || (item.endsWith('.*') && t.startsWith(item.slice(0, -1))));
        if (matches.length === 0) ctx.addIssue({ code: 'custom', message: `unknown event type ${JSON.stringify(item)}: expected some of ${EVENT_TYPES.join(', ')} (or login.*, user.*, …)` });
        for (const t of matches) wanted.add(t);
      }
      return wanted;
    })
    .prefault('*'),
  // The Standard Webhooks spec recommends 15 to 30 s for the receiver to answer.
  WEBHOOK_TIMEOUT: duration('a duration').prefault('15s'),
  WEBHOOK_CONNECT_TIMEOUT: duration('a duration').prefault('5s'),
  WEBHOOK_MAX_AGE: duration('a duration').prefault('1d'),
  WEBHOOK_RETRY_BASE_DELAY: duration('a duration').prefault('5s'),
  WEBHOOK_RETRY_MAX_DELAY: duration('a duration').prefault('1h'),
  WEBHOOK_POLL_INTERVAL: duration('a duration').prefault('1s'),
  WEBHOOK_BATCH_SIZE: int(1, 1000).prefault('20'),
  // Plain http:// receivers with NODE_ENV=production (a receiver on the same private network, in
  // development or tests); otherwise production sends only over https://.
  WEBHOOK_ALLOW_HTTP: bool.prefault('false'),
  ACCESS_TOKEN_CLAIMS: z
    .string()
    .transform((s, ctx) => {
      const names = [...new Set(s.split(/[\s,]+/).filter(Boolean))];
      for (const name of names) {
        if (!(USER_CLAIMS as readonly string[]).includes(name)) {
          ctx.addIssue({ code: 'custom', message: `expected some of ${USER_CLAIMS.join(', ')}, comma-separated (got ${JSON.stringify(name)})` });
        }
      }
      return names as UserClaim[];
    })
    .prefault(''),
});

/** The typed environment: every variable parsed, defaults applied. */
export type Settings = z.infer<typeof schema>;
export type Environment = Settings['NODE_ENV'];

function webhookUrlProblem(s: string): string | undefined {
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    return 'expected URLs like https://siem.example.com/hooks/auth, comma-separated';
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'expected an https:// (or http://) URL';
  if (url.hash) return 'a webhook URL has no #fragment';
  return undefined;
}

// Standard Webhooks: a symmetric secret is whsec_ and the base64 of 24 to 64 random bytes.
const WHSEC = /^whsec_([A-Za-z0-9+/]+={0,2})$/;
function webhookSecretProblem(secret: string): string | undefined {
  const m = WHSEC.exec(secret);
  const bytes = m && m[1]!.length % 4 === 0 ? Buffer.from(m[1]!, 'base64').length : 0;
  if (bytes < 24 || bytes > 64) return 'expected whsec_ and the base64 of 24 to 64 random bytes (generate one: npm run cli -- webhooks secret)';
  return undefined;
}

export const webhookEndpointKey = (url: string): string => createHash('sha256').update(url).digest('hex').slice(0, 16);

/** An origin as a browser sends it: scheme, host and port only, no path, no trailing slash. */
function isOrigin(s: string): boolean {
  try {
    const url = new URL(s);
    return ['http:', 'https:'].includes(url.protocol) && url.origin === s;
  } catch {
    return false;
  }
}

/**
 * Machine clients need an issuer identifier (RFC 9068 requires `iss`; RFC 8414 names the metadata
 * after it): ISSUER when it is an https URL with no path, query or fragment (http outside
 * production, for development). An ISSUER that is not one (simplejwt takes any string) leaves machine
 * clients off, with the reason. Not derived from the request's Host: a client would then choose what
 * its token says about who issued it.
 */
function clientSettings(issuer: string | undefined, env: Environment): { clients?: ClientSettings; warning?: string } {
  if (issuer === undefined) return {};
  let url: URL;
  try {
    url = new URL(issuer);
  } catch {
    return {};
  }
  const schemes = env === 'production' ? ['https:'] : ['https:', 'http:'];
  const why = !schemes.includes(url.protocol)
    ? `its scheme must be ${schemes.join(' or ')}`
    : url.pathname !== '/' || url.search !== '' || url.hash !== '' || issuer.includes('?') || issuer.includes('#')
      ? 'it must have no path, query or fragment (the metadata is served at /.well-known/oauth-authorization-server)'
      : url.username !== '' || url.password !== ''
        ? 'it must carry no credentials'
        : undefined;
  if (why) return { warning: `machine clients are off: ISSUER=${issuer} is not an OAuth issuer identifier: ${why}` };
  return { clients: { issuer } };
}

/** A value given inline (NAME) or in a file (NAME_FILE), as Docker secrets are. */
function inlineOrFile(name: string, inline: string | undefined, file: string | undefined): string | undefined {
  if (inline !== undefined && file !== undefined) throw invalid(name, `set ${name} or ${name}_FILE, not both`);
  if (file === undefined) return inline;
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw invalid(`${name}_FILE`, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/**
 * DATABASE_URL with the password from DATABASE_PASSWORD_FILE, when given: the file a Docker or
 * Kubernetes secret puts in the container, the same one the Postgres image reads
 * (POSTGRES_PASSWORD_FILE). Percent-encoded, so any character survives the URL.
 */
function databaseUrlWithPassword(url: string, passwordFile: string | undefined): string {
  const password = inlineOrFile('DATABASE_PASSWORD', undefined, passwordFile);
  if (password === undefined) return url;
  const u = new URL(url);
  if (u.password) throw invalid('DATABASE_PASSWORD_FILE', 'DATABASE_URL has a password already; give it in one place');
  u.password = encodeURIComponent(password);
  return u.toString();
}

/** The password a database URL carries, decoded; undefined when it has none. */
function databasePassword(url: string): string | undefined {
  const { password } = new URL(url);
  if (password === '') return undefined;
  try {
    return decodeURIComponent(password);
  } catch {
    return password;
  }
}

// The shipped compose and stack files give a stopping container this long (stop_grace_period)
// before Docker's SIGKILL; PM2 needs a little of it after the workers' drain.
const STOP_GRACE_PERIOD_MS = 30_000;
const PM2_MARGIN_MS = 5_000;

/** Reads the given environment (normally process.env). Throws ConfigError naming every bad variable. */
export function loadConfig(env: Record<string, string | undefined>): LoadedConfig {
  const e = parseEnv(schema, env);
  const warnings: string[] = [];

  // Where the stack can be reached from: published defaults and weak secrets are refused beyond
  // loopback whatever NODE_ENV says (a development stack on 0.0.0.0 is reachable all the same).
  const [bindName, bindAddress] = e.HTTP_BIND !== undefined ? ['HTTP_BIND', e.HTTP_BIND] : ['HOST', e.HOST];
  const exposed = !isLoopback(bindAddress);
  const strict = e.NODE_ENV === 'production' || exposed;
  const why = exposed ? `the stack listens beyond loopback (${bindName}=${bindAddress})` : 'NODE_ENV=production';

  let signingKey = inlineOrFile('SIGNING_KEY', e.SIGNING_KEY, e.SIGNING_KEY_FILE);
  if (signingKey !== undefined && PUBLIC_KEYS.has(signingKey)) {
    // Anyone can sign tokens with a key printed in our README and compose file.
    if (exposed) {
      throw invalid('SIGNING_KEY', `is the published development key and ${why}: anyone could sign tokens; set your own (npm run cli -- genkey HS256)`);
    }
    warnings.push('SIGNING_KEY is the published development key: anyone can sign tokens with it. Set your own (npm run cli -- genkey HS256) before the stack listens beyond loopback.');
  }
  if (e.NODE_ENV === 'production' && !signingKey) throw invalid('SIGNING_KEY', 'is required when NODE_ENV=production');
  if (signingKey && strict) {
    // A short or guessable HMAC secret can be found offline from any one token it signed.
    const weak = isHmac(e.ALGORITHM) ? weakKeyReason(signingKey) : undefined;
    if (weak) throw invalid('SIGNING_KEY', `${weak} when ${why} (generate one with: npm run cli -- genkey ${e.ALGORITHM})`);
  }
  if (!signingKey) {
    signingKey = isHmac(e.ALGORITHM) ? randomBytes(48).toString('base64url') : generateKey(e.ALGORITHM).signingKey;
    warnings.push('SIGNING_KEY is not set: using a random key for this process only; tokens will not survive a restart');
  }
  let keys: KeySet;
  try {
    keys = buildKeySet({
      algorithm: e.ALGORITHM,
      signingKey,
      verifyingKey: inlineOrFile('VERIFYING_KEY', e.VERIFYING_KEY, e.VERIFYING_KEY_FILE),
      signingKeyId: e.SIGNING_KEY_ID,
      verifyingKeys: inlineOrFile('VERIFYING_KEYS', undefined, e.VERIFYING_KEYS_FILE),
    });
  } catch (err) {
    if (err instanceof KeyError) throw configError([err.message]);
    throw err;
  }

  const databaseUrl = databaseUrlWithPassword(e.DATABASE_URL, e.DATABASE_PASSWORD_FILE);
  if (databasePassword(databaseUrl) === PUBLISHED_DATABASE_PASSWORD) {
    if (strict) {
      throw invalid(
        'DATABASE_URL',
        `has the published development database password (${PUBLISHED_DATABASE_PASSWORD}, docker-compose.yml's default POSTGRES_PASSWORD) and ${why}: set POSTGRES_PASSWORD (or the password in DATABASE_URL / DATABASE_PASSWORD_FILE) to a secret of your own`,
      );
    }
    warnings.push(`The database password is the published development one (${PUBLISHED_DATABASE_PASSWORD}). Set POSTGRES_PASSWORD before the stack listens beyond loopback.`);
  }

  if (e.NODE_ENV === 'production') {
    // A page served over plain HTTP can be rewritten on its way, and its script would then hold the
    // user's access token and could refresh with the cookie: only https:// pages (or the developer's
    // own machine) may call the API with credentials.
    const plain = e.CORS_ALLOWED_ORIGINS.filter((origin) => {
      const url = new URL(origin);
      return url.protocol !== 'https:' && !isLoopback(url.hostname);
    });
    if (plain.length > 0) {
      throw invalid(
        'CORS_ALLOWED_ORIGINS',
        `must be https:// origins when NODE_ENV=production (http:// only for localhost and loopback addresses); not: ${plain.join(', ')}`,
      );
    }
  }

  const { clients, warning: clientWarning } = clientSettings(e.ISSUER, e.NODE_ENV);
  if (clientWarning) warnings.push(clientWarning);
  if (clients && !e.AUTH_HEADER_TYPES.includes('Bearer')) {
    warnings.push('machine clients send their tokens as "Authorization: Bearer …" (RFC 6750), and AUTH_HEADER_TYPES has no Bearer: the guard will not read them');
  }
  const webhookSecrets = (inlineOrFile('WEBHOOK_SECRET', e.WEBHOOK_SECRET, e.WEBHOOK_SECRET_FILE) ?? '').split(/[\s,]+/).filter(Boolean);
  if (e.WEBHOOK_URL.length > 0) {
    if (webhookSecrets.length === 0) throw invalid('WEBHOOK_SECRET', 'is required when WEBHOOK_URL is set (generate one: npm run cli -- webhooks secret)');
    for (const secret of webhookSecrets) {
      const problem = webhookSecretProblem(secret);
      if (problem) throw invalid('WEBHOOK_SECRET', problem);
    }
    const plain = e.WEBHOOK_URL.filter((u) => u.startsWith('http:'));
    if (plain.length > 0 && e.NODE_ENV === 'production') {
      if (!e.WEBHOOK_ALLOW_HTTP) throw invalid('WEBHOOK_URL', `must be https:// when NODE_ENV=production (or set WEBHOOK_ALLOW_HTTP=true for a receiver on a private network): ${plain.join(', ')}`);
      warnings.push(`WEBHOOK_ALLOW_HTTP: security events go to ${plain.join(', ')} unencrypted`);
    }
  }
  if ((e.SHUTDOWN_DELAY + e.SHUTDOWN_TIMEOUT) * 1000 + PM2_MARGIN_MS > STOP_GRACE_PERIOD_MS) {
    warnings.push(
      `SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT is ${e.SHUTDOWN_DELAY + e.SHUTDOWN_TIMEOUT} s: raise stop_grace_period above ${e.SHUTDOWN_DELAY + e.SHUTDOWN_TIMEOUT + PM2_MARGIN_MS / 1000} s (the shipped files give ${STOP_GRACE_PERIOD_MS / 1000} s), or Docker kills a stopping worker before its requests finish`,
    );
  }
  if (e.WEBHOOK_CONNECT_TIMEOUT > e.WEBHOOK_TIMEOUT) throw invalid('WEBHOOK_CONNECT_TIMEOUT', 'must not exceed WEBHOOK_TIMEOUT');
  if (e.WEBHOOK_RETRY_BASE_DELAY > e.WEBHOOK_RETRY_MAX_DELAY) throw invalid('WEBHOOK_RETRY_BASE_DELAY', 'must not exceed WEBHOOK_RETRY_MAX_DELAY');

  return { warnings, config: configFrom(e, { keys, databaseUrl, clients, webhookSecrets }) };
}

/** What loadConfig derives from several variables (files read, keys built, values cross-checked). */
interface Derived {
  keys: KeySet;
  databaseUrl: string;
  clients: { issuer: string } | undefined;
  webhookSecrets: string[];
}

/** The one mapping from variable names to the settings the app is given. */
function configFrom(e: Settings, derived: Derived) {
  return {
    env: e.NODE_ENV,
    host: e.HOST,
    port: e.PORT,
    listenSocket: e.LISTEN_SOCKET,
    databaseUrl: derived.databaseUrl,
    dbPoolMax: e.DB_POOL_MAX,
    dbConnectTimeoutMs: e.DB_CONNECT_TIMEOUT * 1000,
    dbQueryTimeoutMs: e.DB_QUERY_TIMEOUT * 1000,
    logLevel: e.LOG_LEVEL,
    proxyHops: e.TRUST_PROXY_HOPS,
    keepAliveTimeoutMs: e.KEEP_ALIVE_TIMEOUT * 1000,
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT * 1000,
    /** How long a stopping worker keeps accepting before it drains (0: it stops accepting at once). */
    shutdownDelayMs: e.SHUTDOWN_DELAY * 1000,
    maxBodyBytes: e.MAX_BODY_BYTES,
    /** Password hashes run at once in this process (PM2 sets it to the CPUs per worker). */
    hashConcurrency: e.PASSWORD_HASH_CONCURRENCY ?? availableParallelism(),
    hashQueue: e.PASSWORD_HASH_QUEUE,
    failedLoginMinTimeMs: e.FAILED_LOGIN_MIN_TIME,
    jwt: {
      accessTokenLifetime: e.ACCESS_TOKEN_LIFETIME,
      refreshTokenLifetime: e.REFRESH_TOKEN_LIFETIME,
      rotateRefreshTokens: e.ROTATE_REFRESH_TOKENS,
      blacklistAfterRotation: e.BLACKLIST_AFTER_ROTATION,
      updateLastLogin: e.UPDATE_LAST_LOGIN,
      algorithm: e.ALGORITHM,
      keys: derived.keys,
      audience: e.AUDIENCE,
      issuer: e.ISSUER,
      leeway: e.LEEWAY,
      authHeaderTypes: e.AUTH_HEADER_TYPES,
      userIdClaim: e.USER_ID_CLAIM,
      /** A session's absolute lifetime from its login (seconds): no refresh carries it further. */
      sessionMaxLifetime: e.SESSION_MAX_LIFETIME,
      /** How recent a login (auth_time) must be to list or end sessions (seconds). */
      sessionReauthAge: e.SESSION_REAUTH_AGE,
      accessTokenClaims: e.ACCESS_TOKEN_CLAIMS,
      /** Seconds after a rotation in which the parent, presented again, answers its child. 0: strict. */
      refreshReuseInterval: e.REFRESH_REUSE_INTERVAL,
    },
    /** Machine clients; undefined (off, the endpoints absent) unless ISSUER is an issuer identifier. */
    clients: derived.clients,
    throttle: {
      loginFreeAttempts: e.LOGIN_THROTTLE_FREE_ATTEMPTS,
      loginMaxDelaySeconds: e.LOGIN_THROTTLE_MAX_DELAY,
      loginQuietSeconds: e.LOGIN_THROTTLE_QUIET,
      loginAccountBudget: e.LOGIN_THROTTLE_ACCOUNT_BUDGET,
      loginAccountWindowSeconds: e.LOGIN_THROTTLE_ACCOUNT_WINDOW,
      loginKnownAddressSeconds: e.LOGIN_KNOWN_ADDRESS_TTL,
      refreshPerMinute: e.REFRESH_THROTTLE_PER_MINUTE,
    } satisfies ThrottleSettings,
    corsAllowedOrigins: e.CORS_ALLOWED_ORIGINS,
    /** Where this worker offers its metrics to the container's collector (app/metrics/); none: off. */
    metricsSocketDir: e.METRICS_SOCKET_DIR,
    slowRequestMs: e.SLOW_REQUEST_MS,
    webhooks: {
      endpoints: e.WEBHOOK_URL.map((url) => ({ url, key: webhookEndpointKey(url) })),
      secrets: derived.webhookSecrets,
      events: e.WEBHOOK_EVENTS,
      timeoutMs: e.WEBHOOK_TIMEOUT * 1000,
      connectTimeoutMs: e.WEBHOOK_CONNECT_TIMEOUT * 1000,
      maxAgeMs: e.WEBHOOK_MAX_AGE * 1000,
      retryBaseMs: e.WEBHOOK_RETRY_BASE_DELAY * 1000,
      retryMaxMs: e.WEBHOOK_RETRY_MAX_DELAY * 1000,
      batchSize: e.WEBHOOK_BATCH_SIZE,
      pollMs: e.WEBHOOK_POLL_INTERVAL * 1000,
    },
  };
}

export type Config = ReturnType<typeof configFrom>;
export type JwtSettings = Config['jwt'];
export type WebhookSettings = Config['webhooks'];
export type WebhookEndpoint = WebhookSettings['endpoints'][number];
export type ClientSettings = NonNullable<Config['clients']>;

export interface LoadedConfig {
  config: Config;
  warnings: string[];
}

// What runs beside the workers: the metrics collector (app/metrics/server.ts) and PM2's process list
// (ecosystem.config.js, which requires the built dist/config.js for it).
const metricsPort = int(0, 65535).prefault('9464'); // 0: no collector
const processVars = {
  METRICS_HOST: z.string().min(1).prefault('0.0.0.0'),
  METRICS_PORT: metricsPort,
  // Workers in the container: by default one per CPU it may use (ecosystem.config.js counts them).
  WEB_CONCURRENCY: int(1, 1024).optional(),
};

const collectorSchema = z.object({
  METRICS_HOST: processVars.METRICS_HOST,
  METRICS_PORT: metricsPort.refine((port) => port > 0, 'is 0: the collector is off (PM2 does not start it)'),
  METRICS_SOCKET_DIR: z.string().min(1),
  LOG_LEVEL: schema.shape.LOG_LEVEL,
});

/** The metrics collector's settings (app/metrics/server.ts): the scrape port and the workers' sockets. */
export function loadCollectorConfig(env: Record<string, string | undefined>) {
  const e = parseEnv(collectorSchema, env);
  return { host: e.METRICS_HOST, port: e.METRICS_PORT, socketDir: e.METRICS_SOCKET_DIR, logLevel: e.LOG_LEVEL };
}
export type CollectorConfig = ReturnType<typeof loadCollectorConfig>;

const processSchema = z.object({
  // Under PM2 an unset NODE_ENV is a deployment: production (the image sets it so as well).
  NODE_ENV: environment.prefault('production'),
  WEB_CONCURRENCY: processVars.WEB_CONCURRENCY,
  METRICS_PORT: metricsPort,
  METRICS_SOCKET_DIR: schema.shape.METRICS_SOCKET_DIR,
  PASSWORD_HASH_CONCURRENCY: schema.shape.PASSWORD_HASH_CONCURRENCY,
  SIGNING_KEY: schema.shape.SIGNING_KEY,
  SIGNING_KEY_FILE: schema.shape.SIGNING_KEY_FILE,
  ALGORITHM: schema.shape.ALGORITHM,
  WEBHOOK_URL: schema.shape.WEBHOOK_URL,
  SHUTDOWN_DELAY: schema.shape.SHUTDOWN_DELAY,
  SHUTDOWN_TIMEOUT: schema.shape.SHUTDOWN_TIMEOUT,
});

/**
 * What PM2 runs in this container (ecosystem.config.js): how many workers, each one's hashing share,
 * whether the metrics collector and the webhook sender run. `cpus`: the CPUs the container may use.
 */
export function loadProcessConfig(env: Record<string, string | undefined>, cpus: number) {
  const e = parseEnv(processSchema, env);
  const workers = e.WEB_CONCURRENCY ?? cpus;
  if (workers > 1 && e.SIGNING_KEY === undefined && e.SIGNING_KEY_FILE === undefined) {
    // Without a key each worker would make up its own, and tokens from one would fail on the others.
    throw invalid('SIGNING_KEY', `is required (or SIGNING_KEY_FILE) when running more than one worker (generate one with: npm run cli -- genkey ${e.ALGORITHM})`);
  }
  return {
    env: e.NODE_ENV,
    workers,
    // The CPUs shared out among the workers: more hashes at once than cores only slow each one.
    hashConcurrency: e.PASSWORD_HASH_CONCURRENCY ?? Math.max(1, Math.ceil(cpus / workers)),
    /** The directory the workers offer their metrics in; undefined: METRICS_PORT=0, no collector. */
    metricsSocketDir: e.METRICS_PORT === 0 ? undefined : (e.METRICS_SOCKET_DIR ?? path.join(tmpdir(), 'koa-auth-stack-metrics')),
    webhooks: e.WEBHOOK_URL.length > 0,
    /** PM2's kill_timeout: a worker's whole stop (SHUTDOWN_DELAY, then the drain), and a margin. */
    killTimeoutMs: (e.SHUTDOWN_DELAY + e.SHUTDOWN_TIMEOUT) * 1000 + PM2_MARGIN_MS,
  };
}

/** Every variable the app, the collector and PM2's process list read (the deployment manifests are checked against it). */
export const CONFIG_VARIABLES: readonly string[] = [...new Set([...Object.keys(schema.shape), ...Object.keys(collectorSchema.shape), ...Object.keys(processSchema.shape)])];
