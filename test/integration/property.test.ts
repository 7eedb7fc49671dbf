// The generated suite at the app (issue 15, "generative tests, layer by layer"): requests generated
// from the OpenAPI document and tokens from a grammar (test/support/generative/), against every route,
// with a fixed seed and at least 1,000 cases per route. Every answer is a 2xx or 4xx (a documented
// 503 at most) in the contract's JSON shape with the security headers, never a 5xx, never a hang.
// test/e2e/monitoring.test.ts runs the same suite through nginx.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../../app/auth/clients';
import { LEGACY_REFRESH_COOKIE, REFRESH_COOKIE } from '../../app/auth/cookie';
import { openApiDocument } from '../../app/http/openapi';
import type { OpenApiDocument, RequestWorld } from '../support/generative/openapi-requests';
import type { RealSession } from '../support/generative/token-grammar';
import { generativeSuite, loggedIn, problems, send } from '../support/generative/property';
import { REGRESSIONS } from '../support/generative/regressions';
import { decodeJwt } from '../support/http';
import { startTestApp, TEST_SIGNING_KEY, type TestApp } from '../support/test-app';
import http from 'node:http';

// Machine clients on (ISSUER an issuer identifier): their token endpoint and metadata are routes too.
const ISSUER = 'https://auth.example.test';
const DOCUMENT = openApiDocument({ authScheme: 'Bearer', clients: true }) as unknown as OpenApiDocument;
const RETIRED = { secret: 'a-retired-hs256-key-that-still-verifies-0123456789', kid: 'gen-retired' };
const ORIGIN = 'https://app.example.test';

let t: TestApp;
let keysDir: string;
const world: RequestWorld = {
  current: { secret: TEST_SIGNING_KEY, kid: 'gen-current' },
  retired: RETIRED,
  sessions: [],
  users: [],
  issuer: ISSUER,
  clients: [],
  clientIds: [],
  clientTokens: [],
  now: () => Math.floor(t.clock() / 1000),
  allowedOrigin: ORIGIN,
  cookie: { name: REFRESH_COOKIE, legacy: LEGACY_REFRESH_COOKIE },
};
const userIds = new Map<string, number>();
/** Three live sessions of each user, in place of whatever the cases before left. */
async function renew(): Promise<void> {
  const sessions: RealSession[] = [];
  for (const { username, password } of world.users) {
    for (let i = 0; i < 3; i++) {
      const pair = await loggedIn(() => t.post('/api/token/', { username, password }));
      sessions.push({ userId: userIds.get(username)!, username, ...pair, sid: decodeJwt(pair.access).payload.sid as string });
    }
  }
  world.sessions.splice(0, world.sessions.length, ...sessions);
  const clientTokens: string[] = [];
  for (const { clientId, secret } of world.clients) {
    const r = await t.request('POST', '/api/oauth/token/', {
      body: new URLSearchParams({ grant_type: 'client_credentials' }),
      headers: { Authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}` },
    });
    expect(r.status, r.text).toBe(200);
    clientTokens.push(r.json.access_token as string);
  }
  world.clientTokens.splice(0, world.clientTokens.length, ...clientTokens);
}
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);

beforeAll(async () => {
  keysDir = mkdtempSync(path.join(tmpdir(), 'kas-generative-'));
  const retired = path.join(keysDir, 'retired.jwks.json');
  writeFileSync(retired, JSON.stringify({ keys: [{ kty: 'oct', alg: 'HS256', kid: RETIRED.kid, k: Buffer.from(RETIRED.secret).toString('base64url') }] }));
  t = await startTestApp(
    {
      SIGNING_KEY_ID: 'gen-current',
      VERIFYING_KEYS_FILE: retired,
      ISSUER,
      CORS_ALLOWED_ORIGINS: ORIGIN,
      TRUST_PROXY_HOPS: '1',
      // Generated logins are many, from one address: the throttles would answer most of them 429.
      LOGIN_THROTTLE_FREE_ATTEMPTS: '1000',
      LOGIN_THROTTLE_ACCOUNT_BUDGET: '0',
      LOG_LEVEL: 'warn',
    },
    // A cheap hash: the property is about answers, not about the cost of a password check.
    { argon2: { memory: 64, passes: 1, parallelism: 1, tagLength: 32, saltLength: 16 } },
  );
  for (let u = 0; u < 12; u++) {
    const username = `gen-user-${u}`;
    const password = `gen-password-${u}`;
    userIds.set(username, await t.user(username, password));
    world.users.push({ username, password });
  }
  for (const name of ['gen-client-a', 'gen-client-b']) {
    const { client, secret } = await createClient(t.db, { name, scopes: ['gen:read', 'gen:write'], now: new Date(t.clock()) });
    world.clients.push({ clientId: client.clientId, secret });
    world.clientIds.push(client.clientId);
  }
  process.on('unhandledRejection', onUnhandled);
}, 300_000);

afterAll(async () => {
  process.off('unhandledRejection', onUnhandled);
  if (!t) return;
  expect(unhandled).toEqual([]);
  // The app is alive and well after all of it, and logged no unhandled error.
  expect((await t.request('GET', '/healthz')).status).toBe(200);
  expect(t.logs.filter((l) => l.includes('unhandled error'))).toEqual([]);
  await t.stop();
  rmSync(keysDir, { recursive: true, force: true });
});

describe('the document the requests are generated from', () => {
  it('is the one /api/schema/ serves', async () => {
    expect((await t.request('GET', '/api/schema/')).json).toEqual(DOCUMENT);
  });
});

describe('regressions: cases generated suites found', () => {
  const agent = new http.Agent({ keepAlive: false });
  beforeAll(renew);
  it.each(REGRESSIONS)('$name', async ({ request }) => {
    const req = request(world);
    const answer = await send(t.url, req, agent);
    expect(problems(req, answer, 'app', undefined), `${answer.status} ${answer.body}`).toEqual([]);
  });
});

generativeSuite({ document: DOCUMENT, target: () => ({ url: t.url, via: 'app', world, document: DOCUMENT, renew }) });
