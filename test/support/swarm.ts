// deploy/swarm/stack.yml on engines from engines.ts, as an operator would run it: a swarm of
// managers, the database node labelled, the secrets created, the images loaded, the stack deployed.
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startEngines, type Engine, type Machines } from './engines';
import { images, ROOT } from './images';
import { buildImages, run } from './stack';

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
  manager: Engine;
  /** The stack's services' tasks that should be running (docker service ps + inspect). */
  tasks(service: string): Promise<Task[]>;
  /** Waits until `service` has `replicas` tasks running (and none starting or stopping). */
  waitForTasks(service: string, replicas: number, timeoutMs?: number): Promise<Task[]>;
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

const STACK_FILE = path.join(ROOT, 'deploy/swarm/stack.yml');

const tag = () => process.env.APP_TAG || 'latest';

/** Builds the stack's images as compose names them (koa-auth-stack-app:$APP_TAG, …). */
export async function buildSwarmImages(): Promise<void> {
  await buildImages(['app', 'nginx'], { APP_TAG: tag() });
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

  const machines = await startEngines(options.engines, [`koa-auth-stack-app:${tag()}`, `koa-auth-stack-nginx:${tag()}`, postgresImage]);
  try {
    step(`engines up, with the images, in namespaces ${machines.engines.map((e) => `${e.namespace}=${e.address}`).join(' ')}`);
    const [manager, ...others] = machines.engines as [Engine, ...Engine[]];
    const nodeIds = new Map<number, string>();

    // Every node a manager: losing one keeps the quorum (2 of 3).
    await manager.docker(['swarm', 'init', '--advertise-addr', manager.address, '--listen-addr', `${manager.address}:2377`]);
    const token = (await manager.docker(['swarm', 'join-token', '-q', 'manager'])).trim();
    await Promise.all(
      others.map((e) => e.docker(['swarm', 'join', '--token', token, '--advertise-addr', e.address, '--listen-addr', `${e.address}:2377`, `${manager.address}:2377`])),
    );
    for (const e of machines.engines) nodeIds.set(e.index, (await e.docker(['info', '--format', '{{.Swarm.NodeID}}'])).trim());
    step('swarm formed');

    // As the README tells operators: the database node labelled, the secrets created (the images
    // are on the nodes already).
    await manager.docker(['node', 'update', '--label-add', 'kas.db=true', nodeIds.get(1)!]);
    for (const [name, value] of Object.entries(options.secrets)) await manager.docker(['secret', 'create', name, '-'], value);

    // No registry to ask for image digests: the images are on the nodes already.
    const deploy = await run('docker', ['-H', manager.host, 'stack', 'deploy', '--resolve-image', 'never', '-c', STACK_FILE, options.stack], {
      env: { ...process.env, APP_TAG: tag(), POSTGRES_IMAGE: postgresImage, ...options.env },
    });
    if (deploy.code !== 0) throw new Error(`docker stack deploy failed: ${deploy.stderr || deploy.stdout}`);

    const engineOf = (nodeId: string) => machines.engines.find((e) => nodeIds.get(e.index) === nodeId)!;
    const serviceName = (service: string) => `${options.stack}_${service}`;

    const swarm: Swarm = {
      ...machines,
      stack: options.stack,
      nodeIds,
      manager,
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
          address: t.NetworksAttachments?.find((a) => a.Network.Spec.Name === `${options.stack}_default`)?.Addresses[0]?.split('/')[0],
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
