// Metrics end to end: `docker compose --profile monitoring up` with two PM2 workers. Requests go
// through nginx as a client's would; the container's scrape is read as Prometheus reads it (on
// METRICS_PORT inside the compose network, here through `docker exec`), and Prometheus itself is
// asked over its HTTP API what it has scraped.
//
// Then, on the same stack (its settings already let one address send load through nginx), the
// generated suite runs through nginx: the same properties as test/integration/property.test.ts.
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LEGACY_REFRESH_COOKIE, REFRESH_COOKIE } from '../../app/auth/cookie';
import { openApiDocument } from '../../app/http/openapi';
import type { OpenApiDocument, RequestWorld } from '../support/generative/openapi-requests';
import { generativeSuite, loggedIn, problems, send as sendGenerated } from '../support/generative/property';
import { REGRESSIONS } from '../support/generative/regressions';
import type { RealSession } from '../support/generative/token-grammar';
import { decodeJwt, request, type Reply } from '../support/http';
import { startStack, type Stack } from '../support/stack';

const SIGNING_KEY = 'e2e-metrics-signing-key-0123456789abcdefghijklmnopqrstuvwxyz';
const ORIGIN = 'https://app.example.test';
let stack: Stack;

beforeAll(async () => {
  stack = await startStack({
    project: `kasmon${process.pid}`,
    profiles: ['monitoring'],
    env: {
      NODE_ENV: 'production',
      SIGNING_KEY,
      POSTGRES_PASSWORD: 'e2e-db-password',
      WEB_CONCURRENCY: '2',
      // All load comes from one address here.
      LOGIN_RATE: '1000r/s',
      LOGIN_BURST: '1000',
      TOKEN_RATE: '1000r/s',
      TOKEN_BURST: '1000',
      REFRESH_THROTTLE_PER_MINUTE: '0',
      // The generated suite's logins, wrong passwords included, come from this one address too.
      LOGIN_THROTTLE_FREE_ATTEMPTS: '1000',
      LOGIN_THROTTLE_ACCOUNT_BUDGET: '0',
      // The failure floor (tested in passwords.test.ts) would hold each of the generated wrong logins a second.
      FAILED_LOGIN_MIN_TIME: '0',
      CORS_ALLOWED_ORIGINS: ORIGIN,
    },
  });
  const r = await stack.exec('app', ['npm', 'run', '-s', 'cli', '--', 'createuser', 'alice', '--password-stdin'], 'alice-password-1');
  expect(r.code, r.stderr).toBe(0);
}, 600_000);

afterAll(async () => {
  await stack?.down({ removeVolumes: true });
}, 120_000);

const post = (path: string, json: unknown) => request(stack.url, 'POST', path, { json });

/** The container's scrape, as Prometheus gets it. */
async function scrape(): Promise<string> {
  const r = await stack.exec('app', [
    'node', '-e', 'fetch("http://127.0.0.1:9464/metrics").then(async (r) => { if (!r.ok) process.exit(1); process.stdout.write(await r.text()); })',
  ]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
}

/** Every sample of a metric whose labels include `labels`. */
function samples(text: string, name: string, labels: Record<string, string> = {}): { labels: Record<string, string>; value: number }[] {
  const out = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) out.push({ labels: have, value: Number(m[3]) });
  }
  return out;
}
const value = (text: string, name: string, labels: Record<string, string>) => samples(text, name, labels).reduce((sum, s) => sum + s.value, 0);

async function login(): Promise<{ access: string; refresh: string }> {
  const r = await post('/api/token/', { username: 'alice', password: 'alice-password-1' });
  expect(r.status, r.text).toBe(200);
  return r.json;
}

/** `n` requests through nginx, `parallel` at a time; every one must succeed as `expected`. */
async function send(n: number, parallel: number, one: () => Promise<Reply>, expected: number): Promise<void> {
  let next = 0;
  const statuses: number[] = [];
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < n) {
        next += 1;
        statuses.push((await one()).status);
      }
    }),
  );
  expect(statuses.filter((s) => s !== expected)).toEqual([]);
  expect(statuses).toHaveLength(n);
}

const ME = { method: 'GET', route: '/api/me/', status: '200' };

describe('the container scrape', () => {
  it('N requests through nginx to two workers: exactly N more in one scrape, served by both', async () => {
    const { access } = await login();
    const before = await scrape();
    const N = 300;
    await send(N, 8, () => request(stack.url, 'GET', '/api/me/', { headers: { Authorization: `Bearer ${access}` } }), 200);
    const after = await scrape();
    expect(value(after, 'http_requests_total', ME) - value(before, 'http_requests_total', ME)).toBe(N);
    expect(value(after, 'http_request_duration_seconds_count', { method: 'GET', route: '/api/me/' }) -
      value(before, 'http_request_duration_seconds_count', { method: 'GET', route: '/api/me/' })).toBe(N);
    // The sum is over both workers: each served part of it.
    const served = (text: string, worker: string) => value(text, 'http_worker_requests_total', { worker });
    for (const w of ['0', '1']) expect(served(after, w) - served(before, w)).toBeGreaterThan(0);
    expect(value(after, 'metrics_collector_workers', {})).toBe(2);
  });

  it('a login, a failed login and a reused refresh token: exactly one more of each', async () => {
    const before = await scrape();
    const pair = await login();
    expect((await post('/api/token/', { username: 'alice', password: 'wrong-password' })).status).toBe(401);
    expect((await post('/api/token/refresh/', { refresh: pair.refresh })).status).toBe(200);
    const replay = await post('/api/token/refresh/', { refresh: pair.refresh });
    expect(replay.status).toBe(401);
    const after = await scrape();
    const delta = (name: string, labels: Record<string, string>) => value(after, name, labels) - value(before, name, labels);
    expect(delta('auth_logins_total', { outcome: 'success' })).toBe(1);
    expect(delta('auth_logins_total', { outcome: 'failure' })).toBe(1);
    expect(delta('auth_refreshes_total', { outcome: 'rotated' })).toBe(1);
    expect(delta('auth_refreshes_total', { outcome: 'reused' })).toBe(1);
    expect(delta('auth_revocations_total', { reason: 'reuse' })).toBe(1);
    expect(delta('http_requests_total', { method: 'POST', route: '/api/token/', status: '401' })).toBe(1);
  });

  it('has per-worker process metrics, the feed, the pool and Node\'s defaults', async () => {
    const text = await scrape();
    const workers = samples(text, 'auth_revocation_feed_up');
    expect(workers.map((s) => s.labels.worker).sort()).toEqual(['0', '1']);
    expect(workers.every((s) => s.value === 1)).toBe(true);
    expect(samples(text, 'process_resident_memory_bytes').map((s) => s.labels.worker).sort()).toEqual(['0', '1']);
    expect(samples(text, 'auth_revocation_feed_last_contact_age_seconds')).toHaveLength(2);
    expect(samples(text, 'nodejs_eventloop_lag_p99_seconds')).toHaveLength(2);
    expect(value(text, 'db_pool_connections_max', {})).toBe(20); // DB_POOL_MAX 10 × 2 workers
    for (const name of ['db_pool_connections_in_use', 'db_pool_connections_idle', 'db_pool_waiting_requests']) {
      expect(samples(text, name)).toHaveLength(1);
    }
  });

  it('counts never go back when PM2 replaces workers (reload, and a killed worker)', async () => {
    const before = value(await scrape(), 'http_requests_total', ME);
    expect(before).toBeGreaterThan(0);
    const reload = await stack.exec('app', ['pm2', 'reload', 'api']);
    expect(reload.code, reload.stderr).toBe(0);
    const afterReload = await scrape();
    expect(value(afterReload, 'http_requests_total', ME)).toBe(before); // the old workers' final counts
    expect(value(afterReload, 'metrics_collector_workers', {})).toBe(2);

    const pids = samples(afterReload, 'auth_revocation_feed_up').map((s) => s.labels.pid);
    const killed = await stack.exec('app', ['node', '-e', `process.kill(${pids[0]}, 'SIGKILL')`]);
    expect(killed.code, killed.stderr).toBe(0);
    await expect.poll(async () => samples(await scrape(), 'auth_revocation_feed_up').filter((s) => s.labels.pid !== pids[0]).length, { timeout: 30_000 }).toBe(2);
    expect(value(await scrape(), 'http_requests_total', ME)).toBe(before); // what was last read of the dead one
  });

  it('is never reachable through nginx, and its port is not published', async () => {
    const r = await request(stack.url, 'GET', '/metrics');
    expect(r.status).toBe(404);
    expect(r.text).not.toContain('http_requests_total');
    const port = await stack.docker('port', stack.container('app'));
    expect(port.stdout.trim()).toBe('');
  });
});

describe('Prometheus (--profile monitoring)', () => {
  const api = async (path: string) => {
    const r = await request(stack.published('prometheus', 9090), 'GET', path);
    expect(r.status, r.text).toBe(200);
    return r.json.data;
  };

  it('scrapes the app and has the stack\'s series', async () => {
    await expect
      .poll(async () => (await api('/api/v1/targets')).activeTargets.map((t: { health: string }) => t.health), { timeout: 60_000, interval: 2_000 })
      .toEqual(['up']);
    await expect
      .poll(async () => {
        const result = (await api(`/api/v1/query?query=${encodeURIComponent('http_requests_total{route="/api/me/",status="200"}')}`)).result;
        return result.length === 1 ? Number(result[0].value[1]) : 0;
      }, { timeout: 60_000, interval: 2_000 })
      .toBeGreaterThanOrEqual(300);
    // Per worker (a replaced worker's series go stale at the next scrape).
    await expect
      .poll(async () => {
        const feed = (await api(`/api/v1/query?query=${encodeURIComponent('auth_revocation_feed_up == 1')}`)).result;
        return feed.map((s: { metric: Record<string, string> }) => s.metric.worker).sort();
      }, { timeout: 30_000, interval: 2_000 })
      .toEqual(['0', '1']);
    // Summed over the workers: the failed login reached one of them, not necessarily the first series.
    await expect
      .poll(async () => {
        const logins = (await api(`/api/v1/query?query=${encodeURIComponent('sum(auth_logins_total{outcome="failure"})')}`)).result;
        return logins.length === 1 ? Number(logins[0].value[1]) : 0;
      }, { timeout: 30_000, interval: 2_000 })
      .toBeGreaterThanOrEqual(1);
  });

  it('has loaded the alert rules; one replayed refresh token fires RefreshTokenReuse, and nothing else fires', async () => {
    const groups = (await api('/api/v1/rules')).groups as { rules: { name: string; health: string }[] }[];
    const rules = groups.flatMap((g) => g.rules);
    expect(rules.map((r) => r.name).sort()).toEqual(
      [
        'CredentialStuffing', 'HighErrorRatio', 'HighLatencyP99', 'MetricsTargetDown', 'ReadinessFailing', 'RefreshTokenReuse', 'RevocationFeedDown',
        'RevocationFeedSilent', 'WebhookDeliveryFailed', 'WebhooksBacklogged',
      ],
    );
    expect(rules.every((r) => r.health !== 'err')).toBe(true);
    // It fires on the first reuse. The replay above may have come before Prometheus's first scrape
    // (then it never saw the step from 0), so replay once more after it holds a sample of the series.
    const reused = `sum(auth_refreshes_total{outcome="reused"})`;
    await expect.poll(async () => (await api(`/api/v1/query?query=${encodeURIComponent(reused)}`)).result.length, { timeout: 60_000, interval: 2_000 }).toBe(1);
    const seen = Number((await api(`/api/v1/query?query=${encodeURIComponent(reused)}`)).result[0].value[1]);
    const pair = await login();
    expect((await post('/api/token/refresh/', { refresh: pair.refresh })).status).toBe(200);
    expect((await post('/api/token/refresh/', { refresh: pair.refresh })).status).toBe(401);
    await expect.poll(async () => Number((await api(`/api/v1/query?query=${encodeURIComponent(reused)}`)).result[0].value[1]), { timeout: 60_000, interval: 2_000 }).toBeGreaterThan(seen);
    // Over a window, so a slow runner still sees that it fired.
    const fired = 'max_over_time(ALERTS{alertname="RefreshTokenReuse",alertstate="firing"}[1h])';
    await expect.poll(async () => (await api(`/api/v1/query?query=${encodeURIComponent(fired)}`)).result.length, { timeout: 90_000, interval: 2_000 }).toBe(1);
    const alerts = (await api('/api/v1/alerts')).alerts as { labels: { alertname: string }; state: string }[];
    expect(alerts.filter((a) => a.state === 'firing' && a.labels.alertname !== 'RefreshTokenReuse').map((a) => a.labels.alertname)).toEqual([]);
  });
});

describe('the generated suite, through nginx', () => {
  const DOCUMENT = openApiDocument({ authScheme: 'Bearer' }) as unknown as OpenApiDocument;
  const world: RequestWorld = {
    current: { secret: SIGNING_KEY, kid: undefined },
    sessions: [],
    users: [],
    clients: [],
    clientIds: [],
    clientTokens: [],
    now: () => Math.floor(Date.now() / 1000),
    allowedOrigin: ORIGIN,
    cookie: { name: REFRESH_COOKIE, legacy: LEGACY_REFRESH_COOKIE },
  };
  const ids = new Map<string, number>();
  async function renew(): Promise<void> {
    const sessions: RealSession[] = [];
    for (const { username, password } of world.users) {
      for (let i = 0; i < 3; i++) {
        const pair = await loggedIn(() => post('/api/token/', { username, password }));
        sessions.push({ userId: ids.get(username)!, username, ...pair, sid: decodeJwt(pair.access).payload.sid as string });
      }
    }
    world.sessions.splice(0, world.sessions.length, ...sessions);
  }

  beforeAll(async () => {
    for (let u = 0; u < 4; u++) {
      const [username, password] = [`gen-user-${u}`, `gen-password-${u}`];
      const r = await stack.exec('app', ['npm', 'run', '-s', 'cli', '--', 'createuser', username, '--password-stdin'], password);
      expect(r.code, r.stderr).toBe(0);
      ids.set(username, Number(/\(id (\d+)\)/.exec(r.stdout)![1]));
      world.users.push({ username, password });
    }
    await renew();
  }, 180_000);

  it('generates from the document nginx serves at /api/schema/', async () => {
    expect((await request(stack.url, 'GET', '/api/schema/')).json).toEqual(DOCUMENT);
  });

  it.each(REGRESSIONS)('regression: $name', async ({ request: make }) => {
    const req = make(world);
    const answer = await sendGenerated(stack.url, req, new http.Agent());
    expect(problems(req, answer, 'nginx', undefined), `${answer.status} ${answer.body}`).toEqual([]);
  });

  generativeSuite({ document: DOCUMENT, target: () => ({ url: stack.url, via: 'nginx', world, document: DOCUMENT, renew }) });
});
