/**
 * The fuzz tests' upstream: a tiny MCP server that answers at once and checks every message the
 * gateway sends it against JSON-RPC 2.0 as strictly as the MCP SDK does (its schemas are strict
 * objects: no member beyond those of the kind, integer error codes). Each violation is appended,
 * as one JSON line, to the file named on the command line, which the test reads.
 *
 *   node strict-upstream.mjs http  VIOLATIONS_FILE [RECEIVED_FILE]   streamable HTTP on 127.0.0.1; sends {port} over IPC
 *   node strict-upstream.mjs stdio VIOLATIONS_FILE [RECEIVED_FILE]   newline-delimited JSON-RPC on stdin/stdout
 *
 * With RECEIVED_FILE, every message received is appended to it too, one JSON line each.
 *
 * It offers the tools "echo", "admin_reset" and "slow" (answers after `arguments.ms`); every other
 * method is answered with an empty result.
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';

const [mode, violationsFile, receivedFile] = process.argv.slice(2);
if ((mode !== 'http' && mode !== 'stdio') || !violationsFile) {
  process.stderr.write('usage: strict-upstream.mjs http|stdio VIOLATIONS_FILE\n');
  process.exit(2);
}

const TOOLS = ['echo', 'admin_reset', 'slow'].map((name) => ({ name, description: name, inputSchema: { type: 'object' } }));

function isObject(v) {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isId(v) {
  return typeof v === 'string' || Number.isSafeInteger(v);
}

function onlyKeys(value, allowed) {
  const extra = Object.keys(value).filter((k) => !allowed.includes(k));
  return extra.length === 0 ? undefined : `unexpected member(s) ${extra.join(', ')}`;
}

/** Why a decoded value is not a JSON-RPC 2.0 request, notification or response; undefined when it is one. */
function violation(m) {
  if (!isObject(m)) return 'not an object';
  if (m.jsonrpc !== '2.0') return 'jsonrpc is not "2.0"';
  if ('method' in m) {
    if (typeof m.method !== 'string' || m.method === '') return 'method is not a non-empty string';
    if ('params' in m && !isObject(m.params)) return 'params is not an object';
    if ('id' in m && !isId(m.id)) return 'id is not a string or an integer';
    return onlyKeys(m, ['jsonrpc', 'id', 'method', 'params']);
  }
  if (!('id' in m)) return 'neither a method nor an id';
  if ('result' in m === 'error' in m) return 'a response needs exactly one of result and error';
  if ('result' in m) {
    if (!isId(m.id)) return 'id is not a string or an integer';
    if (!isObject(m.result)) return 'result is not an object';
    return onlyKeys(m, ['jsonrpc', 'id', 'result']);
  }
  if (!(isId(m.id) || m.id === null)) return 'id is not a string, an integer or null';
  const e = m.error;
  if (!isObject(e) || !Number.isSafeInteger(e.code) || typeof e.message !== 'string') return 'error is not {code: integer, message: string}';
  return onlyKeys(e, ['code', 'message', 'data']) ?? onlyKeys(m, ['jsonrpc', 'id', 'error']);
}

function record(reason, text) {
  appendFileSync(violationsFile, `${JSON.stringify({ reason, text: text.slice(0, 2000) })}\n`);
}

/** The messages of a body or line, each checked; undefined (and recorded) when the text is no JSON-RPC at all. */
function decode(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    record('not JSON', text);
    return undefined;
  }
  const items = Array.isArray(value) ? value : [value];
  if (receivedFile) for (const item of items) appendFileSync(receivedFile, `${JSON.stringify(item)}\n`);
  if (items.length === 0) record('empty batch', text);
  for (const item of items) {
    const reason = violation(item);
    if (reason) record(reason, JSON.stringify(item));
  }
  return { items: items.filter((item) => violation(item) === undefined), batch: Array.isArray(value) };
}

function result(message) {
  switch (message.method) {
    case 'initialize':
      return {
        protocolVersion: message.params?.protocolVersion ?? '2025-06-18',
        capabilities: { tools: {} },
        serverInfo: { name: 'strict-upstream', version: '1.0.0' },
      };
    case 'tools/list':
      return { tools: TOOLS };
    case 'tools/call':
      return { content: [{ type: 'text', text: JSON.stringify(message.params?.arguments ?? {}).slice(0, 200) }] };
    default:
      return {};
  }
}

/** How long to wait before answering: the "slow" tool's `arguments.ms`, else not at all. */
function delayOf(items) {
  const slow = items.find((m) => m.method === 'tools/call' && m.params?.name === 'slow');
  const ms = Number(slow?.params?.arguments?.ms ?? 0);
  return Number.isFinite(ms) && ms > 0 ? Math.min(ms, 60_000) : 0;
}

/** The answers to the requests among the messages (notifications and responses get none). */
function answers(items) {
  return items.filter((m) => 'method' in m && 'id' in m).map((m) => ({ jsonrpc: '2.0', id: m.id, result: result(m) }));
}

/** Calls send() with the answers, after the "slow" tool's delay when there is one. */
function answerLater(items, send) {
  const ms = delayOf(items);
  if (ms === 0) send(answers(items));
  else setTimeout(() => send(answers(items)), ms);
}

if (mode === 'stdio') {
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (line.trim() === '') return;
    const decoded = decode(line);
    if (!decoded) return;
    answerLater(decoded.items, (replies) => {
      for (const answer of replies) process.stdout.write(`${JSON.stringify(answer)}\n`);
    });
  });
  lines.on('close', () => process.exit(0));
} else {
  const server = createServer((req, res) => {
    if (req.method === 'DELETE') return void res.writeHead(200).end();
    if (req.method !== 'POST') return void res.writeHead(405).end();
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const decoded = decode(text);
      if (!decoded) return void res.writeHead(400).end();
      answerLater(decoded.items, (replies) => {
        if (replies.length === 0) return void res.writeHead(202).end();
        const headers = { 'content-type': 'application/json' };
        if (decoded.items.some((m) => m.method === 'initialize')) headers['mcp-session-id'] = randomUUID();
        res.writeHead(200, headers).end(JSON.stringify(decoded.batch ? replies : replies[0]));
      });
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => process.send?.({ port: server.address().port }));
  process.on('disconnect', () => process.exit(0));
}
