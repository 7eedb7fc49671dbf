// The guard is koa-jwt, configured from the key set and the settings, with simplejwt's answers.
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createGuard } from '../../app/auth/guard';
import { RevocationStore } from '../../app/auth/revocations';
import { createTokenService } from '../../app/auth/tokens';
import { loadConfig } from '../../app/config';
import { errorHandler } from '../../app/http/errors';
import { createLogger } from '../../app/logger';
import { request } from '../support/http';

// The real koa-jwt, wrapped so the test sees how the guard calls it.
const koaJwt = vi.hoisted(() => ({ calls: [] as Record<string, unknown>[] }));
vi.mock('koa-jwt', async (importOriginal) => {
  const real = ((await importOriginal()) as { default: (o: Record<string, unknown>) => Koa.Middleware }).default;
  return {
    default: (options: Record<string, unknown>) => {
      koaJwt.calls.push(options);
      return real(options);
    },
  };
});

const { config } = loadConfig({ DATABASE_URL: 'postgres://x/y', SIGNING_KEY: 'unit-test-signing-key-0123456789abcdef', AUDIENCE: 'api', ISSUER: 'auth', LEEWAY: '7', AUTH_HEADER_TYPES: 'Bearer,JWT' });
let now = Date.now();
const clock = () => now;
const tokens = createTokenService(config.jwt, clock);
const revocations = new RevocationStore(600_000, clock);
let url: string;
let server: ReturnType<Koa['listen']>;

beforeAll(async () => {
  const app = new Koa();
  app.use(errorHandler({ logger: createLogger('silent'), authScheme: 'Bearer' }));
  app.use(createGuard({ tokens, authHeaderTypes: config.jwt.authHeaderTypes, revocations }));
  app.use((ctx) => {
    ctx.body = { user: ctx.state.auth!.userId };
  });
  server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => {
  server.close();
});

const get = (authorization: string) => request(url, 'GET', '/', { headers: { Authorization: authorization } });

describe('the koa-jwt guard', () => {
  it('is koa-jwt, given the key set\'s algorithms, audience, issuer and leeway, never the token\'s', () => {
    expect(koaJwt.calls).toHaveLength(1);
    const options = koaJwt.calls[0]!;
    expect(options.algorithms).toEqual(['HS256']);
    expect(options).toMatchObject({ audience: 'api', issuer: 'auth', clockTolerance: 7, passthrough: true });
    // No secret loader: getToken parses the header (the token service's parser) and sets the key.
    expect(options.secret).toBeUndefined();
    expect(typeof options.getToken).toBe('function');
    expect(typeof options.isRevoked).toBe('function');
    expect(options.cookie).toBeUndefined(); // access tokens never come from a cookie
    now += 3_000;
    expect(options.clockTimestamp).toBe(Math.floor(now / 1000)); // read at each verification
  });

  it('lets a valid token through, under every configured scheme', async () => {
    const { token } = tokens.sign('access', 5, now, { sid: '0c8e6c1e-1b7a-4f0e-9a55-3d2f8c7b6a01' });
    expect((await get(`Bearer ${token}`)).json).toEqual({ user: 5 });
    expect((await get(`JWT ${token}`)).json).toEqual({ user: 5 });
  });

  it('answers in simplejwt\'s shapes for what koa-jwt refuses and for what its isRevoked finds', async () => {
    const { token } = tokens.sign('access', 5, now, { sid: '0c8e6c1e-1b7a-4f0e-9a55-3d2f8c7b6a02' });
    const refresh = tokens.sign('refresh', 5, now).token;
    const expired = tokens.sign('access', 5, now - 400_000).token;
    const messages = async (authorization: string) => (await get(authorization)).json.messages?.[0]?.message;
    expect(await messages(`Bearer ${refresh}`)).toBe('Token has wrong type');
    expect(await messages(`Bearer ${expired}`)).toBe('Token is invalid or expired');
    expect(await messages(`Bearer ${token.slice(0, -3)}abc`)).toBe('Token is invalid or expired');
    revocations.revokeFamily('0c8e6c1e-1b7a-4f0e-9a55-3d2f8c7b6a02');
    expect(await messages(`Bearer ${token}`)).toBe('Token is blacklisted');
    const r = await get(`bearer ${token}`); // the scheme is case-sensitive: koa-jwt's own resolver never runs
    expect(r.status).toBe(401);
    expect(r.json).toEqual({ detail: 'Authentication credentials were not provided.' });
  });
});
