/**
 * StreamableHttpUpstream against a real server-everything speaking streamable HTTP: sessions the
 * gateway owns and sessions a client initialized, id rewriting, progress, sampling, deadlines,
 * cancellation, the GET stream, DELETE on close, and a session lost to a server restart; and,
 * against a small node:http server, what the reference server cannot show: the wire, and a
 * request's stream resumed after the server ended it (SEP-1699).
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JsonRpcRequest } from '../../src/jsonrpc/messages.js';
import { UpstreamError } from '../../src/upstreams/errors.js';
import { targetUrl } from '../../src/upstreams/http/url.js';
import { StreamableHttpUpstream } from '../../src/upstreams/http/streamable-http.js';
import type { ServerMessage, UpstreamSession } from '../../src/upstreams/upstream.js';
import { startFaultUpstream, type FaultHttpUpstream } from '../reliability/fault-upstreams.js';
import {
  clientInitialize,
  EverythingServer,
  eventually,
  freePort,
  memoryLogger,
  recordingHandlers,
  resultText,
  toolCall,
  upstreamConfig,
} from '../helpers/everything.js';
import { waitFor } from '../helpers/gateway.js';

/** A local HTTP server that hands `answer` each request with its whole body; start() resolves with its /mcp url. */
function fakeServer(answer: (req: IncomingMessage, res: ServerResponse, text: string) => void) {
  const server = createServer((req, res) => {
    let text = '';
    req.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
    req.on('end', () => answer(req, res, text));
  });
  return {
    async start(): Promise<string> {
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      return `http://127.0.0.1:${(server.address() as { port: number }).port}/mcp`;
    },
    async stop(): Promise<void> {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

const SECRET = 'Bearer upstream-secret-5a9c';
const log = memoryLogger();
let server: EverythingServer;
let upstream: StreamableHttpUpstream;

beforeAll(async () => {
  server = await EverythingServer.start('streamableHttp');
  upstream = new StreamableHttpUpstream(upstreamConfig('everything', 'http', server.url, { headers: { Authorization: SECRET } }), { logger: log.logger });
});

afterAll(async () => {
  await upstream?.close();
  await server?.stop();
});

const noMessages = (): void => undefined;
/** src/upstreams/http/streamable-http.ts: the first reconnect of the GET stream, and the floor of a resume's wait. */
const STREAM_RETRY_MIN_MS = 500;
const RESUME_FLOOR_MS = 100;

/** The id server-everything gave the session opened last (it prints it). */
function lastSessionId(): string {
  const ids = [...server.output.matchAll(/Session initialized with ID: (\S+)/g)].map((m) => m[1]!);
  if (ids.length === 0) throw new Error('no session yet');
  return ids[ids.length - 1]!;
}

function rejection(promise: Promise<unknown>): Promise<UpstreamError> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => {
      expect(error).toBeInstanceOf(UpstreamError);
      return error as UpstreamError;
    },
  );
}

describe('a session the gateway owns', () => {
  let session: UpstreamSession;

  beforeAll(async () => {
    session = await upstream.openSession({ owner: 'test', forwardPath: '', handlers: recordingHandlers() });
  });

  afterAll(async () => {
    await session?.close();
  });

  it('initializes with the gateway identity and answers with id 0', () => {
    const init = session.initializeResult;
    expect(init.id).toBe(0);
    expect('result' in init && init.result['serverInfo']).toMatchObject({ name: 'mcp-servers/everything' });
    expect('result' in init && init.result['protocolVersion']).toBe(LATEST_PROTOCOL_VERSION);
    expect(upstream.status()).toMatchObject({ healthy: true, state: 'ready' });
  });

  it('lists tools and calls echo with the client id restored', async () => {
    const list = await session.request({ jsonrpc: '2.0', id: 'list-1', method: 'tools/list' }, { onMessage: noMessages });
    expect(list.id).toBe('list-1');
    const tools = 'result' in list ? (list.result['tools'] as Array<{ name: string }>) : [];
    expect(tools.map((t) => t.name)).toContain('echo');

    const echo = await session.request(toolCall(42, 'echo', { message: 'hello' }), { onMessage: noMessages });
    expect(echo.id).toBe(42);
    expect(resultText(echo)).toBe('Echo: hello');
  });

  it('keeps concurrent requests with the same client id apart', async () => {
    const messages = Array.from({ length: 8 }, (_, i) => `message-${i}`);
    const replies = await Promise.all(messages.map((message) => session.request(toolCall(7, 'echo', { message }), { onMessage: noMessages })));
    expect(replies.map((r) => r.id)).toEqual(messages.map(() => 7));
    expect(replies.map(resultText)).toEqual(messages.map((m) => `Echo: ${m}`));
  });

  it('delivers progress to the request with the client token restored', async () => {
    const progress: ServerMessage[] = [];
    const reply = await session.request(toolCall('long-1', 'trigger-long-running-operation', { duration: 2, steps: 4 }, 'client-token'), {
      onMessage: (m) => progress.push(m),
    });
    expect(resultText(reply)).toContain('Long running operation completed');
    expect(progress.map((m) => m.method)).toEqual(Array(4).fill('notifications/progress'));
    expect(progress.map((m) => m.params?.['progressToken'])).toEqual(Array(4).fill('client-token'));
    expect(progress.map((m) => m.params?.['progress'])).toEqual([1, 2, 3, 4]);
  });

  it('fails a request at its deadline with kind timeout', async () => {
    const started = Date.now();
    const error = await rejection(
      session.request(toolCall(1, 'trigger-long-running-operation', { duration: 3, steps: 3 }), { timeoutMs: 200, onMessage: noMessages }),
    );
    expect(error.kind).toBe('timeout');
    // At the deadline, not at the call's own end (3 s): a wide margin for a busy machine.
    expect(Date.now() - started).toBeLessThan(2_000);
    // The session is still usable afterwards.
    expect(resultText(await session.request(toolCall(2, 'echo', { message: 'after' }), { onMessage: noMessages }))).toBe('Echo: after');
  });

  it('fails an aborted request with kind cancelled', async () => {
    const abort = new AbortController();
    const started = Date.now();
    // Aborted on its first progress (30 steps in 3 s): the call is surely in flight on the server.
    const error = await rejection(
      session.request(toolCall(3, 'trigger-long-running-operation', { duration: 3, steps: 30 }, 'abort-me'), {
        signal: abort.signal,
        onMessage: () => abort.abort(),
      }),
    );
    expect(error.kind).toBe('cancelled');
    // At the abort, not at the call's own end (3 s): a wide margin for a busy machine.
    expect(Date.now() - started).toBeLessThan(2_000);
  });
});

describe('a session a client initialized', () => {
  let session: UpstreamSession;
  const handlers = recordingHandlers();

  beforeAll(async () => {
    session = await upstream.openSession({ owner: 'test', initialize: clientInitialize('init-1', LATEST_PROTOCOL_VERSION), forwardPath: '', handlers });
    await session.send({ jsonrpc: '2.0', method: 'notifications/initialized' });
  });

  afterAll(async () => {
    await session?.close();
  });

  it('relays the answer to the client initialize with its id', () => {
    expect(session.initializeResult.id).toBe('init-1');
    expect('result' in session.initializeResult).toBe(true);
  });

  it('relays a sampling request to the call that caused it and completes the call with the answer', async () => {
    // server-everything registers the tool once it has seen notifications/initialized.
    await eventually(async () => {
      const list = await session.request({ jsonrpc: '2.0', id: 'l', method: 'tools/list' }, { onMessage: noMessages });
      const names = 'result' in list ? (list.result['tools'] as Array<{ name: string }>).map((t) => t.name) : [];
      expect(names).toContain('trigger-sampling-request');
    });
    const seen: ServerMessage[] = [];
    const reply = await session.request(toolCall('call-1', 'trigger-sampling-request', { prompt: 'hi', maxTokens: 10 }), {
      onMessage: (message) => {
        seen.push(message);
        if (message.method === 'sampling/createMessage' && 'id' in message) {
          void session.send({
            jsonrpc: '2.0',
            id: (message as JsonRpcRequest).id,
            result: { role: 'assistant', content: { type: 'text', text: 'sampled-by-test' }, model: 'test-model', stopReason: 'endTurn' },
          });
        }
      },
    });
    expect(seen.map((m) => m.method)).toContain('sampling/createMessage');
    expect(reply.id).toBe('call-1');
    expect(resultText(reply)).toContain('sampled-by-test');
  });

  it('relays messages of its GET stream to the session handlers', async () => {
    const streams = (): number => server.output.split('Establishing new SSE stream').length - 1;
    const before = streams();
    session.openEventStream();
    session.openEventStream(); // idempotent: still one GET
    await eventually(() => expect(streams()).toBe(before + 1));
    // toggle-simulated-logging sends one log message at once, on the GET stream (no related request).
    const reply = await session.request(toolCall('log-on', 'toggle-simulated-logging', {}), { onMessage: noMessages });
    expect(resultText(reply)).toContain('Started simulated');
    await eventually(() => expect(handlers.messages.map((m) => m.method)).toContain('notifications/message'));
    await session.request(toolCall('log-off', 'toggle-simulated-logging', {}), { onMessage: noMessages });
    expect(() => session.closeEventStream()).not.toThrow();
    expect(streams()).toBe(before + 1);
  });
});

describe('close', () => {
  it('deletes the upstream session, after which its id is unknown', async () => {
    const session = await upstream.openSession({ owner: 'test', forwardPath: '', handlers: recordingHandlers() });
    const id = lastSessionId();
    const direct = (): Promise<{ status: number; body: string }> =>
      request(server.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-session-id': id,
          'mcp-protocol-version': LATEST_PROTOCOL_VERSION,
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
      }).then(async (r) => ({ status: r.statusCode, body: await r.body.text() }));
    expect((await direct()).status).toBe(200);

    await session.close();
    await server.waitForOutput(`Received session termination request for session ${id}`);
    const after = await direct();
    // The spec says 404; server-everything answers 400 "No valid session ID provided".
    expect([400, 404]).toContain(after.status);
    expect(after.body).toMatch(/session/i);

    const error = await rejection(session.request(toolCall(1, 'echo', { message: 'x' }), { onMessage: noMessages }));
    expect(error.kind).toBe('closed');
    await session.close(); // twice is fine
  });
});

describe('failures', () => {
  it('reports a refused connection as kind connect and marks the upstream unhealthy', async () => {
    const port = await freePort();
    const refused = new StreamableHttpUpstream(upstreamConfig('nowhere', 'http', `http://127.0.0.1:${port}/mcp`), { logger: log.logger });
    try {
      expect(refused.status().healthy).toBe(true);
      const error = await rejection(refused.openSession({ owner: 'test', forwardPath: '', handlers: recordingHandlers() }));
      expect(error.kind).toBe('connect');
      expect(error.message).toContain("Failed to connect to 'nowhere': ECONNREFUSED");
      expect(refused.status()).toMatchObject({ healthy: false, lastError: error.message });
    } finally {
      await refused.close();
    }
  });

  it('expires the session when the server restarts, and tells the handlers', async () => {
    const own = await EverythingServer.start('streamableHttp');
    const restarting = new StreamableHttpUpstream(upstreamConfig('restarting', 'http', own.url), { logger: log.logger });
    try {
      const handlers = recordingHandlers();
      const session = await restarting.openSession({ owner: 'test', forwardPath: '', handlers });
      expect(resultText(await session.request(toolCall(1, 'echo', { message: 'before' }), { onMessage: noMessages }))).toBe('Echo: before');
      await own.restart();
      const error = await rejection(session.request(toolCall(2, 'echo', { message: 'after' }), { onMessage: noMessages }));
      expect(error.kind).toBe('session_expired');
      expect(handlers.closes).toEqual(['upstream session expired']);
      const again = await rejection(session.request(toolCall(3, 'echo', { message: 'again' }), { onMessage: noMessages }));
      expect(again.kind).toBe('session_expired');
      // A new session works against the restarted server.
      const fresh = await restarting.openSession({ owner: 'test', forwardPath: '', handlers: recordingHandlers() });
      expect(resultText(await fresh.request(toolCall(4, 'echo', { message: 'fresh' }), { onMessage: noMessages }))).toBe('Echo: fresh');
    } finally {
      await restarting.close();
      await own.stop();
    }
  });

  it('fails a request in flight with kind closed when the server dies', async () => {
    const own = await EverythingServer.start('streamableHttp');
    const dying = new StreamableHttpUpstream(upstreamConfig('dying', 'http', own.url), { logger: log.logger });
    try {
      const session = await dying.openSession({ owner: 'test', forwardPath: '', handlers: recordingHandlers() });
      let progressed = 0;
      const call = session.request(toolCall(1, 'trigger-long-running-operation', { duration: 10, steps: 20 }, 'dying'), { onMessage: () => progressed++ });
      const failed = rejection(call).then((error) => ({ error, at: Date.now() }));
      await waitFor(() => progressed > 0, 10_000, 'the first progress of the call (it is running on the server)');
      const started = Date.now();
      await own.stop();
      const { error, at } = await failed;
      expect(error.kind).toBe('closed');
      // "At once": long before the call's own end (10 s) or timeout_ms (20 s).
      expect(at - started).toBeLessThan(10_000 / 3);
    } finally {
      await dying.close();
      await own.stop();
    }
  });
});

describe('on the wire', () => {
  // What the transport sends cannot be observed on server-everything: a recording server stands in.
  interface Seen {
    method: string;
    headers: IncomingHttpHeaders;
    body: { id?: unknown; method?: string; params?: Record<string, unknown> } | undefined;
    closed: Promise<void>;
  }
  const seen: Seen[] = [];
  let url: string;
  const fake = fakeServer((req, res, text) => {
    const body = text ? (JSON.parse(text) as Seen['body']) : undefined;
    seen.push({ method: req.method ?? '', headers: req.headers, body, closed: new Promise((r) => res.once('close', () => r())) });
    if (req.method === 'DELETE') return void res.writeHead(200).end();
    if (req.method === 'GET') return void res.writeHead(405).end();
    if (body?.method === 'initialize') {
      res.writeHead(200, { 'content-type': 'application/json', 'mcp-session-id': 'fake-session' });
      return void res.end(
        JSON.stringify({
          jsonrpc: '2.0',
          id: body.id,
          result: { protocolVersion: '2025-06-18', capabilities: {}, serverInfo: { name: 'fake', version: '1' } },
        }),
      );
    }
    if (body?.id === undefined) return void res.writeHead(202).end();
    // A request: open its stream and never answer.
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write(': working\n\n');
  });

  beforeAll(async () => {
    url = await fake.start();
  });

  afterAll(() => fake.stop());

  it('sends the session headers, aborts the POST at the deadline and posts notifications/cancelled', async () => {
    const wire = new StreamableHttpUpstream(upstreamConfig('fake', 'http', url, { headers: { 'X-Api-Key': 'k-123', 'Content-Type': 'text/plain' } }), {
      logger: log.logger,
    });
    try {
      const session = await wire.openSession({ owner: 'test', forwardPath: '', handlers: recordingHandlers() });
      const error = await rejection(session.request(toolCall('c', 'slow', {}), { timeoutMs: 150, onMessage: noMessages }));
      expect(error.kind).toBe('timeout');
      const call = seen.find((s) => s.body?.method === 'tools/call')!;
      await call.closed; // the HTTP request was aborted, not left open
      const cancel = await eventually(() => {
        const found = seen.find((s) => s.body?.method === 'notifications/cancelled');
        expect(found).toBeDefined();
        return found!;
      });
      expect(cancel.body?.params?.['requestId']).toBe(call.body?.id);
      // 405: the server has no GET stream, which is fine: no retry (the first would come at 500 ms).
      session.openEventStream();
      await eventually(() => expect(seen.filter((s) => s.method === 'GET')).toHaveLength(1));
      // Must stay: a retry that never comes has no barrier; twice the first reconnect's wait.
      await new Promise((r) => setTimeout(r, STREAM_RETRY_MIN_MS * 2));
      await session.close();

      const [initialize, initialized] = seen;
      expect(initialize?.body?.method).toBe('initialize');
      expect(initialize?.headers['mcp-protocol-version']).toBeUndefined();
      expect(initialize?.headers['mcp-session-id']).toBeUndefined();
      expect(initialized?.body?.method).toBe('notifications/initialized');
      for (const request of seen.slice(1)) {
        expect(request.headers['mcp-session-id']).toBe('fake-session');
        expect(request.headers['mcp-protocol-version']).toBe('2025-06-18');
      }
      for (const request of seen) {
        expect(request.headers['x-api-key']).toBe('k-123');
        if (request.method === 'POST') {
          expect(request.headers['content-type']).toBe('application/json');
          expect(request.headers['accept']).toBe('application/json, text/event-stream');
        }
      }
      expect(seen.filter((s) => s.method === 'GET')).toHaveLength(1);
      expect(seen.at(-1)?.method).toBe('DELETE');
    } finally {
      await wire.close();
    }
  });
});

describe('on the wire: the GET stream and the deadline of a notification', () => {
  const seen: Array<{ method: string; body: string }> = [];
  let url: string;
  const fake = fakeServer((req, res, text) => {
    seen.push({ method: req.method ?? '', body: text });
    if (req.method === 'DELETE') return void res.writeHead(200).end();
    if (req.method === 'GET') return void res.writeHead(405).end();
    const body = JSON.parse(text) as { id?: unknown; method?: string };
    if (body.method === 'initialize') {
      res.writeHead(200, { 'content-type': 'application/json', 'mcp-session-id': 'wire-2' });
      return void res.end(
        JSON.stringify({
          jsonrpc: '2.0',
          id: body.id,
          result: { protocolVersion: '2025-06-18', capabilities: {}, serverInfo: { name: 'fake', version: '1' } },
        }),
      );
    }
    if (body.method === 'notifications/hold') return; // never acknowledged
    res.writeHead(202).end();
  });

  beforeAll(async () => {
    url = await fake.start();
  });

  afterAll(() => fake.stop());

  it('asks for the GET stream once while it is open after a 405, and again once it has been closed', async () => {
    const wire = new StreamableHttpUpstream(upstreamConfig('fake', 'http', url), { logger: log.logger });
    try {
      const session = await wire.openSession({ owner: 'test', forwardPath: '', handlers: recordingHandlers() });
      const gets = (): number => seen.filter((s) => s.method === 'GET').length;
      const before = gets();
      await session.openEventStream();
      await eventually(() => expect(gets()).toBe(before + 1));
      // Refused: settled at once from now on, and not asked again while the stream is "open".
      await session.openEventStream();
      // Must stay: a GET that never comes has no barrier; twice the first reconnect's wait.
      await new Promise((r) => setTimeout(r, STREAM_RETRY_MIN_MS * 2));
      expect(gets()).toBe(before + 1);
      // The client's stream closed and came back: the server may have one now.
      session.closeEventStream();
      await session.openEventStream();
      await eventually(() => expect(gets()).toBe(before + 2));
      await session.close();
    } finally {
      await wire.close();
    }
  });

  it('fails a notification the server never acknowledges at the deadline, with kind timeout', async () => {
    const wire = new StreamableHttpUpstream(upstreamConfig('fake', 'http', url, { timeout_ms: 300 }), { logger: log.logger });
    try {
      const session = await wire.openSession({ owner: 'test', forwardPath: '', handlers: recordingHandlers() });
      const started = Date.now();
      const error = await rejection(session.send({ jsonrpc: '2.0', method: 'notifications/hold' }));
      expect(error.kind).toBe('timeout');
      // The deadline is the behaviour: timeout_ms (300), with wide slack for a busy machine.
      expect(Date.now() - started).toBeGreaterThanOrEqual(250);
      expect(Date.now() - started).toBeLessThan(5_000);
      // A notification that is acknowledged is not held by the deadline of the one before.
      await session.send({ jsonrpc: '2.0', method: 'notifications/initialized' });
      await session.close();
    } finally {
      await wire.close();
    }
  });
});

describe('resuming a request stream the server ended before answering (2025-11-25, SEP-1699)', () => {
  // fault-upstreams.ts's poll tools: a priming event with an id (and a `retry:`), the end of the
  // POST's stream, the rest on a GET with Last-Event-ID.
  let fault: FaultHttpUpstream;
  let polling: StreamableHttpUpstream;
  let session: UpstreamSession;
  const handlers = recordingHandlers();

  beforeAll(async () => {
    fault = await startFaultUpstream('http');
    polling = new StreamableHttpUpstream(upstreamConfig('polling', 'http', fault.url), { logger: log.logger });
    session = await polling.openSession({ owner: 'test', forwardPath: '', handlers });
  });

  afterAll(async () => {
    await polling?.close();
    await fault?.stop();
  });

  /** The wire id the gateway gave the latest call of `tool`. */
  function wireIdOf(tool: string): number {
    const call = fault.received.filter((r) => r.method === 'tools/call' && r.params?.['name'] === tool).at(-1);
    if (call === undefined) throw new Error(`no call of ${tool}`);
    return call.id as number;
  }
  const resumesOf = (wireId: number) => fault.resumes.filter((r) => r.lastEventId.startsWith(`poll:${wireId}:`));
  /** Ms between a start and each resuming GET, then between the GETs. */
  const gaps = (started: number, resumes: Array<{ at: number }>) => resumes.map((r, i) => r.at - (i === 0 ? started : resumes[i - 1]!.at));
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('waits `retry` ms, resumes with Last-Event-ID and the session headers, relays what the resumed streams carry, and answers', async () => {
    const seen: ServerMessage[] = [];
    const started = Date.now();
    const reply = await session.request(toolCall('poll-1', 'poll', { retry_ms: 300, rounds: 2, text: 'at last' }, 'client-token'), {
      onMessage: (m) => seen.push(m),
    });
    expect(reply.id).toBe('poll-1');
    expect(resultText(reply)).toBe('polled at last');
    const wireId = wireIdOf('poll');
    const resumes = resumesOf(wireId);
    expect(resumes.map((r) => r.lastEventId)).toEqual([0, 1, 2].map((k) => `poll:${wireId}:${k}`));
    // Each resumed stream carried messages: every wait is the server's retry, no longer.
    for (const gap of gaps(started, resumes)) expect(gap).toBeGreaterThanOrEqual(295);
    const version = 'result' in session.initializeResult ? session.initializeResult.result['protocolVersion'] : undefined;
    for (const { headers } of resumes) {
      expect(headers['accept']).toBe('text/event-stream');
      expect(headers['mcp-session-id']).toEqual(expect.any(String));
      expect(headers['mcp-protocol-version']).toBe(version);
    }
    // Progress (its token restored) and the log line of each round went to the request, in order.
    expect(seen.map((m) => [m.method, m.params?.['progressToken'] ?? m.params?.['data']])).toEqual([
      ['notifications/progress', 'client-token'],
      ['notifications/message', 'round 1'],
      ['notifications/progress', 'client-token'],
      ['notifications/message', 'round 2'],
    ]);
    expect(handlers.messages).toEqual([]);
  });

  it('waits 500 ms when the server gave no retry, and never less than 100 ms whatever it asked for', async () => {
    let started = Date.now();
    expect(resultText(await session.request(toolCall(1, 'poll', { text: 'default' }), { onMessage: noMessages }))).toBe('polled default');
    expect(gaps(started, resumesOf(wireIdOf('poll')))[0]).toBeGreaterThanOrEqual(495);
    started = Date.now();
    expect(resultText(await session.request(toolCall(2, 'poll', { retry_ms: 0, text: 'floor' }), { onMessage: noMessages }))).toBe('polled floor');
    expect(gaps(started, resumesOf(wireIdOf('poll')))[0]).toBeGreaterThanOrEqual(95);
  });

  it('regression (a server that keeps ending the stream without an event must not make the gateway loop): waits twice as long each time, until the deadline', async () => {
    const started = Date.now();
    const error = await rejection(session.request(toolCall(3, 'poll_idle', { retry_ms: 0 }), { timeoutMs: 2_000, onMessage: noMessages }));
    expect(error.kind).toBe('timeout');
    const wireId = wireIdOf('poll_idle');
    const resumes = resumesOf(wireId);
    // 100 ms (the floor), then 200, 400, 800: the next would come after the deadline.
    expect(resumes.length).toBeGreaterThanOrEqual(3);
    expect(resumes.length).toBeLessThanOrEqual(4);
    gaps(started, resumes).forEach((gap, i) => expect(gap).toBeGreaterThanOrEqual(100 * 2 ** i - 5));
    expect(resumes.every((r) => r.lastEventId === `poll:${wireId}:0`)).toBe(true);
    await eventually(() => expect(fault.received.some((r) => r.method === 'notifications/cancelled' && r.params?.['requestId'] === wireId)).toBe(true));
    // Must stay: a resume that never comes has no barrier; a loop restarted at the floor would show by now.
    await sleep(RESUME_FLOOR_MS * 3);
    expect(resumesOf(wireId)).toHaveLength(resumes.length);
  });

  it('fails the call with kind closed when the resuming GET is answered 405 (no GET stream), and the session goes on', async () => {
    const before = fault.resumes.length;
    const error = await rejection(session.request(toolCall(4, 'end_early', {}), { onMessage: noMessages }));
    expect(error.kind).toBe('closed');
    expect(error.message).toBe("Upstream 'polling' ended the stream before answering");
    expect(fault.resumes.slice(before).map((r) => r.lastEventId)).toEqual(['1']);
    expect(resultText(await session.request(toolCall(5, 'echo', { text: 'still here' }), { onMessage: noMessages }))).toBe('echo still here');
  });

  it('cancels during the wait before resuming: the call fails at once and no GET is sent', async () => {
    const RETRY_MS = 800;
    const abort = new AbortController();
    const polls = (): number => fault.received.filter((r) => r.method === 'tools/call' && r.params?.['name'] === 'poll').length;
    const before = polls();
    const failed = rejection(session.request(toolCall(6, 'poll', { retry_ms: RETRY_MS }), { signal: abort.signal, onMessage: noMessages }));
    // The server has the call (and ends its stream at once): the gateway is about to wait RETRY_MS.
    await waitFor(() => polls() > before, 10_000, 'the poll call to reach the server');
    const started = Date.now();
    abort.abort();
    const error = await failed;
    expect(error.kind).toBe('cancelled');
    // "At once" is the behaviour: well before the RETRY_MS wait would have ended.
    expect(Date.now() - started).toBeLessThan(RETRY_MS * 0.75);
    const wireId = wireIdOf('poll');
    await eventually(() => expect(fault.received.some((r) => r.method === 'notifications/cancelled' && r.params?.['requestId'] === wireId)).toBe(true));
    // Must stay: a GET that never comes has no barrier; wait past when RETRY_MS would have sent it.
    await sleep(Math.max(0, started + RETRY_MS + 300 - Date.now()));
    expect(resumesOf(wireId)).toEqual([]);
  });

  it('closes a resumed GET at the deadline and posts notifications/cancelled', async () => {
    const error = await rejection(session.request(toolCall(7, 'poll_hold', { retry_ms: 0 }), { timeoutMs: 600, onMessage: noMessages }));
    expect(error.kind).toBe('timeout');
    const wireId = wireIdOf('poll_hold');
    expect(resumesOf(wireId)).toHaveLength(1);
    await eventually(() => expect(fault.aborted).toContain(wireId));
    await eventually(() => expect(fault.received.some((r) => r.method === 'notifications/cancelled' && r.params?.['requestId'] === wireId)).toBe(true));
  });

  it('expires the session when the resuming GET is answered 404', async () => {
    const own = recordingHandlers();
    const doomed = await polling.openSession({ owner: 'test', forwardPath: '', handlers: own });
    // Another session: its wire ids start again at 1, so its GETs are told apart by order.
    const before = fault.resumes.length;
    const error = await rejection(doomed.request(toolCall(8, 'poll_gone', { retry_ms: 0 }), { onMessage: noMessages }));
    expect(error.kind).toBe('session_expired');
    expect(own.closes).toEqual(['upstream session expired']);
    expect(fault.resumes.slice(before).map((r) => r.lastEventId)).toEqual([`poll:${wireIdOf('poll_gone')}:0`]);
  });
});

describe('target url', () => {
  it('appends the forwarded path and merges queries, configured parameters first', () => {
    expect(targetUrl('http://h/mcp', '', 's').href).toBe('http://h/mcp');
    expect(targetUrl('http://h/base/', '/x/y', 's').href).toBe('http://h/base/x/y');
    expect(targetUrl('http://h/mcp?key=k', '?a=1&key=evil', 's').href).toBe('http://h/mcp?key=k&a=1');
    expect(targetUrl('http://h/mcp', '/sub?a=1', 's').href).toBe('http://h/mcp/sub?a=1');
  });

  it('refuses a forwarded path that leaves the configured one', () => {
    expect(() => targetUrl('http://h/base', '/../admin', 's')).toThrow(UpstreamError);
    expect(() => targetUrl('http://h/base', '/%2e%2e/admin', 's')).toThrow(UpstreamError);
  });
});

describe('logs', () => {
  it('never contain the configured credentials', () => {
    expect(log.lines.length).toBeGreaterThan(0);
    expect(log.lines.join('\n')).not.toContain('upstream-secret-5a9c');
  });
});
