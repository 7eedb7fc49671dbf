// Data that survives: the restore drill and the rolling upgrade, on one compose stack with the
// `backup` profile, following the README's procedures command for command ("Backups", "Restore",
// "Upgrades"). Clients act only through nginx; the operator through docker compose and the CLI.
//
// The drill: users, sessions, a logout, a password change and a deactivation; a base backup; more
// activity on both sides of a recorded time T; then the database volume is destroyed under a stream of
// refreshes and restored twice: to the latest archived state, then to T. After each, everything
// acknowledged before the recovery point is there, everything revoked before it stays revoked, and
// nothing after it exists. The recovery point objective is measured: how old the newest restored
// write was when the database died.
//
// The upgrade: the same image plus one additive migration, built here, rolled in under traffic by the
// migrate job, the release install and `pm2 reload`: no request may fail.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt, request, type Reply } from '../support/http';
import { images, ROOT } from '../support/images';
import { run, startStack, type Run, type Stack } from '../support/stack';

const SIGNING_KEY = 'e2e-signing-key-restore-0123456789abcdefghijklmnopqrstuvwxyz';
const NEXT_TAG = `${process.env.APP_TAG || 'latest'}-next-release`;
const NEXT_IMAGE = `koa-auth-stack-app:${NEXT_TAG}`;
const started = Date.now();
let stack: Stack;
let nextImage: Promise<void> | undefined;
let nextImageError: unknown;

beforeAll(async () => {
  stack = await startStack({
    project: `kasdata${process.pid}`,
    profiles: ['backup'],
    env: {
      NODE_ENV: 'production',
      SIGNING_KEY,
      POSTGRES_PASSWORD: 'e2e-db-password',
      WEB_CONCURRENCY: '2',
      // Access tokens outlive the test, so that their revocation state is what decides.
      ACCESS_TOKEN_LIFETIME: '3600',
      // Traffic from one address: nginx's limits and the refresh limit out of the way.
      LOGIN_RATE: '1000r/s',
      LOGIN_BURST: '1000',
      TOKEN_RATE: '1000r/s',
      TOKEN_BURST: '1000',
      REFRESH_THROTTLE_PER_MINUTE: '0',
    },
  });
  // The next release builds while the drill runs (it needs the CPU only now and then).
  nextImage = buildNextRelease();
  nextImage.catch((err: unknown) => (nextImageError = err));
  console.log(`stack with the backup profile up in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}, 600_000);

afterAll(async () => {
  await nextImage?.catch(() => {});
  const down = await stack?.compose(['--profile', 'backup', '--profile', 'restore', 'down', '-v', '--remove-orphans', '-t', '10']);
  if (down && down.code !== 0) console.error(down.stderr);
  await run('docker', ['rmi', '-f', NEXT_IMAGE]);
  console.log(`restore-and-upgrade: ${((Date.now() - started) / 1000).toFixed(0)} s in all`);
}, 180_000);

// --- clients and operator ------------------------------------------------------------------------

const post = (p: string, json: unknown, headers: Record<string, string> = {}) => request(stack.url, 'POST', p, { json, headers });
const get = (p: string, headers: Record<string, string> = {}) => request(stack.url, 'GET', p, { headers });
const bearer = (access: string) => ({ Authorization: `Bearer ${access}` });
type Pair = { access: string; refresh: string };

async function login(username: string, password: string): Promise<Pair> {
  const r = await post('/api/token/', { username, password });
  expect(r.status, `login ${username}: ${r.text}`).toBe(200);
  return r.json as Pair;
}
const loginStatus = async (username: string, password: string) => (await post('/api/token/', { username, password })).status;
const refreshStatus = async (pair: Pair) => (await post('/api/token/refresh/', { refresh: pair.refresh })).status;
const meStatus = async (pair: Pair) => (await get('/api/me/', bearer(pair.access))).status;

function ok(r: Run, what: string): Run {
  expect(r.code, `${what}:\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r;
}
const cli = async (args: string[], stdin = '') => ok(await stack.exec('app', ['npm', 'run', '-s', 'cli', '--', ...args], stdin), `cli ${args.join(' ')}`);
const createUser = (username: string, password: string) => cli(['createuser', username, '--password-stdin'], password);
const compose = async (args: string[], env: Record<string, string> = {}) => ok(await stack.compose(args, { env }), `docker compose ${args.join(' ')}`);
const psql = async (sql: string) => ok(await stack.exec('postgres', ['psql', '-U', 'app', '-d', 'app', '-XAtc', sql]), sql).stdout.trim();

/** Waits until the archive holds every WAL record written so far (pg_receivewal's flushed position). */
async function archivedSoFar(): Promise<void> {
  const lsn = await psql('SELECT pg_current_wal_lsn()');
  const flushed = `SELECT count(*) FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
    WHERE s.slot_name = 'koa_auth_stack_backup' AND r.flush_lsn >= '${lsn}'`;
  await expect.poll(() => psql(flushed), { timeout: 30_000, interval: 200 }).toBe('1');
}

// README, "Restore", step for step: stop what uses the database, remove it and its volume, restore,
// start everything again.
async function restoreProcedure(restoreArgs: string[]): Promise<string> {
  await compose(['--profile', 'backup', 'stop', 'app', 'backup-base', 'backup-wal']);
  await compose(['rm', '-sf', 'postgres']);
  ok(await stack.docker('volume', 'rm', `${stack.project}_pgdata`), 'docker volume rm');
  const restored = await compose(['run', '--rm', 'restore', ...restoreArgs]);
  await compose(['--profile', 'backup', 'up', '-d']);
  // The app starts on the restored database: ready through nginx.
  await expect.poll(async () => (await get('/readyz')).status, { timeout: 180_000, interval: 1_000 }).toBe(200);
  return /^recovered to (.+)$/m.exec(restored.stdout)?.[1] ?? '';
}

// --- the drill's record ----------------------------------------------------------------------------

const pw = { alice1: 'alice-password-1', alice2: 'alice-password-2', bob1: 'bob-password-1', bob2: 'bob-password-2' };
const s: Record<string, Pair> = {}; // sessions by name
let T = 0; // the recorded time between two events (ms since the epoch)
let crashAt = 0;
let chain: { pair: Pair; jti: string; ackAt: number }[] = [];
let mustSurvive = 0; // index in chain of a write the archive held before the crash

describe('the restore drill', () => {
  it('records activity, takes a base backup, records more on both sides of a time T', async () => {
    for (const [u, p] of [['alice', pw.alice1], ['bob', pw.bob1], ['carol', 'carol-password-1'], ['dave', 'dave-password-1']]) await createUser(u!, p!);
    s.A1 = await login('alice', pw.alice1);
    s.B1 = await login('bob', pw.bob1);
    s.C1 = await login('carol', 'carol-password-1');
    s.D1 = await login('dave', 'dave-password-1');
    expect((await post('/api/token/blacklist/', { refresh: s.A1.refresh })).status).toBe(200); // a logout
    await cli(['changepassword', 'bob', '--password-stdin'], pw.bob2);
    await cli(['deactivate', 'carol']);
    s.D2 = (await post('/api/token/refresh/', { refresh: s.D1.refresh })).json as Pair;

    // README, "Backups": a base backup now.
    const base = await compose(['exec', '-T', 'backup-base', 'pg-backup', 'base']);
    expect(base.stderr).toMatch(/base backup \d{8}T\d{6}Z complete/);

    // Before T.
    await createUser('erin', 'erin-password-1');
    s.E1 = await login('erin', 'erin-password-1');
    s.A2 = await login('alice', pw.alice1);
    s.D3 = (await post('/api/token/refresh/', { refresh: s.D2.refresh })).json as Pair;
    expect(s.D3.refresh).toBeDefined();
    // T: after the last acknowledgement (whole milliseconds round down, hence +1), before the next request.
    T = Date.now() + 1;
    await expect.poll(() => Date.now() > T + 1, { interval: 1 }).toBe(true);
    // After T.
    await createUser('frank', 'frank-password-1');
    s.F1 = await login('frank', 'frank-password-1');
    expect((await post('/api/token/blacklist/', { refresh: s.E1.refresh })).status).toBe(200);
    await cli(['changepassword', 'alice', '--password-stdin'], pw.alice2);
    await cli(['deactivate', 'dave']);
  }, 600_000);

  it('the database volume is destroyed under traffic; restored to the latest archived state', async () => {
    expect(s.F1, 'the recorded activity').toBeDefined();
    // A stream of refreshes, one after the other, until the database dies under it.
    let dead = false;
    let current = s.F1!;
    const stream = (async () => {
      while (!dead) {
        const r: Reply = await post('/api/token/refresh/', { refresh: current.refresh });
        if (r.status !== 200) break;
        current = r.json as Pair;
        chain.push({ pair: current, jti: decodeJwt(current.refresh).payload.jti as string, ackAt: Date.now() });
      }
    })();
    await expect.poll(() => chain.length, { timeout: 30_000, interval: 20 }).toBeGreaterThan(10);
    // Everything up to here must come back, whatever the timing of the crash.
    mustSurvive = chain.length - 1;
    await archivedSoFar();
    const more = chain.length + 10;
    await expect.poll(() => chain.length, { timeout: 30_000, interval: 5 }).toBeGreaterThanOrEqual(more);
    const killedFrom = Date.now();
    ok(await stack.docker('kill', stack.container('postgres')), 'docker kill postgres');
    crashAt = Date.now(); // the database died between killedFrom and now
    dead = true;
    await stream;
    chain = chain.filter((c) => c.ackAt <= crashAt);

    const recoveredTo = await restoreProcedure([]);

    // The refresh stream: the restored part is a prefix of what was acknowledged, reaching past the
    // write the archive held for sure.
    const present = new Set((await psql(`SELECT jti FROM refresh_tokens WHERE jti IN (${chain.map((c) => `'${c.jti}'`).join(',')})`)).split('\n'));
    const newest = chain.findLastIndex((c) => present.has(c.jti));
    expect(newest).toBeGreaterThanOrEqual(mustSurvive);
    for (const [i, c] of chain.entries()) expect(present.has(c.jti), `refresh ${i} of ${chain.length}`).toBe(i <= newest);
    const newestAck = chain[newest]!.ackAt;
    console.log(
      `restore to the latest state: recovered to ${recoveredTo}; ${newest + 1} of ${chain.length} acknowledged refreshes restored ` +
        `(${chain.length - newest - 1} lost); RPO: the newest restored write was ${Math.max(0, killedFrom - newestAck)}–${crashAt - newestAck} ms old ` +
        `when the database died (docker kill sent – returned)`,
    );
    // The newest restored session refreshes; what was lost is refused, not half there.
    expect(await refreshStatus(chain[newest]!.pair)).toBe(200);
    if (newest + 1 < chain.length) expect(await refreshStatus(chain.at(-1)!.pair)).toBe(401);

    // Everything before the crash, as it was.
    expect(await loginStatus('alice', pw.alice2)).toBe(200);
    expect(await loginStatus('alice', pw.alice1)).toBe(401);
    expect(await refreshStatus(s.A1!)).toBe(401); // logged out
    expect(await meStatus(s.A1!)).toBe(401);
    expect(await refreshStatus(s.A2!)).toBe(401); // ended by the password change
    expect(await meStatus(s.A2!)).toBe(401);
    expect(await loginStatus('bob', pw.bob2)).toBe(200);
    expect(await refreshStatus(s.B1!)).toBe(401);
    expect(await loginStatus('carol', 'carol-password-1')).toBe(401); // deactivated
    expect(await refreshStatus(s.C1!)).toBe(401);
    expect(await loginStatus('dave', 'dave-password-1')).toBe(401); // deactivated after T
    expect(await refreshStatus(s.D3!)).toBe(401);
    expect(await meStatus(s.D3!)).toBe(401);
    expect(await refreshStatus(s.E1!)).toBe(401); // logged out after T
    expect(await loginStatus('erin', 'erin-password-1')).toBe(200);
    expect(await loginStatus('frank', 'frank-password-1')).toBe(200);
    // The archive goes on from the restored database.
    await expect.poll(async () => (await stack.compose(['exec', '-T', 'backup-wal', 'pg-backup', 'streaming'])).code, { timeout: 60_000, interval: 1_000 }).toBe(0);
  }, 600_000);

  it('destroyed again; restored to the time T between two recorded events', async () => {
    expect(T, 'the recorded time').toBeGreaterThan(0);
    ok(await stack.docker('kill', stack.container('postgres')), 'docker kill postgres');
    const target = new Date(T).toISOString();
    const recoveredTo = await restoreProcedure(['--time', target]);
    console.log(`restore to ${target}: recovered to ${recoveredTo}`);
    expect(new Date(recoveredTo).getTime()).toBeLessThanOrEqual(T);

    // Acknowledged before T: there, and working.
    expect(await loginStatus('alice', pw.alice1)).toBe(200);
    expect(await meStatus(s.A2!)).toBe(200);
    expect(await refreshStatus(s.A2!)).toBe(200);
    expect(await loginStatus('erin', 'erin-password-1')).toBe(200);
    expect(await refreshStatus(s.E1!)).toBe(200);
    expect(await loginStatus('dave', 'dave-password-1')).toBe(200);
    expect(await meStatus(s.D3!)).toBe(200);
    expect(await refreshStatus(s.D3!)).toBe(200);
    // Revoked before T: still revoked.
    expect(await refreshStatus(s.A1!)).toBe(401);
    expect(await meStatus(s.A1!)).toBe(401);
    expect(await loginStatus('bob', pw.bob2)).toBe(200);
    expect(await loginStatus('bob', pw.bob1)).toBe(401);
    expect(await refreshStatus(s.B1!)).toBe(401);
    expect(await meStatus(s.B1!)).toBe(401);
    expect(await loginStatus('carol', 'carol-password-1')).toBe(401);
    expect(await refreshStatus(s.C1!)).toBe(401);
    // After T: none of it.
    expect(await loginStatus('alice', pw.alice2)).toBe(401);
    expect(await loginStatus('frank', 'frank-password-1')).toBe(401);
    expect(await refreshStatus(s.F1!)).toBe(401);
    expect(await refreshStatus(chain[0]!.pair)).toBe(401);
  }, 600_000);
});

// --- the rolling upgrade ---------------------------------------------------------------------------

/** The same image plus one additive migration: the checkout copied, the migration added, built. */
async function buildNextRelease(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'kas-next-release-'));
  try {
    const skip = new Set(['node_modules', '.git', 'dist', 'test-artifacts', 'coverage', 'test']);
    cpSync(ROOT, dir, { recursive: true, filter: (src) => !skip.has(path.basename(src)) });
    writeFileSync(
      path.join(dir, 'app/db/migrations/9000_rolling_probe.ts'),
      `import type { Migration } from '.';
// Additive only (expand): the serving release neither reads nor writes these.
export const rollingProbe: Migration = {
  name: '9000_rolling_probe',
  async up({ context: sequelize }) {
    await sequelize.query("ALTER TABLE users ADD COLUMN rolling_probe varchar(32) NOT NULL DEFAULT ''");
    await sequelize.query('CREATE TABLE rolling_probe (id integer PRIMARY KEY)');
  },
  async down({ context: sequelize }) {
    await sequelize.query('DROP TABLE rolling_probe; ALTER TABLE users DROP COLUMN rolling_probe');
  },
};
`,
    );
    const migrations = path.join(dir, 'app/db/migrations/index.ts');
    const source = readFileSync(migrations, 'utf8');
    const list = /export const MIGRATIONS: readonly Migration\[\] = \[([^\]]*)\];/;
    expect(source).toMatch(list);
    writeFileSync(
      migrations,
      `import { rollingProbe } from './9000_rolling_probe';\n${source.replace(list, (_m, names: string) => `export const MIGRATIONS: readonly Migration[] = [${names}, rollingProbe];`)}`,
    );
    const built = await run('docker', ['build', '-q', '--build-arg', `NODE_IMAGE=${images().NODE_IMAGE}`, '-t', NEXT_IMAGE, dir], {
      env: { ...process.env, DOCKER_BUILDKIT: '0' },
    });
    if (built.code !== 0) throw new Error(`next release build failed: ${built.stderr.slice(-2000)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Pm2Process {
  name: string;
  pid: number;
  pm2_env: { status: string };
}
async function workers(): Promise<Pm2Process[]> {
  const r = ok(await stack.exec('app', ['pm2', 'jlist']), 'pm2 jlist');
  return (JSON.parse(r.stdout) as Pm2Process[]).filter((p) => p.name === 'api');
}

describe('the rolling upgrade', () => {
  it('the next release (one more migration) rolls in under traffic with pm2 reload: no request fails', async () => {
    const t0 = Date.now();
    await nextImage?.catch(() => {});
    if (nextImageError) throw nextImageError;
    console.log(`next release image ready ${((Date.now() - t0) / 1000).toFixed(0)} s after the drill`);
    await createUser('roller', 'roller-password-1');
    const chains = [await login('roller', 'roller-password-1'), await login('roller', 'roller-password-1')];
    const before = await workers();

    let done = false;
    let total = 0;
    const failures: string[] = [];
    const traffic = Promise.all(
      Array.from({ length: 6 }, async (_, c) => {
        while (!done) {
          let r: Reply;
          try {
            if (c < 2) {
              // Each rotates its own chain: a request answered twice would show as a replay.
              r = await post('/api/token/refresh/', { refresh: chains[c]!.refresh });
              if (r.status === 200) chains[c] = r.json as Pair;
            } else if (c === 2) {
              r = await post('/api/token/', { username: 'roller', password: 'roller-password-1' }); // reads users, writes sessions
            } else if (c === 3) {
              r = await post('/api/token/verify/', { token: chains[1]!.access });
            } else {
              r = await get('/api/me/', bearer(chains[0]!.access)); // reads users
            }
          } catch (err) {
            r = { status: 0, text: String(err) } as Reply;
          }
          total += 1;
          if (r.status !== 200) failures.push(`${r.status} ${r.text.slice(0, 200)}`);
        }
      }),
    );
    try {
      // README, "Upgrades", with APP_TAG naming the next release.
      const next = { APP_TAG: NEXT_TAG };
      const migrated = await compose(['run', '--rm', 'migrate'], next);
      expect(migrated.stdout).toContain('applied 1 migration(s)');
      const installed = await compose(['run', '--rm', '--no-deps', 'app', 'node', 'scripts/release.js', 'install'], next);
      const release = /^installed release (\S+)$/m.exec(installed.stdout)?.[1];
      expect(release, installed.stdout).toBeDefined();
      await compose(['exec', '-T', 'app', 'node', 'scripts/release.js', 'activate'], next);
      await compose(['exec', '-T', 'app', 'pm2', 'reload', 'api'], next);
      const after = await workers();
      expect(after).toHaveLength(2);
      for (const w of after) {
        expect(before.map((b) => b.pid)).not.toContain(w.pid); // every worker replaced…
        // …by one running the new release's code.
        const cwd = ok(await stack.exec('app', ['node', '-e', `process.stdout.write(require('fs').readlinkSync('/proc/${w.pid}/cwd'))`]), 'cwd');
        expect(cwd.stdout).toBe(`/srv/koa-auth-stack/releases/${release}`);
      }
      // Some more traffic on the new workers.
      const more = total + 100;
      await expect.poll(() => total, { timeout: 60_000, interval: 50 }).toBeGreaterThanOrEqual(more);
    } finally {
      done = true;
      await traffic;
    }
    console.log(`rolling upgrade: ${total} requests, ${failures.length} failed`);
    expect(failures).toEqual([]);
    expect(total).toBeGreaterThan(200);
    expect(await psql(`SELECT count(*) FROM schema_migrations WHERE name = '9000_rolling_probe'`)).toBe('1');
  }, 600_000);
});
