// The app's Unix socket for nginx: readable and writable by all, a stale socket file cleaned up, a
// live one never taken over.
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createHttpServer, drainServers, listenOnSocket } from '../../app/http/listen';

let dir: string;
const servers: http.Server[] = [];
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'listen-test-'));
});
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((resolve) => s.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

const server = () => {
  const s = http.createServer((_req, res) => res.end('ok'));
  servers.push(s);
  return s;
};
const get = (socketPath: string) =>
  new Promise<string>((resolve, reject) => {
    http.get({ socketPath, path: '/', agent: false }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });

describe('listenOnSocket', () => {
  it('serves on the socket, which every user may connect to', async () => {
    const socket = path.join(dir, 'app.sock');
    await listenOnSocket(server(), socket, true);
    expect(statSync(socket).mode & 0o777).toBe(0o666);
    expect(await get(socket)).toBe('ok');
  });

  it('replaces a socket file nobody listens on, when it may clean', async () => {
    const socket = path.join(dir, 'app.sock');
    writeFileSync(socket, ''); // what a process killed uncleanly leaves: a path nobody listens on
    await expect(listenOnSocket(server(), socket, false)).rejects.toMatchObject({ code: 'EADDRINUSE' });
    await listenOnSocket(server(), socket, true);
    expect(await get(socket)).toBe('ok');
  });

  it('never takes over a socket another process serves', async () => {
    const socket = path.join(dir, 'app.sock');
    await listenOnSocket(server(), socket, true);
    await expect(listenOnSocket(server(), socket, true)).rejects.toMatchObject({ code: 'EADDRINUSE' });
    expect(await get(socket)).toBe('ok');
  });
});

describe('a stop as server.ts makes it (close, then closeIdleConnections)', () => {
  // nginx sends each POST over a fresh connection and never resends one it has written
  // (nginx/templates/common.conf): a connection accepted just before a worker stops must get its
  // request answered, not be cut as idle. Node ≥ 19 counts a connection idle only between requests.
  it('answers a request on a connection accepted before the stop, and closes idle keep-alive ones', async () => {
    const s = createHttpServer((_req, res) => res.end('ok'), { keepAliveTimeoutMs: 60_000 });
    servers.push(s);
    const accepted: net.Socket[] = [];
    s.on('connection', (c: net.Socket) => accepted.push(c));
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    const port = (s.address() as net.AddressInfo).port;
    const client = async () => {
      const n = accepted.length;
      const c = net.connect(port, '127.0.0.1');
      let received = '';
      c.on('data', (d) => (received += d.toString()));
      const closed = once(c, 'close');
      await once(c, 'connect');
      while (accepted.length === n) await new Promise((resolve) => setImmediate(resolve));
      return { c, closed, received: () => received };
    };
    const request = 'POST /api/token/refresh/ HTTP/1.1\r\nHost: app\r\nContent-Length: 2\r\n\r\n{}';
    const idle = await client();
    idle.c.write(request);
    while (!idle.received().endsWith('ok')) await new Promise((resolve) => setImmediate(resolve));
    const fresh = await client(); // accepted by the server, its request not yet written

    s.close();
    s.closeIdleConnections();
    await idle.closed; // the keep-alive connection between requests: closed at once
    fresh.c.write(request);
    while (!fresh.received().endsWith('ok')) await new Promise((resolve) => setImmediate(resolve));
    expect(fresh.received()).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    fresh.c.destroy();
  });
});

describe('drainServers', () => {
  const fetchOnce = (port: number) =>
    new Promise<number>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      }).on('error', reject);
    });

  it('keeps accepting new connections for the delay, then refuses them', async () => {
    const s = createHttpServer((_req, res) => res.end('ok'), { keepAliveTimeoutMs: 60_000 });
    servers.push(s);
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    const port = (s.address() as net.AddressInfo).port;
    let done = false;
    const drained = drainServers([s], { delayMs: 300, timeoutMs: 1_000 }).then(() => (done = true));
    // Within the delay: a proxy that has not yet heard of the stop is still answered.
    expect(await fetchOnce(port)).toBe(200);
    expect(done).toBe(false);
    await drained;
    await expect(fetchOnce(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('stops accepting at once without a delay', async () => {
    const s = createHttpServer((_req, res) => res.end('ok'), { keepAliveTimeoutMs: 60_000 });
    servers.push(s);
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    const port = (s.address() as net.AddressInfo).port;
    const drained = drainServers([s], { delayMs: 0, timeoutMs: 1_000 });
    await expect(fetchOnce(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    await drained;
  });
});
