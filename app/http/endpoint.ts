// One resource path: its method handlers, `Allow` on every response, 405 for other methods and a bare
// 204 for OPTIONS (no DRF metadata).
import type { Middleware } from 'koa';
import { ApiError } from './errors';

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

// The methods each endpoint serves, so a test can compare the router with the OpenAPI document.
const served = new WeakMap<Middleware, readonly Method[]>();
export const endpointMethods = (middleware: unknown): readonly Method[] | undefined => served.get(middleware as Middleware);

export function endpoint(handlers: Partial<Record<Method, Middleware>>): Middleware {
  const methods = Object.keys(handlers) as Method[];
  const allowed = [...methods, ...(methods.includes('GET') ? ['HEAD'] : []), 'OPTIONS'];
  const allow = allowed.join(', ');
  // Not async: koa-compose turns a throw into a rejection, and the handler's promise is returned as it is.
  const dispatch: Middleware = function dispatch(ctx, next) {
    ctx.set('Allow', allow);
    ctx.vary('Accept'); // added to, not replacing, CORS's Vary: Origin
    const method = ctx.method === 'HEAD' ? 'GET' : (ctx.method as Method);
    const handler = handlers[method];
    if (handler) return handler(ctx, next);
    if (ctx.method === 'OPTIONS') {
      ctx.status = 204;
      return undefined;
    }
    throw new ApiError(405, { detail: `Method "${ctx.method}" not allowed.` });
  };
  served.set(dispatch, methods);
  return dispatch;
}
