/**
 * A minimal streamable HTTP MCP server that answers instantly: initialize, ping, tools/list (a
 * configurable number of tools) and tools/call (echo). It exists so that a benchmark measures the
 * gateway, not the upstream. Run as a child process: `node instant-http-upstream.mjs PORT [TOOLS]`.
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { instantAnswerer } from './instant-answers.mjs';

const port = Number(process.argv[2] ?? 0);
const answer = instantAnswerer('instant', Number(process.argv[3] ?? 5));

const server = createServer((req, res) => {
  if (req.method === 'DELETE') return void res.writeHead(200).end();
  if (req.method !== 'POST') return void res.writeHead(405).end();
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let message;
    try {
      message = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      return void res.writeHead(400).end();
    }
    if (message.id === undefined) return void res.writeHead(202).end();
    const headers = { 'content-type': 'application/json' };
    if (message.method === 'initialize') headers['mcp-session-id'] = randomUUID();
    res.writeHead(200, headers).end(JSON.stringify({ jsonrpc: '2.0', id: message.id, result: answer(message) }));
  });
});
server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1', () => process.send?.({ port: server.address().port }));
process.on('disconnect', () => process.exit(0));
