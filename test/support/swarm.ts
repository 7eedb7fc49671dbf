// deploy/swarm/stack.yml (and the files deployed on top of it, such as ha.yml) on engines from
// engines.ts, as an operator would run it: the images built by deploy/swarm/build-images.sh, a
// swarm of managers, the nodes labelled, the secrets created, the images loaded, the stack deployed.
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startEngines, type Engine, type Machines } from './engines';
import { images, ROOT } from './images';
import { run, shareHostCa } from './stack';

export interface Task {
  id: string;
  slot: number | undefined;
  nodeId: string;
  /** The engine the task runs on. */
  engine: Engine;
  state: string;
  desiredState: string;
  /** Its address on the stack's network (what nginx sends to). */
  address: string | undefined;
  containerId: string | undefined;
}

export interface Swarm extends Machines {
  stack: string;
  /** Each engine's swarm node id, by engine index. */
  nodeIds: Map<number, string>;
  /** The engine the swarm is driven through (docker service …, docker stack …). */
  manager: Engine;
  /** Drives the swarm through another manager (when the first is cut off). */
  useManager(engine: Engine): void;
  /** The stack's services' tasks that should be running (docker service ps + inspect). */
  tasks(service: string): Promise<Task[]>;
  /** Waits until `service` has `replicas` tasks running (and none starting or stopping). */
  waitForTasks(service: string, replicas: number, timeoutMs?: number): Promise<Task[]>;
  /** The swarm's view of an engine's node: its state and availability (docker node inspect). */
  nodeState(engine: Engine): Promise<string>;
  /** A service's tasks on one engine's node, newest first: desired and current state, ages left out. */
  taskHistory(service: string, engine: Engine): Promise<string>;
  /** The upstream servers one node's nginx has now (follow mode's server list). */
  nginxUpstream(engine: Engine): Promise<string[]>;
  /** The log of a service's container on one engine (e.g. its nginx), since a moment (ms since the epoch). */
  containerLogs(engine: Engine, service: string, since?: number): Promise<string>;
  /** A container of a task on its engine: `docker exec`. */
  exec(task: Task, command: string[], stdin?: string): Promise<string>;
}

export interface SwarmOptions {
  engines: number;
  stack: string;
  /** deploy/swarm/ files, in the order `docker stack deploy -c` takes them (default: stack.yml). */
  files?: string[];
  /** Node labels by engine index (the README's `docker node update --label-add`). */
  labels: Record<number, Record<string, string>>;
  /** The images to load into the engines (what build-images.sh printed). */
  images: string[];
  secrets: Record<string, string>;
  /** The environment docker stack deploy interpolates stack.yml with. */
  env: Record<string, string>;
  /** Progress, for the test's log. */
  log?: (message: string) => void;
}

interface TaskJson {
  ID: string;
  Slot?: number;
  NodeID: string;
  DesiredState: string;
  Status: { State: string; ContainerStatus?: { ContainerID?: string } };
  NetworksAttachments?: { Network: { Spec: { Name: string } }; Addresses: string[] }[];
}

const SWARM_DIR = path.join(ROOT, 'deploy/swarm');

const tag = () => process.env.APP_TAG || 'latest';

/** Every image the swarm stacks name, built as an operator builds them: their names, one a line. */
export async function buildSwarmImages(): Promise<string[]> {
  shareHostCa();
  const r = await run('bash', [path.join(SWARM_DIR, 'build-images.sh')], { env: { ...process.env, ...images(), APP_TAG: tag() } });
  if (r.code !== 0) throw new Error(`deploy/swarm/build-images.sh failed:\n${r.stderr.split('\n').slice(-30).join('\n')}`);
  return r.stdout.split('\n').filter(Boolean);
}

/** Engines with the images, a swarm of them, the stack deployed (not yet running: see waitForTasks). */
export async function startSwarm(options: SwarmOptions): Promise<Swarm> {
  const log = options.log ?? (() => {});
  const postgresImage = images().POSTGRES_IMAGE;
  let started = Date.now();
  const step = (what: string) => {
    log(`${what} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    started = Date.now();
  };

  const machines = await startEngines(options.engines, options.images);
  try {
    step(`engines up, with the images, in namespaces ${machines.engines.map((e) => `${e.namespace}=${e.address}`).join(' ')}`);
    const [first, ...others] = machines.engines as [Engine, ...Engine[]];
    let manager = first;
    const nodeIds = new Map<number, string>();

    // Every node a manager: losing one keeps the quorum (2 of 3).
    await manager.docker(['swarm', 'init', '--advertise-addr', manager.address, '--listen-addr', `${manager.address}:2377`]);
    const token = (await manager.docker(['swarm', 'join-token', '-q', 'manager'])).trim();
    await Promise.all(
      others.map((e) => e.docker(['swarm', 'join', '--token', token, '--advertise-addr', e.address, '--listen-addr', `${e.address}:2377`, `${manager.address}:2377`])),
    );
    for (const e of machines.engines) nodeIds.set(e.index, (await e.docker(['info', '--format', '{{.Swarm.NodeID}}'])).trim());
    step('swarm formed');

    // As the README tells operators: the nodes labelled, the secrets created (the images are on
    // the nodes already).
    for (const [index, labels] of Object.entries(options.labels)) {
      const adds = Object.entries(labels).flatMap(([k, v]) => ['--label-add', `${k}=${v}`]);
      await manager.docker(['node', 'update', ...adds, nodeIds.get(Number(index))!]);
    }
    for (const [name, value] of Object.entries(options.secrets)) await manager.docker(['secret', 'create', name, '-'], value);

    // No registry to ask for image digests: the images are on the nodes already.
    const files = (options.files ?? ['stack.yml']).flatMap((f) => ['-c', path.join(SWARM_DIR, f)]);
    const { ETCD_IMAGE, HAPROXY_IMAGE } = images();
    const deploy = await run('docker', ['-H', manager.host, 'stack', 'deploy', '--resolve-image', 'never', ...files, options.stack], {
      env: { ...process.env, APP_TAG: tag(), POSTGRES_IMAGE: postgresImage, ETCD_IMAGE, HAPROXY_IMAGE, ...options.env },
    });
    if (deploy.code !== 0) throw new Error(`docker stack deploy failed: ${deploy.stderr || deploy.stdout}`);

    const engineOf = (nodeId: string) => machines.engines.find((e) => nodeIds.get(e.index) === nodeId)!;
    const serviceName = (service: string) => `${options.stack}_${service}`;

    const swarm: Swarm = {
      ...machines,
      stack: options.stack,
      nodeIds,
      get manager() {
        return manager;
      },
      useManager(engine: Engine) {
        manager = engine;
      },
      async tasks(service: string): Promise<Task[]> {
        const ids = (await manager.docker(['service', 'ps', '-q', '--no-trunc', '--filter', 'desired-state=running', serviceName(service)]))
          .split('\n')
          .filter(Boolean);
        if (ids.length === 0) return [];
        const json = JSON.parse(await manager.docker(['inspect', '--type', 'task', ...ids])) as TaskJson[];
        return json.map((t) => ({
          id: t.ID,
          slot: t.Slot,
          nodeId: t.NodeID,
          engine: engineOf(t.NodeID),
          state: t.Status.State,
          desiredState: t.DesiredState,
          // On the app's network, or (the database tier's tasks) on the first they have.
          address: (t.NetworksAttachments?.find((a) => a.Network.Spec.Name === `${options.stack}_default`) ?? t.NetworksAttachments?.[0])?.Addresses[0]?.split(
            '/',
          )[0],
          containerId: t.Status.ContainerStatus?.ContainerID,
        }));
      },
      async waitForTasks(service: string, replicas: number, timeoutMs = 120_000): Promise<Task[]> {
        const deadline = Date.now() + timeoutMs;
        let last: Task[] = [];
        while (Date.now() < deadline) {
          last = await swarm.tasks(service);
          if (last.length === replicas && last.every((t) => t.state === 'running')) return last;
          await sleep(500);
        }
        const ps = await manager.tryDocker(['service', 'ps', '--no-trunc', serviceName(service)]);
        throw new Error(`${service}: ${replicas} running tasks expected, have ${JSON.stringify(last.map((t) => t.state))}\n${ps.stdout}\n${machines.logs()}`);
      },
      async nodeState(engine: Engine): Promise<string> {
        return (await manager.docker(['node', 'inspect', '--format', '{{.Status.State}}/{{.Spec.Availability}}', nodeIds.get(engine.index)!])).trim();
      },
      async taskHistory(service: string, engine: Engine): Promise<string> {
        const ps = await manager.docker(['service', 'ps', '--no-trunc', '--filter', `node=${nodeIds.get(engine.index)!}`, '--format', '{{.ID}}|{{.DesiredState}}|{{.CurrentState}}|{{.Error}}', serviceName(service)]);
        return ps
          .split('\n')
          .filter(Boolean)
          .map((line) => {
            const [id, desired, current, error] = line.split('|');
            // "Running 5 seconds ago": the state without its age, so that a listing changes only with the state.
            const state = (current ?? '').replace(/\s+(about |less than )?(an?|\d+) \w+ ago$/i, '');
            return `${id!.slice(0, 6)} ${desired}→${state}${error ? ` (${error})` : ''}`;
          })
          .join(', ');
      },
      async containerLogs(engine: Engine, service: string, since?: number): Promise<string> {
        const id = (await engine.docker(['ps', '-q', '--filter', `label=com.docker.swarm.service.name=${serviceName(service)}`])).trim();
        const r = await engine.tryDocker(['logs', '-t', ...(since ? ['--since', new Date(since).toISOString()] : []), id]);
        return r.stdout + r.stderr;
      },
      async nginxUpstream(engine: Engine): Promise<string[]> {
        const id = (await engine.docker(['ps', '-q', '--filter', `label=com.docker.swarm.service.name=${serviceName('nginx')}`])).trim();
        const list = await engine.docker(['exec', id, 'cat', '/etc/nginx/conf.d/tasks.servers']);
        return [...list.matchAll(/^server (\S+?):\d+ max_fails/gm)].map((m) => m[1]!).sort();
      },
      exec: (task: Task, command: string[], stdin?: string) => task.engine.docker(['exec', '-i', task.containerId!, ...command], stdin),
    };
    return swarm;
  } catch (err) {
    await machines.destroy();
    throw err;
  }
}
