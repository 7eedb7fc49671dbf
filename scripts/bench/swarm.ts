// Capacity per app replica on Docker Swarm: deploy/swarm/stack.yml on three Docker engines on this
// machine (test/support/engines.ts; root), GET /api/me/ with a valid token through node 1's nginx,
// from wrk in a network namespace of its own, with 1, 2, … app replicas.
//
//   npm run bench:swarm [-- --replicas 1,2 --duration 20 --rounds 3 --connections 32]
//
// Every figure is the median of --rounds wrk runs (after a warm-up). All engines, the load generator
// and this script share the machine's cores: the numbers say what one replica adds here, not what a
// dedicated host would do. Nothing is asserted; the results go in the README ("Beyond one machine").
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { request } from '../../test/support/http';
import { startSwarm } from '../../test/support/swarm';

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

  const swarm = await startSwarm({
    engines: 3,
    stack: 'kaswbench',
    secrets: { kas_signing_key: randomBytes(48).toString('base64'), kas_postgres_password: randomBytes(24).toString('base64url') },
    env: { APP_REPLICAS: '1', APP_CPUS: opts.cpus, LOG_LEVEL: 'info' },
    log: (m) => console.error(`bench:swarm: ${m}`),
  });
  try {
    const [first] = await swarm.waitForTasks('app', 1, 180_000);
    await swarm.exec(first!, ['npm', 'run', '-s', 'cli', '--', 'createuser', 'bench', '--password-stdin'], PASSWORD);
    const node1 = swarm.engines[0]!;
    const target = `http://${node1.address}`;
    const pair = await request(target, 'POST', '/api/token/', { json: { username: 'bench', password: PASSWORD } });
    if (pair.status !== 200) throw new Error(`login: ${pair.status} ${pair.text}`);
    const lg = await swarm.addNamespace('lg', 20);

    const wrk = async (seconds: number): Promise<{ rps: number; p99: string; errors: string }> => {
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

    const results: { replicas: number; rps: number; runs: number[]; p99: string; errors: string }[] = [];
    for (const replicas of opts.replicas.split(',').map(Number)) {
      await swarm.manager.docker(['service', 'scale', '--detach', `${swarm.stack}_app=${replicas}`]);
      const tasks = await swarm.waitForTasks('app', replicas, 180_000);
      const want = tasks.map((t) => t.address).sort();
      while (JSON.stringify(await swarm.nginxUpstream(node1)) !== JSON.stringify(want)) await sleep(500);
      await wrk(5); // warm-up: JIT, connection pools
      const runs = [];
      for (let i = 0; i < Number(opts.rounds); i++) runs.push(await wrk(Number(opts.duration)));
      const sorted = [...runs].sort((a, b) => a.rps - b.rps);
      const median = sorted[Math.floor(sorted.length / 2)]!;
      results.push({ replicas, rps: Math.round(median.rps), runs: runs.map((r) => Math.round(r.rps)), p99: median.p99, errors: median.errors });
      console.error(`bench:swarm: ${replicas} replica(s) on nodes ${tasks.map((t) => t.engine.index).join(',')}: ${Math.round(median.rps)} req/s (runs ${runs.map((r) => Math.round(r.rps)).join(', ')}), p99 ${median.p99}, errors ${median.errors}`);
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
