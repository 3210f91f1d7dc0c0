/**
 * Finding 10 of issue 16: an upstream that does not answer must not hold a client longer than the
 * server's `timeout_ms`, whatever `startup_timeout_ms` says (left at its 60 s default here). The
 * waits a client request makes before its own exchange count: the era probe it triggers, the
 * upstream `initialize` of its session (or of the gateway's own session for a session-less
 * request), the GET of a legacy SSE stream, a stdio child that is still starting.
 *
 * A real gateway (in process, src/) with the upstreams the reference servers cannot play: a
 * hand-written node:http peer that accepts connections and never answers, one that answers the
 * probe (as a legacy SDK server does) and then hangs on initialize, their legacy HTTP+SSE
 * counterparts, and a stdio child that reads and never answers. Plain HTTP clients and the
 * official SDK client downstream. Traffic to 127.0.0.1 only.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectSdk } from '../helpers/sdk-client.js';
import { jsonOrUndefined, NODE, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';

const TIMEOUT_MS = 1_500;
/**
 * How long the slow peer takes for the probe and for initialize: each well within timeout_ms,
 * the two together well beyond it.
 */
const SLOW_MS = TIMEOUT_MS * 0.65;
/** JSON-RPC code of an upstream that did not answer in time (src/http/errors.ts). */
const UPSTREAM_TIMEOUT = -32002;

/** What the peer was sent, per path and method, so a test can see which stage hung. */
interface Peer {
  readonly url: string;
  readonly seen: string[];
  stop(): Promise<void>;
}

/**
 * The hostile upstreams, on one node:http server:
 *   /silent/...     takes every request (its body included) and never answers, not even headers
 *   /stuck/mcp      streamable HTTP: server/discover (and anything but initialize) answered 400
 *                   with a JSON-RPC error, as server-everything answers a request without a
 *                   session (so the gateway takes it for a legacy server); initialize never answered
 *   /stuck/sdk/mcp  the same as /stuck/mcp, for the upstream the SDK client's test has of its own
 *   /stuck/sse      legacy HTTP+SSE: the stream opens and names its endpoint, whose POSTs are
 *                   accepted (202) and never answered on the stream
 *   /slow/mcp       streamable HTTP that answers, slowly: server/discover (400, legacy) and
 *                   initialize (a session, `slow-session`) each after SLOW_MS; DELETE recorded
 */
async function startPeer(): Promise<Peer> {
  const seen: string[] = [];
  const streams = new Set<ServerResponse>();
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?', 1)[0]!;
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
    req.on('end', () => {
      const method = (jsonOrUndefined(body) as { method?: string } | undefined)?.method ?? '';
      seen.push(`${req.method} ${path} ${method}`.trim());
      if (path.startsWith('/silent/')) return;
      if (path === '/slow/mcp') {
        if (req.method === 'DELETE') return void res.writeHead(200).end();
        if (method === 'initialize') {
          const answer = {
            jsonrpc: '2.0',
            id: (jsonOrUndefined(body) as { id: unknown }).id,
            result: { protocolVersion: '2025-06-18', capabilities: {}, serverInfo: { name: 'slow', version: '1.0.0' } },
          };
          setTimeout(() => res.writeHead(200, { 'content-type': 'application/json', 'mcp-session-id': 'slow-session' }).end(JSON.stringify(answer)), SLOW_MS);
          return;
        }
        setTimeout(
          () =>
            res
              .writeHead(400, { 'content-type': 'application/json' })
              .end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'Bad Request: No valid session ID provided' } })),
          SLOW_MS,
        );
        return;
      }
      if (path === '/stuck/mcp' || path === '/stuck/sdk/mcp') {
        if (method === 'initialize') return;
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'Bad Request: No valid session ID provided' } }));
        return;
      }
      if (path === '/stuck/sse' && req.method === 'GET') {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.write('event: endpoint\ndata: /stuck/message?sessionId=1\n\n');
        streams.add(res);
        return;
      }
      if (path === '/stuck/message') {
        res.writeHead(202).end();
        return;
      }
      res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    async stop() {
      for (const res of streams) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

let peer: Peer;
let gw: RunningGateway;
/**
 * How long an answer may take and still be "within timeout_ms": a quarter of the default
 * startup_timeout_ms (what the client waited before the fix), at least ten times timeout_ms, so a
 * busy 2-core machine cannot make it fail, and an answer after startup_timeout_ms cannot pass.
 */
let bound: number;

function server(name: string, lines: string): string {
  // The breaker is off: these tests are about the deadline, and make more failing requests in a
  // row than its threshold.
  return `[[upstream.servers]]\nname = ${q(name)}\npath_prefix = "/${name}"\n${lines}\ntimeout_ms = ${TIMEOUT_MS}\ncircuit_failure_threshold = 0\n\n`;
}

beforeAll(async () => {
  peer = await startPeer();
  const toml =
    server('silent', `transport = "http"\nurl = ${q(`${peer.url}/silent/mcp`)}`) +
    server('silent_shared', `transport = "http"\nurl = ${q(`${peer.url}/silent/shared`)}`) +
    server('stuck_sdk', `transport = "http"\nurl = ${q(`${peer.url}/stuck/sdk/mcp`)}`) +
    server('stuck', `transport = "http"\nurl = ${q(`${peer.url}/stuck/mcp`)}`) +
    server('slow', `transport = "http"\nurl = ${q(`${peer.url}/slow/mcp`)}`) +
    server('silent_sse', `transport = "sse"\nurl = ${q(`${peer.url}/silent/sse`)}`) +
    server('stuck_sse', `transport = "sse"\nurl = ${q(`${peer.url}/stuck/sse`)}`) +
    server('mute', `transport = "stdio"\ncommand = ${q(NODE)}\nargs = ["-e", "process.stdin.resume()"]`);
  // The stdio child never becomes ready: starting it takes its whole startup_timeout_ms.
  gw = await startGateway(toml, { waitReady: false });
  const startup = gw.app.gateway.config.servers.map((s) => s.startup_timeout_ms);
  bound = Math.min(...startup) / 4;
  expect(bound).toBeGreaterThanOrEqual(10 * TIMEOUT_MS);
});

afterAll(async () => {
  await gw?.stop();
  await peer?.stop();
});

let nextId = 1;

/** One JSON-RPC POST without a session, as curl sends it; gives up (and fails the test) after `bound`. */
async function post(name: string, method: string, params?: Record<string, unknown>) {
  const id = `${method}-${nextId++}`;
  const started = Date.now();
  const res = await fetch(`${gw.url}/mcp/${name}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id, method, ...(params ? { params } : {}) }),
    signal: AbortSignal.timeout(bound),
  });
  const text = await res.text();
  return { id, status: res.status, text, json: jsonOrUndefined(text), elapsed: Date.now() - started };
}

const initialize = (name: string) =>
  post(name, 'initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'finding-10', version: '1.0.0' } });
const toolsList = (name: string) => post(name, 'tools/list');

/** The timeout answer a client depends on: 504, -32002, its own id, the server named; in time. */
function expectTimedOut(res: Awaited<ReturnType<typeof post>>, name: string): void {
  expect(res.status, res.text).toBe(504);
  expect(res.json).toMatchObject({ jsonrpc: '2.0', id: res.id, error: { code: UPSTREAM_TIMEOUT } });
  expect(res.json.error.message).toContain(`'${name}'`);
  expect(res.elapsed).toBeLessThan(bound);
}

// Each test has upstreams of its own (its own names, verdicts and peer paths), and what a test waits
// for is a timeout, not CPU: they run at once.
describe.concurrent('finding 10: a hung HTTP upstream holds every client 60 s whatever timeout_ms says', () => {
  it('an upstream that never answers: a client initialize and a session-less tools/list time out at timeout_ms (the era probe included)', async () => {
    expectTimedOut(await initialize('silent'), 'silent');
    expectTimedOut(await toolsList('silent'), 'silent');
    // What hung was the era probe, the first thing the gateway sends.
    expect(peer.seen).toContain('POST /silent/mcp server/discover');
    // A probe that timed out decided nothing: no verdict is remembered for the next request.
    expect(gw.app.gateway.upstream('silent').verdict).toBeUndefined();
  });

  it('an upstream that answers the probe and hangs on initialize: the same, for the handshake', async () => {
    expectTimedOut(await initialize('stuck'), 'stuck');
    expectTimedOut(await toolsList('stuck'), 'stuck');
    expect(peer.seen).toContain('POST /stuck/mcp initialize');
    expect(gw.app.gateway.upstream('stuck').verdict).toMatchObject({ era: 'legacy' });
  });

  it('clients that share one probe and one opening each wait at most their own timeout_ms', async () => {
    // Three session-less clients, the later ones joining the work the first one started (an
    // upstream of this test's own: the same silent peer, under a path no other test uses).
    const probes = (): number => peer.seen.filter((line) => line === 'POST /silent/shared server/discover').length;
    const before = probes();
    const first = toolsList('silent_shared');
    // The others join once the first one's probe is out (and hanging).
    await waitFor(() => probes() > before, 10 * TIMEOUT_MS, "the first client's probe to reach the server");
    const second = toolsList('silent_shared');
    const third = initialize('silent_shared');
    for (const res of await Promise.all([first, second, third])) expectTimedOut(res, 'silent_shared');
  });

  it('a probe and a handshake that each answer in time but together take longer: a timeout, and the late session is ended upstream', async () => {
    expectTimedOut(await initialize('slow'), 'slow');
    // The session the server opened after the client stopped waiting is nobody's: DELETEd.
    await waitFor(() => peer.seen.includes('DELETE /slow/mcp'), 10 * TIMEOUT_MS, 'the late session to be deleted');
    expect(peer.seen.filter((line) => line.startsWith('POST /slow/mcp'))).toEqual(['POST /slow/mcp server/discover', 'POST /slow/mcp initialize']);
  });

  it('the official SDK client fails to connect within the bound instead of waiting for startup_timeout_ms', async () => {
    const started = Date.now();
    // An upstream of its own (the same stuck peer): the 'stuck' test's sight of initialize stays its own.
    const connecting = connectSdk(`${gw.url}/mcp/stuck_sdk`);
    const outcome = await Promise.race([
      connecting.then(
        () => 'connected',
        (error: unknown) => (error instanceof Error ? error.message : String(error)),
      ),
      new Promise<string>((resolve) => setTimeout(() => resolve('still waiting'), bound).unref()),
    ]);
    // The SDK's error carries the gateway's JSON-RPC error: the timeout, naming the server.
    expect(outcome).toContain(String(UPSTREAM_TIMEOUT));
    expect(outcome).toContain("Upstream 'stuck_sdk' did not answer");
    expect(Date.now() - started).toBeLessThan(bound);
  });
});

describe.concurrent('finding 10: the same deadline for legacy HTTP+SSE and stdio upstreams', () => {
  it('an SSE endpoint whose GET is never answered: initialize and a session-less tools/list time out at timeout_ms', async () => {
    expectTimedOut(await initialize('silent_sse'), 'silent_sse');
    expectTimedOut(await toolsList('silent_sse'), 'silent_sse');
    expect(peer.seen).toContain('GET /silent/sse');
  });

  it('an SSE stream whose server never answers initialize: the same', async () => {
    expectTimedOut(await initialize('stuck_sse'), 'stuck_sse');
    expectTimedOut(await toolsList('stuck_sse'), 'stuck_sse');
    expect(peer.seen).toContain('POST /stuck/message initialize');
  });

  it('a stdio child that never answers initialize: a client request waits at most timeout_ms', async () => {
    expectTimedOut(await initialize('mute'), 'mute');
    expectTimedOut(await toolsList('mute'), 'mute');
    // The child is still starting (startup_timeout_ms is its own deadline), not given up on.
    expect(gw.app.gateway.upstream('mute').status().state).toBe('starting');
  });
});
