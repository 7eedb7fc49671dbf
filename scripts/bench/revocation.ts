// Revocation propagation: how long from a logout (blacklist) until every worker rejects the session's
// access token. Starts W worker processes (each with its own LISTEN connection, as PM2's workers
// have) on one database, then for each trial: log in, check the token works everywhere, blacklist it
// on worker 0, and poll every worker until it answers 401.
//
//   DATABASE_URL=postgres://…/scratch npm run bench:revocation -- [--workers 4] [--trials 200]
//
// The database is migrated and gets one user; use a scratch database.
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createPasswordHasher } from '../../app/auth/passwords';
import { createUser } from '../../app/auth/users';
import { createDatabase } from '../../app/db/database';
import { createMigrator } from '../../app/db/migrator';

const { values } = parseArgs({ options: { workers: { type: 'string', default: '4' }, trials: { type: 'string', default: '200' }, port: { type: 'string', default: '4100' } } });
const WORKERS = Number(values.workers);
const TRIALS = Number(values.trials);
const BASE_PORT = Number(values.port);
const DATABASE_URL = process.env.DATABASE_URL;
if (!DATABASE_URL) {
  console.error('DATABASE_URL is required (a scratch database)');
  process.exit(2);
}
const ROOT = path.resolve(__dirname, '../..');
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

function call(port: number, method: string, urlPath: string, body?: unknown, token?: string): Promise<{ status: number; json: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any -- reply JSON
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      { host: '127.0.0.1', port, method, path: urlPath, agent, headers: { ...(data ? { 'Content-Type': 'application/json' } : {}), ...(token ? { Authorization: `Bearer ${token}` } : {}) } },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : undefined }));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;

async function main() {
  const db = createDatabase({ url: DATABASE_URL!, poolMax: 2 });
  await createMigrator(db.sequelize, { info: () => {} }).up();
  const username = `bench-${Date.now()}`;
  await createUser(db, createPasswordHasher(), { username, password: 'bench-password-1', isActive: true });
  await db.close();

  const env = { ...process.env, NODE_ENV: 'production', SIGNING_KEY: 'revocation-benchmark-key-' + 'q8Vt1mZx4LwP0sKe7RbN2yHc5JdA9uGf', LOG_LEVEL: 'warn' };
  const children: ChildProcess[] = [];
  const ports = Array.from({ length: WORKERS }, (_, i) => BASE_PORT + i);
  for (const port of ports) {
    children.push(spawn(process.execPath, [path.join(ROOT, 'scripts/run.js'), 'server'], { env: { ...env, PORT: String(port) }, stdio: 'inherit' }));
  }
  try {
    for (const port of ports) {
      for (let i = 0; ; i++) {
        if ((await call(port, 'GET', '/healthz').catch(() => ({ status: 0 }))).status === 200) break;
        if (i > 300) throw new Error(`worker on ${port} did not start`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const afterResponse: number[] = [];
    const afterRequest: number[] = [];
    for (let trial = 0; trial < TRIALS; trial++) {
      const pair = (await call(ports[0]!, 'POST', '/api/token/', { username, password: 'bench-password-1' })).json;
      for (const port of ports) if ((await call(port, 'GET', '/api/me/', undefined, pair.access)).status !== 200) throw new Error('token not accepted');
      const t0 = performance.now();
      const out = await call(ports[0]!, 'POST', '/api/token/blacklist/', { refresh: pair.refresh });
      const t1 = performance.now();
      if (out.status !== 200) throw new Error(`blacklist: ${out.status}`);
      const rejectedAt = await Promise.all(
        ports.map(async (port) => {
          for (;;) {
            const r = await call(port, 'GET', '/api/me/', undefined, pair.access);
            if (r.status === 401) return performance.now();
          }
        }),
      );
      const last = Math.max(...rejectedAt);
      afterResponse.push(last - t1);
      afterRequest.push(last - t0);
    }
    for (const [name, samples] of [['from the logout response', afterResponse], ['from the logout request', afterRequest]] as const) {
      const s = [...samples].sort((a, b) => a - b);
      console.log(
        `${name}: p50 ${percentile(s, 50).toFixed(2)} ms, p95 ${percentile(s, 95).toFixed(2)} ms, p99 ${percentile(s, 99).toFixed(2)} ms, max ${s.at(-1)!.toFixed(2)} ms`,
      );
    }
    console.log(`(${TRIALS} trials, ${WORKERS} workers, every worker polled until it answered 401)`);
  } finally {
    for (const child of children) child.kill('SIGTERM');
    agent.destroy();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
