// Process entry of the webhook delivery process, a PM2 app beside the workers (ecosystem.config.js
// starts it when WEBHOOK_URL is set; one per container, and any number of containers share the
// outbox). Requests never deliver anything: they only write the outbox, and this process sends.
// SIGINT/SIGTERM let the batch in flight finish; a kill mid-batch only means those rows go again.
import { ConfigError, loadConfig } from '../config';
import { createDatabase } from '../db/database';
import { createLogger } from '../logger';
import { createDeliveryMetrics } from '../metrics/delivery';
import { serveReport } from '../metrics/report';
import { pendingStats } from './admin';
import { createDelivery } from './delivery';
import { outboxSettings } from './outbox';
import { createSender } from './send';

export async function run(): Promise<void> {
  let loaded;
  try {
    loaded = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw err;
  }
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

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'webhook delivery stopping');
    void (async () => {
      let code = 0;
      try {
        await delivery.stop();
        await report?.close(); // after the last batch: its final counts
        send.close();
        await db.close();
      } catch (err) {
        logger.error({ err }, 'unclean stop');
        code = 1;
      }
      logger.flush(() => process.exit(code));
    })();
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('message', (msg) => {
    if (msg === 'shutdown') shutdown('shutdown message');
  });
}

export function main(): void {
  run().catch((err: unknown) => {
    process.stderr.write(`webhook delivery failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}

if (require.main === module) main();
