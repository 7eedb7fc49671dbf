// Hostile input: every class gets a 4xx in the contract's error shape, never a 5xx, a hang or a dead
// process.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signHs, type Reply } from '../support/http';
import { contractError, HOSTILE_REQUESTS, rawHttp as rawRequest } from '../support/hostile';
import { startTestApp, TEST_SIGNING_KEY, type TestApp } from '../support/test-app';

let t: TestApp;
let alice: number;
beforeAll(async () => {
  t = await startTestApp();
  alice = await t.user('alice', 'alice-password-1');
});
afterAll(async () => {
  // The process is alive and well after all of it.
  expect((await t.request('GET', '/healthz')).status).toBe(200);
  await t.stop();
});

const raw = (body: string | Buffer, contentType = 'application/json', path = '/api/token/') =>
  t.request('POST', path, { body, headers: { 'Content-Type': contentType } });
function expect4xx(r: Reply, status?: number) {
  if (status !== undefined) expect(r.status, r.text).toBe(status);
  expect(r.status, r.text).toBeGreaterThanOrEqual(400);
  expect(r.status, r.text).toBeLessThan(500);
  expect(r.headers.get('content-type')).toBe('application/json');
  expect(typeof r.json).toBe('object');
}

const rawHttp = (request: string | Buffer) => rawRequest(t.url, request);

describe('every hostile request (the list the stack test sends through nginx too)', () => {
  it('gets a 4xx in the contract\'s JSON shape from the app', async () => {
    for (const { name, request } of HOSTILE_REQUESTS) {
      const reply = await rawHttp(request);
      expect(contractError(reply), `${name}: ${reply.status} ${reply.body.slice(0, 120)}`).toEqual([]);
    }
  });
});

describe('request bodies', () => {
  it('malformed JSON: 400 JSON parse error', async () => {
    for (const body of ['{', '{"username": }', 'nul', '{"a":1}}', '\u0000']) {
      const r = await raw(body);
      expect4xx(r, 400);
      expect(r.json.detail).toMatch(/^JSON parse error - /);
    }
  });

  it('wrong content types: 415', async () => {
    for (const type of ['text/plain', 'application/xml', 'application/json-patch+json', 'multipart/mixed', 'x']) {
      expect4xx(await raw('{}', type), 415);
    }
  });

  it('bodies over the limit: 413 with a code, declared or streamed', async () => {
    const big = JSON.stringify({ username: 'a', password: 'x'.repeat(70_000) });
    const r = await raw(big);
    expect4xx(r, 413);
    expect(r.json.code).toBe('request_too_large');
    const form = new FormData();
    form.set('username', 'a');
    form.set('password', 'x'.repeat(70_000));
    expect4xx(await t.request('POST', '/api/token/', { body: form }), 413);
    const chunked = await rawHttp(
      `POST /api/token/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n` +
        `11170\r\n${'{'.repeat(70_000)}\r\n0\r\n\r\n`,
    );
    expect(chunked.status).toBe(413);
  });

  it('deep nesting: 400, no stack overflow', async () => {
    for (const body of ['['.repeat(30_000) + ']'.repeat(30_000), '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000)]) {
      expect4xx(await raw(body), 400);
    }
    const nested = await t.post('/api/token/', { username: { a: { b: { c: [] } } }, password: [[['x']]] });
    expect(nested.json).toEqual({ username: ['Not a valid string.'], password: ['Not a valid string.'] });
  });

  it('non-string fields: DRF field errors', async () => {
    const r = await t.post('/api/token/', { username: true, password: { $ne: null } });
    expect4xx(r, 400);
    expect(r.json).toEqual({ username: ['Not a valid string.'], password: ['Not a valid string.'] });
    for (const path of ['/api/token/refresh/', '/api/token/blacklist/']) {
      expect((await t.post(path, { refresh: 12345 })).json).toEqual({ detail: 'Token is invalid or expired', code: 'token_not_valid' });
      expect((await t.post(path, { refresh: ['a'] })).json).toEqual({ refresh: ['Not a valid string.'] });
    }
  });

  it('NUL bytes: 400 "Null characters are not allowed."', async () => {
    const r = await t.post('/api/token/', { username: 'ali\u0000ce', password: 'alice-password-1' });
    expect4xx(r, 400);
    expect(r.json).toEqual({ username: ['Null characters are not allowed.'] });
    const form = await t.request('POST', '/api/token/', { body: new URLSearchParams({ username: 'alice', password: 'a\u0000' }) });
    expect(form.json).toEqual({ password: ['Null characters are not allowed.'] });
  });

  it('invalid UTF-8: read as U+FFFD, as @koa/bodyparser decodes, so the credentials match nobody (4xx)', async () => {
    const bytes = Buffer.concat([Buffer.from('{"username":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('","password":"x"}')]);
    expect4xx(await raw(bytes), 401);
    expect4xx(await raw(Buffer.concat([Buffer.from('username=ali'), Buffer.from([0xff]), Buffer.from('ce&password=alice-password-1')]), 'application/x-www-form-urlencoded'), 401);
    // Lone surrogates are valid JSON escapes but not characters.
    const s = await raw('{"username":"\\ud800","password":"x"}');
    expect(s.json).toEqual({ username: ['Surrogate characters are not allowed: U+D800.'] });
  });

  it('unicode look-alike usernames: NFKC on create and login; other scripts stay other users', async () => {
    expect((await t.post('/api/token/', { username: 'ａｌｉｃｅ', password: 'alice-password-1' })).status).toBe(200); // fullwidth
    expect((await t.post('/api/token/', { username: 'alice\u0301', password: 'alice-password-1' })).status).toBe(401);
    expect((await t.post('/api/token/', { username: 'аlice', password: 'alice-password-1' })).status).toBe(401); // Cyrillic а
    await expect(t.user('ａｌｉｃｅ', 'another-password')).rejects.toThrow(/taken/);
  });

  it('__proto__ keys pollute nothing', async () => {
    // The bodyparser's JSON reader (bourne) refuses a __proto__ key outright.
    const r = await raw('{"__proto__": {"username": "alice", "password": "alice-password-1"}}');
    expect4xx(r, 400);
    expect(r.json.detail).toMatch(/^JSON parse error - /);
    const f = await t.request('POST', '/api/token/', {
      body: '__proto__=x&constructor=y&username=alice&password=alice-password-1',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    expect(f.status).toBe(200);
    expect(({} as Record<string, unknown>).username).toBeUndefined();
  });

  it('a body longer than its Content-Length: 400, no hang', async () => {
    const r = await rawHttp('POST /api/token/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{"a":1}');
    expect(r.status).toBe(400);
  });
});

describe('headers', () => {
  it('very long headers: 431 as JSON, from Node itself', async () => {
    const r = await rawHttp(`GET /api/me/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${'a'.repeat(70_000)}\r\nConnection: close\r\n\r\n`);
    expect(r.status).toBe(431);
    expect(JSON.parse(r.body)).toEqual({ detail: 'Request headers are too large.', code: 'headers_too_large' });
    // Below the limit, a long Authorization is just an invalid token.
    const long = await t.request('GET', '/api/me/', { headers: { Authorization: `Bearer ${'a'.repeat(20_000)}` } });
    expect4xx(long, 401);
  });

  it('malformed HTTP: 400 as JSON', async () => {
    const r = await rawHttp('GET /api/me/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n');
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).code).toBe('bad_request');
  });

  it('duplicate Authorization headers: 401 bad_authorization_header', async () => {
    const { access } = await t.login('alice', 'alice-password-1');
    const r = await rawHttp(
      `GET /api/me/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${access}\r\nAuthorization: Bearer garbage\r\nConnection: close\r\n\r\n`,
    );
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body)).toEqual({ detail: 'Authorization header must be sent once', code: 'bad_authorization_header' });
  });
});

describe('claims of the wrong type or range (validly signed)', () => {
  const now = () => Math.floor(Date.now() / 1000);
  const base = (type: string) => ({ token_type: type, exp: now() + 60, iat: now(), jti: randomBytes(16).toString('hex'), user_id: alice });
  const variants: Record<string, unknown>[] = [
    { exp: String(now() + 60) }, { exp: now() + 60.5 }, { exp: 1e308 }, { exp: null }, { exp: [now() + 60] }, { exp: { v: 1 } },
    { iat: 'x' }, { iat: 1e308 }, { iat: null }, { iat: [] }, { nbf: 'x' }, { nbf: 1e308 },
    { user_id: 'abc' }, { user_id: 2 ** 53 }, { user_id: 1e308 }, { user_id: -5 }, { user_id: 1.5 }, { user_id: null }, { user_id: [1] },
    { jti: 'x'.repeat(65) }, { jti: 'x'.repeat(1000) }, { jti: 42 }, { jti: null }, { jti: { a: 1 } },
    { sid: 7 }, { sid: 'x'.repeat(500) }, { username: 42 }, { token_type: 42 }, { token_type: null },
  ];

  it('answers 401 token_not_valid on every endpoint, never a 500 or a database error', async () => {
    for (const over of variants) {
      const access = signHs({ ...base('access'), ...over }, TEST_SIGNING_KEY);
      const refresh = signHs({ ...base('refresh'), ...over }, TEST_SIGNING_KEY);
      const label = JSON.stringify(over).slice(0, 60);
      const replies = [
        await t.request('GET', '/api/me/', { headers: { Authorization: `Bearer ${access}` } }),
        await t.post('/api/token/verify/', { token: access }),
        await t.post('/api/token/refresh/', { refresh }),
        await t.post('/api/token/blacklist/', { refresh }),
        await t.request('POST', '/api/token/logout-all/', { headers: { Authorization: `Bearer ${access}` } }),
      ];
      for (const r of replies) {
        expect(r.status, `${label}: ${r.text}`).toBe(401);
        expect(r.json.code, label).toBe('token_not_valid');
      }
    }
  });
});
