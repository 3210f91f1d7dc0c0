/** The audit log: the line of each event, redaction, the bounded queue, the stdout sink, no-op configs. */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { redactionRuleSchema } from '../../src/config/schema.js';
import { AUDIT_EVENT_TYPES, AuditLog, type AuditEvent } from '../../src/observability/audit/log.js';
import { auditConfig, capture, parseLines, testLog } from './audit-helpers.js';

const NOW = new Date('2030-01-02T03:04:05.678Z');
const now = (): Date => NOW;

const CORE_FIELDS = ['timestamp', 'event_type', 'identity_id', 'server', 'method', 'tool', 'success', 'duration_ms', 'request_id', 'client_ip'];

const TOOL_CALL: AuditEvent = {
  event_type: 'tool_call',
  identity_id: 'ci-bot',
  server: 'fs',
  method: 'tools/call',
  tool: 'read_file',
  success: true,
  duration_ms: 12.3456,
  request_id: 'req-42',
  client_ip: '203.0.113.7',
  provider: 'api_key',
};

/** An audit log writing to stdout (a captured stream), and what it wrote once closed. */
function stdoutAudit(fields: Record<string, unknown> = {}) {
  const out = capture();
  const log = testLog();
  const audit = AuditLog.create(auditConfig({ stdout: true, ...fields }), { log: log.log, stdout: out.stream, now });
  return { audit, out, log };
}

async function linesOf(fields: Record<string, unknown>, ...events: AuditEvent[]): Promise<Record<string, unknown>[]> {
  const { audit, out } = stdoutAudit(fields);
  for (const event of events) audit.record(event);
  await audit.close();
  return out.lines();
}

describe('audit line', () => {
  it('has every core field, in order, with its type; request_id and client_ip carried', async () => {
    const [line] = await linesOf({}, TOOL_CALL);
    expect(Object.keys(line ?? {})).toEqual([...CORE_FIELDS, 'provider']);
    expect(line).toEqual({
      timestamp: '2030-01-02T03:04:05.678Z',
      event_type: 'tool_call',
      identity_id: 'ci-bot',
      server: 'fs',
      method: 'tools/call',
      tool: 'read_file',
      success: true,
      duration_ms: 12.346,
      request_id: 'req-42',
      client_ip: '203.0.113.7',
      provider: 'api_key',
    });
  });

  it('writes null for unknown core fields and leaves out absent context fields (a lifecycle event)', async () => {
    const [line] = await linesOf({}, { event_type: 'gateway_start', success: true });
    expect(line).toEqual({
      timestamp: '2030-01-02T03:04:05.678Z',
      event_type: 'gateway_start',
      identity_id: null,
      server: null,
      method: null,
      tool: null,
      success: true,
      duration_ms: null,
      request_id: null,
      client_ip: null,
    });
  });

  it('carries reason, provider and error of a failure, with identity_id null', async () => {
    const [line] = await linesOf(
      {},
      {
        event_type: 'auth_failure',
        identity_id: null,
        success: false,
        reason: 'jwt: expired',
        provider: 'jwt',
        error: { code: -32001, message: 'Unauthorized' },
        request_id: 'r1',
        client_ip: '::1',
      },
    );
    expect(line).toMatchObject({
      event_type: 'auth_failure',
      identity_id: null,
      success: false,
      reason: 'jwt: expired',
      provider: 'jwt',
      error: { code: -32001, message: 'Unauthorized' },
      request_id: 'r1',
      client_ip: '::1',
    });
  });

  it('writes one line per event, in the order recorded, for every event type', async () => {
    const lines = await linesOf({}, ...AUDIT_EVENT_TYPES.map((event_type, i) => ({ event_type, success: i % 2 === 0, request_id: `r${i}` })));
    expect(lines.map((line) => line['event_type'])).toEqual([...AUDIT_EVENT_TYPES]);
    expect(lines.map((line) => line['request_id'])).toEqual(AUDIT_EVENT_TYPES.map((_type, i) => `r${i}`));
  });

  it('stamps the time of record(), not of writing', async () => {
    let t = Date.parse('2030-05-05T00:00:00.000Z');
    const out = capture();
    const audit = AuditLog.create(auditConfig({ stdout: true }), { log: testLog().log, stdout: out.stream, now: () => new Date(t) });
    audit.record({ event_type: 'gateway_start', success: true });
    t += 60_000;
    await audit.close();
    expect(out.lines()[0]?.['timestamp']).toBe('2030-05-05T00:00:00.000Z');
  });

  it('is not affected by changes to the event object after record()', async () => {
    const { audit, out } = stdoutAudit();
    const event: AuditEvent = { ...TOOL_CALL };
    audit.record(event);
    event.tool = 'changed';
    await audit.close();
    expect(out.lines()[0]?.['tool']).toBe('read_file');
  });
});

describe('arguments', () => {
  it('are absent by default, even when the event has them', async () => {
    const { audit, out } = stdoutAudit();
    expect(audit.includeArguments).toBe(false);
    audit.record({ ...TOOL_CALL, arguments: { path: '/etc/passwd' } });
    await audit.close();
    expect(out.lines()[0]).not.toHaveProperty('arguments');
    expect(out.text()).not.toContain('passwd');
  });

  it('are written with include_arguments = true, after redaction', async () => {
    const args = {
      path: '/home/ann/notes.txt',
      contact: 'ann@example.com',
      headers: { Authorization: 'Token abc123', Cookie: 'sid=1', 'X-Api-Key': 'k1', 'x-trace': 'keep-me' },
      login: { password: 'hunter2', api_key: 'k2', refresh_token: 't1', client_secret: 's1' },
      key: 'mcp_ab12cd34_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
    };
    const lines = await linesOf(
      { include_arguments: true, redaction_rules: [{ name: 'email', pattern: '[\\w.]+@[\\w.]+' }] },
      { ...TOOL_CALL, arguments: args },
    );
    expect(lines[0]?.['arguments']).toEqual({
      path: '/home/ann/notes.txt',
      contact: '[REDACTED]',
      headers: { Authorization: '[REDACTED]', Cookie: '[REDACTED]', 'X-Api-Key': '[REDACTED]', 'x-trace': 'keep-me' },
      login: { password: '[REDACTED]', api_key: '[REDACTED]', refresh_token: '[REDACTED]', client_secret: '[REDACTED]' },
      key: '[REDACTED]',
    });
  });

  it('finding 8: a credential-named field holding an array, an object, a number or null is redacted whole', async () => {
    const args = {
      password: ['s3cret-in-array'],
      headers: { Authorization: { scheme: 'Token', value: 'opaque-in-object' }, cookie: [['sid', 'cookie-in-nested-array']] },
      login: { passwd: 424242, api_key: null, token: true, client_secret: { deep: { deeper: 'secret-in-depth' } } },
      note: 'keep-me',
      list: [{ access_token: ['tok-in-list'] }],
    };
    for (const rules of [[], [{ name: 'greedy', pattern: 'keep[^,]*', replacement: 'x"y' }]]) {
      const lines = await linesOf({ include_arguments: true, redaction_rules: rules }, { ...TOOL_CALL, arguments: args });
      const text = JSON.stringify(lines);
      for (const secret of ['s3cret-in-array', 'opaque-in-object', 'cookie-in-nested-array', '424242', 'secret-in-depth', 'tok-in-list'])
        expect(text).not.toContain(secret);
      expect(lines[0]?.['arguments']).toEqual({
        password: '[REDACTED]',
        headers: { Authorization: '[REDACTED]', cookie: '[REDACTED]' },
        login: { passwd: '[REDACTED]', api_key: '[REDACTED]', token: '[REDACTED]', client_secret: '[REDACTED]' },
        note: rules.length === 0 ? 'keep-me' : 'x"y',
        list: [{ access_token: '[REDACTED]' }],
      });
    }
  });

  it('that JSON cannot hold still give a line', async () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic['self'] = cyclic;
    const lines = await linesOf({ include_arguments: true }, { ...TOOL_CALL, arguments: cyclic });
    expect(lines[0]).toMatchObject({ event_type: 'tool_call', arguments: '[unserializable]' });
  });
});

describe('redaction', () => {
  const JWT = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2lnbmF0dXJl';
  const KEY = 'mcp_ab12cd34_0123456789abcdefghijABCDEFGHIJ-_0123456789a';

  it('always removes bearer and basic credentials, mcp_ keys and JWTs, wherever they appear', async () => {
    const [line] = await linesOf(
      {},
      {
        event_type: 'auth_failure',
        success: false,
        reason: `header was Bearer ${KEY} then bearer\t${JWT} then Basic dXNlcjpwYXNz`,
        error: { code: -32001, message: `bad token ${JWT} or key ${KEY}` },
      },
    );
    const text = JSON.stringify(line);
    expect(text).not.toContain(KEY.slice(13));
    expect(text).not.toContain('c2lnbmF0dXJl');
    expect(text).not.toContain('dXNlcjpwYXNz');
    expect(line?.['reason']).toBe('header was Bearer [REDACTED] then bearer\t[REDACTED] then Basic [REDACTED]');
    expect(line?.['error']).toEqual({ code: -32001, message: 'bad token [REDACTED] or key [REDACTED]' });
  });

  it('keeps tool names that merely start with mcp_', async () => {
    const [line] = await linesOf({}, { ...TOOL_CALL, tool: 'mcp_search_documents', server: 'mcp_guard_docs' });
    expect(line).toMatchObject({ tool: 'mcp_search_documents', server: 'mcp_guard_docs' });
  });

  it('applies every user rule to the whole line, with its replacement', async () => {
    const rules = [
      { name: 'email', pattern: '[\\w.]+@[\\w.]+' },
      { name: 'card', pattern: '\\b\\d{4}(?:-\\d{4}){3}\\b', replacement: '[CARD]' },
    ];
    const [line] = await linesOf({ redaction_rules: rules }, { ...TOOL_CALL, reason: 'ann@example.com paid 4111-1111-1111-1111 and bob@example.org' });
    expect(line?.['reason']).toBe('[REDACTED] paid [CARD] and [REDACTED]');
  });

  it('keeps the line valid JSON when a user rule would break it, redacting each value instead', async () => {
    // The pattern eats the closing quote of a value and the replacement adds one: the line would not parse.
    const lines = await linesOf(
      { redaction_rules: [{ name: 'greedy', pattern: 'secret[^,]*', replacement: 'x"y' }] },
      { ...TOOL_CALL, reason: 'a secret value' },
    );
    expect(lines).toHaveLength(1);
    expect(lines[0]?.['reason']).toBe('a x"y');
    expect(lines[0]?.['tool']).toBe('read_file');
  });

  it('refuses a rule that is not a regular expression or matches the empty string, naming it', () => {
    const create = (pattern: string) => () =>
      AuditLog.create(
        { ...auditConfig({ stdout: true }), redaction_rules: [{ name: 'mine', pattern, replacement: 'x' }] },
        { log: testLog().log, stdout: capture().stream },
      );
    expect(create('(unclosed')).toThrow(/"mine".*not a valid regular expression/);
    expect(create('x*')).toThrow(/"mine".*matches the empty string/);
    expect(redactionRuleSchema.safeParse({ name: 'mine', pattern: 'x*' }).error?.issues.map((issue) => issue.message)).toEqual([
      'must not match the empty string',
    ]);
    expect(redactionRuleSchema.safeParse({ name: 'mine', pattern: '(unclosed' }).error?.issues.map((issue) => issue.message)).toEqual([
      'not a valid regular expression',
    ]);
  });
});

describe('queue', () => {
  it('drops and counts events beyond queue_size without blocking or writing during record()', async () => {
    const { audit, out, log } = stdoutAudit({ queue_size: 10 });
    for (let i = 0; i < 1_000; i++) audit.record({ ...TOOL_CALL, request_id: `req-${i}`, reason: 'private-reason' });
    // Nothing is written on the caller's turn: record() only queued.
    expect(out.text()).toBe('');
    expect(audit.stats).toMatchObject({ recorded: 10, dropped: 990, written: 0 });
    await audit.close();
    expect(out.lines().map((line) => line['request_id'])).toEqual(Array.from({ length: 10 }, (_v, i) => `req-${i}`));
    expect(audit.stats).toMatchObject({ recorded: 10, dropped: 990, written: 10, writeFailures: 0 });
    // One warning (rate-limited), about the queue, without the events' contents.
    const warnings = parseLines(log.text());
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ level: 40, msg: 'audit queue full: events dropped' });
    expect(log.text()).not.toContain('private-reason');
    expect(log.text()).not.toContain('req-');
  });

  it('writes a burst larger than one drain turn completely and in order', async () => {
    const { audit, out } = stdoutAudit({ queue_size: 5_000 });
    for (let i = 0; i < 3_000; i++) audit.record({ ...TOOL_CALL, request_id: `req-${i}` });
    await audit.close();
    const ids = out.lines().map((line) => line['request_id']);
    expect(ids).toHaveLength(3_000);
    expect(ids[2_999]).toBe('req-2999');
    expect(audit.stats).toMatchObject({ recorded: 3_000, written: 3_000, dropped: 0 });
  });

  it('drops and counts events recorded after close(); close() twice is fine', async () => {
    const { audit, out } = stdoutAudit();
    audit.record(TOOL_CALL);
    await audit.close();
    audit.record(TOOL_CALL);
    await audit.close();
    expect(out.lines()).toHaveLength(1);
    expect(audit.stats).toMatchObject({ recorded: 1, dropped: 1, written: 1 });
  });

  it('never throws from record(), even when its clock does', async () => {
    const out = capture();
    const audit = AuditLog.create(auditConfig({ stdout: true }), {
      log: testLog().log,
      stdout: out.stream,
      now: () => {
        throw new Error('clock broke');
      },
    });
    expect(() => audit.record(TOOL_CALL)).not.toThrow();
    expect(audit.stats.dropped).toBe(1);
    await audit.close();
  });

  it('a failing stdout counts every line of the failed write and warns without the line', async () => {
    const failing = new Writable({ write: (_chunk, _encoding, done) => done(new Error('disk on fire')) });
    failing.on('error', () => undefined);
    const log = testLog();
    const audit = AuditLog.create(auditConfig({ stdout: true }), { log: log.log, stdout: failing, now });
    audit.record(TOOL_CALL);
    audit.record(TOOL_CALL);
    await audit.close();
    expect(audit.stats.writeFailures).toBe(2);
    expect(log.text()).toContain('audit stdout sink: write failed');
    expect(log.text()).not.toContain(TOOL_CALL.request_id as string);
  });
});

describe('stdout sink', () => {
  it('writes one line per event to the injected stream, and flush() waits for them', async () => {
    const { audit, out } = stdoutAudit();
    audit.record(TOOL_CALL);
    audit.record({ ...TOOL_CALL, success: false });
    await audit.flush();
    expect(out.text().split('\n')).toHaveLength(3);
    expect(out.lines().map((line) => line['success'])).toEqual([true, false]);
    await audit.close();
  });
});

describe('a disabled audit log', () => {
  it('records nothing for no [audit], enabled = false, or no sink (with a warning)', async () => {
    const out = capture();
    const log = testLog();
    const none = AuditLog.create(undefined, { log: log.log, stdout: out.stream });
    const off = AuditLog.create(auditConfig({ enabled: false, stdout: true }), { log: log.log, stdout: out.stream });
    expect(log.text()).toBe('');
    const sinkless = AuditLog.create(auditConfig({}), { log: log.log, stdout: out.stream });
    expect(parseLines(log.text())).toEqual([expect.objectContaining({ level: 40, msg: expect.stringContaining('no sink') })]);
    for (const audit of [none, off, sinkless]) {
      expect(audit.enabled).toBe(false);
      expect(audit.includeArguments).toBe(false);
      audit.record(TOOL_CALL);
      await audit.flush();
      await audit.close();
      expect(audit.stats).toEqual({ recorded: 0, dropped: 0, written: 0, writeFailures: 0, exportFailures: 0, exportDropped: 0 });
    }
    expect(out.text()).toBe('');
  });
});
