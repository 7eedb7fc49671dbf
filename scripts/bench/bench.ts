// The stack's benchmark, against its own ceiling, on this machine, in one run.
//
//   npm run bench                          start a bench stack (docker-compose.yml + deploy/bench/), measure, tear down
//   npm run bench -- --keep                leave the stack up afterwards (project "kasbench")
//   npm run bench -- --url http://127.0.0.1:8080 --app-url http://127.0.0.1:3000 \
//                    --ceiling-url http://127.0.0.1:8081 --ceiling-direct-url http://127.0.0.1:3001 --project kasbench
//                                          measure a stack that is already running (started with deploy/bench/)
//
// Options: --duration S (10), --rounds N (3), --connections N (64), --workers N (WEB_CONCURRENCY for
// the stack and the ceiling; default: the CPUs), --json FILE (write the results as JSON).
//
// This machine is shared and noisy: every figure is the median of --rounds runs, and each app run is
// paired with a ceiling run (or, for logins, a hash timing) taken right before it.
//
// Scenarios (wrk, one thread, a warm-up before each): GET /api/me/ and POST /api/token/verify/ with a
// valid token; POST /api/token/ (login, 8 connections: hash-bound); POST /api/token/refresh/ (32
// connections, every request a fresh refresh token minted before the clock starts). Each runs through
// nginx and against the app directly, and is set beside the ceiling: a bare node:http cluster with the
// same worker count behind the same nginx (deploy/bench/ceiling.js). Also measured: worker RSS under
// load (pm2), one argon2id hash (the floor of a login), and pgbench running the refresh SQL (the
// database's ceiling for refreshes). Nothing here is asserted: the numbers go in docs/PERFORMANCE.md.
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import jwt from 'jsonwebtoken';
import { loadConfig } from '../../app/config';

const ROOT = path.resolve(__dirname, '../..');
const SIGNING_KEY = 'bench-only-signing-key-q8Vt1mZx4LwP0sKe7RbN2yHc5JdA9uGf';
const USER = { username: 'bench', password: 'bench-password-1' };

const { values: opts } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '64' },
    workers: { type: 'string', default: '' },
    keep: { type: 'boolean', default: false },
    project: { type: 'string', default: 'kasbench' },
    url: { type: 'string' },
    'app-url': { type: 'string' },
    'ceiling-url': { type: 'string' },
    'ceiling-direct-url': { type: 'string' },
    json: { type: 'string' },
  },
});
const DURATION = Number(opts.duration);
const CONNECTIONS = Number(opts.connections);
const ROUNDS = Number(opts.rounds);
const tmp = mkdtempSync(path.join(os.tmpdir(), 'bench-'));

function sh(cmd: string, args: string[], input?: string, env?: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { maxBuffer: 256 * 1024 * 1024, env: env ?? process.env }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(' ').slice(0, 200)}: ${stderr || err.message}`)) : resolve(stdout),
    );
    child.stdin?.end(input ?? '');
  });
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
    HTTP_BIND: '127.0.0.1',
    HTTP_PORT: '0',
    WEB_CONCURRENCY: opts.workers ?? '',
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

interface Load {
  rps: number;
  p50: number; // ms
  p99: number;
  non2xx: number;
  errors: number;
  requests: number;
}

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
  const script = path.join(tmp, `s${Math.random().toString(36).slice(2)}.lua`);
  writeFileSync(script, luaFor(s));
  const out = await sh('wrk', ['-t1', `-c${s.connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', script, base + s.path]);
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
  return wrk(base, s, DURATION);
}

// --- the measurements around the load ------------------------------------------------------------

/**
 * Max RSS per PM2 worker while `during` runs, sampled every second from /proc (pm2 itself is asked
 * only for the pids: a `pm2 jlist` a second would cost the machine more than the sample is worth).
 */
async function workerRss<T>(during: Promise<T>): Promise<{ result: T; rssMb: number[] }> {
  const app = await container('app');
  const list = JSON.parse(await sh('docker', ['exec', app, 'pm2', 'jlist'])) as { name: string; pid: number }[];
  const pids = list.filter((p) => p.name === 'api').map((p) => p.pid);
  const max = new Map<number, number>();
  let done = false;
  const sampler = (async () => {
    while (!done) {
      try {
        const out = await sh('docker', ['exec', app, 'grep', '-H', 'VmRSS', ...pids.map((p) => `/proc/${p}/status`)]);
        for (const m of out.matchAll(/\/proc\/(\d+)\/status:VmRSS:\s+(\d+) kB/g)) {
          max.set(Number(m[1]), Math.max(max.get(Number(m[1])) ?? 0, Number(m[2]) * 1024));
        }
      } catch {
        // a sample lost under load is fine
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  const result = await during;
  done = true;
  await sampler;
  return { result, rssMb: [...max.values()].map((b) => b / 1e6) };
}

async function hashTimeMs(): Promise<{ ms: number; cpus: number }> {
  const script = `
    const { argon2Sync, randomBytes } = require('node:crypto');
    const times = [];
    for (let i = 0; i < 31; i++) {
      const t = process.hrtime.bigint();
      argon2Sync('argon2id', { message: 'bench-password-1', nonce: randomBytes(16), memory: 19456, passes: 2, parallelism: 1, tagLength: 32 });
      times.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    times.sort((a, b) => a - b);
    console.log(JSON.stringify({ ms: times[15], cpus: require('node:os').availableParallelism() }));`;
  return JSON.parse(await sh('docker', ['exec', await container('app'), 'node', '-e', script]));
}

async function psql(sql: string): Promise<string> {
  return sh('docker', ['exec', '-i', await container('postgres'), 'psql', '-U', 'app', '-d', 'app', '-v', 'ON_ERROR_STOP=1', '-qtA'], sql);
}

/** N fresh refresh tokens for the user: rows inserted by SQL, tokens signed with the bench key. */
async function mintRefreshTokens(userId: number, n: number): Promise<string> {
  const seed = Date.now().toString(36);
  await psql(`
    WITH f AS (INSERT INTO token_families (id, user_id, created_at)
               SELECT gen_random_uuid(), ${userId}, now() FROM generate_series(1, ${n}) RETURNING id),
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
  const file = path.join(tmp, 'refresh-tokens.txt');
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

/** pgbench running the refresh statement (claim the token, insert its child) on fresh chains. */
async function pgbenchRefresh(userId: number, clients: number): Promise<number> {
  const pg = await container('postgres');
  await psql(`
    DROP TABLE IF EXISTS bench_heads;
    CREATE TABLE bench_heads (client_id int PRIMARY KEY, jti varchar(64) NOT NULL);
    WITH f AS (INSERT INTO token_families (id, user_id, created_at)
               SELECT gen_random_uuid(), ${userId}, now() FROM generate_series(0, ${clients - 1}) RETURNING id),
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
    AND f.id = t.family_id AND f.revoked_at IS NULL AND f.user_id = ${userId} AND u.id = f.user_id AND u.is_active
  RETURNING t.family_id, t.jti AS parent, u.username),
inserted AS (
  INSERT INTO refresh_tokens (jti, family_id, parent_jti, created_at, expires_at)
  SELECT md5(random()::text || clock_timestamp()), family_id, parent, now(), now() + interval '1 day' FROM claimed
  RETURNING jti)
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
  try {
    execFileSync('wrk', ['--version'], { stdio: 'ignore' });
  } catch (err) {
    // wrk --version exits 1 but runs; only a missing binary is fatal
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error('wrk is needed: apt-get install wrk', { cause: err });
  }
  const own = !opts.url;
  if (own) {
    console.error('bench: building and starting the bench stack (project %s) ...', opts.project);
    await compose('up', '-d', '--build');
  }
  try {
    const url = opts.url ?? (await publishedUrl('nginx', 80));
    const appUrl = opts['app-url'] ?? (await publishedUrl('app', 3000));
    const ceilingUrl = opts['ceiling-url'] ?? (await publishedUrl('ceiling-nginx', 80));
    const ceilingDirectUrl = opts['ceiling-direct-url'] ?? (await publishedUrl('ceiling', 3000));
    for (const u of [url, appUrl, ceilingUrl, ceilingDirectUrl]) {
      for (let i = 0; (await fetch(`${u}/healthz`).then((r) => r.status, () => 0)) !== 200; i++) {
        if (i > 120) throw new Error(`${u} is not answering`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    await sh('docker', ['exec', '-i', await container('app'), 'npm', 'run', '-s', 'cli', '--', 'createuser', USER.username, '--password-stdin'], USER.password).catch(() => {});
    // A fresh access token for each scenario: a whole run outlasts ACCESS_TOKEN_LIFETIME.
    const freshAccess = async () => {
      const login = await post(url, '/api/token/', USER);
      if (login.status !== 200) throw new Error(`cannot log in as ${USER.username}: ${login.status}`);
      return login.json.access!;
    };
    const userId = JSON.parse(Buffer.from((await freshAccess()).split('.')[1]!, 'base64url').toString()).user_id as number;
    const scenarios = {
      'GET /api/me/': (access: string): Scenario => ({ method: 'GET', path: '/api/me/', headers: { Authorization: `Bearer ${access}` }, connections: CONNECTIONS }),
      'POST /api/token/verify/': (access: string): Scenario => ({ method: 'POST', path: '/api/token/verify/', body: JSON.stringify({ token: access }), connections: CONNECTIONS }),
    };
    const loginS: Scenario = { method: 'POST', path: '/api/token/', body: JSON.stringify(USER), connections: 8 };
    const rows: Row[] = [];
    let rss: number[] = [];
    const watched = async (run: Promise<Load>) => {
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
    for (const [via, base, ceilingBase] of [['nginx', url, ceilingUrl], ['direct', appUrl, ceilingDirectUrl]] as const) {
      for (const [name, scenario] of Object.entries(scenarios)) {
        const s = scenario(await freshAccess());
        const pairs: [Load, Load][] = [];
        for (let r = 0; r < ROUNDS; r++) pairs.push([await measure(ceilingBase, s), await watched(measure(base, s))]);
        const [ceiling, app] = [median(pairs.map((p) => p[0])), median(pairs.map((p) => p[1]))];
        rows.push({ name, via, conns: s.connections, load: app, ceiling, ratio: medianOf(pairs.map(([c, a]) => a.rps / c.rps)), rssMb: rssSince() });
        console.error(`bench: ${via} ${name}: ${app.rps.toFixed(0)} req/s (ceiling ${ceiling.rps.toFixed(0)}), p99 ${app.p99.toFixed(1)} ms`);
      }
      const logins: [number, Load][] = [];
      for (let r = 0; r < ROUNDS; r++) logins.push([(await hashTimeMs()).ms, await watched(measure(base, loginS))]);
      const cpus = (await hashTimeMs()).cpus;
      const login = median(logins.map((l) => l[1]));
      const hashMs = medianOf(logins.map((l) => l[0]));
      rows.push({ name: 'POST /api/token/ (login)', via, conns: 8, load: login, hashMs, cpus, ratio: medianOf(logins.map(([h, l]) => l.rps / (cpus / (h / 1000)))), rssMb: rssSince() });
      console.error(`bench: ${via} login: ${login.rps.toFixed(0)} req/s, one hash ${hashMs.toFixed(1)} ms`);
      const refreshes: Load[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        const refresh: Scenario = { method: 'POST', path: '/api/token/refresh/', tokensFile: await mintRefreshTokens(userId, 4000 * DURATION), connections: 32 };
        refreshes.push(await watched(measure(base, refresh)));
      }
      const refresh = median(refreshes);
      rows.push({ name: 'POST /api/token/refresh/', via, conns: 32, load: refresh, rssMb: rssSince() });
      console.error(`bench: ${via} refresh: ${refresh.rps.toFixed(0)} req/s`);
    }
    const pgbench: number[] = [];
    for (let r = 0; r < ROUNDS; r++) pgbench.push(await pgbenchRefresh(userId, 32));
    const pgbenchTps = medianOf(pgbench);
    for (const row of rows) if (row.name.includes('refresh')) row.ratio = row.load.rps / pgbenchTps;
    const imageSize = Number((await sh('docker', ['image', 'inspect', '-f', '{{.Size}}', (await sh('docker', ['inspect', '-f', '{{.Config.Image}}', await container('app')])).trim()])).trim());
    report({ rows, pgbenchTps, imageSize });
  } finally {
    if (own && !opts.keep) await compose('down', '-v', '--remove-orphans').catch((err: Error) => console.error(err.message));
  }
}

interface Row {
  name: string;
  via: 'nginx' | 'direct';
  conns: number;
  load: Load;
  ceiling?: Load;
  /** Median of the per-round ratios: to the ceiling, the hash-bound limit, or pgbench. */
  ratio?: number;
  hashMs?: number;
  cpus?: number;
  /** The largest RSS of any worker during the scenario's app runs. */
  rssMb?: number | undefined;
}

const medianOf = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
/** The run with the median throughput (its latencies come with it). */
const median = (runs: Load[]) => [...runs].sort((a, b) => a.rps - b.rps)[Math.floor(runs.length / 2)]!;

function report(r: { rows: Row[]; pgbenchTps: number; imageSize: number }) {
  const f0 = (n: number) => n.toFixed(0);
  const f1 = (n: number) => n.toFixed(1);
  const pct = (n: number | undefined) => (n === undefined ? '' : `${(100 * n).toFixed(0)}%`);
  const line = (name: string, via: string, conns: number, l: Load, vs: string, rssMb?: number) =>
    `| ${name} | ${via} | ${conns} | ${f0(l.rps)} | ${f1(l.p50)} | ${f1(l.p99)} | ${l.non2xx} | ${l.errors} | ${vs} | ${rssMb === undefined ? '' : f0(rssMb)} |`;
  const lines = [
    `Machine: ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ${f0(os.totalmem() / 2 ** 30)} GiB RAM; ${new Date().toISOString().slice(0, 10)}.`,
    `Command: npm run bench -- --duration ${DURATION} --rounds ${ROUNDS} --connections ${CONNECTIONS}${opts.workers ? ` --workers ${opts.workers}` : ''}`,
    '',
    '| scenario | via | conns | req/s | p50 ms | p99 ms | non-2xx | errors | against | worker RSS MB |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...r.rows.flatMap((row) => {
      if (row.ceiling) {
        return [
          line(`${row.name}: ceiling (bare node:http)`, row.via, row.conns, row.ceiling, ''),
          line(row.name, row.via, row.conns, row.load, `${pct(row.ratio)} of the ceiling`, row.rssMb),
        ];
      }
      if (row.hashMs !== undefined) {
        return [line(row.name, row.via, row.conns, row.load, `${pct(row.ratio)} of ${row.cpus} CPUs / ${f1(row.hashMs)} ms hash = ${f0(row.cpus! / (row.hashMs / 1000))}/s`, row.rssMb)];
      }
      return [line(row.name, row.via, row.conns, row.load, `${pct(row.ratio)} of pgbench ${f0(r.pgbenchTps)} tps`, row.rssMb)];
    }),
    '',
    `- pgbench, the refresh statement (32 clients, prepared statements, inside the database container): ${f0(r.pgbenchTps)} tps.`,
    `- App image: ${f1(r.imageSize / 1e6)} MB.`,
  ];
  console.log(lines.join('\n'));
  if (opts.json) writeFileSync(opts.json, JSON.stringify(r, null, 2));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
