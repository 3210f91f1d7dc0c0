/**
 * The server the official conformance suite (@modelcontextprotocol/conformance 0.1.13) expects to
 * test: every tool, resource and prompt its server scenarios name, with the texts, mime types and
 * argument names they check, built on the official v1 SDK. The conformance tests run the suite
 * against it directly and through the gateway over each upstream transport.
 *
 *   node everything-fixture.mjs stdio              newline-delimited JSON-RPC on stdin/stdout
 *   node everything-fixture.mjs http [PORT]        streamable HTTP at http://127.0.0.1:PORT/mcp, sessionful
 *   node everything-fixture.mjs sse  [PORT]        legacy HTTP+SSE: GET /sse, POST /messages?sessionId=...
 *
 * PORT defaults to 0 (the kernel's choice). The HTTP modes listen on 127.0.0.1 only and print one
 * line, `everything-fixture listening on <url>`, to stderr once they accept connections. Further
 * arguments (any after `stdio`) are ignored: tests put a marker there, to find the process with ps.
 *
 * It uses the SDK's low-level `Server`, not `McpServer`: the scenarios check that raw JSON Schemas
 * ($schema, $defs, additionalProperties) reach tools/list untouched (SEP-1613), and McpServer only
 * takes zod schemas, which it converts.
 *
 * On purpose it does no Host/Origin check (the SDK's DNS rebinding protection is off by default):
 * the dns-rebinding-protection scenario fails against it directly and must pass through the
 * gateway, which checks both itself.
 */
import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer } from 'node:http';
import { deflateSync } from 'node:zlib';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { SSEServerTransport } from '@modelcontextprotocol/sdk/server/sse.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import {
  CallToolRequestSchema,
  CompleteRequestSchema,
  CreateMessageResultSchema,
  ElicitResultSchema,
  ErrorCode,
  GetPromptRequestSchema,
  isInitializeRequest,
  ListPromptsRequestSchema,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  McpError,
  ReadResourceRequestSchema,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
} from '@modelcontextprotocol/sdk/types.js';

const [mode = '', ...rest] = process.argv.slice(2);
const portArg = mode === 'stdio' ? '0' : (rest[0] ?? '0');
if (!['stdio', 'http', 'sse'].includes(mode) || !/^\d+$/.test(portArg)) {
  process.stderr.write('usage: everything-fixture.mjs stdio | http [PORT] | sse [PORT]\n');
  process.exit(2);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/* Media, made here rather than pasted in as opaque base64. */

/** A PNG image of one pixel of the given colour (8-bit RGB, no filter). */
function onePixelPng(red, green, blue) {
  const chunk = (type, data) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([length, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(1, 0); // width
  header.writeUInt32BE(1, 4); // height
  header.set([8, 2, 0, 0, 0], 8); // bit depth 8, colour type RGB, deflate, no filter method, no interlace
  const scanline = Buffer.from([0, red, green, blue]); // filter byte "none", then the pixel
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(scanline)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** CRC-32 (ISO 3309), as PNG chunks need. */
function crc32(bytes) {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** A WAV file: 10 ms of silence, mono 16-bit PCM at 8 kHz. */
function silentWav() {
  const samples = 80;
  const data = Buffer.alloc(samples * 2);
  const header = Buffer.alloc(44);
  header.write('RIFF', 0, 'latin1');
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVE', 8, 'latin1');
  header.write('fmt ', 12, 'latin1');
  header.writeUInt32LE(16, 16); // fmt chunk size
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // channels
  header.writeUInt32LE(8000, 24); // sample rate
  header.writeUInt32LE(8000 * 2, 28); // byte rate
  header.writeUInt16LE(2, 32); // block align
  header.writeUInt16LE(16, 34); // bits per sample
  header.write('data', 36, 'latin1');
  header.writeUInt32LE(data.length, 40);
  return Buffer.concat([header, data]);
}

const PNG = onePixelPng(255, 0, 0).toString('base64');
const WAV = silentWav().toString('base64');

/* What the server offers. */

const NO_ARGUMENTS = { type: 'object', properties: {} };

const TOOLS = [
  { name: 'test_simple_text', description: 'Returns one text block', inputSchema: NO_ARGUMENTS },
  { name: 'test_image_content', description: 'Returns one PNG image block', inputSchema: NO_ARGUMENTS },
  { name: 'test_audio_content', description: 'Returns one WAV audio block', inputSchema: NO_ARGUMENTS },
  { name: 'test_embedded_resource', description: 'Returns an embedded text resource', inputSchema: NO_ARGUMENTS },
  { name: 'test_multiple_content_types', description: 'Returns a text, an image and an embedded resource', inputSchema: NO_ARGUMENTS },
  { name: 'test_tool_with_logging', description: 'Sends three info log messages while it runs', inputSchema: NO_ARGUMENTS },
  { name: 'test_tool_with_progress', description: 'Reports progress 0, 50 and 100 of 100 while it runs', inputSchema: NO_ARGUMENTS },
  { name: 'test_error_handling', description: 'Always fails, with isError: true', inputSchema: NO_ARGUMENTS },
  {
    name: 'test_sampling',
    description: 'Asks the client to sample an LLM with the given prompt',
    inputSchema: { type: 'object', properties: { prompt: { type: 'string', description: 'The prompt for the LLM' } }, required: ['prompt'] },
  },
  {
    name: 'test_elicitation',
    description: 'Asks the user, through the client, for a username and an email address',
    inputSchema: { type: 'object', properties: { message: { type: 'string', description: 'The message shown to the user' } }, required: ['message'] },
  },
  { name: 'test_elicitation_sep1034_defaults', description: 'Elicits a form whose fields all have defaults (SEP-1034)', inputSchema: NO_ARGUMENTS },
  { name: 'test_elicitation_sep1330_enums', description: 'Elicits a form with every enum variant (SEP-1330)', inputSchema: NO_ARGUMENTS },
  {
    name: 'json_schema_2020_12_tool',
    description: 'A tool whose input schema uses JSON Schema 2020-12 keywords (SEP-1613)',
    inputSchema: {
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      type: 'object',
      $defs: {
        address: { type: 'object', properties: { street: { type: 'string' }, city: { type: 'string' } } },
      },
      properties: { name: { type: 'string' }, address: { $ref: '#/$defs/address' } },
      additionalProperties: false,
    },
  },
  {
    name: 'test_reconnection',
    description: 'Closes its SSE stream before answering, when the transport allows it (SEP-1699 polling)',
    inputSchema: NO_ARGUMENTS,
  },
];

const STATIC_TEXT = 'This is the content of the static text resource.';
const WATCHED_TEXT = 'The watched resource, as it is now.';

const RESOURCES = [
  { uri: 'test://static-text', name: 'static-text', description: 'A fixed text resource', mimeType: 'text/plain' },
  { uri: 'test://static-binary', name: 'static-binary', description: 'A fixed PNG image', mimeType: 'image/png' },
  { uri: 'test://watched-resource', name: 'watched-resource', description: 'A resource clients may subscribe to', mimeType: 'text/plain' },
];

const TEMPLATE = /^test:\/\/template\/([^/]+)\/data$/;
const RESOURCE_TEMPLATES = [{ uriTemplate: 'test://template/{id}/data', name: 'template-data', description: 'Data for an id', mimeType: 'application/json' }];

const PROMPTS = [
  { name: 'test_simple_prompt', description: 'A prompt without arguments' },
  {
    name: 'test_prompt_with_arguments',
    description: 'A prompt that quotes its two arguments',
    arguments: [
      { name: 'arg1', description: 'First argument', required: true },
      { name: 'arg2', description: 'Second argument', required: true },
    ],
  },
  {
    name: 'test_prompt_with_embedded_resource',
    description: 'A prompt that embeds the resource it is given',
    arguments: [{ name: 'resourceUri', description: 'URI of the resource to embed', required: true }],
  },
  { name: 'test_prompt_with_image', description: 'A prompt with an image' },
];

/** Completion candidates of each prompt argument and template variable. */
const COMPLETIONS = {
  'ref/prompt:test_prompt_with_arguments:arg1': ['paris', 'park', 'party', 'test', 'testing'],
  'ref/prompt:test_prompt_with_arguments:arg2': ['world', 'word', 'work'],
  'ref/resource:test://template/{id}/data:id': ['1', '2', '3', '123'],
};

const text = (value) => ({ type: 'text', text: value });

/** A tool's failure, reported in its result (the spec's tool errors), not as a protocol error. */
const toolError = (message) => ({ isError: true, content: [text(message)] });

function stringArgument(args, name) {
  const value = args?.[name];
  if (typeof value !== 'string') throw new McpError(ErrorCode.InvalidParams, `argument "${name}" must be a string`);
  return value;
}

/** One MCP server: the SDK binds a Server to one transport, so each session gets its own. */
function newServer() {
  const server = new Server(
    { name: 'mcp-guard-conformance-fixture', version: '1.0.0' },
    { capabilities: { tools: {}, resources: { subscribe: true }, prompts: {}, logging: {}, completions: {} } },
  );
  const subscriptions = new Set();

  /** A log message that belongs to the request in `extra`, unless the session's level hides it. */
  const log = async (extra, level, data) => {
    if (server.isMessageIgnored(level, extra.sessionId)) return;
    await extra.sendNotification({ method: 'notifications/message', params: { level, logger: 'everything-fixture', data } });
  };

  /** Asks the client for input; a client without the capability gets an error result instead. */
  const elicit = async (extra, message, requestedSchema) => {
    if (!server.getClientCapabilities()?.elicitation) return undefined;
    return extra.sendRequest({ method: 'elicitation/create', params: { message, requestedSchema } }, ElicitResultSchema);
  };

  const tools = {
    test_simple_text: async () => ({ content: [text('This is a simple text response for testing.')] }),
    test_image_content: async () => ({ content: [{ type: 'image', data: PNG, mimeType: 'image/png' }] }),
    test_audio_content: async () => ({ content: [{ type: 'audio', data: WAV, mimeType: 'audio/wav' }] }),
    test_embedded_resource: async () => ({
      content: [{ type: 'resource', resource: { uri: 'test://embedded-resource', mimeType: 'text/plain', text: 'This is an embedded resource content.' } }],
    }),
    test_multiple_content_types: async () => ({
      content: [
        text('Multiple content types test:'),
        { type: 'image', data: PNG, mimeType: 'image/png' },
        {
          type: 'resource',
          resource: { uri: 'test://mixed-content-resource', mimeType: 'application/json', text: JSON.stringify({ test: 'data', value: 123 }) },
        },
      ],
    }),
    test_tool_with_logging: async (_args, extra) => {
      await log(extra, 'info', 'Tool execution started');
      await sleep(50);
      await log(extra, 'info', 'Tool processing data');
      await sleep(50);
      await log(extra, 'info', 'Tool execution completed');
      return { content: [text('Tool with logging executed successfully')] };
    },
    test_tool_with_progress: async (_args, extra) => {
      const progressToken = extra._meta?.progressToken;
      for (const progress of [0, 50, 100]) {
        if (progress > 0) await sleep(50);
        if (progressToken !== undefined) {
          await extra.sendNotification({ method: 'notifications/progress', params: { progressToken, progress, total: 100, message: `${progress}% done` } });
        }
      }
      return { content: [text('Tool with progress executed successfully')] };
    },
    test_error_handling: async () => toolError('This tool intentionally returns an error for testing'),
    test_sampling: async (args, extra) => {
      const prompt = stringArgument(args, 'prompt');
      if (!server.getClientCapabilities()?.sampling) return toolError('The client does not support sampling');
      const result = await extra.sendRequest(
        { method: 'sampling/createMessage', params: { messages: [{ role: 'user', content: text(prompt) }], maxTokens: 100 } },
        CreateMessageResultSchema,
      );
      const answer = result.content?.type === 'text' ? result.content.text : JSON.stringify(result.content);
      return { content: [text(`LLM response: ${answer}`)] };
    },
    test_elicitation: async (args, extra) => {
      const message = stringArgument(args, 'message');
      const result = await elicit(extra, message, {
        type: 'object',
        properties: {
          username: { type: 'string', description: "User's response" },
          email: { type: 'string', description: "User's email address" },
        },
        required: ['username', 'email'],
      });
      if (!result) return toolError('The client does not support elicitation');
      return { content: [text(`User response: action=${result.action}, content=${JSON.stringify(result.content ?? {})}`)] };
    },
    test_elicitation_sep1034_defaults: async (_args, extra) => {
      const result = await elicit(extra, 'Please check these values; each has a default', {
        type: 'object',
        properties: {
          name: { type: 'string', description: 'User name', default: 'John Doe' },
          age: { type: 'integer', description: 'User age', default: 30 },
          score: { type: 'number', description: 'User score', default: 95.5 },
          status: { type: 'string', description: 'User status', enum: ['active', 'inactive', 'pending'], default: 'active' },
          verified: { type: 'boolean', description: 'Verification status', default: true },
        },
        required: [],
      });
      if (!result) return toolError('The client does not support elicitation');
      return { content: [text(`Elicitation completed: action=${result.action}, content=${JSON.stringify(result.content ?? {})}`)] };
    },
    test_elicitation_sep1330_enums: async (_args, extra) => {
      const result = await elicit(extra, 'Please pick from each list', {
        type: 'object',
        properties: {
          untitledSingle: { type: 'string', description: 'An enum without titles', enum: ['option1', 'option2', 'option3'] },
          titledSingle: {
            type: 'string',
            description: 'An enum with titles',
            oneOf: [
              { const: 'value1', title: 'First Option' },
              { const: 'value2', title: 'Second Option' },
              { const: 'value3', title: 'Third Option' },
            ],
          },
          legacyEnum: {
            type: 'string',
            description: 'An enum with titles, the deprecated way',
            enum: ['opt1', 'opt2', 'opt3'],
            enumNames: ['Option One', 'Option Two', 'Option Three'],
          },
          untitledMulti: {
            type: 'array',
            description: 'Several choices without titles',
            items: { type: 'string', enum: ['option1', 'option2', 'option3'] },
          },
          titledMulti: {
            type: 'array',
            description: 'Several choices with titles',
            items: {
              anyOf: [
                { const: 'value1', title: 'First Choice' },
                { const: 'value2', title: 'Second Choice' },
                { const: 'value3', title: 'Third Choice' },
              ],
            },
          },
        },
        required: [],
      });
      if (!result) return toolError('The client does not support elicitation');
      return { content: [text(`Elicitation completed: action=${result.action}, content=${JSON.stringify(result.content ?? {})}`)] };
    },
    json_schema_2020_12_tool: async (args) => ({ content: [text(`Received: ${JSON.stringify(args ?? {})}`)] }),
    test_reconnection: async (_args, extra) => {
      // The streamable HTTP transport offers closeSSEStream only with an event store and to a
      // client of protocol 2025-11-25 or later (one that can resume); the answer is then replayed
      // on the client's GET with Last-Event-ID. Elsewhere the answer simply comes on the stream.
      const closed = extra.closeSSEStream !== undefined;
      extra.closeSSEStream?.();
      await sleep(100);
      return { content: [text(`Reconnection test completed successfully (stream closed first: ${closed})`)] };
    },
  };

  server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: TOOLS }));
  server.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
    const tool = tools[request.params.name];
    if (!tool) throw new McpError(ErrorCode.InvalidParams, `Unknown tool: ${request.params.name}`);
    return tool(request.params.arguments, extra);
  });

  server.setRequestHandler(ListResourcesRequestSchema, async () => ({ resources: RESOURCES }));
  server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({ resourceTemplates: RESOURCE_TEMPLATES }));
  server.setRequestHandler(ReadResourceRequestSchema, async (request) => {
    const { uri } = request.params;
    if (uri === 'test://static-text') return { contents: [{ uri, mimeType: 'text/plain', text: STATIC_TEXT }] };
    if (uri === 'test://static-binary') return { contents: [{ uri, mimeType: 'image/png', blob: PNG }] };
    if (uri === 'test://watched-resource') return { contents: [{ uri, mimeType: 'text/plain', text: WATCHED_TEXT }] };
    const match = TEMPLATE.exec(uri);
    if (match) {
      const id = decodeURIComponent(match[1]);
      return { contents: [{ uri, mimeType: 'application/json', text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }) }] };
    }
    throw new McpError(-32002, `Resource not found: ${uri}`, { uri });
  });
  server.setRequestHandler(SubscribeRequestSchema, async (request) => {
    subscriptions.add(request.params.uri);
    return {};
  });
  server.setRequestHandler(UnsubscribeRequestSchema, async (request) => {
    subscriptions.delete(request.params.uri);
    return {};
  });

  server.setRequestHandler(ListPromptsRequestSchema, async () => ({ prompts: PROMPTS }));
  server.setRequestHandler(GetPromptRequestSchema, async (request) => {
    const { name, arguments: args } = request.params;
    switch (name) {
      case 'test_simple_prompt':
        return { messages: [{ role: 'user', content: text('This is a simple prompt for testing.') }] };
      case 'test_prompt_with_arguments': {
        const arg1 = stringArgument(args, 'arg1');
        const arg2 = stringArgument(args, 'arg2');
        return { messages: [{ role: 'user', content: text(`Prompt with arguments: arg1='${arg1}', arg2='${arg2}'`) }] };
      }
      case 'test_prompt_with_embedded_resource': {
        const uri = stringArgument(args, 'resourceUri');
        return {
          messages: [
            { role: 'user', content: { type: 'resource', resource: { uri, mimeType: 'text/plain', text: 'Embedded resource content for testing.' } } },
            { role: 'user', content: text('Please process the embedded resource above.') },
          ],
        };
      }
      case 'test_prompt_with_image':
        return {
          messages: [
            { role: 'user', content: { type: 'image', data: PNG, mimeType: 'image/png' } },
            { role: 'user', content: text('Please analyze the image above.') },
          ],
        };
      default:
        throw new McpError(ErrorCode.InvalidParams, `Unknown prompt: ${name}`);
    }
  });

  server.setRequestHandler(CompleteRequestSchema, async (request) => {
    const { ref, argument } = request.params;
    const key = `${ref.type}:${ref.type === 'ref/prompt' ? ref.name : ref.uri}:${argument.name}`;
    const values = (COMPLETIONS[key] ?? []).filter((value) => value.startsWith(argument.value));
    return { completion: { values, total: values.length, hasMore: false } };
  });

  return server;
}

/* Transports. */

/** Events kept for resumption (SEP-1699), per stream; a fixture's sessions are short. */
class MemoryEventStore {
  #events = [];
  #next = 0;

  async storeEvent(streamId, message) {
    const eventId = `${streamId}.${++this.#next}`;
    this.#events.push({ eventId, streamId, seq: this.#next, message });
    return eventId;
  }

  async getStreamIdForEventId(eventId) {
    return this.#events.find((e) => e.eventId === eventId)?.streamId;
  }

  async replayEventsAfter(lastEventId, { send }) {
    const last = this.#events.find((e) => e.eventId === lastEventId);
    if (!last) throw new Error(`unknown event id ${lastEventId}`);
    for (const event of this.#events) {
      // Priming events carry no message ({}): nothing to replay.
      if (event.streamId === last.streamId && event.seq > last.seq && 'jsonrpc' in event.message) await send(event.eventId, event.message);
    }
    return last.streamId;
  }
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJsonError(res, status, code, message) {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code, message } }));
}

/** The body of a POST as JSON, or undefined after answering 400. */
async function jsonBody(req, res) {
  try {
    return JSON.parse(await readBody(req));
  } catch {
    sendJsonError(res, 400, ErrorCode.ParseError, 'Parse error');
    return undefined;
  }
}

/** Streamable HTTP with sessions: initialize opens one, every other request names it. */
function streamableHttp() {
  const sessions = new Map();
  return async (req, res, path) => {
    if (path !== '/mcp') return sendJsonError(res, 404, ErrorCode.InvalidRequest, 'Not found: the endpoint is /mcp');
    const body = req.method === 'POST' ? await jsonBody(req, res) : undefined;
    if (req.method === 'POST' && body === undefined) return undefined;
    const sessionId = req.headers['mcp-session-id'];
    if (sessionId === undefined) {
      if (req.method !== 'POST' || !isInitializeRequest(body))
        return sendJsonError(res, 400, ErrorCode.InvalidRequest, 'Bad Request: Mcp-Session-Id header is required');
      const transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: randomUUID,
        eventStore: new MemoryEventStore(),
        retryInterval: 500,
        onsessioninitialized: (id) => sessions.set(id, transport),
      });
      transport.onclose = () => {
        if (transport.sessionId !== undefined) sessions.delete(transport.sessionId);
      };
      await newServer().connect(transport);
      return transport.handleRequest(req, res, body);
    }
    const transport = sessions.get(sessionId);
    if (!transport) return sendJsonError(res, 404, -32001, 'Session not found');
    return transport.handleRequest(req, res, body);
  };
}

/** Legacy HTTP+SSE (protocol 2024-11-05): a GET stream per session, its messages POSTed beside it. */
function legacySse() {
  const sessions = new Map();
  return async (req, res, path, query) => {
    if (req.method === 'GET' && path === '/sse') {
      const transport = new SSEServerTransport('/messages', res);
      sessions.set(transport.sessionId, transport);
      transport.onclose = () => sessions.delete(transport.sessionId);
      await newServer().connect(transport);
      return undefined;
    }
    if (req.method === 'POST' && path === '/messages') {
      const transport = sessions.get(query.get('sessionId') ?? '');
      if (!transport) return sendJsonError(res, 404, -32001, 'Session not found');
      const body = await jsonBody(req, res);
      if (body === undefined) return undefined;
      return transport.handlePostMessage(req, res, body);
    }
    return sendJsonError(res, 404, ErrorCode.InvalidRequest, 'Not found: GET /sse, then POST /messages');
  };
}

if (mode === 'stdio') {
  await newServer().connect(new StdioServerTransport());
  // The SDK's stdio transport does not end the process when its input ends; a fixture should.
  process.stdin.once('end', () => process.exit(0));
} else {
  const handle = mode === 'http' ? streamableHttp() : legacySse();
  const httpServer = createHttpServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    handle(req, res, url.pathname, url.searchParams).catch((err) => {
      process.stderr.write(`everything-fixture: ${err?.stack ?? err}\n`);
      if (!res.headersSent) sendJsonError(res, 500, ErrorCode.InternalError, 'Internal error');
      else res.destroy();
    });
  });
  httpServer.listen(Number(portArg), '127.0.0.1', () => {
    const { port } = httpServer.address();
    process.stderr.write(`everything-fixture listening on http://127.0.0.1:${port}${mode === 'http' ? '/mcp' : '/sse'}\n`);
  });
  const stop = () => {
    httpServer.closeAllConnections();
    httpServer.close(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
