// nginx's TLS switch: plain HTTP by default; with a certificate and key mounted, HTTPS with HTTP/2 on
// 443 and a 308 redirect from 80. The app is not needed: requests it would serve get nginx's 503.
import { execFileSync } from 'node:child_process';
import http2 from 'node:http2';
import path from 'node:path';
import { GenericContainer, Wait, type StartedTestContainer } from 'testcontainers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../support/http';
import { contractError, rawHttp, SECURITY_HEADERS } from '../support/hostile';
import { images, ROOT } from '../support/images';
import { scratchDir } from '../support/scratch';

let image: GenericContainer;
const started: StartedTestContainer[] = [];

beforeAll(async () => {
  image = await GenericContainer.fromDockerfile(path.join(ROOT, 'nginx'))
    .withBuildArgs({ NGINX_IMAGE: images().NGINX_IMAGE })
    .build(`koa-auth-stack-nginx:tls-test${process.env.APP_TAG ? `-${process.env.APP_TAG}` : ''}`, { deleteOnExit: false });
}, 300_000);
afterAll(async () => {
  await Promise.all(started.map((c) => c.stop()));
});

async function start(certDir?: string): Promise<StartedTestContainer> {
  let c = image
    .withEnvironment({ APP_UPSTREAM: '127.0.0.1:9', HTTPS_PORT: '8443' })
    .withExposedPorts(80, ...(certDir ? [443] : []))
    .withWaitStrategy(Wait.forHttp('/healthz', 80).forStatusCode(200));
  if (certDir) c = c.withBindMounts([{ source: certDir, target: '/etc/nginx/certs', mode: 'ro' }]);
  const container = await c.start();
  started.push(container);
  return container;
}

function h2get(origin: string, path: string): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string; alpn: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(origin, { rejectUnauthorized: false });
    session.on('error', reject);
    const req = session.request({ ':path': path });
    let body = '';
    let headers: http2.IncomingHttpHeaders = {};
    req.on('response', (h) => (headers = h));
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      const alpn = (session.socket as unknown as { alpnProtocol?: string }).alpnProtocol ?? '';
      session.close();
      resolve({ status: Number(headers[':status']), headers, body, alpn });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('nginx TLS', () => {
  it('serves plain HTTP on 80 when no certificate is mounted', async () => {
    const c = await start();
    const base = `http://127.0.0.1:${c.getMappedPort(80)}`;
    expect((await request(base, 'GET', '/healthz')).json).toEqual({ status: 'ok' });
    const down = await request(base, 'GET', '/api/me/');
    expect(down.status).toBe(503);
    expect(down.json).toMatchObject({ code: 'service_unavailable' });
    expect(down.headers.get('retry-after')).toBe('2');
    // nginx's own answers carry the app's security headers too, Retry-After or not.
    for (const [name, pattern] of Object.entries(SECURITY_HEADERS)) expect(down.headers.get(name), name).toMatch(pattern);
    expect(down.headers.get('strict-transport-security')).toBeNull(); // plain HTTP: no HSTS
    for (const target of ['/api/me/%00', '/__errors/400', '/__errors/503']) {
      const r = await rawHttp(base, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      expect(contractError(r), `${target}: ${r.status} ${r.body}`).toEqual([]);
      for (const [name, pattern] of Object.entries(SECURITY_HEADERS)) expect(r.headers[name], `${target} ${name}`).toMatch(pattern);
    }
  });

  it('serves HTTPS with HTTP/2 when tls.crt and tls.key are mounted, and redirects 80 with 308', async () => {
    const certs = await scratchDir('certs-');
    execFileSync('bash', [path.join(ROOT, 'scripts/make-dev-cert.sh'), certs]);
    const c = await start(certs);
    const http = `http://127.0.0.1:${c.getMappedPort(80)}`;
    const redirect = await request(http, 'POST', '/api/token/?x=1', { json: {} });
    expect(redirect.status).toBe(308);
    expect(redirect.headers.get('location')).toBe('https://127.0.0.1:8443/api/token/?x=1');
    expect((await request(http, 'GET', '/healthz')).status).toBe(200);

    const https = `https://127.0.0.1:${c.getMappedPort(443)}`;
    const health = await h2get(https, '/healthz');
    expect(health.alpn).toBe('h2');
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toEqual({ status: 'ok' });
    expect(health.headers['strict-transport-security']).toBe('max-age=63072000');
    const api = await h2get(https, '/api/me/');
    expect(api.status).toBe(503);
    expect(api.headers['x-request-id']).toMatch(/^[0-9a-f]{32}$/);
    expect(api.headers['strict-transport-security']).toBe('max-age=63072000');
    expect(api.headers['x-content-type-options']).toBe('nosniff');
    // The redirecting port answers bad requests as JSON too, not with nginx's HTML page.
    const bad = await rawHttp(http, 'GET /api/me/%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(contractError(bad), bad.body).toEqual([]);
    // Plain HTTP sent to the TLS port: 400 as JSON, not nginx's HTML.
    const plain = await rawHttp(`http://127.0.0.1:${c.getMappedPort(443)}`, 'GET /api/me/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(plain.status).toBe(400);
    expect(contractError(plain), plain.body).toEqual([]);
  });
});
