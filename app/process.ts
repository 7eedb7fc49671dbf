// A long-running process's life under PM2 (the API workers, the webhook sender): its settings read
// once at start (a bad one ends it with EX_CONFIG, which restarting will not fix), and one stop on
// SIGINT, SIGTERM or PM2's 'shutdown' message, the log flushed before exit.
import type { Logger } from 'pino';
import { ConfigError, loadConfig, type LoadedConfig } from './config';

const EX_CONFIG = 78;

/** loadConfig, or the process ends with the message and EX_CONFIG (PM2 and Docker show it). */
export function loadConfigOrExit(env: Record<string, string | undefined>): LoadedConfig {
  try {
    return loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(EX_CONFIG);
    }
    throw err;
  }
}

/** Runs `stop` once, on the first stop request; exits 0 when it resolves, 1 when it fails. */
export function stopOnSignal(logger: Logger, words: { stopping: string; stopped: string }, stop: () => Promise<void>): void {
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, words.stopping);
    const exit = (code: number) => logger.flush(() => process.exit(code));
    stop().then(
      () => {
        logger.info(words.stopped);
        exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, 'unclean stop');
        exit(1);
      },
    );
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  // PM2 on Windows and some versions send a 'shutdown' message instead of a signal.
  process.on('message', (msg) => {
    if (msg === 'shutdown') shutdown('shutdown message');
  });
}

/** The process's main: a start that fails is a message on stderr and exit code 1. */
export function startOrExit(run: () => Promise<void>, what: string): void {
  run().catch((err: unknown) => {
    process.stderr.write(`${what} failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
