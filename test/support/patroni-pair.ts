// Two Patroni members and one etcd on a Docker network of their own, in the image the swarm runs
// (deploy/swarm/patroni), configured as deploy/swarm/ha.yml configures them: for the scenarios that
// need a real failover but not a swarm (test/e2e/patroni-rejoin.test.ts).
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { images, ROOT } from './images';
import { run } from './stack';

export const PATRONI_IMAGE = `koa-auth-stack-patroni:${process.env.APP_TAG || 'latest'}`;

export async function docker(args: string[]): Promise<string> {
  const r = await run('docker', args, { env: { ...process.env, DOCKER_BUILDKIT: '0' } });
  if (r.code !== 0) throw new Error(`docker ${args.slice(0, 3).join(' ')} failed (${r.code}):\n${r.stderr.slice(-3000)}`);
  return r.stdout;
}

/** Builds the Patroni image from the tree (cached layers make a second build quick). */
export async function buildPatroniImage(): Promise<void> {
  await docker(['build', '-q', '-t', PATRONI_IMAGE, '--build-arg', `POSTGRES_IMAGE=${images().POSTGRES_IMAGE}`, path.join(ROOT, 'deploy/swarm/patroni')]);
}

export interface MemberOptions {
  /** A shell command run as root in the member before its entrypoint (a test's change to the image). */
  before?: string;
  /** A file mounted read-only in /kas-test, under its own name. */
  mount?: string;
}

export class PatroniPair {
  readonly network: string;
  private secrets = '';
  /** Set by remove(): a test that outlived its timeout starts nothing after the clean-up. */
  private removed = false;

  constructor(label: string) {
    this.network = `kas-${label}-${randomBytes(3).toString('hex')}`;
  }

  container(member: string): string {
    return `${this.network}-${member}`;
  }

  volume(member: string): string {
    return `${this.network}-${member}`;
  }

  async startEtcd(): Promise<void> {
    this.secrets = mkdtempSync(path.join(tmpdir(), `${this.network}-`));
    chmodSync(this.secrets, 0o755); // mkdtemp's 0700 would keep the container's postgres user out
    for (const name of ['superuser', 'replication', 'app']) {
      const file = path.join(this.secrets, name);
      writeFileSync(file, randomBytes(12).toString('hex'));
      chmodSync(file, 0o644); // read by the container's postgres user
    }
    await docker(['network', 'create', this.network]);
    const etcd = this.container('etcd');
    await docker(['run', '-d', '--name', etcd, '--network', this.network,
      '-e', 'ETCD_NAME=etcd', '-e', 'ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379', '-e', `ETCD_ADVERTISE_CLIENT_URLS=http://${etcd}:2379`,
      '-e', 'ETCD_DATA_DIR=/tmp/etcd', images().ETCD_IMAGE]);
  }

  /** Starts (or starts again, on its volume) a member named `member`. */
  async startMember(member: string, options: MemberOptions = {}): Promise<void> {
    if (this.removed) throw new Error(`${this.network} was removed`);
    const name = this.container(member);
    const args = ['run', '-d', '--name', name, '--hostname', name, '--network', this.network,
      '-v', `${this.volume(member)}:/var/lib/postgresql/data`, '-v', `${this.secrets}:/run/secrets/kas:ro`,
      ...(options.mount ? ['-v', `${options.mount}:/kas-test/${path.basename(options.mount)}:ro`] : []),
      '-e', `PATRONI_NAME=${member}`, '-e', 'PATRONI_SCOPE=kas', '-e', `KAS_ETCD_HOSTS=${this.container('etcd')}:2379`,
      // Quicker than the stack's 20/5/5 s (a failover in about 10 s), for a quicker test.
      '-e', 'KAS_PATRONI_TTL=10', '-e', 'KAS_PATRONI_LOOP_WAIT=2', '-e', 'KAS_PATRONI_RETRY_TIMEOUT=3',
      '-e', 'KAS_SUPERUSER_PASSWORD_FILE=/run/secrets/kas/superuser',
      '-e', 'KAS_REPLICATION_PASSWORD_FILE=/run/secrets/kas/replication',
      '-e', 'KAS_APP_PASSWORD_FILE=/run/secrets/kas/app'];
    if (options.before) {
      args.push('--entrypoint', 'bash', PATRONI_IMAGE, '-c', `${options.before} && exec kas-patroni patroni /etc/patroni/patroni.yml`);
    } else {
      args.push(PATRONI_IMAGE);
    }
    await docker(args);
  }

  /** psql as the superuser over the member's socket; null when it does not answer. */
  async sql(member: string, query: string, database = 'postgres'): Promise<string | null> {
    const r = await run('docker', ['exec', this.container(member), 'psql', '-U', 'postgres', '-h', '/var/run/postgresql', '-d', database, '-XAtc', query]);
    return r.code === 0 ? r.stdout.trim() : null;
  }

  /** As sql(), for a statement that must succeed. */
  async must(member: string, query: string, database = 'postgres'): Promise<string> {
    const out = await this.sql(member, query, database);
    if (out === null) throw new Error(`${member}: ${query} failed`);
    return out;
  }

  /** Whether `replica` streams from `primary`, as the primary's pg_stat_replication has it. */
  async streams(primary: string, replica: string): Promise<boolean> {
    const n = await this.sql(primary, `SELECT count(*) FROM pg_stat_replication WHERE application_name = '${replica}' AND state = 'streaming'`);
    return n === '1';
  }

  async logs(member: string): Promise<string> {
    const r = await run('docker', ['logs', this.container(member)]);
    return r.stdout + r.stderr;
  }

  /** pg_waldump of a stopped member's WAL on `timeline` from `start`: the records, for a message. */
  async waldump(member: string, timeline: string, start: string): Promise<string> {
    const r = await run('docker', ['run', '--rm', '-v', `${this.volume(member)}:/data`, '--entrypoint', 'pg_waldump', PATRONI_IMAGE, '-p', '/data/pgdata/pg_wal', '-t', timeline, '-s', start]);
    return (r.stdout + r.stderr).trim().split('\n').slice(0, 20).join('\n');
  }

  /** pg_controldata of a stopped member's data directory, as name → value. */
  async controldata(member: string): Promise<Record<string, string>> {
    const out = await docker(['run', '--rm', '-v', `${this.volume(member)}:/data`, '--entrypoint', 'bash', PATRONI_IMAGE, '-c', 'pg_controldata /data/pgdata']);
    return Object.fromEntries(out.split('\n').filter((l) => l.includes(':')).map((l) => {
      const i = l.indexOf(':');
      return [l.slice(0, i).trim(), l.slice(i + 1).trim()];
    }));
  }

  async remove(): Promise<void> {
    this.removed = true;
    const names = ['etcd', 'a', 'b'];
    await run('docker', ['rm', '-f', ...names.map((m) => this.container(m))]);
    await run('docker', ['volume', 'rm', ...names.map((m) => this.volume(m))]);
    await run('docker', ['network', 'rm', this.network]);
    if (this.secrets) rmSync(this.secrets, { recursive: true, force: true });
  }
}

/** An LSN ("0/30000C0") as a number, to compare. */
export function lsn(text: string | undefined): bigint {
  const [hi, lo] = (text ?? '').split('/');
  if (hi === undefined || lo === undefined) throw new Error(`not an LSN: ${text}`);
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
}
