// The production stack end to end: docker-compose.yml as users run it, acting only as a client through
// nginx's published port and as an operator through `docker exec`.
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postJson, simultaneous } from '../support/burst';
import { decodeJwt, request, type Reply } from '../support/http';
import { contractError, HOSTILE_REQUESTS, rawHttp, SECURITY_HEADERS } from '../support/hostile';
import { startStack, type Stack } from '../support/stack';

const SIGNING_KEY = 'e2e-signing-key-0123456789abcdefghijklmnopqrstuvwxyz';
let stack: Stack;

beforeAll(async () => {
  stack = await startStack({
    project: `kase2e${process.pid}`,
    env: {
      NODE_ENV: 'production',
      SIGNING_KEY,
      POSTGRES_PASSWORD: 'e2e-db-password',
      WEB_CONCURRENCY: '2',
      // The load tests below come from one address; only login keeps its production limit.
      TOKEN_RATE: '1000r/s',
      TOKEN_BURST: '1000',
      REFRESH_THROTTLE_PER_MINUTE: '0',
      // An issuer identifier: machine clients on.
      ISSUER: 'https://auth.e2e.example',
    },
  });
}, 600_000);

afterAll(async () => {
  await stack?.down({ removeVolumes: true });
}, 120_000);

const get = (path: string, headers: Record<string, string> = {}) => request(stack.url, 'GET', path, { headers });
const post = (path: string, json: unknown, headers: Record<string, string> = {}) => request(stack.url, 'POST', path, { json, headers });
const bearer = (access: string) => ({ Authorization: `Bearer ${access}` });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Logs in, waiting out nginx's per-address login limit if an earlier test used it up. */
async function login(username: string, password: string): Promise<{ access: string; refresh: string }> {
  for (let attempt = 0; ; attempt++) {
    const r = await post('/api/token/', { username, password });
    if (r.status === 200) return r.json;
    if (r.status !== 429 || attempt > 10) throw new Error(`login ${username}: ${r.status} ${r.text}`);
    await sleep(1000 * Number(r.headers.get('retry-after') ?? 1));
  }
}

// Users' ids as the CLI reported them: no test assumes the database numbered them from 1.
const userIds = new Map<string, number>();

async function createUser(username: string, password: string, flags: string[] = []) {
  const r = await stack.exec('app', ['npm', 'run', '-s', 'cli', '--', 'createuser', username, '--password-stdin', ...flags], password);
  expect(r.code, r.stderr).toBe(0);
  const id = /\(id (\d+)/.exec(r.stdout)?.[1];
  expect(id, r.stdout).toBeDefined();
  userIds.set(username, Number(id));
  return r.stdout;
}

/**
 * Waits until the stack refuses an access token as revoked, every time, in a burst of requests at once
 * (nginx opens a connection for each, and PM2's primary deals them out to both workers). A revocation
 * reaches each worker by NOTIFY, a moment after the answer that made it; the next request may reach
 * either worker before it has.
 */
async function refusedEverywhere(access: string): Promise<void> {
  await expect
    .poll(
      async () => {
        const replies = await Promise.all(Array.from({ length: 16 }, () => get('/api/me/', bearer(access))));
        return replies.every((r) => r.status === 401 && r.json?.messages?.[0]?.message === 'Token is blacklisted');
      },
      { timeout: 10_000, interval: 100 },
    )
    .toBe(true);
}

/** One SQL statement in the postgres container, as its superuser; the rows, one per line. */
async function sql(statement: string): Promise<string> {
  const r = await stack.exec('postgres', ['psql', '-U', 'app', '-d', 'app', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-c', statement]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim();
}

/**
 * A psql session kept open in the postgres container, to hold a lock across the test's steps. run()
 * resolves once psql has carried out everything sent so far.
 */
function psqlSession() {
  const child = spawn('docker', ['exec', '-i', stack.container('postgres'), 'psql', '-U', 'app', '-d', 'app', '-XAtq', '-v', 'ON_ERROR_STOP=1']);
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  let n = 0;
  return {
    async run(statements: string): Promise<void> {
      const marker = `done-${n++}`;
      child.stdin.write(`${statements}\n\\echo ${marker}\n`);
      await expect.poll(() => out.includes(marker), { timeout: 10_000 }).toBe(true);
    },
    async close(): Promise<void> {
      child.stdin.end('\\q\n');
      if ((await exited) !== 0) throw new Error(`psql: ${out}`);
    },
  };
}

/** Sends a signal to a process in the app container (the image has no kill(1); node sends it). */
const signal = (pid: number, name: NodeJS.Signals) => stack.exec('app', ['node', '-e', `process.kill(${pid}, '${name}')`]);

/** A service's log line for a request id; logs travel worker → PM2 → Docker, so wait a moment for it. */
async function logLine(service: 'app' | 'nginx', requestId: string | null): Promise<Record<string, unknown>> {
  for (let i = 0; i < 50; i++) {
    const line = (await stack.logs(service)).split('\n').find((l) => l.includes(`"request_id":"${requestId}"`));
    if (line) return JSON.parse(line.slice(line.indexOf('{'))) as Record<string, unknown>;
    await sleep(100);
  }
  throw new Error(`no ${service} log line for request ${requestId}`);
}
const appLogLine = (requestId: string | null) => logLine('app', requestId);

interface Pm2Process {
  name: string;
  pid: number;
  pm_id: number;
  /** NODE_APP_INSTANCE: the `worker` the app tags its logs, metrics and pg_stat_activity with. */
  pm2_env: { status: string; restart_time: number; NODE_APP_INSTANCE?: number | string };
}
async function workers(): Promise<Pm2Process[]> {
  const r = await stack.exec('app', ['pm2', 'jlist']);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as Pm2Process[]).filter((p) => p.name === 'api');
}

interface LoadResult {
  total: number;
  failures: { status: number; text: string }[];
}

/**
 * Steady traffic until `stop` resolves: `clients` loops, each sending one request after another,
 * with `step(i)` choosing each request. Every non-expected answer is a failure.
 */
async function load(clients: number, step: (client: number) => Promise<Reply>, stop: Promise<unknown>): Promise<LoadResult> {
  let done = false;
  void stop.then(() => (done = true));
  const result: LoadResult = { total: 0, failures: [] };
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      while (!done) {
        let r: Reply;
        try {
          r = await step(c);
        } catch (err) {
          r = { status: 0, text: String(err) } as Reply;
        }
        result.total += 1;
        if (r.status !== 200) result.failures.push({ status: r.status, text: r.text });
      }
    }),
  );
  return result;
}

describe('the client flow through nginx', () => {
  it('creates users with the CLI inside the app container', async () => {
    expect(await createUser('alice', 'alice-password-1')).toMatch(/created user alice \(id \d+\)/);
    expect(await createUser('bob', 'bob-password-1')).toMatch(/created user bob/);
    expect(await createUser('carol', 'carol-password-1', ['--inactive'])).toMatch(/inactive/);
  });

  it('obtain → /api/me/ → refresh → replay (family revoked) → blacklist', async () => {
    const pair = await login('alice', 'alice-password-1');
    const me = await get('/api/me/', bearer(pair.access));
    expect(me.status).toBe(200);
    expect(me.json).toEqual({ id: userIds.get('alice'), username: 'alice' });

    const refreshed = await post('/api/token/refresh/', { refresh: pair.refresh });
    expect(refreshed.status).toBe(200);
    expect((await get('/api/me/', bearer(refreshed.json.access))).status).toBe(200);

    const replay = await post('/api/token/refresh/', { refresh: pair.refresh });
    expect(replay.status).toBe(401);
    expect(replay.json).toEqual({ detail: 'Token is blacklisted', code: 'token_not_valid' });
    expect(replay.headers.get('www-authenticate')).toBe('Bearer realm="api"');
    // The family is gone: the rotated refresh token and its access token too.
    expect((await post('/api/token/refresh/', { refresh: refreshed.json.refresh })).status).toBe(401);
    await refusedEverywhere(refreshed.json.access);

    const session = await login('alice', 'alice-password-1');
    const out = await post('/api/token/blacklist/', { refresh: session.refresh });
    expect(out.status).toBe(200);
    expect(out.json).toEqual({});
    expect((await post('/api/token/blacklist/', { refresh: session.refresh })).status).toBe(401);
    await refusedEverywhere(session.access);

    expect((await post('/api/token/', { username: 'carol', password: 'carol-password-1' })).status).toBe(401);
  });

  it('passes the contract details through nginx unchanged', async () => {
    const r = await post('/api/token/', {});
    expect(r.status).toBe(400);
    expect(r.headers.get('content-type')).toBe('application/json');
    expect(r.json).toEqual({ username: ['This field is required.'], password: ['This field is required.'] });
    const m = await get('/api/token/');
    expect(m.status).toBe(405);
    expect(m.headers.get('allow')).toBe('POST, OPTIONS');
    expect((await get('/api/me')).status).toBe(401); // no trailing slash: served
    const nginxHealth = await get('/healthz');
    expect(nginxHealth.json).toEqual({ status: 'ok' });
    expect((await get('/readyz')).json).toEqual({ status: 'ok', database: 'ok', revocations: 'ok' });
    expect(r.headers.get('server')).toBe('nginx'); // server_tokens off: no version
    // JSON is gzipped for clients that accept it (a token pair is large enough to be worth it).
    const gz = await fetch(`${stack.url}/api/token/`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Accept-Encoding': 'gzip' },
      body: JSON.stringify({ username: 'bob', password: 'bob-password-1' }),
    });
    expect(gz.status).toBe(200);
    expect(gz.headers.get('content-encoding')).toBe('gzip');
    expect(Object.keys((await gz.json()) as object)).toEqual(['refresh', 'access']);
  });

  it('trusts exactly one proxy hop: a client cannot choose its own address', async () => {
    // A failed login is a security event: the app logs it with the address it believes.
    const r = await post('/api/token/', { username: 'nobody-here', password: 'wrong-password' }, { 'X-Forwarded-For': '203.0.113.66' });
    expect(r.status).toBe(401);
    const ip = (await appLogLine(r.headers.get('x-request-id'))).ip as string;
    expect(ip).not.toBe('203.0.113.66');
    expect(ip).toMatch(/^(\d+\.){3}\d+$/); // the address nginx saw: the client's, through Docker's port
  });
});

describe('request ids and logs', () => {
  it('one line per request (nginx\'s), and the app\'s line for every security event, under the same id', async () => {
    const pair = await login('bob', 'bob-password-1');
    const rotated = await post('/api/token/refresh/', { refresh: pair.refresh });
    const replies = [
      await get('/api/me/', bearer(pair.access)),
      await get('/api/me/'),
      await post('/api/token/verify/', { token: pair.access }),
      await get('/nowhere'),
      await post('/api/token/', { username: 'bob', password: 'not-bobs-password' }),
      await post('/api/token/refresh/', { refresh: pair.refresh }), // a replay: reuse, and a revocation
    ];
    expect(rotated.status).toBe(200);
    expect(replies.map((r) => r.status)).toEqual([200, 401, 200, 404, 401, 401]);
    const ids = replies.map((r) => r.headers.get('x-request-id'));
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{32}$/);
    expect(new Set(ids).size).toBe(ids.length);
    for (const [i, id] of ids.entries()) expect(await logLine('nginx', id)).toMatchObject({ request_id: id, status: replies[i]!.status });
    expect(await appLogLine(ids[4]!)).toMatchObject({ msg: 'security event', event: 'login_failure' });
    const replay = (await stack.logs('app')).split('\n').filter((l) => l.includes(`"request_id":"${ids[5]}"`)).map((l) => JSON.parse(l.slice(l.indexOf('{'))));
    expect(replay.map((l) => l.event)).toEqual(['refresh_reused', 'revocation']);
    const appLogs = await stack.logs('app');
    const nginxLogs = await stack.logs('nginx');
    // Ordinary requests are nginx's alone (the app logs them only at LOG_LEVEL=debug).
    for (const id of ids.slice(0, 4)) expect(appLogs).not.toContain(id);
    // Logs carry no credentials.
    expect(appLogs).not.toContain(pair.access);
    expect(nginxLogs).not.toContain(pair.access);
  });
});

describe('the PM2 cluster', () => {
  it('runs WEB_CONCURRENCY workers, and requests are served by more than one', async () => {
    const list = await workers();
    expect(list).toHaveLength(2);
    expect(list.every((p) => p.pm2_env.status === 'online')).toBe(true);
    const pair = await login('bob', 'bob-password-1');
    // Each worker's count of the requests it answered, from the container's metrics scrape.
    const served = async () => {
      const r = await stack.exec('app', ['node', '-e', 'fetch("http://127.0.0.1:9464/metrics").then(async (r) => process.stdout.write(await r.text()))']);
      const counts = new Map<string, number>();
      for (const m of r.stdout.matchAll(/^http_worker_requests_total\{worker="(\d+)",pid="\d+"\} (\d+)$/gm)) counts.set(m[1]!, (counts.get(m[1]!) ?? 0) + Number(m[2]));
      return counts;
    };
    const before = await served();
    const replies = await Promise.all(Array.from({ length: 40 }, () => get('/api/me/', bearer(pair.access))));
    expect(replies.every((r) => r.status === 200)).toBe(true);
    const after = await served();
    const servedBy = [...after].filter(([worker, n]) => n > (before.get(worker) ?? 0));
    expect(servedBy.length).toBeGreaterThan(1);
  });

  it("the workers accept their own connections: each holds the listening socket, not only PM2's primary", async () => {
    // With Node's default round-robin the primary (pm2-runtime) accepts every connection and passes
    // it to a worker over IPC, and nginx opens a fresh connection for every POST. The image sets NODE_CLUSTER_SCHED_POLICY=none, so the workers share
    // the socket and accept themselves; a worker holds it only then (docs/PERFORMANCE.md, "PM2's
    // process out of the connections").
    const pids = (await workers()).map((w) => w.pid);
    expect(pids).toHaveLength(2);
    const script = `
      const fs = require('node:fs');
      const listening = fs.readFileSync('/proc/net/unix', 'utf8').split('\\n').slice(1).map((l) => l.trim().split(/\\s+/))
        .find((f) => f[7] === process.env.LISTEN_SOCKET && f[3] === '00010000');
      if (!listening) throw new Error('no listening socket at ' + process.env.LISTEN_SOCKET);
      const holds = (pid) => fs.readdirSync('/proc/' + pid + '/fd').some((fd) => {
        try { return fs.readlinkSync('/proc/' + pid + '/fd/' + fd) === 'socket:[' + listening[6] + ']'; } catch { return false; }
      });
      process.stdout.write(JSON.stringify(${JSON.stringify(pids)}.map(holds)));`;
    const r = await stack.exec('app', ['node', '-e', script]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(pids.map(() => true));
  });

  it('pm2 reload during a steady stream of requests: zero failed requests', async () => {
    const before = await workers();
    const chains = await Promise.all([0, 1].map(() => login('bob', 'bob-password-1')));
    const reload = stack.exec('app', ['pm2', 'reload', 'api']);
    const result = await load(
      6,
      async (c) => {
        if (c < 2) {
          // Each of these clients rotates its own refresh chain: a retried POST would show as a replay.
          const r = await post('/api/token/refresh/', { refresh: chains[c]!.refresh });
          if (r.status === 200) chains[c] = r.json;
          return r;
        }
        return c % 2 ? get('/api/me/', bearer(chains[0]!.access)) : post('/api/token/verify/', { token: chains[1]!.access });
      },
      reload.then(() => sleep(500)),
    );
    const reloaded = await reload;
    expect(reloaded.code, reloaded.stderr).toBe(0);
    const after = await workers();
    console.log(`pm2 reload: ${result.total} requests, ${result.failures.length} failed`);
    expect(result.failures).toEqual([]);
    expect(result.total).toBeGreaterThan(100);
    expect(after).toHaveLength(2);
    for (const w of after) expect(before.map((b) => b.pid)).not.toContain(w.pid); // every worker replaced
  });

  it('pm2 scale resizes the pool', async () => {
    expect((await stack.exec('app', ['pm2', 'scale', 'api', '3'])).code).toBe(0);
    await expect.poll(async () => (await workers()).filter((w) => w.pm2_env.status === 'online').length, { timeout: 30_000 }).toBe(3);
    expect((await stack.exec('app', ['pm2', 'scale', 'api', '2'])).code).toBe(0);
    await expect.poll(async () => (await workers()).length, { timeout: 30_000 }).toBe(2);
  });

  it('a killed worker is replaced and requests keep succeeding', async () => {
    const pair = await login('bob', 'bob-password-1');
    const [victim] = await workers();
    const clients = 4;
    // The image has no kill(1); node sends the signal.
    const killed = sleep(300).then(() => stack.exec('app', ['node', '-e', `process.kill(${victim!.pid}, 'SIGKILL')`]));
    const result = await load(clients, () => get('/api/me/', bearer(pair.access)), killed.then(() => sleep(3000)));
    expect((await killed).code).toBe(0);
    console.log(`killed worker ${victim!.pid}: ${result.total} requests, ${result.failures.length} failed`, result.failures);
    // nginx resends what the dead worker dropped; only a request caught inside the kill itself can be
    // lost (at most one per client), never the stream.
    expect(result.failures.length).toBeLessThanOrEqual(clients);
    expect(result.total).toBeGreaterThan(100);
    await expect
      .poll(async () => {
        const list = await workers();
        return list.length === 2 && list.every((w) => w.pm2_env.status === 'online') && !list.some((w) => w.pid === victim!.pid);
      }, { timeout: 30_000 })
      .toBe(true);
    const replaced = (await workers()).find((w) => w.pm_id === victim!.pm_id);
    expect(replaced!.pm2_env.restart_time).toBeGreaterThan(victim!.pm2_env.restart_time);
    const after = await Promise.all(Array.from({ length: 100 }, () => get('/api/me/', bearer(pair.access))));
    expect(after.filter((r) => r.status !== 200)).toEqual([]);
  });

  it('a worker that dies after committing a refresh, before answering: 503, never resent as a replay', async () => {
    await createUser('erin', 'erin-password-1'); // its own user: the test runs alone too (-t)
    const pair = await login('erin', 'erin-password-1');
    const { jti } = decodeJwt(pair.refresh).payload as { jti: string };
    expect(jti).toMatch(/^[0-9a-f]{32}$/); // safe to splice into SQL
    const family = await sql(`SELECT family_id FROM refresh_tokens WHERE jti = '${jti}'`);
    expect(family).not.toBe('');
    const before = await workers();
    // Kept-alive connections to both workers in both nginx workers' caches: a resend, if nginx made
    // one, would not be stopped by a lack of them.
    await Promise.all(Array.from({ length: 32 }, () => get('/api/me/', bearer(pair.access))));

    // The refresh's rotation waits on a row lock held here; the worker running it is the one whose
    // pool connection waits (pg_stat_activity names its PM2 instance, pm2 jlist the instance's pid).
    const lock = psqlSession();
    let victim: number | undefined;
    try {
      await lock.run(`BEGIN; SELECT 1 FROM refresh_tokens WHERE jti = '${jti}' FOR UPDATE;`);
      const answer = post('/api/token/refresh/', { refresh: pair.refresh });
      let waiting = '';
      await expect
        .poll(async () => (waiting = await sql("SELECT application_name FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name LIKE 'koa-auth-stack worker %'")), { timeout: 10_000 })
        .toMatch(/^koa-auth-stack worker \d+$/);
      const instance = /(\d+)$/.exec(waiting)![1];
      const owner = before.find((w) => String(w.pm2_env.NODE_APP_INSTANCE) === instance);
      expect(owner, `worker ${instance} among ${JSON.stringify(before.map((w) => [w.pid, w.pm2_env.NODE_APP_INSTANCE]))}`).toBeDefined();
      victim = owner!.pid;
      // Stopped, the worker cannot read its answer; released, the lock lets the rotation run, and it
      // commits at the protocol's Sync, which the worker sent with the statement.
      expect((await signal(victim, 'SIGSTOP')).code).toBe(0);
      await lock.run('COMMIT;');
      await expect.poll(() => sql(`SELECT rotated_at IS NOT NULL FROM refresh_tokens WHERE jti = '${jti}'`), { timeout: 10_000 }).toBe('t');
      expect((await signal(victim, 'SIGKILL')).code).toBe(0);

      const reply = await answer;
      // nginx's own answer to a failed upstream, not the other worker's 401 to a resent request.
      expect(reply.status, reply.text).toBe(503);
      expect(reply.json).toEqual({ detail: 'The service is unavailable; try again shortly.', code: 'service_unavailable' });
      expect(reply.headers.get('retry-after')).toBe('2');
    } finally {
      await lock.close();
      if (victim !== undefined) await signal(victim, 'SIGKILL'); // never leave it stopped
    }
    // The rotation happened once, and nothing took it for a replay: the session lives.
    expect(await sql(`SELECT count(*) FROM refresh_tokens WHERE parent_jti = '${jti}'`)).toBe('1');
    expect(await sql(`SELECT revoked_at IS NULL FROM token_families WHERE id = '${family}'`)).toBe('t');
    // The other worker was never touched; PM2 replaces the dead one.
    const survivor = before.find((w) => w.pid !== victim)!;
    await expect
      .poll(async () => {
        const list = await workers();
        return list.length === 2 && list.every((w) => w.pm2_env.status === 'online') && list.some((w) => w.pid === survivor.pid) && !list.some((w) => w.pid === victim);
      }, { timeout: 90_000, interval: 500 })
      .toBe(true);
    expect((await get('/api/me/', bearer(pair.access))).status).toBe(200);
  });
});

describe('a database outage', () => {
  it('readyz turns 503 and protected GETs keep working; the token endpoints recover with no restart', async () => {
    const pair = await login('alice', 'alice-password-1');
    const pidsBefore = (await workers()).map((w) => w.pid).sort();
    expect((await stack.docker('stop', stack.container('postgres'))).code).toBe(0);
    try {
      await expect.poll(async () => (await get('/readyz')).status, { timeout: 20_000 }).toBe(503);
      const ready = await get('/readyz');
      expect(ready.json).toEqual({ detail: 'The database is not answering.', code: 'database_unavailable', database: 'unavailable', revocations: expect.stringMatching(/^(ok|reconnecting)$/) });
      for (let i = 0; i < 10; i++) expect((await get('/api/me/', bearer(pair.access))).status).toBe(200);
      expect((await post('/api/token/verify/', { token: pair.access })).status).toBe(200);
      const down = await post('/api/token/', { username: 'alice', password: 'alice-password-1' });
      expect(down.status).toBe(503);
      expect(down.json.code).toBe('database_unavailable');
    } finally {
      expect((await stack.docker('start', stack.container('postgres'))).code).toBe(0);
    }
    await expect.poll(async () => (await post('/api/token/', { username: 'alice', password: 'alice-password-1' })).status, {
      timeout: 60_000,
      interval: 1_000,
    }).toBe(200);
    // Each worker's revocation feed reconnects on its own backoff (up to 10 s), and /readyz is 503
    // until it has: the login above may have found a worker whose feed is back already.
    await expect.poll(async () => (await get('/readyz')).status, { timeout: 30_000, interval: 500 }).toBe(200);
    expect((await post('/api/token/refresh/', { refresh: pair.refresh })).status).toBe(200);
    expect((await workers()).map((w) => w.pid).sort()).toEqual(pidsBefore); // no worker restarted
  });
});

describe('persistence', () => {
  it('docker compose down then up: users and refresh tokens survive (the volume)', async () => {
    const pair = await login('bob', 'bob-password-1');
    await stack.down();
    await stack.up();
    const r = await post('/api/token/refresh/', { refresh: pair.refresh });
    expect(r.status, r.text).toBe(200);
    expect(decodeJwt(r.json.access).payload.username).toBe('bob');
    await login('alice', 'alice-password-1');
  });
});

describe('machine clients through nginx', () => {
  it('createclient in the container; the grant, the metadata and verify through nginx; users\' routes refuse the token; deleteclient stops it', async () => {
    const created = await stack.exec('app', ['npm', 'run', '-s', 'cli', '--', 'createclient', 'e2e-service', '--scopes', 'things:read']);
    expect(created.code, created.stderr).toBe(0);
    const [, clientId, secret] = /client_id: (\S+)\nclient_secret: (\S+)/.exec(created.stdout)!;
    const metadata = await get('/.well-known/oauth-authorization-server');
    expect(metadata.json).toMatchObject({ issuer: 'https://auth.e2e.example', token_endpoint: 'https://auth.e2e.example/api/oauth/token/' });
    const r = await request(stack.url, 'POST', '/api/oauth/token/', {
      body: 'grant_type=client_credentials',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}` },
    });
    expect(r.status, r.text).toBe(200);
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect(r.json).toMatchObject({ token_type: 'Bearer', expires_in: 300, scope: 'things:read' });
    const token = r.json.access_token as string;
    expect(decodeJwt(token).header.typ).toBe('at+jwt');
    expect(decodeJwt(token).payload).toMatchObject({ iss: 'https://auth.e2e.example', sub: clientId, client_id: clientId });
    const me = await get('/api/me/', bearer(token));
    expect(me.status).toBe(403);
    expect(me.json.code).toBe('user_token_required');
    expect((await post('/api/token/verify/', { token })).status).toBe(200);
    const wrong = await request(stack.url, 'POST', '/api/oauth/token/', {
      body: `grant_type=client_credentials&client_id=${clientId}&client_secret=wrong`,
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('www-authenticate')).toMatch(/^Basic realm="oauth"/); // nginx passes the app's challenge
    expect(wrong.json.error).toBe('invalid_client');

    expect((await stack.exec('app', ['npm', 'run', '-s', 'cli', '--', 'deleteclient', 'e2e-service'])).code).toBe(0);
    // The cutoff reaches every worker by NOTIFY: each of several verifies (spread over the workers) refuses it.
    for (let i = 0; i < 6; i++) {
      await expect.poll(async () => (await post('/api/token/verify/', { token })).status, { timeout: 10_000 }).toBe(400);
    }
  });
});

describe('nginx limits', () => {
  it('a login burst gets 429 from nginx, as JSON with Retry-After', async () => {
    // Users that do not exist, one each: the app's own per-account throttle stays out of this. All
    // are sent at once (simultaneous), and tagged so their access-log lines can be found.
    const agent = `burst-${Date.now().toString(36)}`;
    const replies = await simultaneous(
      stack.url,
      Array.from({ length: 30 }, (_, i) => postJson('/api/token/', { username: `burst-${i}`, password: 'wrong-password' }, { 'User-Agent': agent })),
    );
    const byNginx = replies.filter((r) => r.status === 429);
    // The zone admits its burst (10) and one more at once, then 5 a second: as many more as the time
    // nginx took to read the 30 (on a busy machine, more than the 200 ms one more needs). That time is
    // nginx's own, from its access log: each request's start (msec, the line's time, less request_time).
    const burst = async () =>
      (await stack.logs('nginx'))
        .split('\n')
        .filter((l) => l.includes(`"user_agent":"${agent}"`))
        .map((l) => JSON.parse(l.slice(l.indexOf('{'))) as { msec: number; request_time: number });
    await expect.poll(async () => (await burst()).length, { timeout: 15_000 }).toBe(30);
    const starts = (await burst()).map((l) => l.msec - l.request_time);
    const seconds = Math.max(...starts) - Math.min(...starts);
    expect(byNginx.length).toBeGreaterThanOrEqual(30 - 11 - Math.ceil(seconds * 5));
    expect(byNginx.length).toBeGreaterThan(0);
    expect(replies.filter((r) => r.status === 401).length).toBeGreaterThan(0);
    for (const r of byNginx) {
      expect(JSON.parse(r.body)).toEqual({ detail: 'Too many requests from this address; retry in a second.', code: 'throttled' });
      expect(r.headers['retry-after']).toBe('1');
      for (const [name, pattern] of Object.entries(SECURITY_HEADERS)) expect(r.headers[name], name).toMatch(pattern);
    }
  });

  it('every spelling of the login path that reaches the login is under its limit', async () => {
    await sleep(2_500); // the zone refills after the burst above
    // nginx matches locations on the normalised, case-sensitive path; the app must not serve a
    // spelling nginx files elsewhere (before: /API/TOKEN/ logged in through `location /`, unlimited).
    const spellings = [
      '/api/token/', '/api/token', '/API/TOKEN/', '/Api/Token/', '/api/Token/', '/API/token/', '/api/TOKEN',
      '//api/token/', '/api//token/', '/api/./token/', '/api/x/../token/', '/api/%74oken/', '/api/token/?x=1', '/api/token//',
    ];
    const perSpelling = 15;
    // All at once: the zone lets about a dozen through in all, so a spelling it covers cannot have
    // all of its own reach the login; one it does not cover would.
    const paths = spellings.flatMap((path) => Array.from({ length: perSpelling }, () => path));
    const answers = await simultaneous(stack.url, paths.map((path) => postJson(path, {})));
    const replies = answers.map((r, i) => ({ path: paths[i]!, r: { status: r.status, text: r.body, json: r.body ? (JSON.parse(r.body) as Record<string, unknown>) : undefined } }));
    for (const path of spellings) {
      const mine = replies.filter((x) => x.path === path).map((x) => x.r);
      const reachedLogin = mine.filter((r) => r.status === 400 && r.json?.username !== undefined).length;
      const statuses = [...new Set(mine.map((r) => r.status))].sort();
      expect(reachedLogin, `${path}: ${statuses.join(',')}`).toBeLessThan(perSpelling);
      for (const r of mine) expect([400, 404, 429], `${path}: ${r.status} ${r.text}`).toContain(r.status);
    }
    expect(replies.filter((x) => x.r.status === 429).length).toBeGreaterThan(0);
    await sleep(2_500);
  });

  it('every hostile request gets a 4xx as JSON with the security headers, whoever answers it', async () => {
    for (const { name, request: raw } of HOSTILE_REQUESTS) {
      const reply = await rawHttp(stack.url, raw);
      expect(contractError(reply), `${name}: ${reply.status} ${reply.body.slice(0, 120)}`).toEqual([]);
      for (const [header, pattern] of Object.entries(SECURITY_HEADERS)) expect(reply.headers[header], `${name}: ${header}`).toMatch(pattern);
    }
  });

  it("machine clients' grant is under the login's limit, in every spelling nginx normalises to it", async () => {
    await sleep(2_500); // the zone (the login's) refills after the bursts above
    const spellings = ['/api/oauth/token/', '/api/oauth/token', '//api/oauth/token/', '/api//oauth/token/', '/api/./oauth/token/', '/api/%6Fauth/token/', '/api/oauth/token/?x=1'];
    const perSpelling = 15;
    // Unknown clients, one each: the app's own throttle per client id stays out of this. All arrive
    // together (simultaneous): the zone's 5 a second cannot refill while they trickle in.
    const grant = (path: string, i: number) => {
      const body = `grant_type=client_credentials&client_id=nobody-${i}&client_secret=wrong`;
      return `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;
    };
    const sent = spellings.flatMap((path, s) => Array.from({ length: perSpelling }, (_, i) => ({ path, raw: grant(path, s * 100 + i) })));
    const answers = await simultaneous(stack.url, sent.map((x) => x.raw));
    const replies = answers.map((r, i) => ({ path: sent[i]!.path, r: { ...r, json: r.body ? (JSON.parse(r.body) as Record<string, unknown>) : undefined } }));
    for (const path of spellings) {
      const mine = replies.filter((x) => x.path === path).map((x) => x.r);
      const reached = mine.filter((r) => r.status === 401 && r.json?.error === 'invalid_client').length;
      expect(reached, `${path}: ${[...new Set(mine.map((r) => r.status))].join(',')}`).toBeLessThan(perSpelling);
      for (const r of mine) expect([401, 404, 429], `${path}: ${r.status} ${r.body}`).toContain(r.status);
    }
    const byNginx = replies.map((x) => x.r).filter((r) => r.status === 429);
    expect(byNginx.length).toBeGreaterThanOrEqual(spellings.length * perSpelling - 11); // burst 10, plus the one the rate allows
    for (const r of byNginx) expect(r.headers['retry-after']).toBe('1');
    await sleep(2_500);
  });

  it('a body over client_max_body_size gets 413, a huge header 431, both JSON', async () => {
    const big = await request(stack.url, 'POST', '/api/token/', {
      body: JSON.stringify({ username: 'x', password: 'y'.repeat(100_000) }),
      headers: { 'Content-Type': 'application/json' },
    });
    expect(big.status).toBe(413);
    expect(big.json.code).toBe('request_too_large');
    const header = await get('/api/me/', { Authorization: `Bearer ${'a'.repeat(10_000)}` });
    expect(header.status).toBe(431);
    expect(header.json.code).toBe('headers_too_large');
  });
});
