/** The audit file: appending, start-up errors, rotation by size and by age, gzip, max_backups. */
import { readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog, type AuditEvent } from '../../src/observability/audit/log.js';
import { auditConfig, capture, parseLines, tempDir, testLog } from './audit-helpers.js';

const BACKUP = /^audit\.log\.\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}Z(\.gz)?$/;

let dir: { path: string; remove: () => Promise<void> };
let file: string;

beforeEach(async () => {
  dir = await tempDir();
  file = join(dir.path, 'audit.log');
});

afterEach(async () => {
  await dir.remove();
});

/** A tool call of about 300 bytes once serialised. */
function event(i: number): AuditEvent {
  return {
    event_type: 'tool_call',
    identity_id: 'ci-bot',
    server: 'fs',
    method: 'tools/call',
    tool: 'read_file',
    success: true,
    duration_ms: 1,
    request_id: `req-${i}`,
    client_ip: '127.0.0.1',
    reason: 'x'.repeat(120),
  };
}

async function backups(): Promise<string[]> {
  return (await readdir(dir.path)).filter((name) => name !== 'audit.log').sort();
}

/** The lines of a rotated file, gunzipped if needed. */
async function backupLines(name: string): Promise<Record<string, unknown>[]> {
  const data = await readFile(join(dir.path, name));
  return parseLines((name.endsWith('.gz') ? gunzipSync(data) : data).toString('utf8'));
}

async function liveLines(): Promise<Record<string, unknown>[]> {
  return parseLines(await readFile(file, 'utf8'));
}

const ids = (lines: Record<string, unknown>[]) => lines.map((line) => line['request_id']);

describe('file sink', () => {
  it('appends lines to the file, after what it already held', async () => {
    const earlier = JSON.stringify({ timestamp: new Date().toISOString(), event_type: 'gateway_start', request_id: 'earlier' });
    await writeFile(file, `${earlier}\n`);
    const audit = AuditLog.create(auditConfig({ file }), { log: testLog().log });
    audit.record(event(1));
    await audit.flush();
    expect(ids(await liveLines())).toEqual(['earlier', 'req-1']);
    audit.record(event(2));
    await audit.close();
    expect(ids(await liveLines())).toEqual(['earlier', 'req-1', 'req-2']);
    expect(audit.stats).toMatchObject({ recorded: 2, written: 2, writeFailures: 0 });
    expect(await backups()).toEqual([]);
  });

  it('refuses at create() a file whose directory does not exist, naming the path', () => {
    const missing = join(dir.path, 'no-such-dir', 'audit.log');
    expect(() => AuditLog.create(auditConfig({ file: missing }), { log: testLog().log })).toThrow(
      `audit file ${JSON.stringify(missing)}: directory ${JSON.stringify(join(dir.path, 'no-such-dir'))} does not exist`,
    );
  });

  it('refuses at create() a path that is a directory', () => {
    expect(() => AuditLog.create(auditConfig({ file: dir.path }), { log: testLog().log })).toThrow(/audit file ".*": cannot open it for appending \(EISDIR\)/);
  });

  it('writes the same lines as stdout', async () => {
    const out = capture();
    const audit = AuditLog.create(auditConfig({ file, stdout: true }), { log: testLog().log, stdout: out.stream });
    for (let i = 0; i < 5; i++) audit.record(event(i));
    await audit.close();
    expect(await readFile(file, 'utf8')).toBe(out.text());
  });
});

describe('file sink failures', () => {
  it('counts and logs (without contents) the lines it cannot write, and never throws', async () => {
    const log = testLog();
    const audit = AuditLog.create(auditConfig({ file, rotate_max_bytes: 1_024 }), { log: log.log });
    audit.record(event(1));
    await audit.flush();
    // The directory goes away: the next rotation cannot rename, the reopened file cannot be created.
    await rm(dir.path, { recursive: true, force: true });
    for (let i = 2; i < 12; i++) audit.record({ ...event(i), reason: `private-${'y'.repeat(150)}` });
    await audit.close();
    expect(audit.stats.recorded).toBe(11);
    expect(audit.stats.writeFailures).toBeGreaterThan(0);
    const warnings = parseLines(log.text());
    expect(warnings.map((line) => line['msg'])).toEqual(expect.arrayContaining(['audit file sink: rotation failed', 'audit file sink: write failed']));
    expect(warnings.find((line) => line['msg'] === 'audit file sink: write failed')).toMatchObject({ sink: 'file', code: 'ENOENT' });
    expect(log.text()).not.toContain('private-');
  });
});

describe('rotation by size', () => {
  it('keeps every file under rotate_max_bytes, gzips rotated files and keeps max_backups of them', async () => {
    const audit = AuditLog.create(auditConfig({ file, rotate_max_bytes: 1_024, max_backups: 3, compress_rotated: true }), { log: testLog().log });
    for (let i = 0; i < 40; i++) audit.record(event(i));
    await audit.close();

    const names = await backups();
    expect(names).toHaveLength(3);
    for (const name of names) expect(name).toMatch(BACKUP);
    expect(names.every((name) => name.endsWith('.gz'))).toBe(true);

    // Oldest first by name; together with the live file, the newest events without a gap.
    const kept = [...(await Promise.all(names.map(backupLines))).flat(), ...(await liveLines())];
    expect(kept.length).toBeGreaterThan(3);
    expect(ids(kept)).toEqual(Array.from({ length: kept.length }, (_v, i) => `req-${40 - kept.length + i}`));
    for (const name of names) expect(gunzipSync(await readFile(join(dir.path, name))).length).toBeLessThanOrEqual(1_024);
    expect((await stat(file)).size).toBeLessThanOrEqual(1_024);
    expect(audit.stats).toMatchObject({ recorded: 40, written: 40, writeFailures: 0 });
  });

  it('keeps rotated files as they are with compress_rotated = false', async () => {
    const audit = AuditLog.create(auditConfig({ file, rotate_max_bytes: 1_024, max_backups: 2, compress_rotated: false }), { log: testLog().log });
    for (let i = 0; i < 20; i++) audit.record(event(i));
    await audit.close();
    const names = await backups();
    expect(names).toHaveLength(2);
    for (const name of names) {
      expect(name).toMatch(BACKUP);
      expect(name.endsWith('.gz')).toBe(false);
      expect((await backupLines(name)).length).toBeGreaterThan(0);
    }
    expect(ids(await liveLines())).toContain('req-19');
  });

  it('deletes rotated files at once with max_backups = 0', async () => {
    const audit = AuditLog.create(auditConfig({ file, rotate_max_bytes: 1_024, max_backups: 0 }), { log: testLog().log });
    for (let i = 0; i < 20; i++) audit.record(event(i));
    await audit.close();
    expect(await backups()).toEqual([]);
    expect(ids(await liveLines())).toContain('req-19');
  });

  it('prunes backups beyond max_backups left by an earlier run, and gzip leftovers', async () => {
    for (const stamp of ['2020-01-01T00-00-00.000Z', '2020-01-02T00-00-00.000Z', '2020-01-03T00-00-00.000Z'])
      await writeFile(join(dir.path, `audit.log.${stamp}`), '{}\n');
    await writeFile(join(dir.path, 'audit.log.2020-01-04T00-00-00.000Z.gz.partial'), 'half');
    await writeFile(join(dir.path, 'unrelated.txt'), 'keep');
    const audit = AuditLog.create(auditConfig({ file, max_backups: 2 }), { log: testLog().log });
    await audit.close();
    expect(await backups()).toEqual(['audit.log.2020-01-02T00-00-00.000Z', 'audit.log.2020-01-03T00-00-00.000Z', 'unrelated.txt']);
  });
});

describe('rotation by age', () => {
  it('rotates when the first event of the file is rotate_max_age_secs old, naming the backup by the UTC rotation time', async () => {
    let t = Date.parse('2030-01-01T00:00:00.000Z');
    const audit = AuditLog.create(auditConfig({ file, rotate_max_age_secs: 60, compress_rotated: false }), { log: testLog().log, now: () => new Date(t) });
    audit.record(event(1));
    t += 30_000;
    audit.record(event(2));
    await audit.flush();
    expect(await backups()).toEqual([]);
    t += 31_000;
    audit.record(event(3));
    await audit.close();
    expect(await backups()).toEqual(['audit.log.2030-01-01T00-01-01.000Z']);
    expect(ids(await backupLines('audit.log.2030-01-01T00-01-01.000Z'))).toEqual(['req-1', 'req-2']);
    expect(ids(await liveLines())).toEqual(['req-3']);
  });

  it('counts the age of an existing file from its first line', async () => {
    await writeFile(file, `${JSON.stringify({ timestamp: '2020-01-01T00:00:00.000Z', event_type: 'gateway_start', request_id: 'old' })}\n`);
    const audit = AuditLog.create(auditConfig({ file, rotate_max_age_secs: 3_600 }), { log: testLog().log, now: () => new Date('2030-01-01T00:00:00.000Z') });
    audit.record(event(1));
    await audit.close();
    expect(await backups()).toEqual(['audit.log.2030-01-01T00-00-00.000Z.gz']);
    expect(ids(await backupLines('audit.log.2030-01-01T00-00-00.000Z.gz'))).toEqual(['old']);
    expect(ids(await liveLines())).toEqual(['req-1']);
  });

  it('never rotates by age with rotate_max_age_secs = 0, and gives same-millisecond rotations distinct names', async () => {
    let t = Date.parse('2030-01-01T00:00:00.000Z');
    const audit = AuditLog.create(auditConfig({ file, rotate_max_age_secs: 0, rotate_max_bytes: 1_024, compress_rotated: false }), {
      log: testLog().log,
      now: () => new Date(t),
    });
    audit.record(event(1));
    t += 10 * 365 * 86_400_000;
    audit.record(event(2));
    await audit.flush();
    expect(await backups()).toEqual([]);
    // A frozen clock: the rotations of this burst all happen "at the same millisecond".
    for (let i = 3; i < 15; i++) audit.record(event(i));
    await audit.close();
    const names = await backups();
    expect(names.length).toBeGreaterThan(1);
    expect(new Set(names).size).toBe(names.length);
    const stamp = (ms: number) => new Date(ms).toISOString().replace(/:/g, '-');
    expect(names.slice(0, 2)).toEqual([`audit.log.${stamp(t)}`, `audit.log.${stamp(t + 1)}`]);
  });
});
