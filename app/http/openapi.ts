// GET /api/schema/: the OpenAPI 3.1 document of every route, generated from the zod schemas the
// handlers validate with (zod writes JSON Schema 2020-12, OpenAPI 3.1's dialect), so it cannot drift
// from what is enforced. test/integration/openapi.test.ts proves that every route the router serves is
// in it, and nothing else.
import type Router from '@koa/router';
import { z } from 'zod';
import { CLIENT_TOKEN_PATH } from '../auth/client-routes';
import { LEGACY_REFRESH_COOKIE, REFRESH_COOKIE, REFRESH_COOKIE_PATH, TRANSPORT_HEADER } from '../auth/cookie';
import { GROUPS_CLAIM_MAX_BYTES } from '../auth/user-claims';
import * as s from '../auth/schemas';
import type { UserClaim } from '../config';
import { endpoint } from './endpoint';
import { ERROR_CODES } from './errors';
import { sendJson } from './respond';

/** DRF's validation errors: each field (or non_field_errors) with its messages. */
export const FieldErrors = z
  .record(z.string(), z.array(z.string()))
  .meta({ id: 'FieldErrors', description: 'Per-field messages, as DRF answers: `{"username": ["This field is required."]}`, `{"non_field_errors": [...]}`.' });
/** Every other error: simplejwt's and DRF's `{detail}`, `{detail, code}` and the guard's `{detail, code, messages}`. */
export const ErrorBody = z
  .object({
    detail: z.string(),
    code: z.enum(ERROR_CODES).optional().meta({ description: 'Machine-readable: what went wrong (app/http/errors.ts lists every code, nginx\'s included).' }),
    messages: z
      .array(z.object({ token_class: z.string(), token_type: z.string(), message: z.string() }))
      .optional()
      .meta({ description: 'Protected routes: why the access token was refused.' }),
  })
  .meta({ id: 'Error' });
export const Me = z.object({ id: z.number().int(), username: z.string() }).meta({ id: 'Me' });
export const Health = z.object({ status: z.string(), database: z.string().optional() }).meta({ id: 'Health' });
export const Jwks = z
  .object({ keys: z.array(z.looseObject({ kty: z.string(), kid: z.string().optional(), alg: z.string().optional() })) })
  .meta({ id: 'JWKS' });

// Machine clients (RFC 6749 §4.4, §5.1, §5.2; RFC 8414): answered in OAuth's shapes, not DRF's.
export const OAuthTokenRequest = z
  .object({
    grant_type: z.literal('client_credentials'),
    scope: z.string().optional().meta({ description: 'Space-separated scopes; none: every scope of the client.' }),
    client_id: z.string().optional().meta({ description: 'client_secret_post (or alongside Basic, the same id).' }),
    client_secret: z.string().optional().meta({ description: 'client_secret_post only; with HTTP Basic (client_secret_basic) leave it out.' }),
  })
  .meta({ id: 'OAuthTokenRequest', description: 'application/x-www-form-urlencoded, as RFC 6749 requires. A repeated parameter is invalid_request.' });
export const OAuthTokenResponse = z
  .object({
    access_token: z.string().meta({ description: 'An RFC 9068 JWT (header typ at+jwt): iss, sub and client_id (the client id), aud (AUDIENCE), scope, iat, exp, jti.' }),
    token_type: z.literal('Bearer'),
    expires_in: z.number().int().meta({ description: 'Seconds (ACCESS_TOKEN_LIFETIME). There is no refresh token: ask again.' }),
    scope: z.string().optional().meta({ description: 'The scopes granted; absent when none.' }),
  })
  .meta({ id: 'OAuthTokenResponse' });
export const OAuthErrorBody = z
  .object({
    error: z.enum(['invalid_request', 'invalid_client', 'invalid_scope', 'unsupported_grant_type', 'slow_down']),
    error_description: z.string(),
  })
  .meta({ id: 'OAuthError', description: 'RFC 6749 §5.2. slow_down (429, Retry-After): too many attempts for this client.' });
export const AuthorizationServerMetadata = z
  .object({
    issuer: z.string(),
    token_endpoint: z.string(),
    jwks_uri: z.string().optional(),
    scopes_supported: z.array(z.string()),
    response_types_supported: z.array(z.string()),
    grant_types_supported: z.array(z.string()),
    token_endpoint_auth_methods_supported: z.array(z.string()),
    service_documentation: z.string(),
  })
  .meta({ id: 'AuthorizationServerMetadata', description: 'RFC 8414.' });
/** What a user's access token carries (not a request or an answer: the JWT's payload). */
export const AccessTokenClaims = z
  .object({
    token_type: z.literal('access'),
    exp: z.number().int(),
    iat: z.number().int(),
    jti: z.string(),
    user_id: z.number().int().meta({ description: 'Named by USER_ID_CLAIM.' }),
    sid: z.string().meta({ description: 'The session (refresh-token family).' }),
    username: z.string(),
    is_staff: z.boolean().optional().meta({ description: 'With ACCESS_TOKEN_CLAIMS=is_staff.' }),
    is_superuser: z.boolean().optional().meta({ description: 'With ACCESS_TOKEN_CLAIMS=is_superuser.' }),
    groups: z.array(z.string()).optional().meta({ description: `With ACCESS_TOKEN_CLAIMS=groups: the user's group names, sorted, while their JSON is at most ${GROUPS_CLAIM_MAX_BYTES} bytes.` }),
    groups_overage: z.literal(true).optional().meta({ description: 'Instead of groups, for a user in more groups than that: ask the database.' }),
  })
  .meta({ id: 'AccessTokenClaims', description: "The payload of a user's access token. The claims from the user record are read at login and at every refresh." });

const ref = (schema: z.ZodType) => {
  const id = z.globalRegistry.get(schema)?.id;
  if (!id) throw new Error('a schema in the document needs an id (.meta({ id }))');
  return { $ref: `#/components/schemas/${id}` };
};
const json = (schema: z.ZodType | Record<string, unknown>) => ({
  'application/json': { schema: schema instanceof z.ZodType ? ref(schema) : schema },
});
const answer = (description: string, schema?: z.ZodType | Record<string, unknown>, headers?: Record<string, unknown>) => ({
  description,
  ...(schema ? { content: json(schema) } : {}),
  ...(headers ? { headers } : {}),
});
const error = (description: string) => answer(description, ErrorBody);
const badRequest = answer('Field errors, or a body that does not parse', { anyOf: [ref(FieldErrors), ref(ErrorBody)] });
const bodyErrors = {
  400: badRequest,
  405: error('Any other method'),
  413: error('The body is over MAX_BODY_BYTES'),
  415: error('A body that is not JSON, form-encoded or multipart'),
};

/** A request body in the three media types DRF's default parsers take. */
function body(schema: z.ZodType | Record<string, unknown>, required = true) {
  const one = { schema: schema instanceof z.ZodType ? ref(schema) : schema };
  return { required, content: { 'application/json': one, 'application/x-www-form-urlencoded': one, 'multipart/form-data': one } };
}

const transport = {
  name: TRANSPORT_HEADER,
  in: 'header',
  required: false,
  description:
    `\`cookie\`: the refresh token travels in the \`${REFRESH_COOKIE}\` cookie (HttpOnly, Secure, SameSite=Strict, ` +
    `Path=${REFRESH_COOKIE_PATH}, no Domain) instead of the body; refresh and blacklist then read it when the body has none. ` +
    'Without this header the cookie is never read. A request carrying the cookie twice is refused (400 `duplicate_refresh_cookie`) ' +
    `and clears nothing. The previous release's \`${LEGACY_REFRESH_COOKIE}\` cookie is cleared: blacklist ends its session, ` +
    'refresh answers 401 (log in again).',
  schema: { type: 'string', enum: ['cookie'] },
};
const setCookie = { 'Set-Cookie': { description: `With ${TRANSPORT_HEADER}: cookie, the ${REFRESH_COOKIE} cookie (set, rotated or cleared).`, schema: { type: 'string' } } };
const retryAfter = { 'Retry-After': { description: 'Seconds to wait', schema: { type: 'integer' } } };
const throttled = answer('Too many attempts', ErrorBody, retryAfter);
// Any route that reads or writes the database answers this while it cannot reach it.
const unavailable = answer('database_unavailable: the database is not answering; retry shortly', ErrorBody, retryAfter);
const cookieBodyErrors = {
  ...bodyErrors,
  400: answer('Field errors, a body that does not parse, or `duplicate_refresh_cookie` (the cookie sent twice: nothing changed)', {
    anyOf: [ref(FieldErrors), ref(ErrorBody)],
  }),
};
const reauth = (what: string) =>
  error(`reauthentication_required: ${what} needs a login at most SESSION_REAUTH_AGE old (15 minutes by default; the access token's auth_time): log in again`);
const bearer = [{ bearer: [] }];
const cookieOrBody = [{}, { refreshCookie: [] }];
// The refresh token in the body, or (with the cookie transport) no body at all.
const refreshBody = body({ anyOf: [ref(s.RefreshRequest), ref(s.CookieRefreshRequest)] }, false);
const publicRoute = { security: [] };

const oauthError = (description: string, headers?: Record<string, unknown>) => answer(description, OAuthErrorBody, headers);
const noStoreHeaders = { 'Cache-Control': { description: 'no-store', schema: { type: 'string' } } };

function clientPaths() {
  return {
    [`${CLIENT_TOKEN_PATH}/`]: {
      post: {
        tags: ['machine clients'],
        summary: 'OAuth 2.0 client credentials grant: an access token for a machine client',
        operationId: 'oauthToken',
        security: [{ clientBasic: [] }, {}],
        requestBody: { required: true, content: { 'application/x-www-form-urlencoded': { schema: ref(OAuthTokenRequest) } } },
        responses: {
          200: answer('The access token (RFC 6749 §5.1)', OAuthTokenResponse, noStoreHeaders),
          400: oauthError('invalid_request, invalid_scope, unsupported_grant_type', noStoreHeaders),
          401: oauthError('invalid_client (WWW-Authenticate: Basic)', {
            ...noStoreHeaders,
            'WWW-Authenticate': { description: 'Basic realm="oauth"', schema: { type: 'string' } },
          }),
          405: error('Any other method'),
          413: oauthError('invalid_request: the body is over MAX_BODY_BYTES'),
          429: answer('slow_down: too many attempts for this client', OAuthErrorBody, retryAfter),
        },
      },
    },
    '/.well-known/oauth-authorization-server': {
      get: {
        tags: ['machine clients'],
        summary: 'Authorization server metadata (RFC 8414): issuer, token endpoint, keys, scopes',
        operationId: 'oauthMetadata',
        ...publicRoute,
        responses: { 200: answer('The metadata', AuthorizationServerMetadata) },
      },
    },
  };
}

function paths() {
  return {
    '/api/token/': {
      post: {
        tags: ['tokens'],
        summary: 'Log in: a refresh and an access token',
        operationId: 'tokenObtain',
        ...publicRoute,
        parameters: [transport],
        requestBody: body(s.ObtainRequest),
        responses: {
          200: answer('The pair; with the cookie transport only the access token, the refresh token in the cookie', { anyOf: [ref(s.TokenPair), ref(s.AccessOnly)] }, setCookie),
          ...bodyErrors,
          401: error('No active account found with the given credentials'),
          429: throttled,
          503: answer('login_overloaded: too many password checks queued; or database_unavailable. Retry shortly', ErrorBody, retryAfter),
        },
      },
    },
    '/api/token/refresh/': {
      post: {
        tags: ['tokens'],
        summary: 'A new access token (and, with rotation, a new refresh token)',
        operationId: 'tokenRefresh',
        security: cookieOrBody,
        parameters: [transport],
        requestBody: refreshBody,
        responses: {
          200: answer(
            'The new tokens. Within REFRESH_REUSE_INTERVAL of a rotation, the rotated token presented again answers the same new refresh token as the rotation did (a fresh access token)',
            { anyOf: [ref(s.RotatedPair), ref(s.AccessOnly)] },
            setCookie,
          ),
          ...cookieBodyErrors,
          401: answer('token_not_valid (invalid, expired, blacklisted, replayed: the session is then revoked); not_authenticated (no cookie)', ErrorBody, setCookie),
          429: throttled,
          503: unavailable,
        },
      },
    },
    '/api/token/verify/': {
      post: {
        tags: ['tokens'],
        summary: 'Check a token (either type)',
        operationId: 'tokenVerify',
        ...publicRoute,
        requestBody: body(s.VerifyRequest),
        description: "A user's token of either type, or a machine client's access token (refused once its client is deleted or its secret rotated).",
        responses: { 200: answer('Valid', s.Empty), ...bodyErrors, 401: error('token_not_valid'), 503: unavailable },
      },
    },
    '/api/token/blacklist/': {
      post: {
        tags: ['tokens'],
        summary: 'Log out: end the session the refresh token belongs to',
        operationId: 'tokenBlacklist',
        security: cookieOrBody,
        parameters: [transport],
        requestBody: refreshBody,
        responses: { 200: answer('Logged out (and the cookie cleared)', s.Empty, setCookie), ...cookieBodyErrors, 401: answer('token_not_valid; not_authenticated (no cookie)', ErrorBody, setCookie), 503: unavailable },
      },
    },
    '/api/token/logout-all/': {
      post: {
        tags: ['sessions'],
        summary: 'End every session of the caller (scope=all), or every other one (scope=others)',
        description:
          'scope=others needs a recent login (403 reauthentication_required otherwise). scope=all needs none: it ends the ' +
          "caller's own session too, so an owner who fears a theft can always end every session, the thief's included.",
        operationId: 'tokenLogoutAll',
        security: bearer,
        parameters: [{ name: 'scope', in: 'query', required: false, schema: schemaOf(s.LogoutAllQuery.shape.scope) }],
        responses: {
          200: answer('Ended', s.Empty),
          400: badRequest,
          401: error('No valid access token'),
          403: reauth('scope=others'),
          405: error('Any other method'),
          503: unavailable,
        },
      },
    },
    '/api/sessions/': {
      get: {
        tags: ['sessions'],
        summary: "The caller's live sessions (one per login), the current one marked",
        operationId: 'sessionList',
        security: bearer,
        responses: { 200: answer('Newest first', s.SessionList), 401: error('No valid access token'), 403: reauth('Listing sessions'), 503: unavailable },
      },
    },
    '/api/sessions/{id}/': {
      delete: {
        tags: ['sessions'],
        summary: "End one of the caller's sessions; its access tokens stop at once",
        operationId: 'sessionEnd',
        security: bearer,
        parameters: [{ name: 'id', in: 'path', required: true, schema: schemaOf(s.SessionPath.shape.id) }],
        responses: {
          204: { description: 'Ended' },
          401: error('No valid access token'),
          403: reauth('Ending a session'),
          404: error('No such live session of the caller'),
          503: unavailable,
        },
      },
    },
    '/api/me/': {
      get: {
        tags: ['api'],
        summary: 'Who the access token belongs to',
        operationId: 'me',
        security: bearer,
        responses: { 200: answer('The user', Me), 401: error('No valid access token'), 503: unavailable },
      },
    },
    '/.well-known/jwks.json': {
      get: {
        tags: ['keys'],
        summary: 'The public keys tokens are verified with (none for HMAC)',
        operationId: 'jwks',
        ...publicRoute,
        responses: { 200: answer('A JWK set', Jwks) },
      },
    },
    '/api/schema/': {
      get: {
        tags: ['docs'],
        summary: 'This document',
        operationId: 'schema',
        ...publicRoute,
        responses: { 200: answer('OpenAPI 3.1', { type: 'object' }) },
      },
    },
    '/api/docs/': {
      get: {
        tags: ['docs'],
        summary: 'The interactive reference (Swagger UI)',
        operationId: 'docs',
        ...publicRoute,
        responses: { 200: { description: 'An HTML page', content: { 'text/html': { schema: { type: 'string' } } } } },
      },
    },
    '/api/docs/{asset}': {
      get: {
        tags: ['docs'],
        summary: "The reference page's scripts, styles and icon",
        operationId: 'docsAsset',
        ...publicRoute,
        parameters: [{ name: 'asset', in: 'path', required: true, schema: { type: 'string' } }],
        responses: { 200: { description: 'The file', content: { '*/*': { schema: { type: 'string' } } } }, 404: error('No such file') },
      },
    },
    '/healthz': {
      get: { tags: ['health'], summary: 'Liveness', operationId: 'healthz', ...publicRoute, responses: { 200: answer('Alive', Health) } },
    },
    '/readyz': {
      get: {
        tags: ['health'],
        summary: 'Readiness: the database answers',
        operationId: 'readyz',
        ...publicRoute,
        responses: { 200: answer('Ready', Health), 503: error('The database is not answering') },
      },
    },
  };
}

function schemaOf(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { io: 'input', target: 'draft-2020-12' });
  return rest;
}

/** Every schema with an id, as OpenAPI components (refs between them point into components). */
function components(): Record<string, unknown> {
  const { schemas } = z.toJSONSchema(z.globalRegistry, { io: 'input', target: 'draft-2020-12', uri: (id) => `#/components/schemas/${id}` });
  return Object.fromEntries(
    Object.entries(schemas).map(([id, schema]) => {
      const { $schema: _s, $id: _i, ...rest } = schema as Record<string, unknown>;
      return [id, rest];
    }),
  );
}

export interface DocumentOptions {
  authScheme: string;
  /** Machine clients on: their endpoints and the oauth2 security scheme are in the document. */
  clients?: boolean;
  /** ACCESS_TOKEN_CLAIMS, named in the description. */
  claims?: readonly UserClaim[];
}

export function openApiDocument(options: DocumentOptions): Record<string, unknown> {
  const claims = options.claims?.length
    ? ` Access tokens carry ${options.claims.join(', ')} from the user record (schema AccessTokenClaims).`
    : '';
  const clients = options.clients
    ? ' Machine clients get RFC 9068 access tokens from the OAuth 2.0 client credentials grant; routes for users refuse them (403 user_token_required).'
    : '';
  return {
    openapi: '3.1.0',
    info: {
      title: 'koa-auth-stack',
      version: '1.0.0',
      description:
        'JWT authentication, wire-compatible with djangorestframework-simplejwt, plus sessions per device and a cookie transport for browsers.' +
        claims +
        clients,
    },
    paths: { ...paths(), ...(options.clients ? clientPaths() : {}) },
    components: {
      schemas: components(),
      securitySchemes: {
        bearer: {
          type: 'http',
          scheme: 'bearer',
          bearerFormat: 'JWT',
          description:
            `Authorization: ${options.authScheme} <access token>. Access tokens carry simplejwt's claims plus sid (the session), ` +
            'username and auth_time (when the session logged in, kept across refreshes).',
        },
        refreshCookie: { type: 'apiKey', in: 'cookie', name: REFRESH_COOKIE, description: `Read only with the ${TRANSPORT_HEADER}: cookie header.` },
        ...(options.clients
          ? {
              clientBasic: { type: 'http', scheme: 'basic', description: 'client_secret_basic: the client id and secret, each form-encoded (RFC 6749 §2.3.1).' },
              oauth2: {
                type: 'oauth2',
                description: 'Machine clients: a token from the client credentials grant, sent as a bearer token; routes declare the scopes they need.',
                flows: { clientCredentials: { tokenUrl: `${CLIENT_TOKEN_PATH}/`, scopes: {} } },
              },
            }
          : {}),
      },
    },
  };
}

export function schemaRoutes(router: Router, document: Record<string, unknown>): void {
  router.all('/api/schema', endpoint({ GET: (ctx) => sendJson(ctx, 200, document) }));
}
