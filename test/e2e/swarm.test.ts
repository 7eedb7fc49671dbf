// deploy/swarm/stack.yml on a swarm of three Docker engines on this machine (each dockerd in its own
// network namespace, support/engines.ts), tested as clients and ops see it: every node's nginx on
// its own address, the swarm driven with the docker CLI.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine } from '../support/engines';
import { request, tlsRequester, type Reply } from '../support/http';
import { ROOT } from '../support/images';
import { buildSwarmImages, startSwarm, type Swarm, type Task } from '../support/swarm';

const STACK = 'kasw';
const PASSWORD = 'alice-password-1';
// Characters a URL would mangle: the password travels as a file (a Docker secret), the app
// percent-encodes it, Postgres reads it raw.
const DB_PASSWORD = `db-${randomBytes(6).toString('hex')}-p@ss:w/rd?#%41`;

// The edge's certificate, for a name every node serves (a load balancer's or DNS round robin's):
// the nodes are dialled by address, the certificate checked for the name.
const SERVER_NAME = 'kas.test';
const certDir = mkdtempSync(path.join(tmpdir(), 'swarm-tls-'));
execFileSync('bash', [path.join(ROOT, 'scripts/make-dev-cert.sh'), certDir, SERVER_NAME]);
const TLS_CERT = readFileSync(path.join(certDir, 'tls.crt'), 'utf8');
const TLS_KEY = readFileSync(path.join(certDir, 'tls.key'), 'utf8');
rmSync(certDir, { recursive: true, force: true });
const tls = tlsRequester({ ca: TLS_CERT, servername: SERVER_NAME });

let swarm: Swarm;
const t0 = Date.now();
const log = (message: string) => console.log(`[swarm ${((Date.now() - t0) / 1000).toFixed(1)} s] ${message}`);

const url = (engine: Engine) => `https://${engine.address}`;
const node = (i: number) => swarm.engines[i - 1]!;
const bearer = (access: string) => ({ Authorization: `Bearer ${access}` });
const get = (engine: Engine, path: string, headers: Record<string, string> = {}) => tls.request(url(engine), 'GET', path, { headers });
const post = (engine: Engine, path: string, json: unknown, headers: Record<string, string> = {}) =>
  tls.request(url(engine), 'POST', path, { json, headers });

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${swarm.logs()}`);
    await sleep(250);
  }
}

async function login(engine: Engine): Promise<{ access: string; refresh: string }> {
  const r = await post(engine, '/api/token/', { username: 'alice', password: PASSWORD });
  expect(r.status, r.text).toBe(200);
  return r.json;
}

/**
 * Milliseconds from `since` until `engine` refuses the access token (polling): revocations reach every
 * worker on every node through Postgres NOTIFY, a moment after the logout's answer.
 */
async function msUntilRefused(engine: Engine, access: string, since: number): Promise<number> {
  for (;;) {
    const r = await get(engine, '/api/me/', bearer(access));
    if (r.status === 401) return Date.now() - since;
    expect(r.status, r.text).toBe(200);
    if (Date.now() - since > 5_000) return Infinity;
    await sleep(10);
  }
}

// Run inside an app task: its container's metrics port, as Prometheus scrapes it.
const METRICS_SCRAPE = "fetch('http://127.0.0.1:9464/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))";

const sameSet = (a: (string | undefined)[], b: (string | undefined)[]) => JSON.stringify([...a].sort()) === JSON.stringify([...b].sort());

/** Waits until every given node's nginx sends to exactly these tasks (no more, no fewer). */
async function nginxFollows(tasks: Task[], engines: Engine[]): Promise<void> {
  const want = tasks.map((t) => t.address);
  for (const e of engines) {
    await until(`nginx on node ${e.index} to send to ${want.join(' ')}`, async () => (sameSet(await swarm.nginxUpstream(e), want) ? true : undefined), 20_000);
  }
}

interface Outcome {
  at: number; // when the request was sent (ms since the epoch)
  node: number;
  status: number; // 0: no HTTP answer
  detail: string;
}

/**
 * Steady traffic, as a client population would send it: `clients` loops, each sending one request
 * after another to the given nodes in turn, alternating GET /api/me/ and POST /api/token/verify/
 * (a non-idempotent request, which nginx may retry only when it was never delivered). Returns a
 * stop function that resolves to every request's outcome.
 */
function traffic(engines: Engine[], access: string, clients = 4): () => Promise<Outcome[]> {
  let running = true;
  const outcomes: Outcome[] = [];
  const loops = Array.from({ length: clients }, async (_, c) => {
    for (let i = c; running; i++) {
      const engine = engines[i % engines.length]!;
      const at = Date.now();
      let r: Reply | undefined;
      let detail = '';
      try {
        r =
          i % 2 === 0
            ? await get(engine, '/api/me/', bearer(access))
            : await post(engine, '/api/token/verify/', { token: access });
        if (r.status !== 200) detail = r.text.slice(0, 200);
      } catch (err) {
        detail = String((err as Error).cause ?? err);
      }
      outcomes.push({ at, node: engine.index, status: r?.status ?? 0, detail });
    }
  });
  return async () => {
    running = false;
    await Promise.all(loops);
    return outcomes;
  };
}

const failed = (outcomes: Outcome[]) => outcomes.filter((o) => o.status !== 200);

// The images: built once for all e2e tests (a cache hit when the compose stack test built them).
beforeAll(async () => {
  await buildSwarmImages();
  log('images built');
}, 600_000);

let setup: Promise<Swarm> | undefined;
beforeAll(async () => {
  setup = startSwarm({
    engines: 3,
    stack: STACK,
    secrets: {
      kas_signing_key: randomBytes(48).toString('base64'),
      kas_postgres_password: DB_PASSWORD,
      kas_tls_crt: TLS_CERT,
      kas_tls_key: TLS_KEY,
    },
    env: {
      APP_REPLICAS: '2',
      // The test's traffic comes from one address; the app's per-account refresh limit is off so
      // that 50 refreshes of one token all reach the rotation race.
      TOKEN_RATE: '1000r/s',
      TOKEN_BURST: '1000',
      REFRESH_THROTTLE_PER_MINUTE: '0',
    },
    log,
  });
  swarm = await setup;
  await swarm.waitForTasks('postgres', 1, 180_000);
  log('postgres running');
  const tasks = await swarm.waitForTasks('app', 2, 180_000);
  log('app tasks running');
  for (const e of swarm.engines) await until(`node ${e.index} to be ready`, async () => ((await get(e, '/readyz')).status === 200 ? true : undefined), 60_000);
  log('stack deployed and ready');
  const created = await swarm.exec(tasks[0]!, ['npm', 'run', '-s', 'cli', '--', 'createuser', 'alice', '--password-stdin'], PASSWORD);
  expect(created).toMatch(/created user alice/);
}, 300_000);

afterAll(async () => {
  const started = Date.now();
  // A setup that timed out may still be on its way: let it finish (or fail and clean up itself).
  tls.close();
  await (swarm ?? (await setup?.catch(() => undefined)))?.destroy();
  log(`engines, namespaces, bridge, rule and data removed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}, 120_000);

describe('the stack on a three-engine Docker Swarm', () => {
  it('answers /readyz on every node over HTTPS, through that node’s nginx; port 80 redirects but for health checks', async () => {
    for (const e of swarm.engines) {
      const r = await get(e, '/readyz');
      expect(r.status).toBe(200);
      expect(r.json).toEqual({ status: 'ok', database: 'ok', revocations: 'ok' });
      expect(r.headers.get('x-request-id')).toMatch(/^[0-9a-f]{32}$/);
      expect(r.headers.get('strict-transport-security')).toBe('max-age=63072000');
      const plain = `http://${e.address}`;
      const redirect = await request(plain, 'POST', '/api/token/?next=1', { json: { username: 'alice', password: PASSWORD } });
      expect(redirect.status).toBe(308);
      expect(redirect.headers.get('location')).toBe(`https://${e.address}/api/token/?next=1`);
      expect((await request(plain, 'GET', '/healthz')).json).toEqual({ status: 'ok' });
    }
  });

  it('serves the client flow through node 1, and takes the client address from the connection, not from X-Forwarded-For', async () => {
    const n1 = node(1);
    const forged = await post(n1, '/api/token/', { username: 'alice', password: PASSWORD }, { 'X-Forwarded-For': '203.0.113.9' });
    expect(forged.status).toBe(200);
    const sessions = await get(n1, '/api/sessions/', bearer(forged.json.access));
    expect(sessions.status, sessions.text).toBe(200);
    expect(sessions.json.find((x: { current: boolean }) => x.current)?.ip).toBe(swarm.hostAddress);
    const pair = await login(n1);
    const me = await get(n1, '/api/me/', bearer(pair.access));
    expect(me.status).toBe(200);
    expect(me.json).toMatchObject({ username: 'alice' });
    const refreshed = await post(n1, '/api/token/refresh/', { refresh: pair.refresh });
    expect(refreshed.status).toBe(200);
    expect((await post(n1, '/api/token/verify/', { token: refreshed.json.access })).status).toBe(200);
    expect((await post(n1, '/api/token/blacklist/', { refresh: refreshed.json.refresh })).status).toBe(200);
    expect(await msUntilRefused(n1, refreshed.json.access, Date.now())).toBeLessThanOrEqual(1_000);
  });

  it('accepts an access token from node 1 on nodes 2 and 3', async () => {
    const { access } = await login(node(1));
    for (const i of [2, 3]) {
      const r = await get(node(i), '/api/me/', bearer(access));
      expect(r.status, `node ${i}`).toBe(200);
      expect(r.json).toMatchObject({ username: 'alice' });
    }
  });

  it('stops an access token on nodes 1 and 2 within 1 s of a logout on node 3', async () => {
    const pair = await login(node(1));
    for (const i of [1, 2]) expect((await get(node(i), '/api/me/', bearer(pair.access))).status).toBe(200);
    expect((await post(node(3), '/api/token/blacklist/', { refresh: pair.refresh })).status).toBe(200);
    const loggedOut = Date.now();
    const stoppedAfter = await Promise.all([1, 2].map((i) => msUntilRefused(node(i), pair.access, loggedOut)));
    log(`logout on node 3 reached nodes 1 and 2 after ${stoppedAfter.join(' and ')} ms`);
    for (const ms of stoppedAfter) expect(ms).toBeLessThanOrEqual(1_000);
  });

  it('lets exactly one of 50 concurrent refreshes of one token, sent to different nodes, win', async () => {
    const { refresh } = await login(node(1));
    const replies = await Promise.all(Array.from({ length: 50 }, (_, i) => post(node((i % 3) + 1), '/api/token/refresh/', { refresh })));
    const outcomes = replies.map((r) => `${r.status} ${r.status === 200 ? '' : r.json?.code ?? r.text.slice(0, 80)}`.trim());
    const counts = Object.fromEntries([...new Set(outcomes)].map((o) => [o, outcomes.filter((x) => x === o).length]));
    log(`50 concurrent refreshes: ${JSON.stringify(counts)}`);
    expect(counts['200']).toBe(1);
    // The others are refused; on a starved machine a few may instead find no database connection in
    // time (the app's 503, Retry-After): they did nothing either.
    expect(Object.keys(counts).filter((o) => !['200', '401 token_not_valid', '503 database_unavailable'].includes(o))).toEqual([]);
    expect(counts['401 token_not_valid']).toBeGreaterThan(0);
  });

  it('fails no request in a forced rolling update under steady traffic', async () => {
    const before = await swarm.tasks('app');
    const { access } = await login(node(1));
    const stop = traffic(swarm.engines, access);
    await sleep(2_000);
    const started = Date.now();
    await swarm.manager.docker(['service', 'update', '--force', '--detach', `${STACK}_app`]);
    const state = await until(
      'the rolling update to finish',
      async () => {
        const s = (await swarm.manager.docker(['service', 'inspect', '--format', '{{.UpdateStatus.State}}', `${STACK}_app`])).trim();
        return ['completed', 'paused', 'rollback_completed', 'rollback_paused'].includes(s) ? s : undefined;
      },
      180_000,
    );
    const updateSeconds = (Date.now() - started) / 1000;
    await sleep(2_000);
    const outcomes = await stop();
    expect(state).toBe('completed');
    const after = await swarm.tasks('app');
    expect(after.filter((t) => before.some((b) => b.id === t.id))).toEqual([]); // every task replaced
    await nginxFollows(after, swarm.engines);
    log(`rolling update: ${updateSeconds.toFixed(1)} s, ${outcomes.length} requests, ${failed(outcomes).length} failed`);
    expect(failed(outcomes)).toEqual([]);
    expect(outcomes.length).toBeGreaterThan(0);
  });

  it('spreads tasks over the nodes on docker service scale, and the new tasks get traffic', async () => {
    const before = await swarm.tasks('app');
    await swarm.manager.docker(['service', 'scale', '--detach', `${STACK}_app=4`]);
    const scaled = await swarm.waitForTasks('app', 4);
    const added = scaled.filter((t) => !before.some((b) => b.id === t.id));
    expect(added).toHaveLength(2);
    expect(new Set(scaled.map((t) => t.engine.index))).toEqual(new Set([1, 2, 3]));
    await nginxFollows(scaled, swarm.engines);
    log(`scaled to 4: tasks on nodes ${scaled.map((t) => t.engine.index).join(', ')}`);

    // Requests through every node; each new task's own metrics (one scrape of its container, all its
    // PM2 workers summed) count the ones it served. The app logs requests at debug only, so not its log.
    const served = async (task: Task) => {
      const text = await swarm.exec(task, ['node', '-e', METRICS_SCRAPE]);
      const line = text.split('\n').find((l) => l.startsWith('http_requests_total{') && l.includes('route="/api/me/"') && l.includes('status="200"'));
      return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
    };
    const before0 = await Promise.all(added.map(served));
    const { access } = await login(node(1));
    for (let i = 0; i < 60; i++) {
      const r = await get(node((i % 3) + 1), '/api/me/', bearer(access));
      expect(r.status).toBe(200);
    }
    const after = await Promise.all(added.map(served));
    added.forEach((task, i) => log(`new task on node ${task.engine.index} served ${after[i]! - before0[i]!} of 60 requests`));
    for (let i = 0; i < added.length; i++) expect(after[i]! - before0[i]!).toBeGreaterThan(0);
  });

  it('loses at most 1% of requests in the first minute after a node is cut off, and none once its tasks have moved', async () => {
    const before = await swarm.tasks('app');
    // A node other than the database's (node 1) that runs an app task.
    const victim = [node(2), node(3)].find((e) => before.some((t) => t.engine === e)) ?? node(3);
    const survivors = swarm.engines.filter((e) => e !== victim);
    const { access } = await login(node(1));
    // The clients' load balancer sends to the nodes that answer; the cut node's nginx is gone with it.
    const stop = traffic(survivors, access);
    await sleep(2_000);
    const cutAt = Date.now();
    await swarm.cut(victim);
    log(`node ${victim.index} cut off`);

    const moved = await until(
      'the swarm to move the lost tasks',
      async () => {
        const tasks = await swarm.tasks('app');
        return tasks.length === before.length && tasks.every((t) => t.state === 'running' && t.engine !== victim) ? tasks : undefined;
      },
      120_000,
    );
    const movedAt = Date.now();
    log(`tasks moved to nodes ${moved.map((t) => t.engine.index).join(', ')} after ${((movedAt - cutAt) / 1000).toFixed(1)} s`);
    await nginxFollows(moved, survivors);
    log(`nginx on the other nodes follows after ${((Date.now() - cutAt) / 1000).toFixed(1)} s`);
    await sleep(Math.max(cutAt + 60_000 - Date.now(), movedAt + 10_000 - Date.now(), 0));
    const outcomes = await stop();

    const firstMinute = outcomes.filter((o) => o.at >= cutAt && o.at < cutAt + 60_000);
    const afterMove = outcomes.filter((o) => o.at >= movedAt);
    log(
      `node loss: first minute ${failed(firstMinute).length} of ${firstMinute.length} failed; ` +
        `after the move ${failed(afterMove).length} of ${afterMove.length}; ` +
        `failures: ${JSON.stringify(failed(outcomes).map((o) => ({ after: o.at - cutAt, node: o.node, status: o.status, detail: o.detail.slice(0, 60) })))}`,
    );
    for (const e of survivors) {
      const errors = (await swarm.containerLogs(e, 'nginx', cutAt)).split('\n').filter((l) => /\[(error|warn)\]|koa-auth-stack: /.test(l));
      log(`nginx on node ${e.index} after the cut:\n  ${errors.slice(0, 20).join('\n  ')}`);
    }
    expect(failed(firstMinute).length).toBeLessThanOrEqual(firstMinute.length / 100);
    expect(failed(afterMove)).toEqual([]);
    expect(afterMove.length).toBeGreaterThan(0);
  });
});
