// Ops commands, run as `npm run cli -- <command>` on the host or inside the app container.
// Exit codes: 0 done, 1 the command failed (the message says why), 2 a usage error.
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { ClientError, createClient, deleteClient, flushClientCutoffs, listClients, parseScopes, rotateClientSecret } from './auth/clients';
import { flushExpired } from './auth/families';
import { revocationWindowMs } from './auth/revocations';
import { ALGORITHMS, generateKey, isHmac, NO_EDDSA, type Algorithm } from './auth/keys';
import { flushThrottle } from './auth/throttle';
import { announceEndedSessions } from './auth/sessions';
import { createPasswordHasher, storedHashProblem } from './auth/passwords';
import {
  UserError,
  addToGroup,
  changePassword,
  createUser,
  deactivateUser,
  importUsers,
  removeFromGroup,
  setStaff,
  type DjangoUser,
} from './auth/users';
import { ConfigError, loadConfig, type WebhookEndpoint } from './config';
import { errorText } from './db/availability';
import { createDatabase, type Database } from './db/database';
import { createMigrator, describeMigrationFailure, withMigrationLock } from './db/migrator';
import { expireOverdue, pendingStats, pruneOutbox, retryEvents, statusByEndpoint } from './events/admin';
import { clientEventRecorder } from './events/client-events';
import { outboxSettings } from './events/outbox';
import { readPassword } from './prompt';

const HELP = `Usage: npm run cli -- <command> [options]

Commands:
  migrate [up] [--wait SECONDS]    apply pending migrations (also: npm run migrate); --wait: first
                                   wait up to SECONDS for a database that is still starting
  migrate down [--all]             revert the last migration (or all of them)
  migrate status                   list applied and pending migrations
  createuser <username> [--password-stdin] [--inactive]
                                   create a user; prompts for the password unless --password-stdin
  changepassword <username> [--password-stdin]
                                   set a new password; ends every session of the user
  deactivate <username>            refuse the user's logins and refreshes; ends every session
  importusers <file>               import users from a JSON export of Django's auth_user: rows
                                   {id, username, password, is_active[, is_staff, is_superuser, groups]}
                                   (groups by name), or \`manage.py dumpdata auth.group auth.user\`
                                   (group ids; or --natural-foreign, groups by name); Django password
                                   hashes (every Django hasher) keep working and become argon2id at the
                                   next login; md5/sha1 digests are reported as weak
  addgroup <username> <group>      put a user in a group (made if new); access tokens carry it from
                                   the next login or refresh (ACCESS_TOKEN_CLAIMS=groups)
  removegroup <username> <group>   take a user out of a group
  setstaff <username> [--superuser] [--off]
                                   set is_staff (with --superuser: is_staff and is_superuser); --off
                                   clears is_staff and is_superuser (with --superuser: is_superuser)
  createclient <name> [--scopes a,b]
                                   register a machine client (OAuth 2.0 client credentials) that may
                                   be granted these scopes; prints its client_id and client_secret
                                   (the secret only this once)
  rotateclientsecret <name>        a new secret; the old one and the client's tokens stop at once
  deleteclient <name>              delete a client; its tokens stop at once
  listclients                      the clients, their ids and scopes
  flushexpiredtokens               delete expired refresh tokens and families left with none
                                   (run it daily, as simplejwt's command of the same name); also
                                   announces sessions that reached their end and prunes delivered
                                   webhooks
  webhooks status                  security-event webhooks: pending, failed, oldest pending age
  webhooks retry [--failed]        send pending webhooks now (--failed: failed ones again too)
  webhooks secret                  make a WEBHOOK_SECRET (whsec_…)
  genkey <HS256|HS384|HS512|RS256|RS384|RS512|PS256|PS384|PS512|ES256|ES384|ES512> [--out FILE]
                                   make a signing key (the PEM or secret goes to FILE, mode 0600,
                                   or to stdout) and print its kid and JWK; see README, "Keys"

Reads DATABASE_URL (and the rest of the configuration) from the environment.
`;

class UsageError extends Error {}

const groupName = z.string().min(1).max(150);
// A user's group: an id of an auth.group row of the same dump, a natural key (["name"], dumpdata
// --natural-foreign) or, in a plain list, its name.
const groupRef = z.union([z.number().int().positive(), groupName, z.tuple([groupName])]);
const djangoRow = z.object({
  id: z.number().int().positive().max(2_147_483_647),
  username: z.string().min(1).max(150),
  password: z.string().max(255),
  is_active: z.boolean(),
  is_staff: z.boolean().default(false),
  is_superuser: z.boolean().default(false),
  groups: z.array(groupRef).default([]),
});
// `manage.py dumpdata auth.user` wraps each row: {model, pk, fields: {...}}.
const dumpdataRow = z
  .object({ model: z.literal('auth.user'), pk: z.number(), fields: z.object({}).passthrough() })
  .transform((r) => ({ ...r.fields, id: r.pk }));
// `dumpdata auth.group`: {model, pk, fields: {name, permissions}} (no pk with --natural-primary).
const dumpdataGroup = z.object({ model: z.literal('auth.group'), pk: z.number().int().positive().optional(), fields: z.object({ name: groupName }).passthrough() });
const importFile = z.array(
  z.union([
    dumpdataGroup,
    z.union([dumpdataRow.pipe(djangoRow), djangoRow]).superRefine((row, ctx) => {
      // A hash that would make every login of this user spin for seconds is refused here, not at login.
      const problem = storedHashProblem(row.password);
      if (problem) ctx.addIssue({ code: 'custom', path: ['password'], message: `user ${row.username}: ${problem}` });
    }),
  ]),
);

type ImportRow = z.infer<typeof importFile>[number];
const isGroupRow = (row: ImportRow): row is z.infer<typeof dumpdataGroup> => 'model' in row;

/** The users with their groups by name, and every group the file names. */
function resolveGroups(rows: ImportRow[], file: string): { users: DjangoUser[]; groups: string[] } {
  const groupRows = rows.filter(isGroupRow);
  const byId = new Map(groupRows.flatMap((g) => (g.pk !== undefined ? [[g.pk, g.fields.name] as const] : [])));
  const users = rows.filter((r): r is z.infer<typeof djangoRow> => !isGroupRow(r));
  return {
    groups: groupRows.map((g) => g.fields.name),
    users: users.map(({ groups, ...user }) => ({
      ...user,
      groups: groups.map((ref) => {
        if (Array.isArray(ref)) return ref[0];
        if (typeof ref === 'string') return ref;
        const name = byId.get(ref);
        if (name === undefined) {
          throw new UserError(
            `${file}: user ${user.username} is in group ${ref}, which the file does not have: dump the groups alongside ` +
              '(manage.py dumpdata auth.group auth.user) or name them (--natural-foreign)',
          );
        }
        return name;
      }),
    })),
  };
}

async function parseImportFile(file: string): Promise<{ users: DjangoUser[]; groups: string[] }> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new UserError(`cannot read ${file}: ${(err as Error).message}`);
  }
  const parsed = importFile.safeParse(json);
  if (!parsed.success) {
    const problems = parsed.error.issues.slice(0, 5).map((i) => `  at [${i.path.join('].')}]: ${i.message}`);
    throw new UserError(`${file} is not a list of Django users:\n${problems.join('\n')}`);
  }
  return resolveGroups(parsed.data, file);
}

async function password(stdin: boolean): Promise<string> {
  if (stdin) {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  }
  if (!process.stdin.isTTY) throw new UsageError('no terminal to ask for the password on: pipe it in with --password-stdin');
  const first = await readPassword('Password: ');
  const again = await readPassword('Password (again): ');
  if (first !== again) throw new UserError('the two passwords differ');
  return first;
}

type Out = (line: string) => void;

async function genkey(alg: string, file: string | undefined, out: Out): Promise<number> {
  if (alg === 'EdDSA') throw new UsageError(NO_EDDSA);
  if (!(ALGORITHMS as readonly string[]).includes(alg)) throw new UsageError(`genkey takes one of ${ALGORITHMS.join(', ')}`);
  const key = generateKey(alg as Algorithm);
  const hmac = isHmac(key.alg);
  const info = [
    `kid: ${key.kid}`,
    hmac
      ? `set ALGORITHM=${key.alg}, SIGNING_KEY_FILE (or SIGNING_KEY) and SIGNING_KEY_ID=${key.kid}`
      : `set ALGORITHM=${key.alg} and SIGNING_KEY_FILE (or SIGNING_KEY)`,
    // An HMAC key's JWK is the secret itself: never printed, only described.
    hmac
      ? `its JWK, for a VERIFYING_KEYS_FILE once this key retires: {"kty":"oct","kid":"${key.kid}","alg":"${key.alg}","k":"<the key, base64url>"} (k: tr -d '\\n' < KEYFILE | basenc --base64url | tr -d =)`
      : `public JWK, for a VERIFYING_KEYS_FILE once this key retires: ${JSON.stringify(key.jwk)}`,
  ];
  if (file) {
    await writeFile(file, `${key.signingKey}\n`, { mode: 0o600, flag: 'wx' }).catch((err: NodeJS.ErrnoException) => {
      throw new UserError(err.code === 'EEXIST' ? `${file} exists: not overwriting a key` : `cannot write ${file}: ${err.message}`);
    });
    out(`wrote ${file}`);
    for (const line of info) out(line);
  } else {
    // stdout carries only the key, so `genkey ES256 > key.pem` works; the rest goes to stderr.
    out(key.signingKey.trimEnd());
    for (const line of info) process.stderr.write(`${line}\n`);
  }
  return 0;
}

/** --wait's value: whole seconds, 1 to 3600. */
function waitSeconds(raw: string): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < 1 || n > 3600) throw new UsageError(`--wait takes whole seconds from 1 to 3600 (got "${raw}")`);
  return n;
}

async function migrate(db: Database, args: string[], all: boolean, out: Out): Promise<void> {
  const migrator = createMigrator(db.sequelize, { info: out });
  const [action = 'up'] = args;
  await withMigrationLock(db.sequelize, async () => {
    try {
      await migrateAction(migrator, action, all, out);
    } catch (err) {
      const failure = describeMigrationFailure(err);
      throw failure ? new UserError(failure) : err;
    }
  });
}

async function migrateAction(migrator: ReturnType<typeof createMigrator>, action: string, all: boolean, out: Out): Promise<void> {
  switch (action) {
    case 'up': {
      const done = await migrator.up();
      out(done.length ? `applied ${done.length} migration(s)` : 'no pending migrations');
      return;
    }
    case 'down': {
      const undone = await migrator.down(all ? { to: 0 } : undefined);
      out(undone.length ? `reverted ${undone.map((m) => m.name).join(', ')}` : 'nothing to revert');
      return;
    }
    case 'status': {
      for (const m of await migrator.executed()) out(`applied  ${m.name}`);
      for (const m of await migrator.pending()) out(`pending  ${m.name}`);
      return;
    }
    default:
      throw new UsageError(`unknown migrate action "${action}" (up, down, status)`);
  }
}

async function webhooks(db: Database, endpoints: WebhookEndpoint[], args: string[], failed: boolean, out: Out): Promise<void> {
  const [action = 'status'] = args;
  switch (action) {
    case 'status': {
      const s = await pendingStats(db, new Date());
      out(`pending: ${s.pending}${s.pending ? ` (oldest ${Math.round(s.oldestPendingSeconds)} s)` : ''}`);
      out(`failed: ${s.failed}`);
      for (const e of await statusByEndpoint(db, endpoints)) {
        out(`receiver ${e.receiver} [${e.endpoint}]: ${e.pending} pending, ${e.failed} failed, ${e.delivered} delivered (not yet pruned)`);
      }
      if (endpoints.length === 0) out('WEBHOOK_URL is not set: no events are recorded');
      return;
    }
    case 'retry': {
      const r = await retryEvents(db, new Date(), { failed });
      out(`${r.pending} pending webhook(s) due now${failed ? `, ${r.failed} failed one(s) pending again` : ''}`);
      return;
    }
    default:
      throw new UsageError(`unknown webhooks action "${action}" (status, retry, secret)`);
  }
}

export async function runCli(argv: string[], out: Out = (l) => process.stdout.write(`${l}\n`)): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    out(HELP);
    return command ? 0 : 2;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: true,
      options: {
        'password-stdin': { type: 'boolean' },
        inactive: { type: 'boolean' },
        all: { type: 'boolean' },
        failed: { type: 'boolean' },
        out: { type: 'string' },
        scopes: { type: 'string' },
        superuser: { type: 'boolean' },
        off: { type: 'boolean' },
        wait: { type: 'string' },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values: flags, positionals } = parsed;
  const one = (what: string): string => {
    if (positionals.length !== 1) throw new UsageError(`${command} takes one ${what}`);
    return positionals[0]!;
  };
  const two = (what: string): [string, string] => {
    if (positionals.length !== 2) throw new UsageError(`${command} takes ${what}`);
    return [positionals[0]!, positionals[1]!];
  };
  const none = () => {
    if (positionals.length !== 0) throw new UsageError(`${command} takes no arguments`);
  };

  if (command === 'genkey') return genkey(one('algorithm'), flags.out, out);
  if (command === 'webhooks' && positionals[0] === 'secret') {
    // Standard Webhooks: whsec_ and the base64 of 24 to 64 random bytes.
    out(`whsec_${randomBytes(32).toString('base64')}`);
    return 0;
  }

  const { config } = loadConfig(process.env);
  const db = createDatabase({
    url: config.databaseUrl,
    poolMax: 2,
    applicationName: `koa-auth-stack cli ${command}`,
    outbox: outboxSettings(config.webhooks),
  });
  // All the CPUs: an import wraps each weak digest in argon2id.
  const hasher = createPasswordHasher(undefined, { concurrency: availableParallelism() });
  const now = () => new Date();
  try {
    switch (command) {
      case 'migrate':
        if (flags.wait !== undefined) await db.reachable(waitSeconds(flags.wait), (reason) => out(`waiting up to ${flags.wait} s for the database (${reason})`));
        await migrate(db, positionals, flags.all === true, out);
        break;
      case 'createuser': {
        const username = one('username');
        const user = await createUser(db, hasher, {
          username,
          password: await password(flags['password-stdin'] === true),
          isActive: flags.inactive !== true,
        });
        out(`created user ${user.username} (id ${user.id}${flags.inactive ? ', inactive' : ''})`);
        break;
      }
      case 'changepassword': {
        const username = one('username');
        const r = await changePassword(db, hasher, username, await password(flags['password-stdin'] === true), now());
        out(`password changed for ${username}; ended ${r.revokedSessions} session(s)`);
        break;
      }
      case 'deactivate': {
        const username = one('username');
        const r = await deactivateUser(db, username, now());
        out(`deactivated ${username}; ended ${r.revokedSessions} session(s)`);
        break;
      }
      case 'importusers': {
        const { users, groups } = await parseImportFile(one('file'));
        const r = await importUsers(db, hasher, users, { groups });
        out(`imported ${r.created} user(s)`);
        if (r.groupsCreated) out(`created ${r.groupsCreated} group(s)`);
        const kinds = Object.entries(r.byKind).sort(([a], [b]) => a.localeCompare(b));
        if (kinds.length) out(`  by hasher: ${kinds.map(([kind, n]) => `${kind} ${n}`).join(', ')}`);
        if (r.weak.length) {
          out(`weak: ${r.weak.length} user(s) with an md5/sha1 digest (stored wrapped in argon2id, upgraded at the next login; the digest was weak wherever it was kept before: consider a password reset): ${r.weak.join(', ')}`);
        }
        if (r.unusable.length) out(`cannot log in: ${r.unusable.length} user(s) with an unusable or unsupported hash (set a password with changepassword): ${r.unusable.join(', ')}`);
        if (r.skipped.length) out(`skipped ${r.skipped.length} existing (same id or username): ${r.skipped.join(', ')}`);
        break;
      }
      case 'addgroup': {
        const [username, group] = two('a username and a group');
        const r = await addToGroup(db, username, group);
        out(`${r.added ? 'added' : 'already:'} ${username} in group ${group}${r.groupCreated ? ' (new group)' : ''}`);
        break;
      }
      case 'removegroup': {
        const [username, group] = two('a username and a group');
        out(`${(await removeFromGroup(db, username, group)) ? 'removed' : 'was not in it:'} ${username} from group ${group}`);
        break;
      }
      case 'setstaff': {
        const username = one('username');
        const on = flags.off !== true;
        const r = await setStaff(db, username, flags.superuser ? { isSuperuser: on, ...(on ? { isStaff: true } : {}) } : { isStaff: on, ...(on ? {} : { isSuperuser: false }) });
        out(`${username}: is_staff ${r.isStaff}, is_superuser ${r.isSuperuser}`);
        break;
      }
      case 'createclient': {
        const name = one('client name');
        const r = await createClient(db, { name, scopes: flags.scopes === undefined ? [] : parseScopes(flags.scopes), now: now() });
        out(`client_id: ${r.client.clientId}`);
        out(`client_secret: ${r.secret}`);
        process.stderr.write(`created client ${r.client.name} (scopes: ${r.client.scopes.join(' ') || 'none'}); the secret is shown only now\n`);
        if (!config.clients) process.stderr.write('note: machine clients are off until ISSUER is an https URL (README, "Machine clients")\n');
        break;
      }
      case 'rotateclientsecret': {
        const r = await rotateClientSecret(db, one('client name'), Date.now);
        out(`client_id: ${r.client.clientId}`);
        out(`client_secret: ${r.secret}`);
        process.stderr.write(`new secret for ${r.client.name}; the old secret and every token issued with it stopped\n`);
        break;
      }
      case 'deleteclient': {
        const r = await deleteClient(db, one('client name'), Date.now, clientEventRecorder(db, Date.now));
        out(`deleted client ${r.name} (${r.clientId}); its tokens stopped`);
        break;
      }
      case 'listclients': {
        none();
        for (const c of await listClients(db)) {
          out(`${c.name}\t${c.clientId}\t${c.scopes.join(' ') || '-'}\tcreated ${c.createdAt.toISOString()}\tsecret from ${c.secretChangedAt.toISOString()}`);
        }
        break;
      }
      case 'flushexpiredtokens': {
        // Sessions that reached their end are announced before their rows can go.
        const ended = await announceEndedSessions(db, now());
        if (ended) out(`announced ${ended} session(s) that reached their end`);
        const r = await flushExpired(db, now(), revocationWindowMs(config.jwt));
        const stale = await flushThrottle(db, now(), config.throttle);
        const clientCutoffs = await flushClientCutoffs(db, now(), revocationWindowMs(config.jwt));
        if (clientCutoffs) out(`deleted ${clientCutoffs} old client cutoff(s)`);
        out(`deleted ${r.tokens} expired refresh token(s), ${r.families} empty or long-revoked famil${r.families === 1 ? 'y' : 'ies'} and ${r.cutoffs} old cutoff(s)`);
        if (stale) out(`deleted ${stale} stale throttle record(s)`);
        const overdue = await expireOverdue(db, now(), config.webhooks.maxAgeMs);
        const pruned = await pruneOutbox(db, now());
        if (pruned.delivered || pruned.failed || overdue) {
          out(`deleted ${pruned.delivered} delivered and ${pruned.failed} old failed webhook(s)${overdue ? `; ${overdue} overdue marked failed` : ''}`);
        }
        break;
      }
      case 'webhooks':
        await webhooks(db, config.webhooks.endpoints, positionals, flags.failed === true, out);
        break;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
    return 0;
  } finally {
    await hasher.close();
    await db.close();
  }
}

export function main(): void {
  runCli(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      if (err instanceof UsageError) {
        process.stderr.write(`error: ${err.message}\n(see: npm run cli -- --help)\n`);
        process.exit(2);
      }
      const known = err instanceof UserError || err instanceof ConfigError || err instanceof ClientError;
      const message = errorText(err);
      process.stderr.write(`error: ${known ? message : `${message} (is DATABASE_URL right and the database up?)`}\n`);
      process.exit(1);
    },
  );
}

if (require.main === module) main();
