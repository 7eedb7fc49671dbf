// koa-jwt guards every protected route: no route outside the public list reaches its handler without
// the guard, and the guard's verification is koa-jwt's.
import type Router from '@koa/router';
import type { Layer } from '@koa/router';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isGuard } from '../../app/auth/guard';
import { startTestApp, type TestApp } from '../support/test-app';

// The routes anyone may call: the token endpoints take credentials or tokens in the body, the rest
// are public by nature. Every other route is protected.
// The schema and the docs page describe the API; they hold no data.
// Machine clients' token endpoint takes client credentials; their metadata is public (RFC 8414).
const PUBLIC = new Set([
  '/healthz', '/readyz', '/.well-known/jwks.json', '/api/token', '/api/token/refresh', '/api/token/verify', '/api/token/blacklist',
  '/api/schema', '/api/docs', '/api/docs/:asset', '/api/oauth/token', '/.well-known/oauth-authorization-server',
]);

let t: TestApp;
beforeAll(async () => {
  // With machine clients on, so their routes are among those checked.
  t = await startTestApp({ ISSUER: 'https://auth.example.test' });
});
afterAll(async () => {
  await t.stop();
});

function routes(): Layer[] {
  // @koa/router's dispatch middleware carries its router.
  const router = t.koa.middleware.map((m) => (m as { router?: Router }).router).find((r) => r !== undefined);
  expect(router).toBeDefined();
  return router!.stack;
}

describe('the guard', () => {
  it('stands in front of every route that is not public, before any handler', () => {
    const layers = routes();
    expect(layers.map((l) => l.path)).toEqual(
      expect.arrayContaining(['/api/me', '/api/token/logout-all', '/api/sessions', '/api/sessions/:id', '/api/oauth/token', '/.well-known/oauth-authorization-server']),
    );
    for (const layer of layers) {
      const path = String(layer.path);
      const guardAt = layer.stack.findIndex(isGuard);
      if (PUBLIC.has(path)) {
        expect(guardAt, path).toBe(-1);
        continue;
      }
      // Only middleware that does not answer (no-store headers) may come before it.
      expect(guardAt, `${path} is mounted without the guard`).toBeGreaterThanOrEqual(0);
      expect(guardAt, path).toBeLessThan(layer.stack.length - 1);
    }
  });

  it('answers 401 on every protected route without a token, whatever the method', async () => {
    for (const path of routes().map((l) => String(l.path))) {
      if (PUBLIC.has(path)) continue;
      for (const method of ['GET', 'POST', 'DELETE']) {
        const r = await t.request(method, `${path}/`);
        expect(r.status, `${method} ${path}/`).toBe(401);
        expect(r.json).toEqual({ detail: 'Authentication credentials were not provided.' });
      }
    }
  });
});
