/**
 * Traces end to end (docs/telemetry.md): a real gateway exporting to a real OTLP/HTTP receiver,
 * a stdio upstream that answers with the `_meta` it received and an HTTP upstream that records
 * its headers, and clients that bring their own trace context (the official SDK client with a
 * `traceparent` header, plain POSTs with `params._meta.traceparent`) or a forged one.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupTempDirs, tempDir } from '../helpers/cli.js';
import { curlPost, NODE, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { bearer, makeKey, type Key } from '../helpers/identities.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/recording-upstream.js';
import { connectSdk } from '../helpers/sdk-client.js';
import { hex, KIND, parseTraceparent, startOtlpReceiver, STATUS, traceparent, type OtlpReceiver, type ReceivedSpan } from './otlp-receiver.js';

const META_ECHO = new URL('../fixtures/meta-echo-stdio.mjs', import.meta.url).pathname;
/** The collector's credential: sent with every export, never written to a log (the secret scan checks). */
const COLLECTOR_TOKEN = `collector-${hex(16)}`;

let receiver: OtlpReceiver;
let upstream: RecordingUpstream;
let sseUpstream: RecordingUpstream;
let gw: RunningGateway;
let alice: Key;
let limited: Key;
let auditFile: string;

beforeAll(async () => {
  [receiver, upstream, sseUpstream, alice, limited] = await Promise.all([
    startOtlpReceiver(),
    startRecordingUpstream('http'),
    startRecordingUpstream('sse'),
    makeKey('alice'),
    makeKey('limited'),
  ]);
  auditFile = join(tempDir(), 'audit.log');
  const downPort = await closedPort();
  gw = await startGateway(
    `
${alice.block}
${limited.block}allowed_tools = ["meta"]

[rate_limit]
requests_per_second = 1000
burst_size = 1000

[[rate_limit.tool_limits]]
tool_pattern = "meta"
requests_per_second = 1000
burst_size = 1000

[[upstream.servers]]
name = "stdio"
path_prefix = "/stdio"
command = ${q(NODE)}
args = [${q(META_ECHO)}]

[[upstream.servers]]
name = "http"
path_prefix = "/http"
url = ${q(upstream.url)}

[[upstream.servers]]
name = "sse"
path_prefix = "/sse"
transport = "sse"
url = ${q(sseUpstream.url)}

[[upstream.servers]]
name = "down"
path_prefix = "/down"
url = "http://127.0.0.1:${downPort}/mcp"

[[virtual_servers]]
name = "ws"
servers = ["stdio", "http"]

[telemetry]
otlp_endpoint = ${q(receiver.url)}
service_name = "guard-under-test"

[telemetry.headers]
Authorization = "Bearer ${COLLECTOR_TOKEN}"

[audit]
file = ${q(auditFile)}
`,
    { env: { COLLECTOR_TOKEN } },
  );
}, 60_000);

afterAll(async () => {
  await gw?.stop();
  await Promise.all([receiver?.stop(), upstream?.stop(), sseUpstream?.stop()]);
  cleanupTempDirs();
});

/** A port nothing listens on (taken, then freed). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** The spans exported so far, after a flush. */
async function exported(): Promise<ReceivedSpan[]> {
  await gw.app.services.tracing!.flush();
  return receiver.spans;
}

/** The one span that matches. */
async function spanWhere(what: string, match: (s: ReceivedSpan) => boolean): Promise<ReceivedSpan> {
  const found = (await exported()).filter(match);
  if (found.length !== 1) throw new Error(`${found.length} spans for ${what}: ${JSON.stringify(receiver.spans.map((s) => s.name))}`);
  return found[0]!;
}

const childrenOf = (parent: ReceivedSpan) => receiver.spans.filter((s) => s.parentSpanId === parent.spanId && s.traceId === parent.traceId);

/** A tools/call POST with no session (the identity's shared upstream session). */
function call(path: string, key: Key, tool: string, id: number, meta?: unknown, headers: Record<string, string> = {}) {
  const params: Record<string, unknown> = { name: tool, arguments: {} };
  if (meta !== undefined) params['_meta'] = meta;
  return curlPost(`${gw.url}${path}`, { jsonrpc: '2.0', id, method: 'tools/call', params }, { ...bearer(key), ...headers });
}

/** The `_meta` the stdio upstream received, from its answer. */
function echoedMeta(json: any): Record<string, unknown> {
  return JSON.parse(json.result.content[0].text) as Record<string, unknown>;
}

describe('traces', () => {
  it("the official SDK client's traceparent header: its trace reaches the stdio upstream under the gateway's spans, named and attributed by the MCP conventions", async () => {
    const traceId = hex(16);
    const parentId = hex(8);
    const { client, transport } = await connectSdk(`${gw.url}/mcp/stdio`, {
      headers: { ...bearer(alice), traceparent: traceparent(traceId, parentId), tracestate: 'vendor=abc' },
    });
    try {
      const result = (await client.callTool({ name: 'meta', arguments: {} })) as { content: Array<{ text: string }> };
      const meta = JSON.parse(result.content[0]!.text) as Record<string, unknown>;
      const received = parseTraceparent(meta['traceparent']);
      // The client's trace, with the gateway's span as the upstream's parent; its tracestate carried on.
      expect(received.traceId).toBe(traceId);
      expect(received.spanId).not.toBe(parentId);
      expect(received.flags).toBe('01');
      expect(meta['tracestate']).toBe('vendor=abc');

      const server = await spanWhere('the SERVER span', (s) => s.kind === KIND.SERVER && s.traceId === traceId && s.name === 'tools/call meta');
      expect(server.parentSpanId).toBe(parentId);
      expect(server.resource['service.name']).toBe('guard-under-test');
      expect(server.attributes).toMatchObject({
        'mcp.method.name': 'tools/call',
        'gen_ai.tool.name': 'meta',
        'gen_ai.operation.name': 'execute_tool',
        // A digest of the id, never the id itself (without authentication the id is all it takes to use a session).
        'mcp.session.id': createHash('sha256').update(transport.sessionId!).digest('hex').slice(0, 32),
        'network.transport': 'tcp',
        'mcp_guard.server': 'stdio',
        'mcp_guard.identity': 'alice',
        'mcp_guard.identity.provider': 'api_key',
      });
      expect(typeof server.attributes['jsonrpc.request.id']).toBe('string');
      expect(server.attributes['mcp.protocol.version']).toMatch(/^\d{4}-\d{2}-\d{2}$/);
      expect(server.attributes['error.type']).toBeUndefined();
      expect(server.status.code ?? STATUS.UNSET).toBe(STATUS.UNSET);

      // Children: authentication and the rate limits (address, identity, tool), and the upstream exchange.
      const children = childrenOf(server);
      expect(children.filter((s) => s.name === 'mcp_guard.authenticate')).toHaveLength(1);
      expect(children.filter((s) => s.name === 'mcp_guard.rate_limit').length).toBe(3);
      const exchange = children.find((s) => s.kind === KIND.CLIENT);
      expect(exchange).toMatchObject({ name: 'tools/call meta', spanId: received.spanId });
      expect(exchange!.attributes).toMatchObject({
        'mcp.method.name': 'tools/call',
        'gen_ai.tool.name': 'meta',
        'network.transport': 'pipe',
        'mcp_guard.server': 'stdio',
      });

      // initialize was a span of the same trace too.
      await spanWhere('the initialize span', (s) => s.kind === KIND.SERVER && s.traceId === traceId && s.name === 'initialize');
    } finally {
      await client.close();
    }
  });

  it("params._meta.traceparent is the parent (it wins over the header, which becomes a link); the client's other _meta keys reach the upstream untouched", async () => {
    const [metaTrace, metaSpan, headerTrace, headerSpan] = [hex(16), hex(8), hex(16), hex(8)];
    const clientMeta = {
      traceparent: traceparent(metaTrace, metaSpan),
      tracestate: 'congo=t61rcWkgMzE',
      baggage: 'user=alice',
      'com.example/keep': { nested: true },
    };
    const sent = structuredClone(clientMeta);
    const res = await call('/stdio', alice, 'meta', 41, sent, { traceparent: traceparent(headerTrace, headerSpan) });
    expect(res.status).toBe(200);
    const meta = echoedMeta(res.json);
    expect(parseTraceparent(meta['traceparent']).traceId).toBe(metaTrace);
    expect(meta).toMatchObject({ tracestate: 'congo=t61rcWkgMzE', baggage: 'user=alice', 'com.example/keep': { nested: true } });

    const server = await spanWhere('the SERVER span', (s) => s.kind === KIND.SERVER && s.traceId === metaTrace);
    expect(server.parentSpanId).toBe(metaSpan);
    expect(server.attributes['jsonrpc.request.id']).toBe('41');
    expect(server.links).toEqual([{ traceId: headerTrace, spanId: headerSpan }]);
    expect(receiver.spans.some((s) => s.traceId === headerTrace)).toBe(false);
  });

  it('an HTTP upstream gets the same context in its traceparent header and in params._meta', async () => {
    const traceId = hex(16);
    const res = await call('/http', alice, 'recorded', 42, undefined, { traceparent: traceparent(traceId, hex(8)) });
    expect(res.status).toBe(200);
    const seen = upstream.requests.find((r) => r.tool === 'recorded' && String(r.headers['traceparent']).includes(traceId));
    expect(seen).toBeDefined();
    expect(seen!.meta?.['traceparent']).toBe(seen!.headers['traceparent']);
    const server = await spanWhere('the SERVER span', (s) => s.kind === KIND.SERVER && s.traceId === traceId);
    const exchange = childrenOf(server).find((s) => s.kind === KIND.CLIENT)!;
    expect(parseTraceparent(seen!.headers['traceparent']).spanId).toBe(exchange.spanId);
    expect(exchange.attributes).toMatchObject({
      'network.transport': 'tcp',
      'server.address': '127.0.0.1',
      'server.port': Number(new URL(upstream.url).port),
      'mcp_guard.server': 'http',
    });
  });

  it('a legacy SSE upstream gets the context in the headers of the POST that carries the request, and in params._meta', async () => {
    const traceId = hex(16);
    const res = await call('/mcp/sse', alice, 'recorded', 48, undefined, { traceparent: traceparent(traceId, hex(8)) });
    expect(res.status, res.text + gw.logs.slice(-5).join('\n')).toBe(200);
    const seen = sseUpstream.requests.find((r) => r.tool === 'recorded' && String(r.headers['traceparent']).includes(traceId));
    expect(seen?.meta?.['traceparent']).toBe(seen?.headers['traceparent']);
    const server = await spanWhere('the SERVER span', (s) => s.kind === KIND.SERVER && s.traceId === traceId);
    expect(childrenOf(server).find((s) => s.kind === KIND.CLIENT)?.attributes['network.transport']).toBe('tcp');
  });

  it("through a virtual server, the member gets the client's trace with the gateway's span as its parent", async () => {
    const traceId = hex(16);
    const res = await call('/mcp/ws', alice, 'stdio__meta', 49, undefined, { traceparent: traceparent(traceId, hex(8)) });
    expect(res.status).toBe(200);
    const received = parseTraceparent(echoedMeta(res.json)['traceparent']);
    expect(received.traceId).toBe(traceId);
    const server = await spanWhere('the SERVER span', (s) => s.kind === KIND.SERVER && s.traceId === traceId);
    expect(server).toMatchObject({ name: 'tools/call stdio__meta', attributes: { 'mcp_guard.server': 'ws', 'gen_ai.tool.name': 'stdio__meta' } });
    expect(childrenOf(server).find((s) => s.kind === KIND.CLIENT)?.spanId).toBe(received.spanId);
  });

  it("a 2026-07-28 request to a legacy server: its _meta context is the parent, kept through the translation, and its version is the span's", async () => {
    const traceId = hex(16);
    const parent = hex(8);
    const res = await curlPost(
      `${gw.url}/stdio`,
      {
        jsonrpc: '2.0',
        id: 50,
        method: 'tools/call',
        params: {
          name: 'meta',
          arguments: {},
          _meta: {
            'io.modelcontextprotocol/protocolVersion': '2026-07-28',
            'io.modelcontextprotocol/clientCapabilities': {},
            traceparent: traceparent(traceId, parent),
          },
        },
      },
      {
        ...bearer(alice),
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': '2026-07-28',
        'mcp-method': 'tools/call',
        'mcp-name': 'meta',
      },
    );
    expect(res.status, res.text).toBe(200);
    const meta = echoedMeta(res.json);
    expect(parseTraceparent(meta['traceparent']).traceId).toBe(traceId);
    // The modern envelope is the gateway's to remove for a legacy server; the trace context is not.
    expect(meta['io.modelcontextprotocol/protocolVersion']).toBeUndefined();
    const server = await spanWhere('the SERVER span', (s) => s.kind === KIND.SERVER && s.traceId === traceId);
    expect(server.parentSpanId).toBe(parent);
    expect(server.attributes['mcp.protocol.version']).toBe('2026-07-28');
  });

  it('each request of a JSON-RPC batch is its own SERVER span, with its own upstream exchange', async () => {
    const traceId = hex(16);
    const parent = hex(8);
    const batch = [41, 42].map((n) => ({ jsonrpc: '2.0', id: `batch-${n}`, method: 'tools/call', params: { name: 'meta', arguments: {} } }));
    const res = await curlPost(`${gw.url}/stdio`, batch, { ...bearer(alice), traceparent: traceparent(traceId, parent), 'mcp-protocol-version': '2025-03-26' });
    expect(res.status).toBe(200);
    const received = (res.json as any[]).map((r) => parseTraceparent(echoedMeta(r)['traceparent']));
    const spans = (await exported()).filter((s) => s.kind === KIND.SERVER && s.traceId === traceId);
    expect(spans.map((s) => s.attributes['jsonrpc.request.id']).sort()).toEqual(['batch-41', 'batch-42']);
    expect(spans.every((s) => s.parentSpanId === parent)).toBe(true);
    const exchanges = spans.map((s) => childrenOf(s).find((c) => c.kind === KIND.CLIENT)!.spanId).sort();
    expect(received.map((r) => r.spanId).sort()).toEqual(exchanges);
  });

  it('a refused call ends its span with error.type (the JSON-RPC code) and the gateway error kind, and never reaches the upstream; a tool error is tool_error', async () => {
    const refusedTrace = hex(16);
    const refused = await call('/stdio', limited, 'fail', 43, undefined, { traceparent: traceparent(refusedTrace, hex(8)) });
    expect(refused.json.error.code).toBeTypeOf('number');
    const server = await spanWhere('the refused span', (s) => s.kind === KIND.SERVER && s.traceId === refusedTrace);
    expect(server.name).toBe('tools/call fail');
    expect(server.attributes).toMatchObject({
      'error.type': String(refused.json.error.code),
      'rpc.response.status_code': String(refused.json.error.code),
      'mcp_guard.error.kind': 'tool_forbidden',
      'mcp_guard.identity': 'limited',
    });
    expect(server.status).toMatchObject({ code: STATUS.ERROR, message: refused.json.error.message });
    expect(childrenOf(server).filter((s) => s.kind === KIND.CLIENT)).toEqual([]);

    // A client's own text in the refusal (a 100,000-character tool name with a token in it) reaches
    // the span's status bounded and redacted, as an audit line would carry it.
    const hugeTrace = hex(16);
    const token = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl';
    const huge = await call('/stdio', limited, `Bearer ${token} ${'x'.repeat(100_000)}`, 45, undefined, { traceparent: traceparent(hugeTrace, hex(8)) });
    expect(huge.json.error.message.length).toBeGreaterThan(100_000);
    const hugeSpan = await spanWhere('the span of the huge refusal', (s) => s.kind === KIND.SERVER && s.traceId === hugeTrace);
    expect((hugeSpan.status.message ?? '').length).toBeLessThanOrEqual(1_024 + 3);
    expect(hugeSpan.status.message).not.toContain(token);

    const failedTrace = hex(16);
    const failed = await call('/stdio', alice, 'fail', 44, undefined, { traceparent: traceparent(failedTrace, hex(8)) });
    expect(failed.json.result.isError).toBe(true);
    const toolError = await spanWhere('the tool error span', (s) => s.kind === KIND.SERVER && s.traceId === failedTrace);
    expect(toolError.attributes['error.type']).toBe('tool_error');
    expect(toolError.status.code).toBe(STATUS.ERROR);
  });

  it('an upstream that cannot be reached: the span ends with error.type and the upstream failure as its kind', async () => {
    const traceId = hex(16);
    const res = await call('/down', alice, 'anything', 51, undefined, { traceparent: traceparent(traceId, hex(8)) });
    expect(res.status).toBe(502);
    const server = await spanWhere('the failed span', (s) => s.kind === KIND.SERVER && s.traceId === traceId);
    expect(server.attributes).toMatchObject({ 'error.type': String(res.json.error.code), 'mcp_guard.error.kind': 'connect', 'mcp_guard.server': 'down' });
    expect(server.status.code).toBe(STATUS.ERROR);
  });

  it('forged trace contexts are ignored: the request is served as a new root trace, the upstream gets a valid context of the gateway', async () => {
    const zeros = `00-${'0'.repeat(32)}-${hex(8)}-01`;
    const forged: Array<{ header?: string; meta?: unknown }> = [
      { header: 'garbage' },
      { header: zeros },
      { header: `ff-${hex(16)}-${hex(8)}-01` },
      { header: `00-${hex(16).toUpperCase()}-${hex(8)}-01` },
      { header: `00-${hex(16)}-${hex(8)}-01-extra` },
      { header: 'x'.repeat(4_000) },
      { meta: { traceparent: { nested: 'object' } } },
      { meta: { traceparent: 12345, tracestate: ['a=1'] } },
      { meta: { traceparent: `${traceparent(hex(16), hex(8))}\r\nx-injected: 1`, tracestate: 'a=1\r\nx-injected: 1' } },
      { meta: { traceparent: zeros } },
    ];
    let id = 100;
    for (const attempt of forged) {
      const requestId = id++;
      for (const path of ['/stdio', '/http']) {
        const res = await call(
          path,
          alice,
          path === '/stdio' ? 'meta' : 'recorded',
          requestId,
          attempt.meta,
          attempt.header ? { traceparent: attempt.header } : {},
        );
        expect(res.status, JSON.stringify(attempt)).toBe(200);
        expect(res.json.result).toBeDefined();
      }
    }
    const spans = (await exported()).filter((s) => s.kind === KIND.SERVER && Number(s.attributes['jsonrpc.request.id']) >= 100);
    expect(spans).toHaveLength(forged.length * 2);
    // Every one a root of its own new trace.
    expect(spans.every((s) => s.parentSpanId === undefined && /^[0-9a-f]{32}$/.test(s.traceId) && s.traceId !== '0'.repeat(32))).toBe(true);
    // Every header an HTTP upstream got is the gateway's own, valid; nothing injected.
    const sent = upstream.requests.filter((r) => r.tool === 'recorded' && r.headers['x-injected'] === undefined && r.headers['traceparent'] !== undefined);
    for (const r of sent) expect(() => parseTraceparent(r.headers['traceparent'])).not.toThrow();
    expect(upstream.requests.some((r) => r.headers['x-injected'] !== undefined)).toBe(false);
  });

  it('a refused authentication (before the body is read) is a 401 as without telemetry, and makes no span', async () => {
    const traceId = hex(16);
    const res = await curlPost(
      `${gw.url}/stdio`,
      { jsonrpc: '2.0', id: 47, method: 'tools/call', params: { name: 'meta', arguments: {} } },
      { authorization: 'Bearer mcp_wrongkey_000000000000000000000000000000000000000000', traceparent: traceparent(traceId, hex(8)) },
    );
    expect(res.status).toBe(401);
    expect(res.json.error.code).toBe(-32010);
    expect((await exported()).some((s) => s.traceId === traceId)).toBe(false);
  });

  it("a client's unsampled trace is not recorded, but its context (flag 00) still reaches the upstream and its audit line", async () => {
    const traceId = hex(16);
    const res = await call('/stdio', alice, 'meta', 46, undefined, { traceparent: traceparent(traceId, hex(8), '00') });
    const received = parseTraceparent(echoedMeta(res.json)['traceparent']);
    expect(received).toMatchObject({ traceId, flags: '00' });
    await gw.app.services.audit.flush();
    await waitFor(() => readFileSync(auditFile, 'utf8').includes(traceId), 5_000, 'the audit line');
    expect((await exported()).some((s) => s.traceId === traceId)).toBe(false);
  });

  it("every export carries the collector's credentials from [telemetry.headers]", async () => {
    await exported();
    expect(receiver.requests.length).toBeGreaterThan(0);
    expect(receiver.requests.every((r) => r.headers['authorization'] === `Bearer ${COLLECTOR_TOKEN}`)).toBe(true);
  });

  it("audit lines carry the request's trace_id and span_id", async () => {
    const traceId = hex(16);
    await call('/stdio', alice, 'meta', 45, undefined, { traceparent: traceparent(traceId, hex(8)) });
    const server = await spanWhere('the SERVER span', (s) => s.kind === KIND.SERVER && s.traceId === traceId);
    await gw.app.services.audit.flush();
    await waitFor(() => readFileSync(auditFile, 'utf8').includes(traceId), 5_000, 'the audit line');
    const line = readFileSync(auditFile, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l['trace_id'] === traceId);
    expect(line).toMatchObject({ event_type: 'tool_call', tool: 'meta', identity_id: 'alice', trace_id: traceId, span_id: server.spanId });
  });
});
