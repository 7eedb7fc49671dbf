// REFRESH_REUSE_INTERVAL: rotation that forgives two tabs and a retry. Within the interval after a
// rotation, the parent presented again answers the same child refresh token (and a fresh access
// token) instead of revoking the family; only the immediate parent, only while the child is unused
// and the family live. Past it, a replay revokes the family as ever. The races are forced with row
// locks the test holds (as revocation-races.test.ts does), never left to timing.
import { QueryTypes, type Transaction } from 'sequelize';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REFRESH_COOKIE } from '../../app/auth/cookie';
import { REISSUE } from '../../app/auth/families';
import { generateKey } from '../../app/auth/keys';
import { deactivateUser } from '../../app/auth/users';
import { decodeJwt, type Reply } from '../support/http';
import { freshDatabase, startTestApp, type TestApp } from '../support/test-app';

const INTERVAL = 10;
let databaseUrl: string;
let t: TestApp; // REFRESH_REUSE_INTERVAL=10s
let strict: TestApp; // the default, 0: today's behaviour

beforeAll(async () => {
  databaseUrl = await freshDatabase();
  // Pools large enough for 50 refreshes to wait on one row lock at once.
  t = await startTestApp({ REFRESH_REUSE_INTERVAL: `${INTERVAL}s`, DB_POOL_MAX: '60' }, { databaseUrl });
  strict = await startTestApp({ DB_POOL_MAX: '60' }, { databaseUrl });
});
afterAll(async () => {
  await t?.stop();
  await strict?.stop();
});

let n = 0;
async function session(app: TestApp = t) {
  const name = `tab${++n}`;
  await app.user(name, `${name}-password-1`);
  return { name, ...(await app.login(name, `${name}-password-1`)) };
}
const refresh = (token: string, app: TestApp = t) => app.post('/api/token/refresh/', { refresh: token });
const jtiOf = (token: string) => decodeJwt(token).payload.jti as string;
const blacklisted = { detail: 'Token is blacklisted', code: 'token_not_valid' };

async function familyOf(token: string) {
  const row = await t.db.models.RefreshToken.findByPk(jtiOf(token));
  return t.db.models.TokenFamily.findByPk(row!.familyId);
}
const children = (token: string) => t.db.models.RefreshToken.count({ where: { parentJti: jtiOf(token) } });

/** Statements of this database waiting for a lock, now. */
async function lockWaiters(): Promise<number> {
  const [row] = await t.db.sequelize.query<{ n: string }>(
    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    { type: QueryTypes.SELECT },
  );
  return Number(row!.n);
}
async function untilLockWaiters(count: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  while ((await lockWaiters()) < count) {
    if (Date.now() > deadline) throw new Error(`expected ${count} statement(s) waiting for a lock, saw ${await lockWaiters()}`);
    await sleep(20);
  }
}

describe('within the interval', () => {
  it('answers the parent presented again with the same child refresh token, byte for byte (HS256), and a fresh access token', async () => {
    const s = await session();
    const first = await refresh(s.refresh);
    expect(first.status).toBe(200);
    const again = await refresh(s.refresh);
    expect(again.status, again.text).toBe(200);
    expect(again.json.refresh).toBe(first.json.refresh);
    expect(jtiOf(again.json.access)).not.toBe(jtiOf(first.json.access));
    expect(decodeJwt(again.json.access).payload.sid).toBe(decodeJwt(first.json.access).payload.sid);
    // Logged as a security event: a tab, a retry, or a replay the interval forgave.
    expect(t.logs.some((line) => line.includes('"event":"refresh_reissued"'))).toBe(true);
    // One rotation, the family live, and the child goes on as the session's token.
    expect(await children(s.refresh)).toBe(1);
    expect((await familyOf(s.refresh))!.revokedAt).toBeNull();
    const next = await refresh(first.json.refresh);
    expect(next.status).toBe(200);
    expect((await t.request('GET', '/api/me/', { headers: { Authorization: `Bearer ${again.json.access}` } })).status).toBe(200);
  });

  it('only for the immediate parent: a grandparent is a replay, and revokes the family', async () => {
    const s = await session();
    const child = (await refresh(s.refresh)).json.refresh as string;
    const grandchild = (await refresh(child)).json.refresh as string;
    const replay = await refresh(s.refresh);
    expect(replay.status).toBe(401);
    expect(replay.json).toEqual(blacklisted);
    expect((await familyOf(s.refresh))!.revokeReason).toBe('reuse');
    expect((await refresh(grandchild)).status).toBe(401);
  });

  it('only while the child is unused: once it was rotated, the parent is a replay', async () => {
    const s = await session();
    const child = (await refresh(s.refresh)).json.refresh as string;
    expect((await refresh(child)).status).toBe(200);
    expect((await refresh(s.refresh)).json).toEqual(blacklisted);
    expect((await familyOf(s.refresh))!.revokeReason).toBe('reuse');
  });

  it('only while the family is live and the user active', async () => {
    const out = await session();
    const child = (await refresh(out.refresh)).json.refresh as string;
    expect((await t.post('/api/token/blacklist/', { refresh: child })).status).toBe(200);
    expect((await refresh(out.refresh)).json).toEqual(blacklisted);
    expect((await familyOf(out.refresh))!.revokeReason).toBe('logout');

    const gone = await session();
    await refresh(gone.refresh);
    await deactivateUser(t.db, gone.name, new Date(t.clock()));
    const r = await refresh(gone.refresh);
    expect(r.status).toBe(401);
    expect(r.json.code).toBe('no_active_account');
  });
});

describe('past the interval', () => {
  it('a replay revokes the family, as without the interval', async () => {
    const s = await session();
    const child = (await refresh(s.refresh)).json.refresh as string;
    try {
      t.clock.advance(INTERVAL - 1);
      expect((await refresh(s.refresh)).json.refresh).toBe(child); // still inside
      t.clock.advance(2);
      const replay = await refresh(s.refresh);
      expect(replay.status).toBe(401);
      expect(replay.json).toEqual(blacklisted);
      expect((await familyOf(s.refresh))!.revokeReason).toBe('reuse');
      expect((await refresh(child)).status).toBe(401);
    } finally {
      t.clock.reset();
    }
  });

  it('with the default (0), the second presentation is a replay at once', async () => {
    const s = await session(strict);
    expect((await refresh(s.refresh, strict)).status).toBe(200);
    expect((await refresh(s.refresh, strict)).json).toEqual(blacklisted);
    expect((await familyOf(s.refresh))!.revokeReason).toBe('reuse');
  });
});

/** Opens `count` connections in the app's pool first, one after another, so 50 requests at once do
 *  not each connect (on a busy machine fifty connection starts at once can outlast the connect timeout). */
async function warm(app: TestApp, count: number): Promise<void> {
  const held: Promise<unknown>[] = [];
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  for (let i = 0; i < count; i++) {
    // Each holds its connection until all are open: the next one must be a new connection. A
    // connection start that outlasts the connect timeout on a saturated machine is tried again.
    for (let attempt = 1; ; attempt++) {
      let opened!: () => void;
      const open = new Promise<void>((resolve) => (opened = resolve));
      const tx = app.db.sequelize.transaction(async () => {
        opened();
        await released;
      });
      const started = await Promise.race([open.then(() => true), tx.then(() => false, (err: unknown) => (attempt < 5 ? false : Promise.reject(err)))]);
      if (started) {
        held.push(tx);
        break;
      }
    }
  }
  release();
  await Promise.all(held);
}

/** Runs 50 refreshes of one token, all of them waiting on its row until the test lets go. */
async function fiftyAtOnce(app: TestApp, token: string): Promise<Reply[]> {
  await warm(app, 55);
  const hold: Transaction = await t.db.sequelize.transaction();
  let sent: Promise<Reply[]> | undefined;
  try {
    await t.db.models.RefreshToken.findOne({ where: { jti: jtiOf(token) }, lock: hold.LOCK.UPDATE, transaction: hold });
    const base = await lockWaiters();
    sent = Promise.all(Array.from({ length: 50 }, () => refresh(token, app)));
    await untilLockWaiters(base + 50);
  } finally {
    await hold.commit();
  }
  return sent!;
}

describe('50 concurrent refreshes with one token, all queued on its row before the first rotation', () => {
  it('inside the interval: all 50 get the same child, and exactly one rotation happened', async () => {
    const s = await session();
    const replies = await fiftyAtOnce(t, s.refresh);
    const statuses = replies.map((r) => r.status);
    const ok = statuses.filter((x) => x === 200).length;
    const children_ = new Set(replies.map((r) => r.json.refresh as string));
    const rows = await children(s.refresh);
    console.log(`REFRESH_REUSE_INTERVAL=${INTERVAL}s: ${ok} × 200 of 50, ${children_.size} distinct child token(s), ${rows} child row(s)`);
    expect(statuses).toEqual(Array(50).fill(200));
    expect(children_.size).toBe(1);
    expect(rows).toBe(1);
    expect(await t.db.models.RefreshToken.count({ where: { familyId: (await familyOf(s.refresh))!.id } })).toBe(2);
    expect((await familyOf(s.refresh))!.revokedAt).toBeNull();
    expect((await refresh([...children_][0]!)).status).toBe(200);
  }, 180_000); // 55 connections opened one by one first: slow on a saturated machine

  it('strict (0): one gets the child, 49 are replays, and the family is revoked', async () => {
    const s = await session(strict);
    const replies = await fiftyAtOnce(strict, s.refresh);
    const ok = replies.filter((r) => r.status === 200).length;
    const rows = await children(s.refresh);
    console.log(`REFRESH_REUSE_INTERVAL=0: ${ok} × 200 of 50, ${rows} child row(s), family ${(await familyOf(s.refresh))!.revokeReason ?? 'live'}`);
    expect(ok).toBe(1);
    for (const r of replies.filter((x) => x.status !== 200)) expect(r.json).toEqual(blacklisted);
    expect(rows).toBe(1);
    expect((await familyOf(s.refresh))!.revokeReason).toBe('reuse');
  }, 180_000);
});

describe('a parent presented again while its child is being rotated (the child\'s row held, forced order)', () => {
  async function race(first: 'child' | 'parent') {
    const s = await session();
    const child = (await refresh(s.refresh)).json.refresh as string;
    const hold: Transaction = await t.db.sequelize.transaction();
    let a: Promise<Reply> | undefined;
    let b: Promise<Reply> | undefined;
    try {
      await t.db.models.RefreshToken.findOne({ where: { jti: jtiOf(child) }, lock: hold.LOCK.UPDATE, transaction: hold });
      const base = await lockWaiters();
      // Lock waiters are served in the order they queued.
      a = first === 'child' ? refresh(child) : refresh(s.refresh);
      await untilLockWaiters(base + 1);
      b = first === 'child' ? refresh(s.refresh) : refresh(child);
      await untilLockWaiters(base + 2);
    } finally {
      await hold.commit();
    }
    const [ra, rb] = await Promise.all([a!, b!]);
    return { s, child, byChild: first === 'child' ? ra : rb, byParent: first === 'child' ? rb : ra };
  }

  it('the child\'s rotation first: the child is used, so the parent is a replay and the family is revoked', async () => {
    const { s, byChild, byParent } = await race('child');
    expect(byChild.status).toBe(200);
    expect(byParent.json).toEqual(blacklisted);
    expect((await familyOf(s.refresh))!.revokeReason).toBe('reuse');
  });

  it('the parent first: it gets the child, which the other request then rotates; the family lives', async () => {
    const { s, child, byChild, byParent } = await race('parent');
    expect(byParent.status).toBe(200);
    expect(byParent.json.refresh).toBe(child);
    expect(byChild.status).toBe(200);
    expect((await familyOf(s.refresh))!.revokedAt).toBeNull();
  });
});

describe('the cookie transport: two tabs share one cookie', () => {
  const COOKIE = { 'X-Token-Transport': 'cookie' };
  const cookieOf = (r: Reply) => {
    const set = r.headers.getSetCookie().find((c) => c.startsWith(`${REFRESH_COOKIE}=`));
    return set?.slice(REFRESH_COOKIE.length + 1).split(';')[0];
  };

  it('both tabs refreshing with the same cookie get the same child cookie', async () => {
    const name = `tab${++n}`;
    await t.user(name, `${name}-password-1`);
    const login = await t.request('POST', '/api/token/', { json: { username: name, password: `${name}-password-1` }, headers: COOKIE });
    const cookie = cookieOf(login)!;
    // Both tabs send the cookie they have before either answer has landed: the first rotates it.
    const tab = () => t.request('POST', '/api/token/refresh/', { headers: { ...COOKIE, Cookie: `${REFRESH_COOKIE}=${cookie}` } });
    const [one, two] = await Promise.all([tab(), tab()]);
    expect([one.status, two.status]).toEqual([200, 200]);
    expect(cookieOf(one)).toBeDefined();
    expect(cookieOf(two)).toBe(cookieOf(one));
    expect(cookieOf(one)).not.toBe(cookie);
    expect(await children(cookie)).toBe(1);
  });
});

describe('asymmetric keys: the same token signed again', () => {
  for (const alg of ['RS256', 'ES256'] as const) {
    it(`${alg}: the same claims (jti, iat, exp); ${alg === 'RS256' ? 'byte for byte (RSASSA-PKCS1-v1_5 is deterministic)' : 'a new signature (ECDSA signs with a random nonce)'}`, async () => {
      const app = await startTestApp({ ALGORITHM: alg, SIGNING_KEY: generateKey(alg).signingKey, REFRESH_REUSE_INTERVAL: '10s' }, { databaseUrl });
      try {
        const s = await session(app);
        const first = await refresh(s.refresh, app);
        const again = await refresh(s.refresh, app);
        expect([first.status, again.status]).toEqual([200, 200]);
        expect(decodeJwt(again.json.refresh).payload).toEqual(decodeJwt(first.json.refresh).payload);
        expect(decodeJwt(again.json.refresh).header).toEqual(decodeJwt(first.json.refresh).header);
        if (alg === 'RS256') expect(again.json.refresh).toBe(first.json.refresh);
        else expect(again.json.refresh).not.toBe(first.json.refresh);
        // Either is the session's one current token: it rotates once.
        expect((await refresh(again.json.refresh, app)).status).toBe(200);
      } finally {
        await app.stop();
      }
    });
  }
});


describe('the re-answer\'s statement', () => {
  it('finds the child through the parent\'s primary key and the family\'s index, not a scan of every token', async () => {
    const plan = await t.db.sequelize.transaction(async (transaction) => {
      await t.db.sequelize.query('SET LOCAL enable_seqscan = off', { transaction });
      const sql = `EXPLAIN ${REISSUE.replace(/\$(\d)/g, (_m, i: string) => ["'x'", '1', `'${new Date().toISOString()}'::timestamptz`, '10', "'ua'", "'ip'"][Number(i) - 1]!)}`;
      return t.db.sequelize.query<{ 'QUERY PLAN': string }>(sql, { type: QueryTypes.SELECT, transaction });
    });
    const text = plan.map((r) => r['QUERY PLAN']).join('\n');
    expect(text).toContain('refresh_tokens_pkey');
    expect(text).toContain('refresh_tokens_family_id_idx');
  });
});
