// A webhook receiver as a user would write one: it verifies every delivery with the Standard
// Webhooks library (`standardwebhooks`), answers 400 to one that does not verify, and keeps what it
// received. Tests drive it: up (2xx), failing (503), holding (requests wait until released), or down
// (nothing listens: connection refused).
//
// Erasable TypeScript only (no enums, type-only imports marked), so the e2e tests run this very file
// in a container with `node webhook-receiver.ts` (Node strips the types), where its control API
// (`/_deliveries`, `/_mode/<mode>`, `/_release`) stands in for the methods.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';

export interface Received {
  id: string;
  timestamp: string;
  signature: string;
  body: string;
  /** The verified payload, or undefined when the delivery did not verify. */
  payload: { type: string; timestamp: string; data: Record<string, unknown> } | undefined;
  error?: string;
  /** Whether it was answered 2xx (a held request that was never released was not). */
  acknowledged: boolean;
}

export type Mode = 'up' | 'failing' | 'holding';

export interface Receiver {
  url: string;
  /** Everything that arrived, in order, verified or not. */
  received: Received[];
  setMode(mode: Mode): void;
  /** Answers every held request (2xx). */
  release(): void;
  /** Stops listening (connections refused) until up(). */
  down(): Promise<void>;
  up(): Promise<void>;
  stop(): Promise<void>;
}

export async function startReceiver(options: { secret: string; host?: string; port?: number; path?: string; control?: boolean }): Promise<Receiver> {
  const verifier = new Webhook(options.secret);
  const host = options.host ?? '127.0.0.1';
  const hookPath = options.path ?? '/hook';
  const received: Received[] = [];
  let mode: Mode = 'up';
  let held: (() => void)[] = [];

  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      if (options.control && req.method === 'GET' && req.url === '/_deliveries') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(received));
        return;
      }
      const control = options.control && req.method === 'POST' ? /^\/_(mode|release)(?:\/(\w+))?$/.exec(req.url ?? '') : null;
      if (control) {
        if (control[1] === 'release') release();
        else mode = control[2] as Mode;
        res.writeHead(204).end();
        return;
      }
      if (req.method !== 'POST' || req.url !== hookPath) {
        res.writeHead(404).end();
        return;
      }
      const header = (name: string) => String(req.headers[name] ?? '');
      const entry: Received = {
        id: header('webhook-id'),
        timestamp: header('webhook-timestamp'),
        signature: header('webhook-signature'),
        body,
        payload: undefined,
        acknowledged: false,
      };
      try {
        entry.payload = verifier.verify(body, {
          'webhook-id': entry.id,
          'webhook-timestamp': entry.timestamp,
          'webhook-signature': entry.signature,
        }) as Received['payload'];
      } catch (err) {
        entry.error = (err as Error).message;
      }
      received.push(entry);
      const answer = () => {
        if (res.destroyed) return; // the sender is gone
        if (!entry.payload) return void res.writeHead(400).end('bad signature');
        if (mode === 'failing') return void res.writeHead(503, { 'retry-after': '1' }).end('try later');
        entry.acknowledged = true;
        res.writeHead(204).end();
      };
      if (mode === 'holding') held.push(answer);
      else answer();
    });
  };

  let server = http.createServer(handler);
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
    });
  const port = await listen(options.port ?? 0);

  function release() {
    const waiting = held;
    held = [];
    for (const answer of waiting) answer();
  }
  const close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });

  return {
    url: `http://${host}:${port}${hookPath}`,
    received,
    setMode(next) {
      mode = next;
    },
    release,
    down: close,
    async up() {
      server = http.createServer(handler);
      await listen(port);
    },
    async stop() {
      held = [];
      await close();
    },
  };
}

// In a container: node webhook-receiver.ts (RECEIVER_SECRET; port 8080, path /hook).
if (process.argv[1]?.endsWith('webhook-receiver.ts')) {
  const secret = process.env.RECEIVER_SECRET;
  if (!secret) throw new Error('RECEIVER_SECRET is required');
  void startReceiver({ secret, host: '0.0.0.0', port: 8080, control: true }).then((r) => process.stdout.write(`receiver listening: ${r.url}\n`));
  process.on('SIGTERM', () => process.exit(0));
}
