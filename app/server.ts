// Process entry: config → database → listen → tell PM2 we are ready; drain and exit on SIGINT/SIGTERM.
import type http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { createApp } from './app';
import type { Config } from './config';
import type { Database } from './db/database';
import { pendingMigrations } from './db/migrations';
import { createHttpServer, drainServers, listenOnSocket } from './http/listen';
import { createLogger } from './logger';
import { serveReport } from './metrics/report';
import { loadConfigOrExit, startOrExit, stopOnSignal } from './process';
import { createServices } from './services';

/** Waits for the database to answer, retrying with backoff, so a worker never reports ready too early. */
async function waitForDatabase(db: Database, timeoutMs: number, logger: Logger): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 200; ; delay = Math.min(delay * 2, 2_000)) {
    try {
      await db.sequelize.authenticate();
      return;
    } catch (err) {
      if (Date.now() + delay > deadline) throw err;
      logger.warn({ err: (err as Error).message }, 'database not answering yet; retrying');
      await sleep(delay);
    }
  }
}

export async function start(config: Config, logger: Logger, worker = '0'): Promise<{ server: http.Server; stop: () => Promise<void> }> {
  const clock = Date.now;
  const identity = { worker, pid: process.pid };
  const services = createServices(config, logger, clock, { identity });
  await waitForDatabase(services.db, config.dbConnectTimeoutMs, logger);
  // Never serve on a schema older than this release's code: the migrate job runs first (README,
  // "Upgrades"). A failed migration rolled back, so it shows here as pending too.
  const pending = await pendingMigrations(services.db.sequelize);
  if (pending.length) {
    await services.close();
    throw new Error(
      `the database lacks migration${pending.length > 1 ? 's' : ''} ${pending.join(', ')} of this release: run the migrate job first ` +
        '(docker compose run --rm migrate, or npm run migrate); refusing to start',
    );
  }
  // Never serve before the revocation state is loaded: a revoked token must not slip through.
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    services.feed.ready,
    new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error('could not load the revocation state (have the migrations run? npm run migrate)')),
        config.dbConnectTimeoutMs,
      );
    }),
  ]).finally(() => clearTimeout(timer));
  const app = createApp({ config, logger, clock, ...services });

  let closing = false;
  const newServer = () => {
    const s = createHttpServer(app.callback(), { keepAliveTimeoutMs: config.keepAliveTimeoutMs });
    // While draining, answer in-flight requests with Connection: close so keep-alive peers move on.
    s.on('request', (_req, res: http.ServerResponse) => {
      if (closing) res.setHeader('Connection', 'close');
    });
    return s;
  };
  const server = newServer();
  const servers = [server];
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  if (config.listenSocket) {
    // The same app on a Unix socket too, for nginx beside it with no network hop. Under PM2 the
    // cluster's primary owns the socket and shares it among the workers, as it shares the port.
    const socketServer = newServer();
    await listenOnSocket(socketServer, config.listenSocket, worker === '0');
    servers.push(socketServer);
  }
  // The container's metrics collector reads this worker's counts here (app/metrics/).
  const metricsEndpoint = config.metricsSocketDir ? await serveReport(config.metricsSocketDir, identity, services.metrics) : undefined;

  async function stop(): Promise<void> {
    closing = true;
    await drainServers(servers, { delayMs: config.shutdownDelayMs, timeoutMs: config.shutdownTimeoutMs });
    await metricsEndpoint?.close(); // after the last request: its final counts
    await services.close();
  }
  return { server, stop };
}

async function run(): Promise<void> {
  const loaded = loadConfigOrExit(process.env);
  const { config, warnings } = loaded;
  // PM2 numbers its cluster workers in NODE_APP_INSTANCE; it tags every log line.
  const worker = process.env.NODE_APP_INSTANCE ?? '0';
  const logger = createLogger(config.logLevel, { worker });
  for (const warning of warnings) logger.warn(warning);

  const { server, stop } = await start(config, logger, worker);
  const address = server.address();
  logger.info({ address, node: process.version, execArgv: process.execArgv }, 'listening');
  process.send?.('ready'); // PM2 wait_ready: only now does a reload move on to the next worker

  stopOnSignal(logger, { stopping: 'draining', stopped: 'stopped' }, stop);
}

export function main(): void {
  startOrExit(run, 'the API worker');
}

// PM2 runs dist/server.js directly; scripts/run.js (npm run serve) calls main() itself.
if (require.main === module) main();
