/**
 * The depth bound on upstream input (src/upstreams/inbound.ts; issue 16, finding 2) on the paths
 * the stdio and streamable HTTP tests (test/cli/hostile-upstream.test.ts, test/fuzz/upstream.test.ts)
 * do not take: a legacy HTTP+SSE upstream and a 2026-07-28 (stateless) HTTP upstream, each a tiny
 * node:http peer on 127.0.0.1 writing what no real server would. And the reading of a refused
 * message's top level, which decides whose request fails.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JsonRpcRequest, JsonRpcResponse } from '../../src/jsonrpc/messages.js';
import { MODERN_PROTOCOL_VERSION } from '../../src/protocol/versions.js';
import { UpstreamError } from '../../src/upstreams/errors.js';
import { MAX_UPSTREAM_DEPTH, nestedTooDeep, topLevelOf } from '../../src/upstreams/inbound.js';
import { SseUpstream } from '../../src/upstreams/http/sse.js';
import { StreamableHttpUpstream } from '../../src/upstreams/http/streamable-http.js';
import type { ServerMessage, UpstreamSession } from '../../src/upstreams/upstream.js';
import { memoryLogger, recordingHandlers, upstreamConfig } from '../helpers/everything.js';

const deep = (n: number): string => `${'['.repeat(n)}${']'.repeat(n)}`;
const DEEP = deep(5_000);
const TOO_DEEP = `nested deeper than ${MAX_UPSTREAM_DEPTH} levels`;
const DROPPED = 'upstream sent a message nested too deep; dropped';

describe('finding 2: the top level of a message too deep to parse', () => {
  it('is judged before parsing: deeper than MAX_UPSTREAM_DEPTH, brackets in strings not counted', () => {
    // The message object is one level, `params` a second: MAX - 2 arrays inside reach the limit.
    const at = (n: number) => `{"jsonrpc":"2.0","method":"x","params":{"d":${deep(n)}}}`;
    expect(nestedTooDeep(at(MAX_UPSTREAM_DEPTH - 2))).toBe(false);
    expect(nestedTooDeep(at(MAX_UPSTREAM_DEPTH - 1))).toBe(true);
    expect(nestedTooDeep(`{"s":"${'['.repeat(10_000)}"}`)).toBe(false);
  });

  it('finds the id of a response whatever the order of its members, and what a request or notification is', () => {
    expect(topLevelOf(`{"jsonrpc":"2.0","id":7,"result":{"d":${DEEP}}}`)).toEqual([{ id: 7, hasMethod: false, hasResult: true, hasError: false }]);
    // The MCP SDK writes the id last; a string id; escapes in member names.
    expect(topLevelOf(`{"result":{"d":${DEEP},"id":1},"jsonrpc":"2.0","\\u0069d":"call-9"}`)).toEqual([
      { id: 'call-9', hasMethod: false, hasResult: true, hasError: false },
    ]);
    expect(topLevelOf(`{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m","data":${DEEP}}}`)).toEqual([
      { id: null, hasMethod: false, hasResult: false, hasError: true },
    ]);
    expect(topLevelOf(`{"jsonrpc":"2.0","method":"sampling/createMessage","id":3,"params":${DEEP}}`)).toEqual([
      { id: 3, method: 'sampling/createMessage', hasMethod: true, hasResult: false, hasError: false },
    ]);
    // A batch: each element's own members; ids nested inside values are not the message's.
    expect(topLevelOf(`[{"method":"a","params":{"id":5}},{"id":4,"result":${DEEP}},[{"id":6}]]`)).toEqual([
      { method: 'a', hasMethod: true, hasResult: false, hasError: false },
      { id: 4, hasMethod: false, hasResult: true, hasError: false },
    ]);
    // An id of a wrong type or too long is no id; garbage yields nothing, and never throws.
    expect(topLevelOf(`{"id":{"a":1},"result":${DEEP}}`)).toEqual([{ hasMethod: false, hasResult: true, hasError: false }]);
    expect(topLevelOf(`{"id":"${'i'.repeat(300)}","result":${DEEP}}`)).toEqual([{ hasMethod: false, hasResult: true, hasError: false }]);
    for (const garbage of ['', '"', '{"id":', `{"id":7,"result":${deep(1000)}`, '{{{{', ']]]]', '[[[[']) expect(() => topLevelOf(garbage)).not.toThrow();
  });
});

/**
 * The peer. Legacy HTTP+SSE: GET /sse names /message as its endpoint; each POSTed tools/call is
 * answered on the stream, by tool name: `deep_notification` (a notification 5,000 deep, then the
 * result), `deep_result` (the result 5,000 deep), anything else a plain result. 2026-07-28 on
 * POST /modern: `deep_sse` (SSE: a deep notification, a plain one, then the result 5,000 deep),
 * `deep_notification` (SSE: a deep notification, then the result), `deep_json` (a JSON body
 * 5,000 deep), `deep_error` (400 with a JSON-RPC error whose data is 5,000 deep).
 */
async function startPeer(): Promise<{ url: string; stop(): Promise<void> }> {
  const streams = new Set<ServerResponse>();
  const event = (res: ServerResponse, data: string): void => void res.write(`event: message\ndata: ${data}\n\n`);
  const result = (id: unknown, text: string): string => JSON.stringify({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text }] } });
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString('utf8')));
    req.on('end', () => {
      const path = (req.url ?? '').split('?', 1)[0];
      if (req.method === 'GET' && path === '/sse') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('event: endpoint\ndata: /message?sessionId=s1\n\n');
        streams.add(res);
        res.on('close', () => streams.delete(res));
        return;
      }
      const message = body ? (JSON.parse(body) as { id?: unknown; method?: string; params?: { name?: string; protocolVersion?: string } }) : {};
      if (path === '/message') {
        res.writeHead(202).end();
        if (message.id === undefined) return;
        const stream = [...streams][0]!;
        if (message.method === 'initialize') {
          event(
            stream,
            JSON.stringify({
              jsonrpc: '2.0',
              id: message.id,
              result: { protocolVersion: message.params?.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: 'peer', version: '1' } },
            }),
          );
        } else if (message.params?.name === 'deep_notification') {
          event(stream, `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":${DEEP}}}`);
          event(stream, result(message.id, 'after the deep notification'));
        } else if (message.params?.name === 'deep_result') {
          event(stream, `{"jsonrpc":"2.0","id":${JSON.stringify(message.id)},"result":{"content":[],"data":${DEEP}}}`);
        } else {
          event(stream, result(message.id, 'plain'));
        }
        return;
      }
      if (path === '/modern') {
        const name = message.params?.name;
        const deepResult = `{"jsonrpc":"2.0","id":${JSON.stringify(message.id)},"result":{"content":[],"data":${DEEP}}}`;
        if (name === 'deep_json') return void res.writeHead(200, { 'content-type': 'application/json' }).end(deepResult);
        if (name === 'deep_error') {
          return void res
            .writeHead(400, { 'content-type': 'application/json' })
            .end(`{"jsonrpc":"2.0","id":${JSON.stringify(message.id)},"error":{"code":-32602,"message":"no","data":${DEEP}}}`);
        }
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        event(res, `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":${DEEP}}}`);
        if (name === 'deep_sse') {
          event(res, '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"plain"}}');
          event(res, deepResult);
        } else {
          event(res, result(message.id, 'after the deep notification'));
        }
        return void res.end();
      }
      res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of streams) s.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

let peer: Awaited<ReturnType<typeof startPeer>>;
beforeAll(async () => {
  peer = await startPeer();
});
afterAll(async () => {
  await peer?.stop();
});

const call = (id: string | number, name: string): JsonRpcRequest => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {} } });
const textOf = (r: JsonRpcResponse): string => ((r as { result?: { content?: Array<{ text?: string }> } }).result?.content ?? []).map((c) => c.text).join('');

async function failure(promise: Promise<unknown>): Promise<UpstreamError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(UpstreamError);
  return error as UpstreamError;
}

describe('finding 2: a message nested 5,000 levels deep from a legacy HTTP+SSE upstream', () => {
  const log = memoryLogger();
  let upstream: SseUpstream;
  let session: UpstreamSession;
  let handlers: ReturnType<typeof recordingHandlers>;

  beforeAll(async () => {
    upstream = new SseUpstream(upstreamConfig('legacy', 'sse', `${peer.url}/sse`, { timeout_ms: 5_000 }), { logger: log.logger });
    handlers = recordingHandlers();
    session = await upstream.openSession({ owner: 'test', forwardPath: '', handlers });
  });
  afterAll(async () => {
    await upstream?.close();
  });

  it('a notification is dropped and logged; the stream and the call go on', async () => {
    const seen: ServerMessage[] = [];
    const response = await session.request(call('c-1', 'deep_notification'), { onMessage: (m) => seen.push(m) });
    expect(textOf(response)).toBe('after the deep notification');
    expect(response.id).toBe('c-1');
    expect([...seen, ...handlers.messages]).toEqual([]);
    expect(log.lines.filter((l) => l.includes(DROPPED))).toHaveLength(1);
  });

  it('a result fails its request at once with a protocol error; the next request is answered', async () => {
    const error = await failure(session.request(call('c-2', 'deep_result'), { onMessage: () => undefined }));
    expect(error.kind).toBe('protocol');
    expect(error.message).toContain(TOO_DEEP);
    expect(textOf(await session.request(call('c-3', 'plain'), { onMessage: () => undefined }))).toBe('plain');
  });
});

describe('finding 2: a message nested 5,000 levels deep from a 2026-07-28 HTTP upstream', () => {
  const log = memoryLogger();
  let upstream: StreamableHttpUpstream;
  const options = () => ({ forwardPath: '', owner: 'test', onMessage: () => undefined });
  const modern = (id: string | number, name: string): JsonRpcRequest => ({
    ...call(id, name),
    params: { name, arguments: {}, _meta: { 'io.modelcontextprotocol/protocolVersion': MODERN_PROTOCOL_VERSION } },
  });

  beforeAll(() => {
    upstream = new StreamableHttpUpstream(upstreamConfig('modern', 'http', `${peer.url}/modern`, { era: 'modern', timeout_ms: 5_000 }), { logger: log.logger });
  });
  afterAll(async () => {
    await upstream?.close();
  });

  it('a notification on the answer stream is dropped; the answer is delivered', async () => {
    const seen: unknown[] = [];
    const response = await upstream.call(modern('m-1', 'deep_notification'), { ...options(), onMessage: (m) => seen.push(m) });
    expect(textOf(response)).toBe('after the deep notification');
    expect(response.id).toBe('m-1');
    expect(seen).toEqual([]);
    expect(log.lines.filter((l) => l.includes(DROPPED)).length).toBeGreaterThanOrEqual(1);
  });

  it('a result on an SSE stream, in a JSON body, or as the data of an error fails the call with a protocol error', async () => {
    const seen: unknown[] = [];
    const sse = await failure(upstream.call(modern('m-2', 'deep_sse'), { ...options(), onMessage: (m) => seen.push(m) }));
    expect(sse.kind).toBe('protocol');
    expect(sse.message).toContain(TOO_DEEP);
    // The plain notification before it still reached the caller; the deep one did not.
    expect(seen).toHaveLength(1);
    const json = await failure(upstream.call(modern('m-3', 'deep_json'), options()));
    expect(json.kind).toBe('protocol');
    expect(json.message).toContain(TOO_DEEP);
    // An error answer whose data is too deep is no answer: the status is all the client learns.
    const refused = await failure(upstream.call(modern('m-4', 'deep_error'), options()));
    expect(refused.kind).toBe('protocol');
    expect(refused.message).toBe("Upstream 'modern' answered HTTP 400");
  });
});
