/**
 * Misbehaving HTTP MCP servers for test/reliability/upstream-faults.test.ts, on node:http at
 * 127.0.0.1 (the stdio one is fault-stdio-server.mjs). Each speaks just enough MCP for a client to
 * connect (initialize, notifications, tools/list, tools/call) and fails on request, by tool name.
 *
 * streamable HTTP (`transport: 'http'`, endpoint /mcp):
 *   echo {text}        answers "echo TEXT" (JSON)
 *   fail {status,json} answers HTTP STATUS with an HTML page, or a JSON-RPC error body (json: true),
 *                      both holding BODY_SECRET and the Authorization header the gateway sent
 *   bad_json           200 application/json with a body cut in the middle
 *   wrong_type         200 text/html
 *   wrong_id           200 JSON: a valid response, to another id
 *   sse_bad_event      200 text/event-stream whose event data is not JSON
 *   huge_json {mb}     200 application/json, chunked (no Content-Length), MB megabytes
 *   huge_event {mb}    200 text/event-stream: one event of MB megabytes
 *   stall {after_ms}   200 text/event-stream: a progress event now, another after AFTER_MS, then
 *                      nothing; the POST's closing by the gateway is recorded in `aborted`
 *   drop               200 text/event-stream: a priming event, then the socket is destroyed
 *   end_early          200 text/event-stream: a priming event, then the end of the stream
 *   silent             no answer at all, not even headers; the POST's closing is recorded in `aborted`
 *   close_early        the socket is destroyed before any answer
 *   not_http           bytes that are not HTTP, then the socket is closed
 *   poll {retry_ms,rounds,text}
 *                      SEP-1699 polling: 200 text/event-stream with a priming event (id
 *                      `poll:WIREID:0`, a `retry:` field when RETRY_MS is given), then the end of the
 *                      stream. A GET resuming after `poll:WIREID:K` gets, for K < ROUNDS, a progress
 *                      notification (when the call had a token) and a log notification, with id
 *                      `poll:WIREID:K+1`, then the end; for K = ROUNDS, the answer "polled TEXT"
 *   poll_idle {retry_ms}
 *                      as poll, but every resuming GET is answered with an SSE stream ended at once,
 *                      without an event
 *   poll_hold {retry_ms}
 *                      as poll, but the resuming GET is answered with an SSE stream held open without
 *                      an event; its closing by the gateway is recorded in `aborted`
 *   poll_gone          as poll, but the resuming GET is answered 404 (the session is gone)
 *   (end_early's stream has the id `1`: a GET resuming after it is answered 405, as every GET)
 * legacy HTTP+SSE (`transport: 'sse'`, GET /sse, POST /message?sessionId=...):
 *   echo {text}        answered on the stream
 *   drop               the session's GET stream is destroyed, the call never answered
 *   bad_event          an event whose data is not JSON, the call never answered
 * While `down` is set, every request is answered with it (a proxy in front of a dead server).
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** Put in every error body the fixture sends: it must never reach a client. */
export const BODY_SECRET = 'db-password-7c1e55d0';

export interface Received {
  method?: string;
  id?: string | number;
  params?: Record<string, any>;
}

export interface FaultHttpUpstream {
  readonly url: string;
  readonly port: number;
  /** Every JSON-RPC message POSTed, in order. */
  readonly received: Received[];
  /** Wire ids of `stall` and `silent` calls whose POST the gateway closed before the answer. */
  readonly aborted: Array<string | number>;
  /** Legacy SSE: GET streams opened so far. */
  streams: number;
  /** Streamable HTTP: every GET with a Last-Event-ID, in order, with when it arrived (ms since epoch). */
  readonly resumes: Array<{ lastEventId: string; at: number; headers: IncomingHttpHeaders }>;
  down: { status: number; type: string; body: string } | undefined;
  stop(): Promise<void>;
}

type Message = { jsonrpc: '2.0'; id?: string | number; method?: string; params?: Record<string, any> };

const result = (id: Message['id'], value: object) => ({ jsonrpc: '2.0', id, result: value });
const text = (id: Message['id'], value: string) => result(id, { content: [{ type: 'text', text: value }] });

/** Answers the protocol's own requests; undefined for a tools/call or a notification. */
function protocolAnswer(message: Message): object | undefined {
  switch (message.method) {
    case 'initialize':
      return result(message.id, {
        protocolVersion: message.params?.['protocolVersion'] ?? '2025-06-18',
        capabilities: { tools: {} },
        serverInfo: { name: 'fault-http', version: '1' },
      });
    case 'tools/list':
      return result(message.id, { tools: ['echo', 'fail', 'stall', 'drop'].map((name) => ({ name, inputSchema: { type: 'object' } })) });
    case 'tools/call':
    case undefined:
      return undefined;
    default:
      return message.id === undefined ? undefined : result(message.id, {});
  }
}

async function readMessage(req: IncomingMessage): Promise<Message> {
  let body = '';
  for await (const chunk of req) body += chunk;
  return JSON.parse(body) as Message;
}

function errorPage(status: number, json: boolean, id: Message['id'], authorization: string | undefined): { type: string; body: string } {
  if (json) {
    return {
      type: 'application/json',
      body: JSON.stringify({ jsonrpc: '2.0', id, error: { code: -32603, message: `internal error: ${BODY_SECRET}, request had ${authorization}` } }),
    };
  }
  return {
    type: 'text/html',
    body: `<html><body><h1>${status} Error</h1><pre>postgres://admin:${BODY_SECRET}@db/prod\nAuthorization: ${authorization}</pre></body></html>`,
  };
}

export async function startFaultUpstream(transport: 'http' | 'sse', port = 0): Promise<FaultHttpUpstream> {
  const sockets = new Set<Socket>();
  const streams = new Map<string, ServerResponse>();
  /** The calls of the poll tools, by wire id: what their resuming GETs serve. */
  const polls = new Map<string, { tool: string; args: Record<string, any>; token: unknown }>();
  const upstream = {
    received: [] as Received[],
    aborted: [] as Array<string | number>,
    resumes: [] as FaultHttpUpstream['resumes'],
    streams: 0,
    down: undefined as FaultHttpUpstream['down'],
  };

  /** A GET resuming a poll tool's stream (SEP-1699); false when it resumes none (405 then). */
  const resume = (req: IncomingMessage, res: ServerResponse): boolean => {
    const lastEventId = req.headers['last-event-id'];
    if (typeof lastEventId !== 'string') return false;
    upstream.resumes.push({ lastEventId, at: Date.now(), headers: req.headers });
    const [, wireId, step] = /^poll:(.+):(\d+)$/.exec(lastEventId) ?? [];
    const poll = polls.get(wireId ?? '');
    if (!poll || step === undefined) return false;
    if (poll.tool === 'poll_gone') {
      res.writeHead(404).end();
      return true;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    if (poll.tool === 'poll_idle') {
      res.end();
      return true;
    }
    if (poll.tool === 'poll_hold') {
      res.write(': holding\n\n');
      res.once('close', () => {
        if (!res.writableEnded) upstream.aborted.push(Number(wireId));
      });
      return true;
    }
    const k = Number(step);
    const event = (id: string, value: unknown) => `id: ${id}\nevent: message\ndata: ${JSON.stringify(value)}\n\n`;
    const id = Number(wireId);
    if (k >= Number(poll.args['rounds'] ?? 0)) {
      res.end(event(`poll:${wireId}:${k + 1}`, text(id, `polled ${poll.args['text'] ?? ''}`)));
      return true;
    }
    if (poll.token !== undefined) {
      res.write(event(`poll:${wireId}:${k + 1}`, { jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: poll.token, progress: k + 1 } }));
    }
    res.end(event(`poll:${wireId}:${k + 1}`, { jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: `round ${k + 1}` } }));
    return true;
  };

  const streamable = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (req.method === 'GET' && resume(req, res)) return;
    if (req.method === 'GET') return void res.writeHead(405).end();
    if (req.method === 'DELETE') return void res.writeHead(200).end();
    const message = await readMessage(req);
    upstream.received.push({ method: message.method, id: message.id, params: message.params });
    const json = (status: number, value: unknown, headers: Record<string, string> = {}) =>
      void res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(value));
    const own = protocolAnswer(message);
    if (own) return json(200, own, message.method === 'initialize' ? { 'mcp-session-id': randomUUID() } : {});
    if (message.method !== 'tools/call') return void res.writeHead(202).end();
    const args = (message.params?.['arguments'] ?? {}) as Record<string, any>;
    const id = message.id;
    switch (message.params?.['name']) {
      case 'echo':
        return json(200, text(id, `echo ${args['text'] ?? ''}`));
      case 'fail': {
        const page = errorPage(args['status'], args['json'] === true, id, req.headers.authorization);
        return void res.writeHead(args['status'], { 'content-type': page.type }).end(page.body);
      }
      case 'bad_json':
        return void res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(`{"jsonrpc":"2.0","id":${JSON.stringify(id)},"result":{"content":[{"type":"te`);
      case 'wrong_type':
        return void res.writeHead(200, { 'content-type': 'text/html' }).end('<html><body>not MCP</body></html>');
      case 'wrong_id':
        return json(200, text(424242, 'for somebody else'));
      case 'sse_bad_event':
        return void res.writeHead(200, { 'content-type': 'text/event-stream' }).end('event: message\ndata: {this is not json\n\n');
      case 'huge_json': {
        res.writeHead(200, { 'content-type': 'application/json' });
        const mb = Buffer.alloc(1024 * 1024, ' ');
        let left = Number(args['mb'] ?? 40);
        const more = (): void => {
          while (left > 0 && !res.destroyed) {
            left--;
            if (!res.write(mb)) return void res.once('drain', more);
          }
          res.end();
        };
        return more();
      }
      case 'huge_event': {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('event: message\ndata: ');
        const mb = Buffer.alloc(1024 * 1024, 'z');
        let left = Number(args['mb'] ?? 40);
        const more = (): void => {
          while (left > 0 && !res.destroyed) {
            left--;
            if (!res.write(mb)) return void res.once('drain', more);
          }
          res.end('\n\n');
        };
        return more();
      }
      case 'stall': {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const token = message.params?.['_meta']?.['progressToken'];
        const progress = (n: number) =>
          res.write(
            `event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: token, progress: n } })}\n\n`,
          );
        progress(1);
        const timer = setTimeout(() => progress(2), Number(args['after_ms'] ?? 0));
        res.once('close', () => {
          clearTimeout(timer);
          if (!res.writableEnded && id !== undefined) upstream.aborted.push(id);
        });
        return;
      }
      case 'drop':
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('id: 1\ndata:\n\n');
        return void setTimeout(() => res.socket?.destroy(), 100);
      case 'end_early':
        return void res.writeHead(200, { 'content-type': 'text/event-stream' }).end('id: 1\ndata:\n\n');
      case 'poll':
      case 'poll_idle':
      case 'poll_hold':
      case 'poll_gone': {
        polls.set(String(id), { tool: message.params?.['name'], args, token: message.params?.['_meta']?.['progressToken'] });
        const retry = args['retry_ms'] === undefined ? '' : `retry: ${args['retry_ms']}\n`;
        return void res.writeHead(200, { 'content-type': 'text/event-stream' }).end(`id: poll:${id}:0\n${retry}data:\n\n`);
      }
      case 'silent':
        res.once('close', () => {
          if (!res.writableEnded && id !== undefined) upstream.aborted.push(id);
        });
        return;
      case 'close_early':
        return void req.socket.destroy();
      case 'not_http':
        return void req.socket.end('SSH-2.0-OpenSSH_9.6\r\n\r\n');
      default:
        return json(200, { jsonrpc: '2.0', id, error: { code: -32602, message: 'unknown tool' } });
    }
  };

  const legacy = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (req.method === 'GET' && url.pathname === '/sse') {
      const session = randomUUID();
      streams.set(session, res);
      upstream.streams++;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write(`event: endpoint\ndata: /message?sessionId=${session}\n\n`);
      res.once('close', () => streams.delete(session));
      return;
    }
    const stream = streams.get(url.searchParams.get('sessionId') ?? '');
    if (req.method !== 'POST' || !stream) return void res.writeHead(404).end();
    const message = await readMessage(req);
    upstream.received.push({ method: message.method, id: message.id, params: message.params });
    res.writeHead(202).end();
    const send = (value: unknown) => stream.write(`event: message\ndata: ${JSON.stringify(value)}\n\n`);
    const own = protocolAnswer(message);
    if (own) return void send(own);
    if (message.method !== 'tools/call') return;
    const args = (message.params?.['arguments'] ?? {}) as Record<string, any>;
    switch (message.params?.['name']) {
      case 'echo':
        return void send(text(message.id, `echo ${args['text'] ?? ''}`));
      case 'drop':
        return void stream.socket?.destroy();
      case 'bad_event':
        return void stream.write('event: message\ndata: {this is not json\n\n');
    }
  };

  const server = createServer((req, res) => {
    if (upstream.down) {
      const { status, type, body } = upstream.down;
      req.resume();
      return void res.writeHead(status, { 'content-type': type }).end(body);
    }
    (transport === 'http' ? streamable : legacy)(req, res).catch(() => res.destroy());
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const actual = (server.address() as AddressInfo).port;
  return Object.assign(upstream, {
    url: `http://127.0.0.1:${actual}${transport === 'http' ? '/mcp' : '/sse'}`,
    port: actual,
    async stop() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
}
