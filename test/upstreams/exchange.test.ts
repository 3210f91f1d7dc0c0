import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Agent, type Dispatcher } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Cancellation } from '../../src/upstreams/cancellation.js';
import { BodyTooLarge, exchange, ResponseBody } from '../../src/upstreams/exchange.js';

/** A real HTTP server whose answer each test sets; `closed` resolves when a response's connection closes before it ends. */
let handle: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => void res.end();
let server: Server;
let origin: string;
let agent: Agent;

beforeAll(async () => {
  server = createServer((req, res) => {
    req.resume();
    req.on('end', () => handle(req, res));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

afterEach(async () => {
  await agent?.destroy();
});

function send(options: { signal?: Cancellation; body?: string; path?: string } = {}) {
  agent = new Agent({ headersTimeout: 0, bodyTimeout: 0 });
  return exchange(agent, {
    origin,
    path: options.path ?? '/mcp',
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: options.body ?? '{}',
    signal: options.signal ?? new Cancellation(),
  });
}

/** Resolves when the server sees the response's connection close before the response ended. */
function abandoned(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => res.once('close', () => (res.writableFinished ? undefined : resolve())));
}

/** An SSE answer that sends one event and stays open; `gone` resolves when the server sees it dropped. */
async function openStream() {
  let gone!: Promise<void>;
  handle = (_req, res) => {
    gone = abandoned(res);
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: one\n\n');
  };
  const stop = new Cancellation();
  const response = await send({ signal: stop });
  return { stop, response, gone };
}

describe('exchange', () => {
  it('resolves at the headers with the status, lower-case headers and the body as text', async () => {
    let seen = '';
    handle = (req, res) => {
      seen = `${req.method} ${req.url} ${req.headers['content-type']}`;
      res.writeHead(201, { 'Content-Type': 'application/json', 'X-Answer': 'yes' }).end('{"ok":true}');
    };
    const response = await send({ path: '/mcp?tenant=a' });
    expect(response.statusCode).toBe(201);
    expect(response.headers['x-answer']).toBe('yes');
    expect(await response.body.text()).toBe('{"ok":true}');
    expect(seen).toBe('POST /mcp?tenant=a application/json');
  });

  it('joins a chunked body, a character split between chunks included', async () => {
    const text = `{"word":"Grüße ${'ü'.repeat(1000)}"}`;
    const bytes = Buffer.from(text, 'utf8');
    handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      // Splits the two bytes of an ü.
      res.write(bytes.subarray(0, 14));
      setTimeout(() => res.end(bytes.subarray(14)), 10);
    };
    const response = await send();
    expect(response.headers['transfer-encoding']).toBe('chunked');
    expect(await response.body.text()).toBe(text);
  });

  it('refuses a chunked body over the limit and closes the connection', async () => {
    let gone!: Promise<void>;
    handle = (_req, res) => {
      gone = abandoned(res);
      res.writeHead(200, { 'content-type': 'application/json' });
      const write = () => {
        if (res.destroyed) return;
        res.write('x'.repeat(1024));
        setTimeout(write, 1);
      };
      write();
    };
    const response = await send();
    await expect(response.body.text(10_000)).rejects.toBeInstanceOf(BodyTooLarge);
    await gone;
  });

  it('rejects with the reason when the signal aborts before the headers, and the server sees the request go', async () => {
    let gone!: Promise<void>;
    let arrived!: () => void;
    const started = new Promise<void>((resolve) => (arrived = resolve));
    handle = (_req, res) => {
      gone = abandoned(res);
      arrived();
    };
    const stop = new Cancellation();
    const pending = send({ signal: stop });
    await started;
    const reason = new Error('deadline');
    stop.abort(reason);
    await expect(pending).rejects.toBe(reason);
    await gone;
  });

  it('rejects at once with a signal aborted before it starts', async () => {
    const stop = new Cancellation();
    stop.abort('early');
    await expect(send({ signal: stop })).rejects.toBe('early');
  });

  it('fails the reader of a stream with the reason when the signal aborts after the headers', async () => {
    const { stop, response, gone } = await openStream();
    const chunks: string[] = [];
    const reason = new Error('cancelled');
    await expect(
      (async () => {
        for await (const chunk of response.body) {
          chunks.push(chunk.toString());
          stop.abort(reason);
        }
      })(),
    ).rejects.toBe(reason);
    expect(chunks).toEqual(['data: one\n\n']);
    await gone;
  });

  it('lets go of a stream left early, and a later abort changes nothing', async () => {
    const { stop, response, gone } = await openStream();
    for await (const chunk of response.body) {
      expect(chunk.toString()).toBe('data: one\n\n');
      break;
    }
    await gone;
    stop.abort(new Error('after'));
  });

  it('ignores an abort once the whole body has arrived', async () => {
    handle = (_req, res) => void res.writeHead(200, { 'content-type': 'application/json' }).end('{"a":1}');
    const stop = new Cancellation();
    const response = await send({ signal: stop });
    // Waits for the body's end to be handled (its private flag: nothing public shows it without reading it).
    const body = response.body as unknown as { ended: boolean };
    while (!body.ended) await new Promise((resolve) => setImmediate(resolve));
    stop.abort(new Error('late'));
    expect(await response.body.text()).toBe('{"a":1}');
  });

  it('fails the reader when the server dies half way through the body', async () => {
    handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"partial":');
      setTimeout(() => res.socket?.destroy(), 10);
    };
    const response = await send();
    await expect(response.body.text()).rejects.toThrow();
  });

  it("rejects with undici's error when nothing listens", async () => {
    agent = new Agent();
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as { port: number }).port;
    await new Promise((resolve) => closed.close(resolve));
    const attempt = exchange(agent, { origin: `http://127.0.0.1:${port}`, path: '/', method: 'GET', headers: {}, body: null, signal: new Cancellation() });
    await expect(attempt).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('drains a small body with dump() so that the connection is reused', async () => {
    const sockets = new Set<unknown>();
    handle = (req, res) => {
      sockets.add(req.socket);
      res.writeHead(202, { 'content-type': 'text/plain' }).end('accepted');
    };
    const first = await send();
    await first.body.dump();
    // undici hands a kept-alive socket to the next request one event-loop turn after an answer ends.
    await new Promise((resolve) => setImmediate(resolve));
    const second = await exchange(agent, { origin, path: '/mcp', method: 'POST', headers: {}, body: '{}', signal: new Cancellation() });
    await second.body.dump();
    expect(sockets.size).toBe(1);
  });
});

/** The controller undici hands a handler: records pause and resume. */
function recordingController() {
  const calls: string[] = [];
  let paused = false;
  const controller = {
    get paused() {
      return paused;
    },
    get aborted() {
      return false;
    },
    reason: null,
    pause() {
      paused = true;
      calls.push('pause');
    },
    resume() {
      paused = false;
      calls.push('resume');
    },
    abort(reason: Error) {
      calls.push(`abort:${reason.message}`);
    },
  };
  return { controller: controller as unknown as Dispatcher.DispatchController, calls };
}

describe('ResponseBody', () => {
  it('pauses undici while 64 KiB wait for a reader, and resumes it as they are read', async () => {
    const { controller, calls } = recordingController();
    const body = new ResponseBody(controller);
    for (let i = 0; i < 3; i++) body.push(Buffer.alloc(32 * 1024, i));
    expect(calls).toEqual(['pause']);
    const iterator = body[Symbol.asyncIterator]();
    expect((await iterator.next()).value?.[0]).toBe(0);
    expect(calls).toEqual(['pause']);
    expect((await iterator.next()).value?.[0]).toBe(1);
    expect(calls).toEqual(['pause', 'resume']);
    body.end();
    expect((await iterator.next()).value?.[0]).toBe(2);
    expect((await iterator.next()).done).toBe(true);
  });

  it('never pauses while read whole; the limit bounds it instead', async () => {
    const { controller, calls } = recordingController();
    const body = new ResponseBody(controller);
    const text = body.text(200 * 1024);
    for (let i = 0; i < 4; i++) body.push(Buffer.alloc(32 * 1024, 'a'));
    body.end();
    expect((await text).length).toBe(128 * 1024);
    expect(calls).toEqual([]);
  });

  it('hands the chunks that came before a failure to the reader, then the failure', async () => {
    const { controller } = recordingController();
    const body = new ResponseBody(controller);
    body.push(Buffer.from('data: a\n\n'));
    const failure = new Error('reset');
    body.fail(failure);
    const seen: string[] = [];
    await expect(
      (async () => {
        for await (const chunk of body) seen.push(chunk.toString());
      })(),
    ).rejects.toBe(failure);
    expect(seen).toEqual(['data: a\n\n']);
  });

  it('aborts the exchange when destroyed before its end, and not after', () => {
    const first = recordingController();
    new ResponseBody(first.controller).destroy(new Error('enough'));
    expect(first.calls).toEqual(['abort:enough']);
    const second = recordingController();
    const whole = new ResponseBody(second.controller);
    whole.end();
    whole.destroy(new Error('late'));
    expect(second.calls).toEqual([]);
  });
});
