// The webhook delivery process's metrics (app/events/server.ts), read by the container's collector
// like a worker's (report.ts): `shared` holds the delivery outcomes (summed, and kept when the
// process is replaced) and the outbox's backlog (read from the database at each scrape: the whole
// outbox, which every container shares, so Prometheus takes the max over containers); `own` its Node
// metrics, labelled worker="webhooks".
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { DeliveryOutcome } from '../events/delivery';
import type { PendingStats } from '../events/admin';
import type { WorkerIdentity } from './worker';

export function createDeliveryMetrics(identity: WorkerIdentity, sources: { stats: () => Promise<PendingStats> }) {
  const shared = new Registry();
  const own = new Registry();
  own.setDefaultLabels({ worker: identity.worker, pid: String(identity.pid) });
  collectDefaultMetrics({ register: own });

  const deliveries = new Counter({
    name: 'webhook_deliveries_total',
    help: 'Webhook delivery attempts by outcome: delivered (2xx), retried (failed, tried again later), failed (the last attempt failed: given up).',
    labelNames: ['outcome'] as const,
    registers: [shared],
  });
  for (const o of ['delivered', 'retried', 'failed'] satisfies DeliveryOutcome[]) deliveries.inc({ outcome: o }, 0);

  // One query serves the gauges of a scrape. The database away: they keep their last values.
  let last: { at: number; stats: Promise<PendingStats | undefined> } | undefined;
  const read = () => {
    const now = Date.now();
    if (!last || now - last.at > 1000) last = { at: now, stats: sources.stats().catch(() => undefined) };
    return last.stats;
  };
  const backlog = (name: string, help: string, pick: (s: PendingStats) => number) =>
    new Gauge({
      name,
      help,
      aggregator: 'max',
      registers: [shared],
      async collect() {
        const s = await read();
        if (s) this.set(pick(s));
      },
    });
  backlog('webhook_outbox_pending', 'Webhook rows (event × receiver) not yet delivered nor given up, in the whole outbox.', (s) => s.pending);
  backlog('webhook_outbox_oldest_pending_seconds', 'Age of the oldest webhook row not yet delivered nor given up (0 when none).', (s) => s.oldestPendingSeconds);
  backlog('webhook_outbox_failed', 'Webhook rows given up after WEBHOOK_MAX_AGE, kept for `webhooks retry --failed`.', (s) => s.failed);

  return {
    shared,
    own,
    delivery: (outcome: DeliveryOutcome) => deliveries.inc({ outcome }),
  };
}

export type DeliveryMetrics = ReturnType<typeof createDeliveryMetrics>;
