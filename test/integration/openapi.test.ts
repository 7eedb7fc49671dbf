// The OpenAPI document: valid OpenAPI 3.1, exactly the routes the router serves (paths and methods),
// answers that match the schemas it documents; and the docs page with its own CSP.
import type Router from '@koa/router';
import { Validator } from '@seriousme/openapi-schema-validator';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import * as schemas from '../../app/auth/schemas';
import { DOCS_CSP } from '../../app/http/docs';
import { endpointMethods } from '../../app/http/endpoint';
import { createClient } from '../../app/auth/clients';
import { AuthorizationServerMetadata, ErrorBody, FieldErrors, Me, OAuthErrorBody, OAuthTokenResponse } from '../../app/http/openapi';
import { startTestApp, type TestApp } from '../support/test-app';

let t: TestApp;
let doc: { openapi: string; paths: Record<string, Record<string, unknown>> };
beforeAll(async () => {
  // Machine clients on: their routes are documented (and checked) too.
  t = await startTestApp({ ISSUER: 'https://auth.example.test' });
  await t.user('erin', 'erin-password-1');
  const r = await t.request('GET', '/api/schema/');
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toBe('application/json');
  doc = r.json;
});
afterAll(() => t.stop());

/** Router path → OpenAPI path: `:id` is `{id}`; the trailing slash (optional for the router) is dropped. */
const normal = (p: string) => p.replace(/\/$/, '').replace(/\{(\w+)\}/g, ':$1');

function routerTable(): Map<string, string[]> {
  const router = t.koa.middleware.map((m) => (m as { router?: Router }).router).find((r) => r !== undefined)!;
  const table = new Map<string, string[]>();
  for (const layer of router.stack) {
    const methods = layer.stack.map(endpointMethods).find((m) => m !== undefined);
    expect(methods, `${String(layer.path)} has no endpoint`).toBeDefined();
    table.set(String(layer.path), [...methods!].sort());
  }
  return table;
}

describe('GET /api/schema/', () => {
  it('is a valid OpenAPI 3.1 document', async () => {
    expect(doc.openapi).toBe('3.1.0');
    const result = await new Validator().validate(doc as unknown as Parameters<Validator["validate"]>[0]);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
  });

  it('documents every route the router serves, with its methods, and nothing else', () => {
    const documented = new Map(
      Object.entries(doc.paths).map(([p, ops]) => [normal(p), Object.keys(ops).map((m) => m.toUpperCase()).sort()]),
    );
    expect(Object.fromEntries(documented)).toEqual(Object.fromEntries(routerTable()));
  });

  it('spells every path as it is served: no documented operation is a 404 or a 405', async () => {
    const example: Record<string, string> = { id: '6f1c2a9e-3b4d-4e5f-8a6b-7c8d9e0f1a2b', asset: 'init.js' };
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const method of Object.keys(ops)) {
        const r = await t.request(method.toUpperCase(), path.replace(/\{(\w+)\}/g, (_, name: string) => example[name]!));
        expect([404, 405], `${method} ${path}: ${r.status}`).not.toContain(r.status);
      }
    }
  });

  it('generates its schemas from the zod schemas the handlers validate with', () => {
    const components = (doc as unknown as { components: { schemas: Record<string, unknown> } }).components.schemas;
    expect(components.TokenObtainRequest).toEqual({
      type: 'object',
      properties: { username: { type: 'string', minLength: 1 }, password: { type: 'string', minLength: 1 } },
      required: ['username', 'password'],
      description: 'Credentials. JSON, form-encoded or multipart.',
    });
    expect(components.Session).toMatchObject({ required: ['id', 'created_at', 'last_used_at', 'user_agent', 'ip', 'current'] });
  });
});

describe('answers match the documented schemas', () => {
  const strict = (schema: z.ZodType) => (schema instanceof z.ZodObject ? schema.strict() : schema);
  const conforms = (schema: z.ZodType, body: unknown) => expect(strict(schema).safeParse(body).error?.issues ?? []).toEqual([]);

  it('for the token endpoints, both transports, and their errors', async () => {
    const creds = { username: 'erin', password: 'erin-password-1' };
    const pair = await t.post('/api/token/', creds);
    conforms(schemas.TokenPair, pair.json);
    conforms(schemas.AccessOnly, (await t.request('POST', '/api/token/', { json: creds, headers: { 'X-Token-Transport': 'cookie' } })).json);
    const rotated = await t.post('/api/token/refresh/', { refresh: pair.json.refresh });
    conforms(schemas.RotatedPair, rotated.json);
    conforms(schemas.Empty, (await t.post('/api/token/verify/', { token: rotated.json.access })).json);
    conforms(Me, (await t.request('GET', '/api/me/', { headers: { Authorization: `Bearer ${rotated.json.access}` } })).json);
    conforms(FieldErrors, (await t.post('/api/token/', {})).json);
    conforms(FieldErrors, (await t.request('POST', '/api/token/', { body: '[]', headers: { 'Content-Type': 'application/json' } })).json);
    for (const r of [
      await t.post('/api/token/', { username: 'erin', password: 'wrong' }),
      await t.post('/api/token/refresh/', { refresh: pair.json.refresh }),
      await t.request('GET', '/api/me/', { headers: { Authorization: 'Bearer x.y.z' } }),
      await t.request('GET', '/api/token/'),
      await t.request('POST', '/api/token/', { body: 'x', headers: { 'Content-Type': 'text/plain' } }),
      await t.request('POST', '/api/token/refresh/', { headers: { 'X-Token-Transport': 'cookie' } }),
    ]) {
      expect(r.status).toBeGreaterThanOrEqual(400);
      conforms(ErrorBody, r.json);
    }
  });
});

describe('machine clients', () => {
  const strict = (schema: z.ZodType) => (schema instanceof z.ZodObject ? schema.strict() : schema);
  const conforms = (schema: z.ZodType, body: unknown) => expect(strict(schema).safeParse(body).error?.issues ?? []).toEqual([]);

  it('their answers match the documented OAuth schemas', async () => {
    const c = await createClient(t.db, { name: 'documented', scopes: ['a'], now: new Date() });
    const form = (body: string, headers: Record<string, string> = {}) =>
      t.request('POST', '/api/oauth/token/', { body, headers: { 'Content-Type': 'application/x-www-form-urlencoded', ...headers } });
    conforms(OAuthTokenResponse, (await form(`grant_type=client_credentials&client_id=${c.client.clientId}&client_secret=${c.secret}`)).json);
    for (const r of [await form('grant_type=client_credentials'), await form('grant_type=password'), await form('')]) conforms(OAuthErrorBody, r.json);
    conforms(AuthorizationServerMetadata, (await t.request('GET', '/.well-known/oauth-authorization-server')).json);
    const components = (doc as unknown as { components: { securitySchemes: Record<string, unknown> } }).components.securitySchemes;
    expect(components.oauth2).toMatchObject({ type: 'oauth2', flows: { clientCredentials: { tokenUrl: '/api/oauth/token/' } } });
  });

  it('are left out of the document when they are off', async () => {
    const off = await startTestApp({}, { databaseUrl: t.config.databaseUrl });
    try {
      const paths = Object.keys((await off.request('GET', '/api/schema/')).json.paths);
      expect(paths).not.toContain('/api/oauth/token/');
      expect((await off.request('POST', '/api/oauth/token/')).status).toBe(404);
    } finally {
      await off.stop();
    }
  });
});

describe('GET /api/docs/', () => {
  it('serves the page and every asset it names with its own CSP, and nothing else', async () => {
    const page = await t.request('GET', '/api/docs/');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toBe(DOCS_CSP);
    const assets = [...page.text.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    expect(assets.length).toBe(4);
    for (const asset of assets) {
      expect(asset.startsWith('/api/docs/'), asset).toBe(true); // nothing from another origin
      const r = await t.request('GET', asset);
      expect(r.status, asset).toBe(200);
      expect(r.headers.get('content-security-policy')).toBe(DOCS_CSP);
    }
    const missing = await t.request('GET', '/api/docs/package.json');
    expect(missing.status).toBe(404);
    expect(missing.json).toEqual({ detail: 'Not found.', code: 'not_found' });
    // Other answers carry no page policy of their own.
    expect((await t.request('GET', '/api/schema/')).headers.get('content-security-policy')).toBeNull();
  });
});
