// The app's Unix socket for nginx: readable and writable by all, a stale socket file cleaned up, a
// live one never taken over.
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listenOnSocket } from '../../app/http/listen';

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
