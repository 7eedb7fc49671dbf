// The environment, read and validated once at start into one typed Config.
// Token settings keep djangorestframework-simplejwt's names so a Django team recognises them.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { ALGORITHMS, buildKeySet, generateKey, isHmac, KeyError, MIN_HMAC_KEY_BYTES, NO_EDDSA, type Algorithm, type KeySet } from './auth/keys';
import type { ThrottleSettings } from './auth/throttle';
import { EVENT_TYPES, type EventType } from './events/types';

export type Environment = 'production' | 'development' | 'test';

/** What of the user record access tokens may carry (ACCESS_TOKEN_CLAIMS), as simplejwt users add them. */
export const USER_CLAIMS = ['is_staff', 'is_superuser', 'groups'] as const;
export type UserClaim = (typeof USER_CLAIMS)[number];

/** Machine clients (OAuth 2.0 client credentials): on when ISSUER is an issuer identifier (RFC 8414). */
export interface ClientSettings {
  /** ISSUER as given: the tokens' `iss` and the metadata's `issuer`, compared as strings by verifiers. */
  issuer: string;
}

export interface JwtSettings {
  accessTokenLifetime: number; // seconds
  refreshTokenLifetime: number; // seconds
  rotateRefreshTokens: boolean;
  blacklistAfterRotation: boolean;
  updateLastLogin: boolean;
  algorithm: Algorithm;
  keys: KeySet;
  audience: string | undefined;
  issuer: string | undefined;
  leeway: number; // seconds
  authHeaderTypes: string[];
  userIdClaim: string;
  /** A session's absolute lifetime from its login (seconds): no refresh carries it further. */
  sessionMaxLifetime: number;
  /**
   * How recent a login (an access token's auth_time) must be to list or end sessions (seconds): a
   * stolen access token, refreshed or not, cannot end its owner's other sessions.
   */
  sessionReauthAge: number;
  /** Claims from the user record put in every access token, read at login and at each refresh. */
  accessTokenClaims: UserClaim[];
  /** Seconds after a rotation in which the parent, presented again, answers its (unused) child instead
   *  of revoking the family: two tabs, a retry after a lost answer. 0: strict. */
  refreshReuseInterval: number;
}

/** A webhook receiver (WEBHOOK_URL). */
export interface WebhookEndpoint {
  url: string;
  /** What the outbox stores for it (a hash: a URL may hold credentials), so each row names its receiver. */
  key: string;
}

/** Security events as signed webhooks (app/events/); no endpoints: none are recorded or sent. */
export interface WebhookSettings {
  endpoints: WebhookEndpoint[];
  /** whsec_ secrets: each delivery carries a signature by every one (rotation). */
  secrets: string[];
  /** The event types recorded (WEBHOOK_EVENTS; default all). */
  events: ReadonlySet<EventType>;
  timeoutMs: number;
  connectTimeoutMs: number;
  /** Retries stop this long after the event (or a manual retry); the event is then marked failed. */
  maxAgeMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** Rows one delivery process takes at once (sent in parallel, at most one per user and receiver). */
  batchSize: number;
  pollMs: number;
}

export interface Config {
  env: Environment;
  host: string;
  port: number;
  /** A Unix socket to listen on as well (nginx in the same compose project, through a shared volume). */
  listenSocket: string | undefined;
  databaseUrl: string;
  dbPoolMax: number;
  dbConnectTimeoutMs: number; // how long start waits for the database before giving up
  /** A statement unanswered this long counts its connection as lost (a server gone silent). */
  dbQueryTimeoutMs: number;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  proxyHops: number; // X-Forwarded-* hops to trust (1 behind our nginx, 0 when exposed directly)
  keepAliveTimeoutMs: number;
  shutdownTimeoutMs: number;
  /** How long a stopping worker keeps accepting before it drains (0: it stops accepting at once). */
  shutdownDelayMs: number;
  maxBodyBytes: number;
  /** Password hashes run at once in this process (PM2 sets it to the CPUs per worker). */
  hashConcurrency: number;
  /** Password hashes that may wait for a slot; beyond them a login answers 503. */
  hashQueue: number;
  /** No failed login is answered sooner than this (ms) after its password check began: 0 off. */
  failedLoginMinTimeMs: number;
  jwt: JwtSettings;
  /** Machine clients; undefined (off, the endpoints absent) unless ISSUER is an https URL. */
  clients: ClientSettings | undefined;
  throttle: ThrottleSettings;
  /** Origins (scheme://host[:port]) whose pages may call the API with credentials; no others. */
  corsAllowedOrigins: string[];
  /** Where this worker offers its metrics to the container's collector (app/metrics/); none: off. */
  metricsSocketDir: string | undefined;
  /** Requests slower than this are logged at info (every request is logged at debug). */
  slowRequestMs: number;
  webhooks: WebhookSettings;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export interface LoadedConfig {
  config: Config;
  warnings: string[];
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

const bool = z.string().transform((raw, ctx) => {
  const v = raw.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  ctx.addIssue({ code: 'custom', message: `expected true or false (got ${JSON.stringify(raw)})` });
  return z.NEVER;
});

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

// Every variable is a string in the environment; defaults are given as strings so they are parsed
// by the same rules as a user's value.
const schema = z.object({
  NODE_ENV: z.enum(['production', 'development', 'test']).default('development'),
  HOST: z.string().min(1).default('0.0.0.0'),
  // Where the stack is reachable from: the address nginx's port is published on (compose passes its
  // HTTP_BIND); HOST when the app is reached directly. Decides whether a published key may be used.
  HTTP_BIND: optionalText.optional(),
  PORT: int(0, 65535).default(3000),
  LISTEN_SOCKET: optionalText.optional(),
  DATABASE_URL: databaseUrl,
  DATABASE_PASSWORD_FILE: optionalText.optional(),
  DB_POOL_MAX: int(1, 1000).default(10),
  DB_CONNECT_TIMEOUT: duration('a duration').default(30),
  // Shorter than nginx's 15 s proxy_read_timeout: the app answers 503 itself, with its own body.
  DB_QUERY_TIMEOUT: duration('a duration').default(5),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  TRUST_PROXY_HOPS: int(0, 10).default(0),
  // nginx keeps idle upstream connections for 60 s (keepalive_timeout in nginx/); Node must keep them
  // longer, or nginx reuses a socket Node is closing and answers 502.
  KEEP_ALIVE_TIMEOUT: duration('a duration').default(65),
  SHUTDOWN_TIMEOUT: duration('a duration').default(10),
  // Behind a proxy that learns of a stopping replica late (nginx follow mode on Swarm: stack.yml).
  SHUTDOWN_DELAY: durationOrZero('a duration').default(0),
  MAX_BODY_BYTES: int(64, 10 * 1024 * 1024).default(64 * 1024),
  PASSWORD_HASH_CONCURRENCY: int(1, 256).optional(),
  // Logins that may wait for a hashing slot, per worker; more get 503 + Retry-After at once.
  PASSWORD_HASH_QUEUE: int(0, 100_000).default(32),
  // Every failed login takes at least this long from its password check, so the slowest stored hash
  // (an imported Django one) cannot be told from an unknown user by time: as PAM's pam_faildelay.
  FAILED_LOGIN_MIN_TIME: durationMs('a duration', 10_000).default(1000),
  ACCESS_TOKEN_LIFETIME: duration('a duration').default(300),
  REFRESH_TOKEN_LIFETIME: duration('a duration').default(86400),
  SESSION_MAX_LIFETIME: duration('a duration').default(30 * 86400),
  // Listing or ending sessions needs a login at most this old (the access token's auth_time).
  SESSION_REAUTH_AGE: duration('a duration').default(15 * 60),
  REFRESH_REUSE_INTERVAL: durationOrZero('a duration').default(0),
  ROTATE_REFRESH_TOKENS: bool.default(true),
  BLACKLIST_AFTER_ROTATION: bool.default(true),
  UPDATE_LAST_LOGIN: bool.default(false),
  ALGORITHM: z
    .enum(ALGORITHMS, {
      error: (issue) => (issue.input === 'EdDSA' ? NO_EDDSA : `expected one of ${ALGORITHMS.join(', ')} (got ${JSON.stringify(issue.input)})`),
    })
    .default('HS256'),
  SIGNING_KEY: optionalText.optional(),
  SIGNING_KEY_FILE: optionalText.optional(),
  SIGNING_KEY_ID: z.string().regex(/^[A-Za-z0-9._~-]{1,64}$/, 'expected 1 to 64 letters, digits and . _ ~ -').optional(),
  VERIFYING_KEY: optionalText.optional(),
  VERIFYING_KEY_FILE: optionalText.optional(),
  VERIFYING_KEYS_FILE: optionalText.optional(),
  AUDIENCE: optionalText.optional(),
  ISSUER: optionalText.optional(),
  LEEWAY: int(0, 3600).default(0),
  AUTH_HEADER_TYPES: z
    .string()
    .transform((s) => s.split(/[\s,]+/).filter(Boolean))
    .refine((types) => types.length > 0 && types.every((t) => /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(t)), {
      message: 'expected one or more comma-separated scheme names, such as Bearer or Bearer,JWT',
    })
    .default(['Bearer']),
  LOGIN_THROTTLE_FREE_ATTEMPTS: int(1, 1000).default(5),
  LOGIN_THROTTLE_MAX_DELAY: duration('a duration').default(300),
  LOGIN_THROTTLE_QUIET: duration('a duration').default(900),
  // Logins to one account from addresses that never logged into it share this budget per window.
  LOGIN_THROTTLE_ACCOUNT_BUDGET: int(0, 1_000_000).default(20),
  LOGIN_THROTTLE_ACCOUNT_WINDOW: duration('a duration').default(3600),
  LOGIN_KNOWN_ADDRESS_TTL: duration('a duration').default(90 * 86400),
  REFRESH_THROTTLE_PER_MINUTE: int(0, 1_000_000).default(60),
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
    .default([]),
  METRICS_SOCKET_DIR: optionalText.optional(),
  SLOW_REQUEST_MS: int(0, 3_600_000).default(1000),
  USER_ID_CLAIM: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected a claim name such as user_id').default('user_id'),
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
    .default([]),
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
    .default(new Set(EVENT_TYPES)),
  // The Standard Webhooks spec recommends 15 to 30 s for the receiver to answer.
  WEBHOOK_TIMEOUT: duration('a duration').default(15),
  WEBHOOK_CONNECT_TIMEOUT: duration('a duration').default(5),
  WEBHOOK_MAX_AGE: duration('a duration').default(86400),
  WEBHOOK_RETRY_BASE_DELAY: duration('a duration').default(5),
  WEBHOOK_RETRY_MAX_DELAY: duration('a duration').default(3600),
  WEBHOOK_POLL_INTERVAL: duration('a duration').default(1),
  WEBHOOK_BATCH_SIZE: int(1, 1000).default(20),
  // Plain http:// receivers with NODE_ENV=production (a receiver on the same private network, in
  // development or tests); otherwise production sends only over https://.
  WEBHOOK_ALLOW_HTTP: bool.default(false),
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
    .default([]),
});

/** Every variable loadConfig reads (the deployment manifests are checked against it). */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(schema.shape);

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

function invalid(name: string, message: string): ConfigError {
  return new ConfigError(`Invalid configuration:\n  ${name}: ${message}`);
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

/** Reads the given environment (normally process.env). Throws ConfigError naming every bad variable. */
export function loadConfig(env: Record<string, string | undefined>): LoadedConfig {
  // Empty values count as unset, as in a .env file with `ISSUER=`.
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = schema.safeParse(present);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => {
      const name = issue.path.join('.') || '(environment)';
      const message = issue.code === 'invalid_type' && present[name] === undefined ? 'is required' : issue.message;
      return `  ${name}: ${message}`;
    });
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
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
    if (err instanceof KeyError) throw new ConfigError(`Invalid configuration:\n  ${err.message}`);
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
  if (e.WEBHOOK_CONNECT_TIMEOUT > e.WEBHOOK_TIMEOUT) throw invalid('WEBHOOK_CONNECT_TIMEOUT', 'must not exceed WEBHOOK_TIMEOUT');
  if (e.WEBHOOK_RETRY_BASE_DELAY > e.WEBHOOK_RETRY_MAX_DELAY) throw invalid('WEBHOOK_RETRY_BASE_DELAY', 'must not exceed WEBHOOK_RETRY_MAX_DELAY');

  return {
    warnings,
    config: {
      env: e.NODE_ENV,
      host: e.HOST,
      port: e.PORT,
      listenSocket: e.LISTEN_SOCKET,
      databaseUrl,
      dbPoolMax: e.DB_POOL_MAX,
      dbConnectTimeoutMs: e.DB_CONNECT_TIMEOUT * 1000,
      dbQueryTimeoutMs: e.DB_QUERY_TIMEOUT * 1000,
      logLevel: e.LOG_LEVEL,
      proxyHops: e.TRUST_PROXY_HOPS,
      keepAliveTimeoutMs: e.KEEP_ALIVE_TIMEOUT * 1000,
      shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT * 1000,
      shutdownDelayMs: e.SHUTDOWN_DELAY * 1000,
      maxBodyBytes: e.MAX_BODY_BYTES,
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
        keys,
        audience: e.AUDIENCE,
        issuer: e.ISSUER,
        leeway: e.LEEWAY,
        authHeaderTypes: e.AUTH_HEADER_TYPES,
        userIdClaim: e.USER_ID_CLAIM,
        sessionMaxLifetime: e.SESSION_MAX_LIFETIME,
        sessionReauthAge: e.SESSION_REAUTH_AGE,
        accessTokenClaims: e.ACCESS_TOKEN_CLAIMS,
        refreshReuseInterval: e.REFRESH_REUSE_INTERVAL,
      },
      clients,
      throttle: {
        loginFreeAttempts: e.LOGIN_THROTTLE_FREE_ATTEMPTS,
        loginMaxDelaySeconds: e.LOGIN_THROTTLE_MAX_DELAY,
        loginQuietSeconds: e.LOGIN_THROTTLE_QUIET,
        loginAccountBudget: e.LOGIN_THROTTLE_ACCOUNT_BUDGET,
        loginAccountWindowSeconds: e.LOGIN_THROTTLE_ACCOUNT_WINDOW,
        loginKnownAddressSeconds: e.LOGIN_KNOWN_ADDRESS_TTL,
        refreshPerMinute: e.REFRESH_THROTTLE_PER_MINUTE,
      },
      corsAllowedOrigins: e.CORS_ALLOWED_ORIGINS,
      metricsSocketDir: e.METRICS_SOCKET_DIR,
      slowRequestMs: e.SLOW_REQUEST_MS,
      webhooks: {
        endpoints: e.WEBHOOK_URL.map((url) => ({ url, key: webhookEndpointKey(url) })),
        secrets: webhookSecrets,
        events: e.WEBHOOK_EVENTS,
        timeoutMs: e.WEBHOOK_TIMEOUT * 1000,
        connectTimeoutMs: e.WEBHOOK_CONNECT_TIMEOUT * 1000,
        maxAgeMs: e.WEBHOOK_MAX_AGE * 1000,
        retryBaseMs: e.WEBHOOK_RETRY_BASE_DELAY * 1000,
        retryMaxMs: e.WEBHOOK_RETRY_MAX_DELAY * 1000,
        batchSize: e.WEBHOOK_BATCH_SIZE,
        pollMs: e.WEBHOOK_POLL_INTERVAL * 1000,
      },
    },
  };
}

/** The metrics collector's settings (app/metrics/server.ts): the scrape port and the workers' sockets. */
export interface CollectorConfig {
  host: string;
  port: number;
  socketDir: string;
  logLevel: Config['logLevel'];
}

const collectorSchema = z.object({
  METRICS_HOST: z.string().min(1).default('0.0.0.0'),
  METRICS_PORT: int(1, 65535).default(9464),
  METRICS_SOCKET_DIR: z.string().min(1),
  LOG_LEVEL: schema.shape.LOG_LEVEL,
});

export function loadCollectorConfig(env: Record<string, string | undefined>): CollectorConfig {
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = collectorSchema.safeParse(present);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => `  ${issue.path.join('.')}: ${present[String(issue.path[0])] === undefined ? 'is required' : issue.message}`);
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  return { host: e.METRICS_HOST, port: e.METRICS_PORT, socketDir: e.METRICS_SOCKET_DIR, logLevel: e.LOG_LEVEL };
}
