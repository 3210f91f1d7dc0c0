/** The HTTP export: batches by size and by interval, one POST at a time, retries, giving up, bounds. */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog, type AuditEvent } from '../../src/observability/audit/log.js';
import { auditConfig, Collector, parseLines, testLog, waitFor, within } from './audit-helpers.js';

const SECRET = 'collector-secret-value';

let collector: Collector;

beforeEach(async () => {
  collector = await Collector.start();
});

afterEach(async () => {
  await collector.close();
});

function event(i: number): AuditEvent {
  return {
    event_type: 'tool_call',
    identity_id: 'ci-bot',
    server: 'fs',
    method: 'tools/call',
    tool: 'read_file',
    success: true,
    duration_ms: 2,
    request_id: `req-${i}`,
    client_ip: '127.0.0.1',
    reason: 'private-reason',
  };
}

/** An audit log exporting to the collector (a flush interval long enough never to fire unless set). */
function exporting(fields: Record<string, unknown> = {}, closeTimeoutMs?: number) {
  const log = testLog();
  const audit = AuditLog.create(
    auditConfig({ export_url: collector.url, export_headers: { 'X-Collector-Token': SECRET }, export_flush_interval_ms: 600_000, ...fields }),
    { log: log.log, ...(closeTimeoutMs !== undefined ? { closeTimeoutMs } : {}) },
  );
  return { audit, log };
}

const ids = (events: Record<string, unknown>[]) => events.map((line) => line['request_id']);

describe('export batches', () => {
  it('POSTs a JSON array as soon as a batch is full, one POST at a time, in order, with the export headers', async () => {
    collector.delayMs = 30;
    const { audit } = exporting({ export_batch_size: 3 });
    for (let i = 0; i < 7; i++) audit.record(event(i));
    await waitFor('two full batches', () => collector.requests.length === 2 && collector.inflight === 0);
    expect(collector.requests.map((request) => ids(request.events))).toEqual([
      ['req-0', 'req-1', 'req-2'],
      ['req-3', 'req-4', 'req-5'],
    ]);
    const headers = collector.requests[0]?.headers;
    expect(headers?.['content-type']).toBe('application/json');
    expect(headers?.['x-collector-token']).toBe(SECRET);
    // The seventh waits for its batch to fill or its interval; close() sends it.
    await audit.close();
    expect(collector.requests.map((request) => ids(request.events))).toEqual([['req-0', 'req-1', 'req-2'], ['req-3', 'req-4', 'req-5'], ['req-6']]);
    expect(collector.maxInflight).toBe(1);
    expect(collector.events()[0]).toMatchObject({ event_type: 'tool_call', identity_id: 'ci-bot', success: true, request_id: 'req-0' });
    expect(audit.stats).toMatchObject({ recorded: 7, written: 7, exportFailures: 0, exportDropped: 0 });
  });

  it('sends a partial batch once export_flush_interval_ms has passed', async () => {
    const { audit } = exporting({ export_batch_size: 100, export_flush_interval_ms: 50 });
    audit.record(event(1));
    audit.record(event(2));
    const [request] = await waitFor('the interval flush', () => collector.requests.length > 0 && collector.requests);
    expect(ids(request?.events ?? [])).toEqual(['req-1', 'req-2']);
    audit.record(event(3));
    await waitFor('a second interval flush', () => collector.requests.length === 2);
    expect(ids(collector.requests[1]?.events ?? [])).toEqual(['req-3']);
    await audit.close();
    expect(collector.requests).toHaveLength(2);
  });

  it('sends the same lines as the other sinks, redacted', async () => {
    const { audit } = exporting({ redaction_rules: [{ name: 'private', pattern: 'private-\\w+' }] });
    audit.record({ ...event(1), error: { code: -32001, message: 'Bearer abcdefghijkl' } });
    await audit.close();
    expect(collector.events()[0]).toMatchObject({ reason: '[REDACTED]', error: { code: -32001, message: 'Bearer [REDACTED]' } });
  });

  it('close() sends everything pending', async () => {
    const { audit } = exporting({ export_batch_size: 100 });
    for (let i = 0; i < 5; i++) audit.record(event(i));
    expect(collector.requests).toHaveLength(0);
    await within('close()', audit.close());
    expect(ids(collector.events())).toEqual(['req-0', 'req-1', 'req-2', 'req-3', 'req-4']);
  });
});

describe('export failures', () => {
  it('retries a batch after a 500 and then succeeds', async () => {
    collector.answers = [500];
    const { audit, log } = exporting({ export_batch_size: 2 });
    audit.record(event(1));
    audit.record(event(2));
    await waitFor('the retry', () => collector.requests.length === 2 && collector.inflight === 0);
    expect(collector.requests.map((request) => [request.answer, ids(request.events)])).toEqual([
      [500, ['req-1', 'req-2']],
      [200, ['req-1', 'req-2']],
    ]);
    await audit.close();
    expect(audit.stats).toMatchObject({ exportFailures: 1, exportDropped: 0 });
    expect(parseLines(log.text())).toEqual([expect.objectContaining({ msg: 'audit export: POST failed', sink: 'export', status: 500 })]);
  });

  it('gives up after export_max_retries, drops and counts the batch, and logs no secret', async () => {
    collector.thenAnswer = 503;
    const { audit, log } = exporting({ export_batch_size: 1, export_max_retries: 2 });
    audit.record(event(1));
    await waitFor('the batch to be dropped', () => audit.stats.exportDropped === 1);
    expect(collector.requests).toHaveLength(3);
    expect(audit.stats).toMatchObject({ exportFailures: 3, exportDropped: 1 });
    // The next batch is tried afresh.
    collector.thenAnswer = 200;
    audit.record(event(2));
    await audit.close();
    expect(ids(collector.requests[3]?.events ?? [])).toEqual(['req-2']);
    const text = log.text();
    expect(parseLines(text).map((line) => line['msg'])).toContain('audit export: batch dropped after its retries');
    for (const secret of [SECRET, collector.url, 'private-reason', 'req-1']) expect(text).not.toContain(secret);
  });

  it('counts a refused connection as a failure', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const log = testLog();
    const audit = AuditLog.create(auditConfig({ export_url: `http://127.0.0.1:${port}/events`, export_max_retries: 0 }), { log: log.log });
    audit.record(event(1));
    await audit.close();
    expect(audit.stats).toMatchObject({ exportFailures: 1, exportDropped: 1 });
    expect(parseLines(log.text())[0]).toMatchObject({ msg: 'audit export: POST failed', code: 'ECONNREFUSED' });
  });

  it('gives a POST export_timeout_ms, then retries', async () => {
    collector.answers = ['hang'];
    const { audit } = exporting({ export_batch_size: 1, export_timeout_ms: 100, export_max_retries: 1 });
    audit.record(event(1));
    await waitFor('the retry after the timeout', () => collector.requests.some((request) => request.answer === 200));
    await audit.close();
    expect(ids(collector.events())).toEqual(['req-1', 'req-1']);
    expect(audit.stats).toMatchObject({ exportFailures: 1, exportDropped: 0 });
  });

  it('a collector that never answers blocks neither record() nor close() beyond its bound', async () => {
    collector.thenAnswer = 'hang';
    const { audit } = exporting({ export_batch_size: 1, export_timeout_ms: 600_000 }, 300);
    audit.record(event(1));
    await waitFor('the first POST', () => collector.requests.length === 1);
    for (let i = 2; i <= 4; i++) audit.record(event(i));
    expect(audit.stats.recorded).toBe(4);
    await within('close()', audit.close());
    // The batch in flight and the three queued: none delivered, all counted.
    expect(audit.stats).toMatchObject({ recorded: 4, written: 4, exportDropped: 4, exportFailures: 0 });
    expect(collector.requests).toHaveLength(1);
  });

  it('bounds its own queue by queue_size, dropping and counting the excess', async () => {
    collector.thenAnswer = 'hang';
    const { audit } = exporting({ export_batch_size: 1, queue_size: 3 }, 200);
    audit.record(event(0));
    await waitFor('the first POST', () => collector.requests.length === 1);
    for (let i = 1; i <= 3; i++) audit.record(event(i));
    await audit.flush();
    for (let i = 4; i <= 6; i++) audit.record(event(i));
    await audit.flush();
    expect(audit.stats).toMatchObject({ recorded: 7, dropped: 0, exportDropped: 3 });
    await within('close()', audit.close());
    expect(audit.stats.exportDropped).toBe(7);
  });
});
