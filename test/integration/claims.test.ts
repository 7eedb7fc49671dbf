// Claims from the user record: with ACCESS_TOKEN_CLAIMS the access tokens carry is_staff,
// is_superuser and the user's groups, read at login and again at every refresh (with and without
// rotation), so a change reaches the next access token; none by default (the wire as today); the
// groups' bound; requireClaim and requireGroup on a developer's routes, from the token or the database.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGuard, requireClaim, requireGroup } from '../../app/auth/guard';
import { GROUPS_CLAIM_MAX_BYTES, loadUserClaims, loadUserClaimsByModels } from '../../app/auth/user-claims';
import { addToGroup, removeFromGroup, setStaff } from '../../app/auth/users';
import { errorHandler } from '../../app/http/errors';
import { createLogger } from '../../app/logger';
import { decodeJwt, request } from '../support/http';
import { startTestApp, type TestApp } from '../support/test-app';

let t: TestApp;
let plain: TestApp; // the same database, no ACCESS_TOKEN_CLAIMS
let routes: http.Server;
let routesUrl: string;

beforeAll(async () => {
  t = await startTestApp({ ACCESS_TOKEN_CLAIMS: 'is_staff,is_superuser,groups' });
  plain = await startTestApp({}, { databaseUrl: t.config.databaseUrl });
  await t.user('alice', 'alice-password-1');
  await t.user('bob', 'bob-password-1');

  // A developer's routes: staff only, editors or admins only.
  const guard = createGuard({ tokens: t.tokens, authHeaderTypes: ['Bearer'], revocations: t.revocations });
  const app = new Koa();
  app.use(errorHandler({ logger: createLogger('silent'), authScheme: 'Bearer' }));
  const staff = requireClaim(t.db, 'is_staff');
  const editors = requireGroup(t.db, 'editors', 'admins');
  app.use(async (ctx) => {
    const gate = ctx.path === '/staff' ? staff : editors;
    await guard(ctx, () => gate(ctx, async () => {
      ctx.body = { ok: true };
    }));
  });
  routes = http.createServer(app.callback());
  await new Promise<void>((resolve) => routes.listen(0, '127.0.0.1', resolve));
  routesUrl = `http://127.0.0.1:${(routes.address() as AddressInfo).port}`;
});

afterAll(async () => {
  routes?.close();
  await plain?.stop();
  await t?.stop();
});

const claimsOf = (token: string) => decodeJwt(token).payload as Record<string, unknown>;
const at = (path: string, access: string) => request(routesUrl, 'GET', path, { headers: { Authorization: `Bearer ${access}` } });

describe('ACCESS_TOKEN_CLAIMS', () => {
  it('puts is_staff, is_superuser and the groups (sorted) in access tokens at login, never in refresh tokens', async () => {
    await setStaff(t.db, 'alice', { isStaff: true });
    await addToGroup(t.db, 'alice', 'writers');
    await addToGroup(t.db, 'alice', 'editors');
    const pair = await t.login('alice', 'alice-password-1');
    const claims = claimsOf(pair.access);
    expect(claims).toMatchObject({ token_type: 'access', username: 'alice', is_staff: true, is_superuser: false, groups: ['editors', 'writers'] });
    expect(Object.keys(claims)).toEqual(['token_type', 'exp', 'iat', 'jti', 'user_id', 'sid', 'username', 'is_staff', 'is_superuser', 'groups']);
    expect(Object.keys(claimsOf(pair.refresh))).toEqual(['token_type', 'exp', 'iat', 'jti', 'user_id']);
  });

  it('reads them again at every refresh: a change reaches the next access token', async () => {
    const pair = await t.login('bob', 'bob-password-1');
    expect(claimsOf(pair.access)).toMatchObject({ is_staff: false, is_superuser: false, groups: [] });
    await setStaff(t.db, 'bob', { isStaff: true, isSuperuser: true });
    await addToGroup(t.db, 'bob', 'admins');
    const rotated = await t.post('/api/token/refresh/', { refresh: pair.refresh });
    expect(claimsOf(rotated.json.access)).toMatchObject({ is_staff: true, is_superuser: true, groups: ['admins'] });
    await removeFromGroup(t.db, 'bob', 'admins');
    await setStaff(t.db, 'bob', { isSuperuser: false });
    const again = await t.post('/api/token/refresh/', { refresh: rotated.json.refresh });
    expect(claimsOf(again.json.access)).toMatchObject({ is_staff: true, is_superuser: false, groups: [] });
  });

  it('without rotation too (ROTATE_REFRESH_TOKENS=false)', async () => {
    const noRotation = await startTestApp({ ACCESS_TOKEN_CLAIMS: 'groups', ROTATE_REFRESH_TOKENS: 'false' }, { databaseUrl: t.config.databaseUrl });
    try {
      const pair = await noRotation.login('alice', 'alice-password-1');
      await addToGroup(t.db, 'alice', 'reviewers');
      const r = await noRotation.post('/api/token/refresh/', { refresh: pair.refresh });
      expect(Object.keys(r.json)).toEqual(['access']);
      expect(claimsOf(r.json.access).groups).toEqual(['editors', 'reviewers', 'writers']);
      expect(claimsOf(r.json.access).is_staff).toBeUndefined(); // only what ACCESS_TOKEN_CLAIMS names
    } finally {
      await removeFromGroup(t.db, 'alice', 'reviewers');
      await noRotation.stop();
    }
  });

  it('by default none: the access token is exactly as before', async () => {
    const pair = await plain.login('alice', 'alice-password-1');
    expect(Object.keys(claimsOf(pair.access))).toEqual(['token_type', 'exp', 'iat', 'jti', 'user_id', 'sid', 'username']);
    const rotated = await plain.post('/api/token/refresh/', { refresh: pair.refresh });
    expect(Object.keys(claimsOf(rotated.json.access))).toEqual(['token_type', 'exp', 'iat', 'jti', 'user_id', 'sid', 'username']);
  });

  it(`bounds the groups: past ${GROUPS_CLAIM_MAX_BYTES} bytes of names, groups_overage instead, and requireGroup asks the database`, async () => {
    await t.user('carol', 'carol-password-1');
    for (let i = 0; i < 60; i++) await addToGroup(t.db, 'carol', `project-team-${String(i).padStart(3, '0')}`);
    const many = await t.login('carol', 'carol-password-1');
    const claims = claimsOf(many.access);
    expect(claims.groups).toBeUndefined();
    expect(claims.groups_overage).toBe(true);
    expect(many.access.length).toBeLessThan(1024);
    expect((await at('/editors', many.access)).status).toBe(403);
    await addToGroup(t.db, 'carol', 'editors');
    expect((await at('/editors', many.access)).status).toBe(200); // the database, at once
    // Just under the bound, the names are all there.
    await t.user('dave', 'dave-password-1');
    for (let i = 0; i < 40; i++) await addToGroup(t.db, 'dave', `team-${String(i).padStart(15, '0')}`);
    const near = claimsOf((await t.login('dave', 'dave-password-1')).access);
    expect(Buffer.byteLength(JSON.stringify(near.groups))).toBeLessThanOrEqual(GROUPS_CLAIM_MAX_BYTES);
    expect(near.groups).toHaveLength(40);
  });
});

describe('the claims statement', () => {
  it('reads what the models read, for users with and without groups and flags, and nothing for no user', async () => {
    const all = ['is_staff', 'is_superuser', 'groups'] as const;
    const users = await t.db.models.User.findAll({ attributes: ['id'] });
    expect(users.length).toBeGreaterThan(3);
    for (const { id } of users) expect(await loadUserClaims(t.db, id, all), `user ${id}`).toEqual(await loadUserClaimsByModels(t.db, id, all));
    expect(await loadUserClaims(t.db, 999_999, all)).toBeUndefined();
    expect(await loadUserClaims(t.db, users[0]!.id, [])).toBeUndefined();
  });
});

describe('requireClaim and requireGroup', () => {
  it('admit by the token when it carries the claim: a change waits for the next access token', async () => {
    await t.user('erin', 'erin-password-1');
    const before = await t.login('erin', 'erin-password-1');
    expect((await at('/staff', before.access)).json).toEqual({ detail: 'You do not have permission to perform this action.', code: 'permission_denied' });
    expect((await at('/editors', before.access)).status).toBe(403);
    await setStaff(t.db, 'erin', { isStaff: true });
    await addToGroup(t.db, 'erin', 'admins');
    expect((await at('/staff', before.access)).status).toBe(403); // the token says not yet
    const after = (await t.post('/api/token/refresh/', { refresh: before.refresh })).json;
    expect((await at('/staff', after.access)).status).toBe(200);
    expect((await at('/editors', after.access)).status).toBe(200); // one of editors, admins
  });

  it('ask the database when the token does not carry the claim (ACCESS_TOKEN_CLAIMS unset)', async () => {
    await t.user('fred', 'fred-password-1');
    const { access } = await plain.login('fred', 'fred-password-1');
    expect(claimsOf(access).is_staff).toBeUndefined();
    expect((await at('/staff', access)).status).toBe(403);
    await setStaff(t.db, 'fred', { isStaff: true });
    await addToGroup(t.db, 'fred', 'editors');
    expect((await at('/staff', access)).status).toBe(200);
    expect((await at('/editors', access)).status).toBe(200);
  });
});
