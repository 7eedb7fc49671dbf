// The bench's CPU budget (scripts/bench/cpu-budget.ts): which part a thread's CPU goes to, that a
// snapshot finds a live thread's CPU and a waited-for child's, and how a budget adds them up. The
// children burn a set amount of CPU time (their own process.cpuUsage()) after the first snapshot,
// not of wall time, so the amounts do not depend on this machine's load. Linux only (/proc).
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it, onTestFinished } from 'vitest';
import { cpuBudget, cpuSnapshot, partOf, PARTS, type CpuSnapshot, type Part } from '../../scripts/bench/cpu-budget';

// Burns `ms` more of this process's CPU, on its main thread.
const burn = (ms: number) => `{ const u = () => { const c = process.cpuUsage(); return (c.user + c.system) / 1000; }; const end = u() + ${ms}; while (u() < end); }`;

describe.skipIf(process.platform !== 'linux')('the bench\'s CPU budget', () => {
  describe('which part a thread belongs to', () => {
    const worker = '/srv/koa-auth-stack/current/dist/server.js';
    it.each([
      [worker, 'node', 'libuv-worker', false, 'app: password hashing (libuv pool)'],
      [worker, 'node', 'node', true, 'app: main threads'],
      [worker, 'node', 'V8Worker', false, 'app: V8 helper threads (GC, compiler)'],
      ['node /app/node_modules/.bin/pm2-runtime start ecosystem.config.js', 'MainThread', 'MainThread', true, 'PM2 daemon'],
      // PM2 retitles its apps; a title longer than the original arguments is cut short.
      ['node /srv/koa-auth-stack/current/dist/metrics/server.j', 'node /srv/koa-a', 'node /srv/koa-a', true, 'metrics collector, webhook sender'],
      ['/srv/koa-auth-stack/current/dist/events/server.js', 'node', 'node', true, 'metrics collector, webhook sender'],
      ['/usr/local/bin/node /bench/ceiling.js', 'MainThread', 'MainThread', true, 'bare node:http (the ceilings)'],
      ['postgres: app app 172.19.0.5(42498) idle', 'postgres', 'postgres', true, 'Postgres'],
      ['nginx: worker process', 'nginx', 'nginx', true, 'nginx'],
      ['wrk -t1 -c8 http://10.199.77.1:42397/api/token/', 'wrk', 'wrk', true, 'load generator (wrk)'],
      ['/usr/bin/containerd-shim-runc-v2 -namespace moby -id 3f', 'containerd-shim', 'containerd-shim', true, 'Docker (dockerd, containerd, shims, proxies)'],
      ['/usr/bin/dockerd -H unix:///var/run/docker.sock', 'dockerd', 'dockerd', true, 'Docker (dockerd, containerd, shims, proxies)'],
      ['/usr/bin/python3 /usr/bin/docker-compose up -d', 'docker-compose', 'docker-compose', true, 'other (the bench itself, the rest)'],
    ] as const)('%s (%s, thread %s) → %s', (program, comm, threadComm, isMain, part) => {
      expect(partOf(program, comm, threadComm, isMain)).toBe(part);
    });

    it('a kernel thread by its flag, whatever its name', () => {
      expect(partOf('', 'ksoftirqd/0', 'ksoftirqd/0', true, true)).toBe('kernel threads');
      expect(partOf('', 'zombie', 'zombie', true, false)).toBe('other (the bench itself, the rest)');
    });
  });

  describe('a snapshot', () => {
    /** CPU milliseconds per part between two snapshots, of one process's threads only. */
    const ofProcess = (before: CpuSnapshot, after: CpuSnapshot, pid: number) => {
      const ms = new Map<Part, number>();
      for (const [key, t] of after.threads) {
        if (!key.startsWith(`${pid}/`)) continue;
        ms.set(t.part, (ms.get(t.part) ?? 0) + (t.ticks - (before.threads.get(key)?.ticks ?? 0)) * 10);
      }
      return ms;
    };

    it('finds a live process\'s CPU under its part', async () => {
      // "dist/server.js" in its arguments makes it an app worker. It says when it is up, burns 400 ms
      // when told, then waits.
      const child = spawn(process.execPath, ['-e', `process.stdout.write('up'); process.stdin.once('data', () => { ${burn(400)} process.stdout.write('burnt'); });`, 'dist/server.js'], {
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      onTestFinished(async () => {
        if (child.exitCode === null && child.signalCode === null) {
          const exited = once(child, 'exit');
          child.kill();
          await exited;
        }
      });
      const said = async (word: string) => {
        const [chunk] = (await Promise.race([once(child.stdout, 'data'), once(child, 'exit').then(() => [`exited before "${word}"`])])) as [Buffer | string];
        expect(String(chunk)).toBe(word);
      };
      await said('up');
      const before = cpuSnapshot();
      child.stdin.write('go');
      await said('burnt');
      const ms = ofProcess(before, cpuSnapshot(), child.pid!);
      // Ticks are 10 ms; reading two fields floors twice.
      expect(ms.get('app: main threads')).toBeGreaterThanOrEqual(380);
      expect(ms.get('app: main threads')).toBeLessThan(600);
      expect(ms.get('app: password hashing (libuv pool)') ?? 0).toBe(0);
    });

    it('counts a child that ended and was waited for under the load generator', () => {
      const before = cpuSnapshot();
      const done = spawnSync(process.execPath, ['-e', burn(300)]);
      expect(done.status).toBe(0);
      const ms = (after: CpuSnapshot) => ((after.threads.get('children')?.ticks ?? NaN) - before.threads.get('children')!.ticks) * 10;
      // The child's start-up comes on top of the 300 ms.
      expect(ms(cpuSnapshot())).toBeGreaterThanOrEqual(290);
      expect(ms(cpuSnapshot())).toBeLessThan(600);
    });
  });

  describe('a budget', () => {
    const snapshot = (threads: [string, Part, number][], busy: number, idle: number, steal = 0): CpuSnapshot => ({
      threads: new Map(threads.map(([key, part, ticks]) => [key, { part, ticks }])),
      busy,
      idle,
      steal,
    });

    it('per request, by part, with what no live thread accounts for as a part of its own', () => {
      const before = snapshot(
        [
          ['10/10@5', 'app: main threads', 100],
          ['10/11@5', 'app: password hashing (libuv pool)', 50],
          ['20/20@7', 'Postgres', 10],
          ['children', 'load generator (wrk)', 3],
        ],
        1_000,
        500,
      );
      const after = snapshot(
        [
          ['10/10@5', 'app: main threads', 140], // +40 ticks
          ['10/11@5', 'app: password hashing (libuv pool)', 250], // +200
          ['20/20@7', 'Postgres', 30], // +20
          ['20/20@9', 'Postgres', 6], // the same id again, another process: from zero, +6
          ['30/30@1', 'nginx', 4], // started during the run: +4
          ['children', 'load generator (wrk)', 13], // +10
        ],
        1_300, // +300 busy: 280 in the threads seen, 20 in none
        600, // +100 idle
        10, // +10 stolen
      );
      const b = cpuBudget(before, after, 20);
      // 10 ms a tick, over 20 requests: half a millisecond a tick.
      expect(b.msPerRequest['app: main threads']).toBe(20);
      expect(b.msPerRequest['app: password hashing (libuv pool)']).toBe(100);
      expect(b.msPerRequest.Postgres).toBe(13);
      expect(b.msPerRequest.nginx).toBe(2);
      expect(b.msPerRequest['load generator (wrk)']).toBe(5);
      expect(b.msPerRequest['not in a live thread (ended processes, interrupts)']).toBe(10);
      expect(b.totalMs).toBe(150); // the machine's 300 busy ticks
      expect(b.serverMs).toBe(145); // all but the load generator
      expect(b.machineBusy).toBeCloseTo(300 / 410);
      expect(b.machineSteal).toBeCloseTo(10 / 410);
      expect(b.hashingShare).toBeCloseTo(200 / 410); // of all the CPUs' time, stolen included
      expect(Object.keys(b.msPerRequest)).toEqual([...PARTS]);
    });

    it('refuses a run without requests', () => {
      const s = snapshot([], 0, 0);
      expect(() => cpuBudget(s, s, 0)).toThrow(/needs requests/);
    });
  });
});
