/**
 * Several minimal streamable HTTP MCP servers in one process, one per port, each answering
 * tools/list after its own delay and everything else instantly (initialize, ping, tools/call echo:
 * bench/lib/instant-answers.mjs). It exists so that a benchmark knows what each server's own
 * tools/list costs, and which one is the slowest. Run as a child process:
 *
 *   node delayed-http-upstream.mjs DELAYS [TOOLS]     DELAYS: tools/list delays in ms, e.g. 5,10,50
 *
 * Sends { ports } (in the order of DELAYS) over IPC once every server listens; ends with its parent.
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { instantAnswerer } from './instant-answers.mjs';

const delays = String(process.argv[2] ?? '0')
  .split(',')
  .map(Number);
const toolCount = Number(process.argv[3] ?? 5);

function serverWith(name, listDelayMs) {
  const answer = instantAnswerer(name, toolCount);
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
      const reply = () => res.writeHead(200, headers).end(JSON.stringify({ jsonrpc: '2.0', id: message.id, result: answer(message) }));
      if (message.method === 'tools/list' && listDelayMs > 0) setTimeout(reply, listDelayMs);
      else reply();
    });
  });
  server.keepAliveTimeout = 60_000;
  return server;
}

const ports = await Promise.all(
  delays.map(
    (delay, i) =>
      new Promise((resolve) => {
        const server = serverWith(`delayed-${i}`, delay);
        server.listen(0, '127.0.0.1', () => resolve(server.address().port));
      }),
  ),
);
process.send?.({ ports });
process.on('disconnect', () => process.exit(0));
