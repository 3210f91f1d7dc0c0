/**
 * A small closed-loop MCP load generator for streamable HTTP endpoints, for benchmarks where every
 * client must hold its own MCP session (autocannon cannot carry a per-connection Mcp-Session-Id).
 *
 * A session is one MCP client on its own keep-alive connection (one undici Client each):
 * POST initialize, POST notifications/initialized, then tools/call after tools/call, each sent as
 * soon as the previous answer arrived (closed loop), each with a JSON-RPC id unique in the whole
 * process. Answers may be JSON or SSE (text/event-stream): a request counts as done only when the
 * JSON-RPC response with its id has arrived, and that response is checked: it must be a result
 * (not an error) echoing the request's own arguments, so a proxy that mixes up replies between
 * sessions fails as loudly as one that returns errors. Only requests that complete inside the
 * measured window count towards req/s and the latency percentiles.
 *
 *   const sessions = await openSessions(url, 10);
 *   const r = await closedLoop(sessions, { durationSecs: 3 });  // { rps, p50, p99, requests }
 *   await closeSessions(sessions);
 *
 * `statelessLoop` drives requests that need no session (a 2026-07-28 request carries its whole
 * context; a legacy one without Mcp-Session-Id goes through the gateway's own session) the same
 * way: `connections` clients in a closed loop, every request with its own id, every answer read
 * (JSON or SSE) and checked by the caller's `check`.
 */
import { Client } from 'undici';

export const PROTOCOL_VERSION = '2025-06-18';
const STEP_TIMEOUT_MS = 15_000;
const ACCEPT = 'application/json, text/event-stream';

let nextId = 1;

/**
 * Reads the JSON-RPC response with id `id` from an answer's body, JSON or SSE. Resolves with
 * { message, at } (at = performance.now() when the response arrived); the rest of an SSE stream is
 * drained before it resolves, so the connection is free again.
 */
async function readAnswer(statusCode, headers, body, id) {
  const type = String(headers['content-type'] ?? '');
  if (type.startsWith('text/event-stream')) {
    body.setEncoding('utf8');
    let buffer = '';
    let found;
    let at = 0;
    for await (const chunk of body) {
      if (found) continue; // drain the end of the stream
      buffer += chunk;
      let separator;
      while (!found && (separator = /\r?\n\r?\n/.exec(buffer)) !== null) {
        const event = buffer.slice(0, separator.index);
        buffer = buffer.slice(separator.index + separator[0].length);
        let data = '';
        for (const line of event.split(/\r?\n/)) {
          if (line.startsWith('data:')) data += (data ? '\n' : '') + line.slice(line[5] === ' ' ? 6 : 5);
        }
        if (!data) continue;
        const message = JSON.parse(data);
        if (message.id === id && ('result' in message || 'error' in message)) {
          found = message;
          at = performance.now();
        }
      }
    }
    if (!found) throw new Error(`HTTP ${statusCode}: SSE stream ended without the response to id ${id}`);
    return { message: found, at };
  }
  const text = await body.text();
  const at = performance.now();
  let message;
  try {
    message = JSON.parse(text);
  } catch {
    throw new Error(`HTTP ${statusCode} ${type}: not JSON: ${text.slice(0, 200)}`);
  }
  if (message?.id !== id) throw new Error(`HTTP ${statusCode}: answer is not the response to id ${id}: ${text.slice(0, 200)}`);
  return { message, at };
}

/**
 * One client's connection. It is closed after 1 s idle, well before any server's own keep-alive
 * timeout (Node's is 5 s): between rounds a client sits idle while the other proxies run, and a
 * request sent on a connection the server is closing at that moment fails with "other side
 * closed" (it failed whole runs at supergateway and mcp-proxy). Each round then starts on new
 * connections, for every proxy alike; inside a round a connection is never idle.
 */
function newClient(origin) {
  return new Client(origin, {
    pipelining: 1,
    keepAliveTimeout: 1_000,
    keepAliveMaxTimeout: 1_000,
    headersTimeout: STEP_TIMEOUT_MS,
    bodyTimeout: STEP_TIMEOUT_MS,
  });
}

/** Opens one MCP session: initialize (checked) and notifications/initialized (must be 2xx). */
async function openSession(url) {
  const { origin, pathname, search } = new URL(url);
  const path = pathname + search;
  const client = newClient(origin);
  try {
    const id = nextId++;
    const init = await client.request({
      path,
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id,
        method: 'initialize',
        params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'mcp-guard-bench', version: '1.0.0' } },
      }),
    });
    const { message } = await readAnswer(init.statusCode, init.headers, init.body, id);
    if (init.statusCode !== 200 || !message.result?.protocolVersion) {
      throw new Error(`${url}: initialize answered HTTP ${init.statusCode}: ${JSON.stringify(message).slice(0, 300)}`);
    }
    const sessionId = init.headers['mcp-session-id'];
    if (typeof sessionId !== 'string' || sessionId === '') throw new Error(`${url}: initialize answered without an Mcp-Session-Id`);
    const headers = {
      'content-type': 'application/json',
      accept: ACCEPT,
      'mcp-session-id': sessionId,
      'mcp-protocol-version': message.result.protocolVersion,
    };
    const initialized = await client.request({ path, method: 'POST', headers, body: '{"jsonrpc":"2.0","method":"notifications/initialized"}' });
    const text = await initialized.body.text();
    if (initialized.statusCode < 200 || initialized.statusCode > 299) {
      throw new Error(`${url}: notifications/initialized answered HTTP ${initialized.statusCode}: ${text.slice(0, 300)}`);
    }
    return { url, path, client, headers, sessionId };
  } catch (err) {
    await client.destroy();
    throw err;
  }
}

/** Opens `count` sessions on `url`, at most `concurrency` handshakes at once; all or an error. */
export async function openSessions(url, count, { concurrency = 10 } = {}) {
  const sessions = [];
  const errors = [];
  let started = 0;
  const worker = async () => {
    while (started < count) {
      started++;
      try {
        sessions.push(await openSession(url));
      } catch (err) {
        errors.push(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  if (errors.length > 0) {
    await closeSessions(sessions);
    throw new Error(`${url}: ${errors.length} of ${count} sessions failed to open; first: ${errors[0].message}`);
  }
  return sessions;
}

/** Ends the sessions (DELETE, as a well-behaved client does) and their connections. */
export async function closeSessions(sessions) {
  await Promise.all(
    sessions.map(async (s) => {
      try {
        const res = await s.client.request({
          path: s.path,
          method: 'DELETE',
          headers: { 'mcp-session-id': s.sessionId, 'mcp-protocol-version': s.headers['mcp-protocol-version'] },
        });
        await res.body.dump();
      } catch {
        // the session ends with its connection anyway
      }
      await s.client.close().catch(() => s.client.destroy());
    }),
  );
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/**
 * Keeps every session busy with tools/call (tool `tool`, arguments { n: <the request's id> }) for
 * `durationSecs`. Returns { rps, p50, p99 (ms), requests }. Throws if any answer was not the
 * expected result (with the first few problems in the message).
 */
export async function closedLoop(sessions, { durationSecs, tool = 'tool-0' }) {
  const latencies = [];
  const problems = [];
  let failed = 0;
  const start = performance.now();
  const end = start + durationSecs * 1000;
  const loop = async (s) => {
    while (performance.now() < end) {
      const id = nextId++;
      const t0 = performance.now();
      try {
        const { statusCode, headers, body } = await s.client.request({
          path: s.path,
          method: 'POST',
          headers: s.headers,
          body: `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"${tool}","arguments":{"n":${id}}}}`,
        });
        const { message, at } = await readAnswer(statusCode, headers, body, id);
        if (statusCode !== 200 || message.result?.content?.[0]?.text !== `{"n":${id}}`) {
          throw new Error(`HTTP ${statusCode}: ${JSON.stringify(message).slice(0, 300)}`);
        }
        if (at <= end) latencies.push(at - t0);
      } catch (err) {
        failed++;
        if (problems.length < 3) problems.push(err.message);
        return; // this client stops; the run is reported as failed below
      }
    }
  };
  await Promise.all(sessions.map(loop));
  if (failed > 0) {
    throw new Error(
      `${sessions[0]?.url}: ${failed} of ${failed + latencies.length} tools/call failed (${sessions.length} clients); first: ${problems.join(' | ')}`,
    );
  }
  const sorted = Float64Array.from(latencies).sort();
  return { rps: latencies.length / durationSecs, p50: percentile(sorted, 50), p99: percentile(sorted, 99), requests: latencies.length };
}

/**
 * A closed loop of session-less POSTs to `url` on `connections` keep-alive connections for
 * `durationSecs`: `body(id)` is the request with JSON-RPC id `id` (unique in the process),
 * `check(message, id)` returns a problem with its answer or undefined. Returns
 * { rps, p50, p99 (ms), requests (inside the window), completed (all, the few answered after the
 * window included: what the servers' CPU time was spent on) }; throws if any answer was not 200
 * or failed its check.
 */
export async function statelessLoop({ url, connections, durationSecs, headers, body, check }) {
  const { origin, pathname, search } = new URL(url);
  const path = pathname + search;
  const allHeaders = { 'content-type': 'application/json', accept: ACCEPT, ...headers };
  const clients = Array.from({ length: connections }, () => newClient(origin));
  const latencies = [];
  const problems = [];
  let failed = 0;
  let completed = 0;
  const end = performance.now() + durationSecs * 1000;
  const loop = async (client) => {
    while (performance.now() < end) {
      const id = nextId++;
      const t0 = performance.now();
      try {
        const res = await client.request({ path, method: 'POST', headers: allHeaders, body: body(id) });
        const { message, at } = await readAnswer(res.statusCode, res.headers, res.body, id);
        const problem = res.statusCode === 200 ? check(message, id) : 'not 200';
        if (problem !== undefined) throw new Error(`HTTP ${res.statusCode}: ${problem}: ${JSON.stringify(message).slice(0, 300)}`);
        completed++;
        if (at <= end) latencies.push(at - t0);
      } catch (err) {
        failed++;
        if (problems.length < 3) problems.push(err.message);
        return; // this client stops; the run is reported as failed below
      }
    }
  };
  try {
    await Promise.all(clients.map(loop));
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => c.destroy())));
  }
  if (failed > 0) throw new Error(`${url}: ${failed} of ${failed + latencies.length} requests failed (${connections} clients); first: ${problems.join(' | ')}`);
  const sorted = Float64Array.from(latencies).sort();
  return { rps: latencies.length / durationSecs, p50: percentile(sorted, 50), p99: percentile(sorted, 99), requests: latencies.length, completed };
}
