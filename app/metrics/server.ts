// Process entry of the metrics collector, a PM2 app beside the workers (ecosystem.config.js): GET
// /metrics on METRICS_PORT, the whole container in one scrape (collector.ts). The port is the
// container's own: compose never publishes it and nginx never proxies to it.
import http from 'node:http';
import { ConfigError, loadCollectorConfig } from '../config';
import { createLogger } from '../logger';
import { createCollector } from './collector';

export async function main(): Promise<void> {
  let config;
  try {
    config = loadCollectorConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw err;
  }
  const logger = createLogger(config.logLevel, { component: 'metrics' });
  const collector = createCollector({
    dir: config.socketDir,
    onError: (err, worker) => logger.warn({ worker, err: err.message }, 'a worker did not answer the scrape'),
  });
  const server = http.createServer((req, res) => {
    if (req.url !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
      return;
    }
    collector.scrape().then(
      (text) => res.writeHead(200, { 'Content-Type': collector.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (err: unknown) => {
        logger.error({ err }, 'scrape failed');
        res.writeHead(500, { 'Content-Type': 'text/plain' }).end('scrape failed\n');
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  logger.info({ address: server.address(), socketDir: config.socketDir }, 'metrics collector listening');
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`metrics collector failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
