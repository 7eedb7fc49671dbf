// A TCP proxy for tests that need a connection to die without closing: freeze() black-holes every
// connection open at that moment (bytes are dropped both ways, the sockets stay open, nothing sends a
// FIN or RST), as a NAT or firewall that forgot the flow would; connections made later pass.
// blackhole(match) does the same to the connections whose first bytes match, the open ones and every
// one made later: a Postgres client's first message names its application_name, so one kind of
// connection (a worker's revocation feed) can be cut off while the rest (its pool) work.
// reset() ends every open connection with a TCP RST both ways, as a server that died or a middlebox
// that dropped the flow would; retarget() sends the connections made from then on elsewhere, as a
// DNS name that moved in a failover would.
import net from 'node:net';

export interface TcpProxy {
  port: number;
  freeze(): void;
  blackhole(match: (hello: Buffer) => boolean): void;
  reset(): void;
  retarget(target: { host: string; port: number }): void;
  close(): Promise<void>;
}

/** Whether a Postgres startup message carries an application_name that starts with `prefix`. */
export const postgresApplication =
  (prefix: string) =>
  (hello: Buffer): boolean =>
    hello.includes(Buffer.from(`application_name\0${prefix}`));

export async function startTcpProxy(initialTarget: { host: string; port: number }): Promise<TcpProxy> {
  let target = initialTarget;
  const open = new Set<{ client: net.Socket; upstream: net.Socket; frozen: boolean; hello?: Buffer }>();
  let rule: ((hello: Buffer) => boolean) | undefined;
  let closing = false;
  const server = net.createServer((client) => {
    if (closing) return void client.destroy();
    const upstream = net.connect(target.port, target.host);
    const pair: { client: net.Socket; upstream: net.Socket; frozen: boolean; hello?: Buffer } = { client, upstream, frozen: false };
    open.add(pair);
    client.on('data', (d: Buffer) => {
      if (pair.hello === undefined) {
        pair.hello = d;
        if (rule?.(d)) pair.frozen = true;
      }
      if (!pair.frozen) upstream.write(d);
    });
    upstream.on('data', (d) => {
      if (!pair.frozen) client.write(d);
    });
    const end = () => {
      if (pair.frozen) return; // a frozen flow never tells either side anything
      open.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    freeze() {
      for (const pair of open) pair.frozen = true;
    },
    blackhole(match) {
      rule = match;
      for (const pair of open) if (pair.hello && match(pair.hello)) pair.frozen = true;
    },
    reset() {
      for (const pair of open) {
        open.delete(pair);
        pair.client.resetAndDestroy();
        pair.upstream.resetAndDestroy();
      }
    },
    retarget(next) {
      target = next;
    },
    async close() {
      closing = true;
      for (const pair of open) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      open.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
