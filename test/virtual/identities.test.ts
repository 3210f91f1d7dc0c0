/**
 * A virtual server as each identity sees it (API keys made as `mcp-guard keygen` makes them, the
 * official SDK client v1): server-qualified `allowed_tools` patterns ("a:echo"), `servers = [...]`
 * limiting the members an identity reaches, sessions bound to their identity and member set, and
 * a member's sampling request reaching only the client whose call caused it. Members: server-
 * everything over stdio (a) and over streamable HTTP (b).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EverythingServer } from '../helpers/everything.js';
import { q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { bearer, makeKey, type Key } from '../helpers/identities.js';
import { auditEvents, connect, startEverything, forgedCursor, httpMember, rawPost, stdioMember, text, virtualServer, walk, type Caller } from './helpers.js';

const INIT = {
  jsonrpc: '2.0',
  id: 0,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
};

describe('a virtual server per identity', () => {
  let b: EverythingServer;
  let gw: RunningGateway;
  let dir: string;
  let auditFile: string;
  /** allowed_tools = ["a:echo"] */
  let qualified: Key;
  /** servers = ["a"] */
  let onlyA: Key;
  /** servers = ["ws"]: the virtual server by name */
  let byName: Key;
  /** no limits */
  let full: Key;
  const open: Caller[] = [];
  const ws = () => `${gw.url}/mcp/ws`;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mcp-guard-virtual-id-'));
    auditFile = join(dir, 'audit.log');
    // The keys first: argon2 hashing takes both cores for a while, and server-everything has 15 s to listen.
    [qualified, onlyA, byName, full] = await Promise.all([makeKey('qualified'), makeKey('only-a'), makeKey('by-name'), makeKey('full')]);
    b = await startEverything('streamableHttp');
    gw = await startGateway(`
[audit]
file = ${q(auditFile)}

${stdioMember('a')}
${httpMember('b', b.url)}
${virtualServer('ws', ['a', 'b'])}
${virtualServer('ws2', ['a', 'b'])}
${virtualServer('onlyb', ['b'])}

[auth]
protect_routes = true
${qualified.block}
allowed_tools = ["a:echo"]
${onlyA.block}
servers = ["a"]
${byName.block}
servers = ["ws"]
${full.block}
`);
  }, 120_000);

  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => c.close().catch(() => undefined)));
  });

  afterAll(async () => {
    await gw?.stop();
    await b?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function as(key: Key, url = ws(), sampling = false): Promise<Caller> {
    const caller = await connect(url, key, { sampling });
    open.push(caller);
    return caller;
  }

  /** A tools/call in the caller's session, raw: the HTTP status and the JSON-RPC answer. */
  function call(caller: Caller, key: Key, name: string, url = ws()) {
    return rawPost(
      url,
      { jsonrpc: '2.0', id: `call-${name}`, method: 'tools/call', params: { name, arguments: { message: 'm' } } },
      { ...bearer(key), 'mcp-session-id': caller.transport.sessionId!, 'mcp-protocol-version': caller.transport.protocolVersion ?? '2025-06-18' },
    );
  }

  it('allowed_tools = ["a:echo"]: only a__echo is listed; b__echo is refused with a JSON-RPC error and never forwarded', async () => {
    const caller = await as(qualified);
    const names = (await walk(caller.client, 'listTools')).items.map((t) => t['name']);
    expect(names).toEqual(['a__echo']);
    expect(text(await caller.client.callTool({ name: 'a__echo', arguments: { message: 'allowed' } }))).toBe('Echo: allowed');
    for (const name of ['b__echo', 'a__get-sum']) {
      const refused = await call(caller, qualified, name);
      expect(refused.json, name).toMatchObject({ jsonrpc: '2.0', id: `call-${name}`, error: { message: expect.stringContaining('Forbidden') } });
      expect(refused.json.result).toBeUndefined();
    }
    await waitFor(
      () => auditEvents(auditFile).some((e) => e['event_type'] === 'authz_denied' && e['server'] === 'a' && e['tool'] === 'get-sum'),
      10_000,
      'the denials in the audit log',
    );
    const mine = auditEvents(auditFile).filter((e) => e['identity_id'] === 'qualified' && e['method'] === 'tools/call');
    expect(mine.filter((e) => e['event_type'] === 'tool_call').map((e) => [e['server'], e['tool']])).toEqual([['a', 'echo']]);
    expect(mine.filter((e) => e['event_type'] === 'authz_denied').map((e) => [e['server'], e['tool'], e['reason']])).toEqual([
      ['b', 'echo', 'tool not allowed'],
      ['a', 'get-sum', 'tool not allowed'],
    ]);
    // The qualified pattern applies to a on its own route as well, and to nothing of b's.
    const onA = await as(qualified, `${gw.url}/mcp/a`);
    expect((await onA.client.listTools()).tools.map((t) => t.name)).toEqual(['echo']);
    const onB = await as(qualified, `${gw.url}/mcp/b`);
    expect((await onB.client.listTools()).tools).toEqual([]);
  });

  it('servers = ["a"]: only the members it may reach; 403 on a virtual server of only b; a cursor forged to b is refused', async () => {
    const caller = await as(onlyA);
    const names = (await walk(caller.client, 'listTools')).items.map((t) => t['name'] as string);
    expect(names).toContain('a__echo');
    expect(names.every((n) => n.startsWith('a__'))).toBe(true);
    const uris = (await walk(caller.client, 'listResources')).items.map((r) => r['uri'] as string);
    expect(uris.length).toBeGreaterThan(0);
    expect(uris.every((u) => u.startsWith('mcp-guard://a/'))).toBe(true);
    // b is not a member of its view: b__echo is no tool of this virtual server, and b's resources are no resources.
    const toB = await call(caller, onlyA, 'b__echo');
    expect(toB.json.error).toBeDefined();
    expect(toB.json.result).toBeUndefined();
    await expect(caller.client.readResource({ uri: 'mcp-guard://b/demo://resource/dynamic/text/1' })).rejects.toThrow();
    await expect(caller.client.listTools({ cursor: forgedCursor({ b: 'x' }) })).rejects.toMatchObject({ code: -32602 });

    const refused = await rawPost(`${gw.url}/mcp/onlyb`, INIT, bearer(onlyA));
    expect(refused.status).toBe(403);
    const routes = (await (await fetch(`${gw.url}/routes`, { headers: bearer(onlyA) })).json()) as { routes: Array<Record<string, unknown>> };
    expect(routes.routes.find((r) => r['name'] === 'ws')).toMatchObject({ transport: 'virtual', servers: ['a'], separator: '__', healthy: true });
    expect(routes.routes.map((r) => r['name'])).not.toContain('onlyb');
    expect(routes.routes.map((r) => r['name'])).not.toContain('b');
  });

  it('servers = ["ws"]: the virtual server by name reaches every member, but not the members on their own routes', async () => {
    const caller = await as(byName);
    const names = (await walk(caller.client, 'listTools')).items.map((t) => t['name'] as string);
    expect(names).toContain('a__echo');
    expect(names).toContain('b__echo');
    expect(text(await caller.client.callTool({ name: 'b__echo', arguments: { message: 'by name' } }))).toBe('Echo: by name');
    for (const own of ['a', 'b', 'ws2']) expect((await rawPost(`${gw.url}/mcp/${own}`, INIT, bearer(byName))).status, own).toBe(403);
    const routes = (await (await fetch(`${gw.url}/routes`, { headers: bearer(byName) })).json()) as { routes: Array<Record<string, unknown>> };
    expect(routes.routes.map((r) => r['name'])).toEqual(['ws']);
    expect(routes.routes[0]).toMatchObject({ servers: ['a', 'b'] });
  });

  it('a session id is bound to its identity and its route: anyone else, or another route, gets 404', async () => {
    const owner = await as(full);
    const id = owner.transport.sessionId!;
    const list = { jsonrpc: '2.0', id: 7, method: 'tools/list' };
    const headers = (key: Key) => ({ ...bearer(key), 'mcp-session-id': id, 'mcp-protocol-version': '2025-06-18' });
    // Its owner, on its route.
    const own = await rawPost(ws(), list, headers(full));
    expect(own.status).toBe(200);
    expect(own.json.result.tools.length).toBeGreaterThan(0);
    // Another identity, even one that sees the same members.
    for (const other of [byName, onlyA, qualified]) {
      const stolen = await rawPost(ws(), list, headers(other));
      expect(stolen.status, other.block).toBe(404);
      expect(stolen.json.error.message).toContain('Session not found');
      const stream = await fetch(ws(), { headers: { ...headers(other), accept: 'text/event-stream' } });
      expect(stream.status).toBe(404);
      await stream.body?.cancel();
      expect((await fetch(ws(), { method: 'DELETE', headers: headers(other) })).status).toBe(404);
    }
    // The same identity on another route: a virtual server with the same members, a member, a path prefix that is not it.
    for (const route of ['/mcp/ws2', '/mcp/a', '/mcp/b']) {
      const elsewhere = await rawPost(`${gw.url}${route}`, list, headers(full));
      expect(elsewhere.status, route).toBe(404);
      expect(elsewhere.json.error.message).toContain('Session not found');
    }
    // And the session still works for its owner.
    expect(text(await owner.client.callTool({ name: 'a__echo', arguments: { message: 'still mine' } }))).toBe('Echo: still mine');
  });

  it("a member's sampling request reaches the client whose call caused it, and no other", async () => {
    const mine = await as(full, ws(), true);
    const theirs = await as(byName, ws(), true);
    for (const m of ['a', 'b']) {
      const result = await mine.client.callTool({ name: `${m}__trigger-sampling-request`, arguments: { prompt: `only-for-full-${m}`, maxTokens: 5 } });
      expect(text(result)).toContain(`client sampled`);
      expect(text(result)).toContain(`only-for-full-${m}`);
    }
    expect(mine.sampled).toHaveLength(2);
    const other = await theirs.client.callTool({ name: 'b__trigger-sampling-request', arguments: { prompt: 'for-by-name', maxTokens: 5 } });
    expect(text(other)).toContain('for-by-name');
    expect(theirs.sampled).toHaveLength(1);
    expect(theirs.sampled.join()).not.toContain('only-for-full');
    expect(mine.sampled.join()).not.toContain('for-by-name');
  });
});
