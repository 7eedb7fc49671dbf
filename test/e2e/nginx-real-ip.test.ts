// nginx behind another proxy or load balancer (REAL_IP_FROM): the client address it limits, logs and
// hands the app is the one a trusted proxy names, and only that; from anyone else a client-written
// X-Forwarded-For changes nothing. The app is a Koa server set up as app/app.ts sets it up behind
// nginx (TRUST_PROXY_HOPS=1: app.proxy, maxIpsCount 1), answering with the address it sees, ctx.ip,
// which is what it throttles on, logs and shows in the session list. It also plays the proxy in
// front: requests sent from inside its container come from its address.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { GenericContainer, Network, Wait, type StartedNetwork, type StartedTestContainer } from 'testcontainers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../support/http';
import { images, ROOT } from '../support/images';
import { run } from '../support/stack';

const ECHO = `
const Koa = require('koa');
const app = new Koa();
// app/app.ts with TRUST_PROXY_HOPS=1:
app.proxy = true;
app.maxIpsCount = 1;
app.use((ctx) => { ctx.body = { ip: ctx.ip, forwardedFor: ctx.get('x-forwarded-for') }; });
app.listen(3000);
`;

// Sends POST /api/token/ with each X-Forwarded-For value in turn (argv[1]: the URL, argv[2]: the
// values as JSON) and prints every answer.
const CLIENT = `
const [url, values] = [process.argv[1], JSON.parse(process.argv[2])];
(async () => {
  const out = [];
  for (const xff of values) {
    const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', 'x-forwarded-for': xff }, body: '{}' });
    const text = await r.text();
    out.push({ status: r.status, ip: r.status === 200 ? JSON.parse(text).ip : undefined });
  }
  process.stdout.write(JSON.stringify(out));
})();
`;

interface Answer {
  status: number;
  ip: string | undefined;
}

let network: StartedNetwork;
let echo: StartedTestContainer;
let echoAddress: string;
/** The echo server's script, bind-mounted into its container. */
let echoDir: string | undefined;
/** nginx trusting the echo container (the proxy in front), and nginx as shipped (trusting nobody). */
let behindProxy: StartedTestContainer;
let shipped: StartedTestContainer;
const started: StartedTestContainer[] = [];

const NGINX_TAG = `koa-auth-stack-nginx:tls-test${process.env.APP_TAG ? `-${process.env.APP_TAG}` : ''}`;

beforeAll(async () => {
  await GenericContainer.fromDockerfile(path.join(ROOT, 'nginx'))
    .withBuildArgs({ NGINX_IMAGE: images().NGINX_IMAGE })
    .build(NGINX_TAG, { deleteOnExit: false });
  network = await new Network().start();
  const dir = (echoDir = mkdtempSync(path.join(tmpdir(), 'real-ip-')));
  writeFileSync(path.join(dir, 'echo.js'), ECHO);
  echo = await new GenericContainer(images().NODE_IMAGE)
    .withNetwork(network)
    .withNetworkAliases('echo')
    .withBindMounts([
      { source: dir, target: '/srv/echo', mode: 'ro' },
      { source: path.join(ROOT, 'node_modules'), target: '/srv/node_modules', mode: 'ro' },
    ])
    .withEnvironment({ NODE_PATH: '/srv/node_modules' })
    .withCommand(['node', '/srv/echo/echo.js'])
    .withWaitStrategy(Wait.forListeningPorts())
    .withExposedPorts(3000)
    .start();
  started.push(echo);
  echoAddress = echo.getIpAddress(network.getName());
  const nginx = (env: Record<string, string>) =>
    new GenericContainer(NGINX_TAG)
      .withNetwork(network)
      .withEnvironment({ APP_UPSTREAM: 'echo:3000', LOGIN_RATE: '1r/m', LOGIN_BURST: '2', ...env })
      .withExposedPorts(80)
      .withWaitStrategy(Wait.forHttp('/healthz', 80).forStatusCode(200))
      .start();
  [behindProxy, shipped] = await Promise.all([nginx({ REAL_IP_FROM: `192.0.2.0/24, ${echoAddress}/32` }), nginx({})]);
  started.push(behindProxy, shipped);
}, 300_000);

afterAll(async () => {
  await Promise.all(started.map((c) => c.stop()));
  await network?.stop();
  if (echoDir) rmSync(echoDir, { recursive: true, force: true });
});

/** From the test (a peer no nginx trusts), through the published port. */
async function fromOutside(nginx: StartedTestContainer, forwardedFor: string[]): Promise<Answer[]> {
  const out: Answer[] = [];
  for (const xff of forwardedFor) {
    const r = await request(`http://127.0.0.1:${nginx.getMappedPort(80)}`, 'POST', '/api/token/', { json: {}, headers: { 'X-Forwarded-For': xff } });
    out.push({ status: r.status, ip: r.status === 200 ? r.json.ip : undefined });
  }
  return out;
}

/** From the proxy in front (the echo container's address). */
async function fromProxy(nginx: StartedTestContainer, forwardedFor: string[]): Promise<Answer[]> {
  const url = `http://${nginx.getIpAddress(network.getName())}/api/token/`;
  const r = await echo.exec(['node', '-e', CLIENT, url, JSON.stringify(forwardedFor)]);
  expect(r.exitCode, r.output).toBe(0);
  return JSON.parse(r.stdout) as Answer[];
}

/** nginx's access-log lines for the token endpoint: who it says the client was, and who connected. */
async function accessLog(nginx: StartedTestContainer): Promise<{ remote_addr: string; peer_addr: string; status: number; uri: string }[]> {
  const r = await run('docker', ['logs', nginx.getId()]);
  return r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l))
    // A refusal is logged under its error page's URI.
    .filter((l) => l.uri === '/api/token/' || l.uri.startsWith('/__errors/'));
}

const statuses = (answers: Answer[]) => answers.map((a) => a.status);

describe('nginx behind a trusted proxy (REAL_IP_FROM)', () => {
  it('ignores a forged X-Forwarded-For from a peer it does not trust: the app and the limit see the peer', async () => {
    const answers = await fromOutside(behindProxy, ['203.0.113.1', '203.0.113.2', '203.0.113.3', '203.0.113.4']);
    // One key for all four (the peer's): 1 + burst 2 pass, the fourth is refused.
    expect(statuses(answers)).toEqual([200, 200, 200, 429]);
    const seen = new Set(answers.filter((a) => a.status === 200).map((a) => a.ip));
    expect(seen.size).toBe(1);
    const [peer] = [...seen];
    expect(peer).not.toMatch(/^203\.0\.113\./);
    const log = (await accessLog(behindProxy)).filter((l) => l.peer_addr === peer);
    expect(log.map((l) => l.status)).toEqual([200, 200, 200, 429]);
    for (const l of log) expect(l.remote_addr).toBe(peer);
  });

  it('takes the client address from the trusted proxy: the app and the limit see that client', async () => {
    // One client behind the proxy: its own budget (1 + burst 2), whatever else the proxy sends.
    expect(await fromProxy(behindProxy, ['198.51.100.9', '198.51.100.9', '198.51.100.9', '198.51.100.9'])).toEqual([
      ...Array(3).fill({ status: 200, ip: '198.51.100.9' }),
      { status: 429 },
    ]);
    // Four other clients through the same proxy: none is limited by the first one's requests.
    const others = ['198.51.100.1', '198.51.100.2', '198.51.100.3', '198.51.100.4'];
    expect(await fromProxy(behindProxy, others)).toEqual(others.map((ip) => ({ status: 200, ip })));
    // What a client wrote before the proxy's own entry is not believed: the rightmost entry no
    // trusted proxy added is the client.
    expect(await fromProxy(behindProxy, ['203.0.113.66, 198.51.100.20'])).toEqual([{ status: 200, ip: '198.51.100.20' }]);
    const log = (await accessLog(behindProxy)).filter((l) => l.peer_addr === echoAddress);
    expect(log.map((l) => l.remote_addr)).toEqual(['198.51.100.9', '198.51.100.9', '198.51.100.9', '198.51.100.9', ...others, '198.51.100.20']);
  });

  it('trusts no proxy by default: the same requests from the same proxy count as the proxy’s own', async () => {
    const answers = await fromProxy(shipped, ['198.51.100.1', '198.51.100.2', '198.51.100.3', '198.51.100.4']);
    expect(answers).toEqual([...Array(3).fill({ status: 200, ip: echoAddress }), { status: 429 }]);
    expect((await accessLog(shipped)).map((l) => l.remote_addr)).toEqual(Array(4).fill(echoAddress));
  });

  it('refuses to start with a trusted range that is not one', async () => {
    const r = await run('docker', ['run', '--rm', '-e', 'APP_UPSTREAM=127.0.0.1:9', '-e', 'REAL_IP_FROM=10.0.0.0/8 example.net', NGINX_TAG, 'true']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("REAL_IP_FROM: 'example.net' is not an address or CIDR range");
  });
});
