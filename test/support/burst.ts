// Requests that arrive together however slowly this machine runs: each on a connection of its own,
// every connection opened first, then all the requests written in one synchronous loop. A limit that
// counts arrivals over time (nginx's limit_req) then sees a burst as a burst, not as requests spread
// over the seconds a starved test runner took to send them one after another.
import net from 'node:net';
import { parse, type RawReply } from './hostile';

/** Sends every request at once (each must ask for Connection: close) and returns the answers in order. */
export async function simultaneous(base: string, requests: (string | Buffer)[], timeoutMs = 30_000): Promise<RawReply[]> {
  const url = new URL(base);
  if (url.protocol !== 'http:') throw new Error('simultaneous: plain HTTP only');
  const sockets = await Promise.all(
    requests.map(
      () =>
        new Promise<net.Socket>((resolve, reject) => {
          const socket = net.connect(Number(url.port || 80), url.hostname.replace(/^\[(.*)\]$/, '$1'));
          socket.once('connect', () => resolve(socket));
          socket.once('error', reject);
        }),
    ),
  );
  const answers = sockets.map(
    (socket) =>
      new Promise<RawReply>((resolve, reject) => {
        const chunks: Buffer[] = [];
        const timer = setTimeout(() => {
          socket.destroy();
          reject(new Error(`no answer within ${timeoutMs} ms`));
        }, timeoutMs);
        socket.on('data', (chunk: Buffer) => chunks.push(chunk));
        socket.on('error', (err) => {
          clearTimeout(timer);
          if (chunks.length > 0) resolve(parse(Buffer.concat(chunks)));
          else reject(err);
        });
        socket.on('end', () => {
          clearTimeout(timer);
          resolve(parse(Buffer.concat(chunks)));
        });
      }),
  );
  sockets.forEach((socket, i) => socket.write(requests[i]!));
  return Promise.all(answers);
}

/** A POST of a JSON body, asking for Connection: close; `headers` besides. */
export const postJson = (path: string, body: unknown, headers: Record<string, string> = {}): string => {
  const text = JSON.stringify(body);
  const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  return `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n${extra}Connection: close\r\n\r\n${text}`;
};
