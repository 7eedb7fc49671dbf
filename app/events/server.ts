// Process entry of the webhook delivery process, a PM2 app beside the workers (ecosystem.config.js
// starts it when WEBHOOK_URL is set; one per container, and any number of containers share the
// outbox). Requests never deliver anything: they only write the outbox, and this process sends.
// SIGINT/SIGTERM let the batch in flight finish; a kill mid-batch only means those rows go again.
import { createDatabase } from '../db/database';
import { createLogger } from '../logger';
import { createDeliveryMetrics } from '../metrics/delivery';
import { serveReport } from '../metrics/report';
import { loadConfigOrExit, startOrExit, stopOnSignal } from '../process';
import { pendingStats } from './admin';
import { createDelivery } from './delivery';
import { outboxSettings } from './outbox';
import { createSender } from './send';

export async function run(): Promise<void> {
  const loaded = loadConfigOrExit(process.env);
  const { config, warnings } = loaded;
  const logger = createLogger(config.logLevel, { component: 'webhooks' });
  for (const warning of warnings) logger.warn(warning);
  const settings = config.webhooks;
  if (settings.endpoints.length === 0) {
    process.stderr.write('WEBHOOK_URL is not set: there is nothing to deliver\n');
    process.exit(78);
  }
  const clock = Date.now;
  // One connection for the batch's transaction, one for the metrics' reads, one for housekeeping.
  const db = createDatabase({
    url: config.databaseUrl,
    poolMax: 3,
    applicationName: 'koa-auth-stack webhooks',
    // A database that vanished mid-statement (a failover) is given up on, not waited for.
    queryTimeoutMs: config.dbQueryTimeoutMs,
    outbox: outboxSettings(settings),
  });
  const identity = { worker: 'webhooks', pid: process.pid };
  const metrics = createDeliveryMetrics(identity, { stats: () => pendingStats(db, new Date(clock())) });
  const report = config.metricsSocketDir ? await serveReport(config.metricsSocketDir, identity, metrics) : undefined;
  const send = createSender({ timeoutMs: settings.timeoutMs, connectTimeoutMs: settings.connectTimeoutMs, clock });
  const delivery = createDelivery({ db, settings, send, clock, logger, count: metrics.delivery });
  delivery.start();
  logger.info({ receivers: settings.endpoints.length, events: [...settings.events] }, 'webhook delivery started');

  stopOnSignal(logger, { stopping: 'webhook delivery stopping', stopped: 'webhook delivery stopped' }, async () => {
    await delivery.stop();
    await report?.close(); // after the last batch: its final counts
    send.close();
    await db.close();
  });
}

export function main(): void {
  startOrExit(run, 'webhook delivery');
}

if (require.main === module) main();
