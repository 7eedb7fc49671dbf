// The failover drill, as a managed Postgres runs one, on the compose stack with the standby profile,
// through nginx and under traffic (logins, refreshes, guarded reads, logouts from several clients):
//   the standby falls behind (cut off the network: what the primary sends it from then on never
//   arrives; synchronous replication holds the primary's commits until it has them), the primary
//   dies (docker kill), the standby is promoted (SELECT pg_promote()), and the name `postgres` moves
//   to it (its network alias, as a managed service moves a DNS name).
// Every write the stack acknowledged (a login's session, a rotation's child token, a logout's
// revocation) is recorded and looked up on the new primary afterwards; a refresh answered before
// the drill still works after it, a session logged out before it stays refused, every session the
// clients still hold refreshes. The test reports the count of each answer (200/401/503/other) and the
// time from the name moving to /readyz 200 through nginx and to every worker's feed and pool being on
// the new primary.
//
// FAILOVER_DRILL_ASYNC=1 runs the same drill with the standby asynchronous: acknowledged writes are
// then lost (they were on the primary only), and the check of acknowledged writes fails, naming
// them. That is how we know the check catches a loss (README, "Failover").
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt, request, type Reply } from '../support/http';
import { startStack, type Stack } from '../support/stack';

const SIGNING_KEY = 'e2e-failover-signing-key-0123456789abcdefghijklmnopqrstuvwxyz';
const WORKERS = 2;
const CLIENTS = 4;
const ASYNC = process.env.FAILOVER_DRILL_ASYNC === '1';
// Longer than anything the stack may take to answer (the app's 5 s statement timeout, nginx's 15 s):
// a request still unanswered then is a hang, counted under "other".
const REQUEST_TIMEOUT_MS = 20_000;

let stack: Stack;
let project: string;
let stackUpMs = 0;

beforeAll(async () => {
  const t0 = Date.now();
  project = `kasfo${process.pid}`;
  stack = await startStack({
    project,
    profiles: ['standby'],
    env: {
      NODE_ENV: 'production',
      SIGNING_KEY,
      POSTGRES_PASSWORD: 'e2e-failover-db-password',
      REPLICATION_PASSWORD: 'e2e-failover-replication-password',
      WEB_CONCURRENCY: String(WORKERS),
      // The traffic comes from one address: nginx's per-address limits would answer it instead.
      LOGIN_RATE: '1000r/s',
      LOGIN_BURST: '1000',
      TOKEN_RATE: '1000r/s',
      TOKEN_BURST: '1000',
      REFRESH_THROTTLE_PER_MINUTE: '0',
    },
  });
  stackUpMs = Date.now() - t0;
}, 600_000);

afterAll(async () => {
  await stack?.down({ removeVolumes: true });
}, 120_000);

const sql = async (service: 'postgres' | 'postgres-standby', statement: string) => {
  const r = await stack.exec(service, ['psql', '-X', '-U', 'app', '-d', 'app', '-v', 'ON_ERROR_STOP=1', '-tA', '-f', '-'], statement);
  if (r.code !== 0) throw new Error(`psql on ${service}: ${r.stderr}`);
  return r.stdout.trim();
};
const docker = async (...args: string[]) => {
  const r = await stack.docker(...args);
  if (r.code !== 0) throw new Error(`docker ${args.join(' ')}: ${r.stderr}`);
};
const call = (method: string, path: string, opts: { json?: unknown; access?: string } = {}) =>
  request(stack.url, method, path, {
    ...(opts.json !== undefined ? { json: opts.json } : {}),
    headers: opts.access ? { Authorization: `Bearer ${opts.access}` } : {},
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });

/** The same guarded read, several at once: nginx spreads them over the workers. */
const fanOut = (access: string) => Promise.all(Array.from({ length: 4 * WORKERS }, () => call('GET', '/api/me/', { access })));

async function createUser(username: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const r = await stack.exec('app', ['node', 'scripts/run.js', 'cli', 'createuser', username, '--password-stdin'], `${username}-password-1`);
    // The CLI gives the database 3 s to accept its connection: on a starved machine, try again.
    if (r.code !== 0 && attempt < 3 && r.stderr.includes('timeout expired')) continue;
    expect(r.code, r.stderr).toBe(0);
    return;
  }
}

/** Polls `check` until it holds, with a deadline; returns when it first held (epoch ms). */
async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number, intervalMs = 100): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return Date.now();
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

interface Session {
  sid: string;
  access: string;
  refresh: string;
  jti: string;
}
const session = (pair: { access: string; refresh: string }): Session => ({
  ...pair,
  sid: decodeJwt(pair.access).payload.sid,
  jti: decodeJwt(pair.refresh).payload.jti,
});

type Kind = 'login' | 'refresh' | 'me' | 'logout';
type Ack = { kind: 'login'; jti: string; sid: string } | { kind: 'rotation'; jti: string; parent: string } | { kind: 'logout'; sid: string };

/** The traffic: CLIENTS clients, each logging in, reading, refreshing and logging out in turn. */
function traffic() {
  const answers: Record<Kind, Record<string, number>> = { login: {}, refresh: {}, me: {}, logout: {} };
  const unexpected: string[] = [];
  const acks: (Ack & { at: number })[] = [];
  const live = new Map<number, Session>();
  let writesStarted = 0;
  let stopped = false;

  async function send(kind: Kind, go: () => Promise<Reply>): Promise<Reply | undefined> {
    if (kind !== 'me') writesStarted += 1;
    let r: Reply | undefined;
    let key: string;
    try {
      r = await go();
      key = r.status === 503 ? `503 ${r.json?.code ?? '?'}` : [200, 401].includes(r.status) ? String(r.status) : `other ${r.status}`;
    } catch (err) {
      key = `other ${(err as Error).name}`;
    }
    answers[kind][key] = (answers[kind][key] ?? 0) + 1;
    if (key.startsWith('other') || key === '401') unexpected.push(`${kind}: ${key} ${r?.text ?? ''}`.trim());
    return r;
  }

  async function client(c: number, username: string): Promise<void> {
    let s: Session | undefined;
    let step = 0;
    let refused = false;
    while (!stopped) {
      // Pacing after a refusal, as a client honouring Retry-After would (shortened: the drill is short).
      if (refused) await new Promise((resolve) => setTimeout(resolve, 100));
      refused = true;
      if (!s) {
        const r = await send('login', () => call('POST', '/api/token/', { json: { username, password: `${username}-password-1` } }));
        if (r?.status === 200) {
          s = session(r.json);
          acks.push({ kind: 'login', jti: s.jti, sid: s.sid, at: Date.now() });
          step = 0;
          refused = false;
        }
      } else if (step % 2 === 0) {
        refused = (await send('me', () => call('GET', '/api/me/', { access: s!.access })))?.status !== 200;
        step += 1;
      } else if (step < 5) {
        const r = await send('refresh', () => call('POST', '/api/token/refresh/', { json: { refresh: s!.refresh } }));
        if (r?.status === 200) {
          const next = session(r.json);
          acks.push({ kind: 'rotation', jti: next.jti, parent: s.jti, at: Date.now() });
          s = next;
          step += 1;
          refused = false;
        } else {
          s = undefined; // the rotation may or may not have happened: this client cannot know, and starts over
        }
      } else {
        const r = await send('logout', () => call('POST', '/api/token/blacklist/', { json: { refresh: s!.refresh } }));
        if (r?.status === 200) {
          acks.push({ kind: 'logout', sid: s.sid, at: Date.now() });
          refused = false;
        }
        s = undefined;
      }
      if (s) live.set(c, s);
      else live.delete(c);
    }
  }

  return {
    answers,
    unexpected,
    acks,
    live,
    writesStarted: () => writesStarted,
    start: (usernames: string[]) => Promise.all(usernames.map((u, c) => client(c, u))),
    stop: () => {
      stopped = true;
    },
  };
}

/** The SQL that lists each acknowledged write the database does not have. */
function missingWrites(acks: Ack[]): string {
  const list = (values: string[]) => `ARRAY[${values.map((v) => `'${v.replace(/'/g, "''")}'`).join(',')}]::text[]`;
  const logins = acks.filter((a) => a.kind === 'login');
  const rotations = acks.filter((a) => a.kind === 'rotation');
  const logouts = acks.filter((a) => a.kind === 'logout');
  return `
    SELECT 'login ' || l.jti FROM unnest(${list(logins.map((a) => a.jti))}, ${list(logins.map((a) => a.sid))}) AS l(jti, sid)
      WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.jti = l.jti AND t.family_id = l.sid::uuid)
    UNION ALL
    SELECT 'rotation ' || r.jti FROM unnest(${list(rotations.map((a) => a.jti))}, ${list(rotations.map((a) => a.parent))}) AS r(jti, parent)
      WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.jti = r.jti AND t.parent_jti = r.parent)
         OR NOT EXISTS (SELECT 1 FROM refresh_tokens p WHERE p.jti = r.parent AND p.rotated_at IS NOT NULL)
    UNION ALL
    SELECT 'logout ' || o.sid FROM unnest(${list(logouts.map((a) => a.sid))}) AS o(sid)
      WHERE NOT EXISTS (SELECT 1 FROM token_families f WHERE f.id = o.sid::uuid AND f.revoked_at IS NOT NULL);`;
}

/** Every worker's feed loaded from the new primary: the first "revocation state loaded" after `since`. */
async function feedsLoadedAfter(since: number): Promise<Map<string, number>> {
  const loaded = new Map<string, number>();
  for (const line of (await stack.logs('app')).split('\n')) {
    if (!line.includes('"revocation state loaded"')) continue;
    const entry = JSON.parse(line.slice(line.indexOf('{'))) as { worker?: string; time: number };
    if (entry.time > since && entry.worker !== undefined && !loaded.has(entry.worker)) loaded.set(entry.worker, entry.time);
  }
  return loaded;
}

describe('failover to the synchronous standby', () => {
  it('under traffic: 503s while the name has no primary, nothing acknowledged lost, every worker on the new primary', async () => {
    const started = Date.now();
    // The standby streams and the primary waits for it on every commit.
    await until('the standby is synchronous', async () => (await sql('postgres', "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'postgres_standby'")) === 'sync', 120_000, 500);
    if (ASYNC) await sql('postgres', "ALTER SYSTEM SET synchronous_standby_names = ''; SELECT pg_reload_conf();");
    const syncMs = Date.now() - started;

    // One user per client; sessions of the first one's also stand for "before" and "after" the drill.
    const usernames = Array.from({ length: CLIENTS }, (_, i) => `client${i}`);
    await Promise.all(usernames.map(createUser));
    const credentials = { username: usernames[0], password: `${usernames[0]}-password-1` };
    // Before the drill: a refresh answered 200 (its child must work after), a session logged out.
    const first = await call('POST', '/api/token/', { json: credentials });
    expect(first.status).toBe(200);
    const before = await call('POST', '/api/token/refresh/', { json: { refresh: first.json.refresh } });
    expect(before.status).toBe(200);
    const out = await call('POST', '/api/token/', { json: credentials });
    expect((await call('POST', '/api/token/blacklist/', { json: { refresh: out.json.refresh } })).status).toBe(200);

    const setupMs = Date.now() - started;
    const t = traffic();
    const running = t.start(usernames);
    try {
      await until('traffic flows', () => t.acks.length >= 20, 60_000);

      // The standby falls behind: cut off the network, it receives nothing more, and the primary has
      // WAL it has not flushed, with writes on their way (held by synchronous replication, every
      // client waiting on one; acknowledged by asynchronous replication).
      const standby = stack.container('postgres-standby');
      const primary = stack.container('postgres');
      const network = `${project}_default`;
      await docker('network', 'disconnect', network, standby);
      const writesAtCut = t.writesStarted();
      const acksAtCut = t.acks.length;
      await until(
        'the standby falls behind',
        async () =>
          t.writesStarted() >= writesAtCut + CLIENTS &&
          (!ASYNC || t.acks.length >= acksAtCut + CLIENTS) &&
          (await sql('postgres', "SELECT pg_current_wal_lsn() > flush_lsn FROM pg_stat_replication WHERE application_name = 'postgres_standby'")) === 't',
        30_000,
      );
      const acksBeforeKill = t.acks.length;
      await docker('kill', primary);
      const killedAt = Date.now();
      expect(await sql('postgres-standby', 'SELECT pg_promote()')).toBe('t');
      const promotedAt = Date.now();
      // The name moves: off the dead primary, onto the promoted standby.
      await docker('network', 'disconnect', network, primary);
      await docker('network', 'connect', '--alias', 'postgres', '--alias', 'postgres-standby', network, standby);
      const movedAt = Date.now();

      const readyAt = await until('/readyz 200 through nginx', async () => (await call('GET', '/readyz')).status === 200, 60_000);
      const onNewPrimary = async () => {
        const names = new Set((await sql('postgres-standby', "SELECT DISTINCT application_name FROM pg_stat_activity WHERE application_name LIKE 'koa-auth-stack %'")).split('\n'));
        return Array.from({ length: WORKERS }, (_, w) => w).every((w) => names.has(`koa-auth-stack worker ${w}`) && names.has(`koa-auth-stack revocations worker ${w}`));
      };
      const allWorkersAt = await until("every worker's pool and feed on the new primary", onNewPrimary, 60_000, 250);
      // The times are the log lines' own; the lines reach `docker logs` a moment later (worker → PM2 → Docker).
      let feeds = new Map<string, number>();
      await until("every worker's feed reload in the log", async () => (feeds = await feedsLoadedAfter(movedAt)).size === WORKERS, 30_000, 500);

      // Traffic on the new primary for a while before it stops.
      const acksAtReady = t.acks.length;
      await until('traffic on the new primary', () => t.acks.length >= acksAtReady + 20, 60_000);
      t.stop();
      await running;

      // A logout made on the new primary stops its access token on every worker at once.
      const after = await call('POST', '/api/token/', { json: credentials });
      expect(after.status).toBe(200);
      expect((await fanOut(after.json.access)).map((r) => r.status)).toEqual(Array(4 * WORKERS).fill(200));
      expect((await call('POST', '/api/token/blacklist/', { json: { refresh: after.json.refresh } })).status).toBe(200);
      const loggedOutAt = Date.now();
      const refusedEverywhereAt = await until('the logout on every worker', async () => (await fanOut(after.json.access)).every((r) => r.status === 401), 5_000, 10);

      // Nothing acknowledged is lost.
      const missing = (await sql('postgres-standby', missingWrites(t.acks))).split('\n').filter(Boolean);
      const counts = { login: 0, rotation: 0, logout: 0 };
      for (const a of t.acks) counts[a.kind] += 1;
      console.log(
        [
          `failover drill (${ASYNC ? 'ASYNCHRONOUS standby' : 'synchronous standby'}), ${WORKERS} workers, ${CLIENTS} clients:`,
          `  answers: ${JSON.stringify(t.answers)}`,
          `  acknowledged writes: ${t.acks.length} (${JSON.stringify(counts)}; ${acksBeforeKill - acksAtCut} while the standby was cut off, ${t.acks.length - acksBeforeKill} after the kill); missing on the new primary: ${missing.length}`,
          `  kill → promoted ${promotedAt - killedAt} ms → name moved ${movedAt - promotedAt} ms; from the move: /readyz 200 through nginx ${readyAt - movedAt} ms, ` +
            `every worker's feed reloaded ${Math.max(...feeds.values()) - movedAt} ms, every worker's pool and feed seen on the new primary ${allWorkersAt - movedAt} ms`,
          `  a logout on the new primary refused on every worker after ${refusedEverywhereAt - loggedOutAt} ms`,
          `  seconds: stack up ${Math.round(stackUpMs / 1000)}, standby synchronous ${Math.round(syncMs / 1000)}, users ${Math.round((setupMs - syncMs) / 1000)}, traffic and drill ${Math.round((Date.now() - started - setupMs) / 1000)}`,
        ].join('\n'),
      );
      expect(missing).toEqual([]);
      expect(t.unexpected).toEqual([]);
      for (const kind of ['login', 'refresh', 'me', 'logout'] as const) {
        for (const key of Object.keys(t.answers[kind])) expect(['200', '503 database_unavailable', '503 service_unavailable']).toContain(key);
      }
      expect(t.answers.me['503 database_unavailable'] ?? 0).toBe(0); // guarded reads answer from memory

      // Sessions: the one refreshed before the drill, and every one the clients still hold, refresh;
      // the one logged out before it stays refused, its access token too.
      expect((await call('POST', '/api/token/refresh/', { json: { refresh: before.json.refresh } })).status).toBe(200);
      for (const s of t.live.values()) expect((await call('POST', '/api/token/refresh/', { json: { refresh: s.refresh } })).status).toBe(200);
      expect((await call('POST', '/api/token/refresh/', { json: { refresh: out.json.refresh } })).status).toBe(401);
      expect((await fanOut(out.json.access)).every((r) => r.status === 401)).toBe(true);
    } finally {
      t.stop();
      await running;
    }
  });
});
