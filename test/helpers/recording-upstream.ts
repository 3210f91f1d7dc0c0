/**
 * A tiny MCP server on node:http that records every request's headers, for asserting what the
 * gateway puts on the wire (configured credentials in, client credentials out). It answers just
 * enough of the protocol for a client to connect, list tools (optionally many, paginated) and call
 * them: initialize, ping, tools/list, tools/call. It also records the JSON-RPC method, tool and
 * `params._meta` of each POST.
 * Everything else in the end-to-end tests uses the real server-everything.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** The JSON-RPC method of a POST body, when it had one. */
  rpcMethod?: string;
  /** The tool of a tools/call. */
  tool?: string;
  /** The request's `params._meta`, when it had one. */
  meta?: Record<string, unknown>;
}

export interface RecordingOptions {
  /** The tools it offers (default: one tool named "recorded"). */
  tools?: string[];
  /** tools/list pages of this many tools, linked by nextCursor (default: one page). */
  pageSize?: number;
  /**
   * http: serve the standalone GET stream; each GET gets one event with an id (`ev-1`, `ev-2`, ...)
   * carrying notifications/tools/list_changed, and stays open. Default: GET is 405.
   */
  eventStream?: boolean;
}

export interface RecordingUpstream {
  /** streamable HTTP: the endpoint; sse: the GET stream. */
  url: string;
  /** The origin only (for strip_prefix style configs). */
  origin: string;
  requests: RecordedRequest[];
  stop(): Promise<void>;
}

type Message = { jsonrpc: '2.0'; id?: string | number; method?: string; params?: Record<string, unknown> };

function answer(message: Message, options: RecordingOptions): object | undefined {
  if (message.id === undefined || message.method === undefined) return undefined;
  switch (message.method) {
    case 'initialize':
      return {
        jsonrpc: '2.0',
        id: message.id,
        result: {
          protocolVersion: message.params?.['protocolVersion'] ?? '2025-06-18',
          capabilities: { tools: {} },
          serverInfo: { name: 'recording-upstream', version: '1.0.0' },
        },
      };
    case 'tools/list': {
      const names = options.tools ?? ['recorded'];
      const start = Number(message.params?.['cursor'] ?? 0);
      const end = options.pageSize ? start + options.pageSize : names.length;
      const tools = names.slice(start, end).map((name) => ({ name, inputSchema: { type: 'object' } }));
      return { jsonrpc: '2.0', id: message.id, result: { tools, ...(end < names.length ? { nextCursor: String(end) } : {}) } };
    }
    case 'tools/call':
      return { jsonrpc: '2.0', id: message.id, result: { content: [{ type: 'text', text: `called ${String(message.params?.['name'])}` }] } };
    case 'ping':
      return { jsonrpc: '2.0', id: message.id, result: {} };
    default:
      return { jsonrpc: '2.0', id: message.id, error: { code: -32601, message: 'Method not found' } };
  }
}

async function body(req: import('node:http').IncomingMessage): Promise<Message> {
  let text = '';
  for await (const chunk of req) text += chunk;
  return JSON.parse(text) as Message;
}

export async function startRecordingUpstream(transport: 'http' | 'sse', options: RecordingOptions = {}): Promise<RecordingUpstream> {
  const requests: RecordedRequest[] = [];
  const streams = new Map<string, ServerResponse>();
  const read = async (req: import('node:http').IncomingMessage, record: RecordedRequest): Promise<Message> => {
    const message = await body(req);
    if (message.method) record.rpcMethod = message.method;
    if (message.method === 'tools/call') record.tool = String(message.params?.['name']);
    const meta = message.params?.['_meta'];
    if (typeof meta === 'object' && meta !== null) record.meta = meta as Record<string, unknown>;
    return message;
  };
  let events = 0;
  const server = createServer((req, res) => {
    const record: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers };
    requests.push(record);
    void (async () => {
      if (transport === 'http') {
        if (req.method === 'GET') {
          if (!options.eventStream) return void res.writeHead(405).end();
          res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
          res.write(`id: ev-${++events}\ndata: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/tools/list_changed' })}\n\n`);
          return;
        }
        if (req.method === 'DELETE') return void res.writeHead(200).end();
        const message = await read(req, record);
        const reply = answer(message, options);
        if (!reply) return void res.writeHead(202).end();
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (message.method === 'initialize') headers['mcp-session-id'] = randomUUID();
        res.writeHead(200, headers).end(JSON.stringify(reply));
        return;
      }
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      if (req.method === 'GET' && url.pathname === '/sse') {
        const id = randomUUID();
        streams.set(id, res);
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.write(`event: endpoint\ndata: /message?sessionId=${id}\n\n`);
        res.once('close', () => streams.delete(id));
        return;
      }
      const stream = streams.get(url.searchParams.get('sessionId') ?? '');
      if (req.method !== 'POST' || !stream) return void res.writeHead(404).end();
      const reply = answer(await read(req, record), options);
      res.writeHead(202).end();
      if (reply) stream.write(`event: message\ndata: ${JSON.stringify(reply)}\n\n`);
    })().catch(() => res.writeHead(500).end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const origin = `http://127.0.0.1:${port}`;
  return {
    url: `${origin}${transport === 'sse' ? '/sse' : '/mcp'}`,
    origin,
    requests,
    async stop() {
      for (const stream of streams.values()) stream.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
