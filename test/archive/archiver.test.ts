/**
 * The archive inside one process: the audit log with `[audit.s3]` against a real s3rver (or a
 * store that never answers), for what the gateway tests do not reach: leftovers of a compression
 * cut short, uncompressed files, a store that refuses, a store that hangs at shutdown, and the
 * backoff's bounds.
 */
import { once } from 'node:events';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { CreateBucketCommand, HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, describe, expect, it } from 'vitest';
import { auditSchema } from '../../src/config/schema.js';
import { AuditLog } from '../../src/observability/audit/log.js';
import { archiveBackoffMs, emptyArchiveStats, objectKey } from '../../src/observability/audit/s3-archive.js';
import { cleanupTempDirs, tempDir, waitFor } from '../helpers/cli.js';
import { capture } from '../observability/audit-helpers.js';
import { createLogger } from '../../src/observability/logger.js';
import { BUCKET, credentials, Store } from './store.js';

afterAll(() => cleanupTempDirs());

const creds = credentials();
// The SDK's default chain reads them from this process's environment, as the gateway's does.
process.env['AWS_ACCESS_KEY_ID'] = creds.AWS_ACCESS_KEY_ID;
process.env['AWS_SECRET_ACCESS_KEY'] = creds.AWS_SECRET_ACCESS_KEY;

function audit(dir: string, endpoint: string, s3: Record<string, unknown> = {}, file: Record<string, unknown> = {}) {
  return auditSchema.parse({
    file: join(dir, 'audit.log'),
    ...file,
    s3: { bucket: BUCKET, endpoint, force_path_style: true, instance: 'unit', retry_backoff_ms: 50, retry_backoff_max_ms: 200, ...s3 },
  });
}

function logged() {
  const out = capture();
  return { log: createLogger({ level: 'debug', format: 'json', destination: out.stream }), lines: out.lines, text: out.text };
}

const client = (endpoint: string) =>
  new S3Client({
    region: 'us-east-1',
    endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: creds.AWS_ACCESS_KEY_ID, secretAccessKey: creds.AWS_SECRET_ACCESS_KEY },
  });

describe('the archive', () => {
  it('uploads the complete .gz of a compression cut short (and deletes both), and uncompressed files as they are', async () => {
    const dir = tempDir();
    const auditDir = join(dir, 'audit');
    mkdirSync(auditDir);
    const store = new Store(join(dir, 'store'));
    await store.start();
    const s3 = client(store.endpoint);
    try {
      writeFileSync(join(auditDir, 'audit.log.2020-01-01T00-00-00.000Z'), '{"n":1}\n');
      writeFileSync(join(auditDir, 'audit.log.2020-01-01T00-00-00.000Z.gz'), gzipSync('{"n":1}\n'));
      writeFileSync(join(auditDir, 'audit.log.2020-01-01T00-00-01.000Z'), '{"n":2}\n');
      // Not this file's: another audit file's backup, and a partial gzip.
      writeFileSync(join(auditDir, 'other.log.2020-01-01T00-00-00.000Z'), '{"n":3}\n');
      const stats = emptyArchiveStats();
      const log = logged();
      const auditLog = AuditLog.create(audit(auditDir, store.endpoint, {}, { compress_rotated: false }), { log: log.log, archiveStats: stats });
      await waitFor(() => stats.uploaded === 2, 20_000, 'two uploads');
      await auditLog.close();
      expect(readdirSync(auditDir).sort()).toEqual(['audit.log', 'other.log.2020-01-01T00-00-00.000Z']);
      const puts = store.received.filter((r) => r.method === 'PUT' && r.url.includes('/unit/'));
      expect(puts.map((r) => r.url.split('?')[0]).sort()).toEqual([
        `/${BUCKET}/unit/audit.log.2020-01-01T00-00-00.000Z.gz`,
        `/${BUCKET}/unit/audit.log.2020-01-01T00-00-01.000Z`,
      ]);
      const gz = await s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'unit/audit.log.2020-01-01T00-00-00.000Z.gz' }));
      expect(gz.ContentType).toBe('application/gzip');
      const plain = await s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'unit/audit.log.2020-01-01T00-00-01.000Z' }));
      expect(plain.ContentType).toBe('application/x-ndjson');
      expect(stats.bytes).toBe(gzipSync('{"n":1}\n').length + '{"n":2}\n'.length);
      expect(log.text()).not.toContain(creds.AWS_SECRET_ACCESS_KEY);
    } finally {
      s3.destroy();
      await store.stop();
    }
  });

  it('a store that refuses (no such bucket) keeps the file, counts and warns with the code and status only, and takes it once it can', async () => {
    const dir = tempDir();
    const auditDir = join(dir, 'audit');
    mkdirSync(auditDir);
    const store = new Store(join(dir, 'store'));
    await store.start();
    const s3 = client(store.endpoint);
    try {
      writeFileSync(join(auditDir, 'audit.log.2020-01-01T00-00-00.000Z.gz'), gzipSync('{"n":1}\n'));
      const stats = emptyArchiveStats();
      const log = logged();
      const auditLog = AuditLog.create(audit(auditDir, store.endpoint, { bucket: 'no-such-bucket' }), { log: log.log, archiveStats: stats });
      await waitFor(() => stats.failed >= 3, 20_000, 'failed attempts');
      expect(existsSync(join(auditDir, 'audit.log.2020-01-01T00-00-00.000Z.gz'))).toBe(true);
      expect(stats.pending).toBe(1);
      const warning = log.lines().find((l) => l['msg'] === 'audit archive: upload failed; the file stays and is tried again');
      expect(warning).toMatchObject({ sink: 's3', file: 'audit.log.2020-01-01T00-00-00.000Z.gz', code: 'NoSuchBucket', status: 404 });
      // Rate-limited: one warning for several attempts.
      expect(log.lines().filter((l) => l['msg'] === warning!['msg']).length).toBe(1);
      await s3.send(new CreateBucketCommand({ Bucket: 'no-such-bucket' }));
      await waitFor(() => stats.uploaded === 1, 20_000, 'the upload once the bucket exists');
      expect(stats.pending).toBe(0);
      expect(existsSync(join(auditDir, 'audit.log.2020-01-01T00-00-00.000Z.gz'))).toBe(false);
      await auditLog.close();
      expect(log.text()).not.toContain(creds.AWS_SECRET_ACCESS_KEY);
    } finally {
      s3.destroy();
      await store.stop();
    }
  });

  it('asks for aws:kms with the configured key, signed with credentials from a profile of the shared credentials file', async () => {
    const dir = tempDir();
    const auditDir = join(dir, 'audit');
    mkdirSync(auditDir);
    const store = new Store(join(dir, 'store'));
    await store.start();
    const profile = credentials();
    const saved = { ...process.env };
    // The SDK's default chain without the environment keys: AWS_PROFILE in AWS_SHARED_CREDENTIALS_FILE.
    delete process.env['AWS_ACCESS_KEY_ID'];
    delete process.env['AWS_SECRET_ACCESS_KEY'];
    process.env['AWS_SHARED_CREDENTIALS_FILE'] = join(dir, 'credentials');
    process.env['AWS_CONFIG_FILE'] = join(dir, 'config');
    process.env['AWS_PROFILE'] = 'archive';
    writeFileSync(
      join(dir, 'credentials'),
      `[archive]\naws_access_key_id = ${profile.AWS_ACCESS_KEY_ID}\naws_secret_access_key = ${profile.AWS_SECRET_ACCESS_KEY}\n`,
    );
    writeFileSync(join(dir, 'config'), '');
    try {
      writeFileSync(join(auditDir, 'audit.log.2020-01-01T00-00-00.000Z.gz'), gzipSync('{"n":1}\n'));
      const stats = emptyArchiveStats();
      const log = logged();
      const auditLog = AuditLog.create(audit(auditDir, store.endpoint, { server_side_encryption: 'aws:kms', kms_key_id: 'alias/mcp-audit' }), {
        log: log.log,
        archiveStats: stats,
      });
      await waitFor(() => stats.uploaded === 1, 20_000, 'the upload');
      await auditLog.close();
      const put = store.received.find((r) => r.method === 'PUT' && r.url.includes('/unit/'));
      expect(put).toMatchObject({ sse: 'aws:kms', kmsKeyId: 'alias/mcp-audit' });
      expect(put?.authorization).toContain(`Credential=${profile.AWS_ACCESS_KEY_ID}/`);
      expect(log.text()).not.toContain(profile.AWS_SECRET_ACCESS_KEY);
    } finally {
      for (const key of ['AWS_SHARED_CREDENTIALS_FILE', 'AWS_CONFIG_FILE', 'AWS_PROFILE']) delete process.env[key];
      Object.assign(process.env, saved);
      await store.stop();
    }
  });

  it('two audit logs on one file (a reload hands over) upload each rotated file once', async () => {
    const dir = tempDir();
    const auditDir = join(dir, 'audit');
    mkdirSync(auditDir);
    const store = new Store(join(dir, 'store'));
    await store.start();
    try {
      for (let i = 0; i < 30; i++) writeFileSync(join(auditDir, `audit.log.2020-01-01T00-00-${String(i).padStart(2, '0')}.000Z.gz`), gzipSync(`{"n":${i}}\n`));
      const stats = emptyArchiveStats();
      const config = audit(auditDir, store.endpoint);
      const old = AuditLog.create(config, { log: logged().log, archiveStats: stats });
      const next = AuditLog.create(config, { log: logged().log, archiveStats: stats });
      await waitFor(() => readdirSync(auditDir).length === 1, 20_000, 'every file uploaded');
      await Promise.all([old.close(), next.close()]);
      const puts = store.received.filter((r) => r.method === 'PUT' && r.url.includes('/unit/')).map((r) => r.url.split('?')[0]);
      expect(puts).toHaveLength(30);
      expect(new Set(puts).size).toBe(30);
      expect(stats.uploaded).toBe(30);
    } finally {
      await store.stop();
    }
  });

  it('close() ends within its bound when the store accepts connections and never answers; the file stays', async () => {
    const dir = tempDir();
    const auditDir = join(dir, 'audit');
    mkdirSync(auditDir);
    const sockets = new Set<Socket>();
    const hung = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
    });
    hung.listen(0, '127.0.0.1');
    await once(hung, 'listening');
    const address = hung.address();
    const endpoint = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
    try {
      writeFileSync(join(auditDir, 'audit.log.2020-01-01T00-00-00.000Z.gz'), gzipSync('{"n":1}\n'));
      const stats = emptyArchiveStats();
      const auditLog = AuditLog.create(audit(auditDir, endpoint, { request_timeout_ms: 600_000 }), {
        log: logged().log,
        archiveStats: stats,
        closeTimeoutMs: 1_000,
      });
      await waitFor(() => sockets.size > 0, 20_000, 'the upload to reach the store');
      let closed = false;
      void auditLog.close().then(() => (closed = true));
      // Bounded by closeTimeoutMs (1 s), not by request_timeout_ms (10 minutes).
      await waitFor(() => closed, 15_000, 'close() to return');
      expect(existsSync(join(auditDir, 'audit.log.2020-01-01T00-00-00.000Z.gz'))).toBe(true);
      expect(stats.uploaded).toBe(0);
    } finally {
      for (const socket of sockets) socket.destroy();
      hung.close();
    }
  });
});

describe('archive helpers', () => {
  it('backoff doubles from retry_backoff_ms, never beyond retry_backoff_max_ms, jittered down by at most half', () => {
    expect(archiveBackoffMs(1, 100, 1_000, () => 1)).toBe(100);
    expect(archiveBackoffMs(1, 100, 1_000, () => 0)).toBe(50);
    expect(archiveBackoffMs(3, 100, 1_000, () => 1)).toBe(400);
    expect(archiveBackoffMs(5, 100, 1_000, () => 1)).toBe(1_000);
    expect(archiveBackoffMs(10_000, 100, 1_000, () => 1)).toBe(1_000);
    for (let n = 1; n < 60; n++) {
      const ms = archiveBackoffMs(n, 1_000, 300_000);
      expect(ms).toBeGreaterThanOrEqual(Math.min(300_000, 1_000 * 2 ** (n - 1)) / 2);
      expect(ms).toBeLessThanOrEqual(300_000);
    }
  });

  it('object keys: prefix (a "/" added), instance, file name', () => {
    expect(objectKey('', 'gw-1', 'audit.log.2030-01-02T03-04-05.678Z.gz')).toBe('gw-1/audit.log.2030-01-02T03-04-05.678Z.gz');
    expect(objectKey('mcp-guard', 'gw-1', 'a')).toBe('mcp-guard/gw-1/a');
    expect(objectKey('mcp-guard/', 'gw-1', 'a')).toBe('mcp-guard/gw-1/a');
  });
});
