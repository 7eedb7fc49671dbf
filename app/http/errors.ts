// Error responses. Every error is JSON; contract errors keep DRF's exact shapes, our own add a `code`.
import type { Context, Middleware } from 'koa';
import type { Logger } from 'pino';
import { isDatabaseUnavailable } from '../db/availability';
import { sendJson } from './respond';

// Which database errors are a 503 (app/db/availability.ts), for callers that know this module.
export { isDatabaseUnavailable };

/** An error with the response it should produce. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly body: Record<string, unknown>,
    readonly headers: Record<string, string> = {},
  ) {
    super(typeof body.detail === 'string' ? body.detail : `HTTP ${status}`);
  }
}

export const notAuthenticated = () => new ApiError(401, { detail: 'Authentication credentials were not provided.' });

/** DRF's "Authorization header must contain two space-delimited values" and kin. */
export const authenticationFailed = (detail: string, code: string) => new ApiError(401, { detail, code });

export const validationError = (errors: Record<string, string[]>) => new ApiError(400, errors);

export interface ErrorOptions {
  logger: Logger;
  /** The scheme named in WWW-Authenticate on every 401 (AUTH_HEADER_TYPES[0]). */
  authScheme: string;
}

// Koa's own HTTP errors (thrown by ctx.throw or raw-body) with the code we answer them with.
const KOA_CODES: Record<number, string> = {
  400: 'bad_request',
  413: 'request_too_large',
  415: 'unsupported_media_type',
  431: 'headers_too_large',
};

function isHttpError(err: unknown): err is { status: number; expose: boolean; message: string } {
  return typeof err === 'object' && err !== null && typeof (err as { status?: unknown }).status === 'number' &&
    (err as { expose?: unknown }).expose === true;
}

export function errorHandler({ logger, authScheme }: ErrorOptions): Middleware {
  const render = (ctx: Context, status: number, body: Record<string, unknown>, headers: Record<string, string>) => {
    ctx.set(headers);
    // An error that names its own challenge keeps it (OAuth's token endpoint answers Basic).
    if (status === 401 && headers['WWW-Authenticate'] === undefined) ctx.set('WWW-Authenticate', `${authScheme} realm="api"`);
    sendJson(ctx, status, body);
  };
  return async function errors(ctx, next) {
    try {
      await next();
      if (ctx.status === 404 && ctx.body == null) render(ctx, 404, { detail: 'Not found.', code: 'not_found' }, {});
    } catch (err) {
      if (err instanceof ApiError) return render(ctx, err.status, err.body, err.headers);
      if (isHttpError(err) && err.status >= 400 && err.status < 500) {
        return render(ctx, err.status, { detail: err.message, code: KOA_CODES[err.status] ?? 'client_error' }, {});
      }
      if (isDatabaseUnavailable(err)) {
        logger.warn({ request_id: ctx.state.requestId, err }, 'database unavailable');
        return render(ctx, 503, { detail: 'The database is not answering; try again shortly.', code: 'database_unavailable' }, { 'Retry-After': '2' });
      }
      // Never a stack trace to the client; the log has it, under the request's id.
      logger.error({ request_id: ctx.state.requestId, err }, 'unhandled error');
      render(ctx, 500, { detail: 'A server error occurred.', code: 'server_error' }, {});
    }
  };
}
