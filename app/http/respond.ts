import type { Context } from 'koa';

/** A JSON response as the reference sends it: `Content-Type: application/json`, no charset. */
export function sendJson(ctx: Context, status: number, body: unknown): void {
  ctx.status = status;
  ctx.set('Content-Type', 'application/json');
  ctx.body = JSON.stringify(body);
}
