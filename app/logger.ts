// Structured JSON logs on stdout (PM2 and Docker collect them). Errors are reduced to type, message
// and stack: driver errors carry SQL parameters, which are nobody's business in a log. Writes are
// asynchronous: under load, lines that arrive while a write is in flight go out together in the next
// one, instead of one blocking write per line (pino flushes what is left when the process exits).
import pino, { type DestinationStream, type Logger } from 'pino';

function serializeError(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  return { type: err.name, message: err.message, stack: err.stack };
}

export function createLogger(
  level: string,
  base: Record<string, unknown> = {},
  destination: DestinationStream = pino.destination({ dest: 1, sync: false }),
): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid, ...base },
      serializers: { err: serializeError },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}
