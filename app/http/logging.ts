// Request ids, and a log line per request only where nginx's access log (one line per request
// across the stack) cannot stand in: at debug every request, at info the slow ones. The id comes from
// nginx (X-Request-Id, from its $request_id) when it is well-formed, else a fresh one; it is returned
// to the client and is on every log line of the request (errors, security events), so a line of the
// app's is found beside nginx's. Only method, path, status and time are logged: never headers, query
// strings or bodies, where tokens and passwords travel.
import { randomUUID } from 'node:crypto';
import type { Context } from 'koa';
import type { Logger } from 'pino';

declare module 'koa' {
  interface DefaultState {
    requestId?: string;
  }
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
// Docker and nginx probe these every few seconds; a healthy answer is not worth a log line.
const PROBES = new Set(['/healthz', '/readyz']);

/** The request's id and its log line (requestFrame's). */
export interface RequestLog {
  /** The request's id, from nginx or new: on ctx.state and the X-Request-Id header. */
  begin(ctx: Context): void;
  /** The log line, when the level and the time call for one. */
  end(ctx: Context, ms: number): void;
}

export function requestLog(logger: Logger, slowMs: number): RequestLog {
  return {
    begin(ctx) {
      const incoming = ctx.get('x-request-id');
      const requestId = REQUEST_ID.test(incoming) ? incoming : randomUUID().replaceAll('-', '');
      ctx.state.requestId = requestId;
      ctx.set('X-Request-Id', requestId);
    },
    end(ctx, elapsed) {
      const ms = Math.round(elapsed * 100) / 100;
      const level = ms >= slowMs ? 'info' : 'debug';
      if (logger.isLevelEnabled(level) && !(PROBES.has(ctx.path) && ctx.status < 300)) {
        logger[level]({ request_id: ctx.state.requestId, method: ctx.method, path: ctx.path, status: ctx.status, ms, ip: ctx.ip }, level === 'info' ? 'slow request' : 'request');
      }
    },
  };
}
