import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { CONFIG_VARIABLES, ConfigError, loadCollectorConfig, loadConfig, loadProcessConfig } from '../../app/config';
import { ROOT } from '../support/images';
import { thrown } from '../support/thrown';

const base = { DATABASE_URL: 'postgres://u:p@db:5432/app' };
const fail = (env: Record<string, string | undefined>) => thrown(() => loadConfig(env), ConfigError).message;

describe('loadConfig', () => {
  it('applies simplejwt defaults, with rotation and blacklisting on', () => {
    const { config, warnings } = loadConfig(base);
    expect(config.jwt).toMatchObject({
      accessTokenLifetime: 300,
      refreshTokenLifetime: 86400,
      rotateRefreshTokens: true,
      blacklistAfterRotation: true,
      algorithm: 'HS256',
      leeway: 0,
      authHeaderTypes: ['Bearer'],
      userIdClaim: 'user_id',
      audience: undefined,
      issuer: undefined,
      sessionMaxLifetime: 30 * 86400,
      sessionReauthAge: 15 * 60,
    });
    expect(config.corsAllowedOrigins).toEqual([]);
    expect(config.port).toBe(3000);
    expect(config.env).toBe('development');
    expect(config.jwt.keys.active.signing.symmetricKeySize).toBeGreaterThanOrEqual(32);
    expect(warnings.join()).toMatch(/SIGNING_KEY is not set/);
  });

  it('gives a random key per start in development', () => {
    const secret = () => loadConfig(base).config.jwt.keys.active.signing.export().toString('hex');
    expect(secret()).not.toBe(secret());
  });

  it('reads durations, booleans, lists and numbers', () => {
    const { config } = loadConfig({
      ...base,
      ACCESS_TOKEN_LIFETIME: '15m',
      REFRESH_TOKEN_LIFETIME: '7d',
      ROTATE_REFRESH_TOKENS: 'false',
      BLACKLIST_AFTER_ROTATION: 'no',
      AUTH_HEADER_TYPES: 'Bearer, JWT',
      LEEWAY: '10',
      AUDIENCE: 'api',
      ISSUER: '',
      PORT: '8080',
      SESSION_REAUTH_AGE: '1h',
      SIGNING_KEY: 'k', // a toy key: fine on loopback only
      HTTP_BIND: '127.0.0.1',
    });
    expect(config.jwt).toMatchObject({
      accessTokenLifetime: 900,
      refreshTokenLifetime: 604800,
      rotateRefreshTokens: false,
      blacklistAfterRotation: false,
      authHeaderTypes: ['Bearer', 'JWT'],
      leeway: 10,
      audience: 'api',
      issuer: undefined,
      sessionReauthAge: 3600,
    });
    expect(config.port).toBe(8080);
  });

  it('names every bad variable and what it expects', () => {
    const message = fail({ ...base, ACCESS_TOKEN_LIFETIME: 'soon', ROTATE_REFRESH_TOKENS: 'maybe', PORT: '70000', ALGORITHM: 'none' });
    expect(message).toMatch(/ACCESS_TOKEN_LIFETIME: expected a duration like 300, 300s, 5m, 1h or 1d \(got "soon"\)/);
    expect(message).toMatch(/ROTATE_REFRESH_TOKENS: expected true or false/);
    expect(message).toMatch(/PORT: expected a whole number from 0 to 65535/);
    expect(message).toMatch(/ALGORITHM:/);
  });

  it('requires DATABASE_URL and checks its form', () => {
    expect(fail({})).toMatch(/DATABASE_URL: is required/);
    expect(fail({ DATABASE_URL: 'mysql://x' })).toMatch(/DATABASE_URL: expected a URL like postgres:/);
  });

  it('takes the database password from DATABASE_PASSWORD_FILE (a Docker or Kubernetes secret), any character', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'kas-config-'));
    try {
      const file = path.join(dir, 'db-password');
      const password = 'p@ss:w/rd?#%41 ü';
      writeFileSync(file, `${password}\n`); // the newline an editor adds is not part of it
      const url = loadConfig({ DATABASE_URL: 'postgres://app@db:5432/app', DATABASE_PASSWORD_FILE: file }).config.databaseUrl;
      const parsed = new URL(url);
      expect([parsed.username, decodeURIComponent(parsed.password), parsed.host, parsed.pathname]).toEqual(['app', password, 'db:5432', '/app']);
      expect(fail({ ...base, DATABASE_PASSWORD_FILE: file })).toMatch(/DATABASE_PASSWORD_FILE: DATABASE_URL has a password already/);
      expect(fail({ DATABASE_URL: 'postgres://app@db/app', DATABASE_PASSWORD_FILE: path.join(dir, 'nope') })).toMatch(
        /DATABASE_PASSWORD_FILE: cannot read .*nope: ENOENT/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses to start in production without a long signing key', () => {
    expect(fail({ ...base, NODE_ENV: 'production' })).toMatch(/SIGNING_KEY: is required when NODE_ENV=production/);
    expect(fail({ ...base, NODE_ENV: 'production', SIGNING_KEY: 'short' })).toMatch(/at least 32 bytes/);
    const { config, warnings } = loadConfig({ ...base, NODE_ENV: 'production', SIGNING_KEY: 'q8Vt1mZx4LwP0sKe7RbN2yHc5JdA9uGf' });
    expect(config.env).toBe('production');
    expect(warnings).toEqual([]);
  });

  it('refuses published, placeholder and repetitive keys in production', () => {
    for (const key of [
      'insecure-development-signing-key-do-not-use-in-production', // docker-compose.yml's default
      'ref-simplejwt-signing-key-test-only-do-not-deploy',
      'changeme-changeme-changeme-changeme',
      'secretsecretsecretsecretsecretsecret',
      'x'.repeat(64),
    ]) {
      expect(fail({ ...base, NODE_ENV: 'production', SIGNING_KEY: key })).toMatch(/SIGNING_KEY: (is a published default|is too repetitive|is the published development key)/);
    }
    // The same keys are fine for development on loopback.
    expect(loadConfig({ ...base, SIGNING_KEY: 'x'.repeat(64), HTTP_BIND: '127.0.0.1' }).config.jwt.keys.active.signing.export().toString()).toBe('x'.repeat(64));
  });

  it('refuses short, placeholder and repetitive keys whenever the stack listens beyond loopback, not only in production', () => {
    for (const exposed of [{ HTTP_BIND: '0.0.0.0' }, { HTTP_BIND: '192.0.2.7' }, { HOST: '0.0.0.0' }, {}]) {
      for (const [key, reason] of [['short', /at least 32 bytes/], ['changeme-changeme-changeme-changeme', /published default or a placeholder/], ['x'.repeat(64), /too repetitive/]] as const) {
        const message = fail({ ...base, SIGNING_KEY: key, ...exposed });
        expect(message, `${key} ${JSON.stringify(exposed)}`).toMatch(reason);
        expect(message).toMatch(/SIGNING_KEY: .* when the stack listens beyond loopback \((HTTP_BIND|HOST)=/);
      }
    }
    // On loopback a developer may use any key; an asymmetric key has no such check (its strength is its size).
    expect(loadConfig({ ...base, SIGNING_KEY: 'short', HOST: '127.0.0.1' }).config.env).toBe('development');
    expect(loadConfig({ ...base, SIGNING_KEY: 'q8Vt1mZx4LwP0sKe7RbN2yHc5JdA9uGf', HTTP_BIND: '0.0.0.0' }).warnings).toEqual([]);
  });

  it('refuses the published development database password beyond loopback and in production, and warns on loopback', () => {
    const dev = { DATABASE_URL: 'postgres://app:app-dev-password@postgres:5432/app' };
    for (const env of [{ HTTP_BIND: '0.0.0.0' }, { HTTP_BIND: '172.17.0.1' }, { HOST: '0.0.0.0' }, {}]) {
      expect(fail({ ...dev, ...env }), JSON.stringify(env)).toMatch(
        /DATABASE_URL: has the published development database password \(app-dev-password, docker-compose.yml's default POSTGRES_PASSWORD\) and the stack listens beyond loopback/,
      );
    }
    expect(fail({ ...dev, NODE_ENV: 'production', SIGNING_KEY: 'q8Vt1mZx4LwP0sKe7RbN2yHc5JdA9uGf', HTTP_BIND: '127.0.0.1' })).toMatch(
      /DATABASE_URL: has the published development database password .* and NODE_ENV=production/,
    );
    // Percent-encoded, or from DATABASE_PASSWORD_FILE: the same password.
    expect(fail({ DATABASE_URL: 'postgres://app:app%2Ddev%2Dpassword@postgres/app' })).toMatch(/published development database password/);
    const dir = mkdtempSync(path.join(tmpdir(), 'kas-config-'));
    try {
      writeFileSync(path.join(dir, 'pw'), 'app-dev-password\n');
      expect(fail({ DATABASE_URL: 'postgres://app@postgres/app', DATABASE_PASSWORD_FILE: path.join(dir, 'pw') })).toMatch(/published development database password/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const local = loadConfig({ ...dev, HTTP_BIND: '127.0.0.1' });
    expect(local.warnings).toContainEqual(expect.stringMatching(/database password is the published development one/));
    expect(loadConfig({ DATABASE_URL: 'postgres://app:s3cret-of-ours@postgres/app', HTTP_BIND: '0.0.0.0' }).config.databaseUrl).toMatch(/s3cret-of-ours/);
  });

  it('refuses CORS origins that are not https:// in production, localhost and loopback excepted', () => {
    const prod = { ...base, NODE_ENV: 'production', SIGNING_KEY: 'q8Vt1mZx4LwP0sKe7RbN2yHc5JdA9uGf' };
    const message = fail({ ...prod, CORS_ALLOWED_ORIGINS: 'https://app.example.com, http://app.example.com, http://10.0.0.5:8080' });
    expect(message).toMatch(/CORS_ALLOWED_ORIGINS: must be https:\/\/ origins when NODE_ENV=production \(http:\/\/ only for localhost and loopback addresses\); not: http:\/\/app.example.com, http:\/\/10.0.0.5:8080/);
    const ok = 'https://app.example.com, http://localhost:5173, http://127.0.0.1:3000, http://[::1]:8080';
    expect(loadConfig({ ...prod, CORS_ALLOWED_ORIGINS: ok }).config.corsAllowedOrigins).toHaveLength(4);
    // Development may list http:// origins (a dev server on the LAN).
    expect(loadConfig({ ...base, CORS_ALLOWED_ORIGINS: 'http://app.example.com' }).config.corsAllowedOrigins).toEqual(['http://app.example.com']);
  });

  it('refuses the published development key whenever the stack listens beyond loopback, and warns on every start with it', () => {
    const dev = 'insecure-development-signing-key-do-not-use-in-production';
    for (const exposed of [{ HTTP_BIND: '0.0.0.0' }, { HTTP_BIND: '192.0.2.7' }, { HTTP_BIND: '::' }, { HOST: '0.0.0.0' }, {}]) {
      expect(fail({ ...base, SIGNING_KEY: dev, ...exposed }), JSON.stringify(exposed)).toMatch(/SIGNING_KEY: is the published development key and the stack listens beyond loopback/);
    }
    for (const local of [{ HTTP_BIND: '127.0.0.1' }, { HTTP_BIND: 'localhost' }, { HTTP_BIND: '::1' }, { HOST: '127.0.0.1' }]) {
      const { warnings } = loadConfig({ ...base, SIGNING_KEY: dev, ...local });
      expect(warnings, JSON.stringify(local)).toEqual([expect.stringMatching(/published development key/)]);
    }
    // The compose stack as shipped: nginx published on loopback, the app listening on every interface.
    expect(loadConfig({ ...base, SIGNING_KEY: dev, HOST: '0.0.0.0', HTTP_BIND: '127.0.0.1' }).warnings).toHaveLength(1);
  });

  it('reads the session lifetime and the CORS origins, which must be bare origins', () => {
    const { config } = loadConfig({ ...base, SESSION_MAX_LIFETIME: '7d', CORS_ALLOWED_ORIGINS: 'https://app.example.com, http://localhost:5173' });
    expect(config.jwt.sessionMaxLifetime).toBe(7 * 86400);
    expect(config.corsAllowedOrigins).toEqual(['https://app.example.com', 'http://localhost:5173']);
    for (const bad of ['*', 'app.example.com', 'https://app.example.com/', 'https://app.example.com/path', 'ftp://x.example', 'null']) {
      expect(fail({ ...base, CORS_ALLOWED_ORIGINS: bad }), bad).toMatch(/CORS_ALLOWED_ORIGINS: expected origins like/);
    }
    expect(fail({ ...base, SESSION_MAX_LIFETIME: '0' })).toMatch(/SESSION_MAX_LIFETIME/);
  });

  it('reads the shutdown delay (default 0: a stopping worker stops accepting at once)', () => {
    expect(loadConfig(base).config.shutdownDelayMs).toBe(0);
    expect(loadConfig({ ...base, SHUTDOWN_DELAY: '5s' }).config.shutdownDelayMs).toBe(5000);
    expect(fail({ ...base, SHUTDOWN_DELAY: 'later' })).toMatch(/SHUTDOWN_DELAY: expected a duration/);
  });

  it('reads the refresh reuse interval (default 0: strict) and the failed-login floor (default 1 s; ms allowed, 0 off)', () => {
    expect(loadConfig(base).config.jwt.refreshReuseInterval).toBe(0);
    expect(loadConfig(base).config.failedLoginMinTimeMs).toBe(1000);
    const { config } = loadConfig({ ...base, REFRESH_REUSE_INTERVAL: '10s', FAILED_LOGIN_MIN_TIME: '750ms' });
    expect(config.jwt.refreshReuseInterval).toBe(10);
    expect(config.failedLoginMinTimeMs).toBe(750);
    expect(loadConfig({ ...base, REFRESH_REUSE_INTERVAL: '0', FAILED_LOGIN_MIN_TIME: '0' }).config).toMatchObject({ failedLoginMinTimeMs: 0, jwt: { refreshReuseInterval: 0 } });
    expect(loadConfig({ ...base, FAILED_LOGIN_MIN_TIME: '2' }).config.failedLoginMinTimeMs).toBe(2000);
    expect(fail({ ...base, REFRESH_REUSE_INTERVAL: 'soon' })).toMatch(/REFRESH_REUSE_INTERVAL: expected a duration like 0, 10, 10s or 1m/);
    // "1000" is read as seconds, as every duration here: more than the bound, so refused rather than a 17-minute login.
    expect(fail({ ...base, FAILED_LOGIN_MIN_TIME: '1000' })).toMatch(/FAILED_LOGIN_MIN_TIME: expected a duration like 0, 750ms, 1s or 2s, at most 10s/);
  });

  it('rejects a zero lifetime and odd header types', () => {
    expect(fail({ ...base, ACCESS_TOKEN_LIFETIME: '0' })).toMatch(/ACCESS_TOKEN_LIFETIME/);
    expect(fail({ ...base, AUTH_HEADER_TYPES: 'Bea rer"' })).toMatch(/AUTH_HEADER_TYPES/);
  });
});

describe('loadProcessConfig (what ecosystem.config.js gives PM2)', () => {
  const run = (env: Record<string, string | undefined>, cpus = 4) => loadProcessConfig(env, cpus);
  const fail = (env: Record<string, string | undefined>, cpus = 4) => thrown(() => run(env, cpus), ConfigError).message;

  it('runs a worker per CPU, shares the CPUs out for hashing, and starts the collector by default', () => {
    expect(run({ SIGNING_KEY: 'k' })).toMatchObject({ env: 'production', workers: 4, hashConcurrency: 1, webhooks: false });
    expect(run({ SIGNING_KEY: 'k' }).metricsSocketDir).toMatch(/koa-auth-stack-metrics$/);
    expect(run({ SIGNING_KEY: 'k', WEB_CONCURRENCY: '3' }, 8)).toMatchObject({ workers: 3, hashConcurrency: 3 });
    expect(run({ WEB_CONCURRENCY: '1', PASSWORD_HASH_CONCURRENCY: '2' }, 8)).toMatchObject({ workers: 1, hashConcurrency: 2 });
  });

  it("gives PM2 a kill timeout above a worker's whole stop, and warns when Docker's grace period is shorter", () => {
    expect(run({ SIGNING_KEY: 'k' }).killTimeoutMs).toBe(15_000);
    expect(run({ SIGNING_KEY: 'k', SHUTDOWN_DELAY: '5s', SHUTDOWN_TIMEOUT: '8s' }).killTimeoutMs).toBe(18_000); // stack.yml's
    expect(loadConfig({ ...base, SHUTDOWN_DELAY: '5s', SHUTDOWN_TIMEOUT: '21s' }).warnings.join('\n')).toMatch(/SHUTDOWN_DELAY \+ SHUTDOWN_TIMEOUT is 26 s: raise stop_grace_period above 31 s/);
    expect(loadConfig({ ...base, SHUTDOWN_DELAY: '5s', SHUTDOWN_TIMEOUT: '8s' }).warnings.join('\n')).not.toMatch(/stop_grace_period/);
  });

  it('reads an empty value as unset, as compose passes `${NAME:-}`', () => {
    expect(run({ SIGNING_KEY: 'k', WEB_CONCURRENCY: '', METRICS_PORT: '', WEBHOOK_URL: '', NODE_ENV: '' })).toMatchObject({ env: 'production', workers: 4, webhooks: false });
    expect(run({ SIGNING_KEY: 'k', METRICS_PORT: '' }).metricsSocketDir).toBeDefined();
  });

  it('turns the collector off with METRICS_PORT=0 and the webhook sender on with WEBHOOK_URL', () => {
    expect(run({ WEB_CONCURRENCY: '1', METRICS_PORT: '0' }).metricsSocketDir).toBeUndefined();
    expect(run({ WEB_CONCURRENCY: '1', METRICS_SOCKET_DIR: '/run/m' }).metricsSocketDir).toBe('/run/m');
    expect(run({ WEB_CONCURRENCY: '1', WEBHOOK_URL: 'https://siem.example.com/hook' }).webhooks).toBe(true);
  });

  it('refuses more than one worker without a shared key, and bad values, in the app’s own words', () => {
    expect(fail({ WEB_CONCURRENCY: '2' })).toMatch(/^Invalid configuration:\n {2}SIGNING_KEY: is required \(or SIGNING_KEY_FILE\) when running more than one worker \(generate one with: npm run cli -- genkey HS256\)/);
    expect(fail({}, 2)).toMatch(/SIGNING_KEY: is required/);
    expect(run({ SIGNING_KEY_FILE: '/run/secrets/k', WEB_CONCURRENCY: '2' }).workers).toBe(2);
    expect(fail({ WEB_CONCURRENCY: '0' })).toMatch(/WEB_CONCURRENCY: expected a whole number from 1 to 1024 \(got "0"\)/);
    expect(fail({ WEB_CONCURRENCY: '1', METRICS_PORT: 'x', WEBHOOK_URL: 'nope' })).toMatch(/METRICS_PORT: expected a whole number[^]*WEBHOOK_URL: expected URLs/);
  });

  it('gives the collector the same port, and refuses 0 there', () => {
    expect(loadCollectorConfig({ METRICS_SOCKET_DIR: '/run/m', METRICS_PORT: '' }).port).toBe(9464);
    expect(thrown(() => loadCollectorConfig({ METRICS_SOCKET_DIR: '/run/m', METRICS_PORT: '0' }), ConfigError).message).toMatch(/METRICS_PORT: is 0/);
  });
});

describe('the deployment files', () => {
  // Settings whose value the file chooses on purpose rather than the app's default.
  // SHUTDOWN_DELAY/TIMEOUT: the Swarm's nginx learns of a stopping task late (stack.yml says why).
  const chosen = new Set(['NODE_ENV', 'HTTP_BIND', 'SIGNING_KEY', 'SHUTDOWN_DELAY', 'SHUTDOWN_TIMEOUT']);
  // Settings of the container's own layout: where the app listens (nginx is told app:3000), and the
  // metrics collector's private socket directory and address inside the container.
  const INTERNAL = new Set(['HOST', 'PORT', 'LISTEN_SOCKET', 'METRICS_SOCKET_DIR', 'METRICS_HOST']);
  const fixedBy: Record<string, Set<string>> = {
    'docker-compose.yml': new Set(),
    // The key comes from a secret (SIGNING_KEY_FILE), and a Swarm publishes no loopback-only port.
    'deploy/swarm/stack.yml': new Set(['SIGNING_KEY', 'HTTP_BIND']),
  };
  for (const file of ['docker-compose.yml', 'deploy/swarm/stack.yml']) {
    it(`${file} gives the app longer to stop than PM2's kill timeout`, () => {
      const app = (parse(readFileSync(`${ROOT}/${file}`, 'utf8'), { merge: true }) as { services: { app: { stop_grace_period: string; environment: Record<string, string> } } }).services.app;
      // The file's own value of each shutdown setting: its `${NAME:-fallback}`, or the app's default.
      const shutdown = Object.fromEntries(
        ['SHUTDOWN_DELAY', 'SHUTDOWN_TIMEOUT'].map((name) => [name, /:-([^}]*)\}/.exec(app.environment[name] ?? '')?.[1] ?? '']),
      );
      const { killTimeoutMs } = loadProcessConfig({ SIGNING_KEY: 'k', ...shutdown }, 1);
      const grace = /^(\d+)s$/.exec(app.stop_grace_period);
      expect(grace, app.stop_grace_period).not.toBeNull();
      expect(Number(grace![1]) * 1000).toBeGreaterThan(killTimeoutMs);
      expect(loadConfig({ ...base, ...shutdown }).warnings.join('\n')).not.toMatch(/stop_grace_period/);
    });

    it(`${file} passes the app's settings through only when set, restating no default`, () => {
      const text = readFileSync(`${ROOT}/${file}`, 'utf8');
      const passed = [...text.matchAll(/^\s+([A-Z_]+): \$\{([A-Z_]+)(:?-)([^}]*)\}$/gm)].filter((m) => CONFIG_VARIABLES.includes(m[1]!));
      // Every setting reaches the app, but those the file fixes for its own layout.
      const named = new Set([...text.matchAll(/^\s+([A-Z_]+):/gm)].map((m) => m[1]));
      const missing = CONFIG_VARIABLES.filter((name) => !named.has(name) && !(fixedBy[file]!.has(name) || INTERNAL.has(name)));
      expect(missing, `${file} should pass these through (or say why not)`).toEqual([]);
      for (const [line, name, from, , fallback] of passed) {
        if (chosen.has(name!)) continue;
        expect(from, line).toBe(name);
        expect(fallback, line).toBe('');
      }
    });
  }
});
