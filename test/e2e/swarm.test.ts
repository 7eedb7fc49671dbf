// deploy/swarm/stack.yml with ha.yml on top (Patroni, etcd, HAProxy) on a swarm of three Docker
// engines on this machine (each dockerd in its own network namespace, support/engines.ts), tested as
// clients and ops see it: every node's nginx on its own address (HTTPS), the swarm driven with the
// docker CLI. One deployment for every test; the last one is the database failover drill.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine } from '../support/engines';
import { decodeJwt, request, tlsRequester, type Reply } from '../support/http';
import { ROOT } from '../support/images';
import { buildSwarmImages, startSwarm, type Swarm, type Task } from '../support/swarm';

const STACK = 'kasw';
const PASSWORD = 'alice-password-1';
// Characters a URL would mangle: the password travels as a file (a Docker secret), the app
// percent-encodes it, Postgres reads it raw.
const DB_PASSWORD = `db-${randomBytes(6).toString('hex')}-p@ss:w/rd?#%41`;
const SUPERUSER_PASSWORD = `su-${randomBytes(12).toString('hex')}`;
const REPLICATION_PASSWORD = `repl-${randomBytes(12).toString('hex')}`;

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

/** Polls `probe` until it returns a value; on timeout, the error holds `explain()`'s account of why not. */
async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000, explain?: () => Promise<string>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) {
      const why = explain ? await explain().catch((err: unknown) => `(no account: ${String(err)})`) : '';
      // The engines' logs first and the account last: CI shows the tail of a failure.
      throw new Error(`timed out waiting for ${what}\n${swarm.logs()}\n--- why ---\n${why}\ntimed out waiting for ${what}`);
    }
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
function traffic(engines: Engine[], access: string, clients = 4, kinds: ('me' | 'verify')[] = ['me', 'verify']): () => Promise<Outcome[]> {
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
          kinds[i % kinds.length] === 'me'
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

const countBy = (keys: string[]) => Object.fromEntries([...new Set(keys)].sort().map((k) => [k, keys.filter((x) => x === k).length]));

interface WriteAnswer {
  at: number;
  route: 'login' | 'me' | 'refresh' | 'logout';
  status: number; // 0: no HTTP answer
  code: string | undefined;
  retryAfter: string | null;
  /** Sent after an unanswered (503) write of the same session, whose outcome the client cannot know. */
  afterUnavailable: boolean;
}

/** What the writers were told: every answer, and each write the app acknowledged (200). */
interface Ledger {
  answers: WriteAnswer[];
  logins: { sid: string; jti: string }[];
  refreshes: { sid: string; jti: string }[];
  logouts: { sid: string }[];
  /** Sessions whose last write was never answered: committed or not, the test does not know. */
  ambiguous: number;
}

/**
 * Clients that write, each in a loop through the given nodes: log in, then three times read
 * GET /api/me/ (a database read) and refresh, then log out. A write answered 503 is sent again (as
 * a client honouring Retry-After would); a refresh token refused after that is the client's lost
 * race with its own unanswered rotation, and it logs in again. Returns a stop function.
 */
function writers(engines: Engine[], clients: number): () => Promise<Ledger> {
  let running = true;
  const ledger: Ledger = { answers: [], logins: [], refreshes: [], logouts: [], ambiguous: 0 };
  const loops = Array.from({ length: clients }, async (_, c) => {
    let n = c;
    const send = async (route: WriteAnswer['route'], afterUnavailable: boolean, call: (e: Engine) => Promise<Reply>) => {
      const at = Date.now();
      const engine = engines[n++ % engines.length]!;
      try {
        const r = await call(engine);
        ledger.answers.push({ at, route, status: r.status, code: r.json?.code, retryAfter: r.headers.get('retry-after'), afterUnavailable });
        return r;
      } catch (err) {
        ledger.answers.push({ at, route, status: 0, code: String((err as Error).cause ?? err).slice(0, 80), retryAfter: null, afterUnavailable });
        return undefined;
      }
    };
    const unanswered = (r: Reply | undefined) => r === undefined || r.status === 503;
    while (running) {
      const signedIn = await send('login', false, (e) => post(e, '/api/token/', { username: 'alice', password: PASSWORD }));
      if (signedIn?.status !== 200) {
        await sleep(200);
        continue;
      }
      let { access, refresh } = signedIn.json as { access: string; refresh: string };
      const sid = decodeJwt(access).payload.sid as string;
      ledger.logins.push({ sid, jti: decodeJwt(refresh).payload.jti });
      let unsure = false;
      let alive = true;
      for (let k = 0; k < 3 && alive && running; k++) {
        await send('me', unsure, (e) => get(e, '/api/me/', bearer(access)));
        const r = await send('refresh', unsure, (e) => post(e, '/api/token/refresh/', { refresh }));
        if (r?.status === 200) {
          ({ access, refresh } = r.json as { access: string; refresh: string });
          ledger.refreshes.push({ sid, jti: decodeJwt(refresh).payload.jti });
          unsure = false;
        } else if (unanswered(r)) {
          unsure = true;
          k--;
          await sleep(200);
        } else {
          alive = false;
        }
      }
      while (alive) {
        const r = await send('logout', unsure, (e) => post(e, '/api/token/blacklist/', { refresh }));
        if (r?.status === 200) {
          ledger.logouts.push({ sid });
          unsure = false;
          break;
        }
        if (!unanswered(r) || !running) break;
        unsure = true;
        await sleep(200);
      }
      if (unsure) ledger.ambiguous++;
    }
  });
  return async () => {
    running = false;
    await Promise.all(loops);
    return ledger;
  };
}

/** Polls /readyz through the given nodes every 250 ms. */
function readiness(engines: Engine[]) {
  let running = true;
  const probes: { at: number; status: number }[] = [];
  void (async () => {
    for (let i = 0; running; i++) {
      const at = Date.now();
      const status = await get(engines[i % engines.length]!, '/readyz').then(
        (r) => r.status,
        () => 0,
      );
      probes.push({ at, status });
      await sleep(250);
    }
  })();
  return {
    firstOkAfter: async (t: number) => probes.find((p) => p.at >= t && p.status === 200)?.at,
    stop: () => {
      running = false;
      return probes;
    },
  };
}

/** Looks every acknowledged write up in the leader's database (psql on its member, as its superuser). */
async function acknowledgedWrites(ledger: Ledger, leader: Member) {
  const task = (await swarm.tasks('patroni')).find((t) => t.address === hostOf(leader));
  if (!task) throw new Error(`no task for the leader at ${leader.Host}`);
  const safe = (values: string[]) => `'{${[...new Set(values)].filter((v) => /^[A-Za-z0-9_-]+$/.test(v)).join(',')}}'`;
  const families = [...ledger.logins.map((l) => l.sid), ...ledger.logouts.map((l) => l.sid)];
  const jtis = [...ledger.logins.map((l) => l.jti), ...ledger.refreshes.map((r) => r.jti)];
  const out = await swarm.exec(
    task,
    ['psql', '-U', 'postgres', '-d', 'app', '-At', '-F', ' ', '-v', 'ON_ERROR_STOP=1'],
    `SELECT 'family', id, revoked_at IS NOT NULL FROM token_families WHERE id::text = ANY(${safe(families)}::text[]);
     SELECT 'token', jti, true FROM refresh_tokens WHERE jti = ANY(${safe(jtis)}::text[]);`,
  );
  const found = new Map<string, boolean>();
  for (const line of out.split('\n').filter(Boolean)) {
    const [kind, id, flag] = line.split(' ');
    found.set(`${kind}:${id}`, flag === 't');
  }
  const missing: string[] = [];
  for (const l of ledger.logins) {
    if (!found.has(`family:${l.sid}`)) missing.push(`login ${l.sid}: no session`);
    if (!found.has(`token:${l.jti}`)) missing.push(`login ${l.sid}: no refresh token ${l.jti}`);
  }
  for (const r of ledger.refreshes) if (!found.has(`token:${r.jti}`)) missing.push(`refresh ${r.sid}: no refresh token ${r.jti}`);
  for (const l of ledger.logouts) if (found.get(`family:${l.sid}`) !== true) missing.push(`logout ${l.sid}: session not ended`);
  return { logins: ledger.logins.length, refreshes: ledger.refreshes.length, logouts: ledger.logouts.length, missing };
}

/** A member as `patronictl list -f json` shows it. */
interface Member {
  Member: string;
  Host: string;
  Role: string; // Leader, Sync Standby, Replica
  State: string; // running, streaming, starting, stopped, …
  TL?: number;
}

/** The cluster as a running member's patronictl sees it (run there with no arguments, as ops would). */
async function patroni(on: Engine[] = swarm.engines): Promise<Member[]> {
  const members = (await swarm.tasks('patroni')).filter((t) => t.state === 'running' && on.includes(t.engine));
  let last: unknown;
  for (const t of members) {
    try {
      return JSON.parse(await swarm.exec(t, ['patronictl', 'list', '-f', 'json'])) as Member[];
    } catch (err) {
      last = err;
    }
  }
  throw new Error(`no Patroni member answered: ${String(last)}`);
}

/**
 * The database tier as an operator would look at it when a member does not come back: the cluster
 * as patronictl sees it, the swarm's tasks of the members and etcd, and on `engine` every member
 * and etcd container (stopped ones too) with the end of its log.
 */
async function databaseTier(engine: Engine): Promise<string> {
  const parts: string[] = [];
  for (const service of ['patroni', 'etcd-1', 'etcd-2', 'etcd-3', 'haproxy']) {
    const ps = await swarm.manager.tryDocker(['service', 'ps', '--no-trunc', '--format', '{{.Name}} {{.Node}} desired={{.DesiredState}} {{.CurrentState}} {{.Error}}', `${STACK}_${service}`]);
    parts.push(`--- service ps ${service} ---\n${(ps.stdout + ps.stderr).trim()}`);
  }
  const containers = await engine.tryDocker(['ps', '-a', '--format', '{{.ID}} {{.Names}} {{.Status}}']);
  parts.push(`--- containers on node ${engine.index} ---\n${containers.stdout.trim()}`);
  for (const line of containers.stdout.split('\n').filter((l) => /_(patroni|etcd-\d)\./.test(l))) {
    const logs = await engine.tryDocker(['logs', '-t', '--tail', '300', line.split(' ')[0]!]);
    // Not pg_controldata's listing or a traceback's frames: Patroni's and Postgres' own lines.
    const own = (logs.stdout + logs.stderr).split('\n').filter((l) => !/^\S+Z {2}/.test(l));
    parts.push(`--- ${line} ---\n${own.slice(-60).join('\n')}`);
  }
  // Last: a failure's tail is what CI shows.
  parts.push(`patronictl: ${await patroni().then(describeCluster, (err: unknown) => String(err))}`);
  return parts.join('\n');
}

const hostOf = (m: Member) => m.Host.replace(/:\d+$/, '');
const describeCluster = (members: Member[]) => members.map((m) => `${m.Member.slice(0, 6)}@${hostOf(m)} ${m.Role} ${m.State} TL${m.TL ?? '?'}`).join(', ');

/** One leader, running, and one synchronous standby streaming on its timeline (the cluster at rest). */
function healthy(members: Member[], size = 3): Member[] | undefined {
  const leaders = members.filter((m) => m.Role === 'Leader' && m.State === 'running');
  const sync = members.filter((m) => m.Role === 'Sync Standby' && ['running', 'streaming'].includes(m.State));
  if (members.length !== size || leaders.length !== 1 || sync.length !== 1) return undefined;
  return sync[0]!.TL === leaders[0]!.TL ? members : undefined;
}

// The images, as an operator builds them (deploy/swarm/build-images.sh; a cache hit when the compose
// stack test built the app's and nginx's).
let imageNames: string[] = [];
beforeAll(async () => {
  imageNames = await buildSwarmImages();
  log(`images built: ${imageNames.join(' ')}`);
}, 900_000);

let setup: Promise<Swarm> | undefined;
beforeAll(async () => {
  setup = startSwarm({
    engines: 3,
    stack: STACK,
    files: ['stack.yml', 'ha.yml'],
    // Every node holds a database member and an etcd member (README: "Beyond one machine → the database").
    labels: { 1: { 'kas.db': 'true', 'kas.etcd': '1' }, 2: { 'kas.db': 'true', 'kas.etcd': '2' }, 3: { 'kas.db': 'true', 'kas.etcd': '3' } },
    images: imageNames,
    secrets: {
      kas_signing_key: randomBytes(48).toString('base64'),
      kas_postgres_password: DB_PASSWORD,
      kas_postgres_superuser_password: SUPERUSER_PASSWORD,
      kas_postgres_replication_password: REPLICATION_PASSWORD,
      kas_tls_crt: TLS_CERT,
      kas_tls_key: TLS_KEY,
    },
    env: {
      APP_REPLICAS: '2',
      // The test's traffic comes from one address; the app's per-account refresh limit is off so
      // that 50 refreshes of one token all reach the rotation race, and the drill's clients log in
      // and refresh as fast as they are answered.
      TOKEN_RATE: '1000r/s',
      TOKEN_BURST: '1000',
      LOGIN_RATE: '1000r/s',
      LOGIN_BURST: '1000',
      REFRESH_THROTTLE_PER_MINUTE: '0',
    },
    log,
  });
  swarm = await setup;
  await Promise.all(['etcd-1', 'etcd-2', 'etcd-3'].map((s) => swarm.waitForTasks(s, 1, 180_000)));
  await swarm.waitForTasks('patroni', 3, 240_000);
  await swarm.waitForTasks('haproxy', 3, 180_000);
  const cluster = await until('a Patroni leader and a synchronous standby', async () => healthy(await patroni()), 240_000);
  log(`database cluster: ${describeCluster(cluster)}`);
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
    for (const o of failed(outcomes)) {
      // What the failing node's nginx said about it (its error log and the request's access-log line).
      const said = (await swarm.containerLogs(node(o.node), 'nginx', o.at - 3_000).catch(() => ''))
        .split('\n')
        .filter((l) => /\[(error|warn|crit)\]|"status":(?!200)\d{3}|koa-auth-stack:/.test(l))
        .slice(0, 20);
      log(`rolling update: failed ${JSON.stringify({ after: o.at - started, node: o.node, status: o.status, detail: o.detail })}; nginx on node ${o.node}:\n${said.join('\n')}`);
    }
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

  it('loses no acknowledged write when the database leader’s node is cut off: a new leader, the app ready again, the old leader back as a replica', async () => {
    const before = await patroni();
    expect(healthy(before), describeCluster(before)).toBeDefined();
    const oldLeader = before.find((m) => m.Role === 'Leader')!;
    const victim = (await swarm.tasks('patroni')).find((t) => t.address === hostOf(oldLeader))!.engine;
    const survivors = swarm.engines.filter((e) => e !== victim);
    // The swarm is driven through a node that stays (every node is a manager; two keep the quorum).
    swarm.useManager(survivors[0]!);
    const appBefore = await swarm.tasks('app');
    log(`drill: the leader ${oldLeader.Member.slice(0, 6)} is on node ${victim.index}; traffic through nodes ${survivors.map((e) => e.index).join(' and ')}`);

    // The clients' load balancer sends to the nodes that answer; the cut node's nginx is gone with it.
    const { access } = await login(survivors[0]!);
    const stopReads = traffic(survivors, access, 3, ['verify']);
    const stopWrites = writers(survivors, 2);
    const stopProbe = readiness(survivors);
    await sleep(3_000);
    const cutAt = Date.now();
    await swarm.cut(victim);
    log(`drill: node ${victim.index} cut off`);

    const elected = await until(
      'a new Patroni leader',
      async () => {
        const leader = (await patroni(survivors)).find((m) => m.Role === 'Leader' && m.State === 'running' && m.Member !== oldLeader.Member);
        return leader && { leader, at: Date.now() };
      },
      120_000,
    );
    const electionSeconds = (elected.at - cutAt) / 1000;
    log(`drill: new leader ${elected.leader.Member.slice(0, 6)}@${hostOf(elected.leader)} after ${electionSeconds.toFixed(1)} s`);
    const readyAt = await until('/readyz 200 through a surviving node after the election', async () => stopProbe.firstOkAfter(elected.at), 120_000);
    const readySeconds = (readyAt - cutAt) / 1000;
    log(`drill: /readyz 200 through a surviving node ${readySeconds.toFixed(1)} s after the cut`);

    // A minute of traffic after the cut at least, and 20 s more once the app is ready again. The
    // lost app tasks move too, but when is the swarm's business (33-95 s here, longer on a starved
    // machine): nginx on the surviving nodes has passed over them since a few seconds after the cut.
    await sleep(Math.max(cutAt + 60_000 - Date.now(), readyAt + 20_000 - Date.now(), 0));
    const appNow = await swarm.tasks('app');
    log(`drill: app tasks running on nodes ${appNow.filter((t) => t.state === 'running').map((t) => t.engine.index).join(', ')} ${((Date.now() - cutAt) / 1000).toFixed(1)} s after the cut (before: ${appBefore.map((t) => t.engine.index).join(', ')})`);
    const reads = await stopReads();
    const ledger = await stopWrites();
    const probes = stopProbe.stop();
    const endAt = Date.now();

    // Guarded reads (the guard's checks, from memory): at most 1% failed, none in the last 20 s.
    const readsAfterCut = reads.filter((o) => o.at >= cutAt);
    const lastReads = reads.filter((o) => o.at >= endAt - 20_000);
    log(
      `drill: guarded reads ${failed(readsAfterCut).length} of ${readsAfterCut.length} failed after the cut, ` +
        `${failed(lastReads).length} of ${lastReads.length} in the last 20 s; failures: ${JSON.stringify(failed(reads).slice(0, 10).map((o) => ({ after: o.at - cutAt, status: o.status, detail: o.detail.slice(0, 60) })))}`,
    );
    // Database routes: every answer a success or a 503 (never a 500); a refused token only after its
    // own earlier 503 (a rotation that committed but whose answer was lost is a replay next time).
    const statuses = countBy(ledger.answers.map((a) => `${a.route} ${a.status}${a.code ? ` ${a.code}` : ''}`));
    const unavailable = ledger.answers.filter((a) => a.at >= cutAt && a.at < elected.at && a.status === 503).length;
    log(`drill: database routes: ${JSON.stringify(statuses)}; 503 while there was no leader: ${unavailable}`);
    const firstDown = probes.find((p) => p.at >= cutAt && p.status !== 200);
    log(`drill: /readyz first failed ${firstDown ? ((firstDown.at - cutAt) / 1000).toFixed(1) : '-'} s after the cut, ready again after ${readySeconds.toFixed(1)} s`);

    // The node comes back: its member rejoins as a replica of the new leader, on its timeline.
    const restoredAt = Date.now();
    await swarm.restore(victim);
    // How the return went, step by step: the node in the swarm, its member tasks, the old leader.
    const steps: string[] = [];
    let lastStep = '';
    // The old leader demoted itself while cut off and Swarm replaced its task: the image's rewind
    // check fix (deploy/swarm/patroni/fix-rewind-check.py) has it rewound, with no operator step.
    const rejoined = await until(
      'the old leader to rejoin as a replica',
      async () => {
        const cluster = await patroni(survivors);
        const step = `node ${await swarm.nodeState(victim)}; member tasks ${await swarm.taskHistory('patroni', victim)}; old leader ${describeCluster(cluster.filter((m) => m.Member === oldLeader.Member)) || 'not listed'}`;
        if (step !== lastStep) steps.push(`+${((Date.now() - restoredAt) / 1000).toFixed(1)} s ${(lastStep = step)}`);
        const members = healthy(cluster);
        const old = members?.find((m) => m.Member === oldLeader.Member);
        const leader = members?.find((m) => m.Role === 'Leader');
        // A replica of the new leader: on its timeline (a member still on the old one has not rewound).
        return old && leader && old.Role !== 'Leader' && ['running', 'streaming'].includes(old.State) && old.TL === leader.TL ? members : undefined;
      },
      240_000,
      async () => `${await databaseTier(victim)}\n--- the return, step by step ---\n${steps.join('\n')}`,
    );
    const rejoinSeconds = (Date.now() - restoredAt) / 1000;
    log(`drill: the return of node ${victim.index}:\n${steps.join('\n')}`);
    const oldTask = (await swarm.tasks('patroni')).find((t) => t.engine === victim);
    const rewound = oldTask ? /pg_rewind/.test(await swarm.containerLogs(victim, 'patroni', restoredAt - 5_000).catch(() => '')) : false;
    log(`drill: node ${victim.index} back; rejoined after ${rejoinSeconds.toFixed(1)} s${rewound ? ' (pg_rewind)' : ''}: ${describeCluster(rejoined)}`);
    // The member task the node had when it was cut off, and the one Swarm gave it on its return.
    const members = await victim.tryDocker(['ps', '-a', '--filter', `label=com.docker.swarm.service.name=${STACK}_patroni`, '--format', '{{.Names}} {{.Status}}']);
    log(`drill: member containers on node ${victim.index}: ${members.stdout.trim().split('\n').join('; ')}`);

    // Every acknowledged write, one by one, in the new leader's database.
    const check = await acknowledgedWrites(ledger, rejoined.find((m) => m.Role === 'Leader')!);
    log(
      `drill: acknowledged writes checked one by one: ${check.logins} logins, ${check.refreshes} refreshes, ${check.logouts} logouts ` +
        `(${ledger.ambiguous} unanswered writes left undecided); missing: ${JSON.stringify(check.missing.slice(0, 10))}`,
    );
    log(
      `DRILL: election ${electionSeconds.toFixed(1)} s, ready ${readySeconds.toFixed(1)} s, rejoin ${rejoinSeconds.toFixed(1)} s; ` +
        `guarded reads ${failed(readsAfterCut).length}/${readsAfterCut.length} failed (last 20 s: ${failed(lastReads).length}/${lastReads.length}); ` +
        `writes acknowledged ${check.logins + check.refreshes + check.logouts}, missing ${check.missing.length}`,
    );

    expect(electionSeconds).toBeLessThanOrEqual(45);
    expect(readySeconds).toBeLessThanOrEqual(60);
    expect(failed(readsAfterCut).length).toBeLessThanOrEqual(readsAfterCut.length / 100);
    expect(failed(lastReads)).toEqual([]);
    expect(lastReads.length).toBeGreaterThan(0);
    expect(ledger.answers.filter((a) => a.status !== 200 && a.status !== 503 && !(a.status === 401 && a.afterUnavailable))).toEqual([]);
    expect(ledger.answers.filter((a) => a.status === 503 && a.retryAfter === null)).toEqual([]);
    expect(unavailable).toBeGreaterThan(0); // the outage was seen, and answered 503
    expect(check.logins).toBeGreaterThan(0);
    expect(check.refreshes).toBeGreaterThan(0);
    expect(check.logouts).toBeGreaterThan(0);
    expect(check.missing).toEqual([]);
  }, 900_000);
});
