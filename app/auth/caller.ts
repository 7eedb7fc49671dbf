import type { Context } from 'koa';
import type { Client } from './families';

/**
 * Who is calling, for the session list and the security events: ctx.ip is the address the trusted
 * proxy saw (TRUST_PROXY_HOPS); the request id ties an event to the logs.
 */
export const clientOf = (ctx: Context): Client => ({
  userAgent: ctx.get('User-Agent').slice(0, 512),
  ip: ctx.ip.slice(0, 64),
  requestId: ctx.state.requestId,
});
