// Requests generated from the OpenAPI document (/api/schema/), one arbitrary per documented
// operation: its method (and sometimes another), its path parameters, its query, its security
// (a bearer token, the refresh cookie) and its body in each media type it takes, valued from the
// schemas with values of the right kind, of the wrong kind, missing and extra; tokens come from the
// token grammar. Layer by layer again: a request that is well-formed HTTP with a valid body reaches
// the handler, a real password reaches the login, a real token reaches the database.
import { fc } from '@fast-check/vitest';
import { anyJson, anyString, mostlyReal, tokens, type TokenWorld } from './token-grammar';

type Schema = Record<string, unknown>;

export interface OpenApiDocument {
  paths: Record<string, Record<string, OperationObject>>;
  components: { schemas: Record<string, Schema> };
}

interface OperationObject {
  operationId: string;
  security?: Record<string, unknown>[];
  parameters?: { name: string; in: 'path' | 'query' | 'header'; required?: boolean; schema: Schema }[];
  requestBody?: { required?: boolean; content: Record<string, { schema: Schema }> };
  responses: Record<string, unknown>;
}

export interface Operation {
  id: string;
  method: string;
  path: string;
  spec: OperationObject;
}

/** A request to send: headers as a list, so a name may come twice. */
export interface GenRequest {
  route: string;
  method: string;
  target: string;
  headers: [string, string][];
  body?: Buffer | undefined;
  /** Sent without a Host header (HTTP/1.1 requires one). */
  noHost?: boolean;
}

export interface Credentials {
  username: string;
  password: string;
}

export interface RequestWorld extends TokenWorld {
  users: Credentials[];
  /** Machine clients' ids and secrets (none when they are off). */
  clients: { clientId: string; secret: string }[];
  /** An origin CORS_ALLOWED_ORIGINS lists. */
  allowedOrigin: string;
  /** The names of the refresh cookie: the current one and the previous release's. */
  cookie: { name: string; legacy: string };
}

export function operationsOf(doc: OpenApiDocument): Operation[] {
  return Object.entries(doc.paths).flatMap(([path, ops]) =>
    Object.entries(ops).map(([method, spec]) => ({ id: spec.operationId, method: method.toUpperCase(), path, spec })),
  );
}

/** Whether the document says this operation may answer `status`. */
export const documents = (op: Operation, status: number): boolean => String(status) in op.spec.responses;

// --- Header values: what Node's HTTP client will send (no CR, LF or NUL; latin-1 at most). ---
const headerSafe = (s: string) => s.replace(/[^\t\x20-\x7e\x80-\xff]/g, '');

// Percent-encoding of any string (a lone surrogate becomes U+FFFD first), and of raw bytes, which may
// decode to anything, invalid UTF-8 included.
const pct = (s: string) => encodeURIComponent(s.toWellFormed());
const pctBytes = fc.uint8Array({ minLength: 1, maxLength: 12 }).map((a) => [...a].map((b) => `%${b.toString(16).padStart(2, '0')}`).join(''));

/** `arb` one time in `oneIn`, else undefined. */
const sometimes = <T>(arb: fc.Arbitrary<T>, oneIn: number): fc.Arbitrary<T | undefined> =>
  fc.oneof({ weight: oneIn - 1, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb });
/** `arb` except one time in `oneIn`. */
const mostly = <T>(arb: fc.Arbitrary<T>, oneIn: number): fc.Arbitrary<T | undefined> =>
  fc.oneof({ weight: oneIn - 1, arbitrary: arb }, { weight: 1, arbitrary: fc.constant(undefined) });

const OTHER_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD'];

function resolve(doc: OpenApiDocument, schema: Schema): Schema {
  const ref = schema.$ref;
  if (typeof ref === 'string') return resolve(doc, doc.components.schemas[ref.replace('#/components/schemas/', '')] ?? {});
  return schema;
}

/** A value for a schema: mostly of its kind, sometimes of any kind. */
function valueFor(doc: OpenApiDocument, raw: Schema, name: string, world: RequestWorld): fc.Arbitrary<unknown> {
  const schema = resolve(doc, raw);
  const token = mostlyReal(world);
  let typed: fc.Arbitrary<unknown>;
  if (['refresh', 'token', 'access'].includes(name)) typed = token;
  else if (name === 'scope') typed = fc.oneof(fc.constantFrom('gen:read', 'gen:write', 'gen:read gen:write', '', 'other', 'gen:read  gen:read'), fc.string({ maxLength: 20 }));
  else if (Array.isArray(schema.anyOf)) typed = fc.oneof(...(schema.anyOf as Schema[]).map((s) => valueFor(doc, s, name, world)));
  else if (Array.isArray(schema.enum)) typed = fc.oneof(fc.constantFrom(...(schema.enum as unknown[])), anyString);
  else if ('const' in schema) typed = fc.oneof({ weight: 4, arbitrary: fc.constant(schema.const) }, { weight: 1, arbitrary: anyString });
  else if (schema.format === 'uuid') typed = fc.oneof(fc.uuid(), fc.nat().map((i) => world.sessions[i % Math.max(1, world.sessions.length)]?.sid ?? ''), anyString);
  else if (schema.type === 'string') typed = fc.oneof({ weight: 3, arbitrary: fc.string({ maxLength: 30 }) }, { weight: 1, arbitrary: anyString });
  else if (schema.type === 'object') typed = objectFor(doc, schema, world);
  else if (schema.type === 'array') typed = fc.array(valueFor(doc, (schema.items as Schema) ?? {}, name, world), { maxLength: 3 });
  else typed = anyJson;
  return fc.oneof({ weight: 6, arbitrary: typed }, { weight: 1, arbitrary: anyJson });
}

/** An object for an object schema: its properties present or not, valued or mis-valued, plus extras. */
function objectFor(doc: OpenApiDocument, schema: Schema, world: RequestWorld): fc.Arbitrary<Record<string, unknown>> {
  const props = (schema.properties ?? {}) as Record<string, Schema>;
  const names = Object.keys(props);
  // A login's credentials go together: a real user's with the real password (or a near miss).
  const creds = fc.tuple(fc.nat(), fc.constantFrom('right', 'right', 'wrong', 'padded', 'case')).map(([i, how]) => {
    const c = world.users[i % world.users.length]!;
    const username = how === 'padded' ? ` ${c.username} ` : how === 'case' ? c.username.toUpperCase() : c.username;
    return { username, password: how === 'wrong' ? `${c.password}x` : c.password };
  });
  // Required properties are there seven times in eight (so the checks after them are reached), the
  // optional ones half the time.
  const required = new Set(Array.isArray(schema.required) ? (schema.required as string[]) : []);
  const fields = fc
    .tuple(
      fc.record(Object.fromEntries(names.map((n) => [n, valueFor(doc, props[n]!, n, world)])), { requiredKeys: [...required] }),
      fc.array(fc.nat({ max: 7 }), { minLength: names.length, maxLength: names.length }),
    )
    .map(([record, dice]) => Object.fromEntries(Object.entries(record).filter(([n]) => !required.has(n) || dice[names.indexOf(n)]! > 0)));
  // A machine client's id and secret go together too (client_secret_post).
  const client = fc.tuple(fc.nat(), fc.boolean(), fields).map(([i, right, f]) => {
    const c = world.clients[i % Math.max(1, world.clients.length)];
    return c ? { ...f, client_id: c.clientId, client_secret: right ? c.secret : `${c.secret}x` } : f;
  });
  const base =
    names.includes('username') && names.includes('password')
      ? fc.oneof({ weight: 3, arbitrary: creds.map((c): Record<string, unknown> => c) }, { weight: 2, arbitrary: fields })
      : names.includes('client_secret')
        ? fc.oneof({ weight: 2, arbitrary: client }, { weight: 2, arbitrary: fields })
        : fields;
  const extra = fc.dictionary(fc.oneof(anyString, fc.constantFrom('__proto__', 'constructor', 'username', 'refresh')), anyJson, { maxKeys: 3 });
  return fc.tuple(base, fc.oneof({ weight: 4, arbitrary: fc.constant({}) }, { weight: 1, arbitrary: extra })).map(([b, e]) => ({ ...e, ...b }));
}

const stringify = (v: unknown) => (typeof v === 'string' ? v : (JSON.stringify(v) ?? ''));

/** The body bytes and Content-Type of a value in a media type; sometimes bytes that are not that type. */
function encoded(value: fc.Arbitrary<unknown>, media: string): fc.Arbitrary<{ type: string | undefined; body: Buffer }> {
  const asIs = value.map((v) => {
    if (media === 'application/json') return { type: media, body: Buffer.from(JSON.stringify(v) ?? 'null') };
    const flat = v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.entries(v as Record<string, unknown>) : [['value', v] as [string, unknown]];
    if (media === 'application/x-www-form-urlencoded') return { type: media, body: Buffer.from(new URLSearchParams(flat.map(([k, x]) => [k, stringify(x)])).toString()) };
    const boundary = 'koa-auth-stack-generated';
    const parts = flat.map(([k, x]) => `--${boundary}\r\nContent-Disposition: form-data; name="${k.replace(/["\r\n]/g, '')}"\r\n\r\n${stringify(x)}\r\n`);
    return { type: `multipart/form-data; boundary=${boundary}`, body: Buffer.from(`${parts.join('')}--${boundary}--\r\n`) };
  });
  const broken = fc.oneof(
    asIs.map((b) => ({ type: b.type, body: b.body.subarray(0, Math.max(0, b.body.length - 3)) })), // truncated
    fc.uint8Array({ maxLength: 120 }).map((a) => ({ type: media, body: Buffer.from(a) })),
    fc.tuple(asIs, fc.constantFrom('text/plain', 'application/xml', '', 'application/json; charset=utf-16', 'application/json; charset=latin1', 'multipart/form-data', 'application/x-www-form-urlencoded', 'application/json')).map(
      ([b, type]) => ({ type: type === '' ? undefined : type, body: b.body }),
    ),
  );
  return fc.oneof({ weight: 5, arbitrary: asIs }, { weight: 1, arbitrary: broken });
}

function pathParam(name: string, world: RequestWorld): fc.Arbitrary<string> {
  const junk = fc.oneof(anyString.map(pct), pctBytes, fc.constantFrom('..', '%2e%2e', '%00', 'a%2Fb', '%zz', '', '.', 'null', '%E2%80%AE'));
  if (name === 'id') {
    const sid = fc.nat().map((i) => world.sessions[i % Math.max(1, world.sessions.length)]?.sid ?? 'none');
    return fc.oneof({ weight: 3, arbitrary: sid }, { weight: 2, arbitrary: fc.uuid() }, { weight: 2, arbitrary: junk });
  }
  const known = fc.constantFrom('init.js', 'swagger-ui.css', 'swagger-ui-bundle.js', 'favicon-32x32.png', 'package.json', 'index.html');
  return fc.oneof({ weight: 3, arbitrary: known }, { weight: 2, arbitrary: junk });
}

/** The request arbitrary of one operation. */
export function requestsFor(doc: OpenApiDocument, op: Operation, world: RequestWorld): fc.Arbitrary<GenRequest> {
  const params = op.spec.parameters ?? [];
  const security = (op.spec.security ?? []).flatMap((s) => Object.keys(s));
  const token = mostlyReal(world).map(headerSafe);

  const method = fc.oneof({ weight: 12, arbitrary: fc.constant(op.method) }, { weight: 1, arbitrary: fc.constantFrom(...OTHER_METHODS) });
  const path = fc.tuple(...params.filter((p) => p.in === 'path').map((p) => pathParam(p.name, world).map((v): [string, string] => [p.name, v]))).map((values) => {
    let p = op.path;
    for (const [name, v] of values) p = p.replace(`{${name}}`, v);
    return p;
  });
  const slash = fc.oneof({ weight: 6, arbitrary: fc.constant((p: string) => p) }, { weight: 1, arbitrary: fc.constant((p: string) => (p.endsWith('/') && p.length > 1 ? p.slice(0, -1) : p)) });
  const queryParams = params.filter((p) => p.in === 'query');
  const query = fc.tuple(
    fc.tuple(...queryParams.map((p) => mostly(valueFor(doc, p.schema, p.name, world).map((v) => `${p.name}=${pct(stringify(v))}`), 2))),
    fc.oneof({ weight: 5, arbitrary: fc.constant([] as string[]) }, { weight: 1, arbitrary: fc.array(fc.oneof(fc.constantFrom('a=%00', '%zz', 'scope=all&scope=others', 'x'), anyString.map((s) => `q=${pct(s)}`), pctBytes.map((b) => `q=${b}`)), { maxLength: 2 }) }),
  ).map(([known, extra]) => [...known.filter((q): q is string => q !== undefined), ...extra].join('&'));

  const authorization = fc.oneof(
    { weight: 8, arbitrary: token.map((t) => `Bearer ${t}`) },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom('bearer', 'JWT', 'Basic', 'Bearer  ', 'Token', ''), token).map(([scheme, t]) => `${scheme} ${t}`) },
    { weight: 1, arbitrary: fc.constantFrom('Bearer', 'Bearer a b', 'Bearer\ta.b.c', 'x') },
  );
  const cookie = fc.oneof(
    { weight: 6, arbitrary: token.map((t) => `${world.cookie.name}=${t}`) },
    { weight: 1, arbitrary: fc.tuple(token, token).map(([a, b]) => `${world.cookie.name}=${a}; ${world.cookie.name}=${b}`) }, // planted: twice
    { weight: 1, arbitrary: token.map((t) => `${world.cookie.legacy}=${t}`) }, // the previous release's
    { weight: 1, arbitrary: fc.tuple(token, anyString).map(([t, s]) => `other=${headerSafe(s).replace(/;/g, '')}; ${world.cookie.name}=${t}; x`) },
  );
  // client_secret_basic: id and secret, each form-encoded, then base64 (RFC 6749 §2.3.1).
  const basic = fc.tuple(fc.nat(), fc.constantFrom('right', 'wrong', 'unknown', 'raw'), anyString).map(([i, how, junk]) => {
    const c = world.clients[i % Math.max(1, world.clients.length)] ?? { clientId: 'none', secret: 'none' };
    const pair = how === 'right' ? `${c.clientId}:${c.secret}` : how === 'wrong' ? `${c.clientId}:${c.secret}x` : how === 'unknown' ? `nobody:${c.secret}` : headerSafe(junk);
    return how === 'raw' ? `Basic ${pair}` : `Basic ${Buffer.from(pair).toString('base64')}`;
  });
  const transport = fc.oneof({ weight: 3, arbitrary: fc.constant('cookie') }, { weight: 1, arbitrary: fc.constantFrom('Cookie', ' cookie ', 'body', 'header', '') });
  const headers = fc.record(
    {
      authorization: security.includes('bearer')
        ? fc.oneof({ weight: 10, arbitrary: authorization }, { weight: 1, arbitrary: fc.constant(undefined) })
        : security.includes('clientBasic')
          ? fc.oneof({ weight: 6, arbitrary: basic }, { weight: 2, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: authorization })
          : sometimes(authorization, 6),
      transport: params.some((p) => p.name === 'X-Token-Transport') ? mostly(transport, 2) : sometimes(transport, 10),
      cookie: security.includes('refreshCookie') ? mostly(cookie, 3) : sometimes(cookie, 10),
      origin: sometimes(fc.constantFrom(world.allowedOrigin, 'https://evil.example.test', 'null'), 6),
      forwarded: sometimes(fc.constantFrom('203.0.113.9', '1.2.3.4, 5.6.7.8', 'garbage', '::1'), 8),
      encoding: sometimes(fc.constantFrom('gzip', 'br', 'identity', 'x-custom'), 20),
      noHost: fc.oneof({ weight: 40, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    },
    { requiredKeys: ['authorization', 'transport', 'cookie', 'origin', 'forwarded', 'encoding', 'noHost'] },
  );
  const media = Object.keys(op.spec.requestBody?.content ?? {});
  const body = media.length
    ? fc.oneof(
        { weight: 10, arbitrary: fc.constantFrom(...media).chain((m) => encoded(valueFor(doc, op.spec.requestBody!.content[m]!.schema, '', world), m)) },
        { weight: op.spec.requestBody?.required ? 1 : 4, arbitrary: fc.constant(undefined) },
      )
    : sometimes(encoded(anyJson, 'application/json'), 8);

  return fc.tuple(method, path, slash, query, headers, body).map(([m, p, cut, q, h, b]) => {
    const list: [string, string][] = [];
    if (h.authorization !== undefined) list.push(['Authorization', headerSafe(h.authorization)]);
    if (h.transport !== undefined) list.push(['X-Token-Transport', h.transport]);
    if (h.cookie !== undefined) list.push(['Cookie', headerSafe(h.cookie)]);
    if (h.origin !== undefined) list.push(['Origin', h.origin]);
    if (h.forwarded !== undefined) list.push(['X-Forwarded-For', h.forwarded]);
    if (b?.type !== undefined) list.push(['Content-Type', b.type]);
    if (b !== undefined && h.encoding !== undefined) list.push(['Content-Encoding', h.encoding]);
    if (m === 'OPTIONS' && h.origin !== undefined) list.push(['Access-Control-Request-Method', 'POST']);
    const withBody = b !== undefined && m !== 'GET' && m !== 'HEAD';
    return { route: op.id, method: m, target: cut(p) + (q ? `?${q}` : ''), headers: list, body: withBody ? b.body : undefined, ...(h.noHost ? { noHost: true } : {}) };
  });
}

/**
 * The token layer: a token from the grammar at every place one arrives, in an otherwise well-formed
 * request, so that every check of the token's own is reached.
 */
export function tokenRequests(world: RequestWorld): { route: string; operation: string; requests: fc.Arbitrary<GenRequest> }[] {
  const token = tokens(world).map((t) => t.token);
  const json = (route: string, target: string, field: string) =>
    token.map((t): GenRequest => ({ route, method: 'POST', target, headers: [['Content-Type', 'application/json']], body: Buffer.from(JSON.stringify({ [field]: t })) }));
  const cookie = (route: string, target: string) =>
    token.map((t): GenRequest => ({ route, method: 'POST', target, headers: [['X-Token-Transport', 'cookie'], ['Cookie', `${world.cookie.name}=${headerSafe(t)}`]] }));
  const bearer = (route: string, method: string, target: fc.Arbitrary<string>) =>
    fc.tuple(token, target).map(([t, to]): GenRequest => ({ route, method, target: to, headers: [['Authorization', `Bearer ${headerSafe(t)}`]] }));
  const sid = fc.oneof(fc.nat().map((i) => world.sessions[i % Math.max(1, world.sessions.length)]?.sid ?? 'none'), fc.uuid());
  return [
    { route: 'verify (body)', operation: 'tokenVerify', requests: json('verify (body)', '/api/token/verify/', 'token') },
    { route: 'refresh (body)', operation: 'tokenRefresh', requests: json('refresh (body)', '/api/token/refresh/', 'refresh') },
    { route: 'blacklist (body)', operation: 'tokenBlacklist', requests: json('blacklist (body)', '/api/token/blacklist/', 'refresh') },
    { route: 'refresh (cookie)', operation: 'tokenRefresh', requests: cookie('refresh (cookie)', '/api/token/refresh/') },
    { route: 'blacklist (cookie)', operation: 'tokenBlacklist', requests: cookie('blacklist (cookie)', '/api/token/blacklist/') },
    { route: 'guard: GET /api/me/', operation: 'me', requests: bearer('guard: GET /api/me/', 'GET', fc.constant('/api/me/')) },
    { route: 'guard: GET /api/sessions/', operation: 'sessionList', requests: bearer('guard: GET /api/sessions/', 'GET', fc.constant('/api/sessions/')) },
    { route: 'guard: DELETE /api/sessions/{id}/', operation: 'sessionEnd', requests: bearer('guard: DELETE /api/sessions/{id}/', 'DELETE', sid.map((id) => `/api/sessions/${id}/`)) },
    { route: 'guard: POST /api/token/logout-all/', operation: 'tokenLogoutAll', requests: bearer('guard: POST /api/token/logout-all/', 'POST', fc.constantFrom('/api/token/logout-all/?scope=others', '/api/token/logout-all/?scope=all')) },
  ];
}
