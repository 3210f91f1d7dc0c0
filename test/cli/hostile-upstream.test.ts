/**
 * Issue 16, finding 2: no upstream input can crash the gateway. `mcp-guard serve` runs as a real
 * process in front of a hostile upstream (test/fixtures/hostile-upstream.mjs), over stdio and over
 * streamable HTTP, while the official SDK client has an SSE answer or its GET stream open.
 *
 * Before the fix, a stdio notification 5,000 levels deep (about 10 KB) threw out of the stdout
 * reader (JSON.stringify's stack overflow while writing it to the client's stream) and the process
 * exited; a result that deep was answered 500 with `id: null`. Now a message nested deeper than
 * MAX_UPSTREAM_DEPTH is never parsed: a response fails its request with a JSON-RPC error carrying
 * the request's id, anything else is dropped and logged.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/jsonrpc/messages.js';
import { MAX_UPSTREAM_DEPTH } from '../../src/upstreams/inbound.js';
import { CliProcess, NODE, q, trackProcesses, waitFor, writeConfig } from '../helpers/cli.js';

const HOSTILE = new URL('../fixtures/hostile-upstream.mjs', import.meta.url).pathname;
const DROPPED = 'upstream sent a message nested too deep; dropped';

const { running, mark } = trackProcesses();

/** HTTP hostile upstreams started by a test, ended (by pid) after it. */
const httpUpstreams: ChildProcess[] = [];
afterEach(() => {
  for (const child of httpUpstreams.splice(0)) child.kill('SIGKILL');
});

async function startHttpUpstream(): Promise<string> {
  const child = fork(HOSTILE, ['http'], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  httpUpstreams.push(child);
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m) => resolve((m as { port: number }).port));
    child.once('exit', (code) => reject(new Error(`hostile upstream exited with ${code}`)));
  });
  return `http://127.0.0.1:${port}/mcp`;
}

/** The gateway, serving the hostile upstream as "hostile" over `transport`. */
async function serveHostile(transport: 'stdio' | 'http'): Promise<{ gw: CliProcess; base: string }> {
  const server =
    transport === 'stdio'
      ? `transport = "stdio"\ncommand = ${q(NODE)}\nargs = [${q(HOSTILE)}, "stdio", ${q(mark('hostile'))}]`
      : `transport = "http"\nurl = ${q(await startHttpUpstream())}`;
  const config = `[[upstream.servers]]\nname = "hostile"\npath_prefix = "/hostile"\n${server}\ntimeout_ms = 10000\n`;
  const gw = new CliProcess(['serve', '-c', writeConfig(config), '--host', '127.0.0.1', '--port', '0']);
  running.push(gw);
  const base = await gw.address();
  return { gw, base };
}

/** The SDK client, connected; `getStream` settles once its GET stream has been answered 200. */
async function connect(url: string, onToolsChanged?: (params: unknown) => void): Promise<{ client: Client; getStream: Promise<void> }> {
  let opened!: () => void;
  const getStream = new Promise<void>((resolve) => (opened = resolve));
  const watched: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    if (init?.method === 'GET' && res.status === 200) opened();
    return res;
  };
  const client = new Client({ name: 'finding-2', version: '1.0.0' }, { capabilities: {} });
  if (onToolsChanged) client.setNotificationHandler(ToolListChangedNotificationSchema, async (n) => onToolsChanged(n.params));
  await client.connect(new StreamableHTTPClientTransport(new URL(url), { fetch: watched }));
  return { client, getStream };
}

const textOf = (result: unknown): string => (result as { content: Array<{ text: string }> }).content.map((c) => c.text).join('');

/** The gateway is still up and serves the next request (a plain echo through the same upstream). */
async function expectStillServing(gw: CliProcess, client: Client): Promise<void> {
  expect(gw.running, `the gateway exited:\n${gw.stderr.slice(-3000)}`).toBe(true);
  expect(textOf(await client.callTool({ name: 'echo', arguments: { next: 1 } }))).toBe('{"next":1}');
  expect(gw.running).toBe(true);
}

describe.each(['stdio', 'http'] as const)('finding 2: an upstream message nested 5,000 levels deep (%s upstream)', (transport) => {
  it('a notification while the client has an SSE answer open is dropped; the call, the process and the next request go on', async () => {
    const { gw, base } = await serveHostile(transport);
    const { client } = await connect(`${base}/mcp/hostile`);
    const progress: unknown[] = [];
    // The first progress notification turns the answer into an SSE stream; the second, 5,000 deep, follows on it.
    const result = await client.callTool({ name: 'deep_notification', arguments: { depth: 5_000 } }, undefined, { onprogress: (p) => progress.push(p) });
    expect(textOf(result)).toBe('survived');
    expect(progress).toHaveLength(1);
    await expectStillServing(gw, client);
    const dropped = gw.logLines().filter((l) => l['msg'] === DROPPED);
    expect(dropped).toHaveLength(1);
    expect(dropped[0]).toMatchObject({ level: 40, limitDepth: MAX_UPSTREAM_DEPTH, methods: ['notifications/progress'], responses: 0 });
    // No content of the message in the log: the line stays short.
    expect(JSON.stringify(dropped[0]).length).toBeLessThan(1_000);
    await client.close();
  });

  it("a notification to the client's GET stream is dropped; the stream carries the next one", async () => {
    const { gw, base } = await serveHostile(transport);
    const changes: unknown[] = [];
    const { client, getStream } = await connect(`${base}/mcp/hostile`, (params) => changes.push(params));
    await getStream;
    // The answer first; then, belonging to no call, the deep notification and a plain one after it.
    expect(textOf(await client.callTool({ name: 'deep_after_answer', arguments: { depth: 5_000, marker: 'after' } }))).toBe('answered');
    await waitFor(() => changes.length > 0 || !gw.running, 10_000, 'the notification after the deep one');
    expect(gw.running, `the gateway exited:\n${gw.stderr.slice(-3000)}`).toBe(true);
    // In order: once the plain one has come, the deep one was dropped, not late.
    expect(changes).toHaveLength(1);
    await expectStillServing(gw, client);
    expect(gw.logLines().filter((l) => l['msg'] === DROPPED)).toHaveLength(1);
    await client.close();
  });

  it("a result is a JSON-RPC error with the request's id (not 500 with id null)", async () => {
    const { gw, base } = await serveHostile(transport);
    const { client } = await connect(`${base}/mcp/hostile`);
    // The SDK client (v1) reports a non-2xx answer as a transport error that carries the body.
    const error = await client.callTool({ name: 'deep_result', arguments: { depth: 5_000 } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(StreamableHTTPError);
    expect((error as StreamableHTTPError).code).toBe(502);
    expect((error as Error).message).toContain(`nested deeper than ${MAX_UPSTREAM_DEPTH} levels`);
    // A plain POST without a session: 502 and the request's own id.
    const res = await fetch(`${base}/mcp/hostile`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 'deep-7', method: 'tools/call', params: { name: 'deep_result', arguments: { depth: 5_000 } } }),
    });
    expect(res.status).toBe(502);
    expect(await res.json()).toEqual({
      jsonrpc: '2.0',
      id: 'deep-7',
      error: { code: ErrorCode.UpstreamError, message: `Upstream 'hostile' answered with a message nested deeper than ${MAX_UPSTREAM_DEPTH} levels` },
    });
    await expectStillServing(gw, client);
    await client.close();
  });

  it('a result just within the limit is delivered as it is', async () => {
    const { gw, base } = await serveHostile(transport);
    const { client } = await connect(`${base}/mcp/hostile`);
    // The result's `data` sits at depth 2 of the message: its own levels up to the limit fit.
    const within = (await client.callTool({ name: 'deep_result', arguments: { depth: MAX_UPSTREAM_DEPTH - 2 } })) as Record<string, unknown>;
    let depth = 0;
    for (let v = within['data']; Array.isArray(v); v = v[0]) depth++;
    expect(depth).toBe(MAX_UPSTREAM_DEPTH - 2);
    await expectStillServing(gw, client);
    await client.close();
  });
});

describe('no upstream can cost a client its answer', () => {
  it("a stdio upstream flooding a call's SSE answer beyond what a slow client may lag behind (8 MiB): the notifications that do not fit are skipped, the response comes", async () => {
    const { gw, base } = await serveHostile('stdio');
    const PROGRESS = 6;
    const item = {
      b64: Buffer.from(
        '{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"__WIRE__","progress":1,"message":"__PAD:4000000__"}}',
      ).toString('base64'),
      nl: true,
    };
    const script = { items: Array.from({ length: PROGRESS }, () => item), answer: 'result', after: [] };
    const flood = await request(`${base}/mcp/hostile`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 'flooded',
        method: 'tools/call',
        params: { name: 'emit', arguments: { script: JSON.stringify(script) }, _meta: { progressToken: 'p' } },
      }),
    });
    expect(flood.headers['content-type']).toMatch(/^text\/event-stream/);
    // The client reads nothing yet. The child answers in order: once the next call is answered,
    // the gateway has had the whole flood and the flooded call's response.
    const next = await fetch(`${base}/mcp/hostile`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 'next', method: 'tools/call', params: { name: 'echo', arguments: { n: 1 } } }),
    });
    expect(await next.json()).toMatchObject({ id: 'next', result: { content: [{ text: '{"n":1}' }] } });
    const events = (await flood.body.text()).split('\n\n').filter((e) => e.startsWith('event: message'));
    const messages = events.map((e) => JSON.parse(e.slice(e.indexOf('data: ') + 6)) as { id?: unknown; method?: string });
    expect(messages.at(-1)).toEqual({ jsonrpc: '2.0', id: 'flooded', result: { content: [{ type: 'text', text: 'done' }] } });
    const progress = messages.filter((m) => m.method === 'notifications/progress').length;
    expect(progress).toBeGreaterThan(0);
    expect(progress).toBeLessThan(PROGRESS);
    expect(gw.running).toBe(true);
  });
});
