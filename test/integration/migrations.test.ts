// Migrations are transactional: one that fails leaves the schema as it was and stays pending, the
// migrate job says which one and why, and the app refuses to start on a schema its release is ahead
// of. Against a real Postgres, with the CLI and the server run as an operator runs them.
import { execFile, spawn } from 'node:child_process';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../app/db/database';
import { createMigrator, describeMigrationFailure } from '../../app/db/migrator';
import { MIGRATIONS, pendingMigrations, type Migration } from '../../app/db/migrations';
import { ROOT } from '../support/images';
import { freshDatabase, TEST_SIGNING_KEY } from '../support/test-app';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

const env = (databaseUrl: string) => ({ ...process.env, DATABASE_URL: databaseUrl, NODE_ENV: 'test', SIGNING_KEY: TEST_SIGNING_KEY });

function cli(databaseUrl: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(ROOT, 'scripts/run.js'), 'cli', ...args], { cwd: ROOT, env: env(databaseUrl) }, (err, stdout, stderr) =>
      resolve({ code: err ? Number(err.code) : 0, stdout, stderr }),
    );
  });
}

/** Starts the server as PM2 would, until it says it listens or exits; then stops it. */
function serve(databaseUrl: string): Promise<{ listening: boolean; code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'scripts/run.js'), 'server'], {
      cwd: ROOT,
      env: { ...env(databaseUrl), PORT: '0', HOST: '127.0.0.1', METRICS_PORT: '0', DB_CONNECT_TIMEOUT: '10s' },
    });
    let output = '';
    let listening = false;
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (!listening && output.includes('"msg":"listening"')) {
        listening = true;
        child.kill('SIGTERM');
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', reject);
    child.on('exit', (code) => resolve({ listening, code, output }));
  });
}

const names = MIGRATIONS.map((m) => m.name);
let admin: pg.Client;
const databases: Database[] = [];

async function migrated(to?: string): Promise<{ url: string; db: Database }> {
  const url = await freshDatabase();
  const db = createDatabase({ url, poolMax: 2 });
  databases.push(db);
  await createMigrator(db.sequelize, { info: () => {} }).up(to ? { to } : {});
  return { url, db };
}

async function exists(db: Database, sql: string): Promise<boolean> {
  const [rows] = await db.sequelize.query(`SELECT (${sql}) IS NOT NULL AS found`);
  return (rows as { found: boolean }[])[0]!.found;
}
const column = (db: Database, table: string, name: string) =>
  exists(db, `SELECT 1 FROM information_schema.columns WHERE table_name = '${table}' AND column_name = '${name}'`);

beforeAll(async () => {
  admin = new pg.Client({ connectionString: await freshDatabase() });
  await admin.connect();
});
afterAll(async () => {
  await Promise.all(databases.map((d) => d.close()));
  await admin?.end();
});

describe('a failing migration', () => {
  it('rolls back all of its statements and is still pending; the ones before it stay applied', async () => {
    const { db } = await migrated();
    // Two statements in two calls: without a transaction around the migration the first would stay.
    const probe: Migration = {
      name: '0900_probe',
      async up({ context: sequelize }) {
        await sequelize.query('CREATE TABLE probe_kept (id integer)');
      },
    };
    const broken: Migration = {
      name: '0901_broken',
      async up({ context: sequelize }) {
        await sequelize.query('CREATE TABLE half_done (id integer)');
        await sequelize.query('ALTER TABLE users ADD COLUMN nickname text');
        await sequelize.query('ALTER TABLE no_such_table ADD COLUMN x integer');
      },
    };
    const migrator = createMigrator(db.sequelize, { info: () => {} }, { migrations: [...MIGRATIONS, probe, broken] });
    const err = await migrator.up().then(
      () => undefined,
      (e: unknown) => e,
    );
    const message = describeMigrationFailure(err);
    expect(message).toMatch(/^migration 0901_broken \(up\) failed: relation "no_such_table" does not exist\. Its transaction was rolled back/);
    expect(message).toMatch(/still pending$/);
    expect(await exists(db, `SELECT to_regclass('half_done')`)).toBe(false);
    expect(await column(db, 'users', 'nickname')).toBe(false);
    expect(await exists(db, `SELECT to_regclass('probe_kept')`)).toBe(true);
    expect((await migrator.pending()).map((m) => m.name)).toEqual(['0901_broken']);
    expect(await pendingMigrations(db.sequelize, [...MIGRATIONS, probe, broken])).toEqual(['0901_broken']);
  });

  it('gives up on a table lock it cannot get soon (the serving release keeps the table), rolled back', async () => {
    const { url, db } = await migrated();
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    try {
      // A long read of users, as a request of the serving release would hold it.
      await holder.query('BEGIN');
      await holder.query('SELECT count(*) FROM users');
      const addColumn: Migration = {
        name: '0902_add_column',
        async up({ context: sequelize }) {
          await sequelize.query('CREATE TABLE beside (id integer)');
          await sequelize.query('ALTER TABLE users ADD COLUMN nickname text');
        },
      };
      const migrator = createMigrator(db.sequelize, { info: () => {} }, { migrations: [...MIGRATIONS, addColumn], lockTimeoutMs: 200 });
      const err = await migrator.up().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(describeMigrationFailure(err)).toMatch(/^migration 0902_add_column \(up\) failed: canceling statement due to lock timeout \(it waited too long/);
      expect(await exists(db, `SELECT to_regclass('beside')`)).toBe(false);
      await holder.query('COMMIT');
      expect((await migrator.up()).map((m) => m.name)).toEqual(['0902_add_column']);
      expect(await column(db, 'users', 'nickname')).toBe(true);
    } finally {
      await holder.end();
    }
  });

  it('the migrate job names it and exits 1; the app refuses to start until it is applied', async () => {
    const { url, db } = await migrated('0004_sessions');
    // 0005 creates this table after its other changes: here it fails there.
    await db.sequelize.query('CREATE TABLE auth_known_addresses (key text)');
    const r = await cli(url, ['migrate']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: migration 0005_hardening \(up\) failed: relation "auth_known_addresses" already exists\. Its transaction was rolled back: the schema is as it was before it, and it is still pending\n$/);
    // 0005's earlier statements are gone with it.
    expect(await column(db, 'users', 'token_generation')).toBe(false);
    expect(await exists(db, `SELECT to_regproc('auth_now')`)).toBe(false);
    const missing = names.slice(4); // 0005 and any after it
    expect((await cli(url, ['migrate', 'status'])).stdout).toBe([...names.slice(0, 4).map((n) => `applied  ${n}`), ...missing.map((n) => `pending  ${n}`), ''].join('\n'));

    const refused = await serve(url);
    expect(refused.listening).toBe(false);
    expect(refused.code).toBe(1);
    expect(refused.output).toContain(`failed to start: the database lacks migration${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of this release: run the migrate job first`);

    await db.sequelize.query('DROP TABLE auth_known_addresses');
    expect((await cli(url, ['migrate'])).stdout).toContain(`applied ${missing.length} migration(s)`);
    const started = await serve(url);
    expect(started.listening, started.output).toBe(true);
  });

  it('a database that never migrated: the app names every migration it lacks', async () => {
    const refused = await serve(await freshDatabase());
    expect(refused.listening).toBe(false);
    expect(refused.output).toContain(`the database lacks migrations ${names.join(', ')} of this release`);
  });
});

describe('a database ahead of the release', () => {
  it('is fine for the previous release (it serves while the next release expands the schema)', async () => {
    const { db } = await migrated();
    const previousRelease = MIGRATIONS.slice(0, -1);
    expect(await pendingMigrations(db.sequelize, previousRelease)).toEqual([]);
    expect(await pendingMigrations(db.sequelize)).toEqual([]);
  });
});
