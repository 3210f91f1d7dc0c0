/**
 * The ceiling of our stack: a Fastify + undici passthrough with no features at all. It forwards a
 * POST's body to one upstream URL and answers with the upstream's status, content type and body;
 * no routing, sessions, JSON-RPC decoding, auth, limits, audit or metrics. The gateway can only
 * be slower than this; `npm run bench` reports how much. Run as a child process:
 * `node bare-proxy.mjs UPSTREAM_URL [PORT] [--agent] [--floor]`; it reports its port over IPC.
 *
 * By default it forwards with undici's top-level `request(url, { dispatcher })`, as undici's
 * documentation shows it: the baseline the `http` scenario's ratios are against. With `--agent`
 * it calls the agent's own `request()` with the origin and path worked out once, which skips
 * parsing the URL on every call; the gateway does that, and more (src/upstreams/exchange.ts), so
 * the `bare-agent` variant shows where the gateway stands against a passthrough written with the
 * same care.
 *
 * With `--floor` (the `memory` scenario's `stack floor`) it also loads and uses the rest of the
 * gateway's own stack: pino as Fastify's logger (level warn, as the bench runs the gateway), and a
 * prom-client Registry with the default process and Node.js metrics, served on GET /metrics. That
 * is the least any gateway built on these libraries holds in memory.
 */
import Fastify from 'fastify';
import { Agent, request } from 'undici';

const upstream = process.argv[2];
const port = Number(process.argv[3] ?? 0);
const viaAgent = process.argv.includes('--agent');
const floor = process.argv.includes('--floor');
const target = new URL(upstream);
// The same agent settings as the gateway's HTTP upstreams (src/upstreams/http/upstream.ts).
const agent = new Agent({ headersTimeout: 0, bodyTimeout: 0 });
const app = Fastify({ logger: floor ? { level: 'warn' } : false });
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', { parseAs: 'string' }, (_request, body, done) => done(null, body));

// Two separate calls rather than one options object: the default one is exactly the baseline it
// has always been.
const forward = viaAgent
  ? (req) =>
      agent.request({
        origin: target.origin,
        path: target.pathname,
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: req.headers.accept ?? 'application/json, text/event-stream' },
        body: req.body,
      })
  : (req) =>
      request(upstream, {
        dispatcher: agent,
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: req.headers.accept ?? 'application/json, text/event-stream' },
        body: req.body,
      });

app.post('/mcp', async (req, reply) => {
  const response = await forward(req);
  const text = await response.body.text();
  return reply
    .code(response.statusCode)
    .header('content-type', response.headers['content-type'] ?? 'application/json')
    .send(text);
});

if (floor) {
  const { Registry, collectDefaultMetrics } = await import('prom-client');
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  app.get('/metrics', async (_req, reply) => reply.header('content-type', registry.contentType).send(await registry.metrics()));
}

await app.listen({ port, host: '127.0.0.1' });
process.send?.({ port: app.server.address().port });
process.on('disconnect', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
