// A guarded request's CPU cost in one worker, and where it goes (issue 19):
//
//   npm run build && npm run bench:guard-cpu -- [--requests 20000] [--rounds 3] [--connections 32]
//       [--paths floor,me,verify,login] [--root DIR …] [--profile DIR] [--tcp] [--env K=V …] [--json FILE]
//
// Starts a Postgres (testcontainers; or DATABASE_URL, a scratch database), migrates it, creates a
// user, starts one worker per --root as PM2 starts it (node with the node_args and env that checkout's
// ecosystem.config.js gives, ROOT/dist/server.js, production settings; "DIR --flag" replaces the
// node_args, "DIR NAME=value" adds to the env) and, with `floor`,
// a bare node:http server answering what GET /api/me/ answers (the least a request can cost). Then,
// per path and round, the targets taking turns, sends --requests guarded requests with one valid
// access token over --connections keep-alive connections (a Unix socket, as nginx reaches the app
// under compose; --tcp for TCP) and reads each process's CPU time (utime + stime of every thread,
// /proc/PID/stat) before and after: CPU µs per request, which on this shared, noisy machine is far
// steadier than requests per second. --profile DIR runs each worker again under `node --cpu-prof`
// and splits the profile's busy main-thread samples by component (Koa, the router, koa-jwt,
// jsonwebtoken, the token checks, the revocation check, metrics, logging, Node's HTTP, GC), each
// share applied to the measured µs per request; --analyze FILE splits one profile. "Before" is
// another checkout, built: `git archive main | tar -x -C /tmp/before`, node_modules linked, `npm run
// build` there. Nothing here is asserted.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { PostgreSqlContainer, type StartedPostgreSqlContainer } from '@testcontainers/postgresql';
import { images } from '../../test/support/images';

const { values: opts } = parseArgs({
  options: {
    requests: { type: 'string', default: '20000' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '32' },
    /** Of: floor (a bare node:http server, the least a request can cost), me, verify. */
    paths: { type: 'string', default: 'floor,me,verify' },
    /**
     * A checkout to measure (built); repeat to compare several, taking turns. Default: this one. Node
     * options may follow the directory, replacing the ecosystem's, and settings, added to its env:
     * "DIR --max-semi-space-size=16 MALLOC_ARENA_MAX=16".
     */
    root: { type: 'string', multiple: true, default: [path.resolve(__dirname, '../..')] },
    port: { type: 'string', default: '4191' },
    /** Send over TCP to PORT instead of the Unix socket (LISTEN_SOCKET) nginx uses under compose. */
    tcp: { type: 'boolean', default: false },
    profile: { type: 'string' },
    env: { type: 'string', multiple: true, default: [] },
    json: { type: 'string' },
    /** Only split this .cpuprofile by component (shares of its busy samples), nothing run. */
    analyze: { type: 'string' },
  },
});
const ROOTS = opts.root!.map((r) => r.trim().split(/\s+/)[0]!).map((r) => path.resolve(r));
/** What follows a --root's directory: node options (replacing the ecosystem's) and NAME=value settings. */
const OVERRIDES = new Map(
  opts.root!.map((r, i) => {
    const words = r.trim().split(/\s+/).slice(1);
    const isEnv = (w: string) => /^[A-Za-z_][A-Za-z0-9_]*=/.test(w);
    const env = Object.fromEntries(words.filter(isEnv).map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]));
    return [i, { nodeArgs: words.filter((w) => !isEnv(w)), env }];
  }),
);
/** How the checkout's PM2 file starts an API worker: its node_args and env, read by loading the file. */
function ecosystemOf(root: string, env: NodeJS.ProcessEnv): { nodeArgs: string[]; env: Record<string, string> } {
  const script = "const a = require('./ecosystem.config.js').apps[0]; console.log(JSON.stringify({ nodeArgs: a.node_args ?? [], env: a.env ?? {} }))";
  return JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: root, env, encoding: 'utf8' })) as { nodeArgs: string[]; env: Record<string, string> };
}
const REQUESTS = Number(opts.requests);
const ROUNDS = Number(opts.rounds);
const CONNECTIONS = Number(opts.connections);
const PORT = Number(opts.port);
const EXTRA_ENV = Object.fromEntries(
  opts.env!.map((kv) => {
    const i = kv.indexOf('=');
    if (i < 1) throw new Error(`--env: expected K=V (got ${kv})`);
    return [kv.slice(0, i), kv.slice(i + 1)];
  }),
);
const USER = { username: 'guard-cpu', password: 'guard-cpu-password-1' };
const TICK_US = 1e6 / 100; // USER_HZ: /proc's clock ticks are 1/100 s on Linux

function run(root: string, args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [path.join(root, 'scripts/run.js'), ...args], { cwd: root, env }, (err, stdout, stderr) =>
      err ? reject(new Error(`${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout),
    );
    if (input !== undefined) child.stdin!.end(input);
  });
}

/**
 * The worker's CPU time so far, in µs: all its threads (main, libuv's, V8's GC helpers), or with
 * `mainOnly` its main thread's (the JavaScript; a login's hash runs on libuv's threads).
 */
function cpuMicros(pid: number, mainOnly = false): number {
  const stat = readFileSync(mainOnly ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * TICK_US; // utime, stime (fields 14 and 15)
}

const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });
function request(t: Pick<Target, 'socket' | 'port'>, method: string, urlPath: string, headers: Record<string, string>, body?: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const where = t.socket ? { socketPath: t.socket } : { host: '127.0.0.1', port: t.port };
    const req = http.request({ ...where, method, path: urlPath, agent, headers: { Host: 'api', ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

interface Scenario {
  name: string;
  send: () => Promise<{ status: number }>;
}

async function load(s: Scenario, n: number): Promise<number> {
  let next = 0;
  let bad = 0;
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (next++ < n) if ((await s.send()).status !== 200) bad++;
    }),
  );
  return bad;
}

const FLOOR_SERVER = `
const http = require('node:http');
const body = JSON.stringify({ id: 1, username: 'guard-cpu' });
const listen = process.env.FLOOR_LISTEN;
if (!/^[0-9]+$/.test(listen)) require('node:fs').rmSync(listen, { force: true });
http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
}).listen(/^[0-9]+$/.test(listen) ? { port: Number(listen), host: '127.0.0.1' } : { path: listen });`;

// --- the profile's components ---------------------------------------------------------------------
interface CallFrame {
  functionName: string;
  url: string;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

// The innermost frame on a sample's stack that one of these names decides its component; frames of
// Node's own helpers (crypto, buffers, timers, promises) are passed through to their caller.
const COMPONENTS: [string, RegExp][] = [
  ['jsonwebtoken verify (jws, HMAC)', /node_modules\/(jsonwebtoken|jws|jwa|safe-buffer|semver|lodash\.|ms)\//],
  ['koa-jwt', /node_modules\/(koa-jwt|p-any|koa-unless)\/|vendor\/p-any/],
  ['token checks (app/auth/tokens, guard)', /\/(app|dist)\/auth\/(tokens|guard|keys)\./],
  ['revocation check', /\/(app|dist)\/auth\/(revocation|revocations|revocation-check)\./],
  ['metrics (prom-client)', /node_modules\/prom-client\/|\/(app|dist)\/(http\/metrics|metrics\/)/],
  ['logging (pino, request ids)', /node_modules\/(pino|sonic-boom|thread-stream)\/|\/(app|dist)\/(http\/logging|logger)\./],
  ['router (@koa/router)', /node_modules\/(@koa\/router|path-to-regexp|koa-compose)\//],
  ['Koa (context, respond, headers)', /node_modules\/(koa|koa-compose|cookies|content-type|type-is|accepts|statuses|on-finished|http-errors|delegates|fresh|vary|encodeurl|mime-types|negotiator|only|content-disposition|depd|destroy|escape-html|http-assert|keygrip|tsscmp|koa-convert)\//],
  ['app (errors, CORS, headers, endpoint, body)', /\/(app|dist)\//],
  ["Node's HTTP (parse, socket writes)", /^node:(_http|http|net|internal\/(http|streams|stream_base|net|js_stream|dns|url))/],
];
const SPECIAL = new Map([
  ['(garbage collector)', 'GC'],
  ['(program)', 'V8/native (program)'],
  ['(idle)', 'idle'],
]);
const STARTUP = /^node:internal\/modules\//;

function components(profile: Profile): Map<string, number> {
  const parent = new Map<number, number>();
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const memo = new Map<number, string>();
  const componentOf = (id: number): string => {
    const known = memo.get(id);
    if (known !== undefined) return known;
    let found = 'other';
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      // The worker's start (loading modules) is no request's work.
      if (STARTUP.test(byId.get(at)!.callFrame.url)) {
        found = 'startup';
        break;
      }
    }
    for (let at: number | undefined = id; found === 'other' && at !== undefined; at = parent.get(at)) {
      const { functionName, url } = byId.get(at)!.callFrame;
      const special = SPECIAL.get(functionName);
      if (special && at === id) {
        found = special;
        break;
      }
      const hit = COMPONENTS.find(([, re]) => re.test(url));
      if (hit) {
        found = hit[0];
        break;
      }
    }
    memo.set(id, found);
    return found;
  };
  const totals = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const c = componentOf(id);
    totals.set(c, (totals.get(c) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  return totals;
}

// --- the run ----------------------------------------------------------------------------------------
interface Target {
  name: string;
  /** Where requests go: a Unix socket's path, or a TCP port on 127.0.0.1. */
  socket: string | undefined;
  port: number;
  pid: () => number;
  stop: () => Promise<void>;
}

function spawned(args: string[], cwd: string, env: NodeJS.ProcessEnv): { child: ChildProcess; stop: () => Promise<void> } {
  const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    child,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

async function waitUp(t: Target): Promise<void> {
  for (let i = 0; ; i++) {
    const up = await request(t, 'GET', '/healthz', {}).then(
      (r) => r.status === 200,
      () => false,
    );
    if (up) return;
    if (i > 300) throw new Error(`${t.name} did not start`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A worker of a checkout (ROOT/dist/server.js), as PM2 starts it, or the bare node:http floor. */
async function startTarget(name: string, root: string | undefined, n: number, env: NodeJS.ProcessEnv, profileDir?: string): Promise<Target> {
  const socket = opts.tcp ? undefined : path.join(os.tmpdir(), `guard-cpu-${process.pid}-${n}.sock`);
  const port = PORT + n;
  const own = OVERRIDES.get(n - 1);
  const pm2 = root ? ecosystemOf(root, { ...env, ...own?.env }) : { nodeArgs: [], env: {} };
  const nodeArgs = [...(own?.nodeArgs.length ? own.nodeArgs : pm2.nodeArgs), ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [])];
  // The worker's environment as the image and PM2 give it, then the bench's own (no metrics socket, --env), then the --root's.
  const workerEnv = { ...env, ...pm2.env, METRICS_SOCKET_DIR: '', ...EXTRA_ENV, ...own?.env, PORT: String(port), ...(socket ? { LISTEN_SOCKET: socket } : {}) };
  const p = root
    ? spawned([...nodeArgs, path.join(root, 'dist/server.js')], root, workerEnv)
    : spawned([...nodeArgs, '-e', FLOOR_SERVER], os.tmpdir(), { ...env, FLOOR_LISTEN: socket ?? String(port) });
  const t: Target = { name, socket, port, pid: () => p.child.pid!, stop: p.stop };
  try {
    await waitUp(t);
  } catch (err) {
    await p.stop();
    throw err;
  }
  return t;
}

async function scenarioFor(t: Target, name: string): Promise<Scenario> {
  if (t.name.startsWith('floor')) return { name, send: () => request(t, 'GET', '/api/me/', { Authorization: 'Bearer x' }) }; // the floor
  const body = JSON.stringify(USER);
  const r = await request(t, 'POST', '/api/token/', { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)) }, body);
  if (r.status !== 200) throw new Error(`login: ${r.status} ${r.text}`);
  const { access } = JSON.parse(r.text) as { access: string };
  const verifyBody = JSON.stringify({ token: access });
  if (name === 'login') {
    // A whole login: the throttle, one argon2id hash (on libuv's threads, counted in the process's CPU), the session.
    return { name, send: () => request(t, 'POST', '/api/token/', { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)) }, body) };
  }
  return name === 'verify'
    ? {
        name,
        send: () => request(t, 'POST', '/api/token/verify/', { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(verifyBody)) }, verifyBody),
      }
    : { name, send: () => request(t, 'GET', '/api/me/', { Authorization: `Bearer ${access}` }) };
}

interface Result {
  target: string;
  path: string;
  cpuUs: number[];
  mainUs: number[];
  rps: number[];
  bad: number;
  rssMb: number;
  profile?: Record<string, number>;
}

async function main() {
  if (opts.analyze) {
    const totals = components(JSON.parse(readFileSync(opts.analyze, 'utf8')) as Profile);
    totals.delete('idle');
    totals.delete('startup');
    const busy = [...totals.values()].reduce((a, b) => a + b, 0);
    for (const [k, v] of [...totals].sort((a, b) => b[1] - a[1])) console.log(`  ${k.padEnd(46)} ${((100 * v) / busy).toFixed(1).padStart(5)}%`);
    return;
  }
  let container: StartedPostgreSqlContainer | undefined;
  let databaseUrl = process.env.DATABASE_URL;
  if (!databaseUrl) {
    container = await new PostgreSqlContainer(images().POSTGRES_IMAGE).start();
    databaseUrl = container.getConnectionUri();
  }
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NODE_ENV: 'production',
    DATABASE_URL: databaseUrl,
    SIGNING_KEY: 'guard-cpu-benchmark-key-Hq3vN8tZ1mWc6RxB0yLs5KfJ',
    HOST: '127.0.0.1',
    METRICS_SOCKET_DIR: '',
    MALLOC_ARENA_MAX: '1', // as the image sets it (Dockerfile)
    ...EXTRA_ENV,
  };
  const targets: Target[] = [];
  const paths = opts.paths!.split(',');
  try {
    // The first checkout's CLI migrates (an older one would find nothing left to do).
    await run(ROOTS[0]!, ['cli', 'migrate'], env);
    await run(ROOTS[0]!, ['cli', 'createuser', USER.username, '--password-stdin'], env, USER.password).catch(() => ''); // exists: a reused DATABASE_URL
    if (paths.includes('floor')) targets.push(await startTarget('floor (bare node:http)', undefined, 0, env));
    for (const [i, root] of ROOTS.entries()) targets.push(await startTarget(opts.root![i]!.trim(), root, i + 1, env));

    const results: Result[] = [];
    for (const name of paths.filter((p) => p !== 'floor')) {
      const runs = await Promise.all(targets.map(async (t) => ({ t, s: await scenarioFor(t, name), r: { target: t.name, path: t.name.startsWith('floor') ? 'floor' : name, cpuUs: [], mainUs: [], rps: [], bad: 0, rssMb: 0 } as Result })));
      for (const { s } of runs) await load(s, Math.min(REQUESTS, 5000)); // warm-up: JIT, caches, pool
      // The targets take turns, round by round: drift on this shared machine falls on all of them.
      for (let round = 0; round < ROUNDS; round++) {
        for (const { t, s, r } of runs) {
          const cpu0 = cpuMicros(t.pid());
          const main0 = cpuMicros(t.pid(), true);
          const t0 = performance.now();
          r.bad += await load(s, REQUESTS);
          r.rps.push(REQUESTS / ((performance.now() - t0) / 1000));
          r.cpuUs.push((cpuMicros(t.pid()) - cpu0) / REQUESTS);
          r.mainUs.push((cpuMicros(t.pid(), true) - main0) / REQUESTS);
          const rss = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${t.pid()}/status`, 'utf8'));
          r.rssMb = Math.max(r.rssMb, Number(rss?.[1] ?? 0) / 1024);
        }
      }
      results.push(...runs.filter(({ r }) => r.path !== 'floor' || name === paths.find((p) => p !== 'floor')).map(({ r }) => r));
    }
    while (targets.length) await targets.pop()!.stop();

    if (opts.profile) {
      for (const [i, root] of ROOTS.entries()) {
        for (const name of paths.filter((p) => p !== 'floor')) {
          const dir = path.join(path.resolve(opts.profile), `${i}-${name}`);
          mkdirSync(dir, { recursive: true });
          const t = await startTarget(opts.root![i]!.trim(), root, i + 1, env, dir);
          targets.push(t);
          const s = await scenarioFor(t, name);
          await load(s, Math.min(REQUESTS, 5000));
          await load(s, REQUESTS);
          await targets.pop()!.stop();
          const file = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).sort().pop()!;
          const totals = components(JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as Profile);
          totals.delete('idle');
          totals.delete('startup');
          const busy = [...totals.values()].reduce((a, b) => a + b, 0);
          const r = results.find((x) => x.target === opts.root![i]!.trim() && x.path === name)!;
          // The samples are the main thread's: their shares apply to its CPU, not the process's.
          r.profile = Object.fromEntries([...totals].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, (v / busy) * median(r.mainUs)]));
        }
      }
    }

    const load1 = os.loadavg().map((l) => l.toFixed(1)).join(' ');
    console.log(`\none process each, ${REQUESTS} requests × ${ROUNDS} rounds (taking turns) at ${CONNECTIONS} connections ${opts.tcp ? 'over TCP' : 'over a Unix socket'}; load average ${load1}`);
    console.log('| target | path | CPU µs/request (median; rounds) | of it the main thread | req/s (median) | non-200 | peak RSS MB |');
    console.log('|---|---|---|---|---|---|---|');
    for (const r of results) {
      console.log(`| ${r.target} | ${r.path} | ${median(r.cpuUs).toFixed(0)} (${r.cpuUs.map((c) => c.toFixed(0)).join(', ')}) | ${median(r.mainUs).toFixed(0)} | ${median(r.rps).toFixed(0)} | ${r.bad} | ${r.rssMb.toFixed(0)} |`);
    }
    const withProfile = results.filter((r) => r.profile);
    if (withProfile.length) {
      const names = [...new Set(withProfile.flatMap((r) => Object.keys(r.profile!)))];
      console.log(`\nThe profiles' main-thread samples by component, as µs of the main thread's measured CPU per request (idle and start-up left out):`);
      console.log(`| component | ${withProfile.map((r) => `${r.path}, ${r.target}`).join(' | ')} |`);
      console.log(`|---|${withProfile.map(() => '---').join('|')}|`);
      for (const n of names) console.log(`| ${n} | ${withProfile.map((r) => (r.profile![n] ?? 0).toFixed(1)).join(' | ')} |`);
    }
    if (opts.json) writeFileSync(opts.json, JSON.stringify({ roots: ROOTS, load: os.loadavg(), results }, null, 2));
  } finally {
    while (targets.length) await targets.pop()!.stop();
    agent.destroy();
    await container?.stop();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
