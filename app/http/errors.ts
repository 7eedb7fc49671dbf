// Error responses. Every error is JSON; contract errors keep DRF's exact shapes, our own add a `code`.
import type { Context, Middleware } from 'koa';
import type { Logger } from 'pino';
import { isDatabaseUnavailable } from '../db/availability';
import { sendJson } from './respond';

// Which database errors are a 503 (app/db/availability.ts), for callers that know this module.
export { isDatabaseUnavailable };

/**
 * Every machine-readable `code` an error answer carries: the app's, and nginx's in front of it
 * (nginx/; test/unit/http.test.ts checks them). The OpenAPI document's enum is this list.
 */
export const ERROR_CODES = [
  // Authentication (simplejwt's and DRF's codes where they have one)
  'not_authenticated',
  'token_not_valid',
  'bad_authorization_header',
  'user_not_found',
  'user_inactive',
  'no_active_account',
  'bad_token_transport',
  'duplicate_refresh_cookie',
  // Authorization
  'permission_denied',
  'user_token_required',
  'client_token_required',
  'insufficient_scope',
  'reauthentication_required',
  'cors_origin_not_allowed',
  // The request itself
  'not_found',
  'bad_request',
  'parse_error',
  'unsupported_media_type',
  'request_too_large',
  'headers_too_large',
  'request_timeout',
  'uri_too_long',
  'client_error',
  'client_closed',
  // Load and outages
  'throttled',
  'login_overloaded',
  'database_unavailable',
  'revocations_unavailable',
  'service_unavailable',
  'server_error',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** A JSON error body: DRF's field errors, or `{detail, code, …}` with a code from ERROR_CODES. */
export type ErrorBody = { code?: ErrorCode } & Record<string, unknown>;

/** An error with the response it should produce. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly body: ErrorBody,
    readonly headers: Record<string, string> = {},
  ) {
    super(typeof body.detail === 'string' ? body.detail : `HTTP ${status}`);
  }
}

const coded = (status: number, code: ErrorCode, detail: string, headers?: Record<string, string>) => new ApiError(status, { detail, code }, headers);
const plural = (n: number, unit: string) => `${n} ${unit}${n === 1 ? '' : 's'}`;

// --- 401: who is calling ----------------------------------------------------------------------
/** DRF's NotAuthenticated as JWTAuthentication answers it: no code. */
export const notAuthenticated = () => new ApiError(401, { detail: 'Authentication credentials were not provided.' });
/** No refresh token in the body or the cookie: the browser has no session. */
export const noRefreshCookie = () => coded(401, 'not_authenticated', 'Authentication credentials were not provided.');
/** DRF's "Authorization header must contain two space-delimited values" and kin. */
export const badAuthorizationHeader = (detail: string) => coded(401, 'bad_authorization_header', detail);
/** simplejwt's token_not_valid with its message (the refresh and verify endpoints; a bad user id claim). */
export const tokenNotValid = (message: string) => coded(401, 'token_not_valid', message);
/** A token failure on a protected route, in JWTAuthentication's shape. */
export const invalidAccessToken = (message: string) =>
  new ApiError(401, {
    detail: 'Given token not valid for any token type',
    code: 'token_not_valid',
    messages: [{ token_class: 'AccessToken', token_type: 'access', message }],
  });
export const userNotFound = () => coded(401, 'user_not_found', 'User not found');
export const userInactive = () => coded(401, 'user_inactive', 'User is inactive');
/** simplejwt's login failure; the code only where simplejwt sends one (an inactive user's refresh). */
export const noActiveAccount = (withCode: boolean) =>
  new ApiError(401, { detail: 'No active account found with the given credentials', ...(withCode ? { code: 'no_active_account' as const } : {}) });

// --- 403: what the caller may do --------------------------------------------------------------
/** DRF's PermissionDenied. */
export const permissionDenied = () => coded(403, 'permission_denied', 'You do not have permission to perform this action.');
/** A machine client's token where only users' are accepted. */
export const userTokenRequired = () => coded(403, 'user_token_required', "This route is for users: a machine client's token cannot call it.");
/** A user's token where only machine clients' are accepted. */
export const clientTokenRequired = () => coded(403, 'client_token_required', "This route is for machine clients: a user's token cannot call it.");
export const insufficientScope = (scopes: readonly string[]) =>
  coded(403, 'insufficient_scope', `This route needs the scope${scopes.length === 1 ? '' : 's'} ${scopes.join(' ')}.`, {
    'WWW-Authenticate': `Bearer error="insufficient_scope", scope="${scopes.join(' ')}"`,
  });
/** 403: log in again (with the password) and retry with the new access token. */
export const reauthenticationRequired = (maxAgeSeconds: number) =>
  coded(403, 'reauthentication_required', `This needs a login from the last ${describeSeconds(maxAgeSeconds)}: log in again and retry with the new access token.`);
export const corsOriginNotAllowed = () => coded(403, 'cors_origin_not_allowed', 'Cross-origin requests from this origin are not allowed.');

function describeSeconds(seconds: number): string {
  const one = (n: number, unit: string) => (n === 1 ? unit : plural(n, unit));
  if (seconds % 3600 === 0) return one(seconds / 3600, 'hour');
  if (seconds % 60 === 0) return one(seconds / 60, 'minute');
  return one(seconds, 'second');
}

// --- 4xx: the request itself ------------------------------------------------------------------
/** The one 404 body: no route, no such file, no such session of the caller. */
export const notFound = () => coded(404, 'not_found', 'Not found.');
export const badRequest = (detail: string) => coded(400, 'bad_request', detail);
export const parseError = (detail: string) => coded(400, 'parse_error', detail);
export const unsupportedMediaType = (detail: string) => coded(415, 'unsupported_media_type', detail);
export const headersTooLarge = () => coded(431, 'headers_too_large', 'Request headers are too large.');
export const requestTimeout = () => coded(408, 'request_timeout', 'The request took too long to arrive.');
export const requestTooLarge = (limit: number) => coded(413, 'request_too_large', `Request body is larger than ${limit} bytes.`);
export const badTokenTransport = (header: string) => coded(400, 'bad_token_transport', `${header} must be "cookie" when sent.`);
export const duplicateRefreshCookie = (name: string) =>
  coded(400, 'duplicate_refresh_cookie', `The ${name} cookie was sent more than once; another site may have set one. Nothing was changed.`);
/** Not sent (the client is gone): what the access log records. */
export const clientClosed = () => coded(499, 'client_closed', 'The client closed the request.');

// --- Load and outages -------------------------------------------------------------------------
/** DRF's Throttled, with Retry-After. */
export const throttled = (seconds: number) =>
  coded(429, 'throttled', `Request was throttled. Expected available in ${plural(seconds, 'second')}.`, { 'Retry-After': String(seconds) });
/** Every hashing slot is busy and the line is full: come back shortly rather than wait for minutes. */
export const loginOverloaded = () => coded(503, 'login_overloaded', 'Too many logins are being checked; try again shortly.', { 'Retry-After': '1' });
export const databaseUnavailable = () => coded(503, 'database_unavailable', 'The database is not answering; try again shortly.', { 'Retry-After': '2' });
export const serverError = () => coded(500, 'server_error', 'A server error occurred.');

export const validationError = (errors: Record<string, string[]>) => new ApiError(400, errors);

export interface ErrorOptions {
  logger: Logger;
  /** The scheme named in WWW-Authenticate on every 401 (AUTH_HEADER_TYPES[0]). */
  authScheme: string;
}

// Koa's own HTTP errors (thrown by ctx.throw or raw-body) with the code we answer them with.
const KOA_CODES: Record<number, ErrorCode> = {
  400: 'bad_request',
  413: 'request_too_large',
  415: 'unsupported_media_type',
  431: 'headers_too_large',
};

function isHttpError(err: unknown): err is { status: number; expose: boolean; message: string } {
  return typeof err === 'object' && err !== null && typeof (err as { status?: unknown }).status === 'number' &&
    (err as { expose?: unknown }).expose === true;
}

/** How a request that failed is answered, and the 404 for one nothing answered (requestFrame's). */
export interface ErrorAnswers {
  /** After the routes: nothing answered is the one 404 body. */
  finish(ctx: Context): void;
  /** Whatever was thrown, as our JSON answer: 4xx for the request's faults, 503, or a logged 500. */
  fail(ctx: Context, err: unknown): void;
}

export function errorAnswers({ logger, authScheme }: ErrorOptions): ErrorAnswers {
  const render = (ctx: Context, { status, body, headers }: ApiError) => {
    ctx.set(headers);
    // An error that names its own challenge keeps it (OAuth's token endpoint answers Basic).
    if (status === 401 && headers['WWW-Authenticate'] === undefined) ctx.set('WWW-Authenticate', `${authScheme} realm="api"`);
    sendJson(ctx, status, body);
  };
  return {
    finish(ctx) {
      if (ctx.status === 404 && ctx.body == null) render(ctx, notFound());
    },
    fail(ctx, err) {
      if (err instanceof ApiError) return render(ctx, err);
      if (isHttpError(err) && err.status >= 400 && err.status < 500) {
        return render(ctx, coded(err.status, KOA_CODES[err.status] ?? 'client_error', err.message));
      }
      if (isDatabaseUnavailable(err)) {
        logger.warn({ request_id: ctx.state.requestId, err }, 'database unavailable');
        return render(ctx, databaseUnavailable());
      }
      // Never a stack trace to the client; the log has it, under the request's id.
      logger.error({ request_id: ctx.state.requestId, err }, 'unhandled error');
      render(ctx, serverError());
    },
  };
}

/** errorAnswers as a middleware of its own, for an app without requestFrame (tests, a sub-app). */
export function errorHandler(options: ErrorOptions): Middleware {
  const answers = errorAnswers(options);
  return async function errors(ctx, next) {
    try {
      await next();
      answers.finish(ctx);
    } catch (err) {
      answers.fail(ctx, err);
    }
  };
}
