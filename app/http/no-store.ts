// RFC 6749 §5.1: token responses (and anything else carrying credentials) must not be cached.
import type { Middleware } from 'koa';

export const NO_STORE_HEADERS = { 'Cache-Control': 'no-store', Pragma: 'no-cache' } as const;

/** Marks the route's answer, whatever it is, as not to be stored. */
export const noStore: Middleware = async (ctx, next) => {
  await next();
  ctx.set(NO_STORE_HEADERS);
};
