// Structured JSON logs on stdout (PM2 and Docker collect them). Errors are reduced to type, message
// and stack: driver errors carry SQL parameters, which are nobody's business in a log.
import pino, { type Logger } from 'pino';

function serializeError(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  return { type: err.name, message: err.message, stack: err.stack };
}

export function createLogger(level: string, base: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { pid: process.pid, ...base },
    timestamp: pino.stdTimeFunctions.isoTime,
    serializers: { err: serializeError },
    formatters: { level: (label) => ({ level: label }) },
  });
}
