// The example protected API: who am I. Add your own routes beside it, behind the same guard.
import type Router from '@koa/router';
import type { Middleware } from 'koa';
import { requireUser } from '../auth/guard';
import type { Database } from '../db/database';
import { endpoint } from '../http/endpoint';
import { sendJson } from '../http/respond';

export function apiRoutes(router: Router, deps: { db: Database; guard: Middleware }): void {
  // Authentication comes before the method check, as in DRF: POST without a token is 401, with one 405.
  router.all(
    '/api/me',
    deps.guard,
    requireUser(deps.db),
    endpoint({
      GET: (ctx) => {
        const user = ctx.state.user!;
        sendJson(ctx, 200, { id: user.id, username: user.username });
      },
    }),
  );
}
