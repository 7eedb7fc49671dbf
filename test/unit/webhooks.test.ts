// The webhook parts that need no database: the retry schedule, the Standard Webhooks signatures (as
// the spec's library verifies them), one delivery attempt against local receivers (no redirect
// followed, deadlines, a bounded read), and the configuration.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../app/config';
import { nextAttemptAt } from '../../app/events/delivery';
import { createSender, retryAfterMs } from '../../app/events/send';
import { createSigner } from '../../app/events/signing';
import { EVENT_TYPES } from '../../app/events/types';
import { thrown } from '../support/thrown';

const secret = () => `whsec_${randomBytes(32).toString('base64')}`;

describe('the retry schedule', () => {
  const s = { retryBaseMs: 5_000, retryMaxMs: 3_600_000, maxAgeMs: 86_400_000 };
  const at = (attempts: number, random: number, retryAfter?: number) => nextAttemptAt(attempts, 0, 0, s, () => random, retryAfter);

  it('doubles from the base up to the ceiling, drawn between half of it and all of it', () => {
    expect([1, 2, 3, 4, 5].map((n) => at(n, 1 - Number.EPSILON))).toEqual([5_000, 10_000, 20_000, 40_000, 80_000]);
    expect([1, 2, 3].map((n) => at(n, 0))).toEqual([2_500, 5_000, 10_000]);
    expect(at(30, 1 - Number.EPSILON)).toBe(3_600_000);
    expect(at(200, 0)).toBe(1_800_000); // no overflow at any count
  });

  it('waits at least what the receiver asked (Retry-After), up to the ceiling', () => {
    expect(at(1, 0, 120_000)).toBe(120_000);
    expect(at(1, 0, 999_999_999)).toBe(3_600_000);
    expect(at(5, 0.999999, 1_000)).toBe(80_000);
  });

  it('makes its last attempt at WEBHOOK_MAX_AGE after the event, then gives up', () => {
    const day = 86_400_000;
    expect(nextAttemptAt(20, day - 60_000, 0, s, () => 0.5)).toBe(day);
    expect(nextAttemptAt(21, day, 0, s, () => 0.5)).toBeNull();
    expect(nextAttemptAt(1, day, day / 2, s, () => 0)).toBe(day + 2_500); // a manual retry moved the start
  });
});

describe('signatures', () => {
  const body = JSON.stringify({ type: 'login.succeeded', timestamp: '2026-01-01T00:00:00.000Z', data: { user_id: 1 } });

  it('are v1,<base64 HMAC-SHA256 of id.timestamp.body> as the standardwebhooks library verifies them', () => {
    const key = secret();
    const now = new Date();
    const headers = createSigner([key])('msg_0123456789abcdef0123456789abcdef', now, body);
    expect(headers['webhook-id']).toBe('msg_0123456789abcdef0123456789abcdef');
    expect(headers['webhook-timestamp']).toBe(String(Math.floor(now.getTime() / 1000)));
    expect(headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]{43}=$/);
    expect(new Webhook(key).verify(body, { ...headers })).toEqual(JSON.parse(body));
    expect(() => new Webhook(key).verify(body.replace('1}', '2}'), { ...headers })).toThrow(/No matching signature/);
    expect(() => new Webhook(secret()).verify(body, { ...headers })).toThrow(/No matching signature/);
  });

  it('carry one signature per secret during a rotation: a receiver that knows either verifies', () => {
    const [current, old] = [secret(), secret()];
    const headers = createSigner([current, old])('msg_1', new Date(), body);
    expect(headers['webhook-signature'].split(' ')).toHaveLength(2);
    expect(new Webhook(current).verify(body, { ...headers })).toBeTruthy();
    expect(new Webhook(old).verify(body, { ...headers })).toBeTruthy();
  });
});

describe('one delivery attempt', () => {
  const servers: http.Server[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) {
      s.closeAllConnections();
      await new Promise((resolve) => s.close(resolve));
    }
  });
  const serve = async (handler: http.RequestListener) => {
    const server = http.createServer(handler);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  };
  const sender = (timeoutMs = 2_000) => createSender({ timeoutMs, connectTimeoutMs: timeoutMs, responseLimitBytes: 1024 });

  it('POSTs the body with the signature headers as JSON; a 2xx is a delivery', async () => {
    let seen: { method?: string; headers?: http.IncomingHttpHeaders; body?: string } = {};
    const url = await serve((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        seen = { method: req.method!, headers: req.headers, body };
        res.writeHead(202).end();
      });
    });
    const send = sender();
    expect(await send(`${url}/hook`, { 'webhook-id': 'msg_1' }, '{"a":1}')).toEqual({ ok: true, status: 202 });
    send.close();
    expect(seen).toMatchObject({ method: 'POST', body: '{"a":1}', headers: { 'webhook-id': 'msg_1', 'content-type': 'application/json', 'content-length': '7' } });
  });

  it('never follows a redirect: a 3xx is a failed attempt, and its target is never asked', async () => {
    let followed = 0;
    const elsewhere = await serve((_req, res) => {
      followed += 1;
      res.writeHead(200).end();
    });
    const url = await serve((_req, res) => res.writeHead(307, { location: `${elsewhere}/stolen` }).end());
    const send = sender();
    expect(await send(url, {}, '{}')).toEqual({ ok: false, status: 307, error: 'HTTP 307 (redirects are not followed)' });
    send.close();
    expect(followed).toBe(0);
  });

  it('fails on other statuses, taking Retry-After from a 429 or 503', async () => {
    const url = await serve((req, res) => {
      if (req.url === '/busy') res.writeHead(503, { 'retry-after': '30' }).end();
      else res.writeHead(500).end('boom');
    });
    const send = sender();
    expect(await send(`${url}/busy`, {}, '{}')).toEqual({ ok: false, status: 503, error: 'HTTP 503', retryAfterMs: 30_000 });
    expect(await send(`${url}/x`, {}, '{}')).toEqual({ ok: false, status: 500, error: 'HTTP 500' });
    send.close();
    expect(retryAfterMs('Wed, 21 Oct 2015 07:28:30 GMT', Date.parse('Wed, 21 Oct 2015 07:28:00 GMT'))).toBe(30_000);
    expect(retryAfterMs('soon', 0)).toBeUndefined();
  });

  it('gives up on a receiver that does not answer in time, and reads only the start of a long answer', async () => {
    const silent = await serve(() => {}); // reads the request, never answers
    const chatty = await serve((_req, res) => {
      res.writeHead(200);
      res.write(Buffer.alloc(64 * 1024, 'x')); // then keeps the answer open
    });
    const send = sender(300);
    const started = Date.now();
    const slow = await send(silent, {}, '{}');
    expect(slow).toEqual({ ok: false, error: 'no answer within 300 ms' });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(await send(chatty, {}, '{}')).toEqual({ ok: true, status: 200 });
    send.close();
  });

  it('reports a refused connection as a failed attempt', async () => {
    const url = await serve(() => {});
    const server = servers.pop()!;
    await new Promise((resolve) => server.close(resolve));
    const send = sender();
    expect(await send(url, {}, '{}')).toMatchObject({ ok: false, error: expect.stringMatching(/ECONNREFUSED/) });
    send.close();
  });
});

describe('webhook configuration', () => {
  const base = { DATABASE_URL: 'postgres://u:p@db:5432/app', SIGNING_KEY: 'a-test-signing-key-0123456789abcdef-XYZ' };
  const fail = (env: Record<string, string>) => thrown(() => loadConfig({ ...base, ...env }), ConfigError).message;

  it('is off by default; on with URLs and a whsec_ secret, every event type, the spec-recommended timeouts', () => {
    expect(loadConfig(base).config.webhooks).toMatchObject({ endpoints: [], secrets: [] });
    const key = secret();
    const { webhooks } = loadConfig({ ...base, WEBHOOK_URL: 'https://a.example/h, https://b.example/h https://a.example/h', WEBHOOK_SECRET: key }).config;
    expect(webhooks.endpoints.map((e) => e.url)).toEqual(['https://a.example/h', 'https://b.example/h']);
    expect(webhooks.endpoints.map((e) => e.key)).toEqual([expect.stringMatching(/^[0-9a-f]{16}$/), expect.stringMatching(/^[0-9a-f]{16}$/)]);
    expect(webhooks.secrets).toEqual([key]);
    expect([...webhooks.events]).toEqual([...EVENT_TYPES]);
    expect(webhooks).toMatchObject({ timeoutMs: 15_000, connectTimeoutMs: 5_000, maxAgeMs: 86_400_000, retryBaseMs: 5_000, retryMaxMs: 3_600_000 });
  });

  it('takes several secrets (rotation), and event types by name or group', () => {
    const [a, b] = [secret(), secret()];
    const { webhooks } = loadConfig({ ...base, WEBHOOK_URL: 'https://a.example/h', WEBHOOK_SECRET: `${a} ${b}`, WEBHOOK_EVENTS: 'login.*, user.created' }).config;
    expect(webhooks.secrets).toEqual([a, b]);
    expect([...webhooks.events].sort()).toEqual(['login.failed', 'login.succeeded', 'login.throttled', 'user.created']);
  });

  it('refuses a missing or malformed secret, unknown event types, and bad URLs, naming the variable', () => {
    expect(fail({ WEBHOOK_URL: 'https://a.example/h' })).toMatch(/WEBHOOK_SECRET: is required when WEBHOOK_URL is set/);
    expect(fail({ WEBHOOK_URL: 'https://a.example/h', WEBHOOK_SECRET: 'whsec_c2hvcnQ=' })).toMatch(/WEBHOOK_SECRET: expected whsec_ and the base64 of 24 to 64/);
    expect(fail({ WEBHOOK_URL: 'https://a.example/h', WEBHOOK_SECRET: 'not-a-secret' })).toMatch(/WEBHOOK_SECRET/);
    expect(fail({ WEBHOOK_EVENTS: 'login.succeeded,token.issued' })).toMatch(/WEBHOOK_EVENTS: unknown event type "token.issued"/);
    expect(fail({ WEBHOOK_URL: 'ftp://a.example/h' })).toMatch(/WEBHOOK_URL: expected an https:\/\//);
    expect(fail({ WEBHOOK_URL: 'https://a.example/h#x' })).toMatch(/WEBHOOK_URL: a webhook URL has no #fragment/);
  });

  it('sends only over https:// in production, unless WEBHOOK_ALLOW_HTTP says a plain receiver is meant', () => {
    const prod = { NODE_ENV: 'production', SIGNING_KEY: randomBytes(48).toString('base64'), WEBHOOK_URL: 'http://receiver:8080/hook', WEBHOOK_SECRET: secret() };
    expect(fail(prod)).toMatch(/WEBHOOK_URL: must be https:\/\/ when NODE_ENV=production/);
    const allowed = loadConfig({ ...base, ...prod, WEBHOOK_ALLOW_HTTP: 'true' });
    expect(allowed.warnings.join()).toMatch(/unencrypted/);
    expect(loadConfig({ ...base, WEBHOOK_URL: 'http://127.0.0.1:9/hook', WEBHOOK_SECRET: secret() }).config.webhooks.endpoints).toHaveLength(1);
  });
});
