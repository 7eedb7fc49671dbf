// One resource path: its method handlers, `Allow` on every response, 405 for other methods and a bare
// 204 for OPTIONS (no DRF metadata).
import type { Middleware } from 'koa';
import { ApiError } from './errors';

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export function endpoint(handlers: Partial<Record<Method, Middleware>>): Middleware {
  const methods = Object.keys(handlers) as Method[];
  const allowed = [...methods, ...(methods.includes('GET') ? ['HEAD'] : []), 'OPTIONS'];
  const allow = allowed.join(', ');
  return async function dispatch(ctx, next) {
    ctx.set('Allow', allow);
    ctx.set('Vary', 'Accept');
    const method = ctx.method === 'HEAD' ? 'GET' : (ctx.method as Method);
    const handler = handlers[method];
    if (handler) return handler(ctx, next);
    if (ctx.method === 'OPTIONS') {
      ctx.status = 204;
      return;
    }
    throw new ApiError(405, { detail: `Method "${ctx.method}" not allowed.` });
  };
}
