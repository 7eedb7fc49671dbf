// Liveness and readiness, for nginx, Docker, PM2 and orchestrators.
import type Router from '@koa/router';
import type { RevocationFeed } from '../auth/revocations';
import type { Clock } from '../auth/tokens';
import type { Database } from '../db/database';
import { endpoint } from './endpoint';
import type { ErrorCode } from './errors';
import { sendJson } from './respond';

const READY_TIMEOUT_MS = 2_000;
// Readiness is answered from a result at most this old, and one check runs at a time, so a flood of
// /readyz (it is reachable through nginx, for load balancers) costs the database nothing more.
const READY_CACHE_MS = 1_000;

export interface Readiness {
  ready: boolean;
  database: 'ok' | 'unavailable';
  /** The LISTEN connection that brings revocations: without it this worker could miss a logout. */
  revocations: 'ok' | 'reconnecting';
}

export interface ReadinessDeps {
  db: Pick<Database, 'checkPrimary'>;
  feed: Pick<RevocationFeed, 'connected'>;
  clock: Clock;
}

/** Readiness from a short-lived cached result, with at most one database check in flight. */
export function createReadinessCheck({ db, feed, clock }: ReadinessDeps): () => Promise<Readiness> {
  let last: { at: number; database: Readiness['database'] } | undefined;
  let inFlight: Promise<Readiness['database']> | undefined;

  async function probe(): Promise<Readiness['database']> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('timed out')), READY_TIMEOUT_MS);
    });
    try {
      // A primary: a server still in recovery (the name moved to a standby not yet promoted) answers
      // reads but cannot take a login, a refresh or a logout.
      await Promise.race([db.checkPrimary(), timeout]);
      return 'ok';
    } catch {
      return 'unavailable';
    } finally {
      clearTimeout(timer);
    }
  }

  return async function readiness(): Promise<Readiness> {
    if (!last || clock() - last.at >= READY_CACHE_MS) {
      inFlight ??= probe().finally(() => (inFlight = undefined));
      last = { at: clock(), database: await inFlight };
    }
    const revocations = feed.connected() ? 'ok' : 'reconnecting';
    return { ready: last.database === 'ok' && revocations === 'ok', database: last.database, revocations };
  };
}

export function healthRoutes(router: Router, deps: ReadinessDeps): void {
  const readiness = createReadinessCheck(deps);
  // Alive: the event loop answers. No dependency is checked, so a database outage never gets a
  // healthy worker restarted.
  router.all('/healthz', endpoint({ GET: (ctx) => sendJson(ctx, 200, { status: 'ok' }) }));
  router.all(
    '/readyz',
    endpoint({
      GET: async (ctx) => {
        const r = await readiness();
        if (r.ready) return sendJson(ctx, 200, { status: 'ok', database: r.database, revocations: r.revocations });
        const detail = r.database === 'ok' ? 'The revocation feed is reconnecting.' : 'The database is not answering.';
        const code: ErrorCode = r.database === 'ok' ? 'revocations_unavailable' : 'database_unavailable';
        sendJson(ctx, 503, { detail, code, database: r.database, revocations: r.revocations });
      },
    }),
  );
}
