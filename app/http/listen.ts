// The Node HTTP server around the Koa callback: timeouts that suit nginx's keepalive, a header limit
// above nginx's (so behind nginx it is nginx that refuses, as JSON, never a reset that reads as a 502),
// and JSON answers for requests Node itself rejects before Koa sees them.
import { chmodSync, rmSync } from 'node:fs';
import http, { STATUS_CODES } from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { badRequest, headersTooLarge, requestTimeout } from './errors';
import { SECURITY_HEADERS } from './security-headers';

// nginx accepts at most 4 × 8 KiB of request headers (large_client_header_buffers); Node's default
// 16 KiB would cut in first with a bare 431.
export const MAX_HEADER_BYTES = 64 * 1024;

function rawJson(status: number, body: unknown): string {
  const text = JSON.stringify(body);
  const security = Object.entries(SECURITY_HEADERS).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\n${security}` +
    `Content-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`
  );
}

function onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const { status, body } =
    err.code === 'HPE_HEADER_OVERFLOW' ? headersTooLarge() : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? requestTimeout() : badRequest('Malformed HTTP request.');
  socket.end(rawJson(status, body));
}

export function createHttpServer(
  handler: http.RequestListener,
  options: { keepAliveTimeoutMs: number },
): http.Server {
  // Node's own check for a missing Host answers a bare 400; ours answers in JSON, like every error.
  const server = http.createServer({ maxHeaderSize: MAX_HEADER_BYTES, requireHostHeader: false }, (req, res) => {
    if (req.httpVersion === '1.1' && req.headers.host === undefined) {
      const body = JSON.stringify(badRequest('The request has no Host header.').body);
      res.writeHead(400, { 'Content-Type': 'application/json', ...SECURITY_HEADERS, 'Content-Length': Buffer.byteLength(body), Connection: 'close' });
      res.end(body);
      return;
    }
    handler(req, res);
  });
  // Node must keep idle keep-alive sockets open longer than nginx does (see KEEP_ALIVE_TIMEOUT).
  server.keepAliveTimeout = options.keepAliveTimeoutMs;
  server.headersTimeout = options.keepAliveTimeoutMs + 5_000;
  server.requestTimeout = 30_000;
  server.on('clientError', onClientError);
  return server;
}

function listening(server: http.Server, where: net.ListenOptions): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const fail = (err: Error) => reject(err);
    server.once('error', fail);
    server.listen(where, () => {
      server.off('error', fail);
      resolve();
    });
  });
}

/** Whether something accepts connections on the Unix socket at `path`. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect(path, () => {
      probe.destroy();
      resolve(true);
    });
    probe.on('error', () => resolve(false));
  });
}

/**
 * Listens on a Unix socket that others (nginx) connect to, readable and writable by all. A socket
 * file left by a process that died uncleanly is removed, but only by `mayClean` (one process of a
 * cluster: two that both cleaned could remove the socket the first had just made); the others fail
 * and are restarted by PM2, and by then the socket is there to share.
 */
export async function listenOnSocket(server: http.Server, path: string, mayClean: boolean): Promise<void> {
  try {
    await listening(server, { path });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || !mayClean || (await answers(path))) throw err;
    rmSync(path, { force: true });
    await listening(server, { path });
  }
  chmodSync(path, 0o666);
}

/**
 * Stops HTTP servers gracefully. First they keep accepting for `delayMs`: a proxy that learns from
 * DNS that this process is leaving (nginx's follow mode on Docker Swarm, which removes a task's
 * name 2 s before it stops it) may still send here for a moment, and a connection that reaches a
 * closed listener is reset with its request unread, which the proxy cannot tell from a request
 * that ran. Then they stop accepting, idle keep-alive connections close, requests in flight finish,
 * and what is left after `timeoutMs` is cut.
 */
export async function drainServers(servers: http.Server[], { delayMs, timeoutMs }: { delayMs: number; timeoutMs: number }): Promise<void> {
  if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
  const drained = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  for (const s of servers) s.closeIdleConnections();
  const timer = setTimeout(() => servers.forEach((s) => s.closeAllConnections()), timeoutMs);
  await drained;
  clearTimeout(timer);
}
