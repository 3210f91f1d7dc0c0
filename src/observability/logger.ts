/**
 * The operational log: pino JSON lines on stderr (stdout stays free for command output and, later,
 * the audit stream). Secrets are redacted by path as a second line of defence; the first is never
 * to put them in a log call at all.
 */
import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

export interface LoggerOptions {
  level?: string;
  /** Write to this destination instead of stderr (tests). */
  destination?: NodeJS.WritableStream;
}

/** Paths whose values never reach a log line, whatever logs them. */
export const REDACTED_PATHS = [
  'authorization',
  '*.authorization',
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'headers.cookie',
  '*.headers',
  'env',
  '*.env',
  'token',
  '*.token',
  'key',
  '*.key',
  'secret',
  '*.secret',
  'password',
  '*.password',
];

export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? process.env['MCP_GUARD_LOG_LEVEL'] ?? 'info';
  return pino(
    {
      level,
      base: { service: 'mcp-guard' },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    (options.destination ?? pino.destination({ dest: 2, sync: false })) as pino.DestinationStream,
  );
}
