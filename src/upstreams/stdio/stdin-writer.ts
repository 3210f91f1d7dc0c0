/**
 * Writing to a stdio child's stdin, with backpressure. Three things a plain `stdin.write` lacks:
 * - one write per turn of the event loop (cork): each write to a pipe wakes the child, and that
 *   wake-up is most of what a write costs;
 * - a backlog beyond which a message is refused rather than queued: a child that does not read
 *   its input must not fill the gateway's memory;
 * - a watch on a backed-up stdin: a child that takes no write at all for timeout_ms is ended
 *   (and so restarted by its supervisor).
 */
import type { ChildProcess } from 'node:child_process';
import type { StdioServerConfig } from '../../config/schema.js';
import type { JsonRpcMessage } from '../../jsonrpc/messages.js';
import type { Logger } from '../../observability/logger.js';
import { UpstreamError } from '../errors.js';

/**
 * Bytes waiting to be written to a child's stdin beyond which requests are refused rather than
 * queued: a child that does not read its input must not fill the gateway's memory.
 */
const STDIN_BACKLOG_BYTES = 8 * 1024 * 1024;

type Stdin = NonNullable<ChildProcess['stdin']>;

/** What the writer needs from the child's supervisor. */
export interface WriterTarget {
  /** The child to write to now; undefined when there is none. */
  readonly child: ChildProcess | undefined;
  /** Why nothing can be written now, as the error a caller gets. */
  unavailable(): UpstreamError;
  /** Ends a child that stopped reading its input; its exit does the bookkeeping and the restart. */
  endChild(child: ChildProcess, reason: string): void;
}

export class StdinWriter {
  /** Writes the current child's stdin has taken (their callbacks), and the watch on its backlog. */
  private flushes = 0;
  private readonly onFlushed = (error?: Error | null): void => {
    if (!error) this.flushes++;
  };
  private watch: NodeJS.Timeout | undefined;
  /**
   * The stdin corked for the current turn of the event loop: every message written in one turn
   * goes to the child in one write. Each write to a pipe wakes the child, and that wake-up is
   * most of what a write costs (a CPU profile at 10 clients: 23% of the gateway's time in
   * writeUtf8String, one write per request).
   */
  private corked: Stdin | undefined;
  private readonly uncork = (): void => {
    const stdin = this.corked;
    this.corked = undefined;
    stdin?.uncork();
  };

  constructor(
    private readonly config: StdioServerConfig,
    private readonly log: Logger,
    private readonly target: WriterTarget,
  ) {}

  /** Writes a message to the child's stdin. False when it could not be written. */
  write(message: JsonRpcMessage): boolean {
    return this.send(message) === undefined;
  }

  /**
   * Writes a message to the child's stdin, or says why it cannot: no child to write to, or a
   * child that has left STDIN_BACKLOG_BYTES unread (refused, not queued: the gateway's memory).
   */
  send(message: JsonRpcMessage): UpstreamError | undefined {
    const child = this.target.child;
    const stdin = child?.stdin;
    if (!child || !stdin || stdin.destroyed || !stdin.writable) return this.target.unavailable();
    if (stdin.writableLength >= STDIN_BACKLOG_BYTES) {
      const name = this.config.name;
      return new UpstreamError('unavailable', name, `Upstream '${name}' has not read ${stdin.writableLength} bytes of its input yet; request not sent`);
    }
    if (this.corked !== stdin) {
      // A previous child's stream needs no flush: it is gone.
      if (this.corked === undefined) setImmediate(this.uncork);
      this.corked = stdin;
      stdin.cork();
    }
    if (!stdin.write(`${JSON.stringify(message)}\n`, this.onFlushed)) this.watchStdin(child, stdin);
    return undefined;
  }

  /** The child has exited: the watch on its stdin ends with it. */
  childExited(): void {
    if (this.watch) clearTimeout(this.watch);
    this.watch = undefined;
  }

  /**
   * Called when the child's stdin is backed up: if it takes no write at all for timeout_ms, the
   * child is not reading (every request written since has timed out, and so would the next ones):
   * it is ended and restarted. A child that reads, however slowly, is left alone.
   */
  private watchStdin(child: ChildProcess, stdin: Stdin): void {
    if (this.watch) return;
    const limitMs = this.config.timeout_ms;
    let flushed = this.flushes;
    const check = (): void => {
      this.watch = undefined;
      if (this.target.child !== child || !stdin.writableNeedDrain) return;
      if (this.flushes !== flushed) {
        flushed = this.flushes;
        this.watch = setTimeout(check, limitMs).unref();
        return;
      }
      const name = this.config.name;
      this.log.error({ waitingBytes: stdin.writableLength, forMs: limitMs }, 'upstream child is not reading its input; ending it');
      this.target.endChild(child, `Upstream '${name}' stopped reading its input (${stdin.writableLength} bytes unread for ${limitMs} ms)`);
    };
    this.watch = setTimeout(check, limitMs).unref();
  }
}
