// A silent feed does not fail open. When the LISTEN connection goes half-open (black-holed, never
// closed), the worker notices by its round-trip, reconnects, reloads, and enforces what it missed.
// When it cannot reconnect while the database works (only the feed's connections black-holed: slots
// used up, a partition of new connections only), the guard asks the database once the feed has been
// silent past its bound. When the database does not answer either, memory answers, as in an outage.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postgresApplication, startTcpProxy, type TcpProxy } from '../support/tcp-proxy';
import { eventually, freshDatabase, startTestApp, type TestApp, type TestAppOptions } from '../support/test-app';

let databaseUrl: string;
let direct: TestApp;
const proxies: TcpProxy[] = [];
const apps: TestApp[] = [];
beforeAll(async () => {
  databaseUrl = await freshDatabase();
  direct = await startTestApp({}, { databaseUrl });
  await direct.user('alice', 'alice-password-1');
});
afterAll(async () => {
  for (const proxy of proxies) await proxy.close(); // first: the frozen sockets must not hold the stops
  for (const app of apps) await app.stop();
  await direct?.stop();
});

/** A worker whose every database connection (its feed's and its pool's) passes through a proxy. */
async function proxiedWorker(options: TestAppOptions = {}): Promise<{ app: TestApp; proxy: TcpProxy }> {
  const url = new URL(databaseUrl);
  const proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port) });
  proxies.push(proxy);
  url.hostname = '127.0.0.1';
  url.port = String(proxy.port);
  const app = await startTestApp({}, { ...options, databaseUrl: url.toString() });
  apps.push(app);
  return { app, proxy };
}

const me = (app: TestApp, access: string) => app.request('GET', '/api/me/', { headers: { Authorization: `Bearer ${access}` } });
const isFeed = postgresApplication('koa-auth-stack revocations');

async function unvouched(app: TestApp, answeredBy: 'database' | 'memory'): Promise<number> {
  const metric = (await app.services.metrics.own.getMetricsAsJSON()).find((m) => m.name === 'auth_revocation_unvouched_checks_total');
  return metric?.values.find((v) => v.labels.answered_by === answeredBy)?.value ?? 0;
}

describe('the revocation feed', () => {
  it('finds a black-holed connection by its round-trip and enforces a logout made meanwhile within 15 s', async () => {
    const { app: proxied, proxy } = await proxiedWorker();
    const session = await direct.login('alice', 'alice-password-1');
    expect((await me(proxied, session.access)).status).toBe(200);
    const before = proxied.services.feed.backendPid();
    expect(before).toBeDefined();

    proxy.freeze(); // every connection of the proxied worker is now silent, and still open
    const frozenAt = Date.now();
    expect((await direct.post('/api/token/blacklist/', { refresh: session.refresh })).status).toBe(200);
    // The worker that took the logout learns of it by NOTIFY too, a moment after its answer.
    await eventually(async () => (await me(direct, session.access)).status === 401);

    // The notification went into the void; the round-trip finds the dead feed, the reload brings it.
    await eventually(async () => (await me(proxied, session.access)).status === 401, 15_000);
    const took = Date.now() - frozenAt;
    expect(proxied.services.feed.backendPid()).not.toBe(before);
    expect(proxied.logs.some((l) => l.includes('no answer to a round-trip'))).toBe(true);
    console.log(`a black-holed feed: logout enforced after ${took} ms`);
  });

  it('cannot reconnect while the database works: past its bound the guard asks the database, and a logout elsewhere is enforced within 15 s', async () => {
    const { app: cutOff, proxy } = await proxiedWorker(); // the default heartbeat: a 10 s bound
    const session = await direct.login('alice', 'alice-password-1');
    const other = await direct.login('alice', 'alice-password-1');
    // The ordinary path: the feed vouches for memory, no query per request.
    const quiet = cutOff.db.statementCount();
    for (const s of [session, other]) expect((await me(cutOff, s.access)).status).toBe(200);
    expect(cutOff.db.statementCount()).toBe(quiet);

    proxy.blackhole(isFeed); // the LISTEN connection and every new one the feed makes; the pool passes
    const cutAt = Date.now();
    expect((await direct.post('/api/token/blacklist/', { refresh: session.refresh })).status).toBe(200);

    await eventually(async () => (await me(cutOff, session.access)).status === 401, 15_000);
    const took = Date.now() - cutAt;
    const refused = await me(cutOff, session.access);
    expect(refused.json.messages[0].message).toBe('Token is blacklisted');
    // The feed never came back: the database answered, through the pool (memory alone cannot know).
    expect(cutOff.services.feed.connected()).toBe(false);
    expect(cutOff.db.statementCount()).toBeGreaterThan(quiet);
    expect(await unvouched(cutOff, 'database')).toBeGreaterThan(0);
    expect(cutOff.logs.some((l) => l.includes('checking revocations in the database'))).toBe(true);
    // Only the revoked session: another one of the same user still passes.
    expect((await me(cutOff, other.access)).status).toBe(200);
    console.log(`a feed that cannot reconnect: logout enforced after ${took} ms`);
  });

  it('with the database unreachable too, answers from memory as in an outage', async () => {
    // A 500 ms round-trip (a 1 s bound), so the test need not wait out the default 10 s.
    const { app: isolated, proxy } = await proxiedWorker({ heartbeatMs: 500 });
    const revoked = await direct.login('alice', 'alice-password-1');
    const live = await direct.login('alice', 'alice-password-1');
    expect((await direct.post('/api/token/blacklist/', { refresh: revoked.refresh })).status).toBe(200);
    await eventually(async () => (await me(isolated, revoked.access)).status === 401); // in its memory

    proxy.blackhole(() => true); // every connection of this worker, open or new
    await eventually(() => !isolated.services.feed.current(), 5_000);
    // The read times out (2 s) and memory answers; memory still refuses what it knew.
    expect((await me(isolated, live.access)).status).toBe(200);
    expect((await me(isolated, revoked.access)).status).toBe(401);
    expect(await unvouched(isolated, 'memory')).toBeGreaterThan(0);
    expect(isolated.logs.some((l) => l.includes('both unreachable'))).toBe(true);
  });
});
