// The docker compose stack under test: docker-compose.yml itself, brought up by testcontainers with
// whichever compose the machine has (v2 plugin or Debian's v1), reached only through nginx's port
// published on the one address testcontainers reaches Docker's ports by, and, as an operator would,
// through `docker exec`.
import { execFile, execFileSync } from 'node:child_process';
import { copyFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { isIP } from 'node:net';
import { DockerComposeEnvironment, getContainerRuntimeClient, Wait, type StartedDockerComposeEnvironment } from 'testcontainers';
import { images, ROOT } from './images';

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: string[], options: { stdin?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { maxBuffer: 64 * 1024 * 1024, env: options.env ?? process.env }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
    // A command that never reads its input may exit before it is written: not an error.
    child.stdin?.on('error', () => {});
    child.stdin?.end(options.stdin ?? '');
  });
}

function composeFlavour(): 'v2' | 'v1' {
  try {
    execFileSync('docker', ['compose', 'version'], { stdio: 'ignore' });
    return 'v2';
  } catch {
    return 'v1';
  }
}

export interface StackOptions {
  project: string;
  env?: Record<string, string>;
  /** With docker-compose.tls.yml: nginx serves HTTPS with the tls.crt and tls.key in this directory. */
  tlsCertDir?: string;
  /** Compose profiles to start as well (`monitoring`: Prometheus). */
  profiles?: string[];
  /** More compose files, after the project's own (a test's extra services). */
  files?: string[];
}

export interface Stack {
  url: string;
  /** nginx's HTTPS port, with `tlsCertDir` (the plain port then only redirects). */
  httpsUrl: string | undefined;
  /** The address the stack is published on, as it appears in a URL. */
  host: string;
  env: Record<string, string>;
  flavour: 'v1' | 'v2';
  /** The URL of a service's published port, on the address the tests reach. */
  published(service: string, port: number): string;
  /** The container name of a service (its first replica). */
  container(service: string): string;
  exec(service: string, command: string[], stdin?: string): Promise<Run>;
  logs(service: string): Promise<string>;
  docker(...args: string[]): Promise<Run>;
  /** The compose project's name (volumes are `<project>_<volume>`). */
  project: string;
  /** `docker compose <args>` on this stack, as an operator types it (env: more variables, e.g. APP_TAG). */
  compose(args: string[], options?: { env?: Record<string, string>; stdin?: string }): Promise<Run>;
  /** `docker compose down` (keeping volumes unless asked) and `up` again. */
  down(options?: { removeVolumes?: boolean }): Promise<void>;
  up(): Promise<void>;
}

// The image build runs `npm ci`; behind an intercepting proxy it must trust the same extra CA as
// the host (see deploy/extra-ca/README.md).
export function shareHostCa(): void {
  const bundle = process.env.NODE_EXTRA_CA_CERTS;
  if (bundle && existsSync(bundle)) copyFileSync(bundle, path.join(ROOT, 'deploy/extra-ca/host-ca.pem'));
}

// The address to publish nginx's port on: the one testcontainers (its wait strategies) and these
// tests connect to. That is `localhost` on a plain host, but inside a container (/.dockerenv) it is
// the bridge gateway (172.17.0.1 here), where a port published on 127.0.0.1 cannot be reached. A
// host name (a remote engine) or an IPv6 address (compose's short port syntax has no brackets) gets
// every interface.
export async function reachableHost(): Promise<{ host: string; bind: string }> {
  const host = (await getContainerRuntimeClient()).info.containerRuntime.host;
  if (host === 'localhost') return { host: '127.0.0.1', bind: '127.0.0.1' };
  return { host, bind: isIP(host) === 4 ? host : '0.0.0.0' };
}

/** Builds the compose file's images (tagged as compose tags them), for use outside compose. */
export async function buildImages(services: string[], env: Record<string, string> = {}): Promise<void> {
  shareHostCa();
  const compose = composeFlavour() === 'v2' ? ['docker', 'compose'] : ['docker-compose'];
  const r = await run(compose[0]!, [...compose.slice(1), '-f', path.join(ROOT, 'docker-compose.yml'), 'build', ...services], {
    env: { ...process.env, ...images(), DOCKER_BUILDKIT: '0', ...env },
  });
  if (r.code !== 0) throw new Error(`image build failed:\n${(r.stdout + r.stderr).split('\n').slice(-30).join('\n')}`);
}

export async function startStack(options: StackOptions): Promise<Stack> {
  shareHostCa();
  const flavour = composeFlavour();
  const { host, bind } = await reachableHost();
  const hostInUrl = isIP(host) === 6 ? `[${host}]` : host;
  const env: Record<string, string> = {
    ...images(),
    HTTP_BIND: bind,
    HTTP_PORT: '0', // a free port, read back below
    ...(options.tlsCertDir ? { TLS_CERT_DIR: options.tlsCertDir, HTTPS_PORT: '0' } : {}),
    PROMETHEUS_BIND: bind,
    PROMETHEUS_PORT: '0',
    ...options.env,
  };
  const files = ['docker-compose.yml', ...(options.tlsCertDir ? ['docker-compose.tls.yml'] : []), ...(options.files ?? [])];
  const name = (service: string) => (flavour === 'v2' ? `${service}-1` : `${options.project}_${service}_1`);
  const nginxUrl = (running: StartedDockerComposeEnvironment) =>
    `http://${hostInUrl}:${running.getContainer(name('nginx')).getMappedPort(80)}`;
  const nginxHttpsUrl = (running: StartedDockerComposeEnvironment) =>
    options.tlsCertDir ? `https://${hostInUrl}:${running.getContainer(name('nginx')).getMappedPort(443)}` : undefined;
  const environment = () => {
    let e = new DockerComposeEnvironment(ROOT, files)
      .withProjectName(options.project)
      .withEnvironment(env)
      .withBuild()
      .withWaitStrategy(name('nginx'), Wait.forHttp('/healthz', 80).forStatusCode(200))
      .withWaitStrategy(name('app'), Wait.forHealthCheck())
      // A healthy app has migrated, so Postgres took connections: its own check (every 10 s), which
      // testcontainers would await by default, is not. No port is published: this returns at once.
      .withWaitStrategy(name('postgres'), Wait.forListeningPorts())
      .withStartupTimeout(240_000);
    if (options.profiles?.length) e = e.withProfiles(...options.profiles);
    if (flavour === 'v1') e = e.withClientOptions({ executable: { standalone: true, executablePath: 'docker-compose' } });
    return e;
  };

  let started: StartedDockerComposeEnvironment = await environment().up();
  const stack: Stack = {
    url: '',
    httpsUrl: undefined,
    host: hostInUrl,
    env,
    flavour,
    published: (service, port) => `http://${hostInUrl}:${started.getContainer(name(service)).getMappedPort(port)}`,
    container: (service) => started.getContainer(name(service)).getName().replace(/^\//, ''),
    exec: (service, command, stdin) => run('docker', ['exec', '-i', stack.container(service), ...command], { stdin: stdin ?? '' }),
    logs: async (service) => {
      const r = await run('docker', ['logs', stack.container(service)]);
      return r.stdout + r.stderr;
    },
    docker: (...args) => run('docker', args),
    project: options.project,
    compose: (args, { env: more = {}, stdin } = {}) => {
      const [cmd, ...pre] = flavour === 'v2' ? ['docker', 'compose'] : ['docker-compose'];
      const fileArgs = files.flatMap((f) => ['-f', path.join(ROOT, f)]);
      return run(cmd!, [...pre, '-p', options.project, ...fileArgs, ...args], { stdin, env: { ...process.env, ...env, DOCKER_BUILDKIT: '0', ...more } });
    },
    async down({ removeVolumes = false } = {}) {
      await started.down({ removeVolumes, timeout: 30_000 });
    },
    async up() {
      started = await environment().up();
      stack.url = nginxUrl(started);
      stack.httpsUrl = nginxHttpsUrl(started);
    },
  };
  stack.url = nginxUrl(started);
  stack.httpsUrl = nginxHttpsUrl(started);
  return stack;
}
