/**
 * `[audit.s3]`: the archive. Every file the file sink rotates (`<file>.<UTC time>`, or its `.gz`
 * once compressed) is uploaded to S3 or an S3-compatible store with the official AWS SDK
 * (lib-storage's Upload: one PUT, or a multipart upload for a file larger than part_size_bytes),
 * and deleted locally only once the store has confirmed it (the upload completed). docs/audit.md
 * "Archive to S3" is the contract.
 *
 * The directory is the queue: the archiver uploads what it finds there, oldest first, so that
 * files rotated before a crash or a restart are picked up like new ones, and nothing is kept in
 * memory that a crash could lose. While the store fails, the same file is tried again after an
 * exponential backoff with jitter (retry_backoff_ms doubling up to retry_backoff_max_ms); nothing
 * is deleted meanwhile, and the file sink never prunes a file the archive owns (file-sink.ts).
 * The object key is `<prefix><instance>/<file name>`: the same file always gets the same key, so
 * an upload repeated after a crash (between the store's answer and the deletion) replaces the
 * object with the same bytes rather than adding a copy.
 *
 * Credentials are the AWS SDK's default chain only (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
 * AWS_SESSION_TOKEN, AWS_PROFILE and the shared files, web identity, ECS or EC2 instance
 * metadata); nothing here reads, holds or logs one. Warnings name the file, an error code and an
 * HTTP status, never an SDK error message.
 *
 * The SDK is loaded when the first archiver starts (about 10 MB of modules a gateway without
 * `[audit.s3]` never loads).
 */
import { constants } from 'node:fs';
import { lstat, open, readdir, unlink, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Upload } from '@aws-sdk/lib-storage';
import type { AuditS3Config } from '../../config/schema.js';
import { delay } from '../../delay.js';
import type { Logger, RateLimitedWarning } from '../logger.js';
import { backupPattern, type RotationOwner } from './file-sink.js';
import { codeOf, untilSettledOrAborted } from './sink.js';

/** Cumulative counts since the process started (one object across reloads) and the files waiting now. */
export interface ArchiveStats {
  /** Files the store confirmed (then deleted locally). */
  uploaded: number;
  /** Upload attempts that failed (each retry counts). */
  failed: number;
  /** Bytes of the files the store confirmed. */
  bytes: number;
  /** Rotated files waiting for the store at the last look, the one being uploaded included. */
  pending: number;
}

export function emptyArchiveStats(): ArchiveStats {
  return { uploaded: 0, failed: 0, bytes: 0, pending: 0 };
}

/**
 * Backups being made by a file sink of this process (claimed until final, by the name without
 * `.gz`), and files being uploaded by an archiver: shared by every archiver of the process, so that
 * around a reload (two audit logs on one file for a moment) a file is never uploaded twice at once.
 */
const making = new Set<string>();
const uploading = new Set<string>();
/** The archivers running now, told when a file is released. */
const live = new Set<S3Archiver>();

/** The delay before retry `failures` (1-based): min(max, first × 2^(failures-1)), then jittered down by up to half. */
export function archiveBackoffMs(failures: number, firstMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, firstMs * 2 ** Math.min(Math.max(failures - 1, 0), 40));
  return Math.round(ceiling / 2 + (ceiling / 2) * random());
}

/** `<prefix>/<instance>/<name>`: the prefix gets a `/` when it has none at its end. */
export function objectKey(prefix: string, instance: string, name: string): string {
  const start = prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`;
  return `${start}${instance}/${name}`;
}

/** The host name as a key segment: letters, digits, '.', '_', '-' (anything else becomes '-'). */
export function defaultInstance(): string {
  const name = hostname()
    .replace(/[^A-Za-z0-9._-]/g, '-')
    .slice(0, 128);
  return name === '' ? 'gateway' : name;
}

let nodeWarningDone = false;

/**
 * The SDK writes a multi-line NodeVersionSupportWarning to stderr on Node < 22 (its releases after
 * January 2027 need Node 22): true, but the only line on stderr that is not JSON. It is replaced by
 * one JSON warning in the operational log, unless the operator set the SDK's own switch.
 */
function replaceNodeVersionWarning(log: Logger): void {
  if (nodeWarningDone) return;
  nodeWarningDone = true;
  const variable = 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED';
  const major = Number(process.versions.node.split('.')[0]);
  if (process.env[variable] !== undefined || major >= 22) return;
  process.env[variable] = 'true';
  log.warn(
    { node: process.version },
    'audit archive: the AWS SDK releases after the first week of January 2027 need Node.js 22 or later; this one keeps working, but upgrade Node.js to keep receiving SDK fixes',
  );
}

interface Sdk {
  client: S3Client;
  Upload: typeof Upload;
}

/** What the archiver needs of the file sink's settings. */
export interface ArchiveTarget {
  /** The live audit file, absolute: its rotated files are `<file>.<stamp>[.gz]` beside it. */
  file: string;
}

/**
 * What one attempt at one file came to: `done` (the store confirmed it; deleted locally), `gone`
 * (not there, or not a regular file), `unreadable` (it could not be opened or read here),
 * `failed` (the store failed or refused).
 */
type Outcome = 'done' | 'gone' | 'unreadable' | 'failed';

export class S3Archiver implements RotationOwner {
  private readonly directory: string;
  private readonly pattern: RegExp;
  private readonly instance: string;
  /** Aborts backoff waits and the upload in flight: close() ran out of time. */
  private readonly stop = new AbortController();
  /**
   * Aborted by close(): the archive is closing (no pending count kept, no backoff waited out: the
   * store is failing, no time to wait at shutdown).
   */
  private readonly quit = new AbortController();
  private sdk: Promise<Sdk> | undefined;
  private loop: Promise<void> | undefined;
  private kicked = true;
  private wake: (() => void) | undefined;

  constructor(
    target: ArchiveTarget,
    private readonly config: AuditS3Config,
    private readonly stats: ArchiveStats,
    private readonly warning: RateLimitedWarning,
    private readonly log: Logger,
    private readonly random: () => number = Math.random,
  ) {
    this.directory = dirname(target.file);
    this.pattern = backupPattern(target.file);
    this.instance = config.instance ?? defaultInstance();
  }

  /** Starts looking for rotated files (those already there first). */
  start(): void {
    live.add(this);
    this.loop ??= this.run().catch((error: unknown) => {
      this.warning.warn('s3-archive', { sink: 's3', code: codeOf(error) }, 'audit archive stopped: rotated files stay in the directory until the next start');
    });
  }

  claim(path: string): void {
    making.add(path);
  }

  release(path: string): void {
    making.delete(path);
    for (const archiver of live) archiver.changed();
  }

  changed(): void {
    this.kicked = true;
    this.wake?.();
  }

  /**
   * Uploads what is waiting (what the file sink rotated on its way out included), then stops;
   * when `signal` aborts, the upload in flight is abandoned (its file stays for the next start).
   * While the store is failing it stops at once: a backoff is no time to wait at shutdown.
   */
  async close(signal: AbortSignal): Promise<void> {
    this.quit.abort();
    const giveUp = (): void => this.stop.abort();
    if (signal.aborted) giveUp();
    signal.addEventListener('abort', giveUp, { once: true });
    try {
      this.changed();
      if (this.loop) await untilSettledOrAborted(this.loop, signal);
    } finally {
      signal.removeEventListener('abort', giveUp);
      this.stop.abort();
      live.delete(this);
      const sdk = this.sdk;
      if (sdk) void sdk.then(({ client }) => client.destroy()).catch(() => undefined);
    }
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stop.signal.aborted) {
      this.kicked = false;
      const files = await this.waiting();
      if (!this.quit.signal.aborted) this.stats.pending = files.length;
      if (files.length === 0) {
        if (this.quit.signal.aborted) return;
        await this.idle();
        continue;
      }
      let failed = false;
      let progress = false;
      for (const path of files) {
        if (this.stop.signal.aborted) return;
        const base = path.replace(/\.gz$/, '');
        // Taken meanwhile: another archiver of this file (a reload) has it, or a sink remakes it.
        if (uploading.has(base) || making.has(base)) continue;
        uploading.add(base);
        let outcome: Outcome = 'failed';
        try {
          outcome = await this.upload(path);
        } finally {
          uploading.delete(base);
          // Not uploaded: another archiver of this file (after a reload) may take it now.
          if (outcome !== 'done') for (const other of live) if (other !== this) other.changed();
        }
        if (outcome === 'failed') {
          failed = true;
          break;
        }
        // This file cannot be read here (permissions...): the others are not held up behind it; it is tried again after the backoff.
        if (outcome === 'unreadable') {
          failed = true;
          continue;
        }
        if (outcome === 'done') progress = true;
      }
      if (!failed) {
        failures = 0;
        // Nothing uploaded (every file was gone or taken by another archiver): wait for a change rather than look again at once.
        if (!progress) {
          if (this.quit.signal.aborted) return;
          await this.idle();
        }
        continue;
      }
      // The store is down at shutdown: the files stay for the next start.
      if (this.quit.signal.aborted) return;
      failures++;
      await delay(archiveBackoffMs(failures, this.config.retry_backoff_ms, this.config.retry_backoff_max_ms, this.random), { signal: this.quit.signal });
      if (this.quit.signal.aborted) return;
    }
  }

  /** Waits for a change (a rotation, a released file, close()). */
  private async idle(): Promise<void> {
    if (this.kicked || this.stop.signal.aborted) return;
    await new Promise<void>((done) => {
      const finish = (): void => {
        this.wake = undefined;
        this.stop.signal.removeEventListener('abort', finish);
        done();
      };
      this.wake = finish;
      this.stop.signal.addEventListener('abort', finish, { once: true });
    });
  }

  /**
   * The rotated files of this audit file, oldest first: `<file>.<stamp>.gz`, and `<file>.<stamp>`
   * unless its `.gz` is complete (a compression cut short before the original was deleted) or
   * being written. Files a sink is still making or another archiver is uploading are left out.
   */
  private async waiting(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.directory);
    } catch (error) {
      this.warning.warn('s3-scan', { sink: 's3', code: codeOf(error) }, 'audit archive: cannot read the audit directory');
      return [];
    }
    const present = new Set(names);
    const found: Array<{ stamp: string; path: string }> = [];
    for (const name of names) {
      const match = this.pattern.exec(name);
      if (!match) continue;
      const plain = match[2] === undefined;
      if (plain && (present.has(`${name}.gz`) || present.has(`${name}.gz.partial`))) continue;
      const path = join(this.directory, name);
      const base = path.replace(/\.gz$/, '');
      if (making.has(base) || uploading.has(base)) continue;
      // A symbolic link or a directory with a rotated file's name is not the sink's: never uploaded.
      const stat = await lstat(path).catch(() => undefined);
      if (!stat?.isFile()) {
        if (stat) this.warning.warn('s3-not-file', { sink: 's3', file: name }, 'audit archive: not a regular file, left alone');
        continue;
      }
      found.push({ stamp: match[1] as string, path });
    }
    return found.sort((a, b) => (a.stamp < b.stamp ? -1 : a.stamp > b.stamp ? 1 : 0)).map((entry) => entry.path);
  }

  /** One attempt at one file. */
  private async upload(path: string): Promise<Outcome> {
    const name = basename(path);
    // Opened before anything else, not following a symbolic link: what is uploaded is the file
    // that was rotated, even if its name is removed or replaced meanwhile. Non-blocking, so that a
    // FIFO swapped in under that name cannot hold the open (it is then no regular file: 'gone').
    let handle: FileHandle;
    let size: number;
    try {
      handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (error) {
      const code = codeOf(error);
      if (code === 'ENOENT' || code === 'ELOOP') return 'gone';
      this.failure(name, error);
      return 'unreadable';
    }
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) {
        await handle.close();
        return 'gone';
      }
      size = stat.size;
    } catch (error) {
      await handle.close().catch(() => undefined);
      this.failure(name, error);
      return 'unreadable';
    }
    const key = objectKey(this.config.prefix, this.instance, name);
    const controller = new AbortController();
    const abort = (): void => controller.abort();
    this.stop.signal.addEventListener('abort', abort, { once: true });
    // autoClose: the stream closes the file when it ends or is destroyed.
    const body = handle.createReadStream({ autoClose: true });
    // A read error also fails the upload that reads it; this listener only keeps an error before
    // the SDK reads from being an uncaught exception.
    body.on('error', () => undefined);
    try {
      const sdk = await this.loadSdk();
      const upload = new sdk.Upload({
        client: sdk.client,
        params: {
          Bucket: this.config.bucket,
          Key: key,
          Body: body,
          ContentType: name.endsWith('.gz') ? 'application/gzip' : 'application/x-ndjson',
          ...(this.config.server_side_encryption ? { ServerSideEncryption: this.config.server_side_encryption } : {}),
          ...(this.config.kms_key_id !== undefined ? { SSEKMSKeyId: this.config.kms_key_id } : {}),
        },
        partSize: this.config.part_size_bytes,
        queueSize: this.config.concurrency,
        leavePartsOnError: false,
        abortController: controller,
      });
      await upload.done();
    } catch (error) {
      if (!this.stop.signal.aborted) this.failure(name, error);
      return 'failed';
    } finally {
      body.destroy();
      this.stop.signal.removeEventListener('abort', abort);
    }
    // The store has it: no longer pending, and only now does the local copy go (and an uncompressed leftover of it).
    if (!this.quit.signal.aborted) this.stats.pending = Math.max(0, this.stats.pending - 1);
    await unlink(path).catch((error: unknown) => {
      if (codeOf(error) !== 'ENOENT')
        this.warning.warn('s3-delete', { sink: 's3', file: name, code: codeOf(error) }, 'audit archive: uploaded, but deleting the file failed');
    });
    if (name.endsWith('.gz')) {
      const plain = path.slice(0, -'.gz'.length);
      if (!making.has(plain)) await unlink(plain).catch(() => undefined);
    }
    this.stats.uploaded++;
    this.stats.bytes += size;
    this.log.debug({ file: name, object: key, bytes: size }, 'audit archive: uploaded');
    return 'done';
  }

  private failure(name: string, error: unknown): void {
    this.stats.failed++;
    const status = (error as { $metadata?: { httpStatusCode?: unknown } } | undefined)?.$metadata?.httpStatusCode;
    this.warning.warn(
      's3-upload',
      { sink: 's3', file: name, code: codeOf(error), ...(typeof status === 'number' ? { status } : {}) },
      'audit archive: upload failed; the file stays and is tried again',
    );
  }

  private loadSdk(): Promise<Sdk> {
    this.sdk ??= (async () => {
      replaceNodeVersionWarning(this.log);
      const [{ S3Client }, { Upload }] = await Promise.all([import('@aws-sdk/client-s3'), import('@aws-sdk/lib-storage')]);
      const region = this.config.region ?? (process.env['AWS_REGION'] || process.env['AWS_DEFAULT_REGION'] || 'us-east-1');
      const client = new S3Client({
        region,
        ...(this.config.endpoint !== undefined ? { endpoint: this.config.endpoint } : {}),
        forcePathStyle: this.config.force_path_style,
        // A bucket in another region than the one configured still works on AWS.
        followRegionRedirects: true,
        requestHandler: { connectionTimeout: this.config.connect_timeout_ms, requestTimeout: this.config.request_timeout_ms },
      });
      return { client, Upload };
    })();
    return this.sdk;
  }
}
