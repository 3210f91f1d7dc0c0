/**
 * A virtual server whose members come and go: an http member (server-everything over streamable
 * HTTP) that is down when the client initializes and comes up later on its port, then goes away
 * and comes back; the client is told (tools, prompts and resources list_changed) and lists again.
 * And a 2026-07-28 client (raw requests with the modern headers and `_meta`, and the official v2
 * client pinned to 2026-07-28) served through the same virtual server.
 */
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from '@modelcontextprotocol/client';
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, type EverythingServer } from '../helpers/everything.js';
import { jsonOrUndefined, waitFor, type RunningGateway, startGateway } from '../helpers/gateway.js';
import { connect, startAgain, startEverything, httpMember, metric, stdioMember, text, virtualServer, walk, type Caller } from './helpers.js';

const MODERN = '2026-07-28';
const ENVELOPE = {
  'io.modelcontextprotocol/protocolVersion': MODERN,
  'io.modelcontextprotocol/clientCapabilities': {},
  'io.modelcontextprotocol/clientInfo': { name: 'virtual-modern-raw', version: '1.0.0' },
};
const CHANGED = ['notifications/tools/list_changed', 'notifications/prompts/list_changed', 'notifications/resources/list_changed'];

/** One 2026-07-28 POST: the headers a modern client sends, and the answer (JSON or the last SSE event). */
async function modernPost(url: string, method: string, params: Record<string, unknown>, name?: string): Promise<{ status: number; json: any }> {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'mcp-protocol-version': MODERN,
    'mcp-method': method,
  };
  if (name !== undefined) headers['mcp-name'] = name;
  const res = await fetch(url, {
    method: 'POST',
    headers,
    body: JSON.stringify({ jsonrpc: '2.0', id: method, method, params: { ...params, _meta: ENVELOPE } }),
  });
  const raw = await res.text();
  const json =
    jsonOrUndefined(raw) ??
    raw
      .split('\n')
      .filter((line) => line.startsWith('data:'))
      .map((line) => jsonOrUndefined(line.slice(5).trim()))
      .filter((m) => m && 'id' in m)
      .at(-1);
  return { status: res.status, json };
}

describe('a member that is down at start, comes up, goes away and comes back', () => {
  let late: EverythingServer | undefined;
  let port: number;
  let gw: RunningGateway;
  let caller: Caller;

  beforeAll(async () => {
    port = await freePort();
    // The breaker would hold the member off for 30 s after five refused connections: not what is tested here.
    gw = await startGateway(`
${stdioMember('a')}
${httpMember('late', `http://127.0.0.1:${port}/mcp`, 'http', 'timeout_ms = 10000\ncircuit_failure_threshold = 1000')}
${virtualServer('ws', ['a', 'late'])}
`);
    caller = await connect(`${gw.url}/mcp/ws`);
  }, 120_000);

  afterAll(async () => {
    await caller?.close().catch(() => undefined);
    await gw?.stop();
    await late?.stop();
  });

  const lateTools = async () => (await walk(caller.client, 'listTools')).items.map((t) => t['name'] as string).filter((n) => n.startsWith('late__'));

  it('initialize succeeds without it and its tools are left out', async () => {
    expect(caller.client.getServerVersion()?.name).toBe('ws');
    const names = (await walk(caller.client, 'listTools')).items.map((t) => t['name'] as string);
    expect(names).toContain('a__echo');
    expect(names.filter((n) => n.startsWith('late__'))).toEqual([]);
    expect(await metric(gw.url, 'mcp_guard_virtual_member_omitted_total', { virtual_server: 'ws', server: 'late' })).toBeGreaterThan(0);
  });

  it('when it comes up the client gets tools, prompts and resources list_changed, then lists and calls its tools', { timeout: 120_000 }, async () => {
    // Member a (server-everything) may have announced tools of its own already (it adds some once
    // initialized, and the gateway holds those for the client's GET stream): only what comes from
    // now on counts. Prompts and resources list_changed can only come from the member coming up.
    const told = caller.changed.length;
    expect(caller.changed.filter((m) => m !== 'notifications/tools/list_changed')).toEqual([]);
    late = await startEverything('streamableHttp', port);
    await waitFor(() => CHANGED.every((m) => caller.changed.slice(told).includes(m)), 45_000, 'list_changed for the member that came up');
    expect(await lateTools()).toContain('late__echo');
    expect(text(await caller.client.callTool({ name: 'late__echo', arguments: { message: 'back' } }))).toBe('Echo: back');
    const prompts = (await walk(caller.client, 'listPrompts')).items.map((p) => p['name'] as string);
    expect(prompts).toContain('late__simple-prompt');
  });

  it('when it goes away it is left out of lists (which still answer); when it is back the client is told again', { timeout: 120_000 }, async () => {
    await late!.stop();
    // The list still answers, with a's tools only.
    await waitFor(async () => (await lateTools()).length === 0, 20_000, 'the member to be left out');
    expect((await walk(caller.client, 'listTools')).items.map((t) => t['name'])).toContain('a__echo');
    const told = caller.changed.length;
    await startAgain(late!);
    await waitFor(() => caller.changed.length > told, 45_000, 'list_changed for the member that came back');
    await waitFor(async () => (await lateTools()).includes('late__echo'), 20_000, "the member's tools to be listed again");
    expect(text(await caller.client.callTool({ name: 'late__echo', arguments: { message: 'again' } }))).toBe('Echo: again');
  });
});

describe('a member that accepts connections and never answers', () => {
  let silent: Server;
  const sockets: Socket[] = [];
  let gw: RunningGateway;

  beforeAll(async () => {
    silent = createServer((socket) => void sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', () => resolve()));
    const { port } = silent.address() as { port: number };
    gw = await startGateway(
      `${stdioMember('a')}\n${httpMember('silent', `http://127.0.0.1:${port}/mcp`, 'http', 'timeout_ms = 1500')}\n${virtualServer('ws', ['a', 'silent'])}`,
    );
  }, 120_000);

  afterAll(async () => {
    await gw?.stop();
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => silent?.close(resolve));
  });

  it('does not fail initialize (it is left out once its own timeout passes), nor the lists, and its tools answer an error', async () => {
    const caller = await connect(`${gw.url}/mcp/ws`);
    try {
      expect(caller.client.getServerVersion()?.name).toBe('ws');
      const names = (await walk(caller.client, 'listTools')).items.map((t) => t['name'] as string);
      expect(names).toContain('a__echo');
      expect(names.filter((n) => n.startsWith('silent__'))).toEqual([]);
      await expect(caller.client.callTool({ name: 'silent__echo', arguments: { message: 'x' } })).rejects.toThrow(/silent/);
      expect(text(await caller.client.callTool({ name: 'a__echo', arguments: { message: 'fine' } }))).toBe('Echo: fine');
    } finally {
      await caller.close();
    }
  });
});

describe('a 2026-07-28 client through a virtual server', () => {
  let gw: RunningGateway;
  let member: EverythingServer;
  let url: string;

  beforeAll(async () => {
    member = await startEverything('streamableHttp');
    gw = await startGateway(`${stdioMember('a')}\n${httpMember('b', member.url)}\n${virtualServer('ws', ['a', 'b'])}`);
    url = `${gw.url}/mcp/ws`;
  }, 120_000);

  afterAll(async () => {
    await gw?.stop();
    await member?.stop();
  });

  it('server/discover, tools/list and tools/call with the modern headers and _meta', async () => {
    const discover = await modernPost(url, 'server/discover', {});
    expect(discover.status).toBe(200);
    expect(discover.json.result).toMatchObject({ resultType: 'complete', supportedVersions: [MODERN], capabilities: { tools: {} } });
    expect(discover.json.result._meta['io.modelcontextprotocol/serverInfo'].name).toBe('ws');

    const list = await modernPost(url, 'tools/list', {});
    expect(list.status).toBe(200);
    expect(list.json.result.resultType).toBe('complete');
    const names = (list.json.result.tools as Array<{ name: string }>).map((t) => t.name);
    expect(names).toContain('a__echo');
    expect(names).toContain('b__echo');

    for (const name of ['a__echo', 'b__echo']) {
      const call = await modernPost(url, 'tools/call', { name, arguments: { message: `modern ${name}` } }, name);
      expect(call.status, name).toBe(200);
      expect(call.json.result).toMatchObject({ resultType: 'complete', content: [{ type: 'text', text: `Echo: modern ${name}` }] });
    }
    const unknown = await modernPost(url, 'tools/call', { name: 'echo', arguments: {} }, 'echo');
    expect(unknown.json.error.code).toBe(-32602);
  });

  it('the official v2 client pinned to 2026-07-28 lists and calls', async () => {
    const client = new ModernClient({ name: 'virtual-modern', version: '1.0.0' }, { versionNegotiation: { mode: { pin: MODERN } } });
    await client.connect(new ModernTransport(new URL(url)));
    try {
      expect(client.getProtocolEra()).toBe('modern');
      const { tools } = await client.listTools();
      expect(tools.map((t) => t.name)).toEqual(expect.arrayContaining(['a__echo', 'b__echo', 'b__get-sum']));
      const result = await client.callTool({ name: 'b__get-sum', arguments: { a: 1, b: 2 } });
      expect(JSON.stringify(result.content)).toContain('3');
    } finally {
      await client.close();
    }
  });
});
