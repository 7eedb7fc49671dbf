// One worker's metrics, in two registries. `shared`: what the container's scrape sums over the
// workers (requests, security outcomes, the database pool). `own`: what belongs to this process
// alone (Node's default metrics, the revocation feed, the requests this worker served), labelled with
// `worker` (PM2's instance number) and `pid`, and never summed. The collector (collector.ts) reads
// both from every worker and merges them into one scrape.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import {
  API_REVOCATION_REASONS,
  CLIENT_GRANT_OUTCOMES,
  LOGIN_OUTCOMES,
  REFRESH_OUTCOMES,
  type ClientGrantOutcome,
  type LoginOutcome,
  type RefreshOutcome,
  type RevocationReason,
} from '../auth/outcomes';
import type { PoolStats } from '../db/pool';

/** What the revocation feed tells about itself (app/auth/revocations.ts). */
export interface FeedStats {
  connected(): boolean;
  /** When the feed last heard from Postgres (epoch ms): a load, a notification, a round-trip. */
  lastContact(): number | undefined;
}

export interface WorkerIdentity {
  worker: string;
  pid: number;
}

/** What answered a revocation check the feed could not vouch for (app/auth/revocation-check.ts). */
export type UnvouchedSource = 'database' | 'memory';

// Seconds; from a cached-token GET (~1 ms) to a login under load (hashing, ~0.1–1 s).
const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function createWorkerMetrics(identity: WorkerIdentity, sources: { pool: () => PoolStats | undefined; feed: FeedStats; clock: () => number }) {
  const shared = new Registry();
  const own = new Registry();
  own.setDefaultLabels({ worker: identity.worker, pid: String(identity.pid) });
  collectDefaultMetrics({ register: own });

  const requests = new Counter({
    name: 'http_requests_total',
    help: 'HTTP requests answered by the app, by method, route template and status.',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [shared],
  });
  const duration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'Time from the request reaching the app to its response, by method and route template.',
    labelNames: ['method', 'route'] as const,
    buckets: DURATION_BUCKETS,
    registers: [shared],
  });
  const served = new Counter({
    name: 'http_worker_requests_total',
    help: 'HTTP requests this worker answered (PM2 balance).',
    registers: [own],
  });
  const logins = new Counter({
    name: 'auth_logins_total',
    help: 'Logins (POST /api/token/) by outcome.',
    labelNames: ['outcome'] as const,
    registers: [shared],
  });
  const refreshes = new Counter({
    name: 'auth_refreshes_total',
    help: 'Refreshes (POST /api/token/refresh/) by outcome; "reused" is a replayed rotated token, "reissued" one presented again within REFRESH_REUSE_INTERVAL.',
    labelNames: ['outcome'] as const,
    registers: [shared],
  });
  const clientGrants = new Counter({
    name: 'auth_client_grants_total',
    help: 'Machine clients\' token requests (POST /api/oauth/token/, client credentials) by outcome: success or the OAuth error.',
    labelNames: ['outcome'] as const,
    registers: [shared],
  });
  const revocations = new Counter({
    name: 'auth_revocations_total',
    help: 'Sessions revoked through the API, by reason.',
    labelNames: ['reason'] as const,
    registers: [shared],
  });
  // Every outcome from the start, so rate() has a zero to start from instead of a missing series.
  for (const o of LOGIN_OUTCOMES) logins.inc({ outcome: o }, 0);
  for (const o of CLIENT_GRANT_OUTCOMES) clientGrants.inc({ outcome: o }, 0);
  for (const o of REFRESH_OUTCOMES) refreshes.inc({ outcome: o }, 0);
  for (const r of API_REVOCATION_REASONS) revocations.inc({ reason: r }, 0);

  const pool = (name: string, help: string, read: (p: PoolStats) => number) =>
    new Gauge({
      name,
      help,
      registers: [shared],
      collect() {
        const p = sources.pool();
        this.set(p ? read(p) : 0);
      },
    });
  pool('db_pool_connections_in_use', 'Database connections lent out of the pools now.', (p) => p.using);
  pool('db_pool_connections_idle', 'Open database connections waiting in the pools.', (p) => p.available);
  pool('db_pool_waiting_requests', 'Queries waiting for a database connection.', (p) => p.waiting);
  pool('db_pool_connections_max', 'The pools\' connection limit (DB_POOL_MAX per worker).', (p) => p.maxSize);

  new Gauge({
    name: 'auth_revocation_feed_up',
    help: '1 while this worker\'s revocation feed (LISTEN on Postgres) is connected and loaded, else 0.',
    registers: [own],
    collect() {
      this.set(sources.feed.connected() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'auth_revocation_feed_last_contact_age_seconds',
    help: 'Seconds since this worker\'s revocation feed last heard from Postgres (state load, notification or round-trip).',
    registers: [own],
    collect() {
      const at = sources.feed.lastContact();
      // Never heard: as old as the process, so an alert on the age still fires.
      this.set(at === undefined ? process.uptime() : Math.max(0, (sources.clock() - at) / 1000));
    },
  });

  const unvouched = new Counter({
    name: 'auth_revocation_unvouched_checks_total',
    help:
      'Access-token revocation checks this worker made while its revocation feed could not vouch for its memory (silent past its bound), ' +
      'by what answered: the database, or memory alone (the database did not answer either).',
    labelNames: ['answered_by'] as const,
    registers: [own],
  });
  for (const a of ['database', 'memory'] satisfies UnvouchedSource[]) unvouched.inc({ answered_by: a }, 0);

  // Children by label values: the hot path looks one up (method, then route, then status: no key
  // string built per request) instead of hashing a label object per request.
  type Children = { count: Counter.Internal; time: Histogram.Internal<'method' | 'route'> };
  const requestChildren = new Map<string, Map<string, Map<number, Children>>>();

  return {
    shared,
    own,
    /** One answered request. */
    request(method: string, route: string, status: number, seconds: number): void {
      let byRoute = requestChildren.get(method);
      if (!byRoute) requestChildren.set(method, (byRoute = new Map()));
      let byStatus = byRoute.get(route);
      if (!byStatus) byRoute.set(route, (byStatus = new Map()));
      let child = byStatus.get(status);
      if (!child) {
        child = { count: requests.labels(method, route, String(status)), time: duration.labels(method, route) };
        byStatus.set(status, child);
      }
      child.count.inc();
      child.time.observe(seconds);
      served.inc();
    },
    login: (outcome: LoginOutcome) => logins.inc({ outcome }),
    refresh: (outcome: RefreshOutcome) => refreshes.inc({ outcome }),
    revocation: (reason: RevocationReason) => revocations.inc({ reason }),
    unvouchedCheck: (source: UnvouchedSource) => unvouched.inc({ answered_by: source }),
    clientGrant: (outcome: ClientGrantOutcome) => clientGrants.inc({ outcome }),
  };
}

export type WorkerMetrics = ReturnType<typeof createWorkerMetrics>;
