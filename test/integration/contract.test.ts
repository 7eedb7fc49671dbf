// The wire contract (../shared/contract/REFERENCE.md, "Match"): what a simplejwt client sees.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt, signHs, tamper, type Reply } from '../support/http';
import { startTestApp, TEST_SIGNING_KEY, type TestApp } from '../support/test-app';

const MSG = {
  noActive: 'No active account found with the given credentials',
  notProvided: 'Authentication credentials were not provided.',
  invalid: 'Token is invalid or expired',
  wrongType: 'Token has wrong type',
  blacklisted: 'Token is blacklisted',
  noId: 'Token has no id',
  noType: 'Token has no type',
  noExp: "Token has no 'exp' claim",
  noUser: 'Token contained no recognizable user identification',
  twoValues: 'Authorization header must contain two space-delimited values',
};
const HEADER_SEGMENT = 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9'; // {"alg":"HS256","typ":"JWT"}

let t: TestApp;
let alice: number;
let carol: number;

beforeAll(async () => {
  t = await startTestApp();
  alice = await t.user('alice', 'alice-password-1');
  await t.user('bob', 'bob-password-1');
  carol = await t.user('carol', 'carol-password-1', { active: false });
});
afterAll(() => t.stop());

const now = () => Math.floor(Date.now() / 1000);
const accessClaims = (over: Record<string, unknown> = {}) => ({
  token_type: 'access',
  exp: now() + 300,
  iat: now(),
  jti: randomBytes(16).toString('hex'),
  user_id: alice,
  ...over,
});
const craft = (payload: unknown, header?: Record<string, unknown>) => signHs(payload, TEST_SIGNING_KEY, header);
const without = (o: Record<string, unknown>, key: string) => Object.fromEntries(Object.entries(o).filter(([k]) => k !== key));
const me = (authorization?: string) =>
  t.request('GET', '/api/me/', authorization === undefined ? {} : { headers: { Authorization: authorization } });

function expectJson(r: Reply) {
  expect(r.headers.get('content-type')).toBe('application/json');
}
function expectDetail(r: Reply, status: number, detail: string) {
  expect(r.status, r.text).toBe(status);
  expect(r.json).toEqual({ detail });
  expectJson(r);
  if (status === 401) expect(r.headers.get('www-authenticate')).toBe('Bearer realm="api"');
}
function expectTokenNotValid(r: Reply, detail: string) {
  expect(r.status, r.text).toBe(401);
  expect(r.json).toEqual({ detail, code: 'token_not_valid' });
  expect(r.headers.get('www-authenticate')).toBe('Bearer realm="api"');
  expectJson(r);
}
function expectInvalidAccess(r: Reply, message: string) {
  expect(r.status, r.text).toBe(401);
  expect(r.json).toEqual({
    detail: 'Given token not valid for any token type',
    code: 'token_not_valid',
    messages: [{ token_class: 'AccessToken', token_type: 'access', message }],
  });
  expect(r.headers.get('www-authenticate')).toBe('Bearer realm="api"');
  expectJson(r);
}

describe('POST /api/token/ (obtain)', () => {
  it('gives a refresh and an access token with simplejwt header, claims and lifetimes', async () => {
    const before = now();
    const r = await t.post('/api/token/', { username: 'alice', password: 'alice-password-1' });
    expect(r.status).toBe(200);
    expectJson(r);
    expect(Object.keys(r.json)).toEqual(['refresh', 'access']);
    const refresh = decodeJwt(r.json.refresh);
    const access = decodeJwt(r.json.access);
    for (const tok of [refresh, access]) {
      expect(tok.raw[0]).toBe(HEADER_SEGMENT);
      expect(tok.raw.every((seg) => /^[A-Za-z0-9_-]+$/.test(seg))).toBe(true);
      expect(Object.keys(tok.payload).slice(0, 5)).toEqual(['token_type', 'exp', 'iat', 'jti', 'user_id']);
      expect(tok.payload.jti).toMatch(/^[0-9a-f]{32}$/);
      expect(tok.payload.user_id).toBe(alice);
      expect(Number.isInteger(tok.payload.iat) && tok.payload.iat >= before && tok.payload.iat <= now()).toBe(true);
    }
    expect(refresh.payload.token_type).toBe('refresh');
    expect(access.payload.token_type).toBe('access');
    expect(refresh.payload.exp - refresh.payload.iat).toBe(86400);
    expect(access.payload.exp - access.payload.iat).toBe(300);
    expect(access.payload.iat).toBe(refresh.payload.iat);
    expect(r.headers.get('cache-control')).toBe('no-store');
  });

  it('refuses a wrong password, an unknown user and an inactive user alike', async () => {
    expectDetail(await t.post('/api/token/', { username: 'alice', password: 'nope' }), 401, MSG.noActive);
    expectDetail(await t.post('/api/token/', { username: 'nobody', password: 'alice-password-1' }), 401, MSG.noActive);
    expectDetail(await t.post('/api/token/', { username: 'carol', password: 'carol-password-1' }), 401, MSG.noActive);
  });

  it('answers field errors as DRF does', async () => {
    const empty = await t.post('/api/token/', {});
    expect(empty.status).toBe(400);
    expect(empty.json).toEqual({ username: ['This field is required.'], password: ['This field is required.'] });
    expectJson(empty);
    const blank = await t.post('/api/token/', { username: '', password: '' });
    expect(blank.json).toEqual({ username: ['This field may not be blank.'], password: ['This field may not be blank.'] });
    const nul = await t.post('/api/token/', { username: null, password: true });
    expect(nul.json).toEqual({ username: ['This field may not be null.'], password: ['Not a valid string.'] });
    const spaces = await t.post('/api/token/', { username: '   ', password: 'x' });
    expect(spaces.json).toEqual({ username: ['This field may not be blank.'] });
  });

  it('trims whitespace around username and password, as DRF CharField does', async () => {
    const r = await t.post('/api/token/', { username: ' alice ', password: ' alice-password-1\t' });
    expect(r.status, r.text).toBe(200);
  });

  it('answers a malformed JSON body with a JSON parse error', async () => {
    const r = await t.request('POST', '/api/token/', { body: '{bad json', headers: { 'Content-Type': 'application/json' } });
    expect(r.status).toBe(400);
    expect(Object.keys(r.json)).toEqual(['detail']);
    expect(r.json.detail).toMatch(/^JSON parse error - /);
    expectJson(r);
  });

  it('answers 415 for other media types, and for a body without a Content-Type', async () => {
    const plain = await t.request('POST', '/api/token/', { body: '{}', headers: { 'Content-Type': 'text/plain' } });
    expectDetail(plain, 415, 'Unsupported media type "text/plain" in request.');
    const none = await t.request('POST', '/api/token/', { body: Buffer.from('{}') });
    expectDetail(none, 415, 'Unsupported media type "" in request.');
  });

  it('answers a JSON value that is not an object with non_field_errors, as DRF 3.14 does', async () => {
    // Serializer.to_internal_value names the Python type json.loads made; JSON null never gets there:
    // Serializer.errors turns its "may not be null" into "No data provided".
    const cases = [['[]', 'list'], ['"x"', 'str'], ['1', 'int'], ['-0', 'int'], ['1.5', 'float'], ['1.0', 'float'], ['1e3', 'float'], ['true', 'bool'], ['false', 'bool']];
    for (const path of ['/api/token/', '/api/token/refresh/', '/api/token/verify/', '/api/token/blacklist/']) {
      for (const [raw, type] of cases) {
        const r = await t.request('POST', path, { body: raw, headers: { 'Content-Type': 'application/json' } });
        expect(r.status, `${path} ${raw}`).toBe(400);
        expect(r.json, `${path} ${raw}`).toEqual({ non_field_errors: [`Invalid data. Expected a dictionary, but got ${type}.`] });
      }
      const none = await t.request('POST', path, { body: 'null', headers: { 'Content-Type': 'application/json' } });
      expect(none.status).toBe(400);
      expect(none.json).toEqual({ non_field_errors: ['No data provided'] });
    }
  });

  it('accepts form-encoded and multipart bodies', async () => {
    const form = await t.request('POST', '/api/token/', {
      body: new URLSearchParams({ username: 'alice', password: 'alice-password-1' }),
    });
    expect(form.status, form.text).toBe(200);
    const multipart = new FormData();
    multipart.set('username', 'alice');
    multipart.set('password', 'alice-password-1');
    const mp = await t.request('POST', '/api/token/', { body: multipart });
    expect(mp.status, mp.text).toBe(200);
  });

  it('answers other methods with 405 and Allow', async () => {
    const r = await t.request('GET', '/api/token/');
    expect(r.status).toBe(405);
    expect(r.json).toEqual({ detail: 'Method "GET" not allowed.' });
    expect(r.headers.get('allow')).toBe('POST, OPTIONS');
    expectJson(r);
    const del = await t.request('DELETE', '/api/token/refresh/');
    expect(del.status).toBe(405);
    expect(del.json).toEqual({ detail: 'Method "DELETE" not allowed.' });
  });
});

describe('GET /api/me/ (the guard)', () => {
  let pair: { access: string; refresh: string };
  beforeAll(async () => {
    pair = await t.login('alice', 'alice-password-1');
  });

  it('serves a valid access token', async () => {
    const r = await me(`Bearer ${pair.access}`);
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ id: alice, username: 'alice' });
    expectJson(r);
  });

  it('splits the header on any whitespace', async () => {
    expect((await me(`Bearer     ${pair.access}`)).status).toBe(200);
    expect((await me(`Bearer\t${pair.access}`)).status).toBe(200);
  });

  it('treats a missing header or another scheme as no credentials (the scheme is case-sensitive)', async () => {
    for (const value of [undefined, `bearer ${pair.access}`, `BEARER ${pair.access}`, `JWT ${pair.access}`,
      `Token ${pair.access}`, 'Basic YWxpY2U6eA==', pair.access, '']) {
      expectDetail(await me(value), 401, MSG.notProvided);
    }
  });

  it('answers bad_authorization_header for one or three parts', async () => {
    for (const value of ['Bearer', `Bearer ${pair.access} extra`]) {
      const r = await me(value);
      expect(r.status).toBe(401);
      expect(r.json).toEqual({ detail: MSG.twoValues, code: 'bad_authorization_header' });
      expect(r.headers.get('www-authenticate')).toBe('Bearer realm="api"');
    }
  });

  it('refuses tokens that fail validation, with simplejwt messages', async () => {
    const claims = accessClaims();
    expectInvalidAccess(await me('Bearer garbage'), MSG.invalid);
    expectInvalidAccess(await me(`Bearer ${pair.refresh}`), MSG.wrongType);
    expectInvalidAccess(await me(`Bearer ${tamper(pair.access)}`), MSG.invalid);
    expectInvalidAccess(await me(`Bearer ${craft(accessClaims({ iat: now() - 360, exp: now() - 60 }))}`), MSG.invalid);
    expectInvalidAccess(await me(`Bearer ${craft(claims, { alg: 'none', typ: 'JWT' })}`), MSG.invalid);
    expectInvalidAccess(await me(`Bearer ${craft(claims, { alg: 'HS512', typ: 'JWT' })}`), MSG.invalid);
    expectInvalidAccess(await me(`Bearer ${signHs(claims, 'another-key')}`), MSG.invalid);
    expectInvalidAccess(await me(`Bearer ${craft(accessClaims({ iat: now() + 120 }))}`), MSG.invalid);
    expectInvalidAccess(await me(`Bearer ${craft(accessClaims({ nbf: now() + 120 }))}`), MSG.invalid);
    expectInvalidAccess(await me(`Bearer ${craft(without(claims, 'jti'))}`), MSG.noId);
    expectInvalidAccess(await me(`Bearer ${craft(without(claims, 'exp'))}`), MSG.noExp);
    expectInvalidAccess(await me(`Bearer ${craft(without(claims, 'token_type'))}`), MSG.noType);
  });

  it('checks signatures strictly: no padding, no standard-base64 alphabet', async () => {
    const token = craft(accessClaims());
    expect((await me(`Bearer ${token}`)).status).toBe(200);
    expectInvalidAccess(await me(`Bearer ${token}=`), MSG.invalid);
    const [h, p, s] = token.split('.') as [string, string, string];
    const standard = Buffer.from(s, 'base64url').toString('base64').replace(/=+$/, '');
    if (standard !== s) expectInvalidAccess(await me(`Bearer ${h}.${p}.${standard}`), MSG.invalid);
    // A change in the unused low bits of the last character decodes to the same bytes.
    const last = s.at(-1)!;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const sibling = alphabet[alphabet.indexOf(last) ^ 1]!;
    expectInvalidAccess(await me(`Bearer ${h}.${p}.${s.slice(0, -1)}${sibling}`), MSG.invalid);
  });

  it('answers user problems as simplejwt does', async () => {
    const noUser = await me(`Bearer ${craft(without(accessClaims(), 'user_id'))}`);
    expect(noUser.status).toBe(401);
    expect(noUser.json).toEqual({ detail: MSG.noUser, code: 'token_not_valid' });
    const unknown = await me(`Bearer ${craft(accessClaims({ user_id: 987654321 }))}`);
    expect(unknown.status).toBe(401);
    expect(unknown.json).toEqual({ detail: 'User not found', code: 'user_not_found' });
    const inactive = await me(`Bearer ${craft(accessClaims({ user_id: carol }))}`);
    expect(inactive.status).toBe(401);
    expect(inactive.json).toEqual({ detail: 'User is inactive', code: 'user_inactive' });
    expect(inactive.headers.get('www-authenticate')).toBe('Bearer realm="api"');
  });

  it('answers a non-integer user_id with 401, never 500', async () => {
    for (const user_id of ['abc', '1', 1.5, -1, 0, 2 ** 40, null, [1], { id: 1 }]) {
      const r = await me(`Bearer ${craft(accessClaims({ user_id }))}`);
      expect(r.status, JSON.stringify(user_id)).toBe(401);
      expect(r.json).toEqual({ detail: MSG.noUser, code: 'token_not_valid' });
    }
  });

  it('checks authentication before the method', async () => {
    expectDetail(await t.request('POST', '/api/me/'), 401, MSG.notProvided);
    const r = await t.request('POST', '/api/me/', { headers: { Authorization: `Bearer ${pair.access}` } });
    expect(r.status).toBe(405);
    expect(r.json).toEqual({ detail: 'Method "POST" not allowed.' });
    expect(r.headers.get('allow')).toBe('GET, HEAD, OPTIONS');
  });
});

describe('refresh, verify, blacklist', () => {
  it('rotates: new access and refresh, the old refresh blacklisted', async () => {
    const pair = await t.login('bob', 'bob-password-1');
    t.clock.advance(60); // the rotated tokens are minted a minute after the login
    const r = await t.post('/api/token/refresh/', { refresh: pair.refresh });
    expect(r.status, r.text).toBe(200);
    expect(Object.keys(r.json)).toEqual(['access', 'refresh']);
    const access = decodeJwt(r.json.access).payload;
    const refresh = decodeJwt(r.json.refresh).payload;
    const old = decodeJwt(pair.refresh).payload;
    expect(refresh.jti).not.toBe(old.jti);
    expect(refresh.iat).toBeGreaterThanOrEqual(old.iat + 60); // iat = now, not the login time
    expect(refresh.exp - refresh.iat).toBe(86400);
    expect(access.iat).toBe(refresh.iat); // on purpose: simplejwt copies the old iat here
    expect(access.exp - access.iat).toBe(300);
    expectTokenNotValid(await t.post('/api/token/refresh/', { refresh: pair.refresh }), MSG.blacklisted);
  });

  it('refuses an access token where a refresh token belongs, and a missing field', async () => {
    const pair = await t.login('bob', 'bob-password-1');
    expectTokenNotValid(await t.post('/api/token/refresh/', { refresh: pair.access }), MSG.wrongType);
    expectTokenNotValid(await t.post('/api/token/blacklist/', { refresh: pair.access }), MSG.wrongType);
    expectTokenNotValid(await t.post('/api/token/refresh/', { refresh: 'garbage' }), MSG.invalid);
    const missing = await t.post('/api/token/refresh/', {});
    expect(missing.status).toBe(400);
    expect(missing.json).toEqual({ refresh: ['This field is required.'] });
  });

  it('verifies access and refresh tokens alike; garbage is 401, a blacklisted refresh 400', async () => {
    const pair = await t.login('bob', 'bob-password-1');
    for (const token of [pair.access, pair.refresh]) {
      const r = await t.post('/api/token/verify/', { token });
      expect(r.status).toBe(200);
      expect(r.json).toEqual({});
      expectJson(r);
    }
    expectTokenNotValid(await t.post('/api/token/verify/', { token: 'garbage' }), MSG.invalid);
    expect((await t.post('/api/token/blacklist/', { refresh: pair.refresh })).status).toBe(200);
    const r = await t.post('/api/token/verify/', { token: pair.refresh });
    expect(r.status).toBe(400);
    expect(r.json).toEqual({ non_field_errors: [MSG.blacklisted] });
  });

  it('blacklists: 200 {}, then 401 for the same token and for refreshing it', async () => {
    const pair = await t.login('bob', 'bob-password-1');
    const r = await t.post('/api/token/blacklist/', { refresh: pair.refresh });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({});
    expectTokenNotValid(await t.post('/api/token/blacklist/', { refresh: pair.refresh }), MSG.blacklisted);
    expectTokenNotValid(await t.post('/api/token/refresh/', { refresh: pair.refresh }), MSG.blacklisted);
  });
});

describe('paths', () => {
  it('serves every endpoint without its trailing slash too', async () => {
    const r = await t.post('/api/token', { username: 'alice', password: 'alice-password-1' });
    expect(r.status).toBe(200);
    expect((await t.post('/api/token/verify', { token: r.json.access })).status).toBe(200);
    expect((await t.request('GET', '/api/me', { headers: { Authorization: `Bearer ${r.json.access}` } })).status).toBe(200);
  });

  it('answers unknown paths with a JSON 404', async () => {
    const r = await t.request('GET', '/nowhere');
    expect(r.status).toBe(404);
    expect(r.json).toEqual({ detail: 'Not found.', code: 'not_found' });
    expectJson(r);
  });

  it('answers OPTIONS with Allow and no metadata', async () => {
    const r = await t.request('OPTIONS', '/api/token/');
    expect(r.status).toBe(204);
    expect(r.headers.get('allow')).toBe('POST, OPTIONS');
    expect(r.text).toBe('');
  });
});
