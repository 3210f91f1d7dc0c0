/**
 * The HTTP contract of the MCP endpoints and the operational routes: every kind of bad input gets
 * a clear 4xx with a JSON-RPC error body (never a stack trace), and good input works as curl sends it.
 */
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curlPost, EVERYTHING, NODE, q, startGateway, type RunningGateway } from '../helpers/gateway.js';

let gw: RunningGateway;

beforeAll(async () => {
  gw = await startGateway(`
[server]
max_request_size = 4096

[[upstream.servers]]
name = "everything"
path_prefix = "/everything"
transport = "stdio"
command = ${q(NODE)}
args = [${q(EVERYTHING)}, "stdio"]

[[upstream.servers]]
name = "other"
path_prefix = "/other"
transport = "http"
url = "http://127.0.0.1:9/mcp"
`);
});

afterAll(async () => {
  await gw?.stop();
});

const mcp = () => `${gw.url}/mcp/everything`;

function rawPost(base: string, path: string, body: string): Promise<{ status: number; text: string; json: any }> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port, path, method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text, json: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function expectJsonRpcError(res: { json: any; text: string }, code: number): void {
  expect(res.json).toMatchObject({ jsonrpc: '2.0', error: { code } });
  expect(res.text).not.toMatch(/\bat \S+ \(|node_modules|\.ts:\d+/);
}

describe('operational routes', () => {
  it('GET /health and /live answer 200', async () => {
    for (const path of ['/health', '/live']) {
      const res = await fetch(gw.url + path);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ status: 'ok' });
    }
  });

  it('GET /ready is 200 once an upstream is healthy, with per-server state', async () => {
    const res = await fetch(`${gw.url}/ready`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { status: string; servers: Array<{ name: string; healthy: boolean }> };
    expect(body.status).toBe('ready');
    expect(body.servers.find((s) => s.name === 'everything')?.healthy).toBe(true);
  });

  it('GET /routes lists name, path_prefix and transport of every server, and no url or command', async () => {
    const res = await fetch(`${gw.url}/routes`);
    const body = (await res.json()) as { routes: Array<Record<string, unknown>> };
    expect(body.routes.map((r) => [r['name'], r['path_prefix'], r['transport']])).toEqual([
      ['everything', '/everything', 'stdio'],
      ['other', '/other', 'http'],
    ]);
    expect(JSON.stringify(body)).not.toContain(EVERYTHING);
    expect(JSON.stringify(body)).not.toContain('127.0.0.1:9');
  });

  it('an unknown server name is a 404 naming it and listing the available ones', async () => {
    const res = await curlPost(`${gw.url}/mcp/nope`, { jsonrpc: '2.0', method: 'tools/list', id: 1 });
    expect(res.status).toBe(404);
    expect(res.json).toEqual({ error: 'Server not found: nope', available: ['everything', 'other'] });
  });

  it('POST /mcp without a default server is a 404 listing the servers', async () => {
    const res = await curlPost(`${gw.url}/mcp`, { jsonrpc: '2.0', method: 'tools/list', id: 1 });
    expect(res.status).toBe(404);
    expect(res.json.available).toEqual(['everything', 'other']);
  });

  it('a path no prefix matches is a 404; prefixes match whole segments only', async () => {
    const res = await curlPost(`${gw.url}/everythingx`, { jsonrpc: '2.0', method: 'tools/list', id: 1 });
    expect(res.status).toBe(404);
    expect(res.json.error).toBe('No route for path: /everythingx');
  });

  it.each(['/everything/%2e%2e/other', '/everything/../other', '/everything/a%2Fb'])('the path %s is refused before routing', async (path) => {
    // fetch() would normalise the dot segments away: send the path exactly as written.
    const res = await rawPost(gw.url, path, JSON.stringify({ jsonrpc: '2.0', method: 'tools/list', id: 1 }));
    expect(res.status).toBe(400);
    expectJsonRpcError(res, -32600);
  });

  it('every response carries a request id, an SSE answer too', async () => {
    const res = await fetch(`${gw.url}/health`);
    expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const sse = await fetch(mcp(), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', 'x-request-id': 'sse-trace-1' },
      body: JSON.stringify({ jsonrpc: '2.0', method: 'tools/list', id: 1 }),
    });
    expect(sse.headers.get('content-type')).toContain('text/event-stream');
    // The gateway's own id, whatever the client sent (its value goes to the audit line apart).
    expect(sse.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    await sse.text();
  });
});

describe('bad input on an MCP endpoint', () => {
  it('malformed JSON: 400 with a JSON-RPC parse error', async () => {
    const res = await curlPost(mcp(), '{"jsonrpc": "2.0", "method": ');
    expect(res.status).toBe(400);
    expectJsonRpcError(res, -32700);
    expect(res.json.id).toBeNull();
  });

  it.each([
    ['not an object', '42'],
    ['wrong version', '{"jsonrpc":"1.0","method":"x","id":1}'],
    ['empty batch', '[]'],
    ['params not an object', '{"jsonrpc":"2.0","method":"tools/list","id":1,"params":[1]}'],
    ['null id on a request', '{"jsonrpc":"2.0","method":"tools/list","id":null}'],
    ['empty method', '{"jsonrpc":"2.0","method":"","id":1}'],
  ])('%s: 400 Invalid Request', async (_what, body) => {
    const res = await curlPost(mcp(), body);
    expect(res.status).toBe(400);
    expectJsonRpcError(res, -32600);
  });

  it('a body over max_request_size: 413', async () => {
    const res = await curlPost(mcp(), { jsonrpc: '2.0', method: 'tools/call', id: 1, params: { name: 'echo', arguments: { message: 'x'.repeat(5000) } } });
    expect(res.status).toBe(413);
    expectJsonRpcError(res, -32600);
  });

  it('a content type that is not JSON: 415', async () => {
    const res = await fetch(mcp(), { method: 'POST', headers: { 'content-type': 'multipart/form-data; boundary=x' }, body: '--x--' });
    expect(res.status).toBe(415);
  });

  it('an unknown session id: 404 with -32001', async () => {
    const res = await curlPost(mcp(), { jsonrpc: '2.0', method: 'tools/list', id: 1 }, { 'mcp-session-id': 'no-such-session' });
    expect(res.status).toBe(404);
    expectJsonRpcError(res, -32001);
  });

  it('an unsupported MCP-Protocol-Version: 400, -32022 with the versions the gateway speaks', async () => {
    const res = await curlPost(mcp(), { jsonrpc: '2.0', method: 'tools/list', id: 1 }, { 'mcp-protocol-version': '1999-01-01' });
    expect(res.status).toBe(400);
    expectJsonRpcError(res, -32022);
    expect(res.json.error.data).toEqual({
      supported: ['2026-07-28', '2025-11-25', '2025-06-18', '2025-03-26', '2024-11-05', '2024-10-07'],
      requested: '1999-01-01',
    });
  });

  it('initialize inside a batch: 400', async () => {
    const init = {
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } },
    };
    const res = await curlPost(mcp(), [init, { jsonrpc: '2.0', method: 'tools/list', id: 2 }]);
    expect(res.status).toBe(400);
    expectJsonRpcError(res, -32600);
  });

  it('GET without a session: 400; GET without accepting SSE: 406; PUT: 405', async () => {
    expect((await fetch(mcp(), { headers: { accept: 'text/event-stream' } })).status).toBe(400);
    const init = await curlPost(mcp(), {
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } },
    });
    const session = init.headers.get('mcp-session-id')!;
    expect((await fetch(mcp(), { headers: { 'mcp-session-id': session, accept: 'application/json' } })).status).toBe(406);
    const put = await fetch(mcp(), { method: 'PUT', body: '{}' });
    expect(put.status).toBe(405);
    expect(put.headers.get('allow')).toBe('GET, POST, DELETE');
    // JSON-RPC-shaped, like every other refusal of an MCP endpoint.
    expect(await put.json()).toEqual({
      jsonrpc: '2.0',
      id: null,
      error: { code: -32600, message: 'Method Not Allowed: PUT; an MCP endpoint takes POST, GET and DELETE' },
    });
  });

  it('a session opened on one server is unknown on another', async () => {
    const init = await curlPost(mcp(), {
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } },
    });
    const session = init.headers.get('mcp-session-id')!;
    const res = await curlPost(`${gw.url}/mcp/other`, { jsonrpc: '2.0', method: 'tools/list', id: 1 }, { 'mcp-session-id': session });
    expect(res.status).toBe(404);
  });
});

describe('good input as curl sends it', () => {
  it('initialize without Accept gets JSON and a session id; the session then works', async () => {
    const init = await curlPost(mcp(), {
      jsonrpc: '2.0',
      id: 'init',
      method: 'initialize',
      params: { protocolVersion: '2025-03-26', capabilities: {}, clientInfo: { name: 'curl', version: '8' } },
    });
    expect(init.status).toBe(200);
    expect(init.json.id).toBe('init');
    expect(init.json.result.protocolVersion).toBe('2025-03-26');
    expect(init.json.result.serverInfo.name).toMatch(/everything/i);
    const session = init.headers.get('mcp-session-id')!;
    const notified = await curlPost(mcp(), { jsonrpc: '2.0', method: 'notifications/initialized' }, { 'mcp-session-id': session });
    expect(notified.status).toBe(202);
    expect(notified.text).toBe('');
    const call = await curlPost(
      mcp(),
      { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'echo', arguments: { message: 'hi' } } },
      { 'mcp-session-id': session },
    );
    expect(call.json).toEqual({ jsonrpc: '2.0', id: 7, result: { content: [{ type: 'text', text: 'Echo: hi' }] } });
  });

  it('a batch gets an array of responses, ids restored, notifications not answered', async () => {
    const res = await curlPost(mcp(), [
      { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { message: 'a' } } },
      { jsonrpc: '2.0', method: 'notifications/roots/list_changed' },
      { jsonrpc: '2.0', id: 'two', method: 'tools/call', params: { name: 'echo', arguments: { message: 'b' } } },
    ]);
    expect(res.status).toBe(200);
    expect(res.json).toHaveLength(2);
    expect(res.json[0]).toMatchObject({ id: 1, result: { content: [{ text: 'Echo: a' }] } });
    expect(res.json[1]).toMatchObject({ id: 'two', result: { content: [{ text: 'Echo: b' }] } });
  });

  it("an unknown tool comes back as the upstream's own answer", async () => {
    const res = await curlPost(mcp(), { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'no-such-tool', arguments: {} } });
    expect(res.status).toBe(200);
    expect(JSON.stringify(res.json)).toMatch(/no-such-tool/);
  });

  it('an upstream that refuses connections: 502 "Failed to connect to \'other\'"', async () => {
    const res = await curlPost(`${gw.url}/mcp/other`, { jsonrpc: '2.0', method: 'tools/list', id: 1 });
    expect(res.status).toBe(502);
    expectJsonRpcError(res, -32000);
    expect(res.json.error.message).toContain("Failed to connect to 'other'");
    expect(res.json.id).toBe(1);
  });
});
