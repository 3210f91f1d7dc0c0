/**
 * The circuit breaker (src/upstreams/circuit-breaker.ts) around real transports, as factory.ts
 * builds them from a parsed config: a port where nothing listens, a listener that drops every
 * connection, a node:http peer answering a chosen status, server-everything over streamable HTTP
 * and over stdio. Small real durations (open periods of a few hundred ms), no fake timers.
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ANONYMOUS, ownerKey } from '../../src/auth/identity.js';
import { parseConfig } from '../../src/config/load.js';
import { UpstreamError } from '../../src/upstreams/errors.js';
import { MAX_OWNER_CIRCUITS } from '../../src/upstreams/circuit-breaker.js';
import { createUpstream } from '../../src/upstreams/factory.js';
import type { Upstream, UpstreamSession } from '../../src/upstreams/upstream.js';
import { clientInitialize, EverythingServer, eventually, freePort, memoryLogger, recordingHandlers, resultText, toolCall } from '../helpers/everything.js';
import { EVERYTHING, NODE, q } from '../helpers/gateway.js';

const log = memoryLogger();
const upstreams: Upstream[] = [];
const servers: EverythingServer[] = [];
const peers: Array<HttpServer | NetServer> = [];

/** The block whose tests run at once: it ends what they opened itself, in its afterAll (see there). */
const CONCURRENT_BLOCK = 'finding 5: one identity opens the circuit for everyone';

afterEach(async (context) => {
  if (context.task.suite?.name === CONCURRENT_BLOCK) return;
  await Promise.all(upstreams.splice(0).map((u) => u.close()));
  await Promise.all(servers.splice(0).map((s) => s.stop()));
  await Promise.all(peers.splice(0).map((p) => new Promise<void>((resolve) => p.close(() => resolve()))));
});

afterAll(() => {
  // Messages never carry the upstream's credentials, and neither do the breaker's log lines.
  expect(log.lines.join('\n')).not.toContain('breaker-secret');
});

/** An upstream built the way the gateway builds it: parsed config, then the factory. */
function upstream(name: string, fields: string): Upstream {
  const config = parseConfig(`[[upstream.servers]]\nname = ${q(name)}\npath_prefix = "/${name}"\n${fields}`, { env: {} });
  const u = createUpstream(config.servers[0]!, { logger: log.logger });
  upstreams.push(u);
  return u;
}

function httpUpstream(name: string, url: string, circuit: string): Upstream {
  return upstream(name, `transport = "http"\nurl = ${q(url)}\nheaders = { Authorization = "Bearer breaker-secret" }\ntimeout_ms = 5000\n${circuit}`);
}

/** Without [auth] every caller is this one owner: its failures are the server's, as they always were. */
const EVERYONE = ownerKey(ANONYMOUS);

const openSession = (u: Upstream, owner = EVERYONE, forwardPath = ''): Promise<UpstreamSession> =>
  u.openSession({ forwardPath, handlers: recordingHandlers(), owner });

/** The UpstreamError a promise rejects with. */
async function failure(promise: Promise<unknown>): Promise<UpstreamError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(error instanceof UpstreamError)) throw new Error(`expected an UpstreamError, got ${String(error)}`);
  return error;
}

function listen(server: HttpServer | NetServer): Promise<number> {
  peers.push(server);
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : 0);
    });
  });
}

/** The level of the first log line that starts with `text` (of that upstream's breaker, if `server` is given). */
const levelOf = (text: string, server?: string): number | undefined => {
  const line = log.lines
    .map((l) => JSON.parse(l) as { msg: string; level: number; server?: string })
    .find((l) => l.msg.startsWith(text) && (server === undefined || l.server === server));
  return line?.level;
};

describe('circuit breaker: opening', () => {
  it('opens after circuit_failure_threshold consecutive failures, then refuses without connecting, with a 503-kind error that says why', async () => {
    let connections = 0;
    const port = await listen(
      createNetServer((socket) => {
        connections++;
        socket.destroy();
      }),
    );
    const u = httpUpstream('dropper', `http://127.0.0.1:${port}/mcp`, 'circuit_failure_threshold = 3\ncircuit_open_ms = 60000');
    expect(u.status().circuit).toBe('closed');
    for (let i = 0; i < 3; i++) {
      const error = await failure(openSession(u));
      expect(error.kind).not.toBe('circuit_open');
    }
    const reached = connections;
    expect(reached).toBeGreaterThanOrEqual(3);

    const refused = await failure(openSession(u));
    expect(refused.kind).toBe('circuit_open');
    expect(refused.server).toBe('dropper');
    expect(refused.message).toMatch(/^Upstream 'dropper' is unavailable: circuit open after 3 consecutive failures \(last: .+\); retrying in (60|59) s$/);
    expect(refused.retryAfterMs).toBeGreaterThan(59_000);
    expect(refused.retryAfterMs).toBeLessThanOrEqual(60_000);
    for (let i = 0; i < 5; i++) expect((await failure(openSession(u))).kind).toBe('circuit_open');
    expect(connections).toBe(reached);

    const status = u.status();
    expect(status.circuit).toBe('open');
    expect(status.healthy).toBe(false);
    expect(status.lastError).toMatch(/^Upstream 'dropper' is unavailable: circuit open after 3 consecutive failures/);
    expect(levelOf('upstream circuit opened')).toBe(40);
  });

  it('counts only consecutive 5xx and similar failures: an answer (4xx included) in between starts the count again', async () => {
    let status = 503;
    const port = await listen(
      createHttpServer((req, res) => {
        req.resume();
        res.writeHead(status, { 'content-type': 'text/plain' }).end('upstream says no');
      }),
    );
    const u = httpUpstream('fivehundred', `http://127.0.0.1:${port}/mcp`, 'circuit_failure_threshold = 3');
    for (const answer of [503, 502, 401, 500, 503, 400, 500]) {
      status = answer;
      expect((await failure(openSession(u))).message).toBe(`Upstream 'fivehundred' answered HTTP ${answer}`);
    }
    // 5xx, 5xx, 4xx (an answer: count reset), 5xx, 5xx, 4xx, 5xx: never 3 in a row.
    expect(u.status().circuit).toBe('closed');
    // Nor does any number of 4xx: the server answered (and a client must not be able to open the
    // circuit for everyone with a path or request the server refuses).
    status = 404;
    for (let i = 0; i < 5; i++) expect((await failure(openSession(u))).message).toBe("Upstream 'fivehundred' answered HTTP 404");
    expect(u.status().circuit).toBe('closed');
    status = 500;
    for (let i = 0; i < 3; i++) expect((await failure(openSession(u))).kind).toBe('protocol');
    expect((await failure(openSession(u))).kind).toBe('circuit_open');
  });

  it('never opens on what the server answered (JSON-RPC and tool errors, expired sessions), nor on cancellations or a session the client ended', async () => {
    const everything = await EverythingServer.start('streamableHttp');
    servers.push(everything);
    const u = httpUpstream('answers', everything.url, 'circuit_failure_threshold = 2');
    const session = await u.openSession({
      forwardPath: '',
      initialize: clientInitialize(1, LATEST_PROTOCOL_VERSION),
      handlers: recordingHandlers(),
      owner: EVERYONE,
    });
    for (let i = 0; i < 4; i++) {
      const response = await session.request(toolCall(10 + i, 'no-such-tool', {}), { onMessage: () => undefined });
      expect('error' in response || response.result['isError'] === true).toBe(true);
      const unknownMethod = await session.request({ jsonrpc: '2.0', id: 20 + i, method: 'no/such/method' }, { onMessage: () => undefined });
      expect(unknownMethod).toHaveProperty('error');
    }
    for (let i = 0; i < 3; i++) {
      const controller = new AbortController();
      const pending = session.request(toolCall(30 + i, 'trigger-long-running-operation', { duration: 5, steps: 1 }), {
        onMessage: () => undefined,
        signal: controller.signal,
      });
      controller.abort();
      expect((await failure(pending)).kind).toBe('cancelled');
    }
    expect(u.status().circuit).toBe('closed');

    // A client that ends its session with requests in flight: they fail, but not for the server.
    const ending = await u.openSession({
      forwardPath: '',
      initialize: clientInitialize(2, LATEST_PROTOCOL_VERSION),
      handlers: recordingHandlers(),
      owner: EVERYONE,
    });
    const inFlight = [0, 1, 2].map((i) =>
      failure(ending.request(toolCall(50 + i, 'trigger-long-running-operation', { duration: 5, steps: 1 }), { onMessage: () => undefined })),
    );
    await ending.close();
    for (const error of await Promise.all(inFlight)) expect(error.kind).toBe('closed');
    expect(u.status().circuit).toBe('closed');

    // The server restarts and forgets the session: it answered, so nothing counts.
    await everything.restart();
    for (let i = 0; i < 3; i++) {
      const error = await failure(session.request(toolCall(40 + i, 'echo', { message: 'x' }), { onMessage: () => undefined }));
      expect(['session_expired', 'closed']).toContain(error.kind);
      if (error.kind === 'closed') break;
    }
    expect(u.status().circuit).toBe('closed');
    expect(u.status().healthy).toBe(true);
  });

  it('has no breaker at all with circuit_failure_threshold = 0', async () => {
    const port = await freePort();
    const u = httpUpstream('unguarded', `http://127.0.0.1:${port}/mcp`, 'circuit_failure_threshold = 0');
    for (let i = 0; i < 8; i++) expect((await failure(openSession(u))).kind).toBe('connect');
    expect(u.status().circuit).toBeUndefined();
  });
});

describe('circuit breaker: half-open and recovery', () => {
  it('lets exactly one trial through after circuit_open_ms, reopens for twice as long when it fails, and closes once the server is back', async () => {
    const port = await freePort();
    const u = httpUpstream('comeback', `http://127.0.0.1:${port}/mcp`, 'circuit_failure_threshold = 2\ncircuit_open_ms = 300\ncircuit_open_max_ms = 2000');
    for (let i = 0; i < 2; i++) {
      const error = await failure(openSession(u));
      expect(error.kind).toBe('connect');
      expect(error.message).toMatch(/^Failed to connect to 'comeback': ECONNREFUSED/);
    }
    const refused = await failure(openSession(u));
    expect(refused.kind).toBe('circuit_open');
    expect(refused.message).toMatch(
      /^Upstream 'comeback' is unavailable: circuit open after 2 consecutive failures \(last: Failed to connect to 'comeback': ECONNREFUSED .*\); retrying in 1 s$/,
    );

    // The open period ends: the status says the next request is a trial, and it reaches the server.
    await eventually(() => expect(u.status().circuit).toBe('half_open'), 3_000);
    const [trial, ...others] = await Promise.all([openSession(u), openSession(u), openSession(u)].map(failure));
    expect(trial!.kind).toBe('connect');
    expect(others).toHaveLength(2);
    for (const other of others) {
      expect(other.kind).toBe('circuit_open');
      expect(other.message).toMatch(/circuit half-open after 2 consecutive failures .*; a trial request is in flight$/);
      expect(other.retryAfterMs).toBe(1_000);
    }

    // The trial failed: open again, now for 600 ms (300 doubled), after 3 failures.
    const reopened = await failure(openSession(u));
    expect(reopened.kind).toBe('circuit_open');
    expect(reopened.message).toMatch(/circuit open after 3 consecutive failures/);
    expect(reopened.retryAfterMs).toBeGreaterThan(300);
    expect(reopened.retryAfterMs).toBeLessThanOrEqual(600);
    expect(levelOf('upstream circuit opened again')).toBe(40);

    // The server comes back on the same port; no restart of anything on the gateway's side.
    const everything = await EverythingServer.start('streamableHttp', port);
    servers.push(everything);
    await eventually(() => expect(u.status().circuit).toBe('half_open'), 3_000);
    const session = await openSession(u);
    expect(u.status()).toMatchObject({ circuit: 'closed', healthy: true });
    expect(u.status().lastError).toBeUndefined();
    expect(resultText(await session.request(toolCall(1, 'echo', { message: 'back' }), { onMessage: () => undefined }))).toBe('Echo: back');
    expect(levelOf('upstream circuit closed')).toBe(30);

    // Closed again from scratch: the next opening takes the full threshold and the base period.
    await everything.stop();
    for (let i = 0; i < 2; i++) expect((await failure(openSession(u))).kind).toBe('connect');
    const again = await failure(openSession(u));
    expect(again.message).toMatch(/circuit open after 2 consecutive failures/);
    expect(again.retryAfterMs).toBeLessThanOrEqual(300);
  });

  it('caps the open period at circuit_open_max_ms', async () => {
    const port = await freePort();
    const u = httpUpstream('capped', `http://127.0.0.1:${port}/mcp`, 'circuit_failure_threshold = 1\ncircuit_open_ms = 100\ncircuit_open_max_ms = 250');
    await failure(openSession(u));
    for (const period of [200, 250, 250]) {
      await eventually(() => expect(u.status().circuit).toBe('half_open'), 3_000);
      expect((await failure(openSession(u))).kind).toBe('connect');
      const refused = await failure(openSession(u));
      expect(refused.retryAfterMs).toBeGreaterThan(period - 100);
      expect(refused.retryAfterMs).toBeLessThanOrEqual(period);
    }
  });

  it('a session opened before the circuit opened is guarded too: its request is the trial once the server is back', async () => {
    const everything = await EverythingServer.start('streamableHttp');
    servers.push(everything);
    const u = httpUpstream('shared', everything.url, 'circuit_failure_threshold = 2\ncircuit_open_ms = 300');
    const session = await openSession(u);
    expect(resultText(await session.request(toolCall(1, 'echo', { message: 'a' }), { onMessage: () => undefined }))).toBe('Echo: a');
    await everything.stop();
    for (let i = 0; i < 2; i++)
      expect((await failure(session.request(toolCall(2 + i, 'echo', { message: 'b' }), { onMessage: () => undefined }))).kind).toBe('connect');
    const refused = await failure(session.request(toolCall(5, 'echo', { message: 'c' }), { onMessage: () => undefined }));
    expect(refused.kind).toBe('circuit_open');
    // Notifications are refused too while it is open, without being counted.
    expect((await failure(session.send({ jsonrpc: '2.0', method: 'notifications/roots/list_changed' }))).kind).toBe('circuit_open');

    await everything.start();
    await eventually(() => expect(u.status().circuit).toBe('half_open'), 3_000);
    // The restarted server forgot the session: that is an answer, and it closes the circuit.
    expect((await failure(session.request(toolCall(6, 'echo', { message: 'd' }), { onMessage: () => undefined }))).kind).toBe('session_expired');
    expect(u.status().circuit).toBe('closed');
  });
});

describe('circuit breaker: stdio', () => {
  it('opens on a child that lets requests time out, still lets sessions open, and closes when the child answers again', async () => {
    const u = upstream(
      'hanging',
      `command = ${q(NODE)}\nargs = [${q(EVERYTHING)}, "stdio"]\ntimeout_ms = 300\ncircuit_failure_threshold = 2\ncircuit_open_ms = 300`,
    );
    await u.start();
    const session = await openSession(u);
    const slow = (id: number) => session.request(toolCall(id, 'trigger-long-running-operation', { duration: 2, steps: 1 }), { onMessage: () => undefined });
    for (let i = 0; i < 2; i++) expect((await failure(slow(i))).kind).toBe('timeout');
    const refused = await failure(session.request(toolCall(5, 'echo', { message: 'x' }), { onMessage: () => undefined }));
    expect(refused.kind).toBe('circuit_open');
    expect(refused.message).toMatch(
      /^Upstream 'hanging' is unavailable: circuit open after 2 consecutive failures \(last: Upstream 'hanging' did not answer within 300 ms\); retrying in 1 s$/,
    );
    expect(u.status()).toMatchObject({ circuit: 'open', healthy: false, state: 'ready' });

    // Opening a session never reaches the child (the gateway answers from its own handshake).
    const another = await openSession(u);
    expect(another.initializeResult).toHaveProperty('result');

    await eventually(() => expect(u.status().circuit).toBe('half_open'), 3_000);
    expect(resultText(await another.request(toolCall(6, 'echo', { message: 'fine' }), { onMessage: () => undefined }))).toBe('Echo: fine');
    expect(u.status()).toMatchObject({ circuit: 'closed', healthy: true });
  });

  it('leaves a crashing child to the supervisor: calls lost to its exits never open the circuit', async () => {
    // Answers initialize, then exits on any other request.
    const script = [
      "require('readline').createInterface({ input: process.stdin }).on('line', (line) => {",
      '  const m = JSON.parse(line);',
      "  if (m.method === 'initialize') process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id: m.id, result: { protocolVersion: m.params.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: 'crasher', version: '1.0.0' } } }) + '\\n');",
      '  else if (m.id !== undefined) process.exit(1);',
      '});',
    ].join('\n');
    const u = upstream(
      'crasher',
      `command = ${q(NODE)}\nargs = ["-e", ${q(script)}]\nrestart_backoff_ms = 20\nrestart_backoff_max_ms = 40\nmax_restarts = 100\ncircuit_failure_threshold = 2`,
    );
    await u.start();
    const session = await openSession(u);
    const kinds = new Set<string>();
    for (let i = 0; i < 4; i++) {
      await eventually(() => expect(u.status().state).toBe('ready'), 5_000);
      kinds.add((await failure(session.request(toolCall(i, 'echo', { message: 'x' }), { onMessage: () => undefined }))).kind);
    }
    expect(kinds.has('closed')).toBe(true);
    expect(kinds.has('circuit_open')).toBe(false);
    expect(u.status().circuit).toBe('closed');
    expect(u.status().restarts).toBeGreaterThanOrEqual(3);
  });
});

// Each test has an upstream of its own (its own name, sessions and circuit) and what they wait for
// is mostly timeouts: they run at once. The last one, a thousand quick requests, runs alone.
describe.concurrent(CONCURRENT_BLOCK, () => {
  const A = 'api_key:a';
  const B = 'api_key:b';
  const C = 'api_key:c';
  const none = { onMessage: () => undefined };
  /** server-everything's long-running tool: well-formed, and longer than the server's timeout_ms. */
  const slow = (session: UpstreamSession, id: number) =>
    failure(session.request(toolCall(id, 'trigger-long-running-operation', { duration: 10, steps: 1 }), none));
  const echo = (session: UpstreamSession, id: number, message = 'fine') => session.request(toolCall(id, 'echo', { message }), none);

  /** Long enough for an echo on a busy 2-core machine, short enough for a test. */
  const TIMEOUT_MS = 1000;

  /**
   * One server-everything for every test of this block (started by the first that needs it): each
   * test has its own upstream (its own name, sessions and circuit), so they do not interfere, and a
   * server start is the slowest part of a test.
   */
  let shared: Promise<EverythingServer> | undefined;
  afterAll(async () => {
    // This block is the file's last: what is left in the lists is what its tests opened.
    await Promise.all(upstreams.splice(0).map((u) => u.close()));
    await Promise.all(peers.splice(0).map((p) => new Promise<void>((resolve) => p.close(() => resolve()))));
    await (await shared)?.stop();
  });

  async function slowServer(name: string, openMs = 60_000): Promise<Upstream> {
    shared ??= EverythingServer.start('streamableHttp');
    const everything = await shared;
    return upstream(
      name,
      `transport = "http"\nurl = ${q(everything.url)}\ntimeout_ms = ${TIMEOUT_MS}\ncircuit_failure_threshold = 2\ncircuit_open_ms = ${openMs}`,
    );
  }

  it("a request that times out, again and again, opens only its owner's circuit: another owner's calls go through", async () => {
    const u = await slowServer('timeouts');
    const a = await openSession(u, A);
    const b = await openSession(u, B);
    for (let i = 0; i < 2; i++) expect((await slow(a, i)).kind).toBe('timeout');
    const refused = await failure(echo(a, 3));
    expect(refused.kind).toBe('circuit_open');
    expect(refused.message).toMatch(
      /^Upstream 'timeouts' is unavailable to this identity: circuit open after 2 consecutive failures \(last: Upstream 'timeouts' did not answer within 1000 ms\); retrying in (60|59) s$/,
    );
    expect(refused.retryAfterMs).toBeGreaterThan(59_000);
    // Its new sessions too; nobody else's.
    expect((await failure(openSession(u, A))).kind).toBe('circuit_open');
    expect(resultText(await echo(b, 4))).toBe('Echo: fine');
    expect(resultText(await echo(await openSession(u, C), 5))).toBe('Echo: fine');
    expect(u.status()).toMatchObject({ circuit: 'closed', healthy: true });
    expect(levelOf('upstream circuit opened for one identity', 'timeouts')).toBe(40);
  });

  it('failures of two owners in a row open it for everyone: the server fails for more than one caller', async () => {
    const u = await slowServer('two-owners');
    const [a, b, c] = await Promise.all([openSession(u, A), openSession(u, B), openSession(u, C)]);
    expect((await slow(a, 1)).kind).toBe('timeout');
    expect(u.status().circuit).toBe('closed');
    expect((await slow(b, 2)).kind).toBe('timeout');
    const refused = await failure(echo(c, 3));
    expect(refused.kind).toBe('circuit_open');
    expect(refused.message).toMatch(/^Upstream 'two-owners' is unavailable: circuit open after 2 consecutive failures/);
    expect(u.status()).toMatchObject({ circuit: 'open', healthy: false });
  });

  it('a failure no request can cause (nothing listens) counts for everyone at once', async () => {
    const port = await freePort();
    const u = httpUpstream('unreachable', `http://127.0.0.1:${port}/mcp`, 'circuit_failure_threshold = 2\ncircuit_open_ms = 60000');
    for (let i = 0; i < 2; i++) expect((await failure(openSession(u, A))).kind).toBe('connect');
    const refused = await failure(openSession(u, B));
    expect(refused.kind).toBe('circuit_open');
    expect(refused.message).toMatch(/^Upstream 'unreachable' is unavailable: circuit open after 2 consecutive failures \(last: Failed to connect/);
  });

  it("an owner cannot hold the server's circuit open by being its trial: trials are one per owner, and one owner's failed trial does not reopen it", async () => {
    const u = await slowServer('trials', 500);
    const [a, b] = await Promise.all([openSession(u, A), openSession(u, B)]);
    expect((await slow(a, 1)).kind).toBe('timeout');
    expect((await slow(b, 2)).kind).toBe('timeout');
    expect(u.status().circuit).toBe('open');
    await eventually(() => expect(u.status().circuit).toBe('half_open'), 3_000);
    // A's trial is in flight, and stays so until it times out: B is not kept waiting for it.
    const aTrial = slow(a, 3);
    expect((await failure(echo(a, 4))).message).toMatch(/a trial request is in flight$/);
    expect((await aTrial).kind).toBe('timeout');
    expect(u.status().circuit).toBe('half_open');
    expect(resultText(await echo(b, 5))).toBe('Echo: fine');
    expect(u.status()).toMatchObject({ circuit: 'closed', healthy: true });
  });

  it("counts an owner's 5xx against that owner: its own requests get the 503, another's still reach the server", async () => {
    let reached = 0;
    const port = await listen(
      createHttpServer((req, res) => {
        reached++;
        req.resume();
        res.writeHead(req.url?.endsWith('/fail') ? 500 : 404).end();
      }),
    );
    const u = httpUpstream('owned', `http://127.0.0.1:${port}/mcp`, 'circuit_failure_threshold = 2\ncircuit_open_ms = 60000');
    for (let i = 0; i < 2; i++) expect((await failure(openSession(u, A, '/fail'))).message).toBe("Upstream 'owned' answered HTTP 500");
    const before = reached;
    expect((await failure(openSession(u, A, '/fail'))).kind).toBe('circuit_open');
    expect(reached).toBe(before);
    expect((await failure(openSession(u, B, '/fail'))).message).toBe("Upstream 'owned' answered HTTP 500");
    expect(reached).toBe(before + 1);
  });

  it.sequential(`remembers at most ${MAX_OWNER_CIRCUITS} owners with failures, the oldest forgotten first`, async () => {
    const port = await listen(
      createHttpServer((req, res) => {
        req.resume();
        res.writeHead(req.url?.endsWith('/fail') ? 500 : 404).end();
      }),
    );
    const u = httpUpstream('many', `http://127.0.0.1:${port}/mcp`, 'circuit_failure_threshold = 2\ncircuit_open_ms = 60000');
    // Each owner fails once; an answer to someone else in between keeps the server's count at one.
    const failOnce = async (owner: string) => {
      expect((await failure(openSession(u, owner, '/fail'))).kind).toBe('protocol');
      expect((await failure(openSession(u, 'api_key:good', '/ok'))).message).toBe("Upstream 'many' answered HTTP 404");
    };
    for (let i = 0; i <= MAX_OWNER_CIRCUITS; i++) await failOnce(`api_key:owner-${i}`);
    // owner-0 was forgotten: its second failure is its first again, so its next request still goes.
    await failOnce('api_key:owner-0');
    await failOnce('api_key:owner-0');
    // That was its second failure since it was forgotten: now its circuit is open.
    expect((await failure(openSession(u, 'api_key:owner-0', '/fail'))).kind).toBe('circuit_open');
    // The newest is remembered: its second failure opens its circuit.
    await failOnce(`api_key:owner-${MAX_OWNER_CIRCUITS}`);
    expect((await failure(openSession(u, `api_key:owner-${MAX_OWNER_CIRCUITS}`, '/fail'))).kind).toBe('circuit_open');
    expect(u.status().circuit).toBe('closed');
  });
});
