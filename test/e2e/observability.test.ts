/**
 * What an operator reads back: audit lines after allowed, denied, limited and failed calls (from
 * the real audit file), /metrics after that traffic (validated by promtool), and every log
 * scanned for the keys and tokens used. One request id ties the response header, the audit line
 * and the operational log together.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateApiKey, hashApiKey } from '../../src/auth/key-format.js';
import { curlPost, everythingStdio, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { expectValidExposition } from '../helpers/promtool.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/recording-upstream.js';

const bearer = (key: string) => ({ authorization: `Bearer ${key}` });
const call = (id: number, name: string, args: Record<string, unknown> = {}) => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name, arguments: args },
});

type AuditLine = Record<string, unknown> & { event_type: string; request_id: string | null };

describe('audit log, metrics and logs after real traffic', () => {
  let dir: string;
  let gw: RunningGateway;
  let recording: RecordingUpstream;
  const keys = { reader: generateApiKey(), admin: generateApiKey() };

  const auditLines = (): AuditLine[] =>
    readFileSync(join(dir, 'audit.log'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as AuditLine);
  const flush = () => gw.app.recorder.audit.flush();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mcp-guard-audit-e2e-'));
    recording = await startRecordingUpstream('http', { tools: ['lookup', 'expensive', 'secret_tool'] });
    gw = await startGateway(`
${everythingStdio()}

[[upstream.servers]]
name = "web"
path_prefix = "/web"
url = ${q(recording.url)}

[[upstream.servers]]
name = "down"
path_prefix = "/down"
url = "http://127.0.0.1:1/mcp"

[auth]
protect_metrics = false

[[auth.api_keys]]
id = "reader"
key_prefix = ${q(keys.reader.prefix)}
key_hash = ${q(await hashApiKey(keys.reader.key))}
allowed_tools = ["echo", "lookup", "expensive"]

[[auth.api_keys]]
id = "admin"
key_prefix = ${q(keys.admin.prefix)}
key_hash = ${q(await hashApiKey(keys.admin.key))}

[rate_limit]
requests_per_second = 100
burst_size = 100

[[rate_limit.tool_limits]]
tool_pattern = "expensive"
requests_per_second = 0.1
burst_size = 1

[audit]
file = ${q(join(dir, 'audit.log'))}
include_arguments = true

[[audit.redaction_rules]]
name = "card"
pattern = "\\\\d{4}-\\\\d{4}-\\\\d{4}-\\\\d{4}"
replacement = "[CARD]"
`);
  }, 120_000);

  afterAll(async () => {
    await gw?.stop();
    await recording?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('an allowed tools/call: one tool_call line with who, where, what, how long, the request id and the address', async () => {
    const res = await curlPost(`${gw.url}/mcp/everything`, call(1, 'echo', { message: 'card 1234-5678-9012-3456' }), bearer(keys.reader.key));
    expect(res.json.result.content[0].text).toContain('Echo');
    const requestId = res.headers.get('x-request-id');
    await flush();
    const line = auditLines().find((l) => l.event_type === 'tool_call' && l.request_id === requestId);
    expect(line).toMatchObject({
      identity_id: 'reader',
      provider: 'api_key',
      server: 'everything',
      method: 'tools/call',
      tool: 'echo',
      success: true,
      client_ip: '127.0.0.1',
      arguments: { message: 'card [CARD]' },
    });
    expect(typeof line?.duration_ms).toBe('number');
    expect(auditLines().some((l) => l.event_type === 'auth_success' && l.identity_id === 'reader')).toBe(true);
  });

  it('denied, limited, failed upstream and bad credentials each leave their line', async () => {
    const denied = await curlPost(`${gw.url}/mcp/web`, call(2, 'secret_tool'), bearer(keys.reader.key));
    expect(denied.json.error.code).toBe(-32011);
    const first = await curlPost(`${gw.url}/mcp/web`, call(3, 'expensive'), bearer(keys.reader.key));
    expect(first.json.result).toBeDefined();
    const limited = await curlPost(`${gw.url}/mcp/web`, call(4, 'expensive'), bearer(keys.reader.key));
    expect(limited.status).toBe(429);
    const failed = await curlPost(`${gw.url}/mcp/down`, call(5, 'anything'), bearer(keys.admin.key));
    expect(failed.status).toBe(502);
    const unauthenticated = await curlPost(`${gw.url}/mcp/web`, call(6, 'lookup'), bearer('mcp_notakey_at_all_really'));
    expect(unauthenticated.status).toBe(401);
    await flush();
    const lines = auditLines();
    const byRequest = (res: { headers: Headers }) => lines.filter((l) => l.request_id === res.headers.get('x-request-id'));
    expect(byRequest(denied)).toContainEqual(
      expect.objectContaining({
        event_type: 'authz_denied',
        identity_id: 'reader',
        server: 'web',
        tool: 'secret_tool',
        success: false,
        reason: 'tool not allowed',
      }),
    );
    expect(byRequest(limited)).toContainEqual(
      expect.objectContaining({ event_type: 'rate_limited', identity_id: 'reader', server: 'web', tool: 'expensive', success: false }),
    );
    expect(byRequest(failed)).toContainEqual(expect.objectContaining({ event_type: 'upstream_error', identity_id: 'admin', server: 'down', success: false }));
    expect(byRequest(failed)).toContainEqual(expect.objectContaining({ event_type: 'tool_call', tool: 'anything', success: false }));
    expect(byRequest(unauthenticated)).toEqual([
      expect.objectContaining({
        event_type: 'auth_failure',
        identity_id: null,
        success: false,
        provider: 'api_key',
        reason: 'api key: unknown prefix',
        error: { code: -32010, message: 'Unauthorized: missing or invalid credentials' },
      }),
    ]);
    expect(lines[0]).toMatchObject({ event_type: 'gateway_start' });
  });

  it("/metrics: the earlier gateway's families with server and tool series, valid for promtool", async () => {
    const text = await (await fetch(`${gw.url}/metrics`)).text();
    await expectValidExposition(text, [/^nodejs_active_(handles|requests|resources)_total/]);
    expect(text).toMatch(/mcp_guard_requests_total\{method="POST",status="200",server="everything"\} [1-9]/);
    expect(text).toMatch(/mcp_guard_requests_total\{method="POST",status="429",server="web"\} 1/);
    expect(text).toMatch(/mcp_guard_requests_total\{method="POST",status="502",server="down"\} 1/);
    // Authentication comes before routing: a refused request was never routed to a server.
    expect(text).toMatch(/mcp_guard_requests_total\{method="POST",status="401",server="none"\} 1/);
    expect(text).toMatch(/mcp_guard_auth_total\{provider="api_key",result="failure"\} 1/);
    expect(text).toMatch(/mcp_guard_rate_limit_total\{allowed="false"\} 1/);
    expect(text).toMatch(/mcp_guard_tool_calls_total\{server="web",tool="__other__",outcome="denied"\} 1/);
    expect(text).toMatch(/mcp_guard_upstream_up\{server="everything",transport="stdio"\} 1/);
    expect(text).toMatch(/mcp_guard_upstream_latency_seconds_count\{server="everything"\} [1-9]/);
  });

  it('tool labels come from tools/list: a listed tool gets its own series', async () => {
    await curlPost(`${gw.url}/mcp/web`, { jsonrpc: '2.0', id: 7, method: 'tools/list' }, bearer(keys.admin.key));
    await curlPost(`${gw.url}/mcp/web`, call(8, 'lookup'), bearer(keys.admin.key));
    const text = await (await fetch(`${gw.url}/metrics`)).text();
    expect(text).toMatch(/mcp_guard_tool_calls_total\{server="web",tool="lookup",outcome="ok"\} 1/);
  });

  it('[server] metrics = false: no /metrics route, and requests are still served', async () => {
    const plain = await startGateway(`[server]\nmetrics = false\n[[upstream.servers]]\nname = "web"\npath_prefix = "/web"\nurl = ${q(recording.url)}\n`);
    try {
      expect((await fetch(`${plain.url}/metrics`)).status).toBe(404);
      expect((await curlPost(`${plain.url}/mcp/web`, { jsonrpc: '2.0', id: 1, method: 'tools/list' })).status).toBe(200);
    } finally {
      await plain.stop();
    }
  });

  it('no key ever reaches a log or audit line', async () => {
    await flush();
    const everything = `${gw.logs.join('\n')}\n${readFileSync(join(dir, 'audit.log'), 'utf8')}`;
    for (const { key } of Object.values(keys)) {
      expect(everything).not.toContain(key);
      expect(everything).not.toContain(key.slice(13));
    }
    expect(everything).not.toContain('mcp_notakey_at_all_really');
  });

  it('the operational log lines of a request carry its id', async () => {
    const initialize = {
      jsonrpc: '2.0',
      id: 9,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'curl', version: '1' } },
    };
    const res = await curlPost(`${gw.url}/mcp/web`, initialize, bearer(keys.admin.key));
    expect(res.status).toBe(200);
    const id = res.headers.get('x-request-id') as string;
    // "session opened" is written by the gateway core, which is never handed the request.
    await waitFor(() => gw.logs.some((l) => l.includes('"session opened"') && l.includes(`"reqId":"${id}"`)), 5_000, 'a log line with the request id');
  });
});
