// The one outer layer every request passes: its id and the security headers, the error answer (or
// the 404 when nothing answered), then the metrics and the log line, in that order, written in one
// place. One async layer rather than four (each a promise, a bound dispatch and a closure per
// request under koa-compose); the CPU it saved was within the noise (docs/PERFORMANCE.md).
import type { Context, Middleware } from 'koa';
import type { ErrorAnswers } from './errors';
import type { RequestLog } from './logging';
import { SECURITY_HEADERS } from './security-headers';

export interface FrameParts {
  log: RequestLog;
  errors: ErrorAnswers;
  record: (ctx: Context, seconds: number) => void;
}

const SECURITY_HEADER_LIST = Object.entries(SECURITY_HEADERS);

export function requestFrame({ log, errors, record }: FrameParts): Middleware {
  return async function frame(ctx, next) {
    const started = performance.now();
    log.begin(ctx);
    for (const [name, value] of SECURITY_HEADER_LIST) ctx.res.setHeader(name, value);
    try {
      try {
        await next();
        errors.finish(ctx);
      } catch (err) {
        errors.fail(ctx, err);
      }
    } finally {
      // Before Koa writes the answer: counted and logged with the status the client gets.
      const ms = performance.now() - started;
      record(ctx, ms / 1000);
      log.end(ctx, ms);
    }
  };
}
