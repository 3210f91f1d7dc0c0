/**
 * A minimal stdio MCP server that answers instantly: one JSON-RPC message per line on stdin, one
 * answer per line on stdout. initialize, ping, tools/list (a configurable number of tools) and
 * tools/call (echo). It exists so that a benchmark measures the proxy in front of it, not the
 * server. Run: `node instant-stdio-upstream.mjs [TOOLS]`.
 */
import { createInterface } from 'node:readline';
import { instantAnswerer } from './instant-answers.mjs';

const answer = instantAnswerer('instant-stdio', Number(process.argv[2] ?? 5));

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on('line', (line) => {
  if (line.trim() === '') return;
  let message;
  try {
    message = JSON.parse(line);
  } catch {
    return;
  }
  // Notifications and answers to requests of ours (there are none) get no reply.
  if (message.id === undefined || message.method === undefined) return;
  process.stdout.write(`${JSON.stringify({ jsonrpc: '2.0', id: message.id, result: answer(message) })}\n`);
});
lines.on('close', () => process.exit(0));
