/**
 * The `export_url` sink: events POSTed in batches to an HTTP collector (a SIEM, a log pipeline).
 * The collector can be slow or down for a while: the queue is bounded, a failed POST is retried
 * with backoff, and close() gives up (counting what it lost) rather than hold up shutdown.
 */
import type { AuditConfig } from '../../config/schema.js';
import { delay } from '../../delay.js';
import type { RateLimitedWarning } from '../logger.js';
import { Deque } from './deque.js';
import { codeOf, untilSettledOrAborted, type AuditSink, type SinkCounters } from './sink.js';

type ExportSettings = Pick<AuditConfig, 'export_batch_size' | 'export_flush_interval_ms' | 'export_max_retries' | 'export_timeout_ms' | 'export_headers'>;

/** Backoff before retry n (0-based): 100 ms × 2^n, at most 30 s. */
export function exportBackoffMs(retry: number): number {
  return Math.min(100 * 2 ** retry, 30_000);
}

/** One batch being sent; `settled` makes sure its events are counted as dropped at most once. */
interface Batch {
  lines: string[];
  settled: boolean;
}

/**
 * `export_url`: events POSTed as a JSON array, in order, one POST at a time. A batch leaves when
 * it is full or when its oldest event has waited export_flush_interval_ms; a failed POST is
 * retried with exponential backoff, then the batch is dropped and counted.
 */
export class ExportSink implements AuditSink {
  private readonly queue = new Deque<string>();
  private sending: Promise<void> | undefined;
  private current: Batch | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** The flush interval elapsed while a POST was in flight: send the partial batch next. */
  private flushDue = false;
  private closing = false;
  /** Aborts the POST in flight and any backoff when close() runs out of time. */
  private readonly stop = new AbortController();
  private readonly headers: Headers;

  constructor(
    private readonly url: string,
    private readonly settings: ExportSettings,
    private readonly fetchImpl: typeof fetch,
    private readonly maxQueue: number,
    private readonly counters: SinkCounters,
    private readonly warning: RateLimitedWarning,
  ) {
    this.headers = new Headers(settings.export_headers ?? {});
    this.headers.set('content-type', 'application/json');
  }

  write(line: string): void {
    if (this.closing && this.stop.signal.aborted) {
      this.counters.exportDropped++;
      return;
    }
    if (this.queue.length >= this.maxQueue) {
      this.counters.exportDropped++;
      this.warning.warn('export-queue', { sink: 'export', queued: this.queue.length }, 'audit export: queue full, events dropped');
      return;
    }
    this.queue.push(line);
    this.schedule();
  }

  /** The export has its own batches (export_batch_size, export_flush_interval_ms). */
  commit(): void {}

  flush(): Promise<void> {
    return Promise.resolve();
  }

  async close(signal: AbortSignal): Promise<void> {
    this.closing = true;
    const giveUp = (): void => this.stop.abort();
    signal.addEventListener('abort', giveUp, { once: true });
    if (signal.aborted) giveUp();
    try {
      this.schedule();
      while ((this.sending || this.queue.length > 0) && !this.stop.signal.aborted) {
        await untilSettledOrAborted(this.sending ?? Promise.resolve(), this.stop.signal);
        this.schedule();
      }
    } finally {
      signal.removeEventListener('abort', giveUp);
      this.clearTimer();
      if (this.stop.signal.aborted) {
        // What could not be sent in time is lost, and counted: the batch in flight and the queue.
        if (this.current) this.dropBatch(this.current);
        this.counters.exportDropped += this.queue.length;
        this.queue.clear();
      }
    }
  }

  private schedule(): void {
    if (this.sending || this.queue.length === 0 || this.stop.signal.aborted) return;
    if (this.closing || this.flushDue || this.queue.length >= this.settings.export_batch_size) {
      this.flushDue = false;
      this.clearTimer();
      const batch: Batch = { lines: this.queue.take(this.settings.export_batch_size), settled: false };
      this.current = batch;
      this.sending = this.send(batch).finally(() => {
        this.current = undefined;
        this.sending = undefined;
        this.schedule();
      });
      return;
    }
    if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.flushDue = true;
        this.schedule();
      }, this.settings.export_flush_interval_ms);
      this.timer.unref();
    }
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async send(batch: Batch): Promise<void> {
    const body = `[${batch.lines.join(',')}]`;
    for (let attempt = 0; ; attempt++) {
      if (await this.post(body)) {
        batch.settled = true;
        return;
      }
      // A POST cut short by close() running out of time is not a collector failure.
      if (this.stop.signal.aborted) break;
      this.counters.exportFailures++;
      if (attempt >= this.settings.export_max_retries) break;
      await delay(exportBackoffMs(attempt), { signal: this.stop.signal });
      if (this.stop.signal.aborted) break;
    }
    if (!batch.settled && !this.stop.signal.aborted)
      this.warning.warn('export-gave-up', { sink: 'export', events: batch.lines.length }, 'audit export: batch dropped after its retries');
    this.dropBatch(batch);
  }

  private dropBatch(batch: Batch): void {
    if (batch.settled) return;
    batch.settled = true;
    this.counters.exportDropped += batch.lines.length;
  }

  /** One POST within export_timeout_ms (the response body included); true on a 2xx. */
  private async post(body: string): Promise<boolean> {
    const deadline = AbortSignal.timeout(this.settings.export_timeout_ms);
    const signal = AbortSignal.any([deadline, this.stop.signal]);
    try {
      // redirect "error": the export headers hold the collector's credentials and must not follow a redirect elsewhere.
      const response = await this.fetchImpl(this.url, { method: 'POST', headers: this.headers, body, signal, redirect: 'error' });
      // Reading the body lets the connection be reused; the deadline covers it too.
      await response.arrayBuffer().catch(() => undefined);
      if (response.status >= 200 && response.status < 300) return true;
      this.warning.warn('export-failed', { sink: 'export', status: response.status }, 'audit export: POST failed');
      return false;
    } catch (error) {
      const code = deadline.aborted ? 'timeout' : this.stop.signal.aborted ? 'closing' : codeOf(error);
      if (code !== 'closing') this.warning.warn('export-failed', { sink: 'export', code }, 'audit export: POST failed');
      return false;
    }
  }
}
