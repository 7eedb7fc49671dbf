// Tokens that pass the form check and fail to parse after it (issue 15, item 1): before the fix a
// payload that was not JSON threw a SyntaxError out of the token service and the endpoints answered
// 500. Every class, at every place a token arrives, is an invalid token: 401 token_not_valid.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REFRESH_COOKIE } from '../../app/auth/cookie';
import { signHs, type Reply } from '../support/http';
import { UNPARSABLE_TOKENS } from '../support/hostile';
import { startTestApp, TEST_SIGNING_KEY, type TestApp } from '../support/test-app';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
  await t.user('parse', 'parse-password-1');
});
afterAll(() => t.stop());

// Signed with our key: the signature passes, and jsonwebtoken meets the payload that does not parse.
const SIGNED = [
  { name: 'signed with our key, a truncated JSON payload', token: signHs('{"a":', TEST_SIGNING_KEY) },
  { name: 'signed with our key, a payload that is not JSON', token: signHs('not json at all', TEST_SIGNING_KEY) },
  { name: 'signed with our key, a JSON string as the payload', token: signHs('"a string"', TEST_SIGNING_KEY) },
];
const CASES = [...UNPARSABLE_TOKENS, ...SIGNED];

const INVALID = { detail: 'Token is invalid or expired', code: 'token_not_valid' };
const GUARD_INVALID = {
  detail: 'Given token not valid for any token type',
  code: 'token_not_valid',
  messages: [{ token_class: 'AccessToken', token_type: 'access', message: 'Token is invalid or expired' }],
};

function expectInvalid(r: Reply, body: object, where: string) {
  expect(r.status, `${where}: ${r.status} ${r.text}`).toBe(401);
  expect(r.json, where).toEqual(body);
  expect(r.headers.get('www-authenticate'), where).toBe('Bearer realm="api"');
}

describe('a token that does not parse', () => {
  it.each(CASES)('$name: 401 token_not_valid from verify, refresh and blacklist', async ({ token }) => {
    expectInvalid(await t.post('/api/token/verify/', { token }), INVALID, 'verify');
    expectInvalid(await t.post('/api/token/refresh/', { refresh: token }), INVALID, 'refresh');
    expectInvalid(await t.post('/api/token/blacklist/', { refresh: token }), INVALID, 'blacklist');
  });

  it.each(CASES)('$name: 401 token_not_valid from the cookie transport, the cookie cleared', async ({ token }) => {
    for (const path of ['/api/token/refresh/', '/api/token/blacklist/']) {
      const r = await t.request('POST', path, { headers: { 'X-Token-Transport': 'cookie', Cookie: `${REFRESH_COOKIE}=${token}` } });
      expectInvalid(r, INVALID, path);
      expect(r.headers.getSetCookie(), path).toEqual([expect.stringMatching(new RegExp(`^${REFRESH_COOKIE}=; Max-Age=0;`))]);
    }
  });

  it.each(CASES)('$name: 401 from the guard on every protected route', async ({ token }) => {
    const headers = { Authorization: `Bearer ${token}` };
    expectInvalid(await t.request('GET', '/api/me/', { headers }), GUARD_INVALID, 'me');
    expectInvalid(await t.request('GET', '/api/sessions/', { headers }), GUARD_INVALID, 'sessions');
    expectInvalid(await t.request('DELETE', '/api/sessions/00000000-0000-4000-8000-000000000000/', { headers }), GUARD_INVALID, 'end session');
    expectInvalid(await t.request('POST', '/api/token/logout-all/', { headers }), GUARD_INVALID, 'logout-all');
  });

  it('left the app serving: a real session still works', async () => {
    const pair = await t.login('parse', 'parse-password-1');
    expect((await t.request('GET', '/api/me/', { headers: { Authorization: `Bearer ${pair.access}` } })).status).toBe(200);
    expect((await t.post('/api/token/verify/', { token: pair.refresh })).status).toBe(200);
    expect(t.logs.filter((l) => l.includes('unhandled error'))).toEqual([]);
  });
});
