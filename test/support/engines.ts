// Docker engines on this machine as the hosts of a multi-host test: each dockerd in a network
// namespace of its own, the namespaces joined by veths on one bridge, the test itself on the
// bridge's address. Needs root, iproute2, iptables and nsenter (scripts/ci/docker.sh installs them).
//
// Everything is named after a slot number S: namespaces kaswS-n1…, bridge kaswS-br, veths kaswS-h1…
// (host side) and kaswS-e1… (inside), the subnet 10.213.S.0/24, an iptables rule commented kaswS,
// cgroups /kaswS-n1…, state in /run/kasw/S, data in a tmpfs at /var/lib/kasw/S. destroy() removes all of
// it; a run killed before it could clean up leaves its slot behind, and the next start removes every
// slot whose owner process is gone. Traffic goes only to these namespaces' addresses.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { run, type Run } from './stack';

const PREFIX = 'kasw';
const STATE_ROOT = `/run/${PREFIX}`; // per slot: owner, sockets, the engines' exec roots and logs
const DATA_ROOT = `/var/lib/${PREFIX}`; // the engines' data roots, a tmpfs per slot
const DATA_SIZE = '8g';
const CGROUP_ROOT = '/sys/fs/cgroup';

export interface Engine {
  /** 1, 2, 3, … */
  index: number;
  namespace: string;
  /** The engine's address on the bridge; published ports are reached here. */
  address: string;
  /** The engine's API, for `docker -H`. */
  host: string;
  /** Runs the docker CLI against this engine; throws with its output when it fails. */
  docker(args: string[], stdin?: string): Promise<string>;
  /** The same, returning the exit code and output instead of throwing. */
  tryDocker(args: string[], stdin?: string): Promise<Run>;
}

export interface Machines {
  slot: number;
  engines: Engine[];
  /** This process's address on the bridge: where the test's own requests come from. */
  hostAddress: string;
  /** Takes an engine off the network (its veth down), as a pulled cable or a dead switch port would. */
  cut(engine: Engine): Promise<void>;
  /** Puts a cut engine back on the network. */
  restore(engine: Engine): Promise<void>;
  /** A namespace of its own on the bridge (a load generator, say), at the given host number. */
  addNamespace(name: string, hostNumber: number): Promise<{ namespace: string; address: string }>;
  /** Runs a program inside one of this slot's namespaces. */
  inNamespace(namespace: string, command: string, args: string[]): Promise<Run>;
  /** CPU time a container of an engine has used so far, in seconds (from its cgroup). */
  cpuSeconds(engine: Engine, containerId: string): number;
  /** The last lines of each engine's dockerd log, for a failure message. */
  logs(lines?: number): string;
  destroy(): Promise<void>;
}

const names = (slot: number) => ({
  bridge: `${PREFIX}${slot}-br`,
  hostVeth: (i: number) => `${PREFIX}${slot}-h${i}`,
  innerVeth: (i: number) => `${PREFIX}${slot}-e${i}`,
  namespace: (i: number | string) => `${PREFIX}${slot}-${typeof i === 'number' ? `n${i}` : i}`,
  cgroup: (i: number) => `${PREFIX}${slot}-n${i}`,
  comment: `${PREFIX}${slot}`,
  subnet: `10.213.${slot}`,
  state: path.join(STATE_ROOT, String(slot)),
  data: path.join(DATA_ROOT, String(slot)),
});

async function must(cmd: string, args: string[], stdin?: string): Promise<string> {
  const r = await run(cmd, args, { stdin });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

// --- ownership: a slot belongs to a live process, or to nobody ------------------------------------

function processStart(pid: number): string | undefined {
  try {
    // Field 22 (start time); the command name in field 2 may hold spaces, so count after its ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function ownerAlive(slot: number): boolean {
  try {
    const owner = JSON.parse(readFileSync(path.join(names(slot).state, 'owner'), 'utf8')) as { pid: number; start: string };
    return processStart(owner.pid) === owner.start;
  } catch {
    return false;
  }
}

/** Every slot that has something left on this machine: state, data, namespaces, links, rules, cgroups. */
async function slotsInUse(): Promise<Set<number>> {
  const slots = new Set<number>();
  const pattern = new RegExp(`^${PREFIX}(\\d+)(-|$)`);
  const add = (name: string) => {
    const m = pattern.exec(name);
    if (m) slots.add(Number(m[1]));
  };
  for (const dir of [STATE_ROOT, DATA_ROOT]) {
    if (existsSync(dir)) for (const name of readdirSync(dir)) if (/^\d+$/.test(name)) slots.add(Number(name));
  }
  (await run('ip', ['netns', 'list'])).stdout.split('\n').forEach((l) => add(l.split(' ')[0] ?? ''));
  (await run('ip', ['-o', 'link', 'show'])).stdout.split('\n').forEach((l) => add((l.split(': ')[1] ?? '').split('@')[0] ?? ''));
  for (const chain of ['DOCKER-USER', 'FORWARD']) {
    for (const m of (await run('iptables', ['-S', chain])).stdout.matchAll(new RegExp(`--comment "?${PREFIX}(\\d+)`, 'g'))) slots.add(Number(m[1]));
  }
  for (const dir of cgroupDirs()) if (existsSync(dir)) readdirSync(dir).forEach(add);
  return slots;
}

// --- removal ---------------------------------------------------------------------------------------

// The hierarchies a container's cgroups live in: cgroup v2's one, or v1's one per controller.
function cgroupDirs(): string[] {
  if (existsSync(path.join(CGROUP_ROOT, 'cgroup.controllers'))) return [CGROUP_ROOT];
  try {
    return readdirSync(CGROUP_ROOT)
      .map((d) => path.join(CGROUP_ROOT, d))
      .filter((d) => existsSync(path.join(d, 'cgroup.procs')));
  } catch {
    return [];
  }
}

/** The processes in a cgroup and below it. */
function cgroupProcs(dir: string): number[] {
  const pids: number[] = [];
  try {
    pids.push(...readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number));
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) pids.push(...cgroupProcs(path.join(dir, e.name)));
  } catch {
    // gone
  }
  return pids;
}

function removeCgroupTree(dir: string): void {
  try {
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeCgroupTree(path.join(dir, e.name));
    rmdirSync(dir);
  } catch {
    // gone, or still busy (tried again by the next run)
  }
}

function isDockerd(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'dockerd';
  } catch {
    return false;
  }
}

function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return true; // gone
  }
}

/** SIGKILLs the processes that are still running; returns how many it signalled. */
function kill(pids: number[]): number {
  let killed = 0;
  for (const pid of new Set(pids)) {
    if (isZombie(pid)) continue; // exited; its parent has yet to reap it
    try {
      process.kill(pid, 'SIGKILL');
      killed++;
    } catch {
      // already gone
    }
  }
  return killed;
}

async function removeSlot(slot: number): Promise<void> {
  const n = names(slot);
  const namespaces = (await run('ip', ['netns', 'list'])).stdout
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((name) => name.startsWith(`${PREFIX}${slot}-`));
  const cgroups = cgroupDirs().flatMap((dir) =>
    existsSync(dir)
      ? readdirSync(dir)
          .filter((name) => name.startsWith(`${PREFIX}${slot}-`))
          .map((name) => path.join(dir, name))
      : [],
  );
  // Everything goes, so nothing needs a graceful stop: SIGKILL the engines (dockerd from its pid
  // file), what runs in their namespaces (containerd, shims) and in their cgroups (the containers),
  // until nothing is left. A dockerd that stops its containers one grace period at a time, with a
  // swarm that lost a node, takes a minute and more.
  for (let round = 0; round < 50; round++) {
    const pids: number[] = [];
    if (existsSync(n.state)) {
      for (const node of readdirSync(n.state)) {
        try {
          const pid = Number(readFileSync(path.join(n.state, node, 'docker.pid'), 'utf8'));
          if (isDockerd(pid)) pids.push(pid);
        } catch {
          // this engine never started
        }
      }
    }
    for (const ns of namespaces) pids.push(...(await run('ip', ['netns', 'pids', ns])).stdout.split('\n').filter(Boolean).map(Number));
    for (const dir of cgroups) pids.push(...cgroupProcs(dir));
    if (kill(pids) === 0) break;
    await sleep(100);
  }
  // Mounts dockerd left (overlay layers, secrets, network namespace files), deepest first.
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => [n.state, n.data].some((dir) => m === dir || m.startsWith(`${dir}/`)))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await run('umount', ['-l', m]);
  for (const ns of namespaces) await run('ip', ['netns', 'delete', ns]);
  for (const line of (await run('ip', ['-o', 'link', 'show'])).stdout.split('\n')) {
    const link = (line.split(': ')[1] ?? '').split('@')[0] ?? '';
    if (link.startsWith(`${PREFIX}${slot}-`)) await run('ip', ['link', 'delete', link]);
  }
  for (const chain of ['DOCKER-USER', 'FORWARD']) {
    for (const rule of (await run('iptables', ['-S', chain])).stdout.split('\n')) {
      if (!new RegExp(`--comment "?${n.comment}"?( |$)`).test(rule)) continue;
      await run('iptables', ['-D', ...rule.replace(/^-A /, '').replace(/"/g, '').split(' ')]);
    }
  }
  cgroups.forEach(removeCgroupTree);
  for (const dir of [n.data, n.state]) rmSync(dir, { recursive: true, force: true });
  for (const dir of [DATA_ROOT, STATE_ROOT]) {
    try {
      rmdirSync(dir); // the last slot gone: nothing of ours is left
    } catch {
      // another slot is still there
    }
  }
}

/** Removes what earlier runs left behind (slots whose owner is gone). */
async function removeLeftovers(): Promise<void> {
  for (const slot of await slotsInUse()) if (!ownerAlive(slot)) await removeSlot(slot);
}

// --- creation --------------------------------------------------------------------------------------

async function claimSlot(): Promise<number> {
  const taken = await slotsInUse();
  const routes = (await run('ip', ['-4', 'route', 'show'])).stdout;
  mkdirSync(STATE_ROOT, { recursive: true });
  for (let slot = 1; slot < 250; slot++) {
    if (taken.has(slot) || routes.includes(`10.213.${slot}.`)) continue;
    try {
      mkdirSync(names(slot).state); // atomic: of two runs picking the same slot, one gets it
    } catch {
      continue;
    }
    writeFileSync(path.join(names(slot).state, 'owner'), JSON.stringify({ pid: process.pid, start: processStart(process.pid) }));
    return slot;
  }
  throw new Error('no free kasw slot');
}

async function forwardChain(): Promise<string> {
  return (await run('iptables', ['-S', 'DOCKER-USER'])).code === 0 ? 'DOCKER-USER' : 'FORWARD';
}

function engineHandle(index: number, namespace: string, address: string, socket: string): Engine {
  const host = `unix://${socket}`;
  const tryDocker = (args: string[], stdin?: string) => run('docker', ['-H', host, ...args], { stdin });
  return {
    index,
    namespace,
    address,
    host,
    tryDocker,
    async docker(args, stdin) {
      const r = await tryDocker(args, stdin);
      if (r.code !== 0) throw new Error(`docker (engine ${index}) ${args.join(' ')} failed (${r.code}): ${(r.stderr || r.stdout).trim()}`);
      return r.stdout;
    },
  };
}

async function startEngine(slot: number, index: number): Promise<Engine> {
  const n = names(slot);
  const state = path.join(n.state, `n${index}`);
  const data = path.join(n.data, `n${index}`);
  mkdirSync(state, { recursive: true });
  mkdirSync(data, { recursive: true });
  writeFileSync(path.join(state, 'daemon.json'), '{}'); // not the host's /etc/docker/daemon.json
  const log = openSync(path.join(state, 'dockerd.log'), 'a');
  // nsenter, not `ip netns exec`: the latter remounts /sys, and dockerd then finds no cgroups.
  const child = spawn(
    'nsenter',
    [
      `--net=/run/netns/${n.namespace(index)}`,
      '--',
      'dockerd',
      `--config-file=${path.join(state, 'daemon.json')}`,
      `--data-root=${data}`,
      `--exec-root=${state}`,
      `--pidfile=${path.join(state, 'docker.pid')}`,
      `--host=unix://${path.join(state, 'docker.sock')}`,
      '--exec-opt=native.cgroupdriver=cgroupfs',
      `--cgroup-parent=/${n.cgroup(index)}`,
      '--log-level=warn',
    ],
    { detached: true, stdio: ['ignore', log, log] },
  );
  child.unref();
  closeSync(log);
  const engine = engineHandle(index, n.namespace(index), `${n.subnet}.${10 + index}`, path.join(state, 'docker.sock'));
  for (let waited = 0; ; waited += 250) {
    if ((await engine.tryDocker(['version', '--format', '{{.Server.Version}}'])).code === 0) return engine;
    if (waited > 60_000 || child.exitCode !== null) {
      throw new Error(`engine ${index} did not start:\n${tail(path.join(state, 'dockerd.log'), 20)}`);
    }
    await sleep(250);
  }
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/**
 * Starts `count` engines, each in its own namespace on a fresh bridge, with `images` from this
 * machine's engine in each. The images go into the first engine with docker save | docker load; the
 * others start with a copy of its image store: the same result in seconds, where docker load takes
 * tens of seconds per engine here (it hashes and unpacks every layer again).
 */
export async function startEngines(count: number, images: string[] = []): Promise<Machines> {
  await removeLeftovers();
  const slot = await claimSlot();
  const n = names(slot);
  const hostAddress = `${n.subnet}.1`;
  const chain = await forwardChain();
  let engines: Engine[] = [];

  const addNamespace = async (name: string | number, hostNumber: number) => {
    const i = typeof name === 'number' ? name : hostNumber;
    const ns = n.namespace(name);
    const address = `${n.subnet}.${hostNumber}`;
    await must('ip', ['netns', 'add', ns]);
    await must('ip', ['link', 'add', n.hostVeth(i), 'type', 'veth', 'peer', 'name', n.innerVeth(i), 'netns', ns]);
    await must('ip', ['link', 'set', n.hostVeth(i), 'master', n.bridge, 'up']);
    await must('ip', ['-n', ns, 'addr', 'add', `${address}/24`, 'dev', n.innerVeth(i)]);
    await must('ip', ['-n', ns, 'link', 'set', n.innerVeth(i), 'up']);
    await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    return { namespace: ns, address, veth: n.hostVeth(i) };
  };

  const machines: Machines = {
    slot,
    hostAddress,
    get engines() {
      return engines;
    },
    async cut(engine) {
      await must('ip', ['link', 'set', n.hostVeth(engine.index), 'down']);
    },
    async restore(engine) {
      await must('ip', ['link', 'set', n.hostVeth(engine.index), 'up']);
    },
    addNamespace: (name, hostNumber) => addNamespace(name, hostNumber),
    inNamespace: (namespace, command, args) => run('nsenter', [`--net=/run/netns/${namespace}`, '--', command, ...args]),
    cpuSeconds(engine, containerId) {
      const v2 = path.join(CGROUP_ROOT, n.cgroup(engine.index), containerId, 'cpu.stat');
      if (existsSync(v2)) return Number(/usage_usec (\d+)/.exec(readFileSync(v2, 'utf8'))![1]) / 1e6;
      return Number(readFileSync(path.join(CGROUP_ROOT, 'cpuacct', n.cgroup(engine.index), containerId, 'cpuacct.usage'), 'utf8')) / 1e9;
    },
    logs: (lines = 15) =>
      engines.map((e) => `--- dockerd ${e.index} ---\n${tail(path.join(n.state, `n${e.index}`, 'dockerd.log'), lines)}`).join('\n'),
    destroy: () => removeSlot(slot),
  };

  try {
    // The engines' data (images, containers, volumes) in memory: loading images is quicker, and
    // removing gigabytes of image layers is one unmount.
    mkdirSync(n.data, { recursive: true });
    await must('mount', ['-t', 'tmpfs', '-o', `size=${DATA_SIZE},mode=0700`, n.comment, n.data]);
    await must('ip', ['link', 'add', n.bridge, 'type', 'bridge']);
    await must('ip', ['addr', 'add', `${hostAddress}/24`, 'dev', n.bridge]);
    await must('ip', ['link', 'set', n.bridge, 'up']);
    // Docker's FORWARD policy is DROP; bridged traffic between our veths passes through it.
    await must('iptables', ['-I', chain, '-i', n.bridge, '-o', n.bridge, '-m', 'comment', '--comment', n.comment, '-j', 'ACCEPT']);
    for (let i = 1; i <= count; i++) await addNamespace(i, 10 + i);
    const first = await startEngine(slot, 1);
    if (images.length > 0) {
      const file = path.join(n.data, 'images.tar');
      await must('docker', ['save', '-o', file, ...images]);
      await first.docker(['load', '-q', '-i', file]);
      rmSync(file);
      // Layers and image metadata only; nothing else of engine 1's state (no containers run yet).
      for (let i = 2; i <= count; i++) {
        mkdirSync(path.join(n.data, `n${i}`), { recursive: true });
        await must('cp', ['-a', path.join(n.data, 'n1', 'image'), path.join(n.data, 'n1', 'overlay2'), path.join(n.data, `n${i}`)]);
      }
    }
    engines = [first, ...(await Promise.all(Array.from({ length: count - 1 }, (_, k) => startEngine(slot, k + 2))))];
    return machines;
  } catch (err) {
    await removeSlot(slot);
    throw err;
  }
}
