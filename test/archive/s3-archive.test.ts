/**
 * `[audit.s3]` end to end: a real gateway process (`mcp-guard serve`) in front of server-everything
 * (stdio), its audit file rotated every few lines, archived to a real S3-compatible store
 * (s3rver) that the tests stop and restart on the same port and directory. The store's objects
 * are read back with the official client, and every audit line is looked for: in the store, or
 * still in the local file.
 */
import { lstatSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { CliProcess, NODE, q, runCli, tempDir, trackProcesses, waitFor, writeConfig } from '../helpers/cli.js';
import { curlPost, EVERYTHING } from '../helpers/gateway.js';
import { BUCKET, credentials, Store } from './store.js';

const { running, mark } = trackProcesses();

const BACKUP = /^audit\.log\.\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}Z(\.gz)?$/;

/**
 * The rotated files of the audit directory that are regular files (what the archive has to upload).
 * A file the archiver deletes between the listing and the lstat (uploaded meanwhile) is not there.
 */
function rotated(dir: string): string[] {
  return readdirSync(dir)
    .filter((name) => BACKUP.test(name) && lstatSync(join(dir, name), { throwIfNoEntry: false })?.isFile() === true)
    .sort();
}

function config(dir: string, store: Store, marker: string, s3: string, extra = ''): string {
  return `[[upstream.servers]]
name = "everything"
path_prefix = "/everything"
command = ${q(NODE)}
args = [${q(EVERYTHING)}, "stdio", ${q(marker)}]

[audit]
file = ${q(join(dir, 'audit.log'))}
rotate_max_bytes = 4096
${extra}

[audit.s3]
endpoint = ${q(store.endpoint)}
force_path_style = true
prefix = "mcp-guard"
instance = "gw-test"
retry_backoff_ms = 100
retry_backoff_max_ms = 400
connect_timeout_ms = 1000
request_timeout_ms = 5000
${s3}
`;
}

/** One tools/call (echo), with the client's own x-request-id, which its audit line carries as client_request_id. */
async function call(base: string, id: string): Promise<void> {
  const reply = await curlPost(
    `${base}/mcp/everything`,
    { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { message: id } } },
    { 'x-request-id': id },
  );
  expect(reply.status, reply.text).toBe(200);
}

/** `count` calls, ten at a time; returns their ids. */
async function calls(base: string, label: string, count: number): Promise<string[]> {
  const ids = Array.from({ length: count }, (_, i) => `${label}-${i}`);
  for (let i = 0; i < ids.length; i += 10) await Promise.all(ids.slice(i, i + 10).map((id) => call(base, id)));
  return ids;
}

/** A value of the gateway's /metrics (0 when the series is absent). */
async function metric(base: string, series: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

/** How often each client_request_id appears among tool_call lines: the store's objects and the local live file together. */
function toolCalls(texts: string[]): Map<string, number> {
  const seen = new Map<string, number>();
  for (const text of texts) {
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const event = JSON.parse(line) as { event_type: string; client_request_id?: string };
      if (event.event_type !== 'tool_call' || event.client_request_id === undefined) continue;
      seen.set(event.client_request_id, (seen.get(event.client_request_id) ?? 0) + 1);
    }
  }
  return seen;
}

/** Every stderr line is a JSON log line (the SDK's multi-line Node version warning is not written raw). */
function expectJsonOnly(stderr: string): void {
  for (const line of stderr.split('\n').filter(Boolean)) expect(() => JSON.parse(line), line).not.toThrow();
}

describe('audit archive to S3', () => {
  it('archives every rotated file of hundreds of calls, across a 5 s outage of the store, none lost, none twice, none deleted early', async () => {
    const dir = tempDir();
    const auditDir = join(dir, 'audit');
    mkdirSync(auditDir);
    const store = new Store(join(dir, 'store'));
    await store.start();
    const creds = credentials();
    const m = mark('archive');
    // The bucket comes from the environment, over the file's; max_backups does not prune what is not archived.
    const path = writeConfig(
      config(auditDir, store, m, 'bucket = "not-this-bucket"\nserver_side_encryption = "AES256"', 'max_backups = 1'),
      'mcp-guard.toml',
      dir,
    );
    const gw = new CliProcess(['serve', '-c', path, '--port', '0'], {
      env: { ...creds, MCP_GUARD_AUDIT_S3_BUCKET: BUCKET, AWS_REGION: undefined, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: undefined },
    });
    running.push(gw);
    try {
      const base = await gw.address();
      const first = await calls(base, 'before', 150);
      await waitFor(
        async () => rotated(auditDir).length === 0 && (await metric(base, 'mcp_guard_audit_archive_uploads_total{result="ok"}')) >= 5,
        20_000,
        'the first files archived',
      );
      const uploadedBefore = await metric(base, 'mcp_guard_audit_archive_uploads_total{result="ok"}');

      // The outage: the store stops; calls go on; rotated files wait, every one of them.
      const downAt = Date.now();
      await store.stop();
      const during = await calls(base, 'during', 150);
      const kept = new Set<string>();
      await waitFor(
        async () => {
          for (const name of rotated(auditDir)) kept.add(name.replace(/\.gz$/, ''));
          return Date.now() - downAt >= 5_000 && kept.size >= 3 && (await metric(base, 'mcp_guard_audit_archive_uploads_total{result="error"}')) >= 2;
        },
        30_000,
        'a 5 s outage with files waiting and failed attempts',
      );
      // Nothing deleted while the store was down (max_backups = 1 would have pruned all but one); a
      // file seen before its gzip finished is there as its .gz.
      const stem = (name: string) => name.replace(/\.gz$/, '');
      expect(new Set(rotated(auditDir).map(stem))).toEqual(new Set([...kept].map(stem)));
      expect(await metric(base, 'mcp_guard_audit_archive_pending_files')).toBeGreaterThanOrEqual(kept.size);
      expect(await metric(base, 'mcp_guard_audit_archive_uploads_total{result="ok"}')).toBe(uploadedBefore);
      const warned = gw.logLines().filter((l) => l['msg'] === 'audit archive: upload failed; the file stays and is tried again');
      expect(warned.length).toBeGreaterThan(0);
      // Rate-limited: one warning per 10 s, not one per attempt.
      expect(warned.length).toBeLessThan(await metric(base, 'mcp_guard_audit_archive_uploads_total{result="error"}'));

      // Back on the same port and directory: what waited arrives.
      await store.start();
      const outageMs = Date.now() - downAt;
      await waitFor(() => rotated(auditDir).length === 0, 30_000, 'the waiting files archived after the outage');
      // The gauge follows right after the last deletion.
      await waitFor(async () => (await metric(base, 'mcp_guard_audit_archive_pending_files')) === 0, 10_000, 'pending files 0');
      const bytes = await metric(base, 'mcp_guard_audit_archive_uploaded_bytes_total');
      expect(bytes).toBeGreaterThan(0);

      gw.signal('SIGTERM');
      expect((await gw.waitExit(30_000)).code).toBe(0);

      const objects = await store.objects(creds);
      const keys = [...objects.keys()];
      expect(keys.length).toBeGreaterThanOrEqual(kept.size + 5);
      console.log(
        `archive: ${first.length + during.length} calls, ${keys.length} objects (${bytes} bytes gzipped), ${kept.size} files waited through a ${(outageMs / 1000).toFixed(1)} s outage`,
      );
      for (const key of keys) expect(key).toMatch(/^mcp-guard\/gw-test\/audit\.log\.\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}Z\.gz$/);
      // The live file is not archived until it is rotated: its lines are the rest.
      const live = readFileSync(join(auditDir, 'audit.log'), 'utf8');
      const seen = toolCalls([...objects.values()].map((b) => b.toString('utf8')).concat(live));
      for (const id of [...first, ...during]) expect(seen.get(id), id).toBe(1);
      expect(seen.size).toBe(first.length + during.length);

      // What the store received: SSE asked for on every upload, signed with the key id from the environment.
      const uploads = store.received.filter((r) => r.method === 'PUT' && r.url.includes('/mcp-guard/gw-test/'));
      expect(uploads.length).toBe(keys.length);
      for (const upload of uploads) {
        expect(upload.url.startsWith(`/${BUCKET}/`)).toBe(true);
        expect(upload.sse).toBe('AES256');
        expect(upload.authorization).toContain(`Credential=${creds.AWS_ACCESS_KEY_ID}/`);
      }
      expect(store.received.some((r) => r.url.includes('not-this-bucket'))).toBe(false);

      // No secret anywhere (the secrets scan checks the audit file and the output too), and no raw warning.
      expect(gw.stdout + gw.stderr).not.toContain(creds.AWS_SECRET_ACCESS_KEY);
      for (const bytes of objects.values()) expect(bytes.toString('utf8')).not.toContain(creds.AWS_SECRET_ACCESS_KEY);
      expectJsonOnly(gw.stderr);
      expect(gw.logLines().some((l) => String(l['msg']).includes('need Node.js 22'))).toBe(Number(process.versions.node.split('.')[0]) < 22);
      expect(gw.logLines().some((l) => String(l['msg']).includes('max_backups is not applied'))).toBe(true);
    } finally {
      await store.stop();
    }
  }, 150_000);

  it('a stop while the store is down ends promptly and keeps the files; the next start uploads them, a large one in parts, and leaves symlinks alone', async () => {
    const dir = tempDir();
    const auditDir = join(dir, 'audit');
    mkdirSync(auditDir);
    const store = new Store(join(dir, 'store'));
    // The port of a store that is down.
    await store.start();
    await store.stop();
    const creds = credentials();
    const m = mark('restart');
    // max_backups = 1: neither gateway may prune, at start or after a rotation, what is not archived.
    const path = writeConfig(
      config(auditDir, store, m, `bucket = ${q(BUCKET)}\npart_size_bytes = 5242880\nconcurrency = 2`, 'max_backups = 1'),
      'mcp-guard.toml',
      dir,
    );
    const env = { ...creds, AWS_REGION: undefined };
    const first = new CliProcess(['serve', '-c', path, '--port', '0'], { env });
    running.push(first);
    const base = await first.address();
    const ids = await calls(base, 'down', 60);
    await waitFor(
      async () => rotated(auditDir).length >= 3 && (await metric(base, 'mcp_guard_audit_archive_uploads_total{result="error"}')) >= 1,
      20_000,
      'files waiting for a store that is down',
    );
    const before = rotated(auditDir);
    // A stop does not wait for a store that is down: the audit log's close is bounded (5 s), the grace period is not used up.
    const stopAt = performance.now();
    first.signal('SIGTERM');
    const exit = await first.waitExit(30_000);
    expect(exit.code).toBe(0);
    console.log(`stop with the store down: exit after ${Math.round(exit.at - stopAt)} ms`);
    // Every file is still there (the last ones rotated on the way out are complete: compressed, or not yet).
    for (const name of before)
      expect(
        rotated(auditDir).some((n) => n === name || n === `${name}.gz`),
        name,
      ).toBe(true);

    // Left from earlier: a large uncompressed rotated file (multipart), a gzipped one, and a symlink an attacker placed.
    const large = Buffer.from(
      Array.from({ length: 24_000 }, (_, i) =>
        JSON.stringify({ timestamp: '2020-01-01T00:00:00.000Z', event_type: 'tool_call', client_request_id: `old-${i}`, reason: 'x'.repeat(240) }),
      ).join('\n') + '\n',
    );
    expect(large.length).toBeGreaterThan(5_242_880);
    writeFileSync(join(auditDir, 'audit.log.2020-01-01T00-00-00.000Z'), large);
    writeFileSync(join(auditDir, 'audit.log.2020-01-01T00-00-01.000Z.gz'), gzipSync('{"event_type":"gateway_stop"}\n'));
    const outside = join(dir, 'not-audit.txt');
    writeFileSync(outside, 'not an audit file\n');
    symlinkSync(outside, join(auditDir, 'audit.log.2019-01-01T00-00-00.000Z'));

    await store.start();
    const second = new CliProcess(['serve', '-c', path, '--port', '0'], { env });
    running.push(second);
    const base2 = await second.address();
    await waitFor(() => rotated(auditDir).length === 0, 60_000, 'the files left by the first gateway uploaded by the second');
    await waitFor(async () => (await metric(base2, 'mcp_guard_audit_archive_pending_files')) === 0, 10_000, 'pending files 0');
    second.signal('SIGTERM');
    expect((await second.waitExit(30_000)).code).toBe(0);

    const objects = await store.objects(creds);
    expect(objects.get('mcp-guard/gw-test/audit.log.2020-01-01T00-00-00.000Z')?.equals(large)).toBe(true);
    expect(objects.get('mcp-guard/gw-test/audit.log.2020-01-01T00-00-01.000Z.gz')?.toString()).toBe('{"event_type":"gateway_stop"}\n');
    expect([...objects.keys()].some((key) => key.includes('2019-01-01'))).toBe(false);
    expect(lstatSync(join(auditDir, 'audit.log.2019-01-01T00-00-00.000Z')).isSymbolicLink()).toBe(true);
    // In parts: a multipart upload of two parts of at most part_size_bytes.
    const parts = store.received.filter((r) => r.url.includes('2020-01-01T00-00-00.000Z'));
    expect(parts.some((r) => r.method === 'POST' && r.url.includes('uploads'))).toBe(true);
    expect(parts.filter((r) => r.method === 'PUT' && /partNumber=\d/.test(r.url)).length).toBe(2);
    // Every call of the first gateway: in the store or in the live file.
    const seen = toolCalls([...objects.values()].map((b) => b.toString('utf8')).concat(readFileSync(join(auditDir, 'audit.log'), 'utf8')));
    for (const id of ids) expect(seen.get(id), id).toBe(1);
    for (const gw of [first, second]) expect(gw.stdout + gw.stderr).not.toContain(creds.AWS_SECRET_ACCESS_KEY);
  }, 150_000);

  it('validate names the key or the variable of a config the archive cannot work with', async () => {
    const dir = tempDir();
    const path = writeConfig(
      `[upstream]\ncommand = "node"\n\n[audit]\nstdout = true\n\n[audit.s3]\nbucket = "audit-archive"\nkms_key_id = "alias/audit"\nserver_side_encryption = "AES256"\n`,
      'mcp-guard.toml',
      dir,
    );
    const result = await runCli(['validate', '-c', path], { env: { MCP_GUARD_AUDIT_S3_FORCE_PATH_STYLE: 'yes', MCP_GUARD_AUDIT_S3_BUCKT: 'x' } });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('audit.s3: needs [audit] file');
    expect(result.stderr).toContain('audit.s3.kms_key_id: only used with server_side_encryption = "aws:kms"');
    expect(result.stderr).toContain('MCP_GUARD_AUDIT_S3_FORCE_PATH_STYLE: expected true or false');
    expect(result.stderr).toContain('MCP_GUARD_AUDIT_S3_BUCKT: not a key of [audit.s3]');
    expect(result.stderr).not.toContain('    at ');
  });
});
