// CORS (@koa/cors) for the origins CORS_ALLOWED_ORIGINS lists, with credentials (the refresh cookie)
// and the cookie transport's header. A preflight from any other origin is refused with a 403: the
// browser then never sends the request, and since the cookie transport needs a custom header, no page
// of another origin can refresh or log out with the cookie.
import cors from '@koa/cors';
import type { Middleware } from 'koa';
import { TRANSPORT_HEADER } from '../auth/cookie';
import { corsOriginNotAllowed } from './errors';

const PREFLIGHT_MAX_AGE_SECONDS = 600;

export function corsPolicy(allowedOrigins: readonly string[]): Middleware {
  const allowed = new Set(allowedOrigins);
  const policy = cors({
    origin(ctx) {
      const origin = ctx.get('Origin');
      if (allowed.has(origin)) return origin;
      if (ctx.method === 'OPTIONS' && origin !== '' && ctx.get('Access-Control-Request-Method') !== '') {
        throw corsOriginNotAllowed();
      }
      return ''; // no CORS headers: a browser keeps the answer from the page
    },
    credentials: true,
    allowMethods: ['GET', 'HEAD', 'POST', 'DELETE'],
    allowHeaders: ['Authorization', 'Content-Type', TRANSPORT_HEADER],
    maxAge: PREFLIGHT_MAX_AGE_SECONDS,
  });
  // A request with no Origin is no CORS request: what @koa/cors does for it (Vary, then on), without
  // the awaits it makes first; most requests (nginx's, mobile apps', services') are such.
  return function corsOrNot(ctx, next) {
    if (ctx.get('Origin') !== '') return policy(ctx, next);
    ctx.vary('Origin');
    return next();
  };
}
