// The ops CLI, run as a person runs it (`npm run cli -- …` is `node scripts/run.js cli …`), against a
// real database; logins go through the real app.
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { MIGRATIONS } from '../../app/db/migrations';
import { decodeJwt } from '../support/http';
import { ROOT } from '../support/images';
import { scratchDir } from '../support/scratch';
import { eventually, freshDatabase, startTestApp, type TestApp } from '../support/test-app';

let databaseUrl: string;
let t: TestApp;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[], options: { stdin?: string; env?: Record<string, string> } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [path.join(ROOT, 'scripts/run.js'), 'cli', ...args],
      { cwd: ROOT, env: { ...process.env, DATABASE_URL: databaseUrl, NODE_ENV: 'test', ...options.env } },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }),
    );
    child.stdin!.end(options.stdin ?? '');
  });
}

beforeAll(async () => {
  databaseUrl = await freshDatabase();
  const migrated = await cli(['migrate']);
  expect(migrated.stdout, migrated.stderr).toContain(`applied ${MIGRATIONS.length} migration(s)`);
  // Machine clients on, so the clients the CLI makes can be used.
  t = await startTestApp({ ISSUER: 'https://auth.example.test' }, { databaseUrl });
});
afterAll(() => t?.stop());

describe('migrate', () => {
  it('reports status, reverts and re-applies', async () => {
    expect((await cli(['migrate'])).stdout).toMatch(/no pending migrations/);
    const names = MIGRATIONS.map((m) => m.name);
    expect((await cli(['migrate', 'status'])).stdout).toBe(names.map((n) => `applied  ${n}\n`).join(''));
    const scratch = await freshDatabase();
    const env = { DATABASE_URL: scratch };
    expect((await cli(['migrate'], { env })).code).toBe(0);
    const down = await cli(['migrate', 'down', '--all'], { env });
    expect(down.stdout).toContain(`reverted ${[...names].reverse().join(', ')}`);
    expect((await cli(['migrate', 'status'], { env })).stdout).toBe(names.map((n) => `pending  ${n}\n`).join(''));
    expect((await cli(['migrate', 'up'], { env })).stdout).toContain(`applied ${names.length} migration(s)`);
    // One step down and up again.
    expect((await cli(['migrate', 'down'], { env })).stdout).toContain(`reverted ${names.at(-1)}`);
    expect((await cli(['migrate'], { env })).stdout).toContain('applied 1 migration(s)');
  });
});

/** A port nothing listens on (until the test makes something listen there). */
async function closedPort(): Promise<number> {
  const probe = net.createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** The CLI started, its output read as it comes: for a run the test acts on while it waits. */
function startCli(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, [path.join(ROOT, 'scripts/run.js'), 'cli', ...args], {
    cwd: ROOT,
    env: { ...process.env, NODE_ENV: 'test', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const run = { stdout: '', stderr: '', exit: once(child, 'exit').then(([code]) => code as number) };
  child.stdout.on('data', (d: Buffer) => (run.stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (run.stderr += d.toString()));
  onTestFinished(() => void child.kill());
  return run;
}

// docker-compose.yml starts migrate beside Postgres, not after its health check: `--wait` covers a
// database still starting (initdb on a new volume, recovery after a restore).
describe('migrate --wait', () => {
  it('waits for a database that is not listening yet, and migrates once it is', async () => {
    const target = new URL(await freshDatabase());
    const port = await closedPort();
    const url = new URL(target);
    url.hostname = '127.0.0.1';
    url.port = String(port);
    const run = startCli(['migrate', '--wait', '60'], { DATABASE_URL: url.toString() });
    // Refused at least once (it says so), then the database appears on that port.
    await expect.poll(() => run.stdout, { timeout: 30_000 }).toMatch(/^waiting up to 60 s for the database \(.*ECONNREFUSED.*\)$/m);
    const forward = net.createServer((client) => {
      const upstream = net.connect(Number(target.port), target.hostname);
      client.pipe(upstream).pipe(client);
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
    });
    forward.listen(port, '127.0.0.1');
    onTestFinished(() => new Promise<void>((resolve) => forward.close(() => resolve())));
    expect(await run.exit, run.stderr).toBe(0);
    expect(run.stdout).toContain(`applied ${MIGRATIONS.length} migration(s)`);
  });

  it('gives up at its deadline, with the reason', async () => {
    const url = new URL(await freshDatabase());
    url.hostname = '127.0.0.1';
    url.port = String(await closedPort());
    const run = startCli(['migrate', '--wait', '1'], { DATABASE_URL: url.toString() });
    expect(await run.exit).not.toBe(0);
    expect(run.stdout).toMatch(/^waiting up to 1 s for the database/m);
    expect(run.stderr).toMatch(/ECONNREFUSED/);
  });

  it('does not wait when the server refuses us: a wrong password is final', async () => {
    const url = new URL(await freshDatabase());
    url.password = 'not-the-password';
    const run = startCli(['migrate', '--wait', '60'], { DATABASE_URL: url.toString() });
    expect(await run.exit).not.toBe(0);
    expect(run.stdout).not.toMatch(/waiting/);
    expect(run.stderr).toMatch(/password authentication failed/);
  });

  it('takes whole seconds', async () => {
    for (const bad of ['0', '1.5', 'soon', '3601']) {
      const r = await cli(['migrate', '--wait', bad]);
      expect(r.code, bad).toBe(2);
      expect(r.stderr).toContain('--wait takes whole seconds from 1 to 3600');
    }
  });
});

describe('createuser', () => {
  it('creates active and inactive users from a password on stdin', async () => {
    const a = await cli(['createuser', 'alice', '--password-stdin'], { stdin: 'alice-password-1\n' });
    expect(a.code, a.stderr).toBe(0);
    expect(a.stdout).toMatch(/created user alice \(id \d+\)/);
    expect((await cli(['createuser', 'carol', '--password-stdin', '--inactive'], { stdin: 'carol-password-1' })).code).toBe(0);
    expect((await t.post('/api/token/', { username: 'alice', password: 'alice-password-1' })).status).toBe(200);
    expect((await t.post('/api/token/', { username: 'carol', password: 'carol-password-1' })).status).toBe(401);
  });

  it('refuses a taken username, a short password and a bad username, with exit code 1', async () => {
    const taken = await cli(['createuser', 'alice', '--password-stdin'], { stdin: 'another-password' });
    expect(taken.code).toBe(1);
    expect(taken.stderr).toMatch(/the username "alice" is taken/);
    const short = await cli(['createuser', 'zed', '--password-stdin'], { stdin: 'short' });
    expect(short.code).toBe(1);
    expect(short.stderr).toMatch(/at least 8 characters/);
    const bad = await cli(['createuser', 'has space', '--password-stdin'], { stdin: 'long-enough-pw' });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/a username is/);
  });

  it('refuses to prompt without a terminal', async () => {
    const r = await cli(['createuser', 'zed']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--password-stdin/);
  });

  it('normalises usernames (NFKC) on create and on login', async () => {
    expect((await cli(['createuser', 'ｂｅｎ', '--password-stdin'], { stdin: 'ben-password-1' })).stdout).toMatch(/created user ben /);
    expect((await t.post('/api/token/', { username: 'ben', password: 'ben-password-1' })).status).toBe(200);
    expect((await t.post('/api/token/', { username: 'ｂｅｎ', password: 'ben-password-1' })).status).toBe(200);
  });
});

describe('usage', () => {
  it('prints help, and exits 2 on unknown commands and options', async () => {
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    for (const c of [
      'migrate', 'createuser', 'changepassword', 'deactivate', 'importusers', 'flushexpiredtokens',
      'addgroup', 'removegroup', 'setstaff', 'createclient', 'rotateclientsecret', 'deleteclient', 'listclients',
    ]) {
      expect(help.stdout).toContain(c);
    }
    expect((await cli([])).code).toBe(2);
    const unknown = await cli(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command "frobnicate"/);
    expect((await cli(['deactivate', 'alice', '--force'])).code).toBe(2);
  });

  it('explains a bad DATABASE_URL', async () => {
    const r = await cli(['migrate'], { env: { DATABASE_URL: 'nonsense' } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/DATABASE_URL: expected a URL like postgres:/);
  });
});

describe('changepassword and deactivate', () => {
  it('changepassword ends every session and swaps the password', async () => {
    await cli(['createuser', 'dan', '--password-stdin'], { stdin: 'dan-password-1' });
    const pair = (await t.post('/api/token/', { username: 'dan', password: 'dan-password-1' })).json;
    const r = await cli(['changepassword', 'dan', '--password-stdin'], { stdin: 'dan-password-2\n' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/ended 1 session/);
    expect((await t.post('/api/token/refresh/', { refresh: pair.refresh })).status).toBe(401);
    expect((await t.post('/api/token/', { username: 'dan', password: 'dan-password-2' })).status).toBe(200);
    expect((await cli(['changepassword', 'nobody', '--password-stdin'], { stdin: 'whatever-123' })).stderr).toMatch(/no user "nobody"/);
  });

  it('deactivate refuses login and refresh', async () => {
    await cli(['createuser', 'eve', '--password-stdin'], { stdin: 'eve-password-1' });
    const pair = (await t.post('/api/token/', { username: 'eve', password: 'eve-password-1' })).json;
    expect((await cli(['deactivate', 'eve'])).stdout).toMatch(/deactivated eve; ended 1 session/);
    expect((await cli(['deactivate', 'eve'])).stdout).toMatch(/deactivated eve; ended 0 session/);
    expect((await t.post('/api/token/', { username: 'eve', password: 'eve-password-1' })).status).toBe(401);
    expect((await t.post('/api/token/refresh/', { refresh: pair.refresh })).json.code).toBe('no_active_account');
  });
});

describe('importusers', () => {
  // Django's own test vector: make_password("lètmein", "seasalt", "pbkdf2_sha256").
  const DJANGO_HASH = 'pbkdf2_sha256$870000$seasalt$wJSpLMQRQz0Dhj/pFpbyjMj71B2gUYp6HJS5AU+32Ac=';

  it('imports Django users with their ids; their passwords work and are upgraded to argon2id', async () => {
    const dir = await scratchDir('import-');
    const rows = path.join(dir, 'users.json');
    await writeFile(rows, JSON.stringify([
      { id: 501, username: 'django-user', password: DJANGO_HASH, is_active: true },
      { id: 502, username: 'django-gone', password: DJANGO_HASH, is_active: false },
    ]));
    const dumpdata = path.join(dir, 'dumpdata.json');
    await writeFile(dumpdata, JSON.stringify([
      { model: 'auth.user', pk: 503, fields: { username: 'django-dump', password: DJANGO_HASH, is_active: true, email: 'x@y' } },
    ]));
    const r = await cli(['importusers', rows]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/imported 2 user/);
    expect((await cli(['importusers', dumpdata])).stdout).toMatch(/imported 1 user/);
    const again = await cli(['importusers', rows]);
    expect(again.stdout).toMatch(/imported 0 user/);
    expect(again.stdout).toMatch(/skipped 2 existing/);

    const login = await t.post('/api/token/', { username: 'django-user', password: 'lètmein' });
    expect(login.status).toBe(200);
    expect(decodeJwt(login.json.access).payload.user_id).toBe(501);
    const user = await t.db.models.User.findByPk(501);
    expect(user!.passwordHash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    // The upgraded hash keeps working; the wrong password still fails; inactive stays refused.
    expect((await t.post('/api/token/', { username: 'django-user', password: 'lètmein' })).status).toBe(200);
    expect((await t.post('/api/token/', { username: 'django-user', password: 'letmein' })).status).toBe(401);
    expect((await t.post('/api/token/', { username: 'django-gone', password: 'lètmein' })).status).toBe(401);
    expect((await t.post('/api/token/', { username: 'django-dump', password: 'lètmein' })).status).toBe(200);
    // New users get ids after the imported ones.
    expect((await cli(['createuser', 'after-import', '--password-stdin'], { stdin: 'after-import-1' })).stdout).toMatch(/id 50[4-9]/);
  });

  it('refuses a file that is not a list of users, importing nothing', async () => {
    const dir = await scratchDir('import-');
    const file = path.join(dir, 'bad.json');
    await writeFile(file, JSON.stringify([{ id: 600, username: 'ok', password: 'x', is_active: true }, { id: 'x' }]));
    const r = await cli(['importusers', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/is not a list of Django users/);
    expect(await t.db.models.User.findByPk(600)).toBeNull();
    expect((await cli(['importusers', path.join(dir, 'missing.json')])).stderr).toMatch(/cannot read/);
  });
});

describe('importusers: is_staff, is_superuser and groups', () => {
  const DJANGO_HASH = 'pbkdf2_sha256$870000$seasalt$wJSpLMQRQz0Dhj/pFpbyjMj71B2gUYp6HJS5AU+32Ac=';
  const groupsOf = async (id: number) =>
    ((await t.db.models.User.findByPk(id, { include: [{ association: 'groups' }] }))!.groups ?? []).map((g) => g.name).sort();

  it('reads `dumpdata auth.group auth.user` (group ids), natural keys, and a plain list with group names', async () => {
    const dir = await scratchDir('import-');
    const dump = path.join(dir, 'dump.json');
    await writeFile(dump, JSON.stringify([
      { model: 'auth.group', pk: 3, fields: { name: 'editors', permissions: [] } },
      { model: 'auth.group', pk: 4, fields: { name: 'auditors', permissions: [12] } },
      { model: 'auth.group', pk: 5, fields: { name: 'nobody-yet', permissions: [] } },
      { model: 'auth.user', pk: 701, fields: { username: 'staffer', password: DJANGO_HASH, is_active: true, is_staff: true, is_superuser: false, groups: [3, 4], user_permissions: [] } },
      { model: 'auth.user', pk: 702, fields: { username: 'root', password: DJANGO_HASH, is_active: true, is_staff: true, is_superuser: true, groups: [] } },
    ]));
    const r = await cli(['importusers', dump]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/imported 2 user\(s\)\ncreated 3 group\(s\)/);
    expect(await groupsOf(701)).toEqual(['auditors', 'editors']);
    expect(await t.db.models.User.findByPk(702)).toMatchObject({ isStaff: true, isSuperuser: true });
    expect(await t.db.models.Group.count({ where: { name: 'nobody-yet' } })).toBe(1);

    const natural = path.join(dir, 'natural.json');
    await writeFile(natural, JSON.stringify([
      { model: 'auth.user', pk: 703, fields: { username: 'natural', password: DJANGO_HASH, is_active: true, is_staff: false, is_superuser: false, groups: [['editors'], ['readers']] } },
    ]));
    expect((await cli(['importusers', natural])).stdout).toMatch(/imported 1 user\(s\)\ncreated 1 group\(s\)/);
    expect(await groupsOf(703)).toEqual(['editors', 'readers']);

    const list = path.join(dir, 'list.json');
    await writeFile(list, JSON.stringify([{ id: 704, username: 'listed', password: DJANGO_HASH, is_active: true, is_staff: true, groups: ['readers'] }]));
    expect((await cli(['importusers', list])).code).toBe(0);
    expect(await groupsOf(704)).toEqual(['readers']);
    expect(await t.db.models.User.findByPk(704)).toMatchObject({ isStaff: true, isSuperuser: false });
  });

  it('refuses a dump whose users name groups it does not have, importing nothing', async () => {
    const dir = await scratchDir('import-');
    const file = path.join(dir, 'partial.json');
    await writeFile(file, JSON.stringify([
      { model: 'auth.user', pk: 710, fields: { username: 'orphan', password: DJANGO_HASH, is_active: true, groups: [99] } },
    ]));
    const r = await cli(['importusers', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/user orphan is in group 99, which the file does not have: dump the groups alongside/);
    expect(await t.db.models.User.findByPk(710)).toBeNull();
  });
});

describe('addgroup, removegroup, setstaff', () => {
  beforeAll(async () => {
    await t.user('gus', 'gus-password-1');
  });

  it('addgroup and removegroup change the groups the access tokens read', async () => {
    const added = await cli(['addgroup', 'gus', 'ops team']);
    expect(added.code, added.stderr).toBe(0);
    expect(added.stdout).toMatch(/added gus in group ops team \(new group\)/);
    expect((await cli(['addgroup', 'gus', 'ops team'])).stdout).toMatch(/already: gus in group ops team/);
    const user = async () => t.db.models.User.findOne({ where: { username: 'gus' }, include: [{ association: 'groups' }] });
    expect((await user())!.groups!.map((g) => g.name)).toEqual(['ops team']);
    expect((await cli(['removegroup', 'gus', 'ops team'])).stdout).toMatch(/removed gus from group ops team/);
    expect((await user())!.groups).toEqual([]);
    expect((await cli(['removegroup', 'gus', 'no-such'])).stderr).toMatch(/no group "no-such"/);
    expect((await cli(['addgroup', 'gus'])).code).toBe(2);
  });

  it('setstaff sets and clears is_staff and is_superuser', async () => {
    expect((await cli(['setstaff', 'gus'])).stdout).toMatch(/gus: is_staff true, is_superuser false/);
    expect((await cli(['setstaff', 'gus', '--superuser'])).stdout).toMatch(/gus: is_staff true, is_superuser true/);
    expect((await cli(['setstaff', 'gus', '--superuser', '--off'])).stdout).toMatch(/gus: is_staff true, is_superuser false/);
    expect((await cli(['setstaff', 'gus', '--off'])).stdout).toMatch(/gus: is_staff false, is_superuser false/);
    expect((await cli(['setstaff', 'nobody'])).stderr).toMatch(/no user "nobody"/);
  });
});

describe('machine clients', () => {
  const grant = (id: string, secret: string, scope?: string) =>
    t.request('POST', '/api/oauth/token/', {
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: id, client_secret: secret, ...(scope ? { scope } : {}) }).toString(),
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
  const credentials = (stdout: string) => {
    const m = /^client_id: (\S+)\nclient_secret: (\S+)\n$/.exec(stdout);
    expect(m, stdout).not.toBeNull();
    return { id: m![1]!, secret: m![2]! };
  };

  it('createclient prints the id and the secret once; listclients shows the client, never the secret', async () => {
    const r = await cli(['createclient', 'billing', '--scopes', 'things:read,things:write']);
    expect(r.code, r.stderr).toBe(0);
    const { id, secret } = credentials(r.stdout);
    expect(r.stderr).toMatch(/created client billing \(scopes: things:read things:write\); the secret is shown only now/);
    const token = await grant(id, secret, 'things:read');
    expect(token.status, token.text).toBe(200);
    expect(token.json.scope).toBe('things:read');
    const list = await cli(['listclients']);
    expect(list.stdout).toMatch(new RegExp(`^billing\t${id}\tthings:read things:write\tcreated `, 'm'));
    expect(list.stdout).not.toContain(secret);
    const stored = await t.db.models.OAuthClient.findByPk(id);
    expect(stored!.secretHash).not.toContain(secret);
    expect((await cli(['createclient', 'billing'])).stderr).toMatch(/a client named "billing" exists/);
    expect((await cli(['createclient', 'bad', '--scopes', 'a"b'])).stderr).toMatch(/"a"b" is not a scope/);
    expect((await cli(['createclient', 'has space'])).code).toBe(1);
  });

  it('rotateclientsecret and deleteclient stop the old secret and the tokens at once', async () => {
    const { id, secret } = credentials((await cli(['createclient', 'reports', '--scopes', 'r'])).stdout);
    const before = (await grant(id, secret)).json.access_token as string;
    expect((await t.post('/api/token/verify/', { token: before })).status).toBe(200);
    const rotated = await cli(['rotateclientsecret', 'reports']);
    expect(rotated.code, rotated.stderr).toBe(0);
    const next = credentials(rotated.stdout);
    expect(next.id).toBe(id);
    expect((await grant(id, secret)).status).toBe(401);
    await eventually(async () => (await t.post('/api/token/verify/', { token: before })).status === 400);
    const after = (await grant(id, next.secret)).json.access_token as string;
    expect((await t.post('/api/token/verify/', { token: after })).status).toBe(200);

    const deleted = await cli(['deleteclient', 'reports']);
    expect(deleted.stdout).toMatch(new RegExp(`deleted client reports \\(${id}\\); its tokens stopped`));
    expect((await grant(id, next.secret)).status).toBe(401);
    await eventually(async () => (await t.post('/api/token/verify/', { token: after })).status === 400);
    expect((await cli(['deleteclient', 'reports'])).stderr).toMatch(/no client "reports"/);
    expect((await cli(['listclients'])).stdout).not.toContain('reports');
  });
});

describe('flushexpiredtokens', () => {
  it('deletes expired refresh tokens and the families they leave empty, keeping live ones', async () => {
    await cli(['createuser', 'flo', '--password-stdin'], { stdin: 'flo-password-1' });
    // Two sessions minted two days ago (the app's clock moved back), one now.
    t.clock.advance(-2 * 86400);
    const old1 = (await t.post('/api/token/', { username: 'flo', password: 'flo-password-1' })).json;
    const old2 = (await t.post('/api/token/', { username: 'flo', password: 'flo-password-1' })).json;
    await t.post('/api/token/refresh/', { refresh: old2.refresh }); // a rotated chain of two
    t.clock.advance(2 * 86400);
    const live = (await t.post('/api/token/', { username: 'flo', password: 'flo-password-1' })).json;
    const liveJti = decodeJwt(live.refresh).payload.jti as string;
    const before = await t.db.models.RefreshToken.count();

    const r = await cli(['flushexpiredtokens']);
    expect(r.code, r.stderr).toBe(0);
    const m = /deleted (\d+) expired refresh token\(s\), (\d+) empty or long-revoked famil/.exec(r.stdout);
    expect(Number(m![1])).toBeGreaterThanOrEqual(3);
    expect(Number(m![2])).toBeGreaterThanOrEqual(2);
    expect(await t.db.models.RefreshToken.count()).toBe(before - Number(m![1]));
    expect(await t.db.models.RefreshToken.findByPk(liveJti)).not.toBeNull();
    for (const old of [old1, old2]) {
      expect(await t.db.models.RefreshToken.findByPk(decodeJwt(old.refresh).payload.jti)).toBeNull();
    }
    expect((await t.post('/api/token/refresh/', { refresh: live.refresh })).status).toBe(200);
    expect((await cli(['flushexpiredtokens'])).stdout).toMatch(/deleted 0 expired refresh token\(s\), 0 empty or long-revoked families and 0 old cutoff/);
  });
});
