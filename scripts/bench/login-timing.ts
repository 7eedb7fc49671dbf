// Failed-login timing by kind of account, through the real app over HTTP (issue 15, item 5): does a
// wrong password take as long for an unknown username as for a user imported from Django and not yet
// logged in (pbkdf2_sha256 at 870,000 iterations, Django 5.1's default, and every other hasher
// Django ships), and for a user with our own argon2id hash?
//
//   npm run bench:login-timing -- [--rounds 40] [--root DIR] [--env K=V …] [--json FILE]
//
// Starts a Postgres (testcontainers; or uses DATABASE_URL, a scratch database), migrates it with the
// app's CLI, creates one user of each kind (createuser; importusers with Django's hashes at Django's
// defaults), starts one server process (scripts/run.js server, PASSWORD_HASH_CONCURRENCY as
// configured) and times failed logins one at a time, the kinds interleaved in a new random order each
// round so drift on this shared machine spreads over all of them. Prints the median, p10 and p90 per
// kind, and each median against the unknown user's. --root runs another checkout of the app (say, an
// export of main: the "before"); only its CLI and HTTP API are used. Nothing here is asserted.
import { execFile, spawn } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { PostgreSqlContainer, type StartedPostgreSqlContainer } from '@testcontainers/postgresql';
import { images } from '../../test/support/images';

const { values: opts } = parseArgs({
  options: {
    rounds: { type: 'string', default: '40' },
    root: { type: 'string', default: path.resolve(__dirname, '../..') },
    port: { type: 'string', default: '4190' },
    env: { type: 'string', multiple: true, default: [] },
    json: { type: 'string' },
  },
});
const ROOT = path.resolve(opts.root!);
const ROUNDS = Number(opts.rounds);
const PORT = Number(opts.port);
const EXTRA_ENV = Object.fromEntries(
  opts.env!.map((kv) => {
    const i = kv.indexOf('=');
    if (i < 1) throw new Error(`--env: expected K=V (got ${kv})`);
    return [kv.slice(0, i), kv.slice(i + 1)];
  }),
);

// Django's hashes at Django's defaults (the vectors of test/fixtures/django-hashes.ts): the password
// does not matter here, every login below is a wrong one.
const IMPORTED: Record<string, string> = {
  pbkdf2_sha256: 'pbkdf2_sha256$870000$seasalt$wJSpLMQRQz0Dhj/pFpbyjMj71B2gUYp6HJS5AU+32Ac=',
  pbkdf2_sha1: 'pbkdf2_sha1$1000000$seasalt2$3R9hvSAiAy5ARspAFy5GJ/2rjXo=',
  argon2: 'argon2$argon2id$v=19$m=102400,t=2,p=8$dWNHNDQ5Y3R6c3hkelc1dERuOWN2NQ$esA68nVAcrhR5x2ELN9aFQ',
  bcrypt_sha256: 'bcrypt_sha256$$2b$12$y7yn8CuSuH6li3lBfT3/fejZRwDy/NMptq321RDsc.LPvRkNgah5a',
  bcrypt: 'bcrypt$$2b$12$shreaiZ8xfGoh4fTCi88IeDysdNwjiIC0tnOjmlm3ssHNiFhOSlca',
  scrypt: 'scrypt$16384$seasalt$8$5$ECMIUp+LMxMSK8xB/IVyba+KYGTI7FTnet025q/1f/vBAVnnP3hdYqJuRi+mJn6ji6ze3Fbb7JEFPKGpuEf5vw==',
  md5: 'md5$seasalt$3f86d0d3d465b7b458c231bf3555c0e3',
  sha1: 'sha1$seasalt$cff36ea83f5706ce9aa7454e63e431fc726b2dc8',
  unsalted_md5: '88a434c88cca4e900f7874cd98123f43',
  unsalted_sha1: 'sha1$$6d138ca3ae545631b3abd71a4f076ce759c5700b',
};
const NATIVE = { username: 'native-argon2id', password: 'native-password-1' };
const KINDS = ['unknown', 'argon2id (ours)', ...Object.keys(IMPORTED)];
const usernameOf = (kind: string) => (kind === 'unknown' ? 'nobody-here' : kind === 'argon2id (ours)' ? NATIVE.username : `django-${kind}`);

function run(args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [path.join(ROOT, 'scripts/run.js'), ...args], { cwd: ROOT, env }, (err, stdout, stderr) =>
      err ? reject(new Error(`${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout),
    );
    if (input !== undefined) child.stdin!.end(input);
  });
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
function login(username: string, password: string): Promise<{ status: number; ms: number }> {
  const body = JSON.stringify({ username, password });
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = http.request(
      { host: '127.0.0.1', port: PORT, method: 'POST', path: '/api/token/', agent, headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - started }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;

function shuffle<T>(xs: T[]): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

async function main() {
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
    SIGNING_KEY: 'login-timing-benchmark-key-Hq3vN8tZ1mWc6RxB0yLs5KfJ',
    HOST: '127.0.0.1',
    PORT: String(PORT),
    LOG_LEVEL: 'warn',
    // Every attempt is a wrong password: the throttle must not answer any of them.
    LOGIN_THROTTLE_FREE_ATTEMPTS: '1000',
    LOGIN_THROTTLE_ACCOUNT_BUDGET: '0',
    ...EXTRA_ENV,
  };
  const server = { stop: async () => {} };
  try {
    await run(['cli', 'migrate'], env);
    await run(['cli', 'createuser', NATIVE.username, '--password-stdin'], env, NATIVE.password);
    const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'login-timing-')), 'users.json');
    writeFileSync(file, JSON.stringify(Object.entries(IMPORTED).map(([kind, password], i) => ({ id: 1000 + i, username: usernameOf(kind), password, is_active: true }))));
    process.stdout.write(await run(['cli', 'importusers', file], env));

    const child = spawn(process.execPath, [path.join(ROOT, 'scripts/run.js'), 'server'], { cwd: ROOT, env, stdio: ['ignore', 'inherit', 'inherit'] });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    server.stop = async () => {
      child.kill('SIGTERM');
      await exited;
    };
    for (let i = 0; ; i++) {
      const up = await login('', '').then(
        (r) => r.status === 400,
        () => false,
      );
      if (up) break;
      if (i > 300) throw new Error('the server did not start');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }

    const times = new Map<string, number[]>(KINDS.map((k) => [k, []]));
    for (const kind of KINDS) await login(usernameOf(kind), 'wrong-password'); // warm-up: threads, dummy hash
    for (let round = 0; round < ROUNDS; round++) {
      for (const kind of shuffle(KINDS)) {
        const r = await login(usernameOf(kind), 'wrong-password');
        if (r.status !== 401) throw new Error(`${kind}: expected 401, got ${r.status}`);
        times.get(kind)!.push(r.ms);
      }
    }

    const rows = KINDS.map((kind) => {
      const sorted = [...times.get(kind)!].sort((a, b) => a - b);
      return { kind, median: quantile(sorted, 0.5), p10: quantile(sorted, 0.1), p90: quantile(sorted, 0.9) };
    });
    const reference = rows[0]!.median;
    const load = os.loadavg().map((l) => l.toFixed(1)).join(' ');
    console.log(`\nfailed logins, ${ROUNDS} rounds, ${ROOT}${Object.keys(EXTRA_ENV).length ? ` (${opts.env!.join(' ')})` : ''}; load average ${load} on ${os.availableParallelism()} CPUs`);
    console.log('kind                  median ms    p10    p90   vs unknown');
    for (const r of rows) {
      const vs = ((r.median / reference - 1) * 100).toFixed(1);
      console.log(`${r.kind.padEnd(20)} ${r.median.toFixed(1).padStart(9)} ${r.p10.toFixed(0).padStart(6)} ${r.p90.toFixed(0).padStart(6)}   ${Number(vs) >= 0 ? '+' : ''}${vs}%`);
    }
    const medians = rows.map((r) => r.median);
    const spread = (Math.max(...medians) / Math.min(...medians) - 1) * 100;
    console.log(`spread of the medians (slowest / fastest): ${spread.toFixed(1)}%`);
    if (opts.json) writeFileSync(opts.json, JSON.stringify({ root: ROOT, rounds: ROUNDS, env: EXTRA_ENV, load: os.loadavg(), rows, spread }, null, 2));
  } finally {
    await server.stop();
    agent.destroy();
    await container?.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
