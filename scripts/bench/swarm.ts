// Capacity per app replica on Docker Swarm: deploy/swarm/stack.yml on three Docker engines on this
// machine (test/support/engines.ts; root), GET /api/me/ with a valid token through node 1's nginx,
// from wrk in a network namespace of its own, with 1, 2, … app replicas.
//
//   npm run bench:swarm [-- --replicas 1,2 --cpus 1 --duration 20 --rounds 3 --connections 32]
//
// Two figures per replica count: requests per second (the median of --rounds wrk runs, after a
// warm-up), and the CPU time the app tasks and node 1's nginx spent per request (from their
// cgroups). All engines, the load generator and this script share the machine's cores, so req/s
// says what this machine does; CPU per request says what a replica costs wherever it runs: one
// replica limited to C CPUs serves about C / (app CPU per request). Nothing is asserted; the
// results go in the README ("Beyond one machine").
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { tlsRequester } from '../../test/support/http';
import { ROOT } from '../../test/support/images';
import { buildSwarmImages, startSwarm, type Swarm, type Task } from '../../test/support/swarm';

const { values: opts } = parseArgs({
  options: {
    replicas: { type: 'string', default: '1,2' },
    duration: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '32' },
    cpus: { type: 'string', default: '1' },
  },
});
const PASSWORD = 'bench-password-1';

interface Result {
  replicas: number;
  nodes: number[];
  rps: number;
  runs: number[];
  p99: string;
  errors: string;
  appCpuUsPerRequest: number;
  nginxCpuUsPerRequest: number;
}

async function measure(swarm: Swarm, replicas: number, wrk: (seconds: number) => Promise<{ rps: number; p99: string; errors: string }>): Promise<Result> {
  const node1 = swarm.engines[0]!;
  await swarm.manager.docker(['service', 'scale', '--detach', `${swarm.stack}_app=${replicas}`]);
  const tasks = await swarm.waitForTasks('app', replicas, 180_000);
  const want = tasks.map((t) => t.address).sort();
  while (JSON.stringify(await swarm.nginxUpstream(node1)) !== JSON.stringify(want)) await sleep(500);
  const nginxId = (await node1.docker(['ps', '-q', '--no-trunc', '--filter', `label=com.docker.swarm.service.name=${swarm.stack}_nginx`])).trim();
  const cpu = (ts: Task[]) => ({
    app: ts.reduce((sum, t) => sum + swarm.cpuSeconds(t.engine, t.containerId!), 0),
    nginx: swarm.cpuSeconds(node1, nginxId),
  });

  await wrk(5); // warm-up: JIT, connection pools
  const before = cpu(tasks);
  const runs = [];
  for (let i = 0; i < Number(opts.rounds); i++) runs.push(await wrk(Number(opts.duration)));
  const after = cpu(tasks);
  const requests = runs.reduce((sum, r) => sum + r.rps * Number(opts.duration), 0);
  const median = [...runs].sort((a, b) => a.rps - b.rps)[Math.floor(runs.length / 2)]!;
  return {
    replicas,
    nodes: tasks.map((t) => t.engine.index),
    rps: Math.round(median.rps),
    runs: runs.map((r) => Math.round(r.rps)),
    p99: median.p99,
    errors: median.errors,
    appCpuUsPerRequest: Math.round(((after.app - before.app) / requests) * 1e6),
    nginxCpuUsPerRequest: Math.round(((after.nginx - before.nginx) / requests) * 1e6),
  };
}

async function main(): Promise<void> {
  try {
    execFileSync('wrk', ['--version'], { stdio: 'ignore' });
  } catch (err) {
    // wrk prints its version and exits 1; only a missing binary is an error.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      console.error('bench:swarm needs wrk (apt-get install wrk)');
      process.exit(1);
    }
  }

  // stack.yml alone (one Postgres): the images it names, and the edge's certificate (wrk does not
  // check it; the login below does).
  const names = (await buildSwarmImages()).filter((i) => !/patroni|etcd|haproxy/.test(i));
  const certDir = mkdtempSync(path.join(tmpdir(), 'bench-tls-'));
  execFileSync('bash', [path.join(ROOT, 'scripts/make-dev-cert.sh'), certDir, 'kas.test'], { stdio: 'ignore' });
  const [cert, key] = ['tls.crt', 'tls.key'].map((f) => readFileSync(path.join(certDir, f), 'utf8')) as [string, string];
  rmSync(certDir, { recursive: true, force: true });
  const tls = tlsRequester({ ca: cert, servername: 'kas.test' });
  const swarm = await startSwarm({
    engines: 3,
    stack: 'kaswbench',
    labels: { 1: { 'kas.db': 'true' } },
    images: names,
    secrets: {
      kas_signing_key: randomBytes(48).toString('base64'),
      kas_postgres_password: randomBytes(24).toString('base64url'),
      kas_tls_crt: cert,
      kas_tls_key: key,
    },
    env: { APP_REPLICAS: '1', APP_CPUS: opts.cpus },
    log: (m) => console.error(`bench:swarm: ${m}`),
  });
  try {
    const [first] = await swarm.waitForTasks('app', 1, 180_000);
    await swarm.exec(first!, ['npm', 'run', '-s', 'cli', '--', 'createuser', 'bench', '--password-stdin'], PASSWORD);
    const target = `https://${swarm.engines[0]!.address}`;
    const pair = await tls.request(target, 'POST', '/api/token/', { json: { username: 'bench', password: PASSWORD } });
    tls.close();
    if (pair.status !== 200) throw new Error(`login: ${pair.status} ${pair.text}`);
    const lg = await swarm.addNamespace('lg', 20);

    const wrk = async (seconds: number) => {
      const r = await swarm.inNamespace(lg.namespace, 'wrk', [
        '-t2',
        `-c${opts.connections}`,
        `-d${seconds}s`,
        '--latency',
        '-H',
        `Authorization: Bearer ${pair.json.access}`,
        `${target}/api/me/`,
      ]);
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(r.stdout)?.[1]);
      if (!Number.isFinite(rps)) throw new Error(`wrk: ${r.stdout}${r.stderr}`);
      return {
        rps,
        p99: /99%\s+(\S+)/.exec(r.stdout)?.[1] ?? '?',
        errors: [/Socket errors:.*/.exec(r.stdout)?.[0], /Non-2xx.*/.exec(r.stdout)?.[0]].filter(Boolean).join('; ') || 'none',
      };
    };

    const results: Result[] = [];
    for (const replicas of opts.replicas.split(',').map(Number)) {
      const r = await measure(swarm, replicas, wrk);
      results.push(r);
      console.error(
        `bench:swarm: ${r.replicas} replica(s) on nodes ${r.nodes.join(',')}: ${r.rps} req/s (runs ${r.runs.join(', ')}), ` +
          `p99 ${r.p99}, errors ${r.errors}; CPU per request: app ${r.appCpuUsPerRequest} µs, node 1's nginx ${r.nginxCpuUsPerRequest} µs`,
      );
    }
    console.log(JSON.stringify({ connections: Number(opts.connections), duration: Number(opts.duration), cpusPerReplica: Number(opts.cpus), results }, null, 2));
  } finally {
    await swarm.destroy();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
