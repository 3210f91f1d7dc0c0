/**
 * Upstream eras: the `server/discover` probe and its verdict per transport, and stateless
 * 2026-07-28 calls (call()) over streamable HTTP and stdio. Real peers: the v2 SDK fixture
 * (test/fixtures/modern-server.mjs), server-everything (legacy), and tiny node:http / node -e
 * servers for what those cannot show. Traffic to 127.0.0.1 only; every process ended by its pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { ServerConfig } from '../../src/config/schema.js';
import { httpServer, stdioServer } from '../helpers/servers.js';
import { parseConfig } from '../../src/config/load.js';
import type { JsonRpcNotification, JsonRpcRequest, JsonRpcResponse } from '../../src/jsonrpc/messages.js';
import { createLogger, type Logger } from '../../src/observability/logger.js';
import { UpstreamError } from '../../src/upstreams/errors.js';
import { createUpstream } from '../../src/upstreams/factory.js';
import { StdioUpstream } from '../../src/upstreams/stdio/upstream.js';
import { StreamableHttpUpstream } from '../../src/upstreams/http/streamable-http.js';
import { PathVerdicts } from '../../src/upstreams/era.js';
import type { CallOptions, EraVerdict, Upstream } from '../../src/upstreams/upstream.js';
import { EverythingServer, freePort } from '../helpers/everything.js';
import { EVERYTHING, NODE, q, startGateway, waitFor } from '../helpers/gateway.js';

const FIXTURE = new URL('../fixtures/modern-server.mjs', import.meta.url).pathname;
const MODERN = '2026-07-28';
const handlers = { onMessage: () => undefined, onClose: () => undefined };

// ---- helpers ------------------------------------------------------------------------------------

/** A logger whose lines a test can read (a stdio child's stderr is logged line by line). */
function capture(): { logger: Logger; lines: string[]; events: () => string[] } {
  const lines: string[] = [];
  const logger = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _e, done) {
        lines.push(chunk.toString());
        done();
      },
    }),
  });
  const events = (): string[] =>
    lines
      .map((line) => (JSON.parse(line) as { msg?: string }).msg ?? '')
      .filter((msg) => msg.startsWith('event: '))
      .map((msg) => msg.slice('event: '.length));
  return { logger, lines, events };
}

function serverConfig(fields: string): ServerConfig {
  return parseConfig(`[[upstream.servers]]\nname = "s"\npath_prefix = "/s"\n${fields}`, { env: {} }).servers[0]!;
}

const opened: Upstream[] = [];
function track<T extends Upstream>(upstream: T): T {
  opened.push(upstream);
  return upstream;
}

afterEach(async () => {
  vi.restoreAllMocks();
  await Promise.all(opened.splice(0).map((u) => u.close()));
});

/** The test fixture over HTTP, as a child process on a free port. */
class ModernHttpServer {
  /** The fixture's `event: ` lines, in order. */
  readonly events: string[] = [];
  port = 0;
  private constructor(private readonly child: ChildProcess) {}

  static async start(modernOnly = false): Promise<ModernHttpServer> {
    const child = spawn(NODE, [FIXTURE, 'http', '0', ...(modernOnly ? ['--modern-only'] : [])], { stdio: ['ignore', 'pipe', 'pipe'] });
    const server = new ModernHttpServer(child);
    let buffered = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let nl;
      while ((nl = buffered.indexOf('\n')) !== -1) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.startsWith('event: ')) server.events.push(line.slice('event: '.length));
      }
    });
    server.port = await new Promise<number>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString('utf8');
        const match = /listening (\d+)/.exec(out);
        if (match) resolve(Number(match[1]));
      });
      child.once('exit', (code) => reject(new Error(`fixture exited (${code})`)));
      setTimeout(() => reject(new Error('fixture did not start')), 10_000).unref();
    });
    return server;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/mcp`;
  }

  received(method: string): number {
    return this.events.filter((e) => e === `recv ${method}`).length;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    process.kill(child.pid!, 'SIGTERM');
    const timer = setTimeout(() => child.pid !== undefined && child.exitCode === null && process.kill(child.pid, 'SIGKILL'), 2_000);
    await exited;
    clearTimeout(timer);
  }
}

/** A node:http server in this process, for answers the real servers never give. */
async function fakeServer(
  handle: (body: any, req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ url: string; bodies: any[]; close: () => Promise<void> }> {
  const bodies: any[] = [];
  const server: Server = createServer((req, res) => {
    let text = '';
    req.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
    req.on('end', () => {
      const body = text === '' ? undefined : JSON.parse(text);
      bodies.push(body);
      handle(body, req, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    bodies,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const DISCOVER_RESULT = { supportedVersions: [MODERN], capabilities: { tools: {} }, resultType: 'complete', ttlMs: 0, cacheScope: 'private' };

/** A 2026-07-28 request as a modern client sends it. */
function modern(id: string | number, method: string, params: Record<string, unknown> = {}, meta: Record<string, unknown> = {}): JsonRpcRequest {
  return {
    jsonrpc: '2.0',
    id,
    method,
    params: {
      ...params,
      _meta: {
        'io.modelcontextprotocol/protocolVersion': MODERN,
        'io.modelcontextprotocol/clientCapabilities': { elicitation: {}, sampling: {} },
        'io.modelcontextprotocol/clientInfo': { name: 'era-test', version: '1' },
        ...meta,
      },
    },
  };
}

function callOptions(extra: Partial<CallOptions> = {}): CallOptions & { messages: JsonRpcNotification[] } {
  const messages: JsonRpcNotification[] = [];
  return { forwardPath: '', owner: 'test', onMessage: (m) => messages.push(m), messages, ...extra };
}

async function failure(promise: Promise<unknown>): Promise<UpstreamError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(UpstreamError);
  return error as UpstreamError;
}

function textOf(response: JsonRpcResponse): string {
  const content = (response as { result?: { content?: Array<{ text?: string }> } }).result?.content;
  return content?.[0]?.text ?? '';
}

// ---- streamable HTTP ----------------------------------------------------------------------------

describe('era over streamable HTTP', () => {
  let dual: ModernHttpServer;
  let modernOnly: ModernHttpServer;
  let everything: EverythingServer;

  beforeAll(async () => {
    [dual, modernOnly, everything] = await Promise.all([ModernHttpServer.start(), ModernHttpServer.start(true), EverythingServer.start('streamableHttp')]);
  });
  afterAll(async () => {
    await Promise.all([dual?.stop(), modernOnly?.stop(), everything?.stop()]);
  });

  function http(url: string, fields = ''): StreamableHttpUpstream {
    const { logger } = capture();
    return track(new StreamableHttpUpstream(httpServer(serverConfig(`url = ${q(url)}\n${fields}`)), { logger }));
  }

  it('finds a dual-era server modern, keeps its DiscoverResult, and sent the probe with the headers it requires', async () => {
    const u = http(dual.url);
    expect(u.verdict).toBeUndefined();
    const before = Date.now();
    const verdict = await u.era();
    expect(verdict).toMatchObject({
      era: 'modern',
      version: MODERN,
      source: 'probe',
      discover: { supportedVersions: [MODERN], capabilities: { tools: { listChanged: true } } },
    });
    expect(verdict.decidedAt).toBeGreaterThanOrEqual(before);
    expect(u.verdict).toBe(verdict);
    // The fixture's event lines come on its stderr, which can lag behind its HTTP answer.
    const probeHeaders = `headers ${JSON.stringify({ version: MODERN, method: 'server/discover' })}`;
    await waitFor(() => dual.events.includes(probeHeaders), 5_000, 'the fixture to log the probe headers');
    expect(dual.events).toContain(probeHeaders);
  });

  it('finds a modern-only server modern', async () => {
    expect(await http(modernOnly.url).era()).toMatchObject({ era: 'modern', version: MODERN });
  });

  it('finds server-everything legacy (400 without a session), and learns its version from the first initialize', async () => {
    const u = http(everything.url);
    const verdict = await u.era();
    expect(verdict).toMatchObject({ era: 'legacy', version: undefined, source: 'probe' });
    const session = await u.openSession({ owner: 'test', forwardPath: '', handlers });
    expect(u.verdict).toMatchObject({ era: 'legacy', version: '2025-11-25', decidedAt: verdict.decidedAt });
    await session.close();
  });

  it('rejects on HTTP 401 and 503 and remembers nothing; a later answer decides', async () => {
    let status = 401;
    const fake = await fakeServer((body, _req, res) => {
      if (status === 404) return json(res, 404, { jsonrpc: '2.0', id: body.id, error: { code: -32601, message: 'Method not found' } });
      res.writeHead(status);
      res.end('no');
    });
    try {
      const u = http(fake.url);
      const unauthorized = await failure(u.era());
      expect(unauthorized.kind).toBe('protocol');
      expect(unauthorized.message).toBe("Upstream 's' answered HTTP 401");
      expect(u.verdict).toBeUndefined();
      status = 503;
      expect((await failure(u.era())).message).toBe("Upstream 's' answered HTTP 503");
      expect(u.verdict).toBeUndefined();
      expect(u.status().healthy).toBe(false);
      status = 404;
      expect(await u.era()).toMatchObject({ era: 'legacy' });
      expect(fake.bodies).toHaveLength(3);
    } finally {
      await fake.close();
    }
  });

  it('rejects with kind connect when nothing listens, and with kind timeout when the answer never comes', async () => {
    const refused = http(`http://127.0.0.1:${await freePort()}/mcp`);
    expect((await failure(refused.era())).kind).toBe('connect');
    expect(refused.verdict).toBeUndefined();
    const silent = await fakeServer(() => undefined);
    try {
      // The probe is a request a client waits for: timeout_ms bounds it, not startup_timeout_ms (finding 10).
      const u = http(silent.url, 'timeout_ms = 300');
      const started = Date.now();
      expect((await failure(u.era())).kind).toBe('timeout');
      // The deadline is the behaviour: timeout_ms (300), with wide slack for a busy machine, far below startup_timeout_ms (60 s).
      expect(Date.now() - started).toBeLessThan(300 + 4_700);
      expect(u.verdict).toBeUndefined();
    } finally {
      await silent.close();
    }
  });

  it('asks again once with the version a -32022 names; legacy when it names none the gateway speaks', async () => {
    const fake = await fakeServer((body, _req, res) => {
      if (fake.bodies.length === 1)
        return json(res, 400, {
          jsonrpc: '2.0',
          id: body.id,
          error: { code: -32022, message: 'Unsupported protocol version', data: { supported: ['2099-01-01', MODERN], requested: MODERN } },
        });
      json(res, 200, { jsonrpc: '2.0', id: body.id, result: DISCOVER_RESULT });
    });
    const legacyOnly = await fakeServer((body, _req, res) =>
      json(res, 400, {
        jsonrpc: '2.0',
        id: body.id,
        error: { code: -32022, message: 'Unsupported protocol version', data: { supported: ['2025-11-25'], requested: MODERN } },
      }),
    );
    try {
      expect(await http(fake.url).era()).toMatchObject({ era: 'modern', version: MODERN });
      expect(fake.bodies).toHaveLength(2);
      expect(fake.bodies[1].params._meta['io.modelcontextprotocol/protocolVersion']).toBe(MODERN);
      expect(await http(legacyOnly.url).era()).toMatchObject({ era: 'legacy' });
      expect(legacyOnly.bodies).toHaveLength(1);
    } finally {
      await Promise.all([fake.close(), legacyOnly.close()]);
    }
  });

  it('takes a result that is not a DiscoverResult, and an HTML 404, for legacy', async () => {
    const odd = await fakeServer((body, _req, res) => json(res, 200, { jsonrpc: '2.0', id: body.id, result: { tools: [] } }));
    const html = await fakeServer((_body, _req, res) => {
      res.writeHead(404, { 'content-type': 'text/html' });
      res.end('<h1>Not Found</h1>');
    });
    try {
      expect(await http(odd.url).era()).toMatchObject({ era: 'legacy' });
      expect(await http(html.url).era()).toMatchObject({ era: 'legacy' });
    } finally {
      await Promise.all([odd.close(), html.close()]);
    }
  });

  it('remembers the verdict: callers share one probe, a day later or with refresh it probes again', async () => {
    const fake = await fakeServer((body, _req, res) => setTimeout(() => json(res, 200, { jsonrpc: '2.0', id: body.id, result: DISCOVER_RESULT }), 50));
    try {
      const u = http(fake.url);
      const verdicts = await Promise.all([u.era(), u.era(), u.era(), u.era()]);
      expect(new Set(verdicts).size).toBe(1);
      expect(fake.bodies).toHaveLength(1);
      await u.era();
      expect(fake.bodies).toHaveLength(1);
      const first = verdicts[0]!;
      // 25 hours later: stale (only the freshness check reads the mocked clock).
      const later = vi.spyOn(Date, 'now').mockReturnValue(first.decidedAt + 25 * 60 * 60 * 1000);
      const again = u.era();
      later.mockRestore();
      expect(await again).not.toBe(first);
      expect(fake.bodies).toHaveLength(2);
      await u.era({ refresh: true });
      expect(fake.bodies).toHaveLength(3);
    } finally {
      await fake.close();
    }
  });

  it.each(['transport', 'behind the circuit breaker'] as const)(
    'keeps one verdict per forward path (%s): a path that answers 404 is legacy alone, and callers of other paths neither wait for nor share its probe',
    async (how) => {
      // Prefix routing: the client's path under the prefix is appended to the url and probed.
      const fake = await fakeServer((body, req, res) => {
        const path = (req.url ?? '').split('?')[0];
        if (path === '/mcp/bad') return void res.writeHead(404, { 'content-type': 'text/plain' }).end('no route');
        if (path === '/mcp/held') return; // never answered
        json(res, 200, { jsonrpc: '2.0', id: body.id, result: body.method === 'server/discover' ? DISCOVER_RESULT : { tools: [] } });
      });
      try {
        // timeout_ms bounds the held probe (awaited below, not timed); the others go to this process's own server.
        const config = serverConfig(`url = ${q(fake.url)}\ntimeout_ms = 800`);
        const u = how === 'transport' ? http(fake.url, 'timeout_ms = 800') : track(createUpstream(config, { logger: capture().logger }));
        expect(await u.era({ forwardPath: '/bad' })).toMatchObject({ era: 'legacy', source: 'probe' });
        expect(await u.era({ forwardPath: '/good' })).toMatchObject({ era: 'modern' });
        expect(await u.era()).toMatchObject({ era: 'modern' });
        expect(u.verdictFor!('/bad')).toMatchObject({ era: 'legacy' });
        expect(u.verdictFor!('/good')).toMatchObject({ era: 'modern' });
        // /routes shows the url's own verdict.
        expect(u.verdict).toMatchObject({ era: 'modern' });
        // A call goes out where its path is modern, and is refused without a request where it is legacy.
        expect(await u.call(modern(1, 'tools/list'), callOptions({ forwardPath: '/good' }))).toMatchObject({ id: 1, result: { tools: [] } });
        const sent = fake.bodies.length;
        expect((await failure(u.call(modern(2, 'tools/list'), callOptions({ forwardPath: '/bad' })))).message).toMatch(/legacy era/);
        expect(fake.bodies).toHaveLength(sent);
        // A probe that hangs is its path's alone: another path's probe runs meanwhile.
        const held = failure(u.era({ forwardPath: '/held' }));
        await waitFor(() => fake.bodies.length === sent + 1, 5_000, 'the held probe to arrive');
        expect(await u.era({ forwardPath: '/other?tenant=1' })).toMatchObject({ era: 'modern' });
        expect((await held).kind).toBe('timeout');
        expect(u.verdictFor!('/held')).toBeUndefined();
        if (how !== 'transport') expect(u.status().circuit).toBe('closed');
      } finally {
        await fake.close();
      }
    },
  );

  it('with era configured, never probes: legacy sessions and modern calls go out as configured', async () => {
    const before = dual.received('server/discover');
    const legacy = http(dual.url, 'era = "legacy"');
    expect(await legacy.era()).toMatchObject({ era: 'legacy', source: 'config', version: undefined });
    const session = await legacy.openSession({ owner: 'test', forwardPath: '', handlers });
    expect(legacy.verdict).toMatchObject({ era: 'legacy', version: '2025-11-25' });
    await session.close();
    expect((await failure(legacy.call(modern(1, 'tools/list'), callOptions()))).kind).toBe('protocol');

    const configured = http(dual.url, 'era = "modern"');
    expect(await configured.era({ refresh: true })).toMatchObject({ era: 'modern', source: 'config', version: MODERN });
    expect(textOf(await configured.call(modern(2, 'tools/call', { name: 'echo', arguments: { text: 'hi' } }), callOptions()))).toBe('echo: hi');
    expect(dual.received('server/discover')).toBe(before);
  });

  it('is always legacy over sse, without a request', async () => {
    const fake = await fakeServer((_body, _req, res) => json(res, 500, {}));
    try {
      const u = track(
        new (await import('../../src/upstreams/http/sse.js')).SseUpstream(httpServer(serverConfig(`transport = "sse"\nurl = ${q(fake.url)}`)), {
          logger: capture().logger,
        }),
      );
      expect(await u.era({ refresh: true })).toMatchObject({ era: 'legacy', source: 'config' });
      expect((await failure(u.call(modern(1, 'tools/list'), callOptions()))).kind).toBe('protocol');
      expect(fake.bodies).toHaveLength(0);
    } finally {
      await fake.close();
    }
  });

  it('shows the era on /ready and /routes once it is known', async () => {
    const toml = [
      `[[upstream.servers]]\nname = "child"\npath_prefix = "/child"\ncommand = ${q(NODE)}\nargs = [${q(EVERYTHING)}, "stdio"]`,
      `[[upstream.servers]]\nname = "configured"\npath_prefix = "/configured"\nurl = ${q(dual.url)}\nera = "modern"`,
      `[[upstream.servers]]\nname = "unknown"\npath_prefix = "/unknown"\nurl = ${q(`http://127.0.0.1:${await freePort()}/mcp`)}`,
    ].join('\n');
    const gateway = await startGateway(toml);
    try {
      for (const path of ['/ready', '/routes']) {
        const body = (await (await fetch(`${gateway.url}${path}`)).json()) as { servers?: unknown[]; routes?: unknown[] };
        const rows = (body.servers ?? body.routes) as Array<{ name: string; era?: string }>;
        expect(
          rows.map((row) => [row.name, row.era]),
          path,
        ).toEqual([
          ['child', 'legacy'],
          ['configured', 'modern'],
          ['unknown', undefined],
        ]);
      }
    } finally {
      await gateway.stop();
    }
  });

  describe('call()', () => {
    let u: StreamableHttpUpstream;
    beforeAll(async () => {
      u = new StreamableHttpUpstream(httpServer(serverConfig(`url = ${q(dual.url)}`)), { logger: capture().logger });
      await u.era();
    });
    afterAll(async () => {
      await u.close();
    });

    it('sends one POST with the mirrored headers and resolves with the answer under the client id', async () => {
      const response = await u.call(modern('client-1', 'tools/call', { name: 'add', arguments: { a: 2, b: 3 } }), callOptions());
      expect(response).toMatchObject({ jsonrpc: '2.0', id: 'client-1', result: { content: [{ text: '5' }], resultType: 'complete' } });
      // The fixture's event lines come on its stderr, which can lag behind its HTTP answer.
      const callHeaders = `headers ${JSON.stringify({ version: MODERN, method: 'tools/call', name: 'add' })}`;
      await waitFor(() => dual.events.includes(callHeaders), 5_000, 'the fixture to log the call headers');
      expect(dual.events).toContain(callHeaders);
      const read = await u.call(modern(7, 'resources/read', { uri: 'test://hello' }), callOptions());
      expect(read).toMatchObject({ id: 7, result: { contents: [{ text: 'hello' }] } });
      const prompt = await u.call(modern(8, 'prompts/get', { name: 'greet', arguments: { name: 'Ada' } }), callOptions());
      expect(prompt).toMatchObject({ id: 8, result: { messages: [{ content: { text: 'Hello, Ada!' } }] } });
    });

    it('encodes an Mcp-Name that is not plain visible ASCII (the server decodes and compares it)', async () => {
      const response = await u.call(modern(3, 'tools/call', { name: 'écho', arguments: {} }), callOptions());
      const encoded = `headers ${JSON.stringify({ version: MODERN, method: 'tools/call', name: '=?base64?w6ljaG8=?=' })}`;
      await waitFor(() => dual.events.includes(encoded), 5_000, 'the fixture to log the call headers');
      expect(dual.events).toContain(encoded);
      // The names matched: the server looked the tool up (and has none by that name).
      expect(JSON.stringify(response)).not.toContain('-32020');
    });

    it('passes the errors a modern server answers with a 4xx through as answers (-32601 with 404, -32602 with 400)', async () => {
      expect(await u.call(modern(4, 'foo/bar'), callOptions())).toEqual({ jsonrpc: '2.0', id: 4, error: { code: -32601, message: 'Method not found' } });
      const bad: JsonRpcRequest = { jsonrpc: '2.0', id: 5, method: 'tools/list', params: { _meta: { 'io.modelcontextprotocol/protocolVersion': MODERN } } };
      expect(await u.call(bad, callOptions())).toMatchObject({ id: 5, error: { code: -32602 } });
      expect(u.status().healthy).toBe(true);
    });

    it('relays input_required results (elicitation, sampling) as they are', async () => {
      const response = await u.call(modern(6, 'tools/call', { name: 'confirm', arguments: {} }), callOptions());
      expect(response).toMatchObject({
        id: 6,
        result: { resultType: 'input_required', inputRequests: { ok: { method: 'elicitation/create' } }, requestState: 'confirm-1' },
      });
      const answered = await u.call(
        modern(7, 'tools/call', {
          name: 'confirm',
          arguments: {},
          inputResponses: { ok: { action: 'accept', content: { ok: true } } },
          requestState: 'confirm-1',
        }),
        callOptions(),
      );
      expect(textOf(answered)).toBe('confirmed: true');
      const sampling = await u.call(modern(8, 'tools/call', { name: 'sample', arguments: { prompt: 'Capital of France?' } }), callOptions());
      expect(sampling).toMatchObject({
        result: { resultType: 'input_required', inputRequests: { llm: { method: 'sampling/createMessage' } }, requestState: 'sample-1' },
      });
      const sampled = await u.call(
        modern(9, 'tools/call', {
          name: 'sample',
          arguments: { prompt: 'Capital of France?' },
          inputResponses: { llm: { role: 'assistant', content: { type: 'text', text: 'Paris' }, model: 'm', stopReason: 'endTurn' } },
          requestState: 'sample-1',
        }),
        callOptions(),
      );
      expect(textOf(sampled)).toBe('sampled: Paris');
    });

    it('delivers progress with the client token, and progress restarts the deadline', async () => {
      const options = callOptions({ timeoutMs: 350 });
      const response = await u.call(modern(8, 'tools/call', { name: 'slow', arguments: { ms: 800, tag: 'progress' } }, { progressToken: 'tok-1' }), options);
      expect(textOf(response)).toBe('slow: progress');
      const progress = options.messages.filter((m) => m.method === 'notifications/progress');
      expect(progress.length).toBeGreaterThanOrEqual(2);
      expect(progress[0]!.params).toMatchObject({ progressToken: 'tok-1', progress: 1 });
    });

    it('cancels by closing the stream: the promise rejects at once with kind cancelled, and the server sees the close', async () => {
      const controller = new AbortController();
      // ms 4000 with a progress token: a first progress after 1 s proves the stream is open and read here.
      const options = callOptions({ signal: controller.signal });
      const call = u.call(modern(9, 'tools/call', { name: 'slow', arguments: { ms: 4_000, tag: 'http-cancel' } }, { progressToken: 'tok-cancel' }), options);
      await waitFor(() => dual.events.some((e) => e.startsWith('headers') && e.includes('tools/call')) && dual.received('tools/call') > 0, 5_000);
      await waitFor(() => options.messages.some((m) => m.method === 'notifications/progress'), 5_000, 'the first progress on the open stream');
      const started = Date.now();
      controller.abort();
      expect((await failure(call)).kind).toBe('cancelled');
      // At once: before the call's own end, which is 3 s after its first progress (4 s in all).
      expect(Date.now() - started).toBeLessThan(2_500);
      await waitFor(() => dual.events.includes('cancelled http-cancel'), 5_000, 'the server to see the cancellation');
    });

    it('times out with kind timeout and closes the stream', async () => {
      const started = Date.now();
      const error = await failure(
        u.call(modern(10, 'tools/call', { name: 'slow', arguments: { ms: 10_000, tag: 'http-timeout' } }), callOptions({ timeoutMs: 300 })),
      );
      expect(error.kind).toBe('timeout');
      // The deadline is the behaviour: timeoutMs (300), with wide slack, far below the call's own 10 s.
      expect(Date.now() - started).toBeLessThan(300 + 4_700);
      await waitFor(() => dual.events.includes('cancelled http-timeout'), 5_000, 'the server to see the stream closed');
    });

    it('keeps a subscriptions/listen open past its deadline and delivers its notifications until aborted', async () => {
      const controller = new AbortController();
      const deadlineMs = 500;
      const options = callOptions({ signal: controller.signal, timeoutMs: deadlineMs });
      const listen = u.call(modern('listen-1', 'subscriptions/listen', { notifications: { toolsListChanged: true } }), options);
      await waitFor(() => options.messages.length > 0, 5_000, 'the acknowledgement');
      expect(options.messages[0]).toMatchObject({
        method: 'notifications/subscriptions/acknowledged',
        params: { _meta: { 'io.modelcontextprotocol/subscriptionId': 'listen-1' } },
      });
      // Time is the behaviour: the listen must outlive its deadline, so wait well past it.
      await new Promise((r) => setTimeout(r, deadlineMs * 2));
      expect(textOf(await u.call(modern(11, 'tools/call', { name: 'notify', arguments: {} }), callOptions()))).toBe('notified');
      await waitFor(() => options.messages.some((m) => m.method === 'notifications/tools/list_changed'), 5_000, 'the change notification');
      expect(options.messages.find((m) => m.method === 'notifications/tools/list_changed')?.params).toMatchObject({
        _meta: { 'io.modelcontextprotocol/subscriptionId': 'listen-1' },
      });
      controller.abort();
      expect((await failure(listen)).kind).toBe('cancelled');
      await waitFor(() => dual.events.includes('closed subscriptions/listen'), 5_000, 'the server to see the stream closed');
    });

    it('refuses a call to a server found legacy, with kind protocol and without a request', async () => {
      const legacy = http(everything.url);
      await legacy.era();
      const error = await failure(legacy.call(modern(1, 'tools/list'), callOptions()));
      expect(error.kind).toBe('protocol');
      expect(error.message).toMatch(/legacy era/);
    });
  });
});

// ---- stdio ------------------------------------------------------------------------------------------

describe('era over stdio', () => {
  function stdio(fields: string, logger: Logger): StdioUpstream {
    return track(new StdioUpstream(stdioServer(serverConfig(`transport = "stdio"\n${fields}`)), { logger }));
  }
  const fixture = (...args: string[]) => `command = ${q(NODE)}\nargs = [${[FIXTURE, 'stdio', ...args].map(q).join(', ')}]`;

  it('finds the v2 fixture modern before any initialize, and never initializes it', async () => {
    const { logger, events } = capture();
    const u = stdio(fixture(), logger);
    await u.start();
    expect(u.status()).toMatchObject({ state: 'ready', healthy: true });
    expect(u.verdict).toMatchObject({ era: 'modern', version: MODERN, source: 'probe', discover: { supportedVersions: [MODERN] } });
    expect(await u.era()).toBe(u.verdict);
    // The child's event lines come on stderr, a pipe of their own: one can follow the answer on stdout.
    await waitFor(() => events().length >= 1, 5_000, 'the child to log what it received');
    expect(events()).toEqual(['recv server/discover']);
    const error = await failure(u.openSession({ owner: 'test', forwardPath: '', handlers }));
    expect(error.kind).toBe('protocol');
    expect(error.message).toMatch(/no sessions/);
  });

  it('finds the modern-only fixture modern', async () => {
    const { logger } = capture();
    const u = stdio(fixture('--modern-only'), logger);
    expect(await u.era()).toMatchObject({ era: 'modern', version: MODERN });
  });

  it('finds server-everything legacy (-32601 to the probe) and initializes the same child', async () => {
    const { logger } = capture();
    const u = stdio(`command = ${q(NODE)}\nargs = [${q(EVERYTHING)}, "stdio"]`, logger);
    // No bound on how long this takes: a machine too busy for the child to answer within the probe
    // timeout (2 s) reaches the same verdict by its silence, and the same child is initialized.
    await u.start();
    expect(u.verdict).toMatchObject({ era: 'legacy', version: '2025-11-25', source: 'probe' });
    const session = await u.openSession({ owner: 'test', forwardPath: '', handlers });
    const response = await session.request(
      { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { message: 'x' } } },
      { onMessage: () => undefined },
    );
    expect(textOf(response)).toBe('Echo: x');
    expect(u.status().restarts).toBe(0);
    expect((await failure(u.call(modern(2, 'tools/list'), callOptions()))).kind).toBe('protocol');
  });

  it('takes a child that never answers the probe for legacy after the probe timeout (2 s, or half of startup_timeout_ms)', async () => {
    // Answers initialize and tools/list, ignores every other request.
    const script = [
      "require('readline').createInterface({ input: process.stdin }).on('line', (line) => {",
      '  const m = JSON.parse(line);',
      "  const send = (result) => process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id: m.id, result }) + '\\n');",
      "  if (m.method === 'initialize') send({ protocolVersion: '2025-06-18', capabilities: { tools: {} }, serverInfo: { name: 'silent', version: '1' } });",
      "  else if (m.method === 'tools/list') send({ tools: [] });",
      '});',
    ].join('\n');
    const { logger, lines } = capture();
    // 3 s: a probe timeout of half of it (1.5 s, under the 2 s cap), and as long again for a busy machine to answer initialize.
    const u = stdio(`command = ${q(NODE)}\nargs = ["-e", ${q(script)}]\nstartup_timeout_ms = 3000`, logger);
    const started = Date.now();
    await u.start();
    const took = Date.now() - started;
    expect(u.status().state).toBe('ready');
    // The probe timeout is the behaviour: half of startup_timeout_ms (1500), with wide slack for a busy machine.
    expect(took).toBeGreaterThanOrEqual(1_500 * 0.95);
    expect(took).toBeLessThan(1_500 + 4_500);
    expect(u.verdict).toMatchObject({ era: 'legacy', version: '2025-06-18' });
    expect(lines.some((l) => l.includes('no answer to server/discover within 1500 ms'))).toBe(true);
    const session = await u.openSession({ owner: 'test', forwardPath: '', handlers });
    expect(await session.request({ jsonrpc: '2.0', id: 1, method: 'tools/list' }, { onMessage: () => undefined })).toMatchObject({ result: { tools: [] } });
  });

  it('takes a child that exits on the probe for legacy, starts it again without the probe, and keeps it so across restarts', async () => {
    // Answers initialize and tools/call; exits on any other request (some SDKs do before initialize).
    const script = [
      "process.stderr.write('event: started\\n');",
      "require('readline').createInterface({ input: process.stdin }).on('line', (line) => {",
      '  const m = JSON.parse(line);',
      "  process.stderr.write('event: recv ' + m.method + '\\n');",
      "  const send = (result) => process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id: m.id, result }) + '\\n');",
      "  if (m.method === 'initialize') send({ protocolVersion: m.params.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: 'strict', version: '1' } });",
      "  else if (m.method === 'tools/call') send({ content: [{ type: 'text', text: 'pid ' + process.pid }] });",
      '  else if (m.id !== undefined) process.exit(1);',
      '});',
    ].join('\n');
    const { logger, events } = capture();
    const u = stdio(`command = ${q(NODE)}\nargs = ["-e", ${q(script)}]\nrestart_backoff_ms = 50`, logger);
    await u.start();
    expect(u.status()).toMatchObject({ state: 'ready', restarts: 0 });
    expect(u.verdict).toMatchObject({ era: 'legacy', version: '2025-11-25' });
    await waitFor(() => events().length === 5, 5_000, 'the child to log what it received');
    expect(events()).toEqual(['started', 'recv server/discover', 'started', 'recv initialize', 'recv notifications/initialized']);
    const session = await u.openSession({ owner: 'test', forwardPath: '', handlers });
    const call = () => session.request({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'x', arguments: {} } }, { onMessage: () => undefined });
    const first = textOf(await call());
    process.kill(u.status().pid!, 'SIGKILL');
    await waitFor(() => u.status().state !== 'ready', 5_000, 'the exit to be seen');
    await waitFor(() => u.status().state === 'ready', 5_000, 'the restart');
    expect(textOf(await call())).not.toBe(first);
    expect(events().filter((e) => e === 'recv server/discover')).toHaveLength(1);
    expect(u.status().restarts).toBe(1);
  });

  it('keeps a modern verdict across restarts: the next child is neither probed nor initialized', async () => {
    const { logger, events } = capture();
    const u = stdio(`${fixture()}\nrestart_backoff_ms = 50`, logger);
    await u.start();
    const verdict = u.verdict;
    process.kill(u.status().pid!, 'SIGKILL');
    await waitFor(() => u.status().state !== 'ready', 5_000, 'the exit to be seen');
    expect(textOf(await u.call(modern(1, 'tools/call', { name: 'echo', arguments: { text: 'again' } }), callOptions()))).toBe('echo: again');
    expect(u.verdict).toBe(verdict);
    await waitFor(() => events().length >= 2, 5_000, 'the child to log what it received');
    expect(events()).toEqual(['recv server/discover', 'recv tools/call']);
  });

  it('probes again at the next start once the verdict is a day old', async () => {
    const { logger, events } = capture();
    const u = stdio(`${fixture()}\nrestart_backoff_ms = 50`, logger);
    await u.start();
    const decidedAt = u.verdict!.decidedAt;
    const later = vi.spyOn(Date, 'now').mockReturnValue(decidedAt + 25 * 60 * 60 * 1000);
    // The running child's verdict holds whatever its age.
    expect(await u.era()).toMatchObject({ decidedAt });
    later.mockRestore();
    // The verdict object is the one the upstream keeps: aging it ages the remembered verdict.
    u.verdict!.decidedAt = decidedAt - 25 * 60 * 60 * 1000;
    process.kill(u.status().pid!, 'SIGKILL');
    await waitFor(() => u.status().state !== 'ready', 5_000, 'the exit to be seen');
    await waitFor(() => u.status().state === 'ready', 5_000, 'the restart');
    await waitFor(() => events().filter((e) => e === 'recv server/discover').length >= 2, 5_000, 'the child to log the second probe');
    expect(events().filter((e) => e === 'recv server/discover')).toHaveLength(2);
    expect(u.verdict!.decidedAt).toBeGreaterThan(decidedAt);
  });

  it('refresh asks a running modern child again; a legacy child is probed at its next start', async () => {
    const { logger, events } = capture();
    const u = stdio(fixture(), logger);
    await u.start();
    const first = u.verdict!;
    const refreshed = await u.era({ refresh: true });
    expect(refreshed).toMatchObject({ era: 'modern' });
    expect(refreshed).not.toBe(first);
    // The child's event lines come on stderr, a pipe of their own: one can follow the answer on stdout.
    await waitFor(() => events().filter((e) => e === 'recv server/discover').length >= 2, 5_000, 'the child to log the second probe');
    expect(events().filter((e) => e === 'recv server/discover')).toHaveLength(2);

    const legacy = capture();
    const l = stdio(`command = ${q(NODE)}\nargs = [${q(EVERYTHING)}, "stdio"]\nrestart_backoff_ms = 50`, legacy.logger);
    await l.start();
    const legacyVerdict = l.verdict;
    expect(await l.era({ refresh: true })).toBe(legacyVerdict);
    const probes = () => legacy.lines.filter((line) => line.includes('upstream era probed')).length;
    expect(probes()).toBe(1);
    process.kill(l.status().pid!, 'SIGKILL');
    await waitFor(() => probes() === 2 && l.status().state === 'ready', 10_000, 'the next start to probe');
  });

  it('recognises a modern server that answers the probe late and refuses initialize (a slow npx start)', async () => {
    // Reads nothing for its first 2.5 s, counted from its own start (the probe, counted from the
    // spawn, times out at 2 s: the smaller of 2 s and half of startup_timeout_ms), then answers in
    // order: server/discover, and initialize with the error of a modern-only server. The start
    // has 8 s in all, so a busy machine's slow Node start leaves the order as it is.
    const script = [
      'setTimeout(() => {',
      "  require('readline').createInterface({ input: process.stdin }).on('line', (line) => {",
      '    const m = JSON.parse(line);',
      "    const send = (body) => process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id: m.id, ...body }) + '\\n');",
      `    if (m.method === 'server/discover') send({ result: ${JSON.stringify(DISCOVER_RESULT)} });`,
      "    else if (m.method === 'initialize') send({ error: { code: -32022, message: 'Unsupported protocol version', data: { supported: ['2026-07-28'] } } });",
      "    else if (m.method === 'tools/list') send({ result: { tools: [], resultType: 'complete' } });",
      '  });',
      '}, 2500);',
    ].join('\n');
    const { logger } = capture();
    const u = stdio(`command = ${q(NODE)}\nargs = ["-e", ${q(script)}]\nstartup_timeout_ms = 8000`, logger);
    await u.start();
    expect(u.status().state).toBe('ready');
    expect(u.verdict).toMatchObject({ era: 'modern', version: MODERN });
    expect(await u.call(modern(1, 'tools/list'), callOptions())).toMatchObject({ id: 1, result: { tools: [] } });
  });

  it('recognises the modern-only v2 fixture that reads nothing for 3 s (npx -y fetching it), and keeps it modern across restarts', async () => {
    // The probe's own window (2 s) ends before the child reads anything; what it answers once it
    // starts decides, not the silence.
    const { logger, lines } = capture();
    const u = stdio(`${fixture('--modern-only', '--start-delay', '3000')}\nrestart_backoff_ms = 50`, logger);
    await u.start();
    expect(u.status()).toMatchObject({ state: 'ready', healthy: true, restarts: 0 });
    expect(u.verdict).toMatchObject({ era: 'modern', version: MODERN });
    expect(await u.call(modern(1, 'tools/call', { name: 'echo', arguments: { text: 'slow start' } }), callOptions())).toMatchObject({ id: 1 });
    expect(lines.some((line) => line.includes('crash'))).toBe(false);
    // The verdict it remembers is modern: the next child is not initialized and refused again.
    process.kill(u.status().pid!, 'SIGKILL');
    await waitFor(() => u.status().state === 'ready' && u.status().restarts === 1, 15_000, 'the child to start again');
    expect(u.verdict).toMatchObject({ era: 'modern' });
    expect(textOf(await u.call(modern(2, 'tools/call', { name: 'echo', arguments: { text: 'again' } }), callOptions()))).toBe('echo: again');
  });

  it('asks a child that was silent through the probe and refused initialize again, and probes its next start', async () => {
    // Ignores server/discover, refuses initialize: not modern, but its silence decides nothing.
    const script = [
      "process.stderr.write('event: started\\n');",
      "require('readline').createInterface({ input: process.stdin }).on('line', (line) => {",
      '  const m = JSON.parse(line);',
      "  process.stderr.write('event: recv ' + m.method + '\\n');",
      "  if (m.method === 'initialize') process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id: m.id, error: { code: -32602, message: 'no' } }) + '\\n');",
      '});',
    ].join('\n');
    const { logger, events, lines } = capture();
    const u = stdio(`command = ${q(NODE)}\nargs = ["-e", ${q(script)}]\nstartup_timeout_ms = 400\nrestart_backoff_ms = 50`, logger);
    await u.start();
    expect(u.status().state).not.toBe('ready');
    expect(u.status().lastError).toMatch(/refused initialize/);
    // The second start probes again rather than taking the remembered legacy verdict.
    await waitFor(() => events().filter((e) => e === 'recv server/discover').length >= 3, 10_000, 'the next start to probe');
    expect(events().slice(0, 5)).toEqual(['started', 'recv server/discover', 'recv initialize', 'recv server/discover', 'started']);
    expect(lines.some((line) => line.includes('asking it again'))).toBe(true);
    await u.close();
  });

  it('with era configured, never probes', async () => {
    // Two children of their own, started at once: neither is probed, so no probe timeout is at stake.
    const legacy = capture();
    const l = stdio(`${fixture()}\nera = "legacy"`, legacy.logger);
    const configured = capture();
    const m = stdio(`${fixture()}\nera = "modern"`, configured.logger);
    const [, answer] = await Promise.all([l.start(), m.call(modern(1, 'tools/call', { name: 'echo', arguments: { text: 'cfg' } }), callOptions())]);
    expect(l.verdict).toMatchObject({ era: 'legacy', source: 'config', version: '2025-11-25' });
    await waitFor(() => legacy.events().length === 2, 5_000, 'the child to log what it received');
    expect(legacy.events()).toEqual(['recv initialize', 'recv notifications/initialized']);

    expect(textOf(answer)).toBe('echo: cfg');
    expect(m.verdict).toMatchObject({ era: 'modern', source: 'config', version: MODERN });
    await waitFor(() => configured.events().length >= 1, 5_000, 'the child to log what it received');
    expect(configured.events()).toEqual(['recv tools/call']);
  });

  describe('call()', () => {
    let u: StdioUpstream;
    let recorded: ReturnType<typeof capture>;
    beforeAll(async () => {
      recorded = capture();
      u = new StdioUpstream(stdioServer(serverConfig(`transport = "stdio"\n${fixture()}`)), { logger: recorded.logger });
      await u.start();
    });
    afterAll(async () => {
      await u.close();
    });

    it('answers under the client id, also for two calls with the same id at once', async () => {
      const [a, b] = await Promise.all([
        u.call(modern(1, 'tools/call', { name: 'echo', arguments: { text: 'a' } }), callOptions()),
        u.call(modern(1, 'tools/call', { name: 'echo', arguments: { text: 'b' } }), callOptions()),
      ]);
      expect(a).toMatchObject({ id: 1, result: { resultType: 'complete' } });
      expect([textOf(a), textOf(b)]).toEqual(['echo: a', 'echo: b']);
      expect(await u.call(modern('u', 'foo/bar'), callOptions())).toMatchObject({ id: 'u', error: { code: -32601 } });
    });

    it('delivers progress with the client token restored', async () => {
      const options = callOptions({ timeoutMs: 350 });
      const response = await u.call(
        modern(2, 'tools/call', { name: 'slow', arguments: { ms: 800, tag: 'stdio-progress' } }, { progressToken: 'tok-2' }),
        options,
      );
      expect(textOf(response)).toBe('slow: stdio-progress');
      expect(options.messages.filter((m) => m.method === 'notifications/progress').length).toBeGreaterThanOrEqual(2);
      expect(options.messages[0]!.params).toMatchObject({ progressToken: 'tok-2' });
    });

    it('cancels with notifications/cancelled, and times out the same way', async () => {
      const controller = new AbortController();
      const calls = (): number => recorded.events().filter((e) => e === 'recv tools/call').length;
      const callsBefore = calls();
      const call = u.call(
        modern(3, 'tools/call', { name: 'slow', arguments: { ms: 10_000, tag: 'stdio-cancel' } }),
        callOptions({ signal: controller.signal }),
      );
      await waitFor(() => calls() > callsBefore, 5_000, 'the child to receive the call');
      controller.abort();
      expect((await failure(call)).kind).toBe('cancelled');
      await waitFor(() => recorded.events().includes('cancelled stdio-cancel'), 5_000, 'the child to see the cancellation');
      expect(recorded.events()).toContain('recv notifications/cancelled');

      const timeout = await failure(
        u.call(modern(4, 'tools/call', { name: 'slow', arguments: { ms: 10_000, tag: 'stdio-timeout' } }), callOptions({ timeoutMs: 300 })),
      );
      expect(timeout.kind).toBe('timeout');
      await waitFor(() => recorded.events().includes('cancelled stdio-timeout'), 5_000, 'the child to see the cancellation');
    });

    it('routes listen notifications by subscription id (the client id restored) past the deadline, and cancels the listen on abort', async () => {
      const controller = new AbortController();
      const deadlineMs = 400;
      const options = callOptions({ signal: controller.signal, timeoutMs: deadlineMs });
      const other = callOptions();
      const listen = u.call(modern('L1', 'subscriptions/listen', { notifications: { toolsListChanged: true } }), options);
      const second = new AbortController();
      const otherListen = u.call(modern('L2', 'subscriptions/listen', { notifications: { promptsListChanged: true } }), { ...other, signal: second.signal });
      await waitFor(() => options.messages.length > 0 && other.messages.length > 0, 5_000, 'the acknowledgements');
      expect(options.messages[0]).toMatchObject({
        method: 'notifications/subscriptions/acknowledged',
        params: { _meta: { 'io.modelcontextprotocol/subscriptionId': 'L1' } },
      });
      expect(other.messages[0]).toMatchObject({ params: { _meta: { 'io.modelcontextprotocol/subscriptionId': 'L2' } } });
      // Time is the behaviour: the listen must outlive its deadline, so wait well past it.
      await new Promise((r) => setTimeout(r, deadlineMs * 2));
      await u.call(modern(5, 'tools/call', { name: 'notify', arguments: {} }), callOptions());
      await waitFor(() => options.messages.some((m) => m.method === 'notifications/tools/list_changed'), 5_000, 'the change notification');
      expect(options.messages.find((m) => m.method === 'notifications/tools/list_changed')?.params).toEqual({
        _meta: { 'io.modelcontextprotocol/subscriptionId': 'L1' },
      });
      // Only the listen that asked for tool changes gets them.
      expect(other.messages.some((m) => m.method === 'notifications/tools/list_changed')).toBe(false);
      const cancelsBefore = recorded.events().filter((e) => e === 'recv notifications/cancelled').length;
      controller.abort();
      second.abort();
      expect((await failure(listen)).kind).toBe('cancelled');
      expect((await failure(otherListen)).kind).toBe('cancelled');
      await waitFor(
        () => recorded.events().filter((e) => e === 'recv notifications/cancelled').length === cancelsBefore + 2,
        5_000,
        'notifications/cancelled for both',
      );
    });
  });
});

// ---- circuit breaker ----------------------------------------------------------------------------

describe('era and call() behind the circuit breaker', () => {
  it('counts failed probes like failed sessions, JSON-RPC error answers as successes, and refuses probes while open', async () => {
    let status = 503;
    const fake = await fakeServer((body, _req, res) => {
      if (status === 503) return json(res, 503, {});
      if (body.method === 'server/discover') return json(res, 200, { jsonrpc: '2.0', id: body.id, result: DISCOVER_RESULT });
      json(res, 404, { jsonrpc: '2.0', id: body.id, error: { code: -32601, message: 'Method not found' } });
    });
    try {
      const u = track(createUpstream(serverConfig(`url = ${q(fake.url)}\ncircuit_failure_threshold = 2\ncircuit_open_ms = 300`), { logger: capture().logger }));
      expect((await failure(u.era())).kind).toBe('protocol');
      expect((await failure(u.era())).kind).toBe('protocol');
      expect(u.status().circuit).toBe('open');
      expect((await failure(u.era())).kind).toBe('circuit_open');
      expect(fake.bodies).toHaveLength(2);
      status = 200;
      await waitFor(() => u.status().circuit === 'half_open', 3_000, 'half-open');
      expect(await u.era()).toMatchObject({ era: 'modern' });
      expect(u.status().circuit).toBe('closed');
      // Answers, even errors, are successes; a remembered verdict does not touch the circuit.
      for (let i = 0; i < 3; i++) expect(await u.call(modern(i, 'foo/bar'), callOptions())).toMatchObject({ error: { code: -32601 } });
      await u.era();
      expect(u.status().circuit).toBe('closed');
      expect(fake.bodies).toHaveLength(6);
    } finally {
      await fake.close();
    }
  });
});

describe('PathVerdicts', () => {
  const verdict = (era: 'legacy' | 'modern'): EraVerdict => ({ era, version: undefined, decidedAt: Date.now(), source: 'probe' });

  it("keeps at most its bound of paths, the least recently read going first; the url's own is never evicted", () => {
    const verdicts = new PathVerdicts(3);
    verdicts.set('', verdict('modern'));
    verdicts.set('/a', verdict('legacy'));
    verdicts.set('/b', verdict('legacy'));
    verdicts.set('/c', verdict('legacy'));
    expect(verdicts.get('/a')).toMatchObject({ era: 'legacy' });
    verdicts.set('/d', verdict('legacy'));
    expect(verdicts.size).toBe(3);
    expect(verdicts.get('/b')).toBeUndefined();
    for (const path of ['/a', '/c', '/d']) expect(verdicts.get(path), path).toBeDefined();
    // A flood of new paths costs only paths: the url's own verdict stays, and is what is shown.
    for (let i = 0; i < 1_000; i++) verdicts.set(`/flood/${i}`, verdict('legacy'));
    expect(verdicts.size).toBe(3);
    expect(verdicts.get('')).toMatchObject({ era: 'modern' });
    expect(verdicts.shown).toMatchObject({ era: 'modern' });
  });

  it("shows the latest verdict while the url's own is unknown", () => {
    const verdicts = new PathVerdicts();
    expect(verdicts.shown).toBeUndefined();
    verdicts.set('/a', verdict('legacy'));
    verdicts.set('/b', verdict('modern'));
    expect(verdicts.shown).toMatchObject({ era: 'modern' });
  });
});
