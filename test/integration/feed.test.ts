// A silent feed does not fail open: when the LISTEN connection goes half-open (black-holed, never
// closed), the worker notices by its round-trip, reconnects, reloads, and enforces what it missed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy';
import { eventually, freshDatabase, startTestApp, type TestApp } from '../support/test-app';

let direct: TestApp;
let proxied: TestApp;
let proxy: TcpProxy;
beforeAll(async () => {
  const databaseUrl = await freshDatabase();
  direct = await startTestApp({}, { databaseUrl });
  const url = new URL(databaseUrl);
  proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port) });
  url.hostname = '127.0.0.1';
  url.port = String(proxy.port);
  proxied = await startTestApp({}, { databaseUrl: url.toString() });
});
afterAll(async () => {
  await proxy?.close(); // first: the frozen sockets must not hold the stop
  await proxied?.stop();
  await direct?.stop();
});

const me = (app: TestApp, access: string) => app.request('GET', '/api/me/', { headers: { Authorization: `Bearer ${access}` } });

describe('the revocation feed', () => {
  it('finds a black-holed connection by its round-trip and enforces a logout made meanwhile within 15 s', async () => {
    await direct.user('alice', 'alice-password-1');
    const session = await direct.login('alice', 'alice-password-1');
    expect((await me(proxied, session.access)).status).toBe(200);
    const before = proxied.services.feed.backendPid();
    expect(before).toBeDefined();

    proxy.freeze(); // every connection of the proxied worker is now silent, and still open
    const frozenAt = Date.now();
    expect((await direct.post('/api/token/blacklist/', { refresh: session.refresh })).status).toBe(200);
    expect((await me(direct, session.access)).status).toBe(401);

    // The notification went into the void; the round-trip finds the dead feed, the reload brings it.
    await eventually(async () => (await me(proxied, session.access)).status === 401, 15_000);
    const took = Date.now() - frozenAt;
    expect(proxied.services.feed.backendPid()).not.toBe(before);
    expect(proxied.logs.some((l) => l.includes('no answer to a round-trip'))).toBe(true);
    console.log(`a black-holed feed: logout enforced after ${took} ms`);
  });
});
