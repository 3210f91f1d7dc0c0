/**
 * The ceiling of our stack: a Fastify + undici passthrough with no features at all. It forwards a
 * POST's body to one upstream URL and answers with the upstream's status, content type and body;
 * no routing, sessions, JSON-RPC decoding, auth, limits, audit or metrics. The gateway can only
 * be slower than this; `npm run bench` reports how much. Run as a child process:
 * `node bare-proxy.mjs UPSTREAM_URL [PORT]`; it reports its port over IPC.
 */
import Fastify from 'fastify';
import { Agent, request } from 'undici';

const upstream = process.argv[2];
const port = Number(process.argv[3] ?? 0);
// The same agent settings as the gateway's HTTP upstreams (src/upstreams/http-common.ts).
const agent = new Agent({ headersTimeout: 0, bodyTimeout: 0 });
const app = Fastify({ logger: false });
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', { parseAs: 'string' }, (_request, body, done) => done(null, body));

app.post('/mcp', async (req, reply) => {
  const response = await request(upstream, {
    dispatcher: agent,
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: req.headers.accept ?? 'application/json, text/event-stream' },
    body: req.body,
  });
  const text = await response.body.text();
  return reply.code(response.statusCode).header('content-type', response.headers['content-type'] ?? 'application/json').send(text);
});

await app.listen({ port, host: '127.0.0.1' });
process.send?.({ port: app.server.address().port });
process.on('disconnect', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
