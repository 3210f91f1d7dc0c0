/**
 * The ceiling of our stack for a stdio server: Fastify in front of one child process, and nothing
 * else. A POST's JSON-RPC message goes to the child's stdin with a wire id of its own (so that
 * clients that reuse ids never get each other's answers: the least any shared child needs), the
 * child's answer comes back as JSON with the client's id restored. initialize gets a made-up
 * Mcp-Session-Id; notifications are written and answered 202; DELETE is 200; GET is 405. No session
 * checks, auth, limits, audit, metrics, SSE, timeouts or restarts. The gateway can only be slower
 * than this; the `stdio` scenario reports how much, next to the peer proxies.
 *
 * Run: `node bare-stdio-bridge.mjs PORT COMMAND [ARG...]` (127.0.0.1 only; ready when GET /ping
 * answers); the child gets its environment.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import Fastify from 'fastify';

const [port, command, ...args] = process.argv.slice(2);
const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
// Requests in flight by wire id, in array slots: a Map that gains and loses an entry per request
// keeps requests alive past the young GC (src/upstreams/id-table.ts says why), which would make
// this ceiling lower than it is.
const SLOTS = 65_536;
const pending = new Array(SLOTS).fill(undefined);
let nextId = 1;
createInterface({ input: child.stdout, crlfDelay: Infinity }).on('line', (line) => {
  let message;
  try {
    message = JSON.parse(line);
  } catch {
    return;
  }
  const slot = typeof message.id === 'number' ? message.id % SLOTS : -1;
  const waiting = pending[slot];
  if (!waiting || waiting.wireId !== message.id) return;
  pending[slot] = undefined;
  message.id = waiting.id;
  const headers = { 'content-type': 'application/json' };
  if (waiting.initialize) headers['mcp-session-id'] = randomUUID();
  waiting.reply.code(200).headers(headers).send(JSON.stringify(message));
});

const app = Fastify({ logger: false });
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', { parseAs: 'string' }, (_request, body, done) => done(null, body));
app.post('/mcp', (req, reply) => {
  let message;
  try {
    message = JSON.parse(req.body);
  } catch {
    return reply.code(400).send();
  }
  if (message.id === undefined) {
    child.stdin.write(`${req.body}\n`);
    return reply.code(202).send();
  }
  const wireId = nextId++;
  pending[wireId % SLOTS] = { wireId, id: message.id, reply, initialize: message.method === 'initialize' };
  message.id = wireId;
  child.stdin.write(`${JSON.stringify(message)}\n`);
  return reply;
});
app.delete('/mcp', (_req, reply) => reply.code(200).send());
app.get('/mcp', (_req, reply) => reply.code(405).send());
app.get('/ping', (_req, reply) => reply.send('pong'));

await app.listen({ port: Number(port), host: '127.0.0.1' });
const stop = () => {
  child.kill('SIGTERM');
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
