// What the routes count and log: every outcome of the token endpoints, request counts by route
// template, and at LOG_LEVEL=info no line per request but one per security event, with its request id.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, startTestApp, type TestApp } from '../support/test-app';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp({ LOG_LEVEL: 'info', LOGIN_THROTTLE_FREE_ATTEMPTS: '2', REFRESH_THROTTLE_PER_MINUTE: '3' });
  await t.user('alice', 'alice-password-1');
  await t.user('bob', 'bob-password-1');
});
afterAll(() => t.stop());

async function value(name: string, labels: Record<string, string>): Promise<number> {
  const metric = (await t.services.metrics.shared.getMetricsAsJSON()).find((m) => m.name === name);
  const found = metric?.values.find((v) => Object.entries(labels).every(([k, l]) => String(v.labels[k]) === l));
  return found?.value ?? 0;
}

const events = () => t.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'security event');

describe('metrics of the token endpoints', () => {
  it('count requests by route template and status, whichever spelling the path had', async () => {
    const { access } = await t.login('alice', 'alice-password-1');
    const before = await value('http_requests_total', { method: 'GET', route: '/api/me/', status: '200' });
    for (const p of ['/api/me/', '/api/me', '/api/me/', '/api/me/?x=1']) {
      expect((await t.request('GET', p, { headers: { Authorization: `Bearer ${access}` } })).status).toBe(200);
    }
    expect(await value('http_requests_total', { method: 'GET', route: '/api/me/', status: '200' })).toBe(before + 4);
    await t.request('GET', '/nowhere/12345');
    expect(await value('http_requests_total', { method: 'GET', route: 'unmatched', status: '404' })).toBe(1);
    expect(await value('http_requests_total', { method: 'GET', route: '/nowhere/12345', status: '404' })).toBe(0);
  });

  it('count login outcomes, and log failures and throttling with the request id', async () => {
    const success = await value('auth_logins_total', { outcome: 'success' });
    await t.login('bob', 'bob-password-1');
    expect(await value('auth_logins_total', { outcome: 'success' })).toBe(success + 1);

    const replies = [];
    // Two free attempts, then a wait that refuses the third.
    for (let i = 0; i < 3; i++) replies.push(await t.post('/api/token/', { username: 'bob', password: 'wrong-password' }));
    expect(replies.map((r) => r.status)).toEqual([401, 401, 429]);
    expect(await value('auth_logins_total', { outcome: 'failure' })).toBe(2);
    expect(await value('auth_logins_total', { outcome: 'throttled' })).toBe(1);
    const ids = replies.map((r) => r.headers.get('x-request-id'));
    expect(events().filter((e) => ids.includes(e.request_id as string)).map((e) => e.event)).toEqual(['login_failure', 'login_failure', 'login_throttled']);
  });

  it('count refresh outcomes and revocations; a replay is logged as reuse and revocation', async () => {
    const pair = await t.login('alice', 'alice-password-1');
    const rotated = await t.post('/api/token/refresh/', { refresh: pair.refresh });
    expect(rotated.status).toBe(200);
    expect(await value('auth_refreshes_total', { outcome: 'rotated' })).toBe(1);

    const replay = await t.post('/api/token/refresh/', { refresh: pair.refresh });
    expect(replay.status).toBe(401);
    expect(await value('auth_refreshes_total', { outcome: 'reused' })).toBe(1);
    expect(await value('auth_revocations_total', { reason: 'reuse' })).toBe(1);
    expect(events().filter((e) => e.request_id === replay.headers.get('x-request-id')).map((e) => [e.event, e.reason])).toEqual([
      ['refresh_reused', undefined],
      ['revocation', 'reuse'],
    ]);
    // The rotated child belongs to the revoked family now.
    expect((await t.post('/api/token/refresh/', { refresh: rotated.json.refresh })).status).toBe(401);
    expect(await value('auth_refreshes_total', { outcome: 'revoked' })).toBe(1);
    expect((await t.post('/api/token/refresh/', { refresh: 'not.a.token' })).status).toBe(401);
    expect(await value('auth_refreshes_total', { outcome: 'invalid' })).toBe(1);
    // The per-session limit (3 a minute here): the fourth refresh of one session is throttled.
    let { refresh } = await t.login('alice', 'alice-password-1');
    for (let i = 0; i < 3; i++) refresh = (await t.post('/api/token/refresh/', { refresh })).json.refresh;
    expect((await t.post('/api/token/refresh/', { refresh })).status).toBe(429);
    expect(await value('auth_refreshes_total', { outcome: 'rotated' })).toBe(4);
    expect(await value('auth_refreshes_total', { outcome: 'throttled' })).toBe(1);

    const session = await t.login('alice', 'alice-password-1');
    expect((await t.post('/api/token/blacklist/', { refresh: session.refresh })).status).toBe(200);
    expect(await value('auth_revocations_total', { reason: 'logout' })).toBe(1);
    // The revocation reaches this worker's store by NOTIFY, a moment after the logout's answer; a
    // GET changes nothing while it waits.
    await eventually(async () => (await t.request('GET', '/api/me/', { headers: { Authorization: `Bearer ${session.access}` } })).status === 401);
    const all = await t.request('POST', '/api/token/logout-all/', { headers: { Authorization: `Bearer ${session.access}` } });
    expect(all.status).toBe(401); // its family is revoked: that access token is void
    const fresh = await t.login('alice', 'alice-password-1');
    expect((await t.request('POST', '/api/token/logout-all/', { headers: { Authorization: `Bearer ${fresh.access}` } })).status).toBe(200);
    expect(await value('auth_revocations_total', { reason: 'logout_all' })).toBe(1);
  });

  it('at info, logs no line per request: only events, errors and slow requests', async () => {
    const { access } = await t.login('alice', 'alice-password-1');
    const r = await t.request('GET', '/api/me/', { headers: { Authorization: `Bearer ${access}` } });
    const id = r.headers.get('x-request-id')!;
    // A request that is logged (a failed login, a security event), after it: once its line is here,
    // a line of the GET's would be too, lines being written in order.
    const marker = await t.post('/api/token/', { username: 'nobody-here', password: 'x' });
    await eventually(() => t.logs.some((l) => l.includes(marker.headers.get('x-request-id')!)));
    expect(t.logs.filter((l) => l.includes(id))).toEqual([]);
    expect(t.logs.map((l) => JSON.parse(l).msg)).not.toContain('request');
  });

  it('logs a request slower than SLOW_REQUEST_MS at info', async () => {
    const slow = await startTestApp({ LOG_LEVEL: 'info', SLOW_REQUEST_MS: '0' });
    try {
      const r = await slow.request('GET', '/api/me/');
      const mine = () => slow.logs.map((l) => JSON.parse(l)).find((l) => l.request_id === r.headers.get('x-request-id'));
      await eventually(() => mine() !== undefined);
      expect(mine()).toMatchObject({ level: 'info', msg: 'slow request', method: 'GET', path: '/api/me/', status: 401 });
    } finally {
      await slow.stop();
    }
  });
});
