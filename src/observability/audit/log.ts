/**
 * The audit log: one JSON line per security event (who called what, with what outcome), to
 * stdout, a rotated file and/or an HTTP collector. docs/audit.md is its contract.
 *
 * The request path only calls record(), which stamps the time and queues the event: O(1), never
 * blocking, never throwing. Serialising, redacting and writing happen a few milliseconds later
 * (DRAIN_DELAY_MS), for every event queued meanwhile at once, so that a busy gateway writes its
 * audit file in a few large writes rather than one per request; a full queue drops the event
 * and counts it rather than slow a request down, because an audit log that can stall the
 * gateway is a denial-of-service lever. flush() and close() drain at once.
 *
 * The rest of this folder: what a sink is (sink.ts), the three sinks (stream-sink.ts for stdout,
 * file-sink.ts, export-sink.ts), the archive of rotated files to S3 (s3-archive.ts), the batching the local sinks share (outstanding.ts), the
 * redaction every line goes through (redaction.ts) and the queue both this log and the export use
 * (deque.ts).
 */
import { resolve } from 'node:path';
import type { AuditConfig } from '../../config/schema.js';
import { RateLimitedWarning, type Logger } from '../logger.js';
import { Deque } from './deque.js';
import { ExportSink } from './export-sink.js';
import { FileSink } from './file-sink.js';
import { emptyArchiveStats, S3Archiver, type ArchiveStats } from './s3-archive.js';
import { compileRedactionRules, redactCredentialField, redactLine, type RedactionRule } from './redaction.js';
import { untilSettledOrAborted, type AuditSink, type SinkCounters } from './sink.js';
import { StreamSink } from './stream-sink.js';

/**
 * Every event type. Add a new one here (and to docs/audit.md); the union type follows.
 * Lifecycle events (gateway_*, upstream_restart) have no identity, request or client.
 */
export const AUDIT_EVENT_TYPES = [
  'auth_success',
  'auth_failure',
  'tool_call',
  'authz_denied',
  'rate_limited',
  'upstream_error',
  'request_refused',
  'gateway_start',
  'gateway_stop',
  'upstream_restart',
  'upstream_message_withheld',
  'config_reloaded',
  'tool_definition_changed',
  'tool_approval',
] as const;

export type AuditEventType = (typeof AUDIT_EVENT_TYPES)[number];

/** What the pipeline reports; AuditLog adds the timestamp. Unknown values: leave them out. */
export interface AuditEvent {
  event_type: AuditEventType;
  /** The identity's id; null or absent when not known (e.g. authentication failed). */
  identity_id?: string | null;
  /** The upstream server's configured name (for a call through a virtual server: the member's). */
  server?: string;
  /** The virtual server the request came through, when it did (its member is `server`). */
  virtual_server?: string;
  /** The JSON-RPC method (`tools/call`), or the HTTP method for GET/DELETE. */
  method?: string;
  /** The tool of a tools/call. */
  tool?: string;
  success: boolean;
  /** From the request's arrival to its outcome, in milliseconds. */
  duration_ms?: number;
  /** The gateway's own request id: the `x-request-id` response header and the `reqId` of the operational log. */
  request_id?: string;
  /** The `x-request-id` the client sent, when it was up to 128 safe characters: for correlation only. */
  client_request_id?: string | undefined;
  client_ip?: string;
  /** Why, in a few words: "jwt: expired", "tool not allowed", "restart 2 of 5". */
  reason?: string;
  /** How the identity authenticated: api_key, jwt, anonymous. */
  provider?: string;
  /** The JSON-RPC error answered, if any. */
  error?: { code: number; message: string };
  /** The tool call's arguments; written only when include_arguments = true, after redaction. */
  arguments?: unknown;
  /** config_reloaded: what changed (names and key ids, never a value), and what waits for a restart. */
  changes?: Record<string, unknown>;
  /** With telemetry on: the trace of the request's span (W3C hex ids; docs/telemetry.md). */
  trace_id?: string;
  span_id?: string;
  /** tool_definition_changed: what was seen (src/integrity/guard.ts DefinitionEvent). */
  definition?: { kind: string; name: string; result: string; fields: string[]; old_sha256?: string; new_sha256: string; mode: string };
}

/** Counters since start, cumulative. */
export interface AuditLogStats {
  /** Events accepted by record() into the queue. */
  recorded: number;
  /** Events record() refused (the queue was full, or the log was closed), or, never in practice, that could not be serialised. */
  dropped: number;
  /** Events serialised and handed to every sink. */
  written: number;
  /** Lines a local sink (stdout, file) failed to write: a write error, or its backlog was full. */
  writeFailures: number;
  /** Export POSTs that failed (network error, timeout, non-2xx), retries included. */
  exportFailures: number;
  /** Events the export lost: its queue was full, a batch ran out of retries, or close() ran out of time. */
  exportDropped: number;
}

export interface AuditLogOptions {
  /** The operational log, for warnings about the audit log itself (never event contents). */
  log: Logger;
  /** The `stdout = true` stream; default process.stdout. */
  stdout?: NodeJS.WritableStream;
  /** The clock of timestamps, rotation by age and rotated file names; default `new Date()`. */
  now?: () => Date;
  /** The export's fetch; default the global fetch. */
  fetch?: typeof fetch;
  /** How long close() and flush() may take, in ms; default 5000 (close(): the sinks and the archive's last uploads together). */
  closeTimeoutMs?: number;
  /** Where `[audit.s3]` counts (one object for the life of the process, across reloads); default a fresh one. */
  archiveStats?: ArchiveStats;
}

/**
 * The caller's event as record() saw it, every field present (undefined when absent): one shape
 * for every event, which V8 copies and reads faster than the spread it replaced (1-2 us per
 * tool call in profiles). Arguments are not even kept unless asked for: they often hold personal
 * data.
 */
function copyOf(event: AuditEvent, withArguments: boolean): AuditEvent {
  return {
    event_type: event.event_type,
    identity_id: event.identity_id,
    server: event.server,
    virtual_server: event.virtual_server,
    method: event.method,
    tool: event.tool,
    success: event.success,
    duration_ms: event.duration_ms,
    request_id: event.request_id,
    client_request_id: event.client_request_id,
    client_ip: event.client_ip,
    reason: event.reason,
    provider: event.provider,
    error: event.error,
    arguments: withArguments ? event.arguments : undefined,
    changes: event.changes,
    trace_id: event.trace_id,
    span_id: event.span_id,
    definition: event.definition,
  };
}

/** An event as queued: the caller's fields (copied) and when record() was called. */
interface Queued {
  at: number;
  event: AuditEvent;
}

type Counters = SinkCounters & { recorded: number; dropped: number; written: number };

function emptyCounters(): Counters {
  return { recorded: 0, dropped: 0, written: 0, writeFailures: 0, exportFailures: 0, exportDropped: 0 };
}

/** Events serialised per turn of the event loop, so a burst does not hold the loop for long. */
const DRAIN_CHUNK = 512;

/** How long the first event of a drain waits for others to join it (ms). */
export const DRAIN_DELAY_MS = 10;

const DEFAULT_CLOSE_TIMEOUT_MS = 5_000;

/** The audit log. `AuditLog.create` builds it from `[audit]`; a disabled one records nothing. */
export class AuditLog {
  /** False for a no-op log: no [audit], enabled = false, or no sink. */
  readonly enabled: boolean;
  /** Whether tool call arguments are written (include_arguments). */
  readonly includeArguments: boolean;

  private readonly queue = new Deque<Queued>();
  /** Epoch ms of record(): the `now` option's, or Date.now (no Date per event). */
  private readonly nowMs: () => number;
  private readonly queueSize: number;
  private readonly closeTimeoutMs: number;
  private scheduled = false;
  private closed = false;
  private lastAt = Number.NaN;
  private lastTimestamp = '';
  private closing: Promise<void> | undefined;
  private readonly drainSoon = (): void => {
    setImmediate(() => this.drain(DRAIN_CHUNK));
  };
  private readonly drainLater = (): void => {
    setTimeout(() => this.drain(DRAIN_CHUNK), DRAIN_DELAY_MS);
  };

  /**
   * Builds the audit log of `[audit]`. Undefined or `enabled = false` gives a no-op log; so does a
   * config without any sink, with a warning. Throws (a start-up error for the CLI to show) when
   * the file's directory is missing, the file cannot be opened or a redaction rule is unusable.
   */
  static create(config: AuditConfig | undefined, options: AuditLogOptions): AuditLog {
    if (!config || !config.enabled) return new AuditLog(undefined, [], [], options, undefined, emptyCounters());
    if (!config.stdout && config.file === undefined && config.export_url === undefined) {
      options.log.warn('audit is enabled but has no sink (stdout, file or export_url): no audit lines are written');
      return new AuditLog(undefined, [], [], options, undefined, emptyCounters());
    }
    const rules = compileRedactionRules(config.redaction_rules);
    const counters = emptyCounters();
    const warning = new RateLimitedWarning(options.log);
    const clock = options.now ?? (() => new Date());
    const sinks: AuditSink[] = [];
    const archiver =
      config.file !== undefined && config.s3
        ? new S3Archiver({ file: resolve(config.file) }, config.s3, options.archiveStats ?? emptyArchiveStats(), warning, options.log)
        : undefined;
    // The file first: it is the one that can fail, and nothing else is attached yet.
    if (config.file !== undefined) sinks.push(FileSink.open(config.file, config, () => clock().getTime(), config.queue_size, counters, warning, archiver));
    // Started once the file opened: files rotated before this start (a crash, a restart) go first.
    archiver?.start();
    if (config.stdout) sinks.push(new StreamSink(options.stdout ?? process.stdout, config.queue_size, counters, warning));
    if (config.export_url !== undefined)
      sinks.push(new ExportSink(config.export_url, config, options.fetch ?? globalThis.fetch, config.queue_size, counters, warning));
    return new AuditLog(config, sinks, rules, options, warning, counters, archiver);
  }

  private constructor(
    config: AuditConfig | undefined,
    private readonly sinks: readonly AuditSink[],
    private readonly rules: readonly RedactionRule[],
    options: AuditLogOptions,
    private readonly warning: RateLimitedWarning | undefined,
    private readonly counters: Counters,
    private readonly archiver?: S3Archiver,
  ) {
    this.enabled = config !== undefined;
    this.includeArguments = config?.include_arguments ?? false;
    this.queueSize = config?.queue_size ?? 0;
    const now = options.now;
    this.nowMs = now ? () => now().getTime() : Date.now;
    this.closeTimeoutMs = options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
  }

  /** Counters since start (a snapshot). */
  get stats(): AuditLogStats {
    return { ...this.counters };
  }

  /**
   * Queues one event, stamped with the current time. Never blocks, never throws; when the queue
   * holds queue_size events already (or the log is closed) the event is dropped and counted.
   * `arguments` is kept by reference until written: do not mutate it afterwards.
   */
  record(event: AuditEvent): void {
    if (!this.enabled) return;
    try {
      if (this.closed || this.queue.length >= this.queueSize) {
        this.counters.dropped++;
        this.warning?.warn(
          'queue-full',
          { dropped: this.counters.dropped },
          this.closed ? 'audit log closed: event dropped' : 'audit queue full: events dropped',
        );
        return;
      }
      const copy = copyOf(event, this.includeArguments);
      const at = this.nowMs();
      this.queue.push({ at: Number.isFinite(at) ? at : Date.now(), event: copy });
      this.counters.recorded++;
      if (!this.scheduled) {
        this.scheduled = true;
        this.drainLater();
      }
    } catch {
      this.counters.dropped++;
    }
  }

  /**
   * Resolves once every event recorded so far is written to stdout and the file (any rotation and
   * compression it started included), or after closeTimeoutMs. The export keeps its own schedule.
   */
  async flush(): Promise<void> {
    if (!this.enabled) return;
    this.drain(Number.POSITIVE_INFINITY);
    await this.withDeadline((signal) => Promise.all(this.sinks.map((sink) => sink.flush(signal))));
  }

  /**
   * Writes and sends everything pending, then stops every sink and timer; bounded by closeTimeoutMs
   * (what is still unsent then is dropped and counted). Later record() calls are dropped. Record
   * gateway_stop before calling it.
   */
  close(): Promise<void> {
    if (!this.enabled) return Promise.resolve();
    this.closing ??= (async () => {
      this.closed = true;
      this.drain(Number.POSITIVE_INFINITY);
      const finished = await this.withDeadline(async (signal) => {
        await Promise.all(this.sinks.map((sink) => sink.close(signal).catch(() => undefined)));
        // After the file sink: what it rotated and compressed on its way out is uploaded too, if the store is up.
        await this.archiver?.close(signal);
      });
      if (!finished) this.warning?.warn('close-timeout', { timeout_ms: this.closeTimeoutMs }, 'audit log closed before every sink had finished');
    })();
    return this.closing;
  }

  /** Runs `work` with a signal that aborts after closeTimeoutMs; true when it finished in time. */
  private async withDeadline(work: (signal: AbortSignal) => Promise<unknown>): Promise<boolean> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.closeTimeoutMs);
    try {
      await untilSettledOrAborted(work(controller.signal), controller.signal);
      return !controller.signal.aborted;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Serialises and writes up to `limit` queued events; schedules itself again for the rest. */
  private drain(limit: number): void {
    let count = 0;
    while (count < limit && this.queue.length > 0) {
      const queued = this.queue.shift() as Queued;
      count++;
      const line = this.serialise(queued);
      if (line === undefined) {
        this.counters.dropped++;
        continue;
      }
      for (const sink of this.sinks) {
        try {
          sink.write(line, queued.at);
        } catch {
          this.counters.writeFailures++;
        }
      }
      this.counters.written++;
    }
    for (const sink of this.sinks) {
      try {
        sink.commit();
      } catch {
        // A sink counts its own failures; this only keeps one sink's bug from stopping the others.
      }
    }
    if (this.queue.length > 0) {
      if (limit !== Number.POSITIVE_INFINITY) this.drainSoon();
    } else {
      this.scheduled = false;
    }
  }

  /** The ISO time of `at`: events of one drain mostly share their millisecond, and so their string. */
  private timestamp(at: number): string {
    if (at !== this.lastAt) {
      this.lastAt = at;
      this.lastTimestamp = new Date(at).toISOString();
    }
    return this.lastTimestamp;
  }

  /**
   * The line of one event. Every core field is present, null when unknown, so that each line has
   * the same columns; the context fields (provider, reason, error, arguments) are omitted when absent.
   */
  private serialise({ at, event }: Queued): string | undefined {
    try {
      const record: Record<string, unknown> = {
        timestamp: this.timestamp(at),
        event_type: event.event_type,
        identity_id: event.identity_id ?? null,
        server: event.server ?? null,
        method: event.method ?? null,
        tool: event.tool ?? null,
        success: event.success === true,
        duration_ms: typeof event.duration_ms === 'number' && Number.isFinite(event.duration_ms) ? Math.round(event.duration_ms * 1_000) / 1_000 : null,
        request_id: event.request_id ?? null,
        client_ip: event.client_ip ?? null,
      };
      if (event.client_request_id !== undefined) record['client_request_id'] = event.client_request_id;
      if (event.virtual_server !== undefined) record['virtual_server'] = event.virtual_server;
      if (event.changes !== undefined) record['changes'] = event.changes;
      if (event.definition !== undefined) record['definition'] = event.definition;
      if (event.provider !== undefined) record['provider'] = event.provider;
      if (event.reason !== undefined) record['reason'] = event.reason;
      if (event.error !== undefined) record['error'] = { code: event.error.code, message: event.error.message };
      if (event.trace_id !== undefined) {
        record['trace_id'] = event.trace_id;
        record['span_id'] = event.span_id;
      }
      const withArguments = this.includeArguments && event.arguments !== undefined;
      if (withArguments) record['arguments'] = event.arguments;
      let line: string;
      try {
        // Only arguments hold free-form JSON: the replacer runs for them alone.
        line = withArguments ? JSON.stringify(record, redactCredentialField) : JSON.stringify(record);
      } catch {
        // Arguments that JSON cannot hold (a cycle, a BigInt): the event is still worth a line.
        record['arguments'] = '[unserializable]';
        line = JSON.stringify(record);
      }
      return redactLine(line, record, this.rules);
    } catch {
      return undefined;
    }
  }
}
