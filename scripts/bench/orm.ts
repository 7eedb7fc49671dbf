// The ORM against hand-written SQL, on the database paths of the token endpoints: which statements are
// worth writing by hand (app/db/database.ts `rows`), and which go through the models.
//
//   npm run bench:orm                               starts its own Postgres container (testcontainers)
//   DATABASE_URL=postgres://…/scratch npm run bench:orm -- [--concurrency 16] [--pool 10]
//                                                   [--seconds 4] [--rounds 3] [--only rotate,begin]
//
// Each path runs in two forms on one pool (DB_POOL_MAX's default, 10), with `--concurrency` loops each
// waiting for its own last call: "hand" (prepared statements through db.rows) and "orm" (the models).
// The form the app uses is the app's own function; the other is written out here, as it was or would
// be. Rounds alternate the forms; figures are medians of the rounds. Reported per form: operations
// per second, statements per operation (transaction BEGIN/COMMIT included, from db.statementCount())
// and the bench process's CPU time per operation (the worker's cost; the machine is shared, so ops/s
// is the noisier figure). The database is migrated and gets one user per loop: use a scratch database.
//
// Paths: rotate (POST /api/token/refresh/, rotating: claim the token, insert its child), use (the same
// without rotation: a usability check), refreshThrottle (the per-account refresh count, also on every
// refresh), begin (what a login does before its hash: the throttle's reservation and the account's
// lookup; "orm" is the reservation, then the lookup through the models, as the app did until
// 2026-12-06), recordLogin (what a login writes after its hash: last_login, the session and its
// first token, the throttle's success), login (begin + argon2id verify + recordLogin: what a login
// costs the database and CPU),
// userClaims (ACCESS_TOKEN_CLAIMS=is_staff,is_superuser,groups: the user record and its three groups)
// and rotateClaims (the refresh with those claims: rotate, then userClaims; compare with rotate's
// hand column for what the claims add to a refresh).
import { createHash, randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { PostgreSqlContainer, type StartedPostgreSqlContainer } from '@testcontainers/postgresql';
import { Op, literal, type Transaction } from 'sequelize';
import { createDatabase, type Database } from '../../app/db/database';
import { createMigrator } from '../../app/db/migrator';
import * as families from '../../app/auth/families';
import { createPasswordHasher } from '../../app/auth/passwords';
import { beginLogin, recordSuccessfulLogin } from '../../app/auth/logins';
import { loginKeys, refreshWaitSeconds, reserveLoginAttempt } from '../../app/auth/throttle';
import { loadUserClaims, loadUserClaimsByModels } from '../../app/auth/user-claims';
import { authenticate, type LoginAccount } from '../../app/auth/users';
import { images } from '../../test/support/images';

const { values: opts } = parseArgs({
  options: {
    concurrency: { type: 'string', default: '16' },
    pool: { type: 'string', default: '10' },
    seconds: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '3' },
    only: { type: 'string', default: '' },
  },
});
const CONCURRENCY = Number(opts.concurrency);
const SECONDS = Number(opts.seconds);
const ROUNDS = Number(opts.rounds);
const DAY = 86_400_000;
// The refresh limit's settings, never reached here: only the counting is measured.
const THROTTLE = {
  loginFreeAttempts: 5,
  loginMaxDelaySeconds: 300,
  loginQuietSeconds: 900,
  loginAccountBudget: 20,
  loginAccountWindowSeconds: 3600,
  loginKnownAddressSeconds: 90 * 86400,
  refreshPerMinute: 1_000_000_000,
};
// A login's, lifted as the bench stack lifts them (deploy/bench): one address, one account, every attempt passes.
const LOGIN_THROTTLE = { ...THROTTLE, loginFreeAttempts: 1_000_000_000, loginAccountBudget: 0 };

const PASSWORD = 'bench-orm-password-1';
const hasher = createPasswordHasher();

interface Loop {
  userId: number;
  username: string;
  /** The head of this loop's refresh-token chain. */
  head: string;
  key: string;
}

type Step = (db: Database, loop: Loop) => Promise<void>;
interface Path {
  name: string;
  hand: Step;
  orm: Step;
}

// --- the two forms of each path ----------------------------------------------------------------

function must<T>(value: T | null | undefined, what: string): T {
  if (value === null || value === undefined) throw new Error(`${what} failed`);
  return value;
}

/** The ORM's rotation: lock the usable token, mark it rotated, create its child; one transaction. */
async function rotateOrm(db: Database, loop: Loop, now: Date, next: string): Promise<{ familyId: string; username: string } | null> {
  const { RefreshToken } = db.models;
  return db.sequelize.transaction(async (transaction: Transaction) => {
    const token = await RefreshToken.scope({ method: ['usable', now] }).findOne({
      where: { jti: loop.head, '$family.user_id$': loop.userId },
      lock: { level: transaction.LOCK.UPDATE, of: RefreshToken },
      transaction,
    });
    if (!token) return null;
    await token.update({ rotatedAt: now }, { transaction });
    await RefreshToken.create(
      { jti: next, familyId: token.familyId, parentJti: token.jti, createdAt: now, expiresAt: new Date(now.getTime() + DAY) },
      { transaction },
    );
    return { familyId: token.familyId, username: token.family!.user!.username };
  });
}

const hourFrom = (now: Date) => new Date(now.getTime() + 3_600_000);

/** The app's record of a login (app/auth/logins.ts): one statement. */
async function recordLogin(db: Database, userId: number, generation: number, now: Date, username: string): Promise<void> {
  const login = { userId, generation, token: { jti: randomUUID(), expiresAt: hourFrom(now) }, now, sessionEnds: hourFrom(now), client: CLIENT };
  must(await recordSuccessfulLogin(db, { ...login, lastLogin: true, throttle: loginKeys(username, CLIENT.ip) }), 'recordLogin');
}

/** The same record through the models, as the app wrote it until logins.ts: eight statements, four commits. */
async function recordLoginByModels(db: Database, userId: number, generation: number, now: Date, username: string): Promise<void> {
  const { KnownAddress, Throttle, TokenFamily, User } = db.models;
  const keys = loginKeys(username, CLIENT.ip);
  await User.update({ lastLogin: now }, { where: { id: userId } });
  await db.sequelize.transaction(async (transaction) => {
    const user = await User.findOne({ where: { id: userId, tokenGeneration: generation, isActive: true }, attributes: ['id', 'username'], lock: transaction.LOCK.SHARE, transaction });
    must(user, 'recordLogin');
    const session = { id: randomUUID(), userId, createdAt: now, expiresAt: hourFrom(now), lastUsedAt: now };
    const client = { loginUserAgent: CLIENT.userAgent, loginIp: CLIENT.ip, lastUserAgent: CLIENT.userAgent, lastIp: CLIENT.ip };
    const refreshTokens = [{ jti: randomUUID(), createdAt: now, expiresAt: hourFrom(now) }];
    await TokenFamily.create({ ...session, ...client, refreshTokens }, { include: [{ association: 'refreshTokens' }], transaction });
  });
  await Throttle.destroy({ where: { key: keys.address } });
  await KnownAddress.upsert({ key: keys.known, seenAt: now });
}
/** What a login does before its hash, as the app does it (logins.ts): one statement. */
async function beginHand(db: Database, username: string): Promise<LoginAccount> {
  const { reservation, account } = await beginLogin(db, loginKeys(username, CLIENT.ip), username, new Date(), LOGIN_THROTTLE);
  must(reservation.ok || null, 'begin');
  return must(account, 'begin');
}

/** The same as the app did it until 2026-12-06: the reservation, then the account through the models. */
async function beginByModels(db: Database, username: string): Promise<LoginAccount> {
  must((await reserveLoginAttempt(db, loginKeys(username, CLIENT.ip), new Date(), LOGIN_THROTTLE)).ok || null, 'begin');
  const user = await db.models.User.findOne({ where: { username }, attributes: ['id', 'username', 'passwordHash', 'isActive', 'tokenGeneration'] });
  return must(user?.get({ plain: true }), 'begin');
}

const CLIENT = { userAgent: 'bench', ip: '127.0.0.1' };
const CLAIMS = ['is_staff', 'is_superuser', 'groups'] as const;

/** The claims as the app reads them: one hand-written statement (user-claims.ts). */
async function userClaimsHand(db: Database, userId: number): Promise<void> {
  must(await loadUserClaims(db, userId, CLAIMS), 'userClaims');
}

async function rotateHand(db: Database, loop: Loop): Promise<void> {
  const now = new Date();
  const next = { jti: randomUUID(), expiresAt: hourFrom(now) };
  must((await families.rotate(db, { jti: loop.head, userId: loop.userId }, next, { blacklistOld: true, now, client: CLIENT })).ok || null, 'rotate');
  loop.head = next.jti;
}

const PATHS: Path[] = [
  {
    name: 'rotate',
    hand: rotateHand,
    async orm(db, loop) {
      const next = randomUUID();
      must(await rotateOrm(db, loop, new Date(), next), 'rotate');
      loop.head = next;
    },
  },
  {
    name: 'use',
    async hand(db, loop) {
      must((await families.use(db, { jti: loop.head, userId: loop.userId }, new Date(), CLIENT)).ok || null, 'use');
    },
    async orm(db, loop) {
      const token = await db.models.RefreshToken.scope({ method: ['usable', new Date()] }).findOne({
        where: { jti: loop.head, '$family.user_id$': loop.userId },
      });
      must(token?.family?.user?.username, 'use');
    },
  },
  {
    name: 'refreshThrottle',
    hand: (db, loop) => refreshWaitSeconds(db, { jti: loop.head, userId: loop.userId }, new Date(), THROTTLE).then(() => {}),
    async orm(db, loop) {
      // The models' count (throttle.ts countAttempt, in a live window): one UPDATE … SET count = count + 1 … RETURNING.
      const now = new Date();
      const [, [row]] = await db.models.Throttle.update(
        { count: literal('"count" + 1'), updatedAt: now },
        { where: { key: loop.key, startedAt: { [Op.gt]: new Date(now.getTime() - 60_000) } }, returning: true },
      );
      must(row, 'refreshThrottle');
    },
  },
  {
    name: 'begin',
    hand: (db, loop) => beginHand(db, loop.username).then(() => {}),
    orm: (db, loop) => beginByModels(db, loop.username).then(() => {}),
  },
  {
    name: 'recordLogin',
    hand: (db, loop) => recordLogin(db, loop.userId, 0, new Date(), loop.username),
    orm: (db, loop) => recordLoginByModels(db, loop.userId, 0, new Date(), loop.username),
  },
  {
    name: 'login',
    async hand(db, loop) {
      const user = must(await authenticate(db, hasher, await beginHand(db, loop.username), PASSWORD, {}), 'login');
      await recordLogin(db, user.id, user.generation, new Date(), loop.username);
    },
    async orm(db, loop) {
      const user = must(await authenticate(db, hasher, await beginByModels(db, loop.username), PASSWORD, {}), 'login');
      await recordLoginByModels(db, user.id, user.generation, new Date(), loop.username);
    },
  },
  {
    name: 'userClaims',
    hand: (db, loop) => userClaimsHand(db, loop.userId),
    orm: async (db, loop) => void must(await loadUserClaimsByModels(db, loop.userId, CLAIMS), 'userClaims'),
  },
  {
    name: 'rotateClaims',
    async hand(db, loop) {
      await rotateHand(db, loop);
      await userClaimsHand(db, loop.userId);
    },
    async orm(db, loop) {
      await rotateHand(db, loop);
      must(await loadUserClaimsByModels(db, loop.userId, CLAIMS), 'userClaims');
    },
  },
];

// --- the harness -------------------------------------------------------------------------------

async function run(db: Database, op: Step, loops: Loop[], seconds: number): Promise<{ ops: number; statements: number; cpuUs: number }> {
  const deadline = Date.now() + seconds * 1000;
  const statementsBefore = db.statementCount();
  const cpuBefore = process.cpuUsage();
  let ops = 0;
  await Promise.all(
    loops.map(async (loop) => {
      while (Date.now() < deadline) {
        await op(db, loop);
        ops += 1;
      }
    }),
  );
  const cpu = process.cpuUsage(cpuBefore);
  return { ops, statements: db.statementCount() - statementsBefore, cpuUs: cpu.user + cpu.system };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  let container: StartedPostgreSqlContainer | undefined;
  let url = process.env.DATABASE_URL;
  if (!url) {
    process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true';
    container = await new PostgreSqlContainer(images().POSTGRES_IMAGE).start();
    url = container.getConnectionUri();
  }
  const db = createDatabase({ url, poolMax: Number(opts.pool), applicationName: 'koa-auth-stack bench:orm' });
  try {
    await createMigrator(db.sequelize, { info: () => {} }).up();
    const tag = Date.now().toString(36);
    const passwordHash = await hasher.hash(PASSWORD);
    const loops: Loop[] = [];
    // Three groups for every user, for the claims' paths.
    const groups = await Promise.all(['editors', 'writers', 'staff'].map((name) => db.models.Group.create({ name: `${name}-${tag}` })));
    for (let i = 0; i < CONCURRENCY; i++) {
      const username = `bench-orm-${tag}-${i}`;
      const user = await db.models.User.create({ username, passwordHash, isStaff: i % 2 === 0 });
      await db.models.UserGroup.bulkCreate(groups.map((g) => ({ userId: user.id, groupId: g.id })));
      const head = randomUUID();
      const start = { userId: user.id, generation: 0, token: { jti: head, expiresAt: new Date(Date.now() + DAY) }, now: new Date(), sessionEnds: new Date(Date.now() + DAY) };
      must(await recordSuccessfulLogin(db, { ...start, client: CLIENT, lastLogin: false, throttle: loginKeys(username, CLIENT.ip) }), 'a session to refresh');
      // The models' form's throttle record, in a window that lasts the whole run (the app's keeps its own).
      const key = createHash('sha256').update(username).digest('hex');
      await db.models.Throttle.create({ key, count: 0, startedAt: new Date(Date.now() + 3600_000), updatedAt: new Date() });
      loops.push({ userId: user.id, username, head, key });
    }
    const only = opts.only ? opts.only.split(',') : undefined;
    const unknown = only?.filter((name) => !PATHS.some((p) => p.name === name));
    if (unknown?.length) throw new Error(`--only: unknown path ${unknown.join(', ')} (of ${PATHS.map((p) => p.name).join(', ')})`);
    console.log(`pool ${opts.pool}, concurrency ${CONCURRENCY}, ${ROUNDS} rounds × ${SECONDS} s per form, median of the rounds`);
    console.log('path             hand ops/s  stmts/op  µs CPU/op   orm ops/s  stmts/op  µs CPU/op   orm/hand');
    for (const path of PATHS.filter((p) => !only || only.includes(p.name))) {
      await run(db, path.hand, loops, 1); // warm up both forms (connections, prepared statements, JIT)
      await run(db, path.orm, loops, 1);
      const rates: Record<'hand' | 'orm', number[]> = { hand: [], orm: [] };
      const perOp: Record<'hand' | 'orm', number> = { hand: 0, orm: 0 };
      const cpu: Record<'hand' | 'orm', number[]> = { hand: [], orm: [] };
      for (let r = 0; r < ROUNDS; r++) {
        for (const form of r % 2 ? (['orm', 'hand'] as const) : (['hand', 'orm'] as const)) {
          const { ops, statements, cpuUs } = await run(db, path[form], loops, SECONDS);
          rates[form].push(ops / SECONDS);
          cpu[form].push(cpuUs / ops);
          perOp[form] = statements / ops;
        }
      }
      const hand = median(rates.hand);
      const orm = median(rates.orm);
      console.log(
        [
          path.name.padEnd(15),
          hand.toFixed(0).padStart(11),
          perOp.hand.toFixed(1).padStart(9),
          median(cpu.hand).toFixed(0).padStart(10),
          orm.toFixed(0).padStart(11),
          perOp.orm.toFixed(1).padStart(9),
          median(cpu.orm).toFixed(0).padStart(10),
          `${((orm / hand) * 100).toFixed(0)}%`.padStart(10),
        ].join(' '),
      );
    }
  } finally {
    await db.close();
    await container?.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
