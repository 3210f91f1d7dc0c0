/**
 * A dual-era MCP server over streamable HTTP, for the newer conformance runner (next.test.ts):
 * legacy traffic (sessions, initialize, GET streams, server-to-client requests) is served by
 * everything-fixture.mjs, which this process starts as its backend and relays to as it is; 2026-07-28
 * traffic (a request whose `_meta` or `MCP-Protocol-Version` names that revision) is served here,
 * one request at a time, as the conformance suite's own reference server serves it:
 *
 * - `server/discover` says 2026-07-28, so a gateway that probes it takes it for a modern server;
 * - `tools/call`, `tools/list`, `resources/*`, `prompts/*`, `completion/complete` go to the backend
 *   on a fresh session of their own whose client declares no capability: on this path a tool cannot
 *   ask the client anything (test_sampling and the elicitation tools say the client does not
 *   support it), exactly as the reference server's stateless path cannot;
 * - answers are framed as that server frames them: `subscriptions/listen` is an `application/json`
 *   body without Content-Length that stays open, one JSON message per line (the acknowledgement
 *   first, then `notifications/tools/list_changed` / `prompts/list_changed` when the tools
 *   test_trigger_tool_change / test_trigger_prompt_change are called); test_streaming_elicitation
 *   answers a progress notification and its result as two lines of one `application/json` body.
 *
 * That is what issue 17's two bugs need: (a) a legacy client's sampling and elicitation work
 * directly (the legacy path) and must through a gateway too; (b) line-delimited JSON answers and
 * listen streams must reach a client through a gateway, never a silence.
 *
 *   node dual-era-fixture.mjs [PORT] [MARKER...]
 *
 * PORT 0 (default): the kernel's choice. Listens on 127.0.0.1 only and prints one line,
 * `dual-era-fixture listening on <url>`, to stderr once it accepts connections. Further arguments
 * are passed to the backend, so that a test's marker finds both processes with ps. SIGTERM or
 * SIGINT ends the backend, then this process.
 */
import { spawn } from 'node:child_process';
import { createServer, request as httpRequest } from 'node:http';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ResultSchema } from '@modelcontextprotocol/sdk/types.js';

const MODERN = '2026-07-28';
const LEGACY_VERSIONS = ['2024-11-05', '2025-03-26', '2025-06-18', '2025-11-25'];
const META = {
  protocolVersion: 'io.modelcontextprotocol/protocolVersion',
  clientCapabilities: 'io.modelcontextprotocol/clientCapabilities',
  subscriptionId: 'io.modelcontextprotocol/subscriptionId',
};
/** What the backend serves for a 2026-07-28 request; each on a session of its own. */
const RELAYED = [
  'tools/list',
  'tools/call',
  'resources/list',
  'resources/read',
  'resources/templates/list',
  'prompts/list',
  'prompts/get',
  'completion/complete',
];
/** Results that must carry the 2026-07-28 caching hints (nothing here may be cached). */
const CACHEABLE = ['server/discover', 'tools/list', 'prompts/list', 'resources/list', 'resources/templates/list', 'resources/read'];
/** The tools only the 2026-07-28 path has (listed after the backend's own). */
const MODERN_TOOLS = [
  { name: 'test_trigger_tool_change', description: 'Announces a tools list change on the listen streams that asked for it', inputSchema: { type: 'object' } },
  {
    name: 'test_trigger_prompt_change',
    description: 'Announces a prompts list change on the listen streams that asked for it',
    inputSchema: { type: 'object' },
  },
  { name: 'test_streaming_elicitation', description: 'Answers a progress notification and its result as two lines of JSON', inputSchema: { type: 'object' } },
];

const [portArg = '0', ...markers] = process.argv.slice(2);
if (!/^\d+$/.test(portArg)) {
  process.stderr.write('usage: dual-era-fixture.mjs [PORT] [MARKER...]\n');
  process.exit(2);
}

/* The legacy backend. */

const backend = spawn(process.execPath, [new URL('./everything-fixture.mjs', import.meta.url).pathname, 'http', '0', ...markers], {
  stdio: ['ignore', 'ignore', 'pipe'],
});
const backendUrl = await new Promise((resolve, reject) => {
  let text = '';
  const onData = (chunk) => {
    text += chunk.toString('utf8');
    const url = /listening on (\S+)/.exec(text)?.[1];
    if (url) {
      backend.stderr.off('data', onData);
      backend.stderr.resume();
      resolve(new URL(url));
    }
  };
  backend.stderr.on('data', onData);
  backend.once('exit', (code) => reject(new Error(`the backend exited (${code}) before it listened:\n${text}`)));
});
backend.once('exit', () => process.exit(1));

function stop() {
  backend.removeAllListeners('exit');
  backend.once('exit', () => process.exit(0));
  backend.kill('SIGTERM');
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

/** Relays one legacy HTTP exchange to the backend as it is, streams included. */
function relay(req, res, body) {
  const headers = { ...req.headers, host: backendUrl.host };
  delete headers['content-length'];
  if (body.length > 0) headers['content-length'] = String(body.length);
  const out = httpRequest({ host: backendUrl.hostname, port: backendUrl.port, method: req.method, path: backendUrl.pathname, headers }, (answer) => {
    res.writeHead(answer.statusCode ?? 502, answer.headers);
    // Sent now, as the backend sent them (writeHead alone holds them until the first write): a
    // GET stream's headers say it is connected before any event comes, as with the SDK's servers.
    res.flushHeaders();
    answer.pipe(res);
  });
  out.on('error', () => {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  });
  // The client going away (a GET stream closed) ends the exchange with the backend too.
  res.on('close', () => out.destroy());
  out.end(body);
}

/* The 2026-07-28 path. */

/** Open listen streams: each gets the list changes it asked for, marked with its id. */
const listens = new Set();

function notifyListens(kind) {
  for (const listen of listens) {
    if (!listen.wants[kind]) continue;
    const method = kind === 'tools' ? 'notifications/tools/list_changed' : 'notifications/prompts/list_changed';
    listen.res.write(`${JSON.stringify({ jsonrpc: '2.0', method, params: { _meta: { [META.subscriptionId]: listen.id } } })}\n`);
  }
}

function json(res, status, payload) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(payload));
}

function answer(res, id, method, result) {
  result.resultType ??= 'complete';
  if (CACHEABLE.includes(method)) {
    result.ttlMs ??= 0;
    result.cacheScope ??= 'private';
  }
  json(res, 200, { jsonrpc: '2.0', id, result });
}

function refuse(res, status, id, code, message, data) {
  json(res, status, { jsonrpc: '2.0', id, error: data === undefined ? { code, message } : { code, message, data } });
}

/** One request of a 2026-07-28 client to the backend, on a session whose client declares nothing. */
async function viaBackend(method, params) {
  const client = new Client({ name: 'dual-era-fixture', version: '1.0.0' }, { capabilities: {} });
  await client.connect(new StreamableHTTPClientTransport(backendUrl));
  try {
    const rest = { ...params };
    delete rest._meta;
    return await client.request({ method, params: rest }, ResultSchema);
  } finally {
    await client.close().catch(() => undefined);
  }
}

async function serveModern(req, res, message) {
  const id = message.id ?? null;
  const params = message.params ?? {};
  const meta = params._meta;
  const header = req.headers['mcp-protocol-version'];
  if (header === undefined) return refuse(res, 400, id, -32020, 'Missing MCP-Protocol-Version header');
  if (!meta?.[META.protocolVersion] || !meta[META.clientCapabilities]) return refuse(res, 400, id, -32602, 'Invalid params: missing _meta or required fields');
  if (header !== meta[META.protocolVersion]) return refuse(res, 400, id, -32020, 'Mismatched MCP-Protocol-Version header');
  if (header !== MODERN) return refuse(res, 400, id, -32022, 'Unsupported protocol version', { supported: [MODERN], requested: String(header) });
  if (message.id === undefined) {
    res.writeHead(202);
    return res.end();
  }
  const method = message.method;

  if (method === 'server/discover') {
    return answer(res, id, method, {
      supportedVersions: [MODERN],
      capabilities: { tools: { listChanged: true }, prompts: { listChanged: true }, resources: {}, completions: {} },
      serverInfo: { name: 'dual-era-fixture', version: '1.0.0' },
      _meta: { 'io.modelcontextprotocol/serverInfo': { name: 'dual-era-fixture', version: '1.0.0' } },
    });
  }

  if (method === 'subscriptions/listen') {
    const asked = params.notifications ?? {};
    const wants = { tools: asked.toolsListChanged === true, prompts: asked.promptsListChanged === true };
    const listen = { res, id: String(id), wants };
    // As the reference server frames it: JSON lines in an application/json body that stays open.
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-cache' });
    const honoured = { ...(wants.tools ? { toolsListChanged: true } : {}), ...(wants.prompts ? { promptsListChanged: true } : {}) };
    res.write(
      `${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/subscriptions/acknowledged', params: { _meta: { [META.subscriptionId]: listen.id }, notifications: honoured } })}\n`,
    );
    listens.add(listen);
    res.on('close', () => listens.delete(listen));
    return;
  }

  if (method === 'tools/call' && (params.name === 'test_trigger_tool_change' || params.name === 'test_trigger_prompt_change')) {
    notifyListens(params.name === 'test_trigger_tool_change' ? 'tools' : 'prompts');
    return answer(res, id, method, { content: [{ type: 'text', text: 'Announced' }] });
  }

  if (method === 'tools/call' && params.name === 'test_streaming_elicitation') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write(`${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: 'streaming', progress: 50, total: 100 } })}\n`);
    return res.end(`${JSON.stringify({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: 'Streamed' }], resultType: 'complete' } })}\n`);
  }

  if (RELAYED.includes(method)) {
    try {
      const result = await viaBackend(method, params);
      if (method === 'tools/list') result.tools = [...result.tools, ...MODERN_TOOLS];
      return answer(res, id, method, result);
    } catch (error) {
      const data = error.data ?? (method === 'resources/read' ? { uri: params.uri } : undefined);
      return refuse(res, 200, id, typeof error.code === 'number' ? error.code : -32603, error.message, data);
    }
  }

  // initialize, ping, logging/setLevel, resources/subscribe and anything unknown: not in 2026-07-28.
  return refuse(res, 404, id, -32601, 'Method not found');
}

/** Whether a POST is 2026-07-28 traffic: the reference server's rule (basic/versioning, dual-era servers). */
function isModern(req, message) {
  if (req.headers['mcp-session-id'] !== undefined) return false;
  const header = req.headers['mcp-protocol-version'];
  const meta = message?.params?._meta;
  if (meta === undefined && (header === undefined || LEGACY_VERSIONS.includes(header))) return false;
  return true;
}

const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    let message;
    if (req.method === 'POST') {
      try {
        message = JSON.parse(body.toString('utf8'));
      } catch {
        message = undefined;
      }
    }
    if (req.method === 'POST' && message !== null && typeof message === 'object' && !Array.isArray(message) && isModern(req, message)) {
      serveModern(req, res, message).catch((error) => {
        if (!res.headersSent) refuse(res, 500, message.id ?? null, -32603, String(error));
        else res.end();
      });
    } else {
      relay(req, res, body);
    }
  });
});
server.listen(Number(portArg), '127.0.0.1', () => {
  process.stderr.write(`dual-era-fixture listening on http://127.0.0.1:${server.address().port}/mcp\n`);
});
