// Where a scenario's CPU went, on the whole machine: every thread's CPU time (utime + stime,
// /proc/PID/task/TID/stat) before and after the load, grouped by what the thread is (the app's
// hashing threads, its main threads, V8's helpers, PM2, Postgres, nginx, the load generator,
// Docker, …), and the machine's busy time (/proc/stat), of which what no live thread accounts for
// (processes that ended during the run, interrupts) is a part of its own. The load generator, the
// bench's child, is counted when it has ended (its parent's children's times). Read from the host,
// so container processes count too; processes are told apart by what they run, not by container,
// so run the bench with no other stack busy. It answers "where does the rest go" for a login (issue
// 19): the cores are shared by the hashes and by everything a login needs around them.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

function ticksPerSecond(): number {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100; // Linux's USER_HZ nearly everywhere
  }
}
const TICKS_PER_SECOND = ticksPerSecond();

/** The parts, in the order a report lists them. */
export const PARTS = [
  'app: password hashing (libuv pool)',
  'app: main threads',
  'app: V8 helper threads (GC, compiler)',
  'bare node:http (the ceilings)',
  'PM2 daemon',
  'metrics collector, webhook sender',
  'Postgres',
  'nginx',
  'load generator (wrk)',
  'Docker (dockerd, containerd, shims, proxies)',
  'kernel threads',
  'other (the bench itself, the rest)',
  'not in a live thread (ended processes, interrupts)',
] as const;
export type Part = (typeof PARTS)[number];

export interface CpuSnapshot {
  /** CPU ticks per thread, keyed by "pid/tid@starttime" ("children": the bench's ended children), with its part. */
  threads: Map<string, { part: Part; ticks: number }>;
  /** The machine's busy, idle and stolen ticks (all CPUs). */
  busy: number;
  idle: number;
  steal: number;
}

function read(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined; // the thread or process ended while we looked
  }
}

/**
 * The part a thread's CPU goes to. `program` is what the process runs: PM2's `pm_exec_path` for its
 * apps (PM2 retitles them, and a title longer than the original arguments is cut short), else the
 * command line.
 */
export function partOf(program: string, comm: string, threadComm: string, isMain: boolean, kernel = false): Part {
  if (kernel) return 'kernel threads';
  if (/dist\/server\.js\b/.test(program)) {
    if (threadComm === 'libuv-worker') return 'app: password hashing (libuv pool)';
    return isMain ? 'app: main threads' : 'app: V8 helper threads (GC, compiler)';
  }
  if (/dist\/(metrics|events)\//.test(program)) return 'metrics collector, webhook sender';
  if (program.includes('ceiling.js')) return 'bare node:http (the ceilings)';
  if (/pm2-runtime|God Daemon/.test(program)) return 'PM2 daemon';
  if (comm === 'postgres' || comm === 'pgbench') return 'Postgres';
  if (comm === 'nginx') return 'nginx';
  if (comm === 'wrk') return 'load generator (wrk)';
  if (/^(dockerd|containerd|containerd-shim.*|docker-proxy|runc)$/.test(comm)) return 'Docker (dockerd, containerd, shims, proxies)';
  return 'other (the bench itself, the rest)';
}

const PF_KTHREAD = 0x200000;

/** From a stat line (the comm field may hold spaces and parentheses): comm, flags, CPU ticks, start. */
function parseStat(stat: string) {
  const close = stat.lastIndexOf(')');
  const f = stat.slice(close + 2).split(' '); // f[0] is field 3 (state)
  return {
    comm: stat.slice(stat.indexOf('(') + 1, close),
    flags: Number(f[6]),
    ticks: Number(f[11]) + Number(f[12]), // utime + stime
    childTicks: Number(f[13]) + Number(f[14]), // cutime + cstime: children that ended and were waited for
    start: f[19]!, // starttime: a reused id is another thread
  };
}

/** PM2's record of what it runs, from the process's environment; undefined for others. */
function pm2ExecPath(pid: string): string | undefined {
  const env = read(`/proc/${pid}/environ`);
  return env?.split('\0').find((e) => e.startsWith('pm_exec_path='))?.slice('pm_exec_path='.length);
}

export function cpuSnapshot(): CpuSnapshot {
  const threads = new Map<string, { part: Part; ticks: number }>();
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    const cmdline = read(`/proc/${pid}/cmdline`)?.replaceAll('\0', ' ').trim();
    const stat = read(`/proc/${pid}/stat`);
    if (cmdline === undefined || stat === undefined) continue;
    const proc = parseStat(stat);
    const program = pm2ExecPath(pid) ?? cmdline;
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      const t = read(`/proc/${pid}/task/${tid}/stat`);
      if (t === undefined) continue;
      const thread = parseStat(t);
      const part = partOf(program, proc.comm, thread.comm, pid === tid, (proc.flags & PF_KTHREAD) !== 0);
      threads.set(`${pid}/${tid}@${thread.start}`, { part, ticks: thread.ticks });
    }
  }
  // The load generator has ended when the run's numbers are read: its CPU is in this process's
  // children's times (nothing else of the bench's ends during a timed run).
  threads.set('children', { part: 'load generator (wrk)', ticks: parseStat(readFileSync('/proc/self/stat', 'utf8')).childTicks });
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const [user, nice, system, idle, iowait, irq, softirq, steal] = cpu as [number, number, number, number, number, number, number, number];
  return { threads, busy: user + nice + system + irq + softirq, idle: idle + iowait, steal };
}

export interface CpuBudget {
  /**
   * CPU milliseconds per request, by part (a thread that started during the run counts from zero).
   * "not in a live thread" is the machine's busy time that no thread seen at the end accounts for:
   * processes that ended during the run (health checks, `docker exec`s), and interrupt time.
   */
  msPerRequest: Record<Part, number>;
  /** All parts together, per request: the machine's busy time over the run, per request. */
  totalMs: number;
  /** The parts that serve the requests (all but the load generator, the ceilings and "other"). */
  serverMs: number;
  /** Share of the machine's CPU time that was busy over the run (from /proc/stat; steal not counted). */
  machineBusy: number;
  /** Share stolen by the hypervisor (0 where it is not reported). */
  machineSteal: number;
  /**
   * Share of all the CPUs' time that went to hashing passwords: logins/s × a hash's CPU as the run
   * measured it ÷ cores, the login target's "cores ÷ one hash" read from inside the run.
   */
  hashingShare: number;
}

const NOT_SERVING: readonly Part[] = ['load generator (wrk)', 'bare node:http (the ceilings)', 'other (the bench itself, the rest)'];

export function cpuBudget(before: CpuSnapshot, after: CpuSnapshot, requests: number): CpuBudget {
  if (!(requests > 0)) throw new Error(`a CPU budget needs requests (got ${requests})`);
  const ticks = Object.fromEntries(PARTS.map((p) => [p, 0])) as Record<Part, number>;
  for (const [key, t] of after.threads) {
    const delta = t.ticks - (before.threads.get(key)?.ticks ?? 0);
    if (delta > 0) ticks[t.part] += delta;
  }
  const busy = after.busy - before.busy;
  const seen = PARTS.reduce((sum, p) => sum + ticks[p], 0);
  ticks['not in a live thread (ended processes, interrupts)'] = Math.max(0, busy - seen);
  const perRequest = Object.fromEntries(PARTS.map((p) => [p, (ticks[p] * 1000) / TICKS_PER_SECOND / requests])) as Record<Part, number>;
  const all = busy + (after.idle - before.idle) + (after.steal - before.steal);
  return {
    msPerRequest: perRequest,
    totalMs: PARTS.reduce((sum, p) => sum + perRequest[p], 0),
    serverMs: PARTS.filter((p) => !NOT_SERVING.includes(p)).reduce((sum, p) => sum + perRequest[p], 0),
    machineBusy: all > 0 ? busy / all : 0,
    machineSteal: all > 0 ? (after.steal - before.steal) / all : 0,
    hashingShare: all > 0 ? ticks['app: password hashing (libuv pool)'] / all : 0,
  };
}
