// A warning for the deployment that forgot TRUST_PROXY_HOPS: behind a proxy, with no hop trusted,
// every client has the proxy's address, so the per-address login throttle treats them as one.
import type { Middleware } from 'koa';
import type { Logger } from 'pino';

export function untrustedProxyWarning(logger: Logger): Middleware {
  let warned = false;
  return async function warnOnce(ctx, next) {
    if (!warned && ctx.get('x-forwarded-for') !== '') {
      warned = true;
      logger.warn(
        { remote_address: ctx.request.socket.remoteAddress },
        'requests arrive with X-Forwarded-For but TRUST_PROXY_HOPS is 0: every client shares the proxy\'s address in the login throttle; set TRUST_PROXY_HOPS to the number of proxies in front (1 behind our nginx)',
      );
    }
    await next();
  };
}
