// A TCP proxy for tests that need a connection to die without closing: freeze() black-holes every
// connection open at that moment (bytes are dropped both ways, the sockets stay open, nothing sends a
// FIN or RST), as a NAT or firewall that forgot the flow would; connections made later pass.
// reset() ends every open connection with a TCP RST both ways, as a server that died or a middlebox
// that dropped the flow would; retarget() sends the connections made from then on elsewhere, as a
// DNS name that moved in a failover would.
import net from 'node:net';

export interface TcpProxy {
  port: number;
  freeze(): void;
  reset(): void;
  retarget(target: { host: string; port: number }): void;
  close(): Promise<void>;
}

export async function startTcpProxy(initialTarget: { host: string; port: number }): Promise<TcpProxy> {
  let target = initialTarget;
  const open = new Set<{ client: net.Socket; upstream: net.Socket; frozen: boolean }>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    const pair = { client, upstream, frozen: false };
    open.add(pair);
    client.on('data', (d) => {
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
      for (const pair of open) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      open.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
