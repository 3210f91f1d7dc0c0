/**
 * The `stdout = true` sink: the audit lines on a stream the gateway does not own (process.stdout,
 * or the stream a test passes), for a container runtime or a log shipper to collect.
 */
import { Outstanding } from './outstanding.js';
import { codeOf, untilSettledOrAborted, type AuditSink, type SinkCounters } from './sink.js';
import type { RateLimitedWarning } from '../logger.js';

/** `stdout = true`: one line per event to a stream the sink does not own (it is never ended). */
export class StreamSink implements AuditSink {
  private readonly outstanding = new Outstanding();
  private readonly onError = (error: unknown): void => {
    this.warning.warn('stdout-error', { sink: 'stdout', code: codeOf(error) }, 'audit stdout sink: write failed');
  };

  constructor(
    private readonly stream: NodeJS.WritableStream,
    private readonly maxBacklog: number,
    private readonly counters: SinkCounters,
    private readonly warning: RateLimitedWarning,
  ) {
    // Without a listener an EPIPE (stdout piped to a reader that went away) would crash the gateway.
    stream.on('error', this.onError);
  }

  write(line: string): void {
    if (this.outstanding.count >= this.maxBacklog) {
      this.counters.writeFailures++;
      this.warning.warn('stdout-backlog', { sink: 'stdout', backlog: this.outstanding.count }, 'audit stdout sink: backlog full, lines dropped');
      return;
    }
    this.outstanding.gather(line);
  }

  commit(): void {
    if (this.outstanding.batchLines === 0) return;
    const { text, lines } = this.outstanding.take();
    try {
      this.stream.write(text, (error?: Error | null) => {
        if (error) {
          this.counters.writeFailures += lines;
          this.onError(error);
        }
        this.outstanding.done(lines);
      });
    } catch (error) {
      this.outstanding.done(lines);
      this.counters.writeFailures += lines;
      this.onError(error);
    }
  }

  flush(signal: AbortSignal): Promise<void> {
    this.commit();
    return untilSettledOrAborted(this.outstanding.idle(), signal);
  }

  async close(signal: AbortSignal): Promise<void> {
    await this.flush(signal);
    this.stream.removeListener('error', this.onError);
  }
}
