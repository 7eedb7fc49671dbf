// Liveness and readiness, for nginx, Docker and PM2.
import type Router from '@koa/router';
import type { Database } from '../db/database';
import { endpoint } from './endpoint';
import { sendJson } from './respond';

const READY_TIMEOUT_MS = 2_000;

export function healthRoutes(router: Router, deps: { db: Database }): void {
  // Alive: the event loop answers. No dependency is checked, so a database outage never gets a
  // healthy worker restarted.
  router.all('/healthz', endpoint({ GET: (ctx) => sendJson(ctx, 200, { status: 'ok' }) }));
  router.all(
    '/readyz',
    endpoint({
      GET: async (ctx) => {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('timed out')), READY_TIMEOUT_MS);
        });
        try {
          await Promise.race([deps.db.sequelize.authenticate(), timeout]);
          sendJson(ctx, 200, { status: 'ok', database: 'ok' });
        } catch {
          sendJson(ctx, 503, { detail: 'The database is not answering.', code: 'database_unavailable' });
        } finally {
          clearTimeout(timer);
        }
      },
    }),
  );
}
