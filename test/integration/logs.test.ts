// Production safety in the logs: no token, password or Authorization header in any log line, and no
// stack trace in any response.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/test-app';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp({ LOG_LEVEL: 'trace' });
  await t.user('alice', 'alice-password-1');
});
afterAll(() => t.stop());

describe('logs', () => {
  it('carry requests, ids and statuses, but never credentials', async () => {
    const secrets: string[] = ['alice-password-1', 'wrong-password-xyz'];
    const pair = await t.login('alice', 'alice-password-1');
    secrets.push(pair.access, pair.refresh);
    await t.post('/api/token/', { username: 'alice', password: 'wrong-password-xyz' });
    const rotated = (await t.post('/api/token/refresh/', { refresh: pair.refresh })).json;
    secrets.push(rotated.access, rotated.refresh);
    await t.request('GET', '/api/me/?token=query-secret-123', { headers: { Authorization: `Bearer ${rotated.access}` } });
    secrets.push('query-secret-123');
    await t.post('/api/token/verify/', { token: rotated.access });
    await t.post('/api/token/refresh/', { refresh: pair.refresh }); // a replay
    await t.post('/api/token/blacklist/', { refresh: rotated.refresh });
    await t.request('GET', '/api/me/', { headers: { Authorization: 'Bearer not.a.token' } });
    await t.request('POST', '/api/token/', { body: `{"password":"${secrets[0]}",`, headers: { 'Content-Type': 'application/json' } });

    expect(t.logs.length).toBeGreaterThan(8);
    const requestLines = t.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request');
    expect(requestLines.length).toBeGreaterThanOrEqual(8);
    for (const line of requestLines) expect(Object.keys(line)).toEqual(expect.arrayContaining(['request_id', 'method', 'path', 'status', 'ms']));
    for (const line of t.logs) {
      for (const secret of secrets) expect(line).not.toContain(secret);
      // No token-shaped string at all, and no header dump.
      expect(line).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}/);
      expect(line.toLowerCase()).not.toContain('authorization');
      expect(line.toLowerCase()).not.toContain('bearer');
    }
  });

  it('an unexpected error answers 500 without a stack trace, and is logged with the request id', async () => {
    const broken = await startTestApp();
    try {
      await broken.user('bob', 'bob-password-1');
      // Break the users table under the app: its query fails in a way no handler expects.
      await broken.db.sequelize.query('ALTER TABLE users RENAME COLUMN password_hash TO pw');
      const r = await broken.post('/api/token/', { username: 'bob', password: 'bob-password-1' });
      expect(r.status).toBe(500);
      expect(r.json).toEqual({ detail: 'A server error occurred.', code: 'server_error' });
      expect(r.text).not.toMatch(/at .*\.(ts|js):\d+/);
      const id = r.headers.get('x-request-id');
      const logged = broken.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'unhandled error');
      expect(logged.request_id).toBe(id);
      expect(logged.err.stack).toMatch(/at /); // the stack is in the log, for the operator
      expect(JSON.stringify(logged)).not.toContain('bob-password-1');
    } finally {
      await broken.stop();
    }
  });

  it('warns once when requests come through a proxy but TRUST_PROXY_HOPS trusts none', async () => {
    const warnings = () => t.logs.map((l) => JSON.parse(l)).filter((l) => /TRUST_PROXY_HOPS is 0/.test(l.msg));
    await t.request('GET', '/healthz');
    expect(warnings()).toEqual([]);
    await t.request('GET', '/healthz', { headers: { 'X-Forwarded-For': '198.51.100.7' } });
    await t.request('GET', '/healthz', { headers: { 'X-Forwarded-For': '198.51.100.8' } });
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0].level).toBe('warn');
    const behindNginx = await startTestApp({ TRUST_PROXY_HOPS: '1' });
    try {
      await behindNginx.request('GET', '/healthz', { headers: { 'X-Forwarded-For': '198.51.100.7' } });
      expect(behindNginx.logs.filter((l) => l.includes('TRUST_PROXY_HOPS'))).toEqual([]);
    } finally {
      await behindNginx.stop();
    }
  });
});
