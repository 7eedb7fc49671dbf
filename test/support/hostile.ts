// Hostile requests, as raw bytes on a socket (what fetch will not send), shared by the app's test
// (test/integration/hostile.test.ts) and the stack's (test/e2e/stack.test.ts): some of them nginx
// answers itself, which only the stack test can see.
import net from 'node:net';
import tls from 'node:tls';

export interface RawReply {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Sends raw bytes and reads the whole answer (the requests ask for Connection: close). */
export function rawHttp(base: string, request: string | Buffer, timeoutMs = 15_000): Promise<RawReply> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    const socket = url.protocol === 'https:' ? tls.connect({ port, host, rejectUnauthorized: false }) : net.connect(port, host);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', (err) => {
      clearTimeout(timer);
      // A reset after a complete answer (nginx closing a bad request) still counts as the answer.
      if (chunks.length > 0) resolve(parse(Buffer.concat(chunks)));
      else reject(err);
    });
    socket.on('end', () => {
      clearTimeout(timer);
      resolve(parse(Buffer.concat(chunks)));
    });
    // Written, not ended: Node's HTTP server drops the answer to a client that half-closes (it
    // takes the FIN for a client that has gone), and the requests ask for Connection: close.
    socket.write(request);
  });
}

export function parse(data: Buffer): RawReply {
  const text = data.toString('latin1');
  const split = text.indexOf('\r\n\r\n');
  const head = split < 0 ? text : text.slice(0, split);
  let body = split < 0 ? '' : text.slice(split + 4);
  const [statusLine = '', ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  if (headers['transfer-encoding'] === 'chunked') body = unchunk(body);
  return { status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0), headers, body };
}

function unchunk(body: string): string {
  let out = '';
  for (let rest = body; ; ) {
    const eol = rest.indexOf('\r\n');
    const size = parseInt(rest.slice(0, eol), 16);
    if (!(size > 0)) return out;
    out += rest.slice(eol + 2, eol + 2 + size);
    rest = rest.slice(eol + 4 + size);
  }
}

const json = (path: string, body: string | Buffer, extra = '') => {
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(body);
  return Buffer.concat([
    Buffer.from(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${bytes.length}\r\n${extra}Connection: close\r\n\r\n`),
    bytes,
  ]);
};
const typed = (type: string, body: string) =>
  `POST /api/token/ HTTP/1.1\r\nHost: x\r\nContent-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
const get = (target: string, headers = '') => `GET ${target} HTTP/1.1\r\nHost: x\r\n${headers}Connection: close\r\n\r\n`;

const segment = (v: string | Buffer) => (Buffer.isBuffer(v) ? v : Buffer.from(v)).toString('base64url');
const JWT_HEADER = segment('{"alg":"HS256","typ":"JWT"}');
const SIGNATURE = segment('not-a-signature-but-canonical');
const NESTED = `${JWT_HEADER}.${segment('{"token_type":"access","exp":1,"jti":"j","user_id":1}')}.${SIGNATURE}`;

/**
 * Tokens that pass the first check (three canonical base64url segments) and fail to parse after it:
 * a header or payload that is not JSON, not UTF-8, or JSON of the wrong kind. No key is needed to make
 * them; each must be refused as an invalid token (401 token_not_valid), never a 500.
 */
export const UNPARSABLE_TOKENS: { name: string; token: string }[] = [
  { name: 'a truncated JSON payload', token: `${JWT_HEADER}.${segment('{"a":')}.${SIGNATURE}` },
  { name: 'a nested token as the payload', token: `${JWT_HEADER}.${segment(NESTED)}.${SIGNATURE}` },
  { name: 'random bytes as the payload', token: `${JWT_HEADER}.${segment(Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, 0x7b]))}.${SIGNATURE}` },
  { name: 'a payload that is not JSON, no typ', token: `${segment('{"alg":"HS256"}')}.${segment('plain words')}.${SIGNATURE}` },
  { name: 'a truncated JSON header', token: `${segment('{"alg":')}.${segment('{}')}.${SIGNATURE}` },
  { name: 'random bytes as the header', token: `${segment(Buffer.from([0xff, 0xfe, 0x00, 0x9c]))}.${segment('{}')}.${SIGNATURE}` },
  { name: 'a JSON array as the header', token: `${segment('["HS256"]')}.${segment('{}')}.${SIGNATURE}` },
  { name: 'a JSON number as the header', token: `${segment('1e999')}.${segment('{}')}.${SIGNATURE}` },
  { name: 'null as the header', token: `${segment('null')}.${segment('{}')}.${SIGNATURE}` },
  { name: 'a header that is not UTF-8', token: `${segment(Buffer.concat([Buffer.from('{"alg":"HS256","kid":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]))}.${segment('{}')}.${SIGNATURE}` },
  { name: 'a nested token as the header', token: `${segment(NESTED)}.${segment('{}')}.${SIGNATURE}` },
];

/** Requests no client should send. Every one must get a 4xx in the contract's JSON shape. */
export const HOSTILE_REQUESTS: { name: string; request: string | Buffer }[] = [
  ...UNPARSABLE_TOKENS.flatMap(({ name, token }) => [
    { name: `verify: ${name}`, request: json('/api/token/verify/', JSON.stringify({ token })) },
    { name: `refresh: ${name}`, request: json('/api/token/refresh/', JSON.stringify({ refresh: token })) },
    { name: `blacklist: ${name}`, request: json('/api/token/blacklist/', JSON.stringify({ refresh: token })) },
    { name: `guard: ${name}`, request: get('/api/me/', `Authorization: Bearer ${token}\r\n`) },
  ]),
  ...['{', '{"username": }', 'nul', '{"a":1}}', '\u0000'].map((b) => ({ name: `malformed JSON ${JSON.stringify(b)}`, request: json('/api/token/', b) })),
  ...['text/plain', 'application/xml', 'application/json-patch+json', 'multipart/mixed', 'x'].map((t) => ({ name: `content type ${t}`, request: typed(t, '{}') })),
  { name: 'a body over the limit', request: json('/api/token/', JSON.stringify({ username: 'a', password: 'x'.repeat(70_000) })) },
  {
    name: 'a chunked body over the limit',
    request: `POST /api/token/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n11170\r\n${'{'.repeat(70_000)}\r\n0\r\n\r\n`,
  },
  { name: 'deeply nested arrays', request: json('/api/token/', '['.repeat(30_000) + ']'.repeat(30_000)) },
  { name: 'deeply nested objects', request: json('/api/token/', '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000)) },
  { name: 'fields of the wrong type', request: json('/api/token/', '{"username": true, "password": {"$ne": null}}') },
  { name: 'a NUL in a field', request: json('/api/token/', '{"username": "ali\\u0000ce", "password": "x"}') },
  { name: 'invalid UTF-8', request: json('/api/token/', Buffer.concat([Buffer.from('{"username":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('","password":"x"}')])) },
  { name: 'a lone surrogate', request: json('/api/token/', '{"username":"\\ud800","password":"x"}') },
  { name: 'a __proto__ key', request: json('/api/token/', '{"__proto__": {"username": "alice"}}') },
  { name: 'a refresh token of the wrong type', request: json('/api/token/refresh/', '{"refresh": 12345}') },
  { name: 'a body longer than its Content-Length', request: 'POST /api/token/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{"a":1}' },
  { name: 'Content-Length and Transfer-Encoding both', request: 'POST /api/token/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n' },
  { name: 'two Content-Lengths', request: 'POST /api/token/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{}' },
  { name: 'a header too large', request: get('/api/me/', `Authorization: Bearer ${'a'.repeat(70_000)}\r\n`) },
  { name: 'a malformed header line', request: 'GET /api/me/ HTTP/1.1\r\nHost: x\r\nBad Header\r\nConnection: close\r\n\r\n' },
  { name: 'two Authorization headers', request: get('/api/me/', 'Authorization: Bearer a.b.c\r\nAuthorization: Bearer garbage\r\n') },
  { name: 'a long invalid token', request: get('/api/me/', `Authorization: Bearer ${'a'.repeat(7_000)}\r\n`) },
  { name: 'a NUL in the path (%00)', request: get('/api/me/%00') },
  { name: 'a NUL in the query', request: get('/api/me/?a=%00') },
  { name: 'a bad request line', request: 'GET /a b c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' },
  { name: 'a URI too long', request: get(`/api/me/${'a'.repeat(9_000)}`) },
  { name: 'dot segments above the root', request: get('/../../etc/passwd') },
  { name: 'encoded dot segments', request: get('/api/me/%2e%2e/%2e%2e/etc/passwd') },
  { name: 'no Host header', request: 'GET /api/me/ HTTP/1.1\r\nConnection: close\r\n\r\n' },
  { name: 'an unknown method', request: 'FOO /api/me/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' },
  { name: 'an unsupported HTTP version', request: 'GET /api/me/ HTTP/2.7\r\nHost: x\r\nConnection: close\r\n\r\n' },
  { name: 'an upper-case path', request: json('/API/TOKEN/', '{}') },
];

/** The checks every answer to a hostile request passes: a 4xx, JSON with a detail or field errors. */
export function contractError(reply: RawReply): string[] {
  const problems: string[] = [];
  if (reply.status < 400 || reply.status >= 500) problems.push(`status ${reply.status}`);
  if (reply.headers['content-type'] !== 'application/json') problems.push(`content-type ${reply.headers['content-type']}`);
  let body: unknown;
  try {
    body = JSON.parse(reply.body);
  } catch {
    problems.push(`body is not JSON: ${reply.body.slice(0, 80)}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body) || Object.keys(body).length === 0) problems.push('body is not an error object');
  return problems;
}

/** The headers nginx puts on every answer, its own included. */
export const SECURITY_HEADERS: Record<string, RegExp> = {
  'x-content-type-options': /^nosniff$/,
  'x-frame-options': /^DENY$/,
  'content-security-policy': /default-src 'none'/,
  'referrer-policy': /^no-referrer$/,
  'x-request-id': /^[0-9a-f]{32}$/,
};
