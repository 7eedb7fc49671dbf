// The delivery process's work (server.ts runs it under PM2, one per container; never in a request):
// take due outbox rows, send them, record what became of each.
//
// - Shared outbox: a batch is claimed with SELECT … FOR UPDATE SKIP LOCKED inside a transaction that
//   stays open while its requests are in flight, so several delivery processes (containers) never take
//   one row at once, and a process that dies mid-batch (its connection closes, the transaction rolls
//   back) leaves its rows to be taken again. At least once: a receiver may see an event twice, always
//   under the same webhook-id.
// - Order per user (or machine client), per receiver: a row is taken only when no earlier row of its
//   subject to that receiver is still pending, so a user's events arrive in the order they were
//   written. That is the order of the changes where it matters: a session's end is written after its
//   login committed, the changes to one account (login, logout-all, password change, deactivation)
//   lock the user's row, and a client's deletion waits for its grants in flight.
// - Failures retry with exponential backoff and jitter (a receiver's Retry-After is honoured), for
//   WEBHOOK_MAX_AGE; then the row is marked failed (`webhooks retry --failed` sends it again).
import { Op, literal } from 'sequelize';
import type { Logger } from 'pino';
import { announceEndedSessions } from '../auth/sessions';
import type { WebhookSettings } from '../config';
import type { Database } from '../db/database';
import type { WebhookOutboxRow } from '../db/models';
import { expireOverdue } from './admin';
import type { Attempt, Send } from './send';
import { createSigner } from './signing';

export type DeliveryOutcome = 'delivered' | 'retried' | 'failed';

export interface DeliveryDeps {
  db: Database;
  settings: WebhookSettings;
  send: Send;
  clock: () => number;
  logger: Logger;
  /** Counts each attempt's outcome (webhook_deliveries_total). */
  count?: (outcome: DeliveryOutcome) => void;
  /** In [0, 1): the jitter. */
  random?: () => number;
  /** How often ended sessions are looked for and overdue rows failed (ms of `clock`). */
  housekeepingMs?: number;
}

/**
 * When to try again after `attempts` failed attempts, or null to give up: the wait doubles from
 * `retryBaseMs` up to `retryMaxMs`, drawn between half of it and all of it ("equal jitter", so a
 * crowd of failures spreads out), at least what the receiver asked for, and never past the deadline
 * (`retryFrom + maxAgeMs`), where one last attempt is made.
 */
export function nextAttemptAt(
  attempts: number,
  now: number,
  retryFrom: number,
  s: Pick<WebhookSettings, 'retryBaseMs' | 'retryMaxMs' | 'maxAgeMs'>,
  random: () => number,
  retryAfter?: number,
): number | null {
  const deadline = retryFrom + s.maxAgeMs;
  if (now >= deadline) return null;
  const ceiling = Math.min(s.retryMaxMs, s.retryBaseMs * 2 ** Math.min(Math.max(attempts - 1, 0), 40));
  let wait = ceiling / 2 + (random() * ceiling) / 2;
  if (retryAfter !== undefined) wait = Math.max(wait, Math.min(retryAfter, s.retryMaxMs));
  return Math.min(now + Math.round(wait), deadline);
}

// Held back while an earlier row of its subject to its receiver is pending (delivered or failed ones
// do not hold anything back; rows with no subject, as a failed login for a name nobody has, are not
// ordered).
const NO_EARLIER_PENDING = literal(`NOT EXISTS (
  SELECT 1 FROM webhook_outbox e WHERE e.endpoint = "WebhookOutbox".endpoint AND e.subject = "WebhookOutbox".subject
    AND e.status = 'pending' AND e.id < "WebhookOutbox".id)`);

const HOUSEKEEPING_MS = 60_000;

export interface Delivery {
  /** Claims one batch of due rows, sends them, records the outcomes; the number of rows taken. */
  runBatch(): Promise<number>;
  /** Announces sessions that reached their end; fails rows past their deadline. */
  housekeeping(): Promise<void>;
  /** Runs batches until stop(): at once while there is work, else every WEBHOOK_POLL_INTERVAL. */
  start(): void;
  /** Lets the batch in flight finish (its requests time out at WEBHOOK_TIMEOUT), then stops. */
  stop(): Promise<void>;
}

export function createDelivery(deps: DeliveryDeps): Delivery {
  const { db, settings, send, clock, logger } = deps;
  const { WebhookOutbox } = db.models;
  const sign = createSigner(settings.secrets);
  const urls = new Map(settings.endpoints.map((e) => [e.key, e.url]));
  const random = deps.random ?? Math.random;
  const housekeepingMs = deps.housekeepingMs ?? HOUSEKEEPING_MS;

  async function attempt(row: WebhookOutboxRow): Promise<Attempt> {
    // The attempt's time, signed (receivers refuse stale ones); the event's own time is in the body.
    return send(urls.get(row.endpoint)!, { ...sign(row.messageId, new Date(clock()), row.body) }, row.body);
  }

  function settle(row: WebhookOutboxRow, result: Attempt, at: number): { outcome: DeliveryOutcome; fields: Partial<WebhookOutboxRow> } {
    const attempts = row.attempts + 1;
    const common = { attempts, lastAttemptAt: new Date(at) };
    if (result.ok) return { outcome: 'delivered', fields: { ...common, status: 'delivered', deliveredAt: new Date(at), lastError: null } };
    const lastError = result.error.slice(0, 512);
    const next = nextAttemptAt(attempts, at, row.retryFrom.getTime(), settings, random, result.retryAfterMs);
    if (next === null) return { outcome: 'failed', fields: { ...common, status: 'failed', lastError } };
    return { outcome: 'retried', fields: { ...common, nextAttemptAt: new Date(next), lastError } };
  }

  async function runBatch(): Promise<number> {
    if (urls.size === 0) return 0;
    return db.sequelize.transaction(async (transaction) => {
      const rows = await WebhookOutbox.findAll({
        where: { status: 'pending', endpoint: [...urls.keys()], nextAttemptAt: { [Op.lte]: new Date(clock()) }, [Op.and]: [NO_EARLIER_PENDING] },
        order: [['id', 'ASC']],
        limit: settings.batchSize,
        lock: transaction.LOCK.UPDATE,
        skipLocked: true,
        transaction,
      });
      const results = await Promise.all(rows.map(attempt));
      const at = clock();
      for (const [i, row] of rows.entries()) {
        const { outcome, fields } = settle(row, results[i]!, at);
        await row.update(fields, { transaction });
        deps.count?.(outcome);
        if (outcome !== 'delivered') {
          const log = { message_id: row.messageId, type: row.type, endpoint: row.endpoint, attempts: fields.attempts, error: fields.lastError };
          if (outcome === 'failed') logger.error(log, 'webhook failed: giving up');
          else logger.warn({ ...log, next_attempt_at: fields.nextAttemptAt }, 'webhook attempt failed');
        }
      }
      return rows.length;
    });
  }

  let lastSweep: number | undefined;
  async function housekeeping(): Promise<void> {
    const now = new Date(clock());
    // The first sweep of the process looks at everything; later ones at what expired since the one
    // before (less a margin for the clocks of other containers).
    const since = lastSweep === undefined ? undefined : new Date(lastSweep - housekeepingMs);
    const announced = await announceEndedSessions(db, now, since ? { since } : {});
    lastSweep = now.getTime();
    if (announced) logger.info({ sessions: announced }, 'ended sessions announced');
    const expired = await expireOverdue(db, now, settings.maxAgeMs);
    if (expired) logger.error({ rows: expired }, 'webhooks past WEBHOOK_MAX_AGE marked failed (a receiver no longer configured?)');
  }

  let stopping = false;
  let running: Promise<void> | undefined;
  let wake: (() => void) | undefined;
  const idle = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  async function loop(): Promise<void> {
    let nextHousekeeping = clock();
    let failures = 0;
    while (!stopping) {
      let took: number;
      try {
        if (clock() >= nextHousekeeping) {
          nextHousekeeping = clock() + housekeepingMs;
          await housekeeping();
        }
        took = await runBatch();
        failures = 0;
      } catch (err) {
        // The database is away (or a statement failed): nothing was recorded, the rows stay pending.
        failures += 1;
        logger.error({ err }, 'webhook delivery batch failed; retrying');
        await idle(Math.min(settings.pollMs * 2 ** failures, 10_000));
        continue;
      }
      // A full batch, or a delivery that may have let a user's next event go: look again at once.
      if (took === 0 && !stopping) await idle(settings.pollMs);
    }
  }

  return {
    runBatch,
    housekeeping,
    start() {
      running ??= loop();
    },
    async stop() {
      stopping = true;
      wake?.();
      await running;
    },
  };
}
