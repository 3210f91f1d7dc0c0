/**
 * A server changed by a reload (issue 20, docs/operations.md "Reload"):
 *
 *   - it drains: its call in flight completes on the old child, its session answers 404 `Session
 *     not found` from the reload on, the old child ends, a new child serves new sessions; an
 *     unchanged server beside it keeps its child and its session;
 *   - it is asked afresh: what the gateway remembered of it (here a 2026-07-28 server's cacheable
 *     tools/list result, `cacheScope: "public"` with a long TTL) came from the old upstream and must
 *     not answer for the new one. The server: test/fixtures/modern-server.mjs over stdio; the
 *     reload adds `--region-tool`, so its new tools/list has one more tool.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { describe, expect, it } from 'vitest';
import { NODE, trackProcesses } from '../helpers/cli.js';
import {
  alive,
  auditTable,
  bearer,
  everything,
  keyToml,
  newKey,
  post,
  q,
  RawSession,
  ReloadGateway,
  sdkClient,
  serverTable,
  textOf,
  waitFor,
} from './helpers.js';

const { running, mark } = trackProcesses();

/**
 * A call long enough to span a reload on a busy machine (the reload's validation in a child
 * process has taken up to 12 s at a load average of 26): one progress notification a second.
 */
const LONG = { name: 'trigger-long-running-operation', arguments: { duration: 12, steps: 12 } };

const MODERN = '2026-07-28';
const FIXTURE = new URL('../fixtures/modern-server.mjs', import.meta.url).pathname;
const ENVELOPE = {
  'io.modelcontextprotocol/protocolVersion': MODERN,
  'io.modelcontextprotocol/clientCapabilities': {},
  'io.modelcontextprotocol/clientInfo': { name: 'reload-test', version: '1.0.0' },
};

const server = (extra: string[]) =>
  `[[upstream.servers]]\nname = "m"\npath_prefix = "/m"\ntransport = "stdio"\nisolation = "shared"\ncommand = ${q(NODE)}\n` +
  `args = [${[FIXTURE, 'stdio', '--list-ttl', '600000', '--list-scope', 'public', ...extra].map(q).join(', ')}]\n`;

async function tools(url: string): Promise<string[]> {
  const res = await post(
    url,
    { jsonrpc: '2.0', id: 1, method: 'tools/list', params: { _meta: ENVELOPE } },
    { 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/list' },
  );
  if (res.status !== 200) throw new Error(`tools/list: HTTP ${res.status} ${res.text.slice(0, 300)}`);
  return (res.message.result.tools as Array<{ name: string }>).map((t) => t.name).sort();
}

describe('reload: a changed server', () => {
  it('a changed server drains: its call in flight completes, its session answers 404, a new child serves it', { timeout: 120_000 }, async () => {
    const m = mark('sighup-changed');
    const config = (tag: string) => (audit: string) => serverTable() + auditTable(audit) + everything('svc', m, tag) + everything('keep', m);
    const gw = new ReloadGateway(config('v1'), { running });
    const base = await gw.ready();
    const oldPid = await gw.waitChild(`${m}-svc v1`);
    const keepPid = await gw.waitChild(`${m}-keep`);
    const kept = await RawSession.open(`${base}/mcp/keep`);

    const { client, transport } = await sdkClient(`${base}/mcp/svc`);
    const sessionId = transport.sessionId!;
    expect(sessionId).toBeTruthy();
    let progress = 0;
    let settled = false;
    const long = client.callTool(LONG, undefined, { onprogress: () => void progress++, timeout: 60_000 }).finally(() => (settled = true));
    await waitFor(() => progress > 0, 20_000, 'the long call to report progress');

    const line = await gw.reload(config('v2'));
    expect(line['servers']).toEqual({ changed: ['svc'] });
    expect(settled, 'the long call was still in flight when the reload was applied').toBe(false);
    const newPid = await gw.waitChild(`${m}-svc v2`);
    expect(newPid).not.toBe(oldPid);

    // Marked: the session takes no new request, even while its call is still in flight.
    const ping = { jsonrpc: '2.0', id: 7, method: 'ping' };
    const during = await post(`${base}/mcp/svc`, ping, { 'mcp-session-id': sessionId });
    expect(during.status).toBe(404);
    expect(during.text).toMatch(/Session not found/);

    // The call in flight completes on the old child; then the session ends and so does the child.
    expect(textOf(await long)).toMatch(/Long running operation completed/);
    const after = await post(`${base}/mcp/svc`, ping, { 'mcp-session-id': sessionId });
    expect(after.status).toBe(404);
    expect(after.text).toMatch(/Session not found/);
    await waitFor(() => gw.process.logLines().some((l) => l['msg'] === 'session closed' && l['sessionId'] === sessionId), 20_000, 'the drained session to end');
    await waitFor(() => !alive(oldPid), 20_000, 'the old child to end');
    await client.close().catch(() => undefined);

    // A new session runs on the new child; the unchanged server kept its child and its session.
    const fresh = await RawSession.open(`${base}/mcp/svc`);
    expect((await fresh.call('echo', { message: 'v2' })).message.result.content[0].text).toBe('Echo: v2');
    expect(gw.childPid(`${m}-svc`)).toBe(newPid);
    expect(gw.childPid(`${m}-keep`)).toBe(keepPid);
    expect((await kept.call('echo', { message: 'kept' })).message.result.content[0].text).toBe('Echo: kept');
  });

  it("a draining session still takes the client's answer to its call in flight (sampling), then ends; new requests get 404", { timeout: 120_000 }, async () => {
    const m = mark('sighup-changed-answer');
    const [owner, other] = [await newKey('owner'), await newKey('other')];
    const config = (tag: string) => (audit: string) => serverTable() + auditTable(audit) + everything('svc', m, tag) + keyToml(owner) + keyToml(other);
    const gw = new ReloadGateway(config('v1'), { running });
    const base = await gw.ready();
    const oldPid = await gw.waitChild(`${m}-svc v1`);

    // The client's sampling answer waits until the test lets it go: the call is in flight for
    // exactly as long as the test needs, whatever the machine's speed.
    let asked = false;
    let answer!: () => void;
    const gate = new Promise<void>((resolve) => (answer = resolve));
    const client = new Client({ name: 'reload-test', version: '1.0.0' }, { capabilities: { sampling: {} } });
    client.setRequestHandler(CreateMessageRequestSchema, async () => {
      asked = true;
      await gate;
      return { model: 'test-model', role: 'assistant', content: { type: 'text', text: 'answered while draining' } };
    });
    const transport = new StreamableHTTPClientTransport(new URL(`${base}/mcp/svc`), { requestInit: { headers: bearer(owner) } });
    await client.connect(transport);
    const sessionId = transport.sessionId!;
    await waitFor(async () => (await client.listTools()).tools.some((t) => t.name === 'trigger-sampling-request'), 10_000, 'trigger-sampling-request');
    const call = client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'during the reload', maxTokens: 10 } }, undefined, {
      timeout: 60_000,
    });
    await waitFor(() => asked, 20_000, 'the sampling request to reach the client');

    const line = await gw.reload(config('v2'));
    expect(line['servers']).toEqual({ changed: ['svc'] });
    await gw.waitChild(`${m}-svc v2`);
    // Draining: a new request is refused...
    const ping = await post(`${base}/mcp/svc`, { jsonrpc: '2.0', id: 7, method: 'ping' }, { 'mcp-session-id': sessionId, ...bearer(owner) });
    expect(ping.status).toBe(404);
    // Another identity holding the id cannot answer in the session's place while it drains: 404,
    // whatever id it guesses (its answers never reach the server).
    for (const id of [0, 1, 2, 3]) {
      const forged = { jsonrpc: '2.0', id, result: { model: 'forged', role: 'assistant', content: { type: 'text', text: 'forged answer' } } };
      expect((await post(`${base}/mcp/svc`, forged, { 'mcp-session-id': sessionId, ...bearer(other) })).status).toBe(404);
    }
    // ...but the answer to the question of the call in flight reaches the old child, which finishes the call.
    answer();
    const result = textOf(await call);
    expect(result).toContain('answered while draining');
    expect(result).not.toContain('forged answer');
    await waitFor(() => !alive(oldPid), 20_000, 'the old child to end once its last call is done');
    await client.close().catch(() => undefined);
  });

  it("a cached tools/list of a changed server's old upstream is not served for the new one", { timeout: 120_000 }, async () => {
    const gw = new ReloadGateway(() => serverTable() + server([]), { running });
    const base = await gw.ready();
    const url = `${base}/mcp/m`;
    let before: string[] = [];
    await waitFor(
      async () => {
        try {
          before = await tools(url);
          return before.length > 0;
        } catch {
          return false;
        }
      },
      30_000,
      'tools/list to answer',
    );
    expect(before).not.toContain('region');
    expect(await tools(url)).toEqual(before);

    const line = await gw.reload(serverTable() + server(['--region-tool']));
    expect(line['servers']).toEqual({ changed: ['m'] });
    let after: string[] = [];
    await waitFor(
      async () => {
        try {
          after = await tools(url);
          return true;
        } catch {
          return false;
        }
      },
      30_000,
      'tools/list to answer after the reload',
    );
    expect(after).toEqual([...before, 'region'].sort());
  });
});
