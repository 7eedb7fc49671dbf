// The outbox as ops see it: what is pending and failed (the CLI's `webhooks status`, the metrics),
// sending again (`webhooks retry`), and the clean-up flushexpiredtokens runs.
import { fn, col, Op, type WhereOptions } from 'sequelize';
import type { WebhookEndpoint } from '../config';
import type { Database } from '../db/database';
import type { WebhookOutboxAttributes } from '../db/models';

export interface PendingStats {
  pending: number;
  failed: number;
  /** Seconds since the oldest pending row was written; 0 when none is pending. */
  oldestPendingSeconds: number;
}

/** Counts from the partial indexes only (the metrics read this at every scrape). */
export async function pendingStats(db: Database, now: Date): Promise<PendingStats> {
  const { WebhookOutbox } = db.models;
  const [pending, failed] = await Promise.all([
    WebhookOutbox.scope('pending').findOne({ attributes: [[fn('count', col('id')), 'count'], [fn('min', col('created_at')), 'oldest']], raw: true }),
    WebhookOutbox.count({ where: { status: 'failed' } }),
  ]);
  const row = pending as unknown as { count: string | number; oldest: Date | string | null } | null; // raw aggregate row
  const oldest = row?.oldest ? new Date(row.oldest).getTime() : undefined;
  return {
    pending: Number(row?.count ?? 0),
    failed,
    oldestPendingSeconds: oldest === undefined ? 0 : Math.max(0, (now.getTime() - oldest) / 1000),
  };
}

export interface EndpointStatus {
  endpoint: string;
  /** The receiver's URL without credentials or query, or a note when this configuration does not name it. */
  receiver: string;
  pending: number;
  failed: number;
  delivered: number;
}

/** The URL as it may be shown: no user, password or query string. */
export function displayUrl(url: string): string {
  const u = new URL(url);
  return `${u.origin}${u.pathname}`;
}

/** Rows by receiver and status (for `webhooks status`). */
export async function statusByEndpoint(db: Database, endpoints: readonly WebhookEndpoint[]): Promise<EndpointStatus[]> {
  const rows = (await db.models.WebhookOutbox.findAll({
    attributes: ['endpoint', 'status', [fn('count', col('id')), 'count']],
    group: ['endpoint', 'status'],
    raw: true,
  })) as unknown as { endpoint: string; status: string; count: string }[]; // raw aggregate rows
  const known = new Map(endpoints.map((e) => [e.key, displayUrl(e.url)]));
  const out = new Map<string, EndpointStatus>();
  for (const e of endpoints) out.set(e.key, { endpoint: e.key, receiver: known.get(e.key)!, pending: 0, failed: 0, delivered: 0 });
  for (const r of rows) {
    const s = out.get(r.endpoint) ?? { endpoint: r.endpoint, receiver: '(not in this WEBHOOK_URL)', pending: 0, failed: 0, delivered: 0 };
    s[r.status as 'pending' | 'failed' | 'delivered'] = Number(r.count);
    out.set(r.endpoint, s);
  }
  return [...out.values()];
}

/**
 * Sends again now: pending rows waiting out a backoff; with `failed`, failed rows too, with a new
 * WEBHOOK_MAX_AGE from now. Returns how many rows were made due.
 */
export async function retryEvents(db: Database, now: Date, options: { failed: boolean }): Promise<{ pending: number; failed: number }> {
  const { WebhookOutbox } = db.models;
  const [pending] = await WebhookOutbox.update({ nextAttemptAt: now }, { where: { status: 'pending', nextAttemptAt: { [Op.gt]: now } } });
  const [failed] = options.failed
    ? await WebhookOutbox.update({ status: 'pending', nextAttemptAt: now, retryFrom: now }, { where: { status: 'failed' } })
    : [0];
  return { pending, failed };
}

// A row past its deadline whose receiver's delivery process would have failed it by now (its last
// attempt is made at the deadline): its receiver is no longer configured anywhere.
const OVERDUE_GRACE_MS = 3600_000;

/** Fails pending rows more than an hour past their deadline (no delivery process takes them). */
export async function expireOverdue(db: Database, now: Date, maxAgeMs: number): Promise<number> {
  const [count] = await db.models.WebhookOutbox.update(
    { status: 'failed', lastError: 'past WEBHOOK_MAX_AGE with no delivery process for its receiver' },
    { where: { status: 'pending', retryFrom: { [Op.lte]: new Date(now.getTime() - maxAgeMs - OVERDUE_GRACE_MS) } } },
  );
  return count;
}

/** Failed rows are kept this long for `webhooks retry --failed`. */
export const FAILED_RETENTION_MS = 30 * 86400_000;

/** Deletes delivered rows, and failed ones older than FAILED_RETENTION_MS, in batches (flushexpiredtokens). */
export async function pruneOutbox(db: Database, now: Date, batchSize = 5000): Promise<{ delivered: number; failed: number }> {
  const { WebhookOutbox } = db.models;
  const drain = async (where: WhereOptions<WebhookOutboxAttributes>) => {
    let total = 0;
    for (let deleted = batchSize; deleted === batchSize; total += deleted) deleted = await WebhookOutbox.destroy({ where, limit: batchSize });
    return total;
  };
  return {
    delivered: await drain({ status: 'delivered' }),
    failed: await drain({ status: 'failed', createdAt: { [Op.lte]: new Date(now.getTime() - FAILED_RETENTION_MS) } }),
  };
}
