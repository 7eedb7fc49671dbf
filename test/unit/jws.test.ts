import { createPrivateKey, createPublicKey, createSecretKey, generateKeyPairSync } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { describe, expect, it } from 'vitest';
import * as jws from '../../app/auth/jws';

describe('JWS on node:crypto', () => {
  it('verifies the HS256 example of RFC 7515 (appendix A.1)', () => {
    const key = createSecretKey(Buffer.from('AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow', 'base64url'));
    const token =
      'eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk';
    const decoded = jws.decode(token, 4096)!;
    expect(decoded.header).toEqual({ typ: 'JWT', alg: 'HS256' });
    expect(decoded.payload).toMatchObject({ iss: 'joe', exp: 1300819380 });
    expect(jws.verifySignature(decoded, 'HS256', key)).toBe(true);
    expect(jws.verifySignature(decoded, 'HS384', key)).toBe(false);
  });

  it('signs and verifies the Ed25519 example of RFC 8037 (appendix A.4) byte for byte', () => {
    const jwk = { kty: 'OKP', crv: 'Ed25519', d: 'nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A', x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo' };
    const privateKey = createPrivateKey({ key: jwk, format: 'jwk' });
    const publicKey = createPublicKey(privateKey);
    const expected = 'hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg';
    const signingInput = 'eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc';
    const decoded = { header: { alg: 'EdDSA' }, payload: {}, signingInput, signature: Buffer.from(expected, 'base64url') };
    expect(jws.verifySignature(decoded, 'EdDSA', publicKey)).toBe(true);
    // Ed25519 is deterministic: our signer gives the RFC's signature for the RFC's input.
    const signed = jws.sign({ alg: 'EdDSA' }, { a: 1 }, 'EdDSA', privateKey);
    expect(jws.verifySignature(jws.decode(signed, 4096)!, 'EdDSA', publicKey)).toBe(true);
  });

  it('agrees with jsonwebtoken both ways for HS256, RS256 and ES256', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const secret = createSecretKey(Buffer.from('an-hmac-secret-for-the-oracle-test'));
    const cases: ['HS256' | 'RS256' | 'ES256', Parameters<typeof jws.sign>[3], Parameters<typeof jws.sign>[3]][] = [
      ['HS256', secret, secret],
      ['RS256', rsa.privateKey, rsa.publicKey],
      ['ES256', ec.privateKey, ec.publicKey],
    ];
    for (const [alg, signing, verifying] of cases) {
      const ours = jws.sign({ alg, typ: 'JWT' }, { sub: 'x', n: 1 }, alg, signing);
      expect(jwt.verify(ours, verifying, { algorithms: [alg] })).toMatchObject({ sub: 'x', n: 1 });
      const theirs = jwt.sign({ sub: 'y' }, signing, { algorithm: alg });
      expect(jws.verifySignature(jws.decode(theirs, 4096)!, alg, verifying)).toBe(true);
    }
  });

  it('accepts only canonical base64url: no padding, no +/, no stray low bits', () => {
    const key = createSecretKey(Buffer.from('k'));
    // A token whose signature has a '-' or '_', so that its standard-base64 spelling differs.
    let token = '';
    for (let n = 0; !/[-_]/.test(token.split('.')[2] ?? ''); n++) token = jws.sign({ alg: 'HS256' }, { n }, 'HS256', key);
    const [h, p, s] = token.split('.') as [string, string, string];
    expect(jws.decode(token, 4096)).not.toBeNull();
    expect(jws.decode(`${token}=`, 4096)).toBeNull();
    expect(jws.decode(`${h}.${p}.${s.replaceAll('-', '+').replaceAll('_', '/')}`, 4096)).toBeNull();
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const sibling = alphabet[alphabet.indexOf(s.at(-1)!) ^ 1]!; // differs only in unused low bits
    expect(jws.decode(`${h}.${p}.${s.slice(0, -1)}${sibling}`, 4096)).toBeNull();
    for (const bad of ['', 'a.b', 'a.b.c.d', `${h}.${p}.`, `${h}..${s}`]) expect(jws.decode(bad, 4096)).toBeNull();
    expect(jws.decode(`e30.${p}.${s}`, 4096)).not.toBeNull(); // header {} decodes; verification refuses it later
    expect(jws.decode(`${Buffer.from('[1]').toString('base64url')}.${p}.${s}`, 4096)).toBeNull(); // header not an object
    expect(jws.decode(token, token.length - 1)).toBeNull();
  });

  it('never verifies with the wrong key type or a malformed signature', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const token = jws.sign({ alg: 'ES256' }, { a: 1 }, 'ES256', ec.privateKey);
    const decoded = jws.decode(token, 4096)!;
    expect(jws.verifySignature(decoded, 'ES256', ec.publicKey)).toBe(true);
    expect(jws.verifySignature({ ...decoded, signature: decoded.signature.subarray(1) }, 'ES256', ec.publicKey)).toBe(false);
    expect(jws.verifySignature(decoded, 'EdDSA', ec.publicKey)).toBe(false);
  });
});
