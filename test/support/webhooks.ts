// Helpers for the webhook tests: a secret, a delivery process in this process (its own pool, as
// another container's would be), and the outbox as the tests read it.
import { randomBytes } from 'node:crypto';
import type { WebhookSettings } from '../../app/config';
import { createDatabase, type Database } from '../../app/db/database';
import { createDelivery, type Delivery, type DeliveryOutcome } from '../../app/events/delivery';
import { outboxSettings } from '../../app/events/outbox';
import { createSender } from '../../app/events/send';
import { createLogger } from '../../app/logger';

export const newSecret = (): string => `whsec_${randomBytes(32).toString('base64')}`;

export interface TestDelivery extends Delivery {
  db: Database;
  outcomes: DeliveryOutcome[];
  close(): Promise<void>;
}

/** A delivery process on its own pool, with the test's clock and settings. */
export function testDelivery(databaseUrl: string, settings: WebhookSettings, clock: () => number, options: { random?: () => number } = {}): TestDelivery {
  const db = createDatabase({ url: databaseUrl, poolMax: 3, outbox: outboxSettings(settings) });
  const send = createSender({ timeoutMs: settings.timeoutMs, connectTimeoutMs: settings.connectTimeoutMs, clock });
  const outcomes: DeliveryOutcome[] = [];
  const delivery = createDelivery({
    db,
    settings,
    send,
    clock,
    logger: createLogger('silent'),
    count: (o) => outcomes.push(o),
    ...(options.random ? { random: options.random } : {}),
  });
  return {
    ...delivery,
    db,
    outcomes,
    async close() {
      await delivery.stop();
      send.close();
      await db.close();
    },
  };
}

/** Runs batches until nothing is due (a user's next event becomes due when the one before is sent). */
export async function drain(delivery: Delivery): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await delivery.runBatch();
    if (n === 0) return total;
    total += n;
  }
}

export interface OutboxRow {
  id: string;
  message_id: string;
  type: string;
  user_id: number | null;
  body: string;
  status: string;
  attempts: number;
}

export const outboxRows = (db: Database): Promise<OutboxRow[]> =>
  db.rows<OutboxRow>('SELECT id, message_id, type, user_id, body, status, attempts FROM webhook_outbox ORDER BY id', []);
