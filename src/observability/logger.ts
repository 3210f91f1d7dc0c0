/**
 * The operational log: pino JSON lines on stderr (stdout stays free for command output and the
 * audit stream), or readable lines for a terminal with MCP_GUARD_LOG_FORMAT=pretty. Lines about a
 * request are written with its logger (Fastify's `request.log`, passed down to the gateway's
 * methods), which binds its `reqId`. Not through AsyncLocalStorage: on Node 20 it turns on promise
 * hooks for the whole process, which cost about 7% of the gateway's time per request. Secrets
 * are redacted by path as a second line of defence; the first is never to put them in a log call.
 */
import { pino, type Logger } from 'pino';
import { pinoPretty } from '../optional.js';

export type { Logger } from 'pino';

/** What code that only writes lines needs of a logger: pino's, or a request's (Fastify's request.log). */
export type LineLogger = Pick<Logger, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'>;

export interface LoggerOptions {
  level?: string;
  /** "json" (default) or "pretty"; default from MCP_GUARD_LOG_FORMAT. */
  format?: string;
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

/** The log formats MCP_GUARD_LOG_FORMAT accepts. */
export const LOG_FORMATS = ['json', 'pretty'] as const;

export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? process.env['MCP_GUARD_LOG_LEVEL'] ?? 'info';
  const format = options.format ?? process.env['MCP_GUARD_LOG_FORMAT'] ?? 'json';
  if (!(LOG_FORMATS as readonly string[]).includes(format)) throw new Error(`MCP_GUARD_LOG_FORMAT must be "json" or "pretty", not ${JSON.stringify(format)}`);
  const destination = (options.destination ?? pino.destination({ dest: 2, sync: false })) as pino.DestinationStream;
  return pino(
    {
      level,
      base: { service: 'mcp-guard' },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    format === 'pretty'
      ? pinoPretty().PinoPretty({
          destination: options.destination ?? 2,
          sync: true,
          colorize: options.destination === undefined && process.stderr.isTTY,
          translateTime: 'SYS:HH:MM:ss.l',
          ignore: 'pid,hostname,service',
        })
      : destination,
  );
}

/**
 * Logs a warning of one kind at most once per interval, with how many were suppressed meanwhile:
 * for failures that repeat on every request (a store down, a sink failing), one line per interval.
 */
export class RateLimitedWarning {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly log: Logger,
    private readonly intervalMs = 10_000,
  ) {}

  warn(kind: string, fields: Record<string, unknown>, message: string): void {
    const now = performance.now();
    const seen = this.last.get(kind);
    if (seen && now - seen.at < this.intervalMs) {
      seen.suppressed++;
      return;
    }
    const suppressed = seen?.suppressed ?? 0;
    this.last.set(kind, { at: now, suppressed: 0 });
    try {
      this.log.warn({ ...fields, ...(suppressed > 0 ? { suppressed } : {}) }, message);
    } catch {
      // A broken operational log must not break what was warning about it.
    }
  }
}

/** What Fastify needs of a request's logger (FastifyBaseLogger, without importing Fastify here). */
type RequestLogger = Pick<Logger, 'info' | 'error' | 'debug' | 'fatal' | 'warn' | 'trace' | 'silent'> & {
  level: string;
  child(bindings: pino.Bindings, options?: pino.ChildLoggerOptions): RequestLogger;
};

/**
 * The logger Fastify gives each request (`request.log`, bound to its reqId), made only when the
 * request logs something. pino's child() serialises the bindings and prepares redaction: several
 * microseconds on every request, though almost no request logs a line. Fastify's
 * `childLoggerFactory` returns one of these.
 */
export class LazyChildLogger implements RequestLogger {
  private made: Logger | undefined;

  constructor(
    private readonly parent: Logger,
    private readonly bindings: pino.Bindings,
    private readonly options: pino.ChildLoggerOptions,
  ) {}

  /** A level the logger would not write costs no child logger either. */
  private write(level: pino.Level, args: unknown[]): void {
    if (!this.made && !this.parent.isLevelEnabled(level)) return;
    (this.real()[level] as (...values: unknown[]) => void)(...args);
  }

  private real(): Logger {
    this.made ??= this.parent.child(this.bindings, this.options);
    return this.made;
  }

  get level(): string {
    return this.made?.level ?? this.options.level ?? this.parent.level;
  }

  set level(level: string) {
    this.real().level = level;
  }

  fatal(...args: unknown[]): void {
    this.write('fatal', args);
  }
  error(...args: unknown[]): void {
    this.write('error', args);
  }
  warn(...args: unknown[]): void {
    this.write('warn', args);
  }
  info(...args: unknown[]): void {
    this.write('info', args);
  }
  debug(...args: unknown[]): void {
    this.write('debug', args);
  }
  trace(...args: unknown[]): void {
    this.write('trace', args);
  }
  silent(): void {}

  child(bindings: pino.Bindings, options?: pino.ChildLoggerOptions): RequestLogger {
    return this.real().child(bindings, options);
  }
}
