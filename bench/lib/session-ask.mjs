/**
 * One request at a time on an MCP session opened by `openSessions` (bench/lib/mcp-load.mjs), timed:
 * for latency measurements of single requests (a closed loop measures throughput instead). The
 * answer may be JSON or SSE; it counts as arrived when the JSON-RPC response with the request's id
 * has been read.
 *
 *   const { message, ms } = await ask(session, 'tools/list');
 */

let nextId = 1_000_000_000; // apart from mcp-load.mjs's ids, which start at 1

/** The JSON-RPC response with id `id` in an SSE body (the rest of the stream is drained). */
async function fromEventStream(body, id) {
  body.setEncoding('utf8');
  let buffer = '';
  let found;
  for await (const chunk of body) {
    if (found) continue;
    buffer += chunk;
    let separator;
    while (!found && (separator = /\r?\n\r?\n/.exec(buffer)) !== null) {
      const event = buffer.slice(0, separator.index);
      buffer = buffer.slice(separator.index + separator[0].length);
      const data = event
        .split(/\r?\n/)
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(line[5] === ' ' ? 6 : 5))
        .join('\n');
      if (!data) continue;
      const message = JSON.parse(data);
      if (message.id === id && ('result' in message || 'error' in message)) found = message;
    }
  }
  return found;
}

/**
 * Sends `method` with `params` on the session and reads its answer. Resolves with { message, ms }
 * (ms: from sending to the answer read); throws on an HTTP status other than 200, an answer that
 * is not the response to this request, or a JSON-RPC error.
 */
export async function ask(session, method, params = {}) {
  const id = nextId++;
  const started = performance.now();
  const { statusCode, headers, body } = await session.client.request({
    path: session.path,
    method: 'POST',
    headers: session.headers,
    body: JSON.stringify({ jsonrpc: '2.0', id, method, params }),
  });
  const type = String(headers['content-type'] ?? '');
  const message = type.startsWith('text/event-stream') ? await fromEventStream(body, id) : JSON.parse(await body.text());
  const ms = performance.now() - started;
  if (statusCode !== 200 || message?.id !== id || !('result' in message)) {
    throw new Error(`${session.url} ${method}: HTTP ${statusCode}: ${JSON.stringify(message).slice(0, 300)}`);
  }
  return { message, ms };
}
