/**
 * A 2026-07-28 client (the official v2 client, `@modelcontextprotocol/client`, with
 * `versionNegotiation: { mode: 'auto' }` or pinned to 2026-07-28) through a real gateway to legacy
 * upstreams (server-everything over stdio, streamable HTTP and SSE): the gateway speaks the modern
 * era downstream and holds the legacy session upstream. Raw requests check the header rules of
 * the specification (-32020, -32022, -32602, 404 -32601) the way a hand-written client meets them.
 */
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { everythingStdio, jsonOrUndefined, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { EverythingServer } from '../helpers/everything.js';

const MODERN = '2026-07-28';
const ENVELOPE = {
  'io.modelcontextprotocol/protocolVersion': MODERN,
  'io.modelcontextprotocol/clientCapabilities': {},
  'io.modelcontextprotocol/clientInfo': { name: 'raw-test', version: '1.0.0' },
};

async function modernClient(url: string, mode: 'auto' | 'pin' = 'auto'): Promise<Client> {
  const client = new Client({ name: 'modern-test', version: '1.0.0' }, { versionNegotiation: { mode: mode === 'auto' ? 'auto' : { pin: MODERN } } });
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  return client;
}

/** One modern POST with exactly these headers (defaults for a tools/list), and its answer. */
async function post(url: string, body: unknown, headers: Record<string, string | undefined> = {}): Promise<{ status: number; json: any; headers: Headers }> {
  const all: Record<string, string> = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'mcp-protocol-version': MODERN,
    'mcp-method': 'tools/list',
  };
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) delete all[name];
    else all[name] = value;
  }
  const res = await fetch(url, { method: 'POST', headers: all, body: JSON.stringify(body) });
  return { status: res.status, json: jsonOrUndefined(await res.text()), headers: res.headers };
}

describe.each(['stdio', 'streamableHttp', 'sse'] as const)('a 2026-07-28 client through the gateway to server-everything over %s', (transport) => {
  let upstream: EverythingServer | undefined;
  let gw: RunningGateway;
  let url: string;

  beforeAll(async () => {
    let toml: string;
    if (transport === 'stdio') {
      toml = everythingStdio('everything');
    } else {
      upstream = await EverythingServer.start(transport);
      toml = `[[upstream.servers]]\nname = "everything"\npath_prefix = "/everything"\ntransport = ${q(transport === 'sse' ? 'sse' : 'http')}\nurl = ${q(upstream.url)}\n`;
    }
    gw = await startGateway(toml);
    url = `${gw.url}/mcp/everything`;
  });
  afterAll(async () => {
    await gw?.stop();
    await upstream?.stop();
  });

  it('negotiates the modern era in auto mode, lists tools and calls one', async () => {
    const client = await modernClient(url);
    try {
      expect(client.getProtocolEra()).toBe('modern');
      expect(client.getServerVersion()?.name).toContain('everything');
      const { tools } = await client.listTools();
      expect(tools.map((t) => t.name)).toContain('echo');
      const result = await client.callTool({ name: 'echo', arguments: { message: 'modern hello' } });
      expect(result.content).toEqual([{ type: 'text', text: 'Echo: modern hello' }]);
    } finally {
      await client.close();
    }
  });

  it('relays a sampling request of the legacy server as input_required rounds (MRTR) and completes the call', async () => {
    const client = new Client({ name: 'modern-sampler', version: '1.0.0' }, { capabilities: { sampling: {} }, versionNegotiation: { mode: { pin: MODERN } } });
    const asked: unknown[] = [];
    client.setRequestHandler('sampling/createMessage', async (request: { params: unknown }) => {
      asked.push(request.params);
      return { role: 'assistant', content: { type: 'text', text: 'sampled by the modern client' }, model: 'test-model', stopReason: 'endTurn' };
    });
    await client.connect(new StreamableHTTPClientTransport(new URL(url)));
    try {
      expect(client.getProtocolEra()).toBe('modern');
      const result = await client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'hi there', maxTokens: 5 } });
      expect(JSON.stringify(result.content)).toContain('sampled by the modern client');
      expect(asked).toHaveLength(1);
      expect(JSON.stringify(asked[0])).toContain('hi there');
    } finally {
      await client.close();
    }
  });

  it('relays an elicitation request the same way', async () => {
    const client = new Client(
      { name: 'modern-eliciter', version: '1.0.0' },
      { capabilities: { elicitation: {} }, versionNegotiation: { mode: { pin: MODERN } } },
    );
    client.setRequestHandler('elicitation/create', async () => ({
      action: 'accept',
      content: { name: 'Ada Lovelace', email: 'ada@example.com', age: 36, role: 'engineer' },
    }));
    await client.connect(new StreamableHTTPClientTransport(new URL(url)));
    try {
      expect(client.getProtocolEra()).toBe('modern');
      const result = await client.callTool({ name: 'trigger-elicitation-request', arguments: {} });
      expect(JSON.stringify(result.content)).toContain('Ada Lovelace');
    } finally {
      await client.close();
    }
  });

  it('subscriptions/listen: acknowledges what the server can send and delivers resource updates on the stream', { timeout: 20_000 }, async () => {
    if (transport === 'sse') return; // server-everything's SSE mode sends updates only to the session that toggled them
    const client = await modernClient(url, 'pin');
    const updates: string[] = [];
    client.setNotificationHandler('notifications/resources/updated', (n: { params: { uri: string } }) => {
      updates.push(n.params.uri);
    });
    try {
      const uri = 'demo://resource/static/document/architecture.md';
      const subscription = await client.listen({ resourceSubscriptions: [uri], toolsListChanged: true, promptsListChanged: true });
      // server-everything announces resource subscriptions and list changes of tools and prompts.
      expect(subscription.honoredFilter).toEqual({ toolsListChanged: true, promptsListChanged: true, resourceSubscriptions: [uri] });
      await client.callTool({ name: 'toggle-subscriber-updates', arguments: {} });
      await waitFor(() => updates.length > 0, 12_000, 'a resource update on the listen stream');
      expect(updates).toContain(uri);
      await client.callTool({ name: 'toggle-subscriber-updates', arguments: {} });
      await subscription.close();
      expect(await subscription.closed).toBe('local');
    } finally {
      await client.close();
    }
  });

  it('works pinned to 2026-07-28 (no legacy fallback)', async () => {
    const client = await modernClient(url, 'pin');
    try {
      expect(client.getProtocolEra()).toBe('modern');
      const { tools } = await client.listTools();
      expect(tools.length).toBeGreaterThan(0);
    } finally {
      await client.close();
    }
  });
});

describe('the header and envelope rules of a 2026-07-28 request', () => {
  let gw: RunningGateway;
  let url: string;
  const list = { jsonrpc: '2.0', id: 1, method: 'tools/list', params: { _meta: ENVELOPE } };
  const call = (name: string) => ({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name, arguments: { message: 'x' }, _meta: ENVELOPE } });

  beforeAll(async () => {
    gw = await startGateway(everythingStdio('everything'));
    url = `${gw.url}/mcp/everything`;
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it('answers server/discover from the server it fronts', async () => {
    const res = await post(url, { jsonrpc: '2.0', id: 'd', method: 'server/discover', params: { _meta: ENVELOPE } }, { 'mcp-method': 'server/discover' });
    expect(res.status).toBe(200);
    expect(res.json.result).toMatchObject({
      resultType: 'complete',
      supportedVersions: [MODERN],
      ttlMs: 0,
      cacheScope: 'private',
      capabilities: { tools: {} },
    });
    expect(res.json.result._meta['io.modelcontextprotocol/serverInfo'].name).toContain('everything');
  });

  it('gives every result resultType and the caching hints where they belong', async () => {
    const tools = await post(url, list);
    expect(tools.status).toBe(200);
    expect(tools.json.result).toMatchObject({ resultType: 'complete', ttlMs: 0, cacheScope: 'private' });
    const echo = await post(url, call('echo'), { 'mcp-method': 'tools/call', 'mcp-name': 'echo' });
    expect(echo.json.result).toMatchObject({ resultType: 'complete', content: [{ type: 'text', text: 'Echo: x' }] });
    expect(echo.json.result.ttlMs).toBeUndefined();
  });

  it('accepts a Base64-encoded Mcp-Name and header names in any case', async () => {
    const res = await post(url, call('echo'), { 'mcp-method': 'tools/call', 'mcp-name': `=?base64?${Buffer.from('echo').toString('base64')}?=` });
    expect(res.status).toBe(200);
    expect(res.json.result.content[0].text).toBe('Echo: x');
  });

  it.each([
    ['no MCP-Protocol-Version', list, { 'mcp-protocol-version': undefined }],
    ['MCP-Protocol-Version unlike _meta', list, { 'mcp-protocol-version': '2025-11-25' }],
    ['no Mcp-Method', list, { 'mcp-method': undefined }],
    ['Mcp-Method unlike the method', list, { 'mcp-method': 'prompts/list' }],
    ['Mcp-Method in another case', list, { 'mcp-method': 'Tools/List' }],
    ['no Mcp-Name on tools/call', call('echo'), { 'mcp-method': 'tools/call' }],
    ['Mcp-Name unlike the tool', call('echo'), { 'mcp-method': 'tools/call', 'mcp-name': 'get-sum' }],
    ['Mcp-Name in broken Base64', call('echo'), { 'mcp-method': 'tools/call', 'mcp-name': '=?base64?not*base64?=' }],
  ] as const)('%s: 400, -32020, never forwarded', async (_what, body, headers) => {
    const res = await post(url, body, headers as Record<string, string | undefined>);
    expect(res.status).toBe(400);
    expect(res.json.error.code).toBe(-32020);
  });

  it('an unsupported version: 400, -32022 with the supported versions', async () => {
    const envelope = { ...ENVELOPE, 'io.modelcontextprotocol/protocolVersion': '2099-01-01' };
    const res = await post(url, { ...list, params: { _meta: envelope } }, { 'mcp-protocol-version': '2099-01-01' });
    expect(res.status).toBe(400);
    expect(res.json.error).toMatchObject({ code: -32022, data: { supported: [MODERN], requested: '2099-01-01' } });
  });

  it('a malformed envelope: 400, -32602', async () => {
    const noCapabilities = { ...list, params: { _meta: { 'io.modelcontextprotocol/protocolVersion': MODERN } } };
    expect((await post(url, noCapabilities)).json.error.code).toBe(-32602);
    const noMeta = { jsonrpc: '2.0', id: 1, method: 'tools/list' };
    const res = await post(url, noMeta);
    expect(res.status).toBe(400);
    expect(res.json.error.code).toBe(-32602);
  });

  it('methods the era does not have (ping, initialize, logging/setLevel, unknown ones): 404, -32601', async () => {
    for (const method of ['ping', 'initialize', 'logging/setLevel', 'resources/subscribe', 'foo/bar']) {
      const res = await post(url, { jsonrpc: '2.0', id: 3, method, params: { _meta: ENVELOPE } }, { 'mcp-method': method });
      expect(res.status, method).toBe(404);
      expect(res.json.error.code, method).toBe(-32601);
    }
  });

  it('MRTR by hand: input_required, a retry bound to its call, single use, and capabilities respected', async () => {
    const withSampling = { ...ENVELOPE, 'io.modelcontextprotocol/clientCapabilities': { sampling: {} } };
    const sample = (id: number, prompt: string, extra: Record<string, unknown> = {}, meta: Record<string, unknown> = withSampling) => ({
      jsonrpc: '2.0',
      id,
      method: 'tools/call',
      params: { name: 'trigger-sampling-request', arguments: { prompt, maxTokens: 5 }, _meta: meta, ...extra },
    });
    const headers = { 'mcp-method': 'tools/call', 'mcp-name': 'trigger-sampling-request' };

    const first = await post(url, sample(10, 'round one'), headers);
    expect(first.status).toBe(200);
    expect(first.json.id).toBe(10);
    const { resultType, inputRequests, requestState } = first.json.result;
    expect(resultType).toBe('input_required');
    const keys = Object.keys(inputRequests);
    expect(keys).toHaveLength(1);
    expect(inputRequests[keys[0]!]).toMatchObject({ method: 'sampling/createMessage' });
    expect(JSON.stringify(inputRequests[keys[0]!].params)).toContain('round one');
    expect(first.json.result.ttlMs).toBeUndefined();

    const answer = { [keys[0]!]: { role: 'assistant', content: { type: 'text', text: 'by hand' }, model: 'm', stopReason: 'endTurn' } };
    // The state of this call does not continue another one.
    const other = await post(url, sample(11, 'another prompt', { inputResponses: answer, requestState }), headers);
    expect(other.status).toBe(400);
    expect(other.json.error).toMatchObject({ code: -32602, message: expect.stringContaining('belongs to another request') });

    const done = await post(url, sample(12, 'round one', { inputResponses: answer, requestState }), headers);
    expect(done.status).toBe(200);
    expect(done.json.id).toBe(12);
    expect(done.json.result.resultType).toBe('complete');
    expect(JSON.stringify(done.json.result.content)).toContain('by hand');

    // Single use: the call is over.
    const again = await post(url, sample(13, 'round one', { inputResponses: answer, requestState }), headers);
    expect(again.json.error).toMatchObject({ code: -32602, message: expect.stringContaining('unknown or has expired') });

    // A client that did not declare sampling is never asked: the server gets the refusal.
    const undeclared = await post(url, sample(14, 'no sampling', {}, ENVELOPE), headers);
    expect(undeclared.status).toBe(200);
    expect(undeclared.json.result.resultType).toBe('complete');
    expect(JSON.stringify(undeclared.json.result)).toMatch(/sampling/i);
  });

  it('a batch of modern requests: 400, -32600', async () => {
    const res = await post(url, [list, { ...list, id: 9 }]);
    expect(res.status).toBe(400);
    expect(res.json.error.code).toBe(-32600);
  });

  it('a notification: 202, without the header checks', async () => {
    const res = await post(url, { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 1, _meta: ENVELOPE } }, { 'mcp-method': undefined });
    expect(res.status).toBe(202);
  });

  it('legacy clients at the same URL are served as before', async () => {
    const res = await post(url, { jsonrpc: '2.0', id: 1, method: 'tools/list' }, { 'mcp-protocol-version': '2025-06-18', 'mcp-method': undefined });
    expect(res.status).toBe(200);
    expect(res.json.result.tools.length).toBeGreaterThan(0);
    expect(res.json.result.resultType).toBeUndefined();
  });
});

describe('a 2026-07-28 client closing its response cancels the call upstream', () => {
  const FAULT_SERVER = new URL('../reliability/fault-stdio-server.mjs', import.meta.url).pathname;
  const MODERN_SERVER = new URL('../fixtures/modern-server.mjs', import.meta.url).pathname;
  let dir: string;
  let gw: RunningGateway;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'modern-cancel-'));
    gw = await startGateway(
      `[[upstream.servers]]\nname = "legacy"\npath_prefix = "/legacy"\ncommand = ${q(process.execPath)}\nargs = [${q(FAULT_SERVER)}, ${q(join(dir, 'received.log'))}, "modern-cancel"]\n` +
        `[[upstream.servers]]\nname = "modern"\npath_prefix = "/modern"\ncommand = ${q(process.execPath)}\nargs = [${q(MODERN_SERVER)}, "stdio", "--modern-only"]\n`,
    );
  });
  afterAll(async () => {
    await gw?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A modern tools/call whose response the client abandons once `reached()` shows the server has it. */
  async function abandon(server: string, name: string, args: Record<string, unknown>, reached: () => boolean): Promise<void> {
    const controller = new AbortController();
    const pending = fetch(`${gw.url}/mcp/${server}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': MODERN,
        'mcp-method': 'tools/call',
        'mcp-name': name,
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: args, _meta: ENVELOPE } }),
      signal: controller.signal,
    }).then((res) => res.text());
    pending.catch(() => undefined);
    await waitFor(reached, 10_000, `the ${name} call to reach the ${server} server`);
    controller.abort();
    await expect(pending).rejects.toThrow();
  }

  it('to a legacy server: notifications/cancelled for the call', async () => {
    const received = () => (existsSync(join(dir, 'received.log')) ? readFileSync(join(dir, 'received.log'), 'utf8') : '');
    await abandon('legacy', 'hang', {}, () => received().includes('"method":"tools/call"'));
    await waitFor(() => received().includes('"method":"notifications/cancelled"'), 5_000, 'the legacy server to receive notifications/cancelled');
  });

  it('to a modern server over stdio: notifications/cancelled, and the server stops the work', async () => {
    const calls = () => gw.logs.filter((line) => line.includes('event: recv tools/call')).length;
    const before = calls();
    await abandon('modern', 'slow', { ms: 10_000, tag: 'abandoned' }, () => calls() > before);
    await waitFor(() => gw.logs.some((line) => line.includes('event: cancelled abandoned')), 5_000, 'the modern server to see the call cancelled');
  });
});
