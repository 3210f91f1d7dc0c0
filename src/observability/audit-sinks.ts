/**
 * Where audit lines go: a stream (stdout), an appended and rotated file, and an HTTP collector.
 *
 * Every sink takes one serialised, redacted line at a time and never blocks or throws: a slow
 * disk or collector only grows a bounded backlog, beyond which lines are counted and lost. The
 * local sinks gather the lines of one drain of the audit queue and write them with one write
 * (commit), not one write per line. The
 * operational-log warnings written here name the sink and an error code or HTTP status, never a
 * line, a header value or the export URL (which may carry a token in its query).
 */
import { constants, createReadStream, createWriteStream, fstatSync, openSync, closeSync, readSync, statSync, type WriteStream } from 'node:fs';
import { access, readdir, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import type { AuditConfig } from '../config/schema.js';
import type { RateLimitedWarning } from './logger.js';
import { delay } from '../delay.js';

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


/** A FIFO with O(1) amortised push and shift (Array#shift is O(n)). */
export class Deque<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 1_024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  /** Removes and returns up to `count` items from the front. */
  take(count: number): T[] {
    const taken: T[] = [];
    while (taken.length < count && this.length > 0) taken.push(this.shift() as T);
    return taken;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }
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

/** Lines taken but not yet written: gathered for the next commit, then waiting for their write. */
class Outstanding {
  /** Lines whose write has not been acknowledged yet, plus those gathered. */
  count = 0;
  /** The gathered lines, each with its newline: the next write. */
  batch = '';
  batchLines = 0;
  private waiters: (() => void)[] = [];

  gather(line: string): void {
    this.batch += `${line}\n`;
    this.batchLines++;
    this.count++;
  }

  /** Empties the batch and returns it; its lines stay counted until done(lines). */
  take(): { text: string; lines: number } {
    const taken = { text: this.batch, lines: this.batchLines };
    this.batch = '';
    this.batchLines = 0;
    return taken;
  }

  done(lines: number): void {
    this.count -= lines;
    if (this.count === 0) {
      const waiters = this.waiters;
      this.waiters = [];
      for (const wake of waiters) wake();
    }
  }

  idle(): Promise<void> {
    return this.count === 0 ? Promise.resolve() : new Promise((wake) => this.waiters.push(wake));
  }
}

/** Error code of a Node error, or its name: what a warning may say about a failure. */
function codeOf(error: unknown): string {
  if (error && typeof error === 'object') {
    const { code, name, cause } = error as { code?: unknown; name?: unknown; cause?: unknown };
    if (typeof code === 'string') return code;
    if (cause && typeof cause === 'object' && typeof (cause as { code?: unknown }).code === 'string') return (cause as { code: string }).code;
    if (typeof name === 'string') return name;
  }
  return 'unknown';
}

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

/** `audit.log.2030-01-02T03-04-05.678Z`: the rotation time, UTC, sortable as text, no `:` (Windows). */
function backupStamp(ms: number): string {
  return new Date(ms).toISOString().replace(/:/g, '-');
}

const STAMP = String.raw`\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}Z`;

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Epoch ms of the first event in an existing audit file; undefined when it cannot be read. */
function firstEventTime(fd: number, size: number): number | undefined {
  const buffer = Buffer.alloc(Math.min(size, 65_536));
  const read = readSync(fd, buffer, 0, buffer.length, 0);
  const text = buffer.subarray(0, read).toString('utf8');
  const newline = text.indexOf('\n');
  try {
    const first = JSON.parse(newline === -1 ? text : text.slice(0, newline)) as { timestamp?: unknown };
    const at = typeof first.timestamp === 'string' ? Date.parse(first.timestamp) : Number.NaN;
    return Number.isNaN(at) ? undefined : at;
  } catch {
    return undefined;
  }
}

type FileSettings = Pick<AuditConfig, 'rotate_max_bytes' | 'rotate_max_age_secs' | 'max_backups' | 'compress_rotated'>;

/**
 * `file = "..."`: lines appended through one write stream, rotated by size and by the age of the
 * file's first event. Rotation, gzip and pruning are asynchronous: lines recorded meanwhile wait
 * in a bounded list and go to the new file.
 */
export class FileSink implements AuditSink {
  private stream: WriteStream | undefined;
  /** Bytes in the current file (what it had when opened plus what was written since). */
  private size: number;
  /** When the current file's first event was recorded; undefined while it is empty. */
  private firstAt: number | undefined;
  private rotating: Promise<void> | undefined;
  /** Lines taken during a rotation, written to the new file once it is open. */
  private held: { line: string; at: number }[] = [];
  private readonly outstanding = new Outstanding();
  /** Compression and pruning of rotated files, one after the other. */
  private background: Promise<void> = Promise.resolve();
  private readonly stopBackground = new AbortController();
  /** After a stream error, no reopening before this (performance.now()). */
  private reopenAfter = 0;
  private lastBackupMs = 0;
  private readonly path: string;
  private readonly backupPattern: RegExp;

  /**
   * Opens (creating if needed) the file for appending. Throws an Error naming the path when its
   * directory is missing or the file cannot be opened: a start-up error, never a runtime one.
   */
  static open(path: string, settings: FileSettings, now: () => number, maxBacklog: number, counters: SinkCounters, warning: RateLimitedWarning): FileSink {
    const absolute = resolve(path);
    const directory = dirname(absolute);
    let isDirectory = false;
    try {
      isDirectory = statSync(directory).isDirectory();
    } catch {
      // Reported below.
    }
    if (!isDirectory) throw new Error(`audit file ${JSON.stringify(path)}: directory ${JSON.stringify(directory)} does not exist`);
    let fd: number;
    try {
      fd = openSync(absolute, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o600);
    } catch (error) {
      throw new Error(`audit file ${JSON.stringify(path)}: cannot open it for appending (${codeOf(error)})`);
    }
    let size = 0;
    let firstAt: number | undefined;
    try {
      const stat = fstatSync(fd);
      if (!stat.isFile()) throw new Error('not a regular file');
      size = stat.size;
      if (size > 0) {
        const readFd = openSync(absolute, 'r');
        try {
          // An existing file of unknown age counts from its last write, so it is not rotated at once.
          firstAt = firstEventTime(readFd, size) ?? stat.mtimeMs;
        } finally {
          closeSync(readFd);
        }
      }
    } catch (error) {
      closeSync(fd);
      throw new Error(`audit file ${JSON.stringify(path)}: cannot use it (${error instanceof Error && error.message === 'not a regular file' ? 'not a regular file' : codeOf(error)})`);
    }
    return new FileSink(absolute, fd, size, firstAt, settings, now, maxBacklog, counters, warning);
  }

  private constructor(
    path: string,
    fd: number,
    size: number,
    firstAt: number | undefined,
    private readonly settings: FileSettings,
    private readonly now: () => number,
    private readonly maxBacklog: number,
    private readonly counters: SinkCounters,
    private readonly warning: RateLimitedWarning,
  ) {
    this.path = path;
    this.size = size;
    this.firstAt = firstAt;
    this.backupPattern = new RegExp(`^${escapeRegExp(basename(path))}\\.(${STAMP})(\\.gz)?$`);
    this.stream = this.openStream(fd);
    // Leftovers of a gzip cut short by the previous process's exit, and backups beyond the limit.
    this.background = this.background.then(() => this.prune(true));
  }

  write(line: string, at: number): void {
    if (this.rotating) {
      this.hold(line, at);
      return;
    }
    const bytes = Buffer.byteLength(line) + 1;
    const maxAgeMs = this.settings.rotate_max_age_secs * 1_000;
    const tooOld = maxAgeMs > 0 && this.firstAt !== undefined && this.now() - this.firstAt >= maxAgeMs;
    // Rotating before the line that would cross the limit: a file never exceeds rotate_max_bytes
    // unless one line alone does.
    const tooBig = this.size > 0 && this.size + bytes > this.settings.rotate_max_bytes;
    if (tooOld || tooBig) {
      // What was gathered belongs to the file being rotated out.
      this.commit();
      this.rotate();
      this.hold(line, at);
      return;
    }
    if (this.outstanding.count >= this.maxBacklog) {
      this.counters.writeFailures++;
      this.warning.warn('file-backlog', { sink: 'file', path: this.path, backlog: this.outstanding.count }, 'audit file sink: backlog full, lines dropped');
      return;
    }
    this.outstanding.gather(line);
    this.size += bytes;
    this.firstAt ??= at;
  }

  commit(): void {
    if (this.outstanding.batchLines === 0) return;
    const { text, lines } = this.outstanding.take();
    const stream = this.currentStream();
    if (!stream) {
      this.counters.writeFailures += lines;
      this.outstanding.done(lines);
      return;
    }
    stream.write(text, (error) => {
      if (error) this.counters.writeFailures += lines;
      this.outstanding.done(lines);
    });
  }

  async flush(signal: AbortSignal): Promise<void> {
    this.commit();
    const settled = async (): Promise<void> => {
      while (this.rotating) await this.rotating;
      await this.outstanding.idle();
      await this.background;
    };
    await untilSettledOrAborted(settled(), signal);
  }

  async close(signal: AbortSignal): Promise<void> {
    const onAbort = (): void => this.stopBackground.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await this.flush(signal);
      const stream = this.stream;
      this.stream = undefined;
      if (stream) await untilSettledOrAborted(endStream(stream), signal);
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  private hold(line: string, at: number): void {
    if (this.held.length + this.outstanding.count >= this.maxBacklog) {
      this.counters.writeFailures++;
      this.warning.warn('file-backlog', { sink: 'file', path: this.path, backlog: this.held.length }, 'audit file sink: backlog full, lines dropped');
      return;
    }
    this.held.push({ line, at });
  }

  private openStream(fd?: number): WriteStream {
    const stream = fd === undefined ? createWriteStream(this.path, { flags: 'a', mode: 0o600 }) : createWriteStream(this.path, { fd, flags: 'a' });
    stream.on('error', (error) => {
      this.warning.warn('file-error', { sink: 'file', path: this.path, code: codeOf(error) }, 'audit file sink: write failed');
      if (this.stream === stream) {
        this.stream = undefined;
        this.reopenAfter = performance.now() + 1_000;
      }
    });
    return stream;
  }

  /** The stream to write to; reopened (at most once a second) after an error destroyed it. */
  private currentStream(): WriteStream | undefined {
    if (this.stream && !this.stream.destroyed) return this.stream;
    if (performance.now() < this.reopenAfter) return undefined;
    this.stream = this.openStream();
    return this.stream;
  }

  private rotate(): void {
    const old = this.stream;
    this.stream = undefined;
    this.rotating = (async () => {
      if (old) await endStream(old);
      const backup = await this.freeBackupName();
      let renamed = false;
      try {
        await rename(this.path, backup);
        renamed = true;
      } catch (error) {
        // Keep appending to the same file; the next attempt comes after another full period.
        this.warning.warn('file-rotate', { sink: 'file', path: this.path, code: codeOf(error) }, 'audit file sink: rotation failed');
      }
      this.stream = this.openStream();
      this.size = 0;
      this.firstAt = undefined;
      if (renamed) this.background = this.background.then(() => this.afterRotation(backup));
    })()
      .catch((error: unknown) => {
        this.warning.warn('file-rotate', { sink: 'file', path: this.path, code: codeOf(error) }, 'audit file sink: rotation failed');
        this.stream ??= this.openStream();
      })
      .finally(() => {
        this.rotating = undefined;
        const held = this.held;
        this.held = [];
        for (const { line, at } of held) this.write(line, at);
        this.commit();
      });
  }

  /** `<file>.<stamp>`, strictly later than the previous backup's and not taken (gzipped or not). */
  private async freeBackupName(): Promise<string> {
    let ms = Math.max(this.now(), this.lastBackupMs + 1);
    for (;;) {
      const name = `${this.path}.${backupStamp(ms)}`;
      if (!(await exists(name)) && !(await exists(`${name}.gz`))) {
        this.lastBackupMs = ms;
        return name;
      }
      ms++;
    }
  }

  private async afterRotation(backup: string): Promise<void> {
    if (this.settings.max_backups === 0) {
      await unlink(backup).catch(() => undefined);
      return;
    }
    if (this.settings.compress_rotated) await this.compress(backup);
    await this.prune(false);
  }

  /** gzip, streamed, to `<backup>.gz.partial`, renamed to `.gz` when complete; the original stays if anything fails. */
  private async compress(backup: string): Promise<void> {
    const partial = `${backup}.gz.partial`;
    try {
      await pipeline(createReadStream(backup), createGzip(), createWriteStream(partial, { mode: 0o600 }), { signal: this.stopBackground.signal });
      await rename(partial, `${backup}.gz`);
      await unlink(backup);
    } catch (error) {
      await unlink(partial).catch(() => undefined);
      // Already pruned (a burst of rotations outran compression): nothing was lost that was meant to be kept.
      const pruned = codeOf(error) === 'ENOENT' && !(await exists(backup));
      if (!pruned && !this.stopBackground.signal.aborted) this.warning.warn('file-compress', { sink: 'file', path: this.path, code: codeOf(error) }, 'audit file sink: compressing a rotated file failed');
    }
  }

  /** Deletes the oldest backups beyond max_backups (and, at start, `.gz.partial` leftovers). */
  private async prune(atStart: boolean): Promise<void> {
    try {
      const directory = dirname(this.path);
      const names = await readdir(directory);
      if (atStart) {
        const prefix = `${basename(this.path)}.`;
        for (const name of names) {
          if (name.startsWith(prefix) && name.endsWith('.gz.partial')) await unlink(join(directory, name)).catch(() => undefined);
        }
      }
      const backups = names
        .map((name) => ({ name, stamp: this.backupPattern.exec(name)?.[1] }))
        .filter((entry): entry is { name: string; stamp: string } => entry.stamp !== undefined)
        .sort((a, b) => (a.stamp < b.stamp ? -1 : a.stamp > b.stamp ? 1 : 0));
      const excess = backups.length - this.settings.max_backups;
      for (const { name } of backups.slice(0, Math.max(0, excess))) await unlink(join(directory, name)).catch(() => undefined);
    } catch (error) {
      this.warning.warn('file-prune', { sink: 'file', path: this.path, code: codeOf(error) }, 'audit file sink: deleting old rotated files failed');
    }
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** Ends a write stream and resolves once its file is closed (or it failed). */
function endStream(stream: WriteStream): Promise<void> {
  if (stream.closed || stream.destroyed) return Promise.resolve();
  return new Promise((done) => {
    stream.once('close', () => done());
    stream.end();
  });
}

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
    if (!batch.settled && !this.stop.signal.aborted) this.warning.warn('export-gave-up', { sink: 'export', events: batch.lines.length }, 'audit export: batch dropped after its retries');
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

