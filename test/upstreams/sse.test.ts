/**
 * SseUpstream against a real server-everything speaking the legacy HTTP+SSE transport: sessions
 * the gateway owns and sessions a client initialized, id rewriting, progress, sampling, deadlines,
 * cancellation, a server killed mid-call, and sessions rebuilt after a restart.
 */
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JsonRpcRequest } from '../../src/jsonrpc/messages.js';
import { UpstreamError } from '../../src/upstreams/errors.js';
import { SseUpstream } from '../../src/upstreams/http/sse.js';
import type { ServerMessage, UpstreamSession } from '../../src/upstreams/upstream.js';
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

const SECRET = 'Bearer upstream-secret-e31b';
const log = memoryLogger();
let server: EverythingServer;
let upstream: SseUpstream;

beforeAll(async () => {
  server = await EverythingServer.start('sse');
  upstream = new SseUpstream(upstreamConfig('everything', 'sse', server.url, { headers: { Authorization: SECRET } }), {
    logger: log.logger,
  });
});

afterAll(async () => {
  await upstream?.close();
  await server?.stop();
});

const noMessages = (): void => undefined;

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

  it('initializes with protocol 2024-11-05 and answers with id 0', () => {
    const init = session.initializeResult;
    expect(init.id).toBe(0);
    expect('result' in init && init.result['protocolVersion']).toBe('2024-11-05');
    expect('result' in init && init.result['serverInfo']).toMatchObject({ name: 'mcp-servers/everything' });
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
  });

  it('fails an aborted request with kind cancelled', async () => {
    const abort = new AbortController();
    // Aborted on its first progress (30 steps in 3 s): the call is surely in flight on the server.
    const error = await rejection(
      session.request(toolCall(3, 'trigger-long-running-operation', { duration: 3, steps: 30 }, 'abort-me'), {
        signal: abort.signal,
        onMessage: () => abort.abort(),
      }),
    );
    expect(error.kind).toBe('cancelled');
  });

  it('has no separate event stream, and opening it is harmless', () => {
    expect(() => {
      session.openEventStream();
      session.closeEventStream();
    }).not.toThrow();
  });
});

describe('a session a client initialized', () => {
  let session: UpstreamSession;

  beforeAll(async () => {
    session = await upstream.openSession({
      owner: 'test',
      initialize: clientInitialize('init-1', '2024-11-05'),
      forwardPath: '',
      handlers: recordingHandlers(),
    });
    await session.send({ jsonrpc: '2.0', method: 'notifications/initialized' });
  });

  afterAll(async () => {
    await session?.close();
  });

  it('relays the answer to the client initialize with its id', () => {
    expect(session.initializeResult.id).toBe('init-1');
  });

  it('relays a sampling request to the only call in flight and completes it with the answer', async () => {
    await eventually(async () => {
      const list = await session.request({ jsonrpc: '2.0', id: 'l', method: 'tools/list' }, { onMessage: noMessages });
      const names = 'result' in list ? (list.result['tools'] as Array<{ name: string }>).map((t) => t.name) : [];
      expect(names).toContain('trigger-sampling-request');
    });
    const seen: ServerMessage[] = [];
    const reply = await session.request(toolCall('call-1', 'trigger-sampling-request', { prompt: 'hi', maxTokens: 10 }), {
      onMessage: (message) => {
        seen.push(message);
        if (message.method === 'sampling/createMessage') {
          void session.send({
            jsonrpc: '2.0',
            id: (message as JsonRpcRequest).id,
            result: { role: 'assistant', content: { type: 'text', text: 'sampled-by-test' }, model: 'test-model', stopReason: 'endTurn' },
          });
        }
      },
    });
    expect(seen.map((m) => m.method)).toContain('sampling/createMessage');
    expect(resultText(reply)).toContain('sampled-by-test');
  });
});

describe('connection loss', () => {
  let own: EverythingServer;

  beforeAll(async () => {
    own = await EverythingServer.start('sse');
  });

  afterAll(async () => {
    await own?.stop();
  });

  it('fails a call at once when the server dies, and reconnects a gateway session after a restart', async () => {
    const restarting = new SseUpstream(upstreamConfig('restarting', 'sse', own.url, { timeout_ms: 30_000 }), { logger: log.logger });
    try {
      const session = await restarting.openSession({ owner: 'test', forwardPath: '', handlers: recordingHandlers() });
      let progressed = 0;
      const call = session.request(toolCall(1, 'trigger-long-running-operation', { duration: 20, steps: 20 }, 'dying'), { onMessage: () => progressed++ });
      const failed = rejection(call).then((error) => ({ error, at: Date.now() }));
      await waitFor(() => progressed > 0, 10_000, 'the first progress of the call (it is running on the server)');
      const started = Date.now();
      await own.stop();
      const { error, at } = await failed;
      expect(error.kind).toBe('closed');
      // "At once": long before the call's own end (20 s) or timeout_ms (30 s).
      expect(at - started).toBeLessThan(20_000 / 4);

      // While the server is down, a request fails fast as a connect failure.
      const down = await rejection(session.request(toolCall(2, 'echo', { message: 'down' }), { onMessage: noMessages }));
      expect(down.kind).toBe('connect');
      expect(down.message).toContain("Failed to connect to 'restarting'");

      await own.start();
      const reply = await session.request(toolCall(3, 'echo', { message: 'back' }), { onMessage: noMessages });
      expect(reply.id).toBe(3);
      expect(resultText(reply)).toBe('Echo: back');
    } finally {
      await restarting.close();
    }
  });

  it("replays a client's initialize on a new stream so that the client keeps its session", async () => {
    const keeping = new SseUpstream(upstreamConfig('keeping', 'sse', own.url), { logger: log.logger });
    try {
      const handlers = recordingHandlers();
      const session = await keeping.openSession({ owner: 'test', initialize: clientInitialize('init', '2024-11-05'), forwardPath: '', handlers });
      await session.send({ jsonrpc: '2.0', method: 'notifications/initialized' });
      await own.restart();
      const reply = await eventually(() => session.request(toolCall('after', 'echo', { message: 'kept' }), { onMessage: noMessages }), 8_000);
      expect(resultText(reply)).toBe('Echo: kept');
      // The replayed initialize declared sampling too: the restarted server offers the tool again.
      await eventually(async () => {
        const list = await session.request({ jsonrpc: '2.0', id: 'l', method: 'tools/list' }, { onMessage: noMessages });
        const names = 'result' in list ? (list.result['tools'] as Array<{ name: string }>).map((t) => t.name) : [];
        expect(names).toContain('trigger-sampling-request');
      });
      expect(handlers.closes).toEqual([]);
    } finally {
      await keeping.close();
    }
  });

  it("ends a client's session when the server stays away", async () => {
    const lost = new SseUpstream(upstreamConfig('lost', 'sse', own.url, { startup_timeout_ms: 2_000 }), { logger: log.logger });
    try {
      const handlers = recordingHandlers();
      await lost.openSession({ owner: 'test', initialize: clientInitialize('init', '2024-11-05'), forwardPath: '', handlers });
      await own.stop();
      await eventually(() => expect(handlers.closes).toEqual(['upstream connection lost']), 5_000);
    } finally {
      await lost.close();
      await own.start();
    }
  });
});

describe('failures', () => {
  it('reports a refused connection as kind connect', async () => {
    const port = await freePort();
    const refused = new SseUpstream(upstreamConfig('nowhere', 'sse', `http://127.0.0.1:${port}/sse`), { logger: log.logger });
    try {
      const error = await rejection(refused.openSession({ owner: 'test', forwardPath: '', handlers: recordingHandlers() }));
      expect(error.kind).toBe('connect');
      expect(error.message).toContain("Failed to connect to 'nowhere'");
      expect(refused.status().healthy).toBe(false);
    } finally {
      await refused.close();
    }
  });

  describe('against a server that misbehaves', () => {
    // server-everything cannot be made to send these, so a few lines of node:http stand in.
    let fake: Server;
    let port: number;
    let posts = 0;
    let hungPostClosed: Promise<void> | undefined;

    beforeAll(async () => {
      fake = createServer((req, res) => {
        if (req.method === 'POST') {
          posts += 1;
          // What server-everything does for a session it does not know: never answer.
          if (req.url === '/hang') hungPostClosed = new Promise((resolve) => res.once('close', () => resolve()));
          else res.writeHead(404).end('unknown session');
          return;
        }
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        if (req.url === '/foreign') res.write('event: endpoint\ndata: http://127.0.0.2:1/message?sessionId=x\n\n');
        if (req.url === '/hanging') res.write('event: endpoint\ndata: /hang\n\n');
        if (req.url === '/forgetful') res.write('event: endpoint\ndata: /gone\n\n');
        // '/silent' sends nothing at all.
      });
      await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
      port = (fake.address() as { port: number }).port;
    });

    afterAll(async () => {
      fake.closeAllConnections();
      await new Promise((resolve) => fake.close(resolve));
    });

    it('refuses an endpoint on another origin and never posts there', async () => {
      const foreign = new SseUpstream(upstreamConfig('foreign', 'sse', `http://127.0.0.1:${port}/foreign`), { logger: log.logger });
      try {
        const error = await rejection(foreign.openSession({ owner: 'test', forwardPath: '', handlers: recordingHandlers() }));
        expect(error.kind).toBe('protocol');
        expect(error.message).toContain('another origin');
        expect(posts).toBe(0);
      } finally {
        await foreign.close();
      }
    });

    it('fails a request whose POST is never answered at its deadline, and aborts the POST', async () => {
      const hanging = new SseUpstream(upstreamConfig('hanging', 'sse', `http://127.0.0.1:${port}/hanging`, { startup_timeout_ms: 300 }), {
        logger: log.logger,
      });
      try {
        const started = Date.now();
        const error = await rejection(hanging.openSession({ owner: 'test', forwardPath: '', handlers: recordingHandlers() }));
        expect(error.kind).toBe('timeout');
        // The deadline is the behaviour: startup_timeout_ms (300), with ten times it for a busy machine (far below the 20 s timeout_ms).
        expect(Date.now() - started).toBeGreaterThanOrEqual(300 * 0.9);
        expect(Date.now() - started).toBeLessThan(300 * 10);
        await eventually(() => expect(hungPostClosed).toBeDefined());
        await hungPostClosed;
      } finally {
        await hanging.close();
      }
    });

    it('fails a POST answered 404 at once with kind session_expired', async () => {
      const forgetful = new SseUpstream(upstreamConfig('forgetful', 'sse', `http://127.0.0.1:${port}/forgetful`), { logger: log.logger });
      try {
        const started = Date.now();
        const error = await rejection(forgetful.openSession({ owner: 'test', forwardPath: '', handlers: recordingHandlers() }));
        expect(error.kind).toBe('session_expired');
        // "At once": well inside the default startup_timeout_ms (10000) it must not wait out.
        expect(Date.now() - started).toBeLessThan(10_000 / 2);
      } finally {
        await forgetful.close();
      }
    });

    it('gives up waiting for the endpoint after startup_timeout_ms', async () => {
      const silent = new SseUpstream(upstreamConfig('silent', 'sse', `http://127.0.0.1:${port}/silent`, { startup_timeout_ms: 300 }), {
        logger: log.logger,
      });
      try {
        const started = Date.now();
        const error = await rejection(silent.openSession({ owner: 'test', forwardPath: '', handlers: recordingHandlers() }));
        expect(error.kind).toBe('timeout');
        // The deadline is the behaviour: startup_timeout_ms (300), with ten times it for a busy machine (far below the 20 s timeout_ms).
        expect(Date.now() - started).toBeGreaterThanOrEqual(300 * 0.9);
        expect(Date.now() - started).toBeLessThan(300 * 10);
      } finally {
        await silent.close();
      }
    });
  });
});

describe('logs', () => {
  it('never contain the configured credentials', () => {
    expect(log.lines.length).toBeGreaterThan(0);
    expect(log.lines.join('\n')).not.toContain('upstream-secret-e31b');
  });
});
