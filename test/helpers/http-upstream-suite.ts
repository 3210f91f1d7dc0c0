/**
 * The end-to-end cases both HTTP upstream transports must pass: the official SDK client, through
 * the gateway (in process, 127.0.0.1:0), to real server-everything processes speaking streamable
 * HTTP or legacy HTTP+SSE. Each test file (test/e2e/sdk-to-http.test.ts, sdk-to-sse.test.ts) runs
 * this suite for its transport and adds what only that transport does.
 */
import { LoggingMessageNotificationSchema, type LoggingMessageNotification } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EverythingServer, freePort } from './everything.js';
import { curlPost, q, startGateway, waitFor, type RunningGateway } from './gateway.js';
import { startRecordingUpstream, type RecordingUpstream } from './recording-upstream.js';
import { connectSdk, resultText, type SdkConnectOptions, type SdkConnection } from './sdk-client.js';

export type HttpTransport = 'http' | 'sse';

/** What the suite has running; a transport's own tests use it too. */
export interface SuiteContext {
  transport: HttpTransport;
  /** The path of server-everything's endpoint for this transport: /mcp or /sse. */
  endpointPath: string;
  gw: RunningGateway;
  /** Serves "everything" (by url) and "svc" (by origin, strip_prefix). */
  everything: EverythingServer;
  /** Serves "victim" only: the tests kill and restart it. */
  victim: EverythingServer;
  recorder: RecordingUpstream;
  connect(path: string, options?: SdkConnectOptions): Promise<SdkConnection>;
  /** Every connection made through connect(), closed after the suite. */
  connections: SdkConnection[];
}

export const CLIENT_TOKEN = 'Bearer client-token-3f9e1b';
export const UPSTREAM_TOKEN = 'Bearer upstream-token-c07a42';
export const UPSTREAM_KEY = 'upstream-key-91d5';

export function httpUpstreamSuite(transport: HttpTransport): SuiteContext {
  const mode = transport === 'http' ? 'streamableHttp' : 'sse';
  const ctx = { transport, endpointPath: transport === 'http' ? '/mcp' : '/sse', connections: [] } as unknown as SuiteContext;

  beforeAll(async () => {
    const [everything, victim, recorder, refusedPort] = await Promise.all([
      EverythingServer.start(mode),
      EverythingServer.start(mode),
      startRecordingUpstream(transport),
      freePort(),
    ]);
    Object.assign(ctx, { everything, victim, recorder });
    ctx.gw = await startGateway(`
[[upstream.servers]]
name = "everything"
path_prefix = "/everything"
transport = "${transport}"
url = ${q(everything.url)}
# The prefix route then forwards to the url itself: /everything -> .../mcp (or .../sse).
strip_prefix = true
timeout_ms = 20000

[[upstream.servers]]
name = "svc"
path_prefix = "/svc"
transport = "${transport}"
url = ${q(`http://127.0.0.1:${everything.port}`)}
strip_prefix = true

[[upstream.servers]]
name = "refused"
path_prefix = "/refused"
transport = "${transport}"
url = ${q(`http://127.0.0.1:${refusedPort}${ctx.endpointPath}`)}
timeout_ms = 20000

[[upstream.servers]]
name = "victim"
path_prefix = "/victim"
transport = "${transport}"
url = ${q(victim.url)}
timeout_ms = 30000

[[upstream.servers]]
name = "recorded"
path_prefix = "/recorded"
transport = "${transport}"
url = ${q(recorder.url)}
headers = { Authorization = ${q(UPSTREAM_TOKEN)}, "X-Upstream-Key" = ${q(UPSTREAM_KEY)} }
`);
    ctx.connect = async (path, options) => {
      const connection = await connectSdk(ctx.gw.url + path, options);
      ctx.connections.push(connection);
      return connection;
    };
  });

  afterAll(async () => {
    await Promise.all(ctx.connections.map((c) => c.client.close().catch(() => undefined)));
    await ctx.gw?.stop();
    await Promise.all([ctx.everything?.stop(), ctx.victim?.stop(), ctx.recorder?.stop()]);
  });

  describe(`SDK client -> gateway -> ${transport} server-everything`, () => {
    it("initializes with the upstream's server info", async () => {
      const { client } = await ctx.connect('/mcp/everything');
      expect(client.getServerVersion()).toMatchObject({ name: 'mcp-servers/everything', version: '2.0.0' });
      expect(client.getServerCapabilities()).toMatchObject({ tools: { listChanged: true }, logging: {} });
      expect(client.getInstructions()).toBeTruthy();
    });

    it('lists tools and calls echo by name and by prefix route', async () => {
      for (const path of ['/mcp/everything', '/everything']) {
        const { client } = await ctx.connect(path);
        const { tools } = await client.listTools();
        expect(tools.map((t) => t.name)).toEqual(expect.arrayContaining(['echo', 'trigger-long-running-operation', 'toggle-simulated-logging']));
        const result = await client.callTool({ name: 'echo', arguments: { message: `hello via ${path}` } });
        expect(resultText(result)).toBe(`Echo: hello via ${path}`);
      }
    });

    it('relays progress notifications to onprogress, in order', async () => {
      const { client } = await ctx.connect('/mcp/everything');
      const progress: Array<{ progress: number; total?: number }> = [];
      const result = await client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 3 } }, undefined, {
        onprogress: (p) => progress.push({ progress: p.progress, total: p.total }),
      });
      expect(resultText(result)).toMatch(/Long running operation completed/);
      expect(progress).toEqual([
        { progress: 1, total: 3 },
        { progress: 2, total: 3 },
        { progress: 3, total: 3 },
      ]);
    });

    it('relays the list change an upstream announces right after the handshake', async () => {
      // server-everything adds its sampling tools once initialized and says so at once, before
      // the client's GET stream can exist: the gateway holds the notification for it.
      let changes = 0;
      const { client } = await ctx.connect('/mcp/everything', { sampling: true, onToolsChanged: () => changes++ });
      await waitFor(() => changes > 0, 5_000, 'notifications/tools/list_changed');
      expect((await client.listTools()).tools.map((t) => t.name)).toContain('trigger-sampling-request');
    });

    it("relays a sampling request to the client and returns the client's answer", async () => {
      const { client } = await ctx.connect('/mcp/everything', { sampling: true });
      // server-everything registers the tool once the session is initialized.
      await waitFor(async () => (await client.listTools()).tools.some((t) => t.name === 'trigger-sampling-request'), 10_000, 'trigger-sampling-request');
      const result = await client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'hi there', maxTokens: 5 } });
      expect(resultText(result)).toContain('sampled:');
      expect(resultText(result)).toContain('hi there');
    });

    it('delivers notifications that belong to no request on the GET stream', async () => {
      const { client } = await ctx.connect('/mcp/everything');
      const received: Array<{ message: LoggingMessageNotification['params']; duringCall: boolean }> = [];
      let duringCall = false;
      client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
        received.push({ message: n.params, duringCall });
      });
      duringCall = true;
      const started = await client.callTool({ name: 'toggle-simulated-logging', arguments: {} });
      duringCall = false;
      expect(resultText(started)).toMatch(/Started simulated/);
      try {
        // server-everything logs every 5 s; with no request in flight only the GET stream can carry it.
        await waitFor(() => received.some((r) => !r.duringCall), 15_000, 'a log message on the GET stream');
      } finally {
        await client.callTool({ name: 'toggle-simulated-logging', arguments: {} });
      }
      const message = received.find((r) => !r.duringCall)!.message;
      expect(message.level).toBeTypeOf('string');
      // server-everything's own wording ("Alert level-message" among them), tagged with its session.
      expect(String(message.data)).toMatch(/message - SessionId [0-9a-f-]{36}$/);
    });

    it("never gives one client another's replies (8 clients x 10 concurrent calls)", async () => {
      const clients = await Promise.all(Array.from({ length: 8 }, () => ctx.connect('/mcp/everything')));
      const results = await Promise.all(
        clients.flatMap(({ client }, c) =>
          Array.from({ length: 10 }, async (_, i) => {
            const expected = `client ${c} call ${i}`;
            const result = await client.callTool({ name: 'echo', arguments: { message: expected } });
            return { expected: `Echo: ${expected}`, got: resultText(result) };
          }),
        ),
      );
      expect(results).toHaveLength(80);
      for (const r of results) expect(r.got).toBe(r.expected);
    });

    it('answers a plain curl POST without a session with JSON, through its own shared session', async () => {
      for (let id = 1; id <= 2; id++) {
        const res = await curlPost(`${ctx.gw.url}/mcp/everything`, { jsonrpc: '2.0', method: 'tools/list', id });
        expect(res.status).toBe(200);
        expect(res.headers.get('content-type')).toMatch(/^application\/json/);
        expect(res.headers.get('mcp-session-id')).toBeNull();
        expect(res.json.id).toBe(id);
        expect(res.json.result.tools.map((t: { name: string }) => t.name)).toContain('echo');
      }
    });

    it('answers ping', async () => {
      const { client } = await ctx.connect('/mcp/everything');
      await expect(client.ping()).resolves.toEqual({});
    });

    it('ends a session on DELETE; the id is then unknown (404, -32001)', async () => {
      const { transport: clientTransport } = await ctx.connect('/mcp/everything');
      const sessionId = clientTransport.sessionId!;
      expect(sessionId).toMatch(/^[0-9a-f-]{36}$/);
      await clientTransport.terminateSession();
      const res = await curlPost(`${ctx.gw.url}/mcp/everything`, { jsonrpc: '2.0', method: 'tools/list', id: 2 }, { 'mcp-session-id': sessionId });
      expect(res.status).toBe(404);
      expect(res.json.error.code).toBe(-32001);
    });

    it(`strip_prefix: /svc${ctx.endpointPath} reaches the upstream's ${ctx.endpointPath}`, async () => {
      const { client } = await ctx.connect(`/svc${ctx.endpointPath}`);
      expect(client.getServerVersion()).toMatchObject({ name: 'mcp-servers/everything' });
      const result = await client.callTool({ name: 'echo', arguments: { message: 'stripped' } });
      expect(resultText(result)).toBe('Echo: stripped');
      const res = await curlPost(`${ctx.gw.url}/svc${ctx.endpointPath}`, { jsonrpc: '2.0', method: 'tools/list', id: 7 });
      expect(res.status).toBe(200);
      expect(res.json.result.tools.length).toBeGreaterThan(5);
    });

    it('fails at once with "Failed to connect to \'refused\'" when the upstream refuses connections', async () => {
      const started = Date.now();
      await expect(ctx.connect('/mcp/refused')).rejects.toThrow(/Failed to connect to 'refused'/);
      // "At once" is the behaviour: well inside refused's timeout_ms (20000), which it must not wait out.
      expect(Date.now() - started).toBeLessThan(20_000 / 2);
      const res = await curlPost(`${ctx.gw.url}/mcp/refused`, { jsonrpc: '2.0', method: 'tools/list', id: 3 });
      expect(res.status).toBe(502);
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      expect(res.json).toMatchObject({ jsonrpc: '2.0', id: 3, error: { code: -32000 } });
      expect(res.json.error.message).toContain("Failed to connect to 'refused'");
    });

    it('fails a call in flight promptly when the upstream is killed, and serves a new session after its restart', async () => {
      const { client } = await ctx.connect('/mcp/victim');
      // The gateway's shared session (for session-less requests) must survive the restart too.
      const curlList = () => curlPost(`${ctx.gw.url}/mcp/victim`, { jsonrpc: '2.0', method: 'tools/list', id: 9 });
      expect((await curlList()).status).toBe(200);
      let progressed = 0;
      // 40 steps in 20 s: a first progress (after 0.5 s) proves the call is running on the victim.
      const call = client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 20, steps: 40 } }, undefined, {
        onprogress: () => progressed++,
      });
      call.catch(() => undefined);
      await waitFor(() => progressed > 0, 10_000, 'the first progress of the call');
      const started = Date.now();
      process.kill(ctx.victim.pid!, 'SIGKILL');
      await expect(call).rejects.toThrow();
      // victim's timeout_ms is 30000 and the call runs 20 s: the failure must come from the lost connection, not the clock.
      expect(Date.now() - started).toBeLessThan(20_000 / 2);
      await waitFor(() => ctx.victim.pid === undefined, 5_000, 'the victim to exit');
      await ctx.victim.start();
      const fresh = await ctx.connect('/mcp/victim');
      const result = await fresh.client.callTool({ name: 'echo', arguments: { message: 'after restart' } });
      expect(resultText(result)).toBe('Echo: after restart');
      const listed = await curlList();
      expect(listed.status).toBe(200);
      expect(listed.json.result.tools.length).toBeGreaterThan(5);
    });

    it("sends the configured headers upstream and never the client's Authorization", async () => {
      const { client, transport: clientTransport } = await ctx.connect('/mcp/recorded', { headers: { Authorization: CLIENT_TOKEN } });
      expect(client.getServerVersion()).toMatchObject({ name: 'recording-upstream' });
      expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['recorded']);
      await client.ping();
      const res = await curlPost(`${ctx.gw.url}/mcp/recorded`, { jsonrpc: '2.0', method: 'tools/list', id: 4 }, { authorization: CLIENT_TOKEN });
      expect(res.status).toBe(200);
      expect(res.json.result.tools).toEqual([{ name: 'recorded', inputSchema: { type: 'object' } }]);
      const methods = (): Set<string> => new Set(ctx.recorder.requests.map((r) => r.method));
      // Every kind of request the transport makes: the event stream GET, POSTs and (http) the DELETE.
      await waitFor(() => methods().has('GET'), 5_000, 'the upstream GET');
      await clientTransport.terminateSession();
      if (ctx.transport === 'http') await waitFor(() => methods().has('DELETE'), 5_000, 'the upstream DELETE');
      const requests = ctx.recorder.requests;
      expect(requests.length).toBeGreaterThanOrEqual(6);
      for (const r of requests) {
        expect(r.headers['authorization']).toBe(UPSTREAM_TOKEN);
        expect(r.headers['x-upstream-key']).toBe(UPSTREAM_KEY);
        expect(JSON.stringify(r.headers)).not.toContain(CLIENT_TOKEN);
      }
      const logs = ctx.gw.logs.join('\n');
      expect(logs).not.toContain(CLIENT_TOKEN);
      expect(logs).not.toContain(UPSTREAM_TOKEN);
    });

    it('lists every server on GET /routes', async () => {
      const res = await fetch(`${ctx.gw.url}/routes`);
      expect(res.status).toBe(200);
      const body = (await res.json()) as { routes: Array<{ name: string; path_prefix: string; transport: string }> };
      expect(body.routes.map((r) => ({ name: r.name, path_prefix: r.path_prefix, transport: r.transport }))).toEqual(
        ['everything', 'svc', 'refused', 'victim', 'recorded'].map((name) => ({ name, path_prefix: `/${name}`, transport })),
      );
    });

    it('answers an unknown server name with 404 and the available servers', async () => {
      const res = await curlPost(`${ctx.gw.url}/mcp/nope`, { jsonrpc: '2.0', method: 'tools/list', id: 5 });
      expect(res.status).toBe(404);
      expect(res.json).toEqual({ error: 'Server not found: nope', available: ['everything', 'svc', 'refused', 'victim', 'recorded'] });
    });
  });

  return ctx;
}
