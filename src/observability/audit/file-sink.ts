/**
 * The `file = "..."` sink: lines appended to one file, rotated by size and by age into
 * `<file>.<UTC time>` backups, which are then gzipped and pruned to max_backups in the background.
 * Rotation is the delicate part: a file never exceeds rotate_max_bytes unless one line alone does,
 * lines recorded while it runs wait in a bounded list, and a failure never stops the gateway.
 *
 * With an owner of the rotated files (the S3 archive, s3-archive.ts), a backup is claimed before
 * it is made and released once final (after gzip), and none is pruned by max_backups or deleted:
 * the owner deletes each once the store has it.
 */
import { constants, createReadStream, createWriteStream, fstatSync, openSync, closeSync, readSync, statSync, type WriteStream } from 'node:fs';
import { access, readdir, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import type { AuditConfig } from '../../config/schema.js';
import type { RateLimitedWarning } from '../logger.js';
import { Outstanding } from './outstanding.js';
import { codeOf, untilSettledOrAborted, type AuditSink, type SinkCounters } from './sink.js';

/** `audit.log.2030-01-02T03-04-05.678Z`: the rotation time, UTC, sortable as text, no `:` (Windows). */
function backupStamp(ms: number): string {
  return new Date(ms).toISOString().replace(/:/g, '-');
}

/** The rotation time in a backup's name, as a regular expression. */
const STAMP = String.raw`\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}Z`;

/**
 * The names of the backups of the audit file at `path` (the rotation, and the archive that uploads
 * them): `<file>.<stamp>` or `<file>.<stamp>.gz`, the stamp captured.
 */
export function backupPattern(path: string): RegExp {
  return new RegExp(`^${escapeRegExp(basename(path))}\\.(${STAMP})(\\.gz)?$`);
}

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

/** Who takes the rotated files over and deletes them (the S3 archive). */
export interface RotationOwner {
  /** A backup is about to be made at `path` (`<file>.<stamp>`); it is not the owner's until released. */
  claim(path: string): void;
  /** The backup claimed at `path` is final (as `path`, or `path.gz` once compressed), or was never made. */
  release(path: string): void;
  /** The directory changed in a way the owner may care about (leftovers removed at start). */
  changed(): void;
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
  static open(
    path: string,
    settings: FileSettings,
    now: () => number,
    maxBacklog: number,
    counters: SinkCounters,
    warning: RateLimitedWarning,
    owner?: RotationOwner,
  ): FileSink {
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
      throw new Error(
        `audit file ${JSON.stringify(path)}: cannot use it (${error instanceof Error && error.message === 'not a regular file' ? 'not a regular file' : codeOf(error)})`,
      );
    }
    return new FileSink(absolute, fd, size, firstAt, settings, now, maxBacklog, counters, warning, owner);
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
    private readonly owner: RotationOwner | undefined,
  ) {
    this.path = path;
    this.size = size;
    this.firstAt = firstAt;
    this.backupPattern = backupPattern(path);
    this.stream = this.openStream(fd);
    // Leftovers of a gzip cut short by the previous process's exit, and backups beyond the limit.
    this.background = this.background.then(() => this.prune(true)).then(() => this.owner?.changed());
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
      // Claimed before it exists: the owner must not take a file that is still to be compressed.
      this.owner?.claim(backup);
      try {
        await rename(this.path, backup);
        renamed = true;
      } catch (error) {
        this.owner?.release(backup);
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
    if (this.owner) {
      // The owner deletes it once archived; max_backups does not apply.
      try {
        if (this.settings.compress_rotated) await this.compress(backup);
      } finally {
        this.owner.release(backup);
      }
      return;
    }
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
      if (!pruned && !this.stopBackground.signal.aborted)
        this.warning.warn('file-compress', { sink: 'file', path: this.path, code: codeOf(error) }, 'audit file sink: compressing a rotated file failed');
    }
  }

  /** Deletes the oldest backups beyond max_backups, unless they have an owner (and, at start, `.gz.partial` leftovers). */
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
      if (this.owner) return;
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
