/**
 * `[[virtual_servers]]` with real members behind a real gateway: server-everything over stdio (a),
 * streamable HTTP (b) and SSE (c), the paginating fixture over stdio (pages: 250 tools, 100 a
 * page), an http member nobody listens for (down) and a stdio member whose child exits at once
 * (dead). One client (the official SDK v1, declaring sampling) sees one MCP server: merged
 * initialize, complete namespaced lists, calls, prompts, resources, completions, progress,
 * sampling and log lines each routed to and from their member; and what it must be refused.
 */
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, type EverythingServer } from '../helpers/everything.js';
import { q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import {
  auditEvents,
  connect,
  counts,
  deadMember,
  forgedCursor,
  httpMember,
  metric,
  PAGED_TOOLS,
  pagedMember,
  rawPost,
  startEverything,
  stdioMember,
  text,
  virtualServer,
  walk,
  type Caller,
} from './helpers.js';

const EVERYTHINGS = ['a', 'b', 'c'] as const;
/** The client declares sampling, roots and elicitation: server-everything then offers the tools that ask for them. */
const ALL = { sampling: true, roots: true, elicitation: true };

/** The JSON-RPC error code a rejected SDK call carried. */
async function errorOf(work: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await work;
  } catch (err) {
    if (err instanceof McpError) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('expected a JSON-RPC error, got a result');
}

describe('a virtual server over stdio, streamable HTTP, SSE, paginating, down and dead members', () => {
  let b: EverythingServer;
  let c: EverythingServer;
  let gw: RunningGateway;
  let dir: string;
  let auditFile: string;
  let caller: Caller;
  /** Direct clients of each everything member on its own route, to compare the merged lists with. */
  const direct = new Map<string, Caller>();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mcp-guard-virtual-'));
    auditFile = join(dir, 'audit.log');
    [b, c] = await Promise.all([startEverything('streamableHttp'), startEverything('sse')]);
    const nobody = await freePort();
    gw = await startGateway(`
[server]
metrics = true

[audit]
file = ${q(auditFile)}

${stdioMember('a')}
${httpMember('b', b.url)}
${httpMember('c', c.url, 'sse')}
${pagedMember('pages')}
${httpMember('down', `http://127.0.0.1:${nobody}/mcp`, 'http', 'timeout_ms = 10000')}
${deadMember('dead')}
${virtualServer('workspace', ['*'], 'path_prefix = "/workspace"')}
${virtualServer('pair', ['a', 'pages'])}
`);
    caller = await connect(`${gw.url}/mcp/workspace`, undefined, ALL);
    await Promise.all(EVERYTHINGS.map(async (m) => direct.set(m, await connect(`${gw.url}/mcp/${m}`, undefined, ALL))));
  }, 120_000);

  afterAll(async () => {
    await Promise.all([caller, ...direct.values()].map((x) => x?.close().catch(() => undefined)));
    await gw?.stop();
    await Promise.all([b?.stop(), c?.stop()]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('initialize merges the live members and does not fail for the ones that are down', () => {
    expect(caller.client.getServerVersion()?.name).toBe('workspace');
    expect(caller.client.getServerCapabilities()).toMatchObject({
      tools: { listChanged: true },
      prompts: { listChanged: true },
      resources: { listChanged: true, subscribe: true },
      logging: {},
      completions: {},
    });
    const instructions = caller.client.getInstructions() ?? '';
    for (const m of [...EVERYTHINGS, 'pages']) expect(instructions).toContain(`## ${m}\n`);
    expect(instructions).toContain('Paged fixture: its lists come in pages.');
    expect(instructions).not.toContain('## down');
    expect(instructions).not.toContain('## dead');
  });

  it('tools/list walked to its end holds every tool of every live member exactly once, namespaced', async () => {
    const { items, pages } = await walk(caller.client, 'listTools');
    const names = items.map((t) => t['name'] as string);
    // 250 tools at 100 a page: at least three pages, with everyone else's tools on them too.
    expect(pages).toBeGreaterThanOrEqual(3);
    const seen = counts(names);
    expect([...seen].filter(([, n]) => n > 1)).toEqual([]);
    for (let i = 0; i < PAGED_TOOLS; i++) expect(seen.get(`pages__tool-${String(i).padStart(3, '0')}`), `tool ${i}`).toBe(1);
    expect(seen.get('pages__log')).toBe(1);
    expect(seen.get('pages__links')).toBe(1);
    let total = PAGED_TOOLS + 2;
    for (const m of EVERYTHINGS) {
      const own = (await walk(direct.get(m)!.client, 'listTools')).items.map((t) => `${m}__${t['name']}`);
      total += own.length;
      expect(own).toContain(`${m}__echo`);
      expect(names.filter((n) => n.startsWith(`${m}__`)).sort()).toEqual(own.sort());
    }
    expect(names.filter((n) => n.startsWith('down__') || n.startsWith('dead__'))).toEqual([]);
    expect(names.length).toBe(total);
    // The schemas travel unchanged.
    expect(items.find((t) => t['name'] === 'pages__tool-007')).toMatchObject({ description: 'fixture tool tool-007', inputSchema: { type: 'object' } });
  });

  it('prompts, resources and resource templates are complete too, URIs under mcp-guard://<member>/', async () => {
    const prompts = await walk(caller.client, 'listPrompts');
    // The fixture gives one prompt a page.
    expect(prompts.pages).toBeGreaterThanOrEqual(3);
    const promptNames = prompts.items.map((p) => p['name'] as string);
    expect(counts(promptNames).size).toBe(promptNames.length);
    for (const p of ['first', 'second', 'third']) expect(promptNames).toContain(`pages__${p}`);

    const resources = await walk(caller.client, 'listResources');
    const uris = resources.items.map((r) => r['uri'] as string);
    expect(counts(uris).size).toBe(uris.length);
    for (let i = 0; i < 5; i++) expect(uris).toContain(`mcp-guard://pages/fixture://doc/${i}`);

    for (const m of EVERYTHINGS) {
      const own = direct.get(m)!.client;
      const ownPrompts = (await walk(own, 'listPrompts')).items.map((p) => `${m}__${p['name']}`);
      expect(promptNames.filter((n) => n.startsWith(`${m}__`)).sort()).toEqual(ownPrompts.sort());
      const ownUris = (await walk(own, 'listResources')).items.map((r) => `mcp-guard://${m}/${r['uri']}`);
      expect(ownUris.length).toBeGreaterThan(0);
      expect(uris.filter((u) => u.startsWith(`mcp-guard://${m}/`)).sort()).toEqual(ownUris.sort());
    }

    const templates = (await walk(caller.client, 'listResourceTemplates')).items.map((t) => t['uriTemplate'] as string);
    for (const m of EVERYTHINGS) expect(templates).toContain(`mcp-guard://${m}/demo://resource/dynamic/text/{resourceId}`);
    expect(templates).toContain('mcp-guard://pages/fixture://doc/{id}');
  });

  it('calls reach the member that owns the tool, under its own name', async () => {
    for (const m of EVERYTHINGS) {
      const result = await caller.client.callTool({ name: `${m}__echo`, arguments: { message: `hello ${m}` } });
      expect(result.content).toEqual([{ type: 'text', text: `Echo: hello ${m}` }]);
    }
    expect(text(await caller.client.callTool({ name: 'pages__tool-249', arguments: { message: 'last' } }))).toBe('tool-249: last');
    expect(text(await caller.client.callTool({ name: 'pages__tool-000', arguments: { message: 'first' } }))).toBe('tool-000: first');
    expect(text(await caller.client.callTool({ name: 'b__get-sum', arguments: { a: 20, b: 22 } }))).toContain('42');
  });

  it('prompts/get reaches the member of the prompt', async () => {
    const args = await caller.client.getPrompt({ name: 'a__args-prompt', arguments: { city: 'Lisbon', state: 'Lx' } });
    expect(JSON.stringify(args.messages)).toContain('Lisbon');
    const second = await caller.client.getPrompt({ name: 'pages__second' });
    expect(second.messages).toEqual([{ role: 'user', content: { type: 'text', text: 'the second prompt' } }]);
    const sse = await caller.client.getPrompt({ name: 'c__simple-prompt' });
    expect(sse.messages.length).toBeGreaterThan(0);
  });

  it('resources/read of a listed resource and of a templated one, through each transport', async () => {
    const listed = await caller.client.readResource({ uri: 'mcp-guard://a/demo://resource/static/document/architecture.md' });
    expect(listed.contents[0]).toMatchObject({ uri: 'mcp-guard://a/demo://resource/static/document/architecture.md' });
    expect(String((listed.contents[0] as { text?: string }).text).length).toBeGreaterThan(0);
    for (const m of ['b', 'c']) {
      const templated = await caller.client.readResource({ uri: `mcp-guard://${m}/demo://resource/dynamic/text/7` });
      expect(templated.contents[0]).toMatchObject({ uri: `mcp-guard://${m}/demo://resource/dynamic/text/7` });
      expect((templated.contents[0] as { text?: string }).text).toContain('Resource 7');
    }
    const fixture = await caller.client.readResource({ uri: 'mcp-guard://pages/fixture://doc/42' });
    expect(fixture.contents).toEqual([{ uri: 'mcp-guard://pages/fixture://doc/42', mimeType: 'text/plain', text: 'fixture document 42' }]);
  });

  it("resource links and embedded resources in a call's result carry the virtual URIs, which can be read back", async () => {
    const fixture = await caller.client.callTool({ name: 'pages__links', arguments: {} });
    expect(fixture.content).toEqual([
      { type: 'resource_link', uri: 'mcp-guard://pages/fixture://doc/1', name: 'doc 1' },
      { type: 'resource', resource: { uri: 'mcp-guard://pages/fixture://doc/2', mimeType: 'text/plain', text: 'embedded doc 2' } },
      { type: 'text', text: 'links done' },
    ]);
    const links = await caller.client.callTool({ name: 'b__get-resource-links', arguments: { count: 2 } });
    const uris = (links.content as Array<{ type: string; uri?: string }>).filter((x) => x.type === 'resource_link').map((x) => x.uri!);
    expect(uris).toHaveLength(2);
    for (const uri of uris) {
      expect(uri.startsWith('mcp-guard://b/demo://')).toBe(true);
      const read = await caller.client.readResource({ uri });
      expect(read.contents[0]!.uri).toBe(uri);
    }
  });

  it('completion/complete goes to the member of the prompt it references', async () => {
    const done = await caller.client.complete({ ref: { type: 'ref/prompt', name: 'a__completable-prompt' }, argument: { name: 'department', value: 'S' } });
    expect(done.completion.values.sort()).toEqual(['Sales', 'Support']);
    const viaHttp = await caller.client.complete({
      ref: { type: 'ref/prompt', name: 'b__completable-prompt' },
      argument: { name: 'name', value: '' },
      context: { arguments: { department: 'Engineering' } },
    });
    expect(viaHttp.completion.values).toEqual(['Alice', 'Bob', 'Charlie']);
    const nowhere = await errorOf(
      caller.client.complete({ ref: { type: 'ref/prompt', name: 'completable-prompt' }, argument: { name: 'department', value: '' } }),
    );
    expect(nowhere.code).toBe(-32602);
  });

  it('progress of a long-running tool reaches the caller (stdio and streamable HTTP members)', async () => {
    for (const m of ['a', 'b']) {
      const progress: number[] = [];
      const result = await caller.client.callTool({ name: `${m}__trigger-long-running-operation`, arguments: { duration: 1, steps: 3 } }, undefined, {
        onprogress: (p) => progress.push(p.progress),
      });
      expect(text(result)).toContain('completed');
      expect(progress.length, `progress from ${m}`).toBeGreaterThan(0);
      expect(progress).toEqual([...progress].sort((x, y) => x - y));
    }
  });

  it('sampling asked by a stdio, a streamable HTTP and an SSE member reaches the client, its answer the tool', async () => {
    for (const m of EVERYTHINGS) {
      const before = caller.sampled.length;
      const result = await caller.client.callTool({ name: `${m}__trigger-sampling-request`, arguments: { prompt: `sample-for-${m}`, maxTokens: 5 } });
      expect(caller.sampled.length).toBe(before + 1);
      expect(caller.sampled.at(-1)).toContain(`sample-for-${m}`);
      expect(text(result)).toContain('client sampled');
      expect(text(result)).toContain(`sample-for-${m}`);
    }
  });

  it("a member's elicitation (stdio, SSE) and roots (streamable HTTP) requests are answered by the client, the answer back to the member", async () => {
    for (const m of ['a', 'c']) {
      const before = caller.asked.elicitation;
      const result = await caller.client.callTool({ name: `${m}__trigger-elicitation-request`, arguments: {} });
      expect(caller.asked.elicitation).toBe(before + 1);
      expect(JSON.stringify(result.content)).toContain('Ada Lovelace');
    }
    // server-everything over stdio does not offer get-roots-list (the gateway's child declares no roots): over HTTP it does.
    const roots = await caller.client.callTool({ name: 'b__get-roots-list', arguments: {} });
    expect(caller.asked.roots).toBeGreaterThan(0);
    expect(text(roots)).toContain('file:///virtual-test-root');
  });

  it('a batch mixes members, ping and a method the virtual server does not have, each answered in place', async () => {
    const batch = await rawPost(
      `${gw.url}/mcp/workspace`,
      [
        { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'a__echo', arguments: { message: 'one' } } },
        { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'pages__tool-001', arguments: { message: 'two' } } },
        { jsonrpc: '2.0', id: 3, method: 'ping' },
        { jsonrpc: '2.0', id: 4, method: 'tasks/list' },
      ],
      { 'mcp-session-id': caller.transport.sessionId!, 'mcp-protocol-version': caller.transport.protocolVersion ?? '2025-06-18' },
    );
    expect(batch.status).toBe(200);
    const byId = new Map((batch.json as Array<Record<string, any>>).map((m) => [m['id'], m]));
    expect(byId.get(1)!['result'].content).toEqual([{ type: 'text', text: 'Echo: one' }]);
    expect(byId.get(2)!['result'].content).toEqual([{ type: 'text', text: 'tool-001: two' }]);
    expect(byId.get(3)!['result']).toEqual({});
    expect(byId.get(4)!['error'].code).toBe(-32601);
  });

  it('a subscription to a member resource gets its updates under the virtual URI', { timeout: 30_000 }, async () => {
    const uri = 'mcp-guard://a/demo://resource/static/document/architecture.md';
    await caller.client.subscribeResource({ uri });
    await caller.client.callTool({ name: 'a__toggle-subscriber-updates', arguments: {} });
    try {
      // server-everything sends them every 5 s.
      await waitFor(() => caller.updated.includes(uri), 20_000, 'a resource update');
      expect(caller.updated.every((u) => u === uri)).toBe(true);
    } finally {
      await caller.client.callTool({ name: 'a__toggle-subscriber-updates', arguments: {} });
      await caller.client.unsubscribeResource({ uri });
    }
  });

  it('log lines name their member as logger; logging/setLevel and ping are answered', async () => {
    await caller.client.setLoggingLevel('debug');
    await caller.client.ping();
    const result = await caller.client.callTool({ name: 'pages__log', arguments: { message: 'L1' } });
    expect(text(result)).toBe('log done: L1');
    await waitFor(() => caller.logs.some((l) => l.data === 'plain L1'), 10_000, 'the log lines');
    expect(caller.logs).toContainEqual({ level: 'warning', logger: 'pages/inner', data: 'logged L1' });
    expect(caller.logs).toContainEqual({ level: 'warning', logger: 'pages', data: 'plain L1' });
  });

  it('a member that is down is left out of lists, counted, and its tools answer an error', async () => {
    await walk(caller.client, 'listTools');
    for (const member of ['down', 'dead']) {
      expect(await metric(gw.url, 'mcp_guard_virtual_member_omitted_total', { virtual_server: 'workspace', server: member }), member).toBeGreaterThan(0);
    }
    expect(await metric(gw.url, 'mcp_guard_virtual_member_omitted_total', { virtual_server: 'workspace', server: 'a' })).toBe(0);
    // A call to a member that is down: a JSON-RPC error naming it (the gateway answers it with an HTTP error status,
    // as it does for a server that is down on its own route).
    const down = await rawPost(
      `${gw.url}/mcp/workspace`,
      { jsonrpc: '2.0', id: 'down-call', method: 'tools/call', params: { name: 'down__echo', arguments: { message: 'x' } } },
      { 'mcp-session-id': caller.transport.sessionId!, 'mcp-protocol-version': caller.transport.protocolVersion ?? '2025-06-18' },
    );
    expect(down.json).toMatchObject({ jsonrpc: '2.0', id: 'down-call', error: { message: expect.stringContaining("'down' is unavailable") } });
    const routes = (await (await fetch(`${gw.url}/routes`)).json()) as { routes: Array<Record<string, unknown>> };
    expect(routes.routes.find((r) => r['name'] === 'workspace')).toEqual({
      name: 'workspace',
      path_prefix: '/workspace',
      transport: 'virtual',
      servers: ['a', 'b', 'c', 'pages', 'down', 'dead'],
      separator: '__',
      healthy: true,
    });
  });

  it('a forged or broken cursor is refused with -32602, never forwarded', async () => {
    const pair = await connect(`${gw.url}/mcp/pair`);
    try {
      // "b" is a configured server, but not a member of "pair".
      for (const cursor of [forgedCursor({ b: 'at-0' }), forgedCursor({ nobody: 'x' }), 'not a cursor', forgedCursor({})]) {
        const refused = await errorOf(pair.client.listTools({ cursor }));
        expect(refused.code, cursor).toBe(-32602);
      }
      // A cursor naming a member is honoured: the fixture's second page, and nothing of a.
      const page = await pair.client.listTools({ cursor: forgedCursor({ pages: 'at-100' }) });
      expect(page.tools.map((t) => t.name)).toEqual(Array.from({ length: 100 }, (_, i) => `pages__tool-${100 + i}`));
      // A cursor the member refuses (stale, or garbage inside ours) fails the page with the member's
      // error: an empty page would end the client's list early without a word.
      const stale = await errorOf(pair.client.listTools({ cursor: forgedCursor({ pages: 'garbage' }) }));
      expect(stale.message).toContain('server "pages"');
    } finally {
      await pair.close();
    }
  });

  it('unknown names and URIs are clear JSON-RPC errors', async () => {
    const bare = await errorOf(caller.client.callTool({ name: 'echo', arguments: { message: 'x' } }));
    expect(bare.code).toBe(-32602);
    expect(bare.message).toContain('<server>__<name>');
    const stranger = await errorOf(caller.client.callTool({ name: 'nobody__echo', arguments: { message: 'x' } }));
    expect(stranger.code).toBe(-32602);
    const prompt = await errorOf(caller.client.getPrompt({ name: 'simple-prompt' }));
    expect(prompt.code).toBe(-32602);
    const resource = await errorOf(caller.client.readResource({ uri: 'demo://resource/static/document/architecture.md' }));
    expect(resource.code).toBe(-32602);
    const notMember = await errorOf(caller.client.readResource({ uri: 'mcp-guard://nobody/demo://resource/static/document/architecture.md' }));
    expect(notMember.code).toBe(-32602);
    // The member itself says it has no such tool (an error result or a JSON-RPC error: either names it).
    const missing = await caller.client.callTool({ name: 'a__no-such-tool', arguments: {} }).then(
      (r) => ({ isError: r.isError, said: text(r) }),
      (e: Error) => ({ isError: true, said: e.message }),
    );
    expect(missing.isError).toBe(true);
    expect(missing.said).toContain('no-such-tool');
  });

  it('the path_prefix reaches the virtual server too', async () => {
    const init = await rawPost(`${gw.url}/workspace`, {
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
    });
    expect(init.status).toBe(200);
    expect(init.json.result.serverInfo.name).toBe('workspace');
    const id = init.headers.get('mcp-session-id')!;
    expect(id).toBeTruthy();
    const gone = await fetch(`${gw.url}/workspace`, { method: 'DELETE', headers: { 'mcp-session-id': id } });
    expect(gone.status).toBe(200);
  });

  it("the audit line of a call through the virtual server names the member and the tool's own name", async () => {
    await errorOf(caller.client.callTool({ name: 'nobody__echo', arguments: { message: 'x' } }));
    await caller.client.callTool({ name: 'c__echo', arguments: { message: 'audited' } });
    await waitFor(() => auditEvents(auditFile).some((e) => e['server'] === 'c' && e['tool'] === 'echo'), 10_000, 'the audit line');
    const line = auditEvents(auditFile).find((e) => e['server'] === 'c' && e['tool'] === 'echo')!;
    expect(line).toMatchObject({ event_type: 'tool_call', method: 'tools/call', success: true });
    // Only a name no member owns ("nobody__echo", called above) stays the virtual server's, under the name it was called by.
    const namespaced = auditEvents(auditFile).filter((e) => typeof e['tool'] === 'string' && e['tool'].includes('__'));
    expect(namespaced.length).toBeGreaterThan(0);
    expect(namespaced.every((e) => e['server'] === 'workspace' && e['tool'] === 'nobody__echo')).toBe(true);
  });

  it('the audit line of a call through the virtual server also names the virtual server', async () => {
    await waitFor(() => auditEvents(auditFile).some((e) => e['server'] === 'c' && e['tool'] === 'echo'), 10_000, 'the audit line');
    expect(auditEvents(auditFile).find((e) => e['server'] === 'c' && e['tool'] === 'echo')).toMatchObject({ virtual_server: 'workspace' });
  });
});
