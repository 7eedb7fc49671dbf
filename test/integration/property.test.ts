// Property: random bodies and random tokens, thrown at the token endpoints and the guard, never get a
// 5xx and never leave an unhandled rejection behind.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signHs } from '../support/http';
import { startTestApp, TEST_SIGNING_KEY, type TestApp } from '../support/test-app';

let t: TestApp;
let unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);

beforeAll(async () => {
  t = await startTestApp({ LOGIN_THROTTLE_FREE_ATTEMPTS: '1000', LOGIN_THROTTLE_ACCOUNT_BUDGET: '0' });
  await t.user('alice', 'alice-password-1');
  process.on('unhandledRejection', onUnhandled);
});
afterAll(async () => {
  process.off('unhandledRejection', onUnhandled);
  await t.stop();
});

const ENDPOINTS = ['/api/token/', '/api/token/refresh/', '/api/token/verify/', '/api/token/blacklist/', '/api/token/logout-all/'];
const CONTENT_TYPES = ['application/json', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'text/plain', ''];
const FIELDS = ['username', 'password', 'refresh', 'token', '__proto__', 'constructor'];
const CLAIMS = ['token_type', 'exp', 'iat', 'nbf', 'jti', 'user_id', 'sid', 'username', 'aud', 'iss'];

const now = Math.floor(Date.now() / 1000);
const claimValue = fc.oneof(
  fc.jsonValue(),
  fc.constantFrom('access', 'refresh', now, now + 60, now - 60, 1e308, -1, 2 ** 31, 'alice'),
  fc.integer(),
  fc.double(),
);
const payload = fc.dictionary(fc.oneof(fc.constantFrom(...CLAIMS), fc.string()), claimValue, { maxKeys: 12 });
const header = fc.oneof(
  fc.constant({ alg: 'HS256', typ: 'JWT' }),
  fc.record({ alg: fc.constantFrom('HS256', 'HS512', 'none', 'RS256', 'EdDSA', 'x'), typ: fc.jsonValue() }, { requiredKeys: ['alg'] }),
  fc.dictionary(fc.constantFrom('alg', 'kid', 'crit', 'jku', 'x5u', 'typ'), fc.jsonValue()),
);
// Tokens: signed with the real key (so every claim check is reached), or noise shaped like a JWT.
const token = fc.oneof(
  fc.tuple(header, payload).map(([h, p]) => signHs(p, TEST_SIGNING_KEY, h as Record<string, unknown>)),
  fc.string(),
  fc.array(fc.base64String(), { minLength: 1, maxLength: 4 }).map((parts) => parts.join('.')),
);
const body = fc.oneof(
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc.dictionary(fc.constantFrom(...FIELDS), fc.oneof(fc.jsonValue(), token)).map((v) => JSON.stringify(v)),
  fc.string(),
  fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
);

describe('properties', () => {
  it('random bodies to the token endpoints: never a 5xx', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...ENDPOINTS), fc.constantFrom(...CONTENT_TYPES), body, async (path, type, data) => {
        const r = await t.request('POST', path, { body: data, headers: type ? { 'Content-Type': type } : {} });
        expect(r.status, `${path} ${type} → ${r.status} ${r.text}`).toBeLessThan(500);
      }),
      { numRuns: 300 },
    );
  });

  it('random tokens to the guard and the token endpoints: never a 5xx', async () => {
    await fc.assert(
      fc.asyncProperty(token, fc.constantFrom(...ENDPOINTS, '/api/me/'), async (tok, path) => {
        const r =
          path === '/api/me/' || path === '/api/token/logout-all/'
            ? await t.request(path === '/api/me/' ? 'GET' : 'POST', path, {
                // Only what an HTTP header can carry; fetch refuses the rest before sending.
                headers: { Authorization: `Bearer ${tok.replace(/[^\x20-\x7e]/g, '')}` },
              })
            : await t.post(path, { refresh: tok, token: tok, username: tok, password: tok });
        expect(r.status, `${path} → ${r.status} ${r.text}`).toBeLessThan(500);
      }),
      { numRuns: 500 },
    );
  });

  it('left no unhandled rejection behind', () => {
    expect(unhandled).toEqual([]);
    unhandled = [];
  });
});
