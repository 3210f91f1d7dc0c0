/**
 * The official SDK client, over streamable HTTP, through the gateway, to server-everything running
 * as a stdio child: sessions, tools, progress, sampling, environment isolation, many concurrent
 * clients on one child, a child killed mid-call, and the session lifecycle.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  LoggingMessageNotificationSchema,
  ResourceUpdatedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curlPost, EVERYTHING, NODE, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';

let gw: RunningGateway;
const SECRET_IN_GATEWAY_ENV = 'gateway-only-secret-7d1f';

beforeAll(async () => {
  process.env['MCP_GUARD_TEST_GATEWAY_SECRET'] = SECRET_IN_GATEWAY_ENV;
  gw = await startGateway(`
[[upstream.servers]]
name = "everything"
path_prefix = "/everything"
transport = "stdio"
command = ${q(NODE)}
args = [${q(EVERYTHING)}, "stdio"]
env = { CHILD_ONLY = "given-by-config" }
relay_roots = true
restart_backoff_ms = 100
timeout_ms = 20000
`);
});

afterAll(async () => {
  await gw?.stop();
  delete process.env['MCP_GUARD_TEST_GATEWAY_SECRET'];
});

async function connect(path = '/mcp/everything', options: { sampling?: boolean; roots?: boolean; elicitation?: boolean } = {}): Promise<Client> {
  const capabilities: Record<string, object> = {};
  if (options.sampling) capabilities['sampling'] = {};
  if (options.elicitation) capabilities['elicitation'] = {};
  if (options.roots) capabilities['roots'] = { listChanged: true };
  const client = new Client({ name: 'e2e', version: '1.0.0' }, { capabilities });
  if (options.sampling) {
    client.setRequestHandler(CreateMessageRequestSchema, async (request) => ({
      model: 'test-model',
      role: 'assistant',
      content: { type: 'text', text: `sampled: ${JSON.stringify(request.params.messages[0]?.content)}` },
    }));
  }
  if (options.roots) {
    client.setRequestHandler(ListRootsRequestSchema, async () => ({ roots: [{ uri: 'file:///tmp/e2e-root', name: 'e2e' }] }));
  }
  if (options.elicitation) {
    client.setRequestHandler(ElicitRequestSchema, async () => ({
      action: 'accept',
      content: {
        name: 'Ada Lovelace',
        check: true,
        firstLine: 'Once upon a time',
        email: 'ada@example.com',
        homepage: 'https://example.com',
        birthdate: '1815-12-10',
        integer: 42,
        number: 3.14,
        untitledSingleSelectEnum: 'option1',
        titledSingleSelectEnum: 'value1',
        legacyTitledEnum: 'opt1',
        untitledMultipleSelectEnum: ['option1'],
        titledMultipleSelectEnum: ['value1'],
      },
    }));
  }
  await client.connect(new StreamableHTTPClientTransport(new URL(gw.url + path)));
  return client;
}

function text(result: unknown): string {
  const content = (result as { content: Array<{ type: string; text?: string }> }).content;
  return content.map((c) => c.text ?? '').join('');
}

describe('SDK client -> gateway -> stdio server-everything', () => {
  it("initializes with the child's server info and lists its tools", async () => {
    const client = await connect();
    expect(client.getServerVersion()?.name).toMatch(/everything/i);
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    expect(names).toContain('echo');
    expect(names).toContain('trigger-long-running-operation');
    expect(names).toContain('get-env');
    await client.close();
  });

  it('calls a tool by name and by prefix route', async () => {
    for (const path of ['/mcp/everything', '/everything', '/everything/any/sub/path']) {
      const client = await connect(path);
      const result = await client.callTool({ name: 'echo', arguments: { message: `hello via ${path}` } });
      expect(text(result)).toContain(`hello via ${path}`);
      await client.close();
    }
  });

  it('routes progress notifications to the request that asked for them', async () => {
    const client = await connect();
    const progress: number[] = [];
    const result = await client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 4 } }, undefined, {
      onprogress: (p) => progress.push(p.progress),
    });
    expect(text(result)).toMatch(/completed/i);
    expect(progress).toEqual([1, 2, 3, 4]);
    await client.close();
  });

  it('delivers a sampling request to the client that made the call and returns its answer', async () => {
    const sampler = await connect('/mcp/everything', { sampling: true });
    const bystander = await connect();
    const result = await sampler.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'hi there', maxTokens: 5 } });
    expect(text(result)).toContain('sampled:');
    expect(text(result)).toContain('hi there');
    await sampler.close();
    await bystander.close();
  });

  it("gives the child only its configured env plus a minimal safe set, never the gateway's", async () => {
    const client = await connect();
    const env = JSON.parse(text(await client.callTool({ name: 'get-env', arguments: {} }))) as Record<string, string>;
    expect(env['CHILD_ONLY']).toBe('given-by-config');
    expect(env['PATH']).toBeTruthy();
    expect(env['MCP_GUARD_TEST_GATEWAY_SECRET']).toBeUndefined();
    expect(JSON.stringify(env)).not.toContain(SECRET_IN_GATEWAY_ENV);
    await client.close();
  });

  it('never swaps replies between many concurrent clients on one child', async () => {
    const clients = await Promise.all(Array.from({ length: 10 }, () => connect()));
    const calls = clients.flatMap((client, c) =>
      Array.from({ length: 20 }, async (_, i) => {
        const result = await client.callTool({ name: 'echo', arguments: { message: `client ${c} call ${i}` } });
        return { expected: `client ${c} call ${i}`, got: text(result) };
      }),
    );
    const results = await Promise.all(calls);
    for (const r of results) expect(r.got).toBe(`Echo: ${r.expected}`);
    await Promise.all(clients.map((c) => c.close()));
  });

  it('delivers an elicitation request to the client and returns its answer', async () => {
    const client = await connect('/mcp/everything', { elicitation: true });
    const result = await client.callTool({ name: 'trigger-elicitation-request', arguments: {} });
    expect(text(result)).toContain('Ada Lovelace');
    await client.close();
  });

  it('asks the client that announced its roots for them', async () => {
    const client = await connect('/mcp/everything', { roots: true });
    await client.sendRootsListChanged();
    await waitFor(
      async () => text(await client.callTool({ name: 'get-roots-list', arguments: {} })).includes('file:///tmp/e2e-root'),
      10_000,
      'the child to learn the roots',
    );
    await client.close();
  });

  it('cancels a call the client aborts; the session goes on', async () => {
    const client = await connect();
    const controller = new AbortController();
    let progressed = 0;
    // 20 steps in 10 s: a first progress after 0.5 s proves the call is running in the child.
    const call = client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 10, steps: 20 } }, undefined, {
      signal: controller.signal,
      onprogress: () => progressed++,
    });
    await waitFor(() => progressed > 0, 10_000, 'the first progress of the call');
    controller.abort();
    await expect(call).rejects.toThrow();
    const sessions = gw.app.gateway.sessions;
    expect(sessions.size).toBeGreaterThan(0);
    const result = await client.callTool({ name: 'echo', arguments: { message: 'still here' } });
    expect(text(result)).toContain('still here');
    await client.close();
  });

  it("streams logging and resource updates to the client's GET stream", async () => {
    const client = await connect();
    const logs: unknown[] = [];
    const updates: string[] = [];
    client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
      logs.push(n.params.data);
    });
    client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
      updates.push(n.params.uri);
    });
    const { resources } = await client.listResources();
    const uri = resources[0]!.uri;
    await client.subscribeResource({ uri });
    await client.callTool({ name: 'toggle-simulated-logging', arguments: {} });
    await client.callTool({ name: 'toggle-subscriber-updates', arguments: {} });
    // server-everything sends both every 5 s.
    await waitFor(() => logs.length > 0 && updates.length > 0, 15_000, 'a log message and a resource update');
    expect(updates).toContain(uri);
    await client.callTool({ name: 'toggle-simulated-logging', arguments: {} });
    await client.callTool({ name: 'toggle-subscriber-updates', arguments: {} });
    await client.unsubscribeResource({ uri });
    await client.close();
  });

  it("logs the child's stderr", () => {
    expect(gw.logs.some((l) => l.includes('"stream":"stderr"') && l.includes('"server":"everything"'))).toBe(true);
  });

  it('answers ping', async () => {
    const client = await connect();
    await expect(client.ping()).resolves.toBeDefined();
    await client.close();
  });

  it('serves a plain curl POST without a session, as in the seed guide', async () => {
    const res = await curlPost(`${gw.url}/mcp/everything`, { jsonrpc: '2.0', method: 'tools/list', id: 1 });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/application\/json/);
    expect(res.json.id).toBe(1);
    expect(res.json.result.tools.length).toBeGreaterThan(5);
  });

  it('fails a call in flight at once when the child dies, then restarts the child', async () => {
    const client = await connect();
    const upstream = gw.app.gateway.upstream('everything');
    const pid = upstream.status().pid;
    expect(pid).toBeTypeOf('number');
    const callMs = 15_000;
    let progressed = 0;
    // 30 steps in 15 s: a first progress after 0.5 s proves the call is running in the child.
    const call = client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: callMs / 1000, steps: 30 } }, undefined, {
      onprogress: () => progressed++,
    });
    await waitFor(() => progressed > 0, 10_000, 'the first progress of the call');
    const started = Date.now();
    process.kill(pid!, 'SIGKILL');
    await expect(call).rejects.toThrow(/exited/);
    // "At once": well before the call would have ended on its own.
    expect(Date.now() - started).toBeLessThan(callMs / 3);
    await waitFor(() => upstream.status().healthy && upstream.status().pid !== pid, 15_000, 'the child to restart');
    expect(upstream.status().restarts).toBeGreaterThanOrEqual(1);
    // The same session goes on working against the new child.
    const result = await client.callTool({ name: 'echo', arguments: { message: 'after restart' } });
    expect(text(result)).toContain('after restart');
    await client.close();
  });

  it('ends a session on DELETE; the id is then unknown (404)', async () => {
    const transport = new StreamableHTTPClientTransport(new URL(`${gw.url}/mcp/everything`));
    const client = new Client({ name: 'e2e', version: '1' });
    await client.connect(transport);
    const sessionId = transport.sessionId!;
    expect(sessionId).toMatch(/^[0-9a-f-]{36}$/);
    await transport.terminateSession();
    const res = await curlPost(`${gw.url}/mcp/everything`, { jsonrpc: '2.0', method: 'tools/list', id: 2 }, { 'mcp-session-id': sessionId });
    expect(res.status).toBe(404);
    expect(res.json.error.code).toBe(-32001);
    await client.close();
  });
});
