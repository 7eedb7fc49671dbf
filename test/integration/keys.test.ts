// Asymmetric keys, JWKS and key rotation, following the procedure in the README ("Keys") step by step
// while tokens are live: app instances on one database stand for the deployment before, during and
// after the rotation.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from '../support/http';
import { ROOT } from '../support/images';
import { freshDatabase, startTestApp, type TestApp } from '../support/test-app';

const dir = mkdtempSync(path.join(tmpdir(), 'keys-'));
const apps: TestApp[] = [];
let databaseUrl: string;

/** `npm run cli -- genkey ALG --out FILE`; returns the kid it prints. */
function genkey(alg: string, file: string): string {
  const out = execFileSync(process.execPath, [path.join(ROOT, 'scripts/run.js'), 'cli', 'genkey', alg, '--out', file], { cwd: ROOT }).toString();
  return /kid: (\S+)/.exec(out)![1]!;
}

async function deploy(env: Record<string, string>): Promise<TestApp> {
  const app = await startTestApp(env, { databaseUrl });
  apps.push(app);
  return app;
}

const me = (app: TestApp, access: string) => app.request('GET', '/api/me/', { headers: { Authorization: `Bearer ${access}` } });

beforeAll(async () => {
  databaseUrl = await freshDatabase();
});
afterAll(async () => {
  for (const app of apps) await app.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('asymmetric keys', () => {
  for (const alg of ['RS256', 'PS384', 'ES256', 'ES512']) {
    it(`${alg}: tokens carry the key's kid, verify, and the JWKS publishes the public key`, async () => {
      const file = path.join(dir, `${alg}.pem`);
      const kid = genkey(alg, file);
      const app = await deploy({ ALGORITHM: alg, SIGNING_KEY_FILE: file, SIGNING_KEY: '' });
      await app.user(`user-${alg}`, 'a-long-password');
      const pair = await app.login(`user-${alg}`, 'a-long-password');
      expect(decodeJwt(pair.access).header).toEqual({ alg, typ: 'JWT', kid });
      expect((await me(app, pair.access)).status).toBe(200);
      expect((await app.post('/api/token/refresh/', { refresh: pair.refresh })).status).toBe(200);
      const jwks = await app.request('GET', '/.well-known/jwks.json');
      expect(jwks.status).toBe(200);
      expect(jwks.headers.get('cache-control')).toBe('public, max-age=300');
      expect(jwks.json.keys).toHaveLength(1);
      expect(jwks.json.keys[0]).toMatchObject({ kid, alg, use: 'sig' });
      expect(jwks.json.keys[0].d).toBeUndefined();
    });
  }

  it('genkey HS* --out FILE prints no secret, and a short HS key in VERIFYING_KEYS_FILE stops the start', async () => {
    const file = path.join(dir, 'hs512.key');
    const out = execFileSync(process.execPath, [path.join(ROOT, 'scripts/run.js'), 'cli', 'genkey', 'HS512', '--out', file], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    }).toString();
    const secret = readFileSync(file, 'utf8').trim();
    expect(secret.length).toBeGreaterThanOrEqual(64);
    expect(out).toMatch(/kid: hs-/);
    expect(out).not.toContain(secret);
    expect(out).not.toContain(Buffer.from(secret).toString('base64url'));
    const short = path.join(dir, 'short.jwks.json');
    writeFileSync(short, JSON.stringify({ keys: [{ kty: 'oct', alg: 'HS256', kid: 'old', k: Buffer.from('31-bytes-of-an-old-hmac-secret!').toString('base64url') }] }));
    await expect(startTestApp({ VERIFYING_KEYS_FILE: short, SIGNING_KEY_ID: 'new' }, { databaseUrl })).rejects.toThrow(/at least 32 bytes \(this one is 31\)/);
  });

  it('an HMAC deployment publishes no key', async () => {
    const app = await deploy({});
    expect((await app.request('GET', '/.well-known/jwks.json')).json).toEqual({ keys: [] });
  });

  it('refuses a token signed with the public key as an HMAC secret (RS/HS confusion)', async () => {
    const file = path.join(dir, 'confusion.pem');
    genkey('RS256', file);
    const app = await deploy({ ALGORITHM: 'RS256', SIGNING_KEY_FILE: file, SIGNING_KEY: '' });
    const publicPem = (await app.request('GET', '/.well-known/jwks.json')).json.keys[0];
    const { createPublicKey, createHmac } = await import('node:crypto');
    const pem = createPublicKey({ key: publicPem, format: 'jwk' }).export({ format: 'pem', type: 'spki' }).toString();
    const header = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid: publicPem.kid })).toString('base64url');
    const now = Math.floor(Date.now() / 1000);
    const payload = Buffer.from(JSON.stringify({ token_type: 'access', exp: now + 60, iat: now, jti: 'x'.repeat(32), user_id: 1 })).toString('base64url');
    const sig = createHmac('sha256', pem).update(`${header}.${payload}`).digest('base64url');
    const r = await me(app, `${header}.${payload}.${sig}`);
    expect(r.status).toBe(401);
    expect(r.json.messages[0].message).toBe('Token is invalid or expired');
  });
});

describe('key rotation while tokens are live', () => {
  for (const [algA, algB] of [['ES256', 'ES256'], ['RS256', 'ES256']] as const) {
    it(`${algA} → ${algB}: old tokens keep working, new ones carry the new kid; retiring the old key ends them`, async () => {
      // Before: key A signs.
      const keyA = path.join(dir, `a-${algA}-${algB}.pem`);
      const kidA = genkey(algA, keyA);
      const before = await deploy({ ALGORITHM: algA, SIGNING_KEY_FILE: keyA, SIGNING_KEY: '' });
      await before.user(`rita-${algA}-${algB}`, 'rita-password-1');
      const old = await before.login(`rita-${algA}-${algB}`, 'rita-password-1');
      expect(decodeJwt(old.access).header.kid).toBe(kidA);

      // Step 1: make key B. Step 2: save the published keys (A) as the verify-only set.
      const keyB = path.join(dir, `b-${algA}-${algB}.pem`);
      const kidB = genkey(algB, keyB);
      const retired = path.join(dir, `retired-${algA}-${algB}.jwks.json`);
      writeFileSync(retired, (await before.request('GET', '/.well-known/jwks.json')).text);
      // Step 3: deploy with B signing and A verifying (pm2 reload re-reads the files).
      const during = await deploy({ ALGORITHM: algB, SIGNING_KEY_FILE: keyB, SIGNING_KEY: '', VERIFYING_KEYS_FILE: retired });
      expect((await me(during, old.access)).status).toBe(200);
      const rotated = await during.post('/api/token/refresh/', { refresh: old.refresh });
      expect(rotated.status).toBe(200);
      expect(decodeJwt(rotated.json.access).header.kid).toBe(kidB);
      expect(decodeJwt(rotated.json.refresh).header.kid).toBe(kidB);
      expect((await me(during, rotated.json.access)).status).toBe(200);
      const fresh = await during.login(`rita-${algA}-${algB}`, 'rita-password-1');
      expect(decodeJwt(fresh.access).header.kid).toBe(kidB);
      const published = (await during.request('GET', '/.well-known/jwks.json')).json.keys.map((k: { kid: string }) => k.kid);
      expect(published).toEqual([kidB, kidA]);

      // Step 4, once REFRESH_TOKEN_LIFETIME has passed: drop A. Its tokens are refused, B's live on.
      const stillOld = await before.login(`rita-${algA}-${algB}`, 'rita-password-1'); // a token A signed late
      const after = await deploy({ ALGORITHM: algB, SIGNING_KEY_FILE: keyB, SIGNING_KEY: '' });
      expect((await me(after, stillOld.access)).json.messages[0].message).toBe('Token is invalid or expired');
      expect((await me(after, fresh.access)).status).toBe(200);
    });
  }

  it('HS256 (no kid) → HS256 with a kid: the old secret verifies as a kid-less retired key', async () => {
    const oldSecret = 'the-old-hs256-secret-0123456789abcdef';
    const before = await deploy({ SIGNING_KEY: oldSecret });
    await before.user('hank', 'hank-password-1');
    const old = await before.login('hank', 'hank-password-1');
    expect(decodeJwt(old.access).header).toEqual({ alg: 'HS256', typ: 'JWT' });

    const newSecretFile = path.join(dir, 'hs.key');
    const kid = genkey('HS256', newSecretFile);
    const retired = path.join(dir, 'retired-hs.jwks.json');
    writeFileSync(retired, JSON.stringify({ keys: [{ kty: 'oct', alg: 'HS256', k: Buffer.from(oldSecret).toString('base64url') }] }));
    const during = await deploy({ SIGNING_KEY: '', SIGNING_KEY_FILE: newSecretFile, SIGNING_KEY_ID: kid, VERIFYING_KEYS_FILE: retired });
    expect((await me(during, old.access)).status).toBe(200);
    const rotated = await during.post('/api/token/refresh/', { refresh: old.refresh });
    expect(rotated.status).toBe(200);
    expect(decodeJwt(rotated.json.access).header).toEqual({ alg: 'HS256', typ: 'JWT', kid });
    expect((await during.request('GET', '/.well-known/jwks.json')).json).toEqual({ keys: [] }); // secrets stay secret
  });
});
