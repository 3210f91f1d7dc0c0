/**
 * Issue 16, finding 6: a method the protocol defines as a client request (tools/call, ...) sent
 * without an id, as a notification, skipped authorization and the audit log and reached the
 * upstream, where a naive JSON-RPC server would run it. Now it is refused (400, -32600, id null),
 * audited with the identity and the method, and the upstream never sees it: alone, in a batch,
 * inside a session and as a 2026-07-28 message. The notifications a client may send still pass,
 * and the official SDK client works as before.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateApiKey, hashApiKey } from '../../src/auth/key-format.js';
import { curlPost, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/recording-upstream.js';
import { connectSdk, resultText } from '../helpers/sdk-client.js';

describe('finding 6: a request-only method sent as a notification', () => {
  let dir: string;
  let gw: RunningGateway;
  let recording: RecordingUpstream;
  let endpoint: string;
  const key = generateApiKey();
  const auth = { authorization: `Bearer ${key.key}` };
  const notification = (name: string) => ({ jsonrpc: '2.0', method: 'tools/call', params: { name, arguments: {} } });
  const upstreamCalls = () => recording.requests.filter((r) => r.rpcMethod === 'tools/call');

  const refused = async () => {
    await gw.app.recorder.audit.flush();
    return readFileSync(join(dir, 'audit.log'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((e) => e['event_type'] === 'request_refused');
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mcp-guard-notification-'));
    recording = await startRecordingUpstream('http', { tools: ['recorded', 'secret_tool'] });
    gw = await startGateway(`
[[upstream.servers]]
name = "web"
path_prefix = "/web"
url = ${q(recording.url)}

[[auth.api_keys]]
id = "reader"
key_prefix = ${q(key.prefix)}
key_hash = ${q(await hashApiKey(key.key))}
allowed_tools = ["recorded"]

[audit]
file = ${q(join(dir, 'audit.log'))}
`);
    endpoint = `${gw.url}/mcp/web`;
  });

  afterAll(async () => {
    await gw?.stop();
    await recording?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is refused 400 with -32600 and id null, audited with the identity and method, and never reaches the upstream (a tool outside the policy included)', async () => {
    for (const tool of ['recorded', 'secret_tool']) {
      const res = await curlPost(endpoint, notification(tool), auth);
      expect(res.status).toBe(400);
      expect(res.json).toEqual({
        jsonrpc: '2.0',
        id: null,
        error: { code: -32600, message: 'Invalid Request: tools/call is a request and needs an id; it was not forwarded' },
      });
    }
    expect(recording.requests).toEqual([]);
    const lines = await refused();
    expect(lines).toHaveLength(2);
    for (const line of lines) {
      expect(line).toMatchObject({
        identity_id: 'reader',
        provider: 'api_key',
        server: 'web',
        method: 'tools/call',
        success: false,
        reason: 'request sent as a notification',
        error: { code: -32600 },
      });
    }
  });

  it('in a batch: the whole body is refused, naming the element, and nothing of it is forwarded', async () => {
    const res = await curlPost(endpoint, [{ jsonrpc: '2.0', id: 1, method: 'tools/list' }, notification('recorded')], auth);
    expect(res.status).toBe(400);
    expect(res.json.error).toEqual({
      code: -32600,
      message: 'Invalid Request: batch element 1: tools/call is a request and needs an id; it was not forwarded',
    });
    expect(recording.requests).toEqual([]);
  });

  it('inside a session as well; the notifications a client may send still pass', async () => {
    const init = await curlPost(
      endpoint,
      { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'curl', version: '1' } } },
      auth,
    );
    expect(init.status).toBe(200);
    const session = { ...auth, 'mcp-session-id': init.headers.get('mcp-session-id')!, 'mcp-protocol-version': '2025-06-18' };
    expect((await curlPost(endpoint, { jsonrpc: '2.0', method: 'notifications/initialized' }, session)).status).toBe(202);
    const res = await curlPost(endpoint, notification('recorded'), session);
    expect(res.status).toBe(400);
    expect(res.json.error.code).toBe(-32600);
    expect((await curlPost(endpoint, { jsonrpc: '2.0', method: 'notifications/roots/list_changed' }, session)).status).toBe(202);
    await waitFor(() => recording.requests.some((r) => r.rpcMethod === 'notifications/roots/list_changed'), 5_000, 'the roots notification upstream');
    expect(upstreamCalls()).toEqual([]);
  });

  it('as a 2026-07-28 message too', async () => {
    const before = (await refused()).length;
    const meta = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} };
    const res = await curlPost(
      endpoint,
      { jsonrpc: '2.0', method: 'tools/call', params: { name: 'recorded', arguments: {}, _meta: meta } },
      { ...auth, 'mcp-protocol-version': '2026-07-28' },
    );
    expect(res.status).toBe(400);
    expect(res.json).toMatchObject({ id: null, error: { code: -32600 } });
    expect(await refused()).toHaveLength(before + 1);
    expect(upstreamCalls()).toEqual([]);
  });

  it('the official SDK client still connects, lists and calls: everything it sends is well-formed', async () => {
    const { client } = await connectSdk(endpoint, { headers: auth });
    try {
      expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['recorded']);
      expect(resultText(await client.callTool({ name: 'recorded', arguments: {} }))).toBe('called recorded');
    } finally {
      await client.close();
    }
    expect(upstreamCalls()).toHaveLength(1);
  });
});
