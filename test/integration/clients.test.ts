// Machine clients end to end: a real OAuth client library (oauth4webapi) finds the token endpoint in
// the RFC 8414 metadata and runs the client credentials grant with both authentication methods; a
// resource server of another stack verifies the RFC 9068 token with jose and the JWKS; a developer's
// route behind our guard takes it; RFC 6749's errors exactly; deletion and rotation stop tokens at
// once, a grant in flight during a rotation included; the throttle, the metrics and the events.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as jose from 'jose';
import Koa from 'koa';
import * as oauth from 'oauth4webapi';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { createClient, deleteClient, rotateClientSecret, type NewClient } from '../../app/auth/clients';
import { anyOf, createGuard, requireScope, requireUser } from '../../app/auth/guard';
import { generateKey } from '../../app/auth/keys';
import { errorHandler } from '../../app/http/errors';
import { createLogger } from '../../app/logger';
import { decodeJwt, request, tamper, type Reply } from '../support/http';
import { eventually, freePort, startTestApp, type TestApp } from '../support/test-app';

const AUDIENCE = 'https://api.example.test';
let t: TestApp;
let issuer: string;
let as: oauth.AuthorizationServer;
// The developer's routes (our guard) and the other stack's resource server (jose), each on its own port.
let routes: http.Server;
let resourceServer: http.Server;

const serve = async (handler: http.RequestListener): Promise<{ server: http.Server; url: string }> => {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
};
let routesUrl: string;
let resourceUrl: string;

beforeAll(async () => {
  const port = await freePort();
  issuer = `http://127.0.0.1:${port}`;
  t = await startTestApp(
    { ALGORITHM: 'ES256', SIGNING_KEY: generateKey('ES256').signingKey, ISSUER: issuer, AUDIENCE, LOGIN_THROTTLE_FREE_ATTEMPTS: '3', LOG_LEVEL: 'info' },
    { port },
  );
  expect(t.url).toBe(issuer);
  await t.user('alice', 'alice-password-1');

  // A developer's routes, behind the app's own guard (as README "Machine clients" shows).
  const guard = createGuard({ tokens: t.tokens, authHeaderTypes: ['Bearer'], revocations: t.revocations });
  const app = new Koa();
  app.use(errorHandler({ logger: createLogger('silent'), authScheme: 'Bearer' }));
  const things = anyOf(requireUser(t.db), requireScope('things:read'));
  app.use(async (ctx, next) => {
    if (ctx.path === '/things') {
      await guard.orClient(ctx, () => things(ctx, async () => {
        ctx.body = { caller: ctx.state.client?.clientId ?? ctx.state.user?.username };
      }));
    } else if (ctx.path === '/writes') {
      await guard.orClient(ctx, () => requireScope('things:write')(ctx, async () => {
        ctx.body = { ok: true };
      }));
    } else if (ctx.path === '/people') {
      await guard(ctx, async () => {
        ctx.body = { user: ctx.state.auth!.userId };
      });
    } else await next();
  });
  ({ server: routes, url: routesUrl } = await serve(app.callback()));

  // Another stack's resource server: only jose, the metadata and the JWKS (RFC 9068 §4).
  const metadata = (await request(issuer, 'GET', '/.well-known/oauth-authorization-server')).json;
  const jwks = jose.createRemoteJWKSet(new URL(metadata.jwks_uri));
  ({ server: resourceServer, url: resourceUrl } = await serve((req, res) => {
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '';
    jose
      .jwtVerify(token, jwks, { issuer: metadata.issuer, audience: AUDIENCE, typ: 'at+jwt', algorithms: ['ES256'], requiredClaims: ['client_id', 'jti', 'iat', 'sub'] })
      .then(({ payload }) => {
        const scopes = String(payload.scope ?? '').split(' ');
        res.writeHead(scopes.includes('things:read') ? 200 : 403, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ client: payload.client_id }));
      })
      .catch((err: Error) => {
        res.writeHead(401, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: err.constructor.name }));
      });
  }));

  as = await oauth.processDiscoveryResponse(
    new URL(issuer),
    await oauth.discoveryRequest(new URL(issuer), { algorithm: 'oauth2', [oauth.allowInsecureRequests]: true }),
  );
});

afterAll(async () => {
  routes?.close();
  resourceServer?.close();
  await t?.stop();
});

const newClient = (name: string, scopes: string[]) => createClient(t.db, { name, scopes, now: new Date(t.clock()) });

/** The grant through oauth4webapi, as a service would run it. */
async function grant(c: NewClient, auth: 'basic' | 'post' = 'basic', scope?: string): Promise<oauth.TokenEndpointResponse> {
  const client: oauth.Client = { client_id: c.client.clientId };
  const method = auth === 'basic' ? oauth.ClientSecretBasic(c.secret) : oauth.ClientSecretPost(c.secret);
  const response = await oauth.clientCredentialsGrantRequest(as, client, method, scope === undefined ? {} : { scope }, {
    [oauth.allowInsecureRequests]: true,
  });
  return oauth.processClientCredentialsResponse(as, client, response);
}

const tokenRequest = (body: string | URLSearchParams, headers: Record<string, string> = {}) =>
  request(t.url, 'POST', '/api/oauth/token/', {
    body: typeof body === 'string' ? body : body.toString(),
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', ...headers },
  });
const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

/** How oauth4webapi reports invalid_client: the 401's WWW-Authenticate challenge (RFC 6749 §5.2). */
const refusedClient = { status: 401, code: 'OAUTH_WWW_AUTHENTICATE_CHALLENGE', cause: [{ scheme: 'basic', parameters: { realm: 'oauth', charset: 'UTF-8' } }] };

function expectOAuthError(r: Reply, status: number, error: string): void {
  expect(r.status, r.text).toBe(status);
  expect(r.headers.get('content-type')).toBe('application/json');
  expect(r.headers.get('cache-control')).toBe('no-store');
  expect(r.headers.get('pragma')).toBe('no-cache');
  expect(Object.keys(r.json)).toEqual(['error', 'error_description']);
  expect(r.json.error).toBe(error);
  if (status === 401) expect(r.headers.get('www-authenticate')).toMatch(/^Basic realm="oauth"/);
}

describe('the metadata document (RFC 8414)', () => {
  it('names the issuer, the token endpoint, the keys, the grant, the client authentication and the scopes', async () => {
    await newClient('metadata-probe', ['things:read', 'reports:write']);
    // The scopes are read at most every 10 s (beforeAll read them before this client existed).
    const metadata = () => request(t.url, 'GET', '/.well-known/oauth-authorization-server');
    expect((await metadata()).json.scopes_supported).not.toContain('reports:write');
    t.clock.advance(11);
    const r = await metadata();
    t.clock.advance(-11);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({
      issuer,
      token_endpoint: `${issuer}/api/oauth/token/`,
      jwks_uri: `${issuer}/.well-known/jwks.json`,
      grant_types_supported: ['client_credentials'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
      response_types_supported: [],
    });
    expect(r.json.scopes_supported).toEqual(expect.arrayContaining(['reports:write', 'things:read']));
    // oauth4webapi found it and checked its issuer against the URL it asked (beforeAll).
    expect(as.token_endpoint).toBe(`${issuer}/api/oauth/token/`);
  });
});

describe('the client credentials grant (RFC 6749 §4.4), with a real OAuth client', () => {
  it('issues an RFC 9068 access token by client_secret_basic and client_secret_post', async () => {
    const c = await newClient('billing', ['things:read', 'things:write']);
    for (const auth of ['basic', 'post'] as const) {
      const r = await grant(c, auth, 'things:read');
      expect(r.token_type).toBe('bearer'); // oauth4webapi lowercases it
      expect(r.expires_in).toBe(300);
      expect(r.scope).toBe('things:read');
      expect(r.refresh_token).toBeUndefined();
      const { header, payload } = decodeJwt(r.access_token);
      expect(header).toEqual({ alg: 'ES256', typ: 'at+jwt', kid: expect.any(String) });
      expect(Object.keys(payload)).toEqual(['iss', 'sub', 'aud', 'client_id', 'scope', 'iat', 'exp', 'jti']);
      expect(payload).toMatchObject({ iss: issuer, sub: c.client.clientId, aud: AUDIENCE, client_id: c.client.clientId, scope: 'things:read' });
      expect(payload.exp - payload.iat).toBe(300);
    }
    // No scope asked: every scope of the client.
    expect((await grant(c)).scope).toBe('things:read things:write');
  });

  it('answers as RFC 6749 §5.1 says: JSON, never cached', async () => {
    const c = await newClient('raw', ['things:read']);
    const r = await tokenRequest('grant_type=client_credentials', { Authorization: basic(c.client.clientId, c.secret) });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('application/json');
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect(r.headers.get('pragma')).toBe('no-cache');
    expect(Object.keys(r.json)).toEqual(['access_token', 'token_type', 'expires_in', 'scope']);
    expect(r.json).toMatchObject({ token_type: 'Bearer', expires_in: 300, scope: 'things:read' });
    // An empty parameter is as if absent (§3.2); unknown ones are ignored.
    const empty = await tokenRequest('grant_type=client_credentials&scope=&extra=1', { Authorization: basic(c.client.clientId, c.secret) });
    expect(empty.json.scope).toBe('things:read');
  });

  it('a resource server of another stack verifies the token with jose and the JWKS; a user token is not one', async () => {
    const reader = await grant(await newClient('reader', ['things:read']));
    const other = await grant(await newClient('other', ['reports:write']));
    const ok = await request(resourceUrl, 'GET', '/', { headers: bearer(reader.access_token) });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json.client).toBe(decodeJwt(reader.access_token).payload.client_id);
    expect((await request(resourceUrl, 'GET', '/', { headers: bearer(other.access_token) })).status).toBe(403);
    expect((await request(resourceUrl, 'GET', '/', { headers: bearer(tamper(reader.access_token)) })).status).toBe(401);
    // A user's access token has typ JWT: RFC 9068 verifiers refuse it.
    const { access } = await t.login('alice', 'alice-password-1');
    const refused = await request(resourceUrl, 'GET', '/', { headers: bearer(access) });
    expect(refused.status).toBe(401);
    expect(refused.json.error).toBe('JWTClaimValidationFailed');
  });

  it("the app's guard tells users from machines: user routes refuse a client's token, declared routes take it", async () => {
    const { access_token: token } = await grant(await newClient('guarded', ['things:read']));
    for (const [method, path] of [['GET', '/api/me/'], ['GET', '/api/sessions/'], ['POST', '/api/token/logout-all/'], ['DELETE', '/api/sessions/6f1c2a9e-3b4d-4e5f-8a6b-7c8d9e0f1a2b/']]) {
      const r = await t.request(method!, path!, { headers: bearer(token) });
      expect(r.status, `${method} ${path}`).toBe(403);
      expect(r.json.code).toBe('user_token_required');
    }
    expect((await request(routesUrl, 'GET', '/people', { headers: bearer(token) })).json.code).toBe('user_token_required');
    expect((await request(routesUrl, 'GET', '/things', { headers: bearer(token) })).json).toEqual({ caller: decodeJwt(token).payload.client_id });
    const writes = await request(routesUrl, 'GET', '/writes', { headers: bearer(token) });
    expect(writes.status).toBe(403);
    expect(writes.json.code).toBe('insufficient_scope');
    expect(writes.headers.get('www-authenticate')).toBe('Bearer error="insufficient_scope", scope="things:write"');
    // Users: /things takes them (anyOf), /writes is for clients only.
    const { access } = await t.login('alice', 'alice-password-1');
    expect((await request(routesUrl, 'GET', '/things', { headers: bearer(access) })).json).toEqual({ caller: 'alice' });
    expect((await request(routesUrl, 'GET', '/writes', { headers: bearer(access) })).json.code).toBe('client_token_required');
    // And neither kind passes as the other anywhere tokens are read.
    expect((await t.post('/api/token/refresh/', { refresh: token })).json).toEqual({ detail: 'Token has wrong type', code: 'token_not_valid' });
    expect((await t.post('/api/token/verify/', { token })).json).toEqual({});
  });
});

describe("RFC 6749 §5.2's errors", () => {
  it('invalid_client (401, WWW-Authenticate: Basic) for a wrong secret, an unknown client, no authentication, a malformed Basic', async () => {
    const c = await newClient('errors', ['a']);
    expectOAuthError(await tokenRequest('grant_type=client_credentials', { Authorization: basic(c.client.clientId, 'wrong-secret') }), 401, 'invalid_client');
    expectOAuthError(await tokenRequest(`grant_type=client_credentials&client_id=nobody&client_secret=${c.secret}`), 401, 'invalid_client');
    expectOAuthError(await tokenRequest(`grant_type=client_credentials&client_id=${c.client.clientId}`), 401, 'invalid_client');
    expectOAuthError(await tokenRequest('grant_type=client_credentials', { Authorization: 'Basic !!!' }), 401, 'invalid_client');
    expectOAuthError(await tokenRequest('grant_type=client_credentials', { Authorization: `Basic ${Buffer.from('no-colon').toString('base64')}` }), 401, 'invalid_client');
    expectOAuthError(await tokenRequest('grant_type=client_credentials', { Authorization: 'Bearer x.y.z' }), 401, 'invalid_client');
  });

  it('form-decodes the Basic credentials first (§2.3.1): an encoded id and secret authenticate', async () => {
    const c = await newClient('encoded', ['a']);
    // Every character escaped, as oauth4webapi does for "-", "_" and ".".
    const escape = (s: string) => [...s].map((ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`).join('');
    const header = `Basic ${Buffer.from(`${escape(c.client.clientId)}:${escape(c.secret)}`).toString('base64')}`;
    expect((await tokenRequest('grant_type=client_credentials', { Authorization: header })).status).toBe(200);
    const malformed = `Basic ${Buffer.from(`${c.client.clientId}:%E0%A4%A`).toString('base64')}`;
    expectOAuthError(await tokenRequest('grant_type=client_credentials', { Authorization: malformed }), 401, 'invalid_client');
  });

  it('invalid_request: no grant_type, a repeated parameter, two ways of authenticating, another body type, differing ids', async () => {
    const c = await newClient('requests', ['a']);
    const auth = { Authorization: basic(c.client.clientId, c.secret) };
    expectOAuthError(await tokenRequest('scope=a', auth), 400, 'invalid_request');
    expectOAuthError(await tokenRequest('grant_type=client_credentials&grant_type=client_credentials', auth), 400, 'invalid_request');
    expectOAuthError(await tokenRequest('grant_type=client_credentials&scope=a&scope=a', auth), 400, 'invalid_request');
    expectOAuthError(await tokenRequest(`grant_type=client_credentials&client_secret=${c.secret}`, auth), 400, 'invalid_request');
    expectOAuthError(await tokenRequest('grant_type=client_credentials&client_id=someone-else', auth), 400, 'invalid_request');
    expectOAuthError(await tokenRequest(`grant_type=client_credentials&client_secret=${c.secret}`), 400, 'invalid_request');
    const json = await request(t.url, 'POST', '/api/oauth/token/', { json: { grant_type: 'client_credentials' }, headers: auth });
    expectOAuthError(json, 400, 'invalid_request');
    expectOAuthError(await tokenRequest('grant_type=client_credentials', { ...auth, 'Content-Encoding': 'br' }), 400, 'invalid_request');
    const big = await tokenRequest(`grant_type=client_credentials&x=${'a'.repeat(70_000)}`, auth);
    expectOAuthError(big, 413, 'invalid_request');
    // The same id in the body beside Basic is fine.
    expect((await tokenRequest(`grant_type=client_credentials&client_id=${c.client.clientId}`, auth)).status).toBe(200);
  });

  it('unsupported_grant_type, invalid_scope (not the client\'s, or malformed); 405 for other methods', async () => {
    const c = await newClient('scopes', ['things:read']);
    const auth = { Authorization: basic(c.client.clientId, c.secret) };
    expectOAuthError(await tokenRequest('grant_type=password&username=a&password=b', auth), 400, 'unsupported_grant_type');
    expectOAuthError(await tokenRequest('grant_type=refresh_token&refresh_token=x', auth), 400, 'unsupported_grant_type');
    expectOAuthError(await tokenRequest('grant_type=client_credentials&scope=things:read%20things:write', auth), 400, 'invalid_scope');
    expectOAuthError(await tokenRequest('grant_type=client_credentials&scope=%22quoted%22', auth), 400, 'invalid_scope');
    // Authentication comes before scopes: a stranger learns nothing of a client's scopes.
    expectOAuthError(await tokenRequest('grant_type=client_credentials&scope=nope', { Authorization: basic(c.client.clientId, 'x') }), 401, 'invalid_client');
    const get = await request(t.url, 'GET', '/api/oauth/token/');
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST, OPTIONS');
    // oauth4webapi reads them as RFC errors (a 401 by its Basic challenge).
    await expect(grant({ ...c, secret: 'wrong' })).rejects.toMatchObject(refusedClient);
    await expect(grant(c, 'post', 'other')).rejects.toMatchObject({ error: 'invalid_scope', status: 400 });
  });
});

describe('deleting a client or rotating its secret stops its tokens at once', () => {
  it('deleteclient: the guard and verify refuse its tokens, and it gets no more', async () => {
    const c = await newClient('doomed', ['things:read']);
    const { access_token: token } = await grant(c);
    expect((await request(routesUrl, 'GET', '/things', { headers: bearer(token) })).status).toBe(200);
    await deleteClient(t.db, 'doomed', t.clock);
    // The cutoff reaches this worker by NOTIFY.
    await eventually(async () => (await request(routesUrl, 'GET', '/things', { headers: bearer(token) })).status === 401);
    const r = await request(routesUrl, 'GET', '/things', { headers: bearer(token) });
    expect(r.json.messages[0].message).toBe('Token is blacklisted');
    expect(await t.post('/api/token/verify/', { token })).toMatchObject({ status: 400, json: { non_field_errors: ['Token is blacklisted'] } });
    await expect(grant(c)).rejects.toMatchObject(refusedClient);
  });

  it('rotateclientsecret: the old secret and its tokens stop; a token of the new secret works at once', async () => {
    const c = await newClient('rotating', ['things:read']);
    const old = await grant(c);
    const rotated = await rotateClientSecret(t.db, 'rotating', t.clock);
    expect(rotated.client.clientId).toBe(c.client.clientId);
    expect(rotated.secret).not.toBe(c.secret);
    const fresh = await grant(rotated);
    await eventually(() => t.revocations.isClientRevoked(c.client.clientId, decodeJwt(old.access_token).payload.iat));
    expect((await request(routesUrl, 'GET', '/things', { headers: bearer(old.access_token) })).status).toBe(401);
    expect((await request(routesUrl, 'GET', '/things', { headers: bearer(fresh.access_token) })).status).toBe(200);
    expect((await t.post('/api/token/verify/', { token: fresh.access_token })).status).toBe(200);
    await expect(grant(c)).rejects.toMatchObject(refusedClient);
  });

  it('a grant in flight when the secret rotates: its token is void too (the rotation waits for it)', async () => {
    const c = await newClient('in-flight', ['things:read']);
    // Hold the client as a grant does (FOR SHARE) while "signing" its token.
    const holder = new pg.Client({ connectionString: t.config.databaseUrl });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT client_id FROM oauth_clients WHERE client_id = $1 FOR SHARE', [c.client.clientId]);
      let rotatedAt: number | undefined;
      const rotation = rotateClientSecret(t.db, 'in-flight', t.clock).then((r) => ((rotatedAt = Date.now()), r));
      // The rotation is waiting on the lock (pg_locks shows it), not done.
      await eventually(async () => {
        const { rows } = await holder.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted AND a.query LIKE '%oauth_clients%FOR UPDATE%'",
        );
        return rows[0]!.n > 0;
      });
      // The grant signs two seconds on: a rotation that read the time before it got the row would
      // stamp a cutoff this token outlives.
      t.clock.advance(2);
      const inFlight = t.tokens.signClient({ clientId: c.client.clientId, scopes: ['things:read'] }, t.clock());
      await holder.query('COMMIT');
      const r = await rotation;
      expect(rotatedAt).toBeDefined();
      const iat = decodeJwt(inFlight.token).payload.iat as number;
      await eventually(() => t.revocations.isClientRevoked(c.client.clientId, iat));
      expect((await request(routesUrl, 'GET', '/things', { headers: bearer(inFlight.token) })).status).toBe(401);
      // The new secret's first token is not caught by the cutoff.
      expect((await request(routesUrl, 'GET', '/things', { headers: bearer((await grant(r)).access_token) })).status).toBe(200);
    } finally {
      t.clock.reset();
      await holder.end();
    }
  });
});

describe('throttle, metrics and events', () => {
  async function value(name: string, labels: Record<string, string>): Promise<number> {
    const metric = (await t.services.metrics.shared.getMetricsAsJSON()).find((m) => m.name === name);
    return metric?.values.find((v) => Object.entries(labels).every(([k, l]) => String(v.labels[k]) === l))?.value ?? 0;
  }

  it('the client id is throttled like a login: attempts reserved before the secret is checked; a success clears them', async () => {
    const c = await newClient('guessed', ['a']);
    const wrong = { Authorization: basic(c.client.clientId, 'guess') };
    // The wait after the free attempts is a second: the clock stands still so no wait runs out here.
    t.clock.freeze();
    onTestFinished(() => t.clock.reset());
    const before = { success: await value('auth_client_grants_total', { outcome: 'success' }), throttled: await value('auth_client_grants_total', { outcome: 'throttled' }) };
    // Three free attempts (LOGIN_THROTTLE_FREE_ATTEMPTS), all at once: no more than three secrets are checked.
    const replies = await Promise.all(Array.from({ length: 8 }, () => tokenRequest('grant_type=client_credentials', wrong)));
    const statuses = replies.map((r) => r.status).sort();
    expect(statuses.filter((s) => s === 401)).toHaveLength(3);
    expect(statuses.filter((s) => s === 429)).toHaveLength(5);
    const throttled = replies.find((r) => r.status === 429)!;
    expectOAuthError(throttled, 429, 'slow_down');
    expect(Number(throttled.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // Even the right secret waits now.
    expect((await tokenRequest('grant_type=client_credentials', { Authorization: basic(c.client.clientId, c.secret) })).status).toBe(429);
    expect(await value('auth_client_grants_total', { outcome: 'throttled' })).toBe(before.throttled + 6);
    // Another client is not held back.
    expect((await grant(await newClient('bystander', ['a']))).access_token).toBeTruthy();
    expect(await value('auth_client_grants_total', { outcome: 'success' })).toBe(before.success + 1);
    // The security events name the client, never the secret.
    const events = t.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'security event' && l.client_id === c.client.clientId);
    expect(events.map((e) => e.event).sort()).toEqual([...Array(3).fill('client_grant_invalid_client'), ...Array(6).fill('client_grant_throttled')]);
    expect(t.logs.join('\n')).not.toContain(c.secret);
    // Once the wait is over the right secret passes, and its success clears the address's count: a
    // wrong guess after it is a free attempt again (401), not a wait (429).
    t.clock.advance(Number(throttled.headers.get('retry-after')) + 1);
    expect((await tokenRequest('grant_type=client_credentials', { Authorization: basic(c.client.clientId, c.secret) })).status).toBe(200);
    expect((await tokenRequest('grant_type=client_credentials', wrong)).status).toBe(401);
  });

  it('counts every outcome', async () => {
    const outcomes = ['success', 'invalid_client', 'invalid_scope', 'invalid_request', 'unsupported_grant_type', 'throttled'];
    const before = await Promise.all(outcomes.map((o) => value('auth_client_grants_total', { outcome: o })));
    const c = await newClient('counted', ['a']);
    const auth = { Authorization: basic(c.client.clientId, c.secret) };
    await tokenRequest('grant_type=client_credentials', auth);
    await tokenRequest('grant_type=client_credentials', { Authorization: basic(c.client.clientId, 'no') });
    await tokenRequest('grant_type=client_credentials&scope=b', auth);
    await tokenRequest('scope=a', auth);
    await tokenRequest('grant_type=password', auth);
    const after = await Promise.all(outcomes.map((o) => value('auth_client_grants_total', { outcome: o })));
    expect(after.map((v, i) => v - before[i]!)).toEqual([1, 1, 1, 1, 1, 0]);
  });
});
