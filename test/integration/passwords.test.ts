// Password work is bounded: every failed login costs one configured hash whatever its reason, stored
// hashes above the caps are never run (nor imported), the hashing line is short, and a client that
// leaves stops its waiting hash.
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OWASP_ARGON2ID } from '../../app/auth/passwords';
import { DJANGO_NEVER, DJANGO_VECTORS } from '../support/django-hashes';
import { ROOT } from '../support/images';
import { scratchDir } from '../support/scratch';
import { eventually, startTestApp, type TestApp } from '../support/test-app';

let t: TestApp;
beforeAll(async () => {
  // One hash at a time and a line of two, so the queue's limit is reached on purpose; two database
  // connections, so parallel logins wait for one rather than open a dozen at once.
  t = await startTestApp({ PASSWORD_HASH_CONCURRENCY: '1', PASSWORD_HASH_QUEUE: '2', LOGIN_THROTTLE_FREE_ATTEMPTS: '1000', LOGIN_THROTTLE_ACCOUNT_BUDGET: '0', DB_POOL_MAX: '2' });
  await t.user('alice', 'alice-password-1');
  await t.user('ivan', 'ivan-password-1', { active: false });
});
afterAll(() => t.stop());

const salt = Buffer.alloc(16, 1).toString('base64').replace(/=+$/, '');
const tag = Buffer.alloc(32, 2).toString('base64').replace(/=+$/, '');
const HUGE_ARGON2 = `$argon2id$v=19$m=262144,t=8,p=1$${salt}$${tag}`; // measured at 2.6 s before the caps

async function storedUser(username: string, hash: string): Promise<void> {
  await t.db.sequelize.query('INSERT INTO users (username, password_hash) VALUES (:username, :hash)', { replacements: { username, hash } });
}

describe('failed logins', () => {
  it('cost at least one configured hash whatever the reason, and never run an over-cap stored hash', async () => {
    await storedUser('huge', HUGE_ARGON2);
    await storedUser('broken', '$argon2id$v=19$m=19456,t=2,p=1$nonsense');
    await storedUser('legacy', `pbkdf2_sha256$1000$salt$${Buffer.alloc(32, 3).toString('base64')}`);
    await storedUser('unusable', '!XkvWnVdqGaANvq9D2E5w');
    const cases: [string, string][] = [
      ['alice', 'wrong-password'],
      ['nobody', 'alice-password-1'],
      ['ivan', 'ivan-password-1'], // inactive, right password
      ['huge', 'x'],
      ['broken', 'x'],
      ['legacy', 'x'],
      ['unusable', 'x'],
    ];
    for (const [username, password] of cases) {
      const before = t.hasher.computed();
      const started = performance.now();
      const r = await t.post('/api/token/', { username, password });
      const ms = performance.now() - started;
      expect(r.status, username).toBe(401);
      const hashes = t.hasher.computed() - before;
      expect(hashes, username).toBeGreaterThanOrEqual(1);
      expect(hashes, username).toBeLessThanOrEqual(2);
      // Not a timing assertion: a record for the reader of a failing run.
      if (hashes < 1) console.log(`${username}: ${ms.toFixed(0)} ms`);
    }
  });
});

describe('the hashing line', () => {
  it('answers 503 with Retry-After when it is full, never a 500, and serves the rest', async () => {
    const replies = await Promise.all(Array.from({ length: 12 }, () => t.post('/api/token/', { username: 'alice', password: 'alice-password-1' })));
    const statuses = replies.map((r) => r.status);
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(3);
    const refused = replies.filter((r) => r.status === 503);
    expect(refused.length).toBeGreaterThan(0);
    expect(statuses.every((s) => s === 200 || s === 503)).toBe(true);
    for (const r of refused) {
      expect(r.json).toEqual({ detail: 'Too many logins are being checked; try again shortly.', code: 'login_overloaded' });
      expect(r.headers.get('retry-after')).toBe('1');
    }
  });

  it('drops the waiting hash of a client that has gone', async () => {
    // A slow configured hash (about a second here), so the line fills while the first one runs:
    // logins of an unknown user spend exactly one configured hash each.
    const slow = { ...OWASP_ARGON2ID, memory: 65536, passes: 8 };
    const roomy = await startTestApp(
      // Two connections: the logins queue for them rather than open twenty at once.
      { PASSWORD_HASH_CONCURRENCY: '1', PASSWORD_HASH_QUEUE: '100', LOGIN_THROTTLE_FREE_ATTEMPTS: '1000', LOGIN_THROTTLE_ACCOUNT_BUDGET: '0', DB_POOL_MAX: '2' },
      { databaseUrl: t.config.databaseUrl, argon2: slow },
    );
    try {
      // One login first: it also makes the dummy hash that logins of unknown users are checked against.
      expect((await roomy.post('/api/token/', { username: 'nobody', password: 'x' })).status).toBe(401);
      const before = roomy.hasher.computed();
      const gone = new AbortController();
      const sent = Array.from({ length: 20 }, () =>
        fetch(`${roomy.url}/api/token/`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ username: 'nobody', password: 'x' }),
          signal: gone.signal,
        }).catch(() => undefined),
      );
      // Every request has arrived: all but the running one wait in line.
      await eventually(() => roomy.hasher.queued() === 19, 30_000);
      gone.abort();
      await Promise.all(sent);
      await eventually(() => roomy.hasher.queued() === 0, 30_000);
      // One more login, through the same line (one hash at a time, first come first served): its
      // answer comes after the running hash and after anything still to run. Two hashes in all then:
      // the one that was running and this one's; the 19 never ran, and never will (the line is empty).
      expect((await roomy.post('/api/token/', { username: 'nobody', password: 'x' })).status).toBe(401);
      expect(roomy.hasher.computed() - before).toBe(2);
      expect(roomy.hasher.queued()).toBe(0);
    } finally {
      await roomy.stop();
    }
  });
});

async function importusers(rows: unknown[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const file = path.join(await scratchDir('import-'), 'users.json');
  await writeFile(file, JSON.stringify(rows));
  return new Promise((resolve) =>
    execFile(process.execPath, [path.join(ROOT, 'scripts/run.js'), 'cli', 'importusers', file], { cwd: ROOT, env: { ...process.env, DATABASE_URL: t.config.databaseUrl, NODE_ENV: 'test' } }, (err, stdout, stderr) =>
      resolve({ code: err ? Number(err.code) : 0, stdout, stderr }),
    ),
  );
}

const storedHash = async (username: string) => (await t.db.models.User.findOne({ where: { username } }))!.passwordHash;

describe('every hasher Django ships, through importusers and the API', () => {
  it('imports users of every kind, reports the weak and the unusable ones, logs each in and upgrades it to argon2id', async () => {
    const users = DJANGO_VECTORS.map((v, i) => ({ ...v, username: `django${i}` }));
    const never = DJANGO_NEVER.map((v, i) => ({ ...v, username: `never${i}` }));
    const run = await importusers([
      ...users.map((u, i) => ({ id: 3000 + i, username: u.username, password: u.encoded, is_active: true })),
      ...never.map((u, i) => ({ id: 3500 + i, username: u.username, password: u.encoded, is_active: true })),
    ]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(`imported ${users.length + never.length} user(s)`);
    const counts = new Map<string, number>();
    for (const u of users) counts.set(u.kind, (counts.get(u.kind) ?? 0) + 1);
    for (const [kind, n] of counts) expect(run.stdout).toContain(`${kind} ${n}`);
    const weak = users.filter((u) => u.weak);
    expect(run.stdout).toContain(`weak: ${weak.length} user(s) with an md5/sha1 digest`);
    expect(run.stdout).toContain(weak.map((u) => u.username).join(', '));
    expect(run.stdout).toContain(`cannot log in: ${never.length} user(s)`);
    expect(run.stdout).toContain(never.map((u) => u.username).join(', '));

    for (const u of weak) expect(await storedHash(u.username), u.name).toMatch(new RegExp(`^wrapped_${u.kind}\\$.*\\$argon2id\\$`));
    for (const u of users) {
      expect((await t.post('/api/token/', { username: u.username, password: 'not-the-password' })).status, u.name).toBe(401);
      const first = await t.post('/api/token/', { username: u.username, password: u.password });
      expect(first.status, `${u.name}: ${first.text}`).toBe(200);
      // Upgraded at this login: our own argon2id from now on, and it keeps working.
      expect(await storedHash(u.username), u.name).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
      expect((await t.post('/api/token/', { username: u.username, password: u.password })).status, u.name).toBe(200);
    }
    for (const u of never) expect((await t.post('/api/token/', { username: u.username, password: u.password || 'anything' })).status, u.name).toBe(401);
  }, 180_000);
});

describe('the failure floor through the app (FAILED_LOGIN_MIN_TIME)', () => {
  it('answers no failed login, whatever the account, before the floor has passed', async () => {
    const floored = await startTestApp({ FAILED_LOGIN_MIN_TIME: '400ms', LOGIN_THROTTLE_FREE_ATTEMPTS: '1000', LOGIN_THROTTLE_ACCOUNT_BUDGET: '0' }, { databaseUrl: t.config.databaseUrl });
    try {
      const kinds = ['pbkdf2_sha256', 'bcrypt', 'md5', 'unsalted_sha1', 'scrypt'];
      for (const kind of kinds) {
        const v = DJANGO_VECTORS.find((x) => x.kind === kind)!;
        await storedUser(`floor-${kind}`, await floored.hasher.forStorage(v.encoded));
      }
      const usernames = ['alice', 'nobody-at-all', 'ivan', ...kinds.map((k) => `floor-${k}`)];
      for (const username of usernames) {
        const started = performance.now();
        const r = await floored.post('/api/token/', { username, password: 'not-the-password' });
        // A lower bound only: the floor is a minimum, so this cannot fail by load or luck.
        expect(performance.now() - started, username).toBeGreaterThanOrEqual(400);
        expect(r.status, `${username}: ${r.text}`).toBe(401);
        expect(r.json).toEqual({ detail: 'No active account found with the given credentials' });
      }
    } finally {
      await floored.stop();
    }
  }, 120_000);
});

describe('importusers', () => {
  it('refuses a file with a hash above the caps, naming the user, and imports nothing', async () => {
    const file = path.join(await scratchDir('import-'), 'users.json');
    await writeFile(file, JSON.stringify([
      { id: 900, username: 'fine', password: `pbkdf2_sha256$870000$salt$${Buffer.alloc(32).toString('base64')}`, is_active: true },
      { id: 901, username: 'hostile', password: `$argon2id$v=19$m=1048576,t=64,p=1$${salt}$${tag}`, is_active: true },
    ]));
    const run = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(process.execPath, [path.join(ROOT, 'scripts/run.js'), 'cli', 'importusers', file], { cwd: ROOT, env: { ...process.env, DATABASE_URL: t.config.databaseUrl, NODE_ENV: 'test' } }, (err, _out, stderr) =>
        resolve({ code: err ? Number(err.code) : 0, stderr }),
      ),
    );
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/user hostile: argon2 parameters m=1048576,t=64,p=1 exceed the cap/);
    const [rows] = await t.db.sequelize.query("SELECT username FROM users WHERE username IN ('fine', 'hostile')");
    expect(rows).toEqual([]);
  });
});
