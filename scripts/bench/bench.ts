// The stack's benchmark, against its ceiling, on this machine, in one run.
//
//   npm run bench                          start a bench stack (docker-compose.yml + deploy/bench/), measure, tear down
//   npm run bench -- --keep                leave the stack up afterwards (project "kasbench")
//   npm run bench -- --only me,verify --env LOG_LEVEL=debug     some scenarios, the stack with other settings
//
// Options: --duration S (10), --rounds N (3), --connections N (64), --workers N (WEB_CONCURRENCY for
// the stack and the ceilings; default: the CPUs), --only LIST (of: docker-ceiling, me, verify, login,
// refresh, direct, tcp; default all but direct and tcp), --env K=V (repeatable: settings for the stack),
// --json FILE, --svg FILE (default docs/bench.svg: the chart of the scenarios against the ceiling),
// --baseline FILE (a report an earlier run wrote with --json: each target set beside it, a change for
// the worse of more than 10% marked as a finding; docs/bench.json is the last one recorded),
// --compare FILE --baseline FILE (two reports compared, nothing run).
// Needs root (a network namespace), Docker, wrk and nginx on the host (apt-get install wrk nginx-light).
//
// Every client runs in a network namespace of its own (made here, removed at the end), as a production
// client does: the stack is reached through Docker's DNAT of a port published on the namespace link's
// host address, never through Docker's userland proxy on 127.0.0.1. The reference is the **host
// ceiling**: the same nginx configuration, on the host with no Docker, in front of a bare node:http
// cluster with the same worker count (deploy/bench/ceiling.js). Every scenario is reported as a ratio
// to it, and each run of a scenario is paired with a ceiling run taken right before it: this machine
// is shared and its speed drifts from minute to minute. Every figure is the median of --rounds runs.
//
// Scenarios (wrk, one thread, a warm-up before each): the bare chain in Docker (the same ceiling in
// containers: the Docker tax alone); GET /api/me/ and POST /api/token/verify/ with a valid token;
// POST /api/token/ (login, 8 connections: hash-bound); POST /api/token/refresh/ (32 connections,
// every request a fresh refresh token minted before the clock starts); with --only direct, /api/me/
// and verify on the app's port without nginx; with --only tcp, /api/me/ through a second nginx that
// reaches the app over TCP, alternating with the Unix socket's nginx (the one change compared). Also measured: worker RSS under load (pm2), one
// argon2id hash (the floor of a login), pgbench running the refresh SQL (the database's ceiling for
// refreshes), and where each timed run's CPU went on the whole machine, per request (cpu-budget.ts:
// the app's hashing and main threads, PM2, Postgres, nginx, wrk, Docker, …; run nothing else
// meanwhile). Nothing here is asserted: the numbers go in docs/PERFORMANCE.md.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import jwt from 'jsonwebtoken';
import { loadConfig } from '../../app/config';
import { cpuBudget, cpuSnapshot, PARTS, type CpuBudget } from './cpu-budget';
import { changeTable, compareReports, LOGIN, ME, pct, REFRESH, targetTable, VERIFY, type BenchReport, type Load, type Row, type Via } from './targets';
import { workerMemoryMb, type StatusField } from './worker-memory';

const ROOT = path.resolve(__dirname, '../..');
const SIGNING_KEY = 'bench-only-signing-key-q8Vt1mZx4LwP0sKe7RbN2yHc5JdA9uGf';
const USER = { username: 'bench', password: 'bench-password-1' };
const SCENARIOS = ['docker-ceiling', 'me', 'verify', 'login', 'refresh', 'direct', 'tcp'] as const;
type ScenarioName = (typeof SCENARIOS)[number];

const { values: opts } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '64' },
    workers: { type: 'string', default: '' },
    keep: { type: 'boolean', default: false },
    project: { type: 'string', default: 'kasbench' },
    only: { type: 'string', default: 'docker-ceiling,me,verify,login,refresh' },
    env: { type: 'string', multiple: true, default: [] },
    netns: { type: 'string', default: 'kaso-bench' },
    subnet: { type: 'string', default: '10.199.77' },
    json: { type: 'string' },
    /** A report an earlier run wrote with --json: each target set beside it, worse by > 10% marked. */
    baseline: { type: 'string' },
    /** With --baseline: compare this report (--json of a run) instead of running anything. */
    compare: { type: 'string' },
    svg: { type: 'string', default: path.join(ROOT, 'docs/bench.svg') },
  },
});
const DURATION = Number(opts.duration);
const CONNECTIONS = Number(opts.connections);
const ROUNDS = Number(opts.rounds);
const ONLY = new Set(opts.only!.split(',').map((x) => x.trim()) as ScenarioName[]);
for (const name of ONLY) if (!SCENARIOS.includes(name)) throw new Error(`--only: unknown scenario ${name} (of ${SCENARIOS.join(', ')})`);
const STACK_ENV = Object.fromEntries(
  opts.env!.map((kv) => {
    const i = kv.indexOf('=');
    if (i < 1) throw new Error(`--env: expected K=V (got ${kv})`);
    return [kv.slice(0, i), kv.slice(i + 1)];
  }),
);
let tmpDir: string | undefined;
/** The run's scratch directory, made when first needed (not by --compare). */
const tmp = () => (tmpDir ??= mkdtempSync(path.join(os.tmpdir(), 'bench-')));
/** Removed when the run ends: the refresh scenario's tokens alone are hundreds of MB. */
const removeTmp = () => {
  if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
};

function sh(cmd: string, args: string[], input?: string, env?: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { maxBuffer: 256 * 1024 * 1024, env: env ?? process.env }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(' ').slice(0, 200)}: ${stderr || err.message}`)) : resolve(stdout),
    );
    child.stdin?.on('error', () => {}); // a command that never reads its input
    child.stdin?.end(input ?? '');
  });
}

// --- the client's network namespace and the host ceiling ----------------------------------------

// The link between the client's namespace and the host: HOST_IP on the host's end, CLIENT_IP in the
// namespace. All load goes to HOST_IP: the host ceiling listens there, and the stack's ports are
// published there (Docker DNATs them to the containers).
const HOST_IP = `${opts.subnet}.1`;
const CLIENT_IP = `${opts.subnet}.2`;
const NETNS = opts.netns!;
const LINK_HOST = `${NETNS.slice(0, 12)}-h`;
const LINK_NS = `${NETNS.slice(0, 12)}-n`;

async function createNetns(): Promise<void> {
  await removeNetns(); // left by a run that was killed
  const ip = (...args: string[]) => sh('ip', args);
  await ip('netns', 'add', NETNS);
  await ip('link', 'add', LINK_HOST, 'type', 'veth', 'peer', 'name', LINK_NS);
  await ip('link', 'set', LINK_NS, 'netns', NETNS);
  await ip('addr', 'add', `${HOST_IP}/30`, 'dev', LINK_HOST);
  await ip('link', 'set', LINK_HOST, 'up');
  await ip('-n', NETNS, 'addr', 'add', `${CLIENT_IP}/30`, 'dev', LINK_NS);
  await ip('-n', NETNS, 'link', 'set', LINK_NS, 'up');
  await ip('-n', NETNS, 'link', 'set', 'lo', 'up');
}

async function removeNetns(): Promise<void> {
  await sh('ip', ['link', 'del', LINK_HOST]).catch(() => {}); // takes its peer with it
  await sh('ip', ['netns', 'del', NETNS]).catch(() => {});
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

/**
 * The host ceiling: deploy/bench/ceiling.js on the host, behind the host's nginx running the
 * project's own nginx configuration (nginx/), rendered as nginx/entrypoint.sh renders it, with only
 * what must differ outside a container changed: paths, the listen address, the upstream.
 */
async function startHostCeiling(): Promise<{ url: string; stop: () => Promise<void> }> {
  const [nodePort, nginxPort] = [await freePort(), await freePort()];
  const dir = path.join(tmp(), 'nginx');
  mkdirSync(path.join(dir, 'conf.d'), { recursive: true });
  const vars: Record<string, string> = {
    APP_UPSTREAM: `127.0.0.1:${nodePort}`,
    LOGIN_RATE: '1000000r/s', LOGIN_BURST: '1000000', TOKEN_RATE: '1000000r/s', TOKEN_BURST: '1000000',
    CLIENT_MAX_BODY_SIZE: '64k',
  };
  // As entrypoint.sh renders (plain HTTP), with conf.d's paths pointing at this directory.
  const render = (file: string) =>
    readFileSync(path.join(ROOT, 'nginx', file), 'utf8')
      .replace(/\$\{(\w+)\}/g, (m, name: string) => vars[name] ?? m)
      .replaceAll('/etc/nginx/conf.d/', `${dir}/conf.d/`);
  const conf = (name: string, text: string) => writeFileSync(path.join(dir, 'conf.d', name), text);
  conf('00-common.conf', render('templates/common.conf'));
  for (const file of ['api.locations', 'security-headers.inc', 'errors.inc']) conf(file, render(`templates/${file}`));
  conf('10-http.conf', render('templates/http.conf').replace('listen 80 default_server;', `listen ${HOST_IP}:${nginxPort} default_server;`));
  conf('app.servers', `server ${vars.APP_UPSTREAM} max_fails=0;\n`);
  // A file: no Docker to collect stdout; buffered as compose's nginx writes it (ACCESS_LOG_BUFFER=32k).
  conf('access-log.inc', `access_log ${dir}/access.log json buffer=32k flush=1s;\n`);
  writeFileSync(
    path.join(dir, 'nginx.conf'),
    render('nginx.conf')
      .replace(/^user nginx;$/m, '') // as root, the workers run as nobody
      .replace('/var/run/nginx.pid', `${dir}/nginx.pid`)
      .replace('error_log /dev/stderr', `error_log ${dir}/error.log`),
  );
  const children: ChildProcess[] = [
    spawn(process.execPath, [path.join(ROOT, 'deploy/bench/ceiling.js')], {
      env: { ...process.env, PORT: String(nodePort), HOST: '127.0.0.1', WEB_CONCURRENCY: opts.workers || '' },
      stdio: 'inherit',
    }),
    spawn('nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: 'inherit' }),
  ];
  return {
    url: `http://${HOST_IP}:${nginxPort}`,
    async stop() {
      for (const child of children) {
        if (child.exitCode !== null) continue;
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}

// --- the stack -----------------------------------------------------------------------------------

const composeCmd = (() => {
  try {
    execFileSync('docker', ['compose', 'version'], { stdio: 'ignore' });
    return ['docker', 'compose'];
  } catch {
    return ['docker-compose'];
  }
})();

function composeEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  const airgap = path.join(ROOT, 'deploy/airgap/images.env');
  if (existsSync(airgap)) {
    for (const line of readFileSync(airgap, 'utf8').split('\n')) {
      const m = /^([A-Z_]+)=(.*)$/.exec(line);
      if (m && !env[m[1]!]) env[m[1]!] = m[2];
    }
  }
  return {
    ...env,
    NODE_ENV: 'production',
    SIGNING_KEY,
    POSTGRES_PASSWORD: 'bench-db-password',
    HTTP_BIND: HOST_IP,
    HTTP_PORT: '0',
    BENCH_BIND: HOST_IP,
    WEB_CONCURRENCY: opts.workers ?? '',
    ...STACK_ENV,
  };
}

const compose = (...args: string[]) =>
  sh(composeCmd[0]!, [...composeCmd.slice(1), '-p', opts.project!, '-f', 'docker-compose.yml', '-f', 'deploy/bench/docker-compose.bench.yml', ...args], undefined, {
    ...composeEnv(),
    PWD: ROOT,
  });

async function container(service: string): Promise<string> {
  const out = await sh('docker', [
    'ps', '--filter', `label=com.docker.compose.project=${opts.project}`, '--filter', `label=com.docker.compose.service=${service}`, '--format', '{{.Names}}',
  ]);
  const name = out.trim().split('\n')[0];
  if (!name) throw new Error(`no running ${service} container in project ${opts.project}`);
  return name;
}

async function publishedUrl(service: string, port: number): Promise<string> {
  const out = await sh('docker', ['port', await container(service), String(port)]);
  return `http://${out.trim().split('\n')[0]}`;
}

// --- load ----------------------------------------------------------------------------------------

const DONE_LUA = `
done = function(summary, latency, requests)
  io.write(string.format('\\nRESULT {"requests":%d,"duration":%d,"status":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"p50":%d,"p99":%d}\\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
`;

interface Scenario {
  method: 'GET' | 'POST';
  path: string;
  headers?: Record<string, string>;
  body?: string;
  /** A file of refresh tokens, one a line: each request takes the next one. */
  tokensFile?: string;
  connections: number;
}

function luaFor(s: Scenario): string {
  const headers = Object.entries({ ...(s.body || s.tokensFile ? { 'Content-Type': 'application/json' } : {}), ...s.headers })
    .map(([k, v]) => `wrk.headers[${JSON.stringify(k)}] = ${JSON.stringify(v)}`)
    .join('\n');
  const request = s.tokensFile
    ? `local tokens = {}
local i = 0
for line in io.lines(${JSON.stringify(s.tokensFile)}) do tokens[#tokens + 1] = line end
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, '{"refresh":"' .. (tokens[i] or "exhausted") .. '"}')
end`
    : '';
  return `wrk.method = "${s.method}"\n${s.body ? `wrk.body = ${JSON.stringify(s.body)}\n` : ''}${headers}\n${request}\n${DONE_LUA}`;
}

async function wrk(base: string, s: Scenario, seconds: number): Promise<Load> {
  const script = path.join(tmp(), `s${Math.random().toString(36).slice(2)}.lua`);
  writeFileSync(script, luaFor(s));
  // From the client's namespace.
  const out = await sh('ip', ['netns', 'exec', NETNS, 'wrk', '-t1', `-c${s.connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', script, base + s.path]);
  const r = JSON.parse(/RESULT (\{.*\})/.exec(out)![1]!) as Record<string, number>;
  return {
    rps: r.requests! / (r.duration! / 1e6),
    p50: r.p50! / 1000,
    p99: r.p99! / 1000,
    non2xx: r.status!,
    errors: r.connect! + r.read! + r.write! + r.timeout!,
    requests: r.requests!,
  };
}

async function measure(base: string, s: Scenario): Promise<Load> {
  if (!s.tokensFile) await wrk(base, s, 2); // warm-up
  const before = cpuSnapshot();
  const load = await wrk(base, s, DURATION);
  return { ...load, cpu: cpuBudget(before, cpuSnapshot(), load.requests) };
}

// --- the measurements around the load ------------------------------------------------------------

/** The app container and its PM2 workers' pids. */
async function apiWorkers(): Promise<{ app: string; pids: number[] }> {
  const app = await container('app');
  const list = JSON.parse(await sh('docker', ['exec', app, 'pm2', 'jlist'])) as { name: string; pid: number }[];
  return { app, pids: list.filter((p) => p.name === 'api').map((p) => p.pid) };
}

/** Each worker's `field` (worker-memory.ts). A worker that has gone has no status file: grep fails, and so does the reading. */
async function workerStatus(app: string, pids: number[], field: StatusField): Promise<number[]> {
  return workerMemoryMb(await sh('docker', ['exec', app, 'grep', '-H', field, ...pids.map((p) => `/proc/${p}/status`)]), pids, field);
}

/**
 * Peak RSS per PM2 worker while `during` runs: each worker's high-water mark (VmHWM) is reset to its
 * current RSS before (`5 > /proc/PID/clear_refs`) and read after. Exact, where a sample a second
 * missed short peaks; and two `docker exec`s a scenario, where sampling spent one a second (runc's
 * CPU, on the cores the load shares).
 */
async function workerRss<T>(during: () => Promise<T>): Promise<{ result: T; rssMb: number[] }> {
  const { app, pids } = await apiWorkers();
  await sh('docker', ['exec', app, 'sh', '-c', pids.map((p) => `echo 5 > /proc/${p}/clear_refs`).join(' && ')]);
  const result = await during();
  return { result, rssMb: await workerStatus(app, pids, 'VmHWM') };
}

/**
 * One argon2id hash at the app's parameters, in the app's container: its median time alone (the
 * target's "cores ÷ one hash"), and how many the container's cores hash per second with one process
 * per core hashing at once, as the workers do (on this shared machine two at once have often run
 * slower than one each), the most any login rate could reach.
 */
async function hashRate(): Promise<{ ms: number; cpus: number; parallelPerSecond: number }> {
  // The app's own hasher (its build in the image, the default parameters): the hash a login pays.
  const hashes = (n: number) => `
    (async () => {
      const hasher = require('./dist/auth/passwords.js').createPasswordHasher();
      await hasher.hash('bench-password-1'); // untimed: the first also maps its 19 MiB
      const times = [];
      for (let i = 0; i < ${n}; i++) {
        const t = process.hrtime.bigint();
        await hasher.hash('bench-password-1');
        times.push(Number(process.hrtime.bigint() - t) / 1e6);
      }
      console.log(JSON.stringify(times));
      await hasher.close();
    })();`;
  const app = await container('app');
  const alone = JSON.parse(await sh('docker', ['exec', app, 'node', '-e', hashes(31)])) as number[];
  const cpus = Number(await sh('docker', ['exec', app, 'node', '-p', 'require("node:os").availableParallelism()']));
  // One process per core, started together; each one's rate over its own run, summed.
  const runs = await Promise.all(Array.from({ length: cpus }, () => sh('docker', ['exec', app, 'node', '-e', hashes(16)])));
  const parallelPerSecond = runs.map((r) => JSON.parse(r) as number[]).reduce((sum, times) => sum + times.length / (times.reduce((a, b) => a + b, 0) / 1000), 0);
  return { ms: alone.sort((a, b) => a - b)[15]!, cpus, parallelPerSecond };
}

async function psql(sql: string): Promise<string> {
  return sh('docker', ['exec', '-i', await container('postgres'), 'psql', '-U', 'app', '-d', 'app', '-v', 'ON_ERROR_STOP=1', '-qtA'], sql);
}

/** N fresh refresh tokens for the user: rows inserted by SQL, tokens signed with the bench key. */
async function mintRefreshTokens(userId: number, n: number): Promise<string> {
  const seed = Date.now().toString(36);
  await psql(`
    WITH f AS (INSERT INTO token_families (id, user_id, created_at, expires_at, last_used_at)
               SELECT gen_random_uuid(), ${userId}, now(), now() + interval '30 days', now() FROM generate_series(1, ${n}) RETURNING id),
         numbered AS (SELECT id, row_number() OVER () AS i FROM f)
    INSERT INTO refresh_tokens (jti, family_id, created_at, expires_at)
    SELECT md5('${seed}-' || i), id, now(), now() + interval '1 day' FROM numbered;`);
  const key = loadConfig({ DATABASE_URL: 'postgres://unused/x', SIGNING_KEY }).config.jwt.keys.active;
  const now = Date.now();
  const lines: string[] = [];
  for (let i = 1; i <= n; i++) {
    const jti = createHash('md5').update(`${seed}-${i}`).digest('hex');
    const iat = Math.floor(now / 1000);
    lines.push(jwt.sign({ token_type: 'refresh', exp: iat + 86400, iat, jti, user_id: userId }, key.signing, { algorithm: key.alg }));
  }
  const file = path.join(tmp(), 'refresh-tokens.txt');
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

/** pgbench running the refresh statement (claim the token, insert its child) on fresh chains. */
async function pgbenchRefresh(userId: number, clients: number): Promise<number> {
  const pg = await container('postgres');
  await psql(`
    DROP TABLE IF EXISTS bench_heads;
    CREATE TABLE bench_heads (client_id int PRIMARY KEY, jti varchar(64) NOT NULL);
    WITH f AS (INSERT INTO token_families (id, user_id, created_at, expires_at, last_used_at)
               SELECT gen_random_uuid(), ${userId}, now(), now() + interval '30 days', now() FROM generate_series(0, ${clients - 1}) RETURNING id),
         numbered AS (SELECT id, row_number() OVER () - 1 AS c FROM f),
         t AS (INSERT INTO refresh_tokens (jti, family_id, created_at, expires_at)
               SELECT md5('head-' || c || '-' || clock_timestamp()), id, now(), now() + interval '1 day' FROM numbered
               RETURNING jti, family_id)
    INSERT INTO bench_heads SELECT n.c, t.jti FROM t JOIN numbered n ON n.id = t.family_id;`);
  // The app's rotation statement (families.rotate), with the chain's head kept per client.
  const script = `
WITH head AS (SELECT jti FROM bench_heads WHERE client_id = :client_id),
claimed AS (
  UPDATE refresh_tokens t SET rotated_at = now() FROM token_families f, users u, head
  WHERE t.jti = head.jti AND t.rotated_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > now()
    AND f.id = t.family_id AND f.revoked_at IS NULL AND f.user_id = ${userId} AND f.expires_at > now()
    AND u.id = f.user_id AND u.is_active
  RETURNING t.family_id, t.jti AS parent, u.username, f.expires_at AS session_ends),
inserted AS (
  INSERT INTO refresh_tokens (jti, family_id, parent_jti, created_at, expires_at)
  SELECT md5(random()::text || clock_timestamp()), family_id, parent, now(), LEAST(now() + interval '1 day', session_ends) FROM claimed
  RETURNING jti, family_id),
touched AS (
  UPDATE token_families SET last_used_at = now(), last_user_agent = 'pgbench', last_ip = '127.0.0.1'
  FROM inserted WHERE id = inserted.family_id)
UPDATE bench_heads SET jti = inserted.jti FROM inserted WHERE client_id = :client_id;
`;
  await sh('docker', ['exec', '-i', pg, 'sh', '-c', 'cat > /tmp/rotate.sql'], script);
  const out = await sh('docker', [
    'exec', pg, 'pgbench', '-U', 'app', '-d', 'app', '-n', '-M', 'prepared', '-c', String(clients), '-j', '2',
    '-T', String(DURATION), '-f', '/tmp/rotate.sql',
  ]);
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(out);
  await psql('DROP TABLE bench_heads;');
  return Number(tps?.[1] ?? NaN);
}

// --- main ----------------------------------------------------------------------------------------

async function post(base: string, p: string, body: unknown) {
  const r = await fetch(base + p, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, json: (await r.json()) as Record<string, string> };
}

async function main() {
  for (const [tool, pkg] of [['wrk', 'wrk'], ['nginx', 'nginx-light'], ['ip', 'iproute2']]) {
    try {
      execFileSync(tool!, ['-v'], { stdio: 'ignore' });
    } catch (err) {
      // wrk -v exits 1 but runs; only a missing binary is fatal
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`${tool} is needed: apt-get install ${pkg}`, { cause: err });
    }
  }
  if (opts.baseline) readReport(opts.baseline); // a bad file fails now, not after the run
  await createNetns();
  const host = await startHostCeiling();
  // Interrupted: still remove the namespace and the host ceiling (the stack stays, as with --keep).
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      console.error(`bench: ${signal}: cleaning up`);
      void host.stop().then(removeNetns).finally(() => {
        removeTmp();
        process.exit(130);
      });
    });
  }
  try {
    console.error('bench: building and starting the bench stack (project %s) ...', opts.project);
    await compose('up', '-d', '--build');
    try {
      await measureAll(host.url);
    } finally {
      if (!opts.keep) await compose('down', '-v', '--remove-orphans').catch((err: Error) => console.error(err.message));
    }
  } finally {
    try {
      await host.stop();
      await removeNetns();
    } finally {
      removeTmp();
    }
  }
}

async function measureAll(hostCeiling: string) {
  const url = await publishedUrl('nginx', 80);
  const appUrl = await publishedUrl('app', 3000);
  const dockerCeiling = await publishedUrl('ceiling-nginx', 80);
  const tcpUrl = await publishedUrl('nginx-tcp', 80);
  for (const u of [hostCeiling, url, appUrl, dockerCeiling, tcpUrl]) {
    for (let i = 0; (await fetch(`${u}/healthz`).then((r) => r.status, () => 0)) !== 200; i++) {
      if (i > 120) throw new Error(`${u} is not answering`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  // Every worker up (compose may just have recreated the app container with new settings).
  for (let i = 0; ; i++) {
    const list = JSON.parse(await sh('docker', ['exec', await container('app'), 'pm2', 'jlist'])) as { name: string; pm2_env: { status: string } }[];
    const api = list.filter((p) => p.name === 'api');
    if (api.length > 0 && api.length === (Number(opts.workers) || api.length) && api.every((p) => p.pm2_env.status === 'online')) {
      const health = await sh('docker', ['inspect', '-f', '{{.State.Health.Status}}', await container('app')]);
      if (health.trim() === 'healthy') break;
    }
    if (i > 240) throw new Error('the app\'s workers did not all come online');
    await new Promise((r) => setTimeout(r, 500));
  }
  const fresh = await sh('docker', ['exec', '-i', await container('app'), 'npm', 'run', '-s', 'cli', '--', 'createuser', USER.username, '--password-stdin'], USER.password).then(
    () => true,
    (err: Error) => {
      if (!/exists|taken/i.test(err.message)) throw err;
      return false; // a stack kept from an earlier run (--keep) has the user, and its workers have served
    },
  );
  // Each worker at rest, before any request but the health checks' (the CLI above is a process of its
  // own): what the RSS target's load adds to. Only for information, so a failed reading is left out.
  const restRssMb = fresh
    ? await apiWorkers()
        .then(({ app, pids }) => workerStatus(app, pids, 'VmRSS'))
        .catch((err: Error) => {
          console.error(`bench: the workers' RSS at rest not read: ${err.message}`);
          return undefined;
        })
    : undefined;
  // A fresh access token for each scenario: a whole run outlasts ACCESS_TOKEN_LIFETIME.
  const freshAccess = async () => {
    const login = await post(url, '/api/token/', USER);
    if (login.status !== 200) throw new Error(`cannot log in as ${USER.username}: ${login.status}`);
    return login.json.access!;
  };
  const userId = JSON.parse(Buffer.from((await freshAccess()).split('.')[1]!, 'base64url').toString()).user_id as number;
  const me = (access: string): Scenario => ({ method: 'GET', path: '/api/me/', headers: { Authorization: `Bearer ${access}` }, connections: CONNECTIONS });
  const verify = (access: string): Scenario => ({ method: 'POST', path: '/api/token/verify/', body: JSON.stringify({ token: access }), connections: CONNECTIONS });
  const rows: Row[] = [];
  const ceilings: Load[] = []; // every host-ceiling run (GET /api/me/ at CONNECTIONS)
  let rss: number[] = [];
  const watched = async (run: () => Promise<Load>) => {
    const { result, rssMb } = await workerRss(run);
    rss.push(...rssMb);
    return result;
  };
  /** The largest worker RSS seen since the last call. */
  const rssSince = () => {
    const max = rss.length ? Math.max(...rss) : undefined;
    rss = [];
    return max;
  };
  /** `rounds` pairs: the host ceiling, then the scenario; the ratio is the median of the pairs'. */
  const paired = async (name: string, via: Via, base: string, s: Scenario, stack: boolean) => {
    const pairs: [Load, Load][] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const ceiling = await measure(hostCeiling, me('unused'));
      ceilings.push(ceiling);
      pairs.push([ceiling, stack ? await watched(() => measure(base, s)) : await measure(base, s)]);
    }
    const load = median(pairs.map((p) => p[1]));
    const ratio = medianOf(pairs.map(([c, a]) => a.rps / c.rps));
    rows.push({ name, via, conns: s.connections, load, ceilingRatio: ratio, rssMb: stack ? rssSince() : undefined });
    console.error(`bench: ${name} (${via}): ${load.rps.toFixed(0)} req/s, ${(100 * ratio).toFixed(0)}% of the host ceiling, p99 ${load.p99.toFixed(1)} ms`);
  };

  // A scenario that fails (this machine is shared) is reported as missing; the others still are.
  const attempt = async (name: string, run: () => Promise<void>) => {
    try {
      await run();
    } catch (err) {
      console.error(`bench: ${name} failed: ${(err as Error).message.slice(0, 300)}`);
      failed.push(name);
    }
  };
  const failed: string[] = [];
  if (ONLY.has('docker-ceiling')) await paired('bare node:http chain in Docker', 'nginx', dockerCeiling, me('unused'), false);
  if (ONLY.has('me')) await paired(ME, 'nginx', url, me(await freshAccess()), true);
  if (ONLY.has('verify')) await paired(VERIFY, 'nginx', url, verify(await freshAccess()), true);
  if (ONLY.has('direct')) {
    await paired(ME, 'direct', appUrl, me(await freshAccess()), true);
    await paired(VERIFY, 'direct', appUrl, verify(await freshAccess()), true);
  }
  if (ONLY.has('tcp')) {
    // Unix socket and TCP in turns, on the same app: the ratio is TCP's to the socket's.
    const s = me(await freshAccess());
    const pairs: [Load, Load][] = [];
    for (let r = 0; r < ROUNDS; r++) pairs.push([await measure(url, s), await watched(() => measure(tcpUrl, s))]);
    const load = median(pairs.map((p) => p[1]));
    const socket = median(pairs.map((p) => p[0]));
    const ratio = medianOf(pairs.map(([u, t]) => t.rps / u.rps));
    rows.push({ name: 'GET /api/me/, nginx → app over TCP', via: 'nginx', conns: s.connections, load, reference: { ratio, what: `the same over the Unix socket (${socket.rps.toFixed(0)}/s, alternating)` }, rssMb: rssSince() });
    console.error(`bench: tcp: ${load.rps.toFixed(0)} req/s, ${(100 * ratio).toFixed(0)}% of the Unix socket's ${socket.rps.toFixed(0)}`);
  }
  if (ONLY.has('login')) await attempt('login', async () => {
    const loginS: Scenario = { method: 'POST', path: '/api/token/', body: JSON.stringify(USER), connections: 8 };
    const logins: [Awaited<ReturnType<typeof hashRate>>, Load][] = [];
    for (let r = 0; r < ROUNDS; r++) logins.push([await hashRate(), await watched(() => measure(url, loginS))]);
    const cpus = logins[0]![0].cpus;
    const load = median(logins.map((l) => l[1]));
    const hashMs = medianOf(logins.map((l) => l[0].ms));
    const parallel = medianOf(logins.map((l) => l[0].parallelPerSecond));
    const ratio = medianOf(logins.map(([h, l]) => l.rps / (cpus / (h.ms / 1000))));
    const ofParallel = medianOf(logins.map(([h, l]) => l.rps / h.parallelPerSecond));
    // The same ratio read from inside the runs: the share of the CPUs' time that went to hashing, the
    // hash's cost as the logins paid it rather than one measured alone just before, which moves with
    // the moment (20.8–33.0 ms in one day's runs).
    // One round's share and its hash's CPU together: the round with the median share (of two, the
    // higher, as medianOf takes).
    const budgets = logins.flatMap(([, l]) => (l.cpu ? [l.cpu] : [])).sort((a, b) => a.hashingShare - b.hashingShare);
    const middle = budgets[Math.floor(budgets.length / 2)];
    const hashing = middle ? { share: middle.hashingShare, hashMs: middle.msPerRequest['app: password hashing (libuv pool)'] } : undefined;
    const what = `${cpus} CPUs / ${hashMs.toFixed(1)} ms hash = ${(cpus / (hashMs / 1000)).toFixed(0)}/s (and ${(100 * ofParallel).toFixed(0)}% of the ${parallel.toFixed(0)}/s ${cpus} hashes at once reach)`;
    rows.push({ name: LOGIN, via: 'nginx', conns: 8, load, reference: { ratio, what, ...(hashing ? { inRun: hashing } : {}) }, rssMb: rssSince() });
    console.error(`bench: login: ${load.rps.toFixed(0)} req/s, one hash ${hashMs.toFixed(1)} ms, ${cpus} at once ${parallel.toFixed(0)}/s`);
  });
  let pgbenchTps: number | undefined;
  if (ONLY.has('refresh')) await attempt('refresh', async () => {
    const refreshes: Load[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const refresh: Scenario = { method: 'POST', path: '/api/token/refresh/', tokensFile: await mintRefreshTokens(userId, 4000 * DURATION), connections: 32 };
      refreshes.push(await watched(() => measure(url, refresh)));
    }
    const pgbench: number[] = [];
    for (let r = 0; r < ROUNDS; r++) pgbench.push(await pgbenchRefresh(userId, 32));
    pgbenchTps = medianOf(pgbench);
    const load = median(refreshes);
    rows.push({ name: REFRESH, via: 'nginx', conns: 32, load, reference: { ratio: load.rps / pgbenchTps, what: `pgbench ${pgbenchTps.toFixed(0)} tps` }, rssMb: rssSince() });
    console.error(`bench: refresh: ${load.rps.toFixed(0)} req/s, pgbench ${pgbenchTps.toFixed(0)} tps`);
  });
  // Login and refresh are not paired with ceiling runs of their own: set beside the run's ceiling.
  const ceiling = median(ceilings.length ? ceilings : [await measure(hostCeiling, me('unused'))]);
  for (const row of rows) row.ceilingRatio ??= row.load.rps / ceiling.rps;
  const imageSize = Number((await sh('docker', ['image', 'inspect', '-f', '{{.Size}}', (await sh('docker', ['inspect', '-f', '{{.Config.Image}}', await container('app')])).trim()])).trim());
  report({ rows, ceiling, pgbenchTps, imageSize, failed, ...(restRssMb ? { restRssMb } : {}), date: new Date().toISOString(), command: commandLine() });
}

const medianOf = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
/** The run with the median throughput (its latencies come with it). */
const median = (runs: Load[]) => [...runs].sort((a, b) => a.rps - b.rps)[Math.floor(runs.length / 2)]!;

/** This run's options, as a command that repeats it. */
function commandLine(): string {
  return (
    `npm run bench -- --duration ${DURATION} --rounds ${ROUNDS} --connections ${CONNECTIONS}${opts.workers ? ` --workers ${opts.workers}` : ''}` +
    `${opts.only !== 'docker-ceiling,me,verify,login,refresh' ? ` --only ${opts.only}` : ''}${opts.env!.map((e) => ` --env ${e}`).join('')}`
  );
}

/** A report written by --json, read back (--baseline, --compare). */
function readReport(file: string): BenchReport {
  const r = JSON.parse(readFileSync(file, 'utf8')) as Partial<BenchReport>;
  if (!Array.isArray(r.rows) || typeof r.ceiling?.rps !== 'number') throw new Error(`${file}: not a report written by npm run bench -- --json`);
  return r as BenchReport;
}

/** The comparison with --baseline's report, when one was given. */
function againstBaseline(now: BenchReport): string[] {
  if (!opts.baseline) return [];
  const then = readReport(opts.baseline);
  const changes = compareReports(now, then);
  const named = `${opts.baseline}${then.date ? `, ${then.date.slice(0, 16).replace('T', ' ')}` : ''}`;
  const findings = changes.filter((c) => c.finding).length;
  return ['', ...changeTable(changes, named), '', `- ${findings === 0 ? 'No findings' : `${findings} finding${findings > 1 ? 's' : ''}`} (this machine is shared: run both at similar loads before reading one as the code's).`];
}

/** A scenario against its own limit, as the scenario table shows it. */
function referenceText(ref: NonNullable<Row['reference']>): string {
  const inRun = ref.inRun ? `; in the runs hashing took ${pct(ref.inRun.share)} of the CPUs' time (${ref.inRun.hashMs.toFixed(1)} ms of CPU a hash)` : '';
  return `${pct(ref.ratio)} of ${ref.what}${inRun}`;
}

function report(r: BenchReport) {
  const f0 = (n: number) => n.toFixed(0);
  const f1 = (n: number) => n.toFixed(1);
  const shareOr = (n: number | undefined) => (n === undefined ? '' : pct(n));
  const line = (name: string, via: string, conns: number, l: Load, ratio: string, vs: string, rssMb?: number) =>
    `| ${name} | ${via} | ${conns} | ${f0(l.rps)} | ${f1(l.p50)} | ${f1(l.p99)} | ${l.non2xx} | ${l.errors} | ${ratio} | ${vs} | ${rssMb === undefined ? '' : f0(rssMb)} |`;
  const command = r.command ?? commandLine();
  const lines = [
    `Machine: ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ${f0(os.totalmem() / 2 ** 30)} GiB RAM; ${new Date().toISOString().slice(0, 10)}.`,
    `Command: ${command}`,
    '',
    '| scenario | via | conns | req/s | p50 ms | p99 ms | non-2xx | errors | of the host ceiling | against its own limit | worker RSS MB |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    line('host ceiling: nginx + bare node:http, no Docker (median of all its runs)', 'nginx', CONNECTIONS, r.ceiling, '100%', ''),
    ...r.rows.map((row) => line(row.name, row.via, row.conns, row.load, shareOr(row.ceilingRatio), row.reference ? referenceText(row.reference) : '', row.rssMb)),
    '',
    ...(r.pgbenchTps ? [`- pgbench, the refresh statement (32 clients, prepared statements, inside the database container): ${f0(r.pgbenchTps)} tps.`] : []),
    `- App image: ${f1(r.imageSize / 1e6)} MB.`,
    ...(r.failed.length ? [`- Failed, not measured: ${r.failed.join(', ')}.`] : []),
    `- Load average at the end: ${os.loadavg().map((l) => l.toFixed(1)).join(', ')} (this machine is shared: compare runs only at similar loads).`,
  ];
  console.log([...lines, '', ...targetTable(r), ...againstBaseline(r), '', ...cpuTable(r.rows, r.ceiling)].join('\n'));
  if (opts.json) writeFileSync(opts.json, JSON.stringify(r, null, 2));
  if (opts.svg) {
    writeFileSync(opts.svg, chart(r.rows, r.ceiling, command));
    console.error(`bench: chart written to ${path.relative(process.cwd(), opts.svg)}`);
  }
}

/**
 * Where each scenario's CPU went, per request, on the whole machine (the median run's), and for
 * logins what that cost allows: every CPU busy, at most CPUs ÷ (a login's CPU in the stack) a second.
 */
function cpuTable(rows: Row[], ceiling: Load): string[] {
  const runs = [{ name: 'host ceiling', load: ceiling }, ...rows.map((r) => ({ name: `${r.name}${r.via === 'direct' ? ' (no nginx)' : ''}`, load: r.load }))].filter(
    (x): x is { name: string; load: Load & { cpu: CpuBudget } } => x.load.cpu !== undefined,
  );
  if (runs.length === 0) return [];
  const us = (ms: number) => (ms * 1000).toLocaleString('en-US', { maximumFractionDigits: 0 });
  const lines = [
    'CPU per request, in µs, by what used it (every thread on this machine, /proc; the median run of each; time stolen by the hypervisor not counted):',
    '',
    `| part | ${runs.map((x) => x.name).join(' | ')} |`,
    `|---|${runs.map(() => '---|').join('')}`,
    ...PARTS.map((part) => `| ${part} | ${runs.map((x) => us(x.load.cpu.msPerRequest[part])).join(' | ')} |`),
    `| **all** | ${runs.map((x) => `**${us(x.load.cpu.totalMs)}**`).join(' | ')} |`,
    `| the machine's CPUs busy | ${runs.map((x) => `${(100 * x.load.cpu.machineBusy).toFixed(0)}%${x.load.cpu.machineSteal > 0.005 ? ` (${(100 * x.load.cpu.machineSteal).toFixed(0)}% stolen)` : ''}`).join(' | ')} |`,
  ];
  const login = rows.find((r) => r.name === LOGIN)?.load.cpu;
  if (login) {
    const cpus = os.cpus().length;
    const hashing = login.msPerRequest['app: password hashing (libuv pool)'];
    lines.push(
      '',
      `- A login used ${login.serverMs.toFixed(1)} ms of CPU in the stack (all but the load generator, the idle ceilings and "other"), ` +
        `${hashing.toFixed(1)} ms of it hashing and ${(login.serverMs - hashing).toFixed(1)} ms everything else; ${login.totalMs.toFixed(1)} ms with the rest of the machine. ` +
        `With all ${cpus} CPUs busy, the stack serves at most ${((cpus * 1000) / login.serverMs).toFixed(0)} logins/s at that cost ` +
        `(${((cpus * 1000) / login.totalMs).toFixed(0)}/s with the load generator on the same CPUs, as here).`,
    );
  }
  return lines;
}

/** A bar per scenario: its req/s as a share of the host ceiling, the 50% target marked. */
function chart(rows: Row[], ceiling: Load, command: string): string {
  const esc = (t: string) => t.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const bars = [{ label: 'host ceiling (nginx + node:http, no Docker)', ratio: 1, rps: ceiling.rps }, ...rows.map((r) => ({ label: `${r.name}${r.via === 'direct' ? ' (no nginx)' : ''}`, ratio: r.ceilingRatio ?? 0, rps: r.load.rps }))];
  const left = 330, width = 420, barH = 22, gap = 10, top = 56;
  const height = top + bars.length * (barH + gap) + 40;
  const x = (ratio: number) => left + Math.min(ratio, 1.2) * width;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${left + width + 170}" height="${height}" font-family="sans-serif" font-size="13">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="22" font-size="15" font-weight="bold">Requests per second, as a share of the host ceiling (client in its own network namespace)</text>`,
    `<text x="10" y="42" fill="#555">${esc(command)}; ${new Date().toISOString().slice(0, 10)}</text>`,
    ...bars.flatMap((b, i) => {
      const y = top + i * (barH + gap);
      const fill = i === 0 ? '#999' : b.ratio >= 0.5 ? '#2b7bb9' : '#d9822b';
      return [
        `<text x="${left - 8}" y="${y + 15}" text-anchor="end">${esc(b.label)}</text>`,
        `<rect x="${left}" y="${y}" width="${Math.max(1, x(b.ratio) - left)}" height="${barH}" fill="${fill}"/>`,
        `<text x="${x(b.ratio) + 6}" y="${y + 15}">${(100 * b.ratio).toFixed(0)}% (${b.rps.toFixed(0)}/s)</text>`,
      ];
    }),
    `<line x1="${x(0.5)}" y1="${top - 6}" x2="${x(0.5)}" y2="${height - 30}" stroke="#c00" stroke-dasharray="4 3"/>`,
    `<text x="${x(0.5)}" y="${height - 14}" fill="#c00" text-anchor="middle">50%: the goal for /api/me/ and verify (target 30%)</text>`,
    `<line x1="${x(1)}" y1="${top - 6}" x2="${x(1)}" y2="${height - 30}" stroke="#999"/>`,
    '</svg>',
  ];
  return `${out.join('\n')}\n`;
}

function compareOnly(file: string): void {
  if (!opts.baseline) throw new Error('--compare needs --baseline: the report to compare it with');
  const now = readReport(file);
  console.log([`${file}${now.date ? ` (${now.date.slice(0, 16).replace('T', ' ')})` : ''}:`, '', ...targetTable(now), ...againstBaseline(now)].join('\n'));
}

(opts.compare ? Promise.resolve().then(() => compareOnly(opts.compare!)) : main()).catch((err) => {
  console.error(err);
  process.exit(1);
});
