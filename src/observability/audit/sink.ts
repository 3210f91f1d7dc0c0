/**
 * What an audit sink is: the interface the audit log writes through, the counters sinks add to,
 * and the two helpers all three sinks share (a wait that a deadline can cut short, and what a
 * warning may say about an error).
 *
 * Every sink takes one serialised, redacted line at a time and never blocks or throws: a slow
 * disk or collector only grows a bounded backlog, beyond which lines are counted and lost. The
 * local sinks gather the lines of one drain of the audit queue and write them with one write
 * (commit), not one write per line. The operational-log warnings the sinks write name the sink
 * and an error code or HTTP status, never a line, a header value or the export URL (which may
 * carry a token in its query).
 */

/** Counters the sinks add to; AuditLog.stats reads them. */
export interface SinkCounters {
  /** Lines a local sink (stdout, file) could not write: a write error, or its backlog was full. */
  writeFailures: number;
  /** Export POSTs that failed (network error, timeout or non-2xx), retries included. */
  exportFailures: number;
  /** Events the export lost: its queue was full, its batch ran out of retries, or close() ran out of time. */
  exportDropped: number;
}

/** One destination of audit lines. */
export interface AuditSink {
  /** Takes one line (no trailing newline) of the event recorded at `at` (epoch ms). Never blocks, never throws. */
  write(line: string, at: number): void;
  /** Starts writing the lines taken since the last commit (the audit log calls it after each drain). Never throws. */
  commit(): void;
  /** Resolves once every line taken so far is written (local sinks) or right away (export), or when `signal` aborts. */
  flush(signal: AbortSignal): Promise<void>;
  /** Writes or sends everything pending, then releases the sink; gives up what is left when `signal` aborts. */
  close(signal: AbortSignal): Promise<void>;
}

/** Resolves when `promise` settles or `signal` aborts, whichever comes first; never rejects. */
export function untilSettledOrAborted(promise: Promise<unknown>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((done) => {
    const finish = (): void => {
      signal.removeEventListener('abort', finish);
      done();
    };
    signal.addEventListener('abort', finish, { once: true });
    promise.then(finish, finish);
  });
}

/** Error code of a Node error, or its name: what a warning may say about a failure. */
export function codeOf(error: unknown): string {
  if (error && typeof error === 'object') {
    const { code, name, cause } = error as { code?: unknown; name?: unknown; cause?: unknown };
    if (typeof code === 'string') return code;
    if (cause && typeof cause === 'object' && typeof (cause as { code?: unknown }).code === 'string') return (cause as { code: string }).code;
    if (typeof name === 'string') return name;
  }
  return 'unknown';
}
