// Machine clients without I/O: when they are on (ISSUER), the RFC 9068 token's shape and checks, the
// two kinds kept apart, per-client cutoffs, secrets and scopes, and the guard's requirements.
import type { AddressInfo } from 'node:net';
import { sign as cryptoSign } from 'node:crypto';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashSecret, parseScopes, secretMatches } from '../../app/auth/clients';
import { anyOf, createGuard, requireScope } from '../../app/auth/guard';
import { generateKey } from '../../app/auth/keys';
import { authorizationServerMetadata } from '../../app/auth/oauth-metadata';
import { RevocationStore } from '../../app/auth/revocations';
import { createTokenService, TokenError } from '../../app/auth/tokens';
import { loadConfig } from '../../app/config';
import { errorHandler } from '../../app/http/errors';
import { createLogger } from '../../app/logger';
import { b64url, decodeJwt, request, signHs } from '../support/http';

const BASE = { DATABASE_URL: 'postgres://x/y', SIGNING_KEY: 'unit-test-signing-key-0123456789abcdef' };

describe('ISSUER turns machine clients on', () => {
  it('when it is an issuer identifier: https (http outside production), no path, query, fragment or credentials', () => {
    expect(loadConfig(BASE).config.clients).toBeUndefined();
    expect(loadConfig({ ...BASE, ISSUER: 'my-service' }).config.clients).toBeUndefined(); // simplejwt's plain string: off, no warning
    expect(loadConfig({ ...BASE, ISSUER: 'my-service' }).warnings.some((w) => w.includes('machine clients'))).toBe(false);
    expect(loadConfig({ ...BASE, ISSUER: 'https://auth.example.com' }).config.clients).toEqual({ issuer: 'https://auth.example.com' });
    expect(loadConfig({ ...BASE, ISSUER: 'https://auth.example.com/' }).config.clients).toEqual({ issuer: 'https://auth.example.com/' });
    expect(loadConfig({ ...BASE, ISSUER: 'http://localhost:8080' }).config.clients).toEqual({ issuer: 'http://localhost:8080' });
    const production = { ...BASE, NODE_ENV: 'production', SIGNING_KEY: 'kq8S3v6M1x0bN2zR7pW5tY4uI9oA3sD6fG8hJ1kL' };
    expect(loadConfig({ ...production, ISSUER: 'https://auth.example.com' }).config.clients).toBeDefined();
    for (const issuer of ['https://auth.example.com/tenant', 'https://auth.example.com/?x=1', 'https://auth.example.com#f', 'https://u:p@auth.example.com', 'ftp://auth.example.com']) {
      const { config, warnings } = loadConfig({ ...BASE, ISSUER: issuer });
      expect(config.clients, issuer).toBeUndefined();
      expect(warnings.join('\n'), issuer).toMatch(/machine clients are off: ISSUER=.* is not an OAuth issuer identifier/);
    }
    const plain = loadConfig({ ...production, ISSUER: 'http://auth.example.com' });
    expect(plain.config.clients).toBeUndefined();
    expect(plain.warnings.join('\n')).toMatch(/its scheme must be https:/);
    expect(loadConfig({ ...BASE, ISSUER: 'https://a.example', AUTH_HEADER_TYPES: 'JWT' }).warnings.join('\n')).toMatch(/AUTH_HEADER_TYPES has no Bearer/);
  });

  it('ACCESS_TOKEN_CLAIMS: some of is_staff, is_superuser, groups; none by default', () => {
    expect(loadConfig(BASE).config.jwt.accessTokenClaims).toEqual([]);
    expect(loadConfig({ ...BASE, ACCESS_TOKEN_CLAIMS: 'is_staff, groups,groups' }).config.jwt.accessTokenClaims).toEqual(['is_staff', 'groups']);
    expect(() => loadConfig({ ...BASE, ACCESS_TOKEN_CLAIMS: 'is_staff,email' })).toThrow(/ACCESS_TOKEN_CLAIMS: expected some of is_staff, is_superuser, groups.*"email"/);
  });
});

describe('RFC 9068 access tokens', () => {
  const es = generateKey('ES256');
  const { config } = loadConfig({ ...BASE, ALGORITHM: 'ES256', SIGNING_KEY: es.signingKey, ISSUER: 'https://auth.example.com', AUDIENCE: 'api' });
  const now = 1_800_000_000_000;
  const tokens = createTokenService(config.jwt, () => now, config.clients);
  const client = { clientId: 'cid-123', scopes: ['a:read', 'b'] };

  it('header typ at+jwt with the key id; iss, sub, aud, client_id, scope, iat, exp, jti', () => {
    const { token, expiresAt } = tokens.signClient(client, now);
    const { header, payload } = decodeJwt(token);
    expect(header).toEqual({ alg: 'ES256', typ: 'at+jwt', kid: es.kid });
    expect(payload).toEqual({ iss: 'https://auth.example.com', sub: 'cid-123', aud: 'api', client_id: 'cid-123', scope: 'a:read b', iat: 1_800_000_000, exp: 1_800_000_300, jti: expect.stringMatching(/^[0-9a-f]{32}$/) });
    expect(expiresAt.getTime()).toBe(1_800_000_300_000);
    expect(tokens.verifyClient(token)).toMatchObject({ client_id: 'cid-123' });
    expect(tokens.isClientToken(token)).toBe(true);
    // No scope granted: no scope claim.
    expect(decodeJwt(tokens.signClient({ clientId: 'c', scopes: [] }, now).token).payload.scope).toBeUndefined();
  });

  it('neither kind passes as the other', () => {
    const machine = tokens.signClient(client, now).token;
    const user = tokens.sign('access', 7, now, { sid: '5f0c7a2e-8d1b-4c3a-9e6f-2b7d4a1c0e93' }).token;
    expect(() => tokens.verify(machine, undefined)).toThrow('Token has wrong type');
    expect(() => tokens.verify(machine, 'access')).toThrow('Token has wrong type');
    expect(() => tokens.verifyClient(user)).toThrow(TokenError);
    expect(tokens.isClientToken(user)).toBe(false);
    // The same answers once the headers are remembered (a fresh service sees each header first in verify).
    const fresh = createTokenService(config.jwt, () => now, config.clients);
    expect(() => fresh.verify(machine, 'access')).toThrow('Token has wrong type');
    expect(() => fresh.verify(machine, 'access')).toThrow('Token has wrong type');
    expect(fresh.isClientToken(machine)).toBe(true);
    expect(fresh.verify(user, 'access').user_id).toBe(7);
    expect(fresh.isClientToken(user)).toBe(false);
    expect(fresh.inspect(machine).client).toBe(true);
    expect(() => fresh.verify(machine, undefined)).toThrow('Token has wrong type'); // now from memory
    expect(fresh.isClientToken(machine)).toBe(true);
    // A payload of a user token is refused by the client checks even if a header were to say at+jwt.
    expect(() => tokens.checkClientClaims(decodeJwt(user).payload)).toThrow(TokenError);
  });

  it("refuses what RFC 9068 requires and ours lacks, another issuer, a long life, a foreign key", () => {
    const base = decodeJwt(tokens.signClient(client, now).token).payload;
    // Signed by hand: jsonwebtoken would add an iat.
    const sign = (payload: Record<string, unknown>) => {
      const input = `${b64url({ alg: 'ES256', typ: 'at+jwt', kid: es.kid })}.${b64url(payload)}`;
      const signature = cryptoSign('sha256', Buffer.from(input), { key: tokens.settings.keys.active.signing, dsaEncoding: 'ieee-p1363' });
      return `${input}.${signature.toString('base64url')}`;
    };
    expect(() => tokens.verifyClient(sign(base))).not.toThrow();
    for (const [name, over] of Object.entries({
      'no client_id': { client_id: undefined },
      'sub is not the client': { sub: 'other' },
      'no iat': { iat: undefined },
      'no jti': { jti: undefined },
      'another issuer': { iss: 'https://evil.example' },
      'a user claim': { token_type: 'access' },
      'a user id': { user_id: 7 },
      'an hour-long life': { exp: 1_800_003_600 },
      'a scope that is not text': { scope: ['a'] },
    })) {
      const payload = Object.fromEntries(Object.entries({ ...base, ...over }).filter(([, v]) => v !== undefined));
      expect(() => tokens.verifyClient(sign(payload)), name).toThrow(TokenError);
    }
    expect(() => tokens.verifyClient(signHs(base, 'some-other-key', { alg: 'HS256', typ: 'at+jwt' }))).toThrow(TokenError);
  });

  it('none are signed or accepted while machine clients are off', () => {
    const off = createTokenService(config.jwt, () => now);
    expect(() => off.signClient(client, now)).toThrow(/machine clients are off/);
    expect(() => off.verifyClient(tokens.signClient(client, now).token)).toThrow(TokenError);
  });
});

describe('per-client cutoffs in the revocation store', () => {
  const T = 1_800_000_000;
  it('void the tokens of a client issued before the cutoff second, from a notification or a reload', () => {
    const store = new RevocationStore(300_000, () => T * 1000);
    expect(store.apply(`c:cid-1:${T}.25`)).toBe(true);
    expect(store.isClientRevoked('cid-1', T - 1)).toBe(true);
    expect(store.isClientRevoked('cid-1', T)).toBe(false);
    expect(store.isClientRevoked('cid-2', T - 1)).toBe(false);
    store.replace([], [], [['cid-3', T + 5]]);
    expect(store.isClientRevoked('cid-1', T - 1)).toBe(false); // replaced
    expect(store.isClientRevoked('cid-3', T + 4)).toBe(true);
    expect(store.clients).toBe(1);
    expect(store.apply(`c::${T}`)).toBe(false);
  });
});

describe('secrets and scopes', () => {
  it('a secret matches only its own SHA-256 hash', () => {
    const stored = hashSecret('s3cret-value');
    expect(stored).toMatch(/^sha256\$[A-Za-z0-9_-]{43}$/);
    expect(secretMatches('s3cret-value', stored)).toBe(true);
    expect(secretMatches('s3cret-valuE', stored)).toBe(false);
    expect(secretMatches('s3cret-value', 'plain')).toBe(false);
  });

  it("scopes follow RFC 6749 §3.3's grammar", () => {
    expect(parseScopes('things:read,things:write things:read')).toEqual(['things:read', 'things:write']);
    for (const bad of ['a"b', 'a\\b', 'é', 'x'.repeat(129)]) expect(() => parseScopes(bad), bad).toThrow(/is not a scope/);
    expect(() => parseScopes(Array.from({ length: 65 }, (_, i) => `s${i}`).join(','))).toThrow(/at most 64/);
  });
});

describe('guard.orClient and the requirements', () => {
  const es = generateKey('ES256');
  const { config } = loadConfig({ ...BASE, ALGORITHM: 'ES256', SIGNING_KEY: es.signingKey, ISSUER: 'https://auth.example.com' });
  const tokens = createTokenService(config.jwt, Date.now, config.clients);
  const revocations = new RevocationStore(600_000, Date.now);
  const guard = createGuard({ tokens, authHeaderTypes: ['Bearer'], revocations });
  let url: string;
  let server: ReturnType<Koa['listen']>;
  beforeAll(async () => {
    const app = new Koa();
    app.use(errorHandler({ logger: createLogger('silent'), authScheme: 'Bearer' }));
    const route = anyOf(requireScope('x'), requireScope('y', 'z'));
    app.use(async (ctx) => {
      if (ctx.path === '/users') return guard(ctx, async () => void (ctx.body = { user: ctx.state.auth!.userId }));
      await guard.orClient(ctx, () => route(ctx, async () => void (ctx.body = ctx.state.client ? { client: ctx.state.client.clientId } : { user: ctx.state.auth!.userId })));
    });
    server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    server.close();
  });
  const get = (path: string, token: string) => request(url, 'GET', path, { headers: { Authorization: `Bearer ${token}` } });

  it('guard admits users only; orClient admits clients, which anyOf(requireScope…) then checks', async () => {
    const withX = tokens.signClient({ clientId: 'c1', scopes: ['x'] }, Date.now()).token;
    const withYZ = tokens.signClient({ clientId: 'c2', scopes: ['y', 'z'] }, Date.now()).token;
    const withY = tokens.signClient({ clientId: 'c3', scopes: ['y'] }, Date.now()).token;
    const user = tokens.sign('access', 9, Date.now(), { sid: '5f0c7a2e-8d1b-4c3a-9e6f-2b7d4a1c0e93' }).token;
    expect((await get('/users', withX)).json).toEqual({ detail: "This route is for users: a machine client's token cannot call it.", code: 'user_token_required' });
    expect((await get('/users', user)).json).toEqual({ user: 9 });
    expect((await get('/any', withX)).json).toEqual({ client: 'c1' });
    expect((await get('/any', withYZ)).json).toEqual({ client: 'c2' });
    const short = await get('/any', withY);
    expect(short.status).toBe(403);
    expect(short.json.code).toBe('insufficient_scope');
    expect((await get('/any', user)).json.code).toBe('client_token_required');
    revocations.cutClient('c1', Math.floor(Date.now() / 1000) + 1);
    expect((await get('/any', withX)).json.messages[0].message).toBe('Token is blacklisted');
  });
});

describe('the authorization server metadata (RFC 8414)', () => {
  const clients = () => loadConfig({ ...BASE, ISSUER: 'https://auth.example.com' }).config.clients!;
  it('names the JWKS only when it holds a public key: with an HMAC key nobody else can verify a token', () => {
    expect(authorizationServerMetadata(clients(), ['a:read'], true).jwks_uri).toBe('https://auth.example.com/.well-known/jwks.json');
    expect(authorizationServerMetadata(clients(), ['a:read'], false)).not.toHaveProperty('jwks_uri');
    expect(authorizationServerMetadata(clients(), ['a:read'], false).token_endpoint).toBe('https://auth.example.com/api/oauth/token/');
  });
});
