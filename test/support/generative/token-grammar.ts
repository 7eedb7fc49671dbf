// A grammar of tokens, generated layer by layer so that each check of the token service is passed by
// some of them and the next one is reached:
//   text       anything at all (a few dots or none)                       → the length/form check
//   form       three canonical base64url segments of arbitrary bytes      → the header parser
//   header     a header segment that is not JSON, not UTF-8, JSON of the wrong kind, or an object
//              with odd alg/kid/crit (duplicate keys too)                 → the key lookup
//   signature  a well-formed header, any payload segment, signed with our key, a retired key, a key
//              we do not know, or none                                    → jsonwebtoken, the payload parser
//   claims     a JSON object of claims of the right and wrong types (huge, negative, fractional,
//              unicode, duplicated), signed with a key we hold            → simplejwt's claim checks
//   real       tokens of real sessions (and of machine clients), as issued or re-signed with one
//              claim changed                                              → the database and the revocations
// Machine clients' tokens (RFC 9068: typ at+jwt, iss, sub, client_id, scope) come in the claims and
// real layers too, when the app has machine clients on.
import { createHmac } from 'node:crypto';
import { fc } from '@fast-check/vitest';

export interface HmacKey {
  secret: string;
  /** The kid its tokens carry in their header (none when undefined). */
  kid: string | undefined;
}

export interface RealSession {
  userId: number;
  username: string;
  access: string;
  refresh: string;
  sid: string;
}

export interface TokenWorld {
  /** The key that signs (HS256). */
  current: HmacKey;
  /** A verify-only key the app holds (VERIFYING_KEYS), when it has one. */
  retired?: HmacKey | undefined;
  /** Real sessions, filled in before the properties run (read lazily, at generation time). */
  sessions: RealSession[];
  /** ISSUER, when the app has machine clients on (users' tokens then carry it as iss too). */
  issuer?: string | undefined;
  /** Machine clients' ids, and access tokens issued to them (read lazily). */
  clientIds: string[];
  clientTokens: string[];
  /** The server's clock, in seconds, at generation time. */
  now(): number;
}

const segment = (bytes: Buffer | string) => (Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes, 'utf8')).toString('base64url');
const UNKNOWN: HmacKey = { secret: 'a-key-this-stack-has-never-heard-of-0123456789', kid: 'unknown-kid' };

function hmac(alg: string, key: string, input: string): string {
  const digest = ({ HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' } as Record<string, string>)[alg] ?? 'sha256';
  return createHmac(digest, key).update(input).digest('base64url');
}

// --- JSON text, including what JSON.stringify never writes: duplicate keys, huge literals, -0. ---

const oddNumberText = fc.constantFrom('1e400', '-1e400', '-0', '1E-7', '1.0', '123456789012345678901234567890', '9007199254740993', '0.1e1', '00', '01', '+1', '.5', 'NaN', 'Infinity');
const lone = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c));
/** Strings as a hostile client writes them: unicode of every plane, lone surrogates, controls, NUL. */
export const anyString = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }) },
  { weight: 1, arbitrary: fc.string({ unit: fc.oneof(lone, fc.constantFrom('\u0000', '\u001f', '\u2028', '\ufeff', '"', '\\', '.')), maxLength: 6 }) },
  { weight: 1, arbitrary: fc.constantFrom('', ' ', 'null', 'undefined', '__proto__', 'constructor', 'a'.repeat(200)) },
);
export const anyNumber = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.constantFrom(0, -1, 1, 2 ** 31, 2 ** 31 - 1, -(2 ** 31), 2 ** 53, -(2 ** 53), Number.MAX_SAFE_INTEGER + 2, 1e308, -1e308, 5e-324, 0.5),
);
/** A JSON value of any type. */
export const anyJson: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  { weight: 2, arbitrary: anyString },
  { weight: 2, arbitrary: anyNumber },
  { weight: 1, arbitrary: fc.constantFrom(null, true, false, [], {}, [1, 'a'], { a: { b: [] } }) },
);

/** JSON text of a value; sometimes a literal JSON.stringify would not write (or one that is not JSON). */
const valueText = (value: fc.Arbitrary<unknown>) =>
  fc.oneof({ weight: 8, arbitrary: value.map((v) => JSON.stringify(v) ?? 'null') }, { weight: 1, arbitrary: oddNumberText });

/** An object's JSON text from entries; keys may repeat (JSON.parse keeps the last, others the first). */
const textOf = (es: [string, string][]) => `{${es.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`;
const objectText = (entries: fc.Arbitrary<[string, string][]>) => entries.map(textOf);

/** Bytes that are no JSON, or not UTF-8, or JSON of the wrong kind. */
const unparsable = (nested: fc.Arbitrary<string>) =>
  fc.oneof(
    fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
    fc.constantFrom('{"a":', '{', '}', '[', '{"alg":"HS256"', '{"alg":"HS256",}', "{'alg':'HS256'}", '{"a":1}}', 'tru', '').map((s) => Buffer.from(s)),
    nested.map((token) => Buffer.from(token)), // a whole token as the segment's content
    fc.constantFrom('[]', '1', '-1', '1e400', 'null', 'true', '"HS256"', '[{"alg":"HS256"}]').map((s) => Buffer.from(s)),
    fc.constantFrom(Buffer.from([0xc3, 0x28]), Buffer.from([0xff, 0xfe, 0x7b, 0x7d]), Buffer.from('{"kid":"\xff"}', 'latin1')).map((b) =>
      Buffer.concat([Buffer.from('{"alg":"HS256","kid":"'), b, Buffer.from('"}')]),
    ),
  );

// --- Headers ---

const ALGS = ['HS256', 'HS384', 'HS512', 'RS256', 'ES256', 'PS256', 'none', 'None', 'EdDSA', 'hs256', ''];

function headerEntries(world: TokenWorld, wellFormed: boolean): fc.Arbitrary<[string, string][]> {
  const kid = fc.oneof(
    fc.constant(world.current.kid),
    fc.constant(world.retired?.kid),
    fc.constant(UNKNOWN.kid),
    ...(wellFormed ? [] : [anyJson]),
  );
  if (wellFormed) {
    // What a client could present and be taken seriously: HS256, typ JWT, a kid or none.
    return fc.tuple(kid, fc.boolean()).map(([k, typ]) => {
      const es: [string, string][] = [['alg', '"HS256"']];
      if (typ) es.push(['typ', '"JWT"']);
      if (k !== undefined) es.push(['kid', JSON.stringify(k)]);
      return es;
    });
  }
  const entry = fc.oneof(
    fc.tuple(fc.constant('alg'), valueText(fc.oneof(fc.constantFrom(...ALGS), anyJson))),
    fc.tuple(fc.constant('typ'), valueText(fc.oneof(fc.constantFrom('JWT', 'jwt', 'JWS', 'at+jwt'), anyJson))),
    fc.tuple(fc.constant('kid'), valueText(kid)),
    fc.tuple(fc.constantFrom('crit', 'jku', 'x5u', 'jwk', 'b64', 'cty', 'zip'), valueText(anyJson)),
    fc.tuple(anyString, valueText(anyJson)),
  );
  return fc.array(entry, { maxLength: 6 });
}

// --- Claims ---

const CLAIMS = ['token_type', 'exp', 'iat', 'nbf', 'jti', 'user_id', 'sid', 'username', 'auth_time', 'aud', 'iss'] as const;

function claimValue(world: TokenWorld, claim: string): fc.Arbitrary<unknown> {
  // Times mostly where the checks accept them (so the next check is reached), sometimes anywhere.
  const around = (from: number, to: number) =>
    fc.oneof(
      { weight: 5, arbitrary: fc.integer({ min: from, max: to }).map((d) => world.now() + d) },
      { weight: 1, arbitrary: fc.integer({ min: -400_000, max: 400_000 }).map((d) => world.now() + d) },
      { weight: 1, arbitrary: anyNumber },
    );
  const pick = <T>(values: (s: RealSession) => T) => fc.nat().map((i) => (world.sessions.length ? values(world.sessions[i % world.sessions.length]!) : undefined));
  // Strings as an id could be spelled: hex, and the characters a database or a log would trip on.
  const idish = fc.string({ unit: fc.constantFrom('a', 'f', '0', '9', '-', '\u0000', '\u0001', "'", '%', 'é', '😀', '\ud800'), minLength: 1, maxLength: 40 });
  const byClaim: Record<string, fc.Arbitrary<unknown>> = {
    token_type: fc.constantFrom('access', 'refresh', 'access', 'refresh', 'Access', 'id', ''),
    exp: around(1, 3_600),
    iat: around(-3_600, 0),
    nbf: around(-3_600, 0),
    auth_time: around(-1_200, 0),
    jti: fc.oneof(fc.uuid().map((u) => u.replaceAll('-', '')), pick((s) => decode(s.refresh).jti), idish, fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 60, maxLength: 70 })),
    user_id: fc.oneof({ weight: 4, arbitrary: pick((s) => s.userId) }, { weight: 1, arbitrary: fc.integer({ min: -2, max: 50 }) }),
    sid: fc.oneof(pick((s) => s.sid), fc.uuid(), idish),
    username: fc.oneof(pick((s) => s.username), anyString),
    aud: fc.constantFrom('api', 'other'),
    iss: fc.oneof({ weight: world.issuer ? 4 : 0, arbitrary: fc.constant(world.issuer) }, { weight: 1, arbitrary: fc.constantFrom('auth', 'other', 'https://auth.example.test/') }),
    client_id: fc.oneof(fc.nat().map((i) => world.clientIds[i % Math.max(1, world.clientIds.length)] ?? 'none'), idish),
    sub: fc.oneof(fc.nat().map((i) => world.clientIds[i % Math.max(1, world.clientIds.length)] ?? 'none'), idish),
    scope: fc.oneof(fc.constantFrom('gen:read', 'gen:read gen:write', '', ' ', 'other'), anyString),
  };
  // Mostly a value of the claim's own kind, sometimes any JSON at all.
  return fc.oneof({ weight: 5, arbitrary: byClaim[claim] ?? anyJson }, { weight: 1, arbitrary: anyJson });
}

function claimEntries(world: TokenWorld): fc.Arbitrary<[string, string][]> {
  // Usually simplejwt's claims in full (so the checks after the first are reached), each of any value,
  // and ours (sid, username, auth_time) as often as not.
  const names = [...CLAIMS.slice(0, 6), ...(world.issuer ? ['iss'] : [])];
  const full = fc.tuple(...names.map((c) => valueText(claimValue(world, c)).map((v): [string, string] => [c, v])));
  const ours = fc.subarray(['sid', 'username', 'auth_time']).chain((names) =>
    fc.tuple(...names.map((c) => valueText(claimValue(world, c)).map((v): [string, string] => [c, v]))),
  );
  const extra = fc.array(
    fc.oneof(
      fc.constantFrom(...CLAIMS).chain((c) => valueText(claimValue(world, c)).map((v): [string, string] => [c, v])),
      fc.tuple(anyString, valueText(anyJson)),
    ),
    { maxLength: 5 },
  );
  // Each of simplejwt's claims is left out one time in eight.
  const keep = fc.array(fc.nat({ max: 7 }), { minLength: names.length, maxLength: names.length }).map((dice) => dice.map((d) => d > 0));
  return fc.tuple(keep, full, ours, extra).map(([k, all, mine, more]) => [...all.filter((_, i) => k[i]), ...mine, ...more]);
}

/** A machine client's claims (RFC 9068), each of any value, one left out now and then. */
function clientEntries(world: TokenWorld): fc.Arbitrary<[string, string][]> {
  const names = ['iss', 'sub', 'client_id', 'scope', 'iat', 'exp', 'jti'];
  const all = fc.tuple(...names.map((c) => valueText(claimValue(world, c)).map((v): [string, string] => [c, v])));
  const keep = fc.array(fc.nat({ max: 9 }), { minLength: names.length, maxLength: names.length });
  const extra = fc.array(fc.oneof(fc.constantFrom(...CLAIMS).chain((c) => valueText(claimValue(world, c)).map((v): [string, string] => [c, v]))), { maxLength: 2 });
  return fc.tuple(keep, all, extra).map(([k, es, more]) => [...es.filter((_, i) => k[i]! > 0), ...more]);
}

// --- Tokens ---

export function decode(token: string): Record<string, unknown> {
  try {
    return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as Record<string, unknown>;
  } catch {
    return {};
  }
}

type Signer = 'current' | 'retired' | 'unknown' | 'none' | 'garbage';

function sign(world: TokenWorld, headerText: string, payload: Buffer, signer: Signer, algOf: string): string {
  const input = `${segment(headerText)}.${segment(payload)}`;
  const key = signer === 'current' ? world.current : signer === 'retired' ? (world.retired ?? UNKNOWN) : UNKNOWN;
  if (signer === 'none') return `${input}.`;
  if (signer === 'garbage') return `${input}.${segment('x'.repeat(32))}`;
  return `${input}.${hmac(algOf, key.secret, input)}`;
}

/** A header for a signer: the kid of the key that signs (mostly), or another. */
function headerFor(world: TokenWorld, signer: Signer): fc.Arbitrary<string> {
  const key = signer === 'current' ? world.current : signer === 'retired' ? world.retired : signer === 'unknown' ? UNKNOWN : undefined;
  const own: [string, string][] = [['alg', signer === 'none' ? '"none"' : '"HS256"'], ['typ', '"JWT"'], ...(key?.kid !== undefined ? [['kid', JSON.stringify(key.kid)] as [string, string]] : [])];
  return fc.oneof({ weight: 4, arbitrary: fc.constant(own) }, { weight: 1, arbitrary: headerEntries(world, true) }).map(textOf);
}

const signers = (world: TokenWorld): fc.Arbitrary<Signer> =>
  fc.oneof(
    { weight: 6, arbitrary: fc.constant<Signer>('current') },
    { weight: world.retired ? 3 : 0, arbitrary: fc.constant<Signer>('retired') },
    { weight: 1, arbitrary: fc.constantFrom<Signer>('unknown', 'none', 'garbage') },
  );

/** Re-encodes one segment outside base64url's canonical form: padding, +/, stray low bits, a dot more or less. */
function respell(token: string, how: number): string {
  const parts = token.split('.');
  switch (how % 6) {
    case 0:
      return `${token}=`;
    case 1:
      return parts.map((p) => p.replaceAll('-', '+').replaceAll('_', '/')).join('.');
    case 2:
      return `${token}.`;
    case 3:
      return parts.slice(0, 2).join('.');
    case 4:
      return ` ${token}`;
    default:
      return token.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'));
  }
}

export type TokenLayer = 'text' | 'form' | 'header' | 'signature' | 'claims' | 'real';

export interface GeneratedToken {
  layer: TokenLayer;
  token: string;
}

/** Tokens of every layer. */
export function tokens(world: TokenWorld): fc.Arbitrary<GeneratedToken> {
  const text = fc.oneof(
    fc.string({ maxLength: 60 }),
    fc.array(fc.base64String({ maxLength: 24 }), { minLength: 1, maxLength: 4 }).map((p) => p.join('.')),
    fc.constantFrom('a.b.c', '..', '.', 'null', 'Bearer', 'x'.repeat(5000)),
  );
  const form = fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 40 }), fc.uint8Array({ minLength: 1, maxLength: 80 }), fc.uint8Array({ minLength: 1, maxLength: 40 })).map((ps) => ps.map((p) => segment(Buffer.from(p))).join('.'));
  const nested = fc.constant(null).map(() => world.sessions[0]?.access ?? `${segment('{"alg":"HS256"}')}.${segment('{}')}.${segment('sig')}`);
  const header = fc.tuple(
    fc.oneof(unparsable(nested), objectText(headerEntries(world, false)).map((t) => Buffer.from(t))),
    fc.uint8Array({ minLength: 1, maxLength: 60 }),
    signers(world),
  ).map(([h, p, signer]) => {
    const input = `${segment(h)}.${segment(Buffer.from(p))}`;
    return signer === 'current' || signer === 'retired' ? `${input}.${hmac('HS256', (signer === 'current' ? world.current : (world.retired ?? UNKNOWN)).secret, input)}` : `${input}.${segment('sig')}`;
  });
  const signature = signers(world).chain((signer) =>
    fc.tuple(headerFor(world, signer), fc.oneof(unparsable(nested), objectText(claimEntries(world)).map((t) => Buffer.from(t)))).map(([h, p]) => sign(world, h, p, signer, 'HS256')),
  );
  const claims = fc.tuple(signers(world), objectText(claimEntries(world))).chain(([signer, payload]) =>
    headerFor(world, signer).map((h) => sign(world, h, Buffer.from(payload), signer, 'HS256')),
  );
  // A machine client's: typ at+jwt (or a near miss), RFC 9068's claims.
  const client = fc.tuple(signers(world), fc.constantFrom('at+jwt', 'application/at+jwt', 'AT+JWT', 'JWT'), objectText(clientEntries(world))).map(([signer, typ, payload]) => {
    const key = signer === 'current' ? world.current : signer === 'retired' ? world.retired : UNKNOWN;
    const h = textOf([['alg', '"HS256"'], ['typ', JSON.stringify(typ)], ...(key?.kid !== undefined ? [['kid', JSON.stringify(key.kid)] as [string, string]] : [])]);
    return sign(world, h, Buffer.from(payload), signer, 'HS256');
  });
  // Real tokens, as issued, or their claims re-signed with one claim changed (a token we could have
  // issued but did not).
  const real = fc.tuple(fc.nat(), fc.nat({ max: 4 }), fc.constantFrom(...CLAIMS, 'client_id', 'scope'), fc.boolean()).chain(([i, kind, claim, as]) => {
    const s = world.sessions.length ? world.sessions[i % world.sessions.length]! : undefined;
    if (!s) return fc.constant('');
    const clientToken = world.clientTokens[i % Math.max(1, world.clientTokens.length)];
    const issued = kind === 0 && clientToken ? clientToken : kind % 2 ? s.access : s.refresh;
    if (as) return fc.constant(issued);
    return valueText(claimValue(world, claim)).map((v) => {
      const es = Object.entries(decode(issued)).map(([k, x]): [string, string] => [k, k === claim ? v : JSON.stringify(x)]);
      if (!es.some(([k]) => k === claim)) es.push([claim, v]);
      const typ = issued === clientToken ? 'at+jwt' : 'JWT';
      const h = `{"alg":"HS256","typ":"${typ}"${world.current.kid !== undefined ? `,"kid":${JSON.stringify(world.current.kid)}` : ''}}`;
      return sign(world, h, Buffer.from(textOf(es)), 'current', 'HS256');
    });
  });
  const layered = fc.oneof(
    { weight: 1, arbitrary: text.map((token) => ({ layer: 'text' as const, token })) },
    { weight: 1, arbitrary: form.map((token) => ({ layer: 'form' as const, token })) },
    { weight: 2, arbitrary: header.map((token) => ({ layer: 'header' as const, token })) },
    { weight: 3, arbitrary: signature.map((token) => ({ layer: 'signature' as const, token })) },
    { weight: 4, arbitrary: claims.map((token) => ({ layer: 'claims' as const, token })) },
    { weight: world.issuer ? 2 : 0, arbitrary: client.map((token) => ({ layer: 'claims' as const, token })) },
    { weight: 6, arbitrary: real.map((token) => ({ layer: 'real' as const, token })) },
  );
  // Now and then, a well-formed token respelled outside the canonical form (the first check again).
  return fc.oneof(
    { weight: 12, arbitrary: layered },
    { weight: 1, arbitrary: fc.tuple(layered, fc.nat()).map(([t, how]) => ({ layer: t.layer, token: respell(t.token, how) })) },
  );
}

/** A real session's token as issued, half the time; any token of the grammar otherwise. */
export function mostlyReal(world: TokenWorld): fc.Arbitrary<string> {
  const issued = fc.tuple(fc.nat(), fc.nat({ max: 4 })).map(([i, kind]) => {
    const s = world.sessions[i % Math.max(1, world.sessions.length)];
    const clientToken = world.clientTokens[i % Math.max(1, world.clientTokens.length)];
    if (kind === 0 && clientToken) return clientToken;
    return s ? (kind % 2 ? s.access : s.refresh) : '';
  });
  return fc.oneof(issued, tokens(world).map((t) => t.token));
}
