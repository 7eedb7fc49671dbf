// The session API: GET /api/sessions/ lists the caller's live sessions (one per login);
// DELETE /api/sessions/<id>/ ends one of them. Another user's session answers 404, like one that does
// not exist, so ids cannot be probed. Both need a recent login (SESSION_REAUTH_AGE; recent-login.ts).
import type Router from '@koa/router';
import type { Middleware } from 'koa';
import type { Database } from '../db/database';
import { endpoint } from '../http/endpoint';
import type { AuthEvents } from './events';
import { notFound } from '../http/errors';
import { noStore } from '../http/no-store';
import { sendJson } from '../http/respond';
import { requireRecentLogin } from './recent-login';
import { clientOf } from './caller';
import { SessionPath } from './schemas';
import { endSession, listSessions } from './sessions';
import type { Clock } from './tokens';

const noSuchSession = notFound;

export interface SessionRouteDeps {
  db: Database;
  guard: Middleware;
  clock: Clock;
  events: AuthEvents;
  /** SESSION_REAUTH_AGE (seconds). */
  reauthAge: number;
}

export function sessionRoutes(router: Router, deps: SessionRouteDeps): void {
  const { db, guard, clock, events, reauthAge } = deps;
  router.all(
    '/api/sessions',
    noStore,
    guard,
    endpoint({
      GET: async (ctx) => {
        const { userId, claims } = ctx.state.auth!;
        requireRecentLogin(claims, clock(), reauthAge);
        sendJson(ctx, 200, await listSessions(db, userId, claims.sid, new Date(clock())));
      },
    }),
  );
  router.all(
    '/api/sessions/:id',
    noStore,
    guard,
    endpoint({
      DELETE: async (ctx) => {
        requireRecentLogin(ctx.state.auth!.claims, clock(), reauthAge);
        const path = SessionPath.safeParse(ctx.params);
        if (!path.success) throw noSuchSession();
        if (!(await endSession(db, ctx.state.auth!.userId, path.data.id, new Date(clock()), clientOf(ctx)))) throw noSuchSession();
        events.revoked(ctx, 'session_ended');
        ctx.status = 204;
      },
    }),
  );
}
