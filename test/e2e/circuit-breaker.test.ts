/**
 * A persistently failing upstream behind a real gateway: clients see the connection failures
 * (502), then the circuit opens and they get a fast 503 with Retry-After that says why; /ready,
 * /routes and /metrics show it; and once the server is back, the first request after the open
 * period goes through and everything works again, without restarting the gateway.
 *
 * Every test has a gateway and upstream of its own (ended when it finishes) and the tests run
 * concurrently: most of their time is spent waiting, for an open period or a timeout_ms.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { generateApiKey, hashApiKey } from '../../src/auth/key-format.js';
import { EverythingServer, freePort } from '../helpers/everything.js';
import { curlPost, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { connectSdk, resultText, type SdkConnection } from '../helpers/sdk-client.js';

/**
 * Long enough that the checks made while the circuit is open (a refusal, an SDK connect, /ready,
 * /routes, /metrics) all fit in it on a busy machine; the Retry-After and message say whole
 * seconds up to it.
 */
const OPEN_MS = 4_000;
const OPEN_SECS = Math.ceil(OPEN_MS / 1000);
const tools = (id: number) => ({ jsonrpc: '2.0', id, method: 'tools/list' });

/** What one test started: its clients, gateway and upstream are ended (in that order) when it finishes. */
interface Owned {
  gw?: RunningGateway;
  upstream?: EverythingServer;
  clients: SdkConnection[];
}

function owned(context: TestContext): Owned {
  const mine: Owned = { clients: [] };
  context.onTestFinished(async () => {
    await Promise.all(mine.clients.splice(0).map((c) => c.client.close().catch(() => undefined)));
    await mine.gw?.stop();
    await mine.upstream?.stop();
  });
  return mine;
}

async function gatewayTo(mine: Owned, port: number): Promise<RunningGateway> {
  const gw = await startGateway(`
[[upstream.servers]]
name = "flaky"
path_prefix = "/flaky"
url = ${q(`http://127.0.0.1:${port}/mcp`)}
circuit_failure_threshold = 2
circuit_open_ms = ${OPEN_MS}
`);
  mine.gw = gw;
  return gw;
}

async function json(url: string): Promise<{ status: number; body: any }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() };
}

async function circuitGauge(base: string, server = 'flaky'): Promise<number | undefined> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const match = new RegExp(`^mcp_guard_upstream_circuit_open\\{server="${server}"\\} (\\d+)$`, 'm').exec(text);
  return match ? Number(match[1]) : undefined;
}

/** Waits, without sending a request upstream, until the open period is over. */
/** A Retry-After of whole seconds within the open period. */
function expectRetryAfter(value: string | null): void {
  expect(Number(value)).toBeGreaterThanOrEqual(1);
  expect(Number(value)).toBeLessThanOrEqual(OPEN_SECS);
}

async function untilHalfOpen(base: string): Promise<void> {
  await waitFor(async () => (await json(`${base}/routes`)).body.routes[0].circuit === 'half_open', OPEN_MS + 10_000, 'the circuit to become half-open');
}

const CIRCUIT_OPEN =
  /^Upstream 'flaky' is unavailable: circuit open after 2 consecutive failures \(last: Failed to connect to 'flaky': ECONNREFUSED .*\); retrying in \d s$/;

describe.concurrent('circuit breaker through the gateway', () => {
  it('502s, then a fast 503 circuit-open with Retry-After, visible in /ready, /routes and /metrics; recovers once the server is back', async (context) => {
    const mine = owned(context);
    const port = await freePort();
    const { url, logs } = await gatewayTo(mine, port);
    expect(await circuitGauge(url)).toBe(0);

    for (let id = 1; id <= 2; id++) {
      const res = await curlPost(`${url}/mcp/flaky`, tools(id));
      expect(res.status).toBe(502);
      expect(res.json.error.code).toBe(-32000);
      expect(res.json.error.message).toMatch(/^Failed to connect to 'flaky': ECONNREFUSED/);
      expect(res.headers.get('retry-after')).toBeNull();
    }

    const refused = await curlPost(`${url}/mcp/flaky`, tools(3));
    expect(refused.status).toBe(503);
    expect(refused.json).toEqual({ jsonrpc: '2.0', id: 3, error: { code: -32000, message: expect.stringMatching(CIRCUIT_OPEN) } });
    expectRetryAfter(refused.headers.get('retry-after'));
    // An SDK client's connect fails the same way, with the reason in its error.
    await expect(connectSdk(`${url}/mcp/flaky`)).rejects.toThrow(/circuit open after 2 consecutive failures/);

    const ready = await json(`${url}/ready`);
    expect(ready.status).toBe(503);
    expect(ready.body.servers).toEqual([
      expect.objectContaining({ name: 'flaky', healthy: false, circuit: 'open', error: expect.stringMatching(/circuit open after 2 consecutive failures/) }),
    ]);
    expect((await json(`${url}/routes`)).body.routes[0]).toMatchObject({ name: 'flaky', circuit: 'open', healthy: false });
    expect(await circuitGauge(url)).toBe(1);
    const opened = logs.map((l) => JSON.parse(l) as { level: number; msg: string; server?: string }).find((l) => l.msg.startsWith('upstream circuit opened'));
    expect(opened).toMatchObject({ level: 40, server: 'flaky' });

    // The server comes back; after the open period the next request is the trial, and succeeds.
    mine.upstream = await EverythingServer.start('streamableHttp', port);
    await untilHalfOpen(url);
    const back = await curlPost(`${url}/mcp/flaky`, tools(4));
    expect(back.status).toBe(200);
    expect(back.json.result.tools.map((t: { name: string }) => t.name)).toContain('echo');

    const connection = await connectSdk(`${url}/mcp/flaky`);
    mine.clients.push(connection);
    expect(resultText(await connection.client.callTool({ name: 'echo', arguments: { message: 'recovered' } }))).toBe('Echo: recovered');

    const readyAgain = await json(`${url}/ready`);
    expect(readyAgain.status).toBe(200);
    expect(readyAgain.body.servers[0]).toMatchObject({ name: 'flaky', healthy: true, circuit: 'closed' });
    expect(readyAgain.body.servers[0].error).toBeUndefined();
    expect(await circuitGauge(url)).toBe(0);
    expect(logs.some((l) => (JSON.parse(l) as { msg: string }).msg.startsWith('upstream circuit closed'))).toBe(true);
  });

  it('a client inside a session gets the same 503 and Retry-After on its requests, and a new session once the server is back', async (context) => {
    const mine = owned(context);
    const port = await freePort();
    const upstream = (mine.upstream = await EverythingServer.start('streamableHttp', port));
    const { url } = await gatewayTo(mine, port);
    const init = await curlPost(`${url}/mcp/flaky`, {
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'curl', version: '1' } },
    });
    expect(init.status).toBe(200);
    const session = { 'mcp-session-id': init.headers.get('mcp-session-id')!, 'mcp-protocol-version': '2025-06-18' };
    expect((await curlPost(`${url}/mcp/flaky`, tools(2), session)).status).toBe(200);

    await upstream.stop();
    for (let id = 3; id <= 4; id++) expect((await curlPost(`${url}/mcp/flaky`, tools(id), session)).status).toBe(502);
    const refused = await curlPost(`${url}/mcp/flaky`, tools(5), session);
    expect(refused.status).toBe(503);
    expect(refused.json.error.message).toMatch(CIRCUIT_OPEN);
    expectRetryAfter(refused.headers.get('retry-after'));
    expect(refused.headers.get('mcp-session-id')).toBe(session['mcp-session-id']);

    await upstream.start();
    await untilHalfOpen(url);
    // The restarted server forgot the session: the client is told to start a new one (404), and
    // that answer from the server closes the circuit.
    const expired = await curlPost(`${url}/mcp/flaky`, tools(6), session);
    expect(expired.status).toBe(404);
    expect((await json(`${url}/routes`)).body.routes[0].circuit).toBe('closed');
    const connection = await connectSdk(`${url}/mcp/flaky`);
    mine.clients.push(connection);
    expect(resultText(await connection.client.callTool({ name: 'echo', arguments: { message: 'again' } }))).toBe('Echo: again');
  });
});

describe.concurrent('finding 5: one identity opens the circuit for everyone', () => {
  const TIMEOUT_MS = 1500;
  const keys = { a: generateApiKey(), b: generateApiKey(), c: generateApiKey() };
  const as = (key: { key: string }) => ({ authorization: `Bearer ${key.key}` });
  const call = (id: number, name: string, args: Record<string, unknown>) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } });
  /** Well-formed, and longer than the server's timeout_ms. */
  const slow = (id: number) => call(id, 'trigger-long-running-operation', { duration: 20, steps: 1 });
  /** The keys' hashes, made once for the tests of this block (argon2 takes a while). */
  const hashes = new Map<string, string>();
  beforeAll(async () => {
    for (const k of Object.values(keys)) hashes.set(k.key, await hashApiKey(k.key));
  });

  /** A gateway in front of an upstream of this test's, with its audit file in a temp dir removed when the test finishes. */
  async function gatewayWithKeys(context: TestContext, aTools: string[]): Promise<{ gw: RunningGateway; endpoint: string; dir: string }> {
    const mine = owned(context);
    const dir = mkdtempSync(join(tmpdir(), 'mcp-guard-circuit-'));
    context.onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const upstream = (mine.upstream = await EverythingServer.start('streamableHttp'));
    const key = (id: string, k: { prefix: string; key: string }, extra = '') =>
      `[[auth.api_keys]]\nid = ${q(id)}\nkey_prefix = ${q(k.prefix)}\nkey_hash = ${q(hashes.get(k.key)!)}\n${extra}`;
    const gw = (mine.gw = await startGateway(`
[[upstream.servers]]
name = "everything"
path_prefix = "/everything"
url = ${q(upstream.url)}
timeout_ms = ${TIMEOUT_MS}
circuit_failure_threshold = 2
circuit_open_ms = 60000

[auth]
protect_metrics = false

${key('a', keys.a, `allowed_tools = ${JSON.stringify(aTools)}`)}
${key('b', keys.b)}
${key('c', keys.c)}

[audit]
file = ${q(join(dir, 'audit.log'))}
`));
    return { gw, endpoint: `${gw.url}/mcp/everything`, dir };
  }

  it('the exact attack: tools/list with params._meta = [] gets -32602 at once, is audited, and never counts: the circuit stays closed for another identity', async (context) => {
    const { gw, endpoint, dir } = await gatewayWithKeys(context, ['echo']);
    const attack = (id: number) => ({ jsonrpc: '2.0', id, method: 'tools/list', params: { _meta: [] } });
    for (let id = 1; id <= 4; id++) {
      const res = await curlPost(endpoint, attack(id), as(keys.a));
      expect(res.status).toBe(400);
      expect(res.json).toEqual({ jsonrpc: '2.0', id, error: { code: -32602, message: 'Invalid params: tools/list: params._meta must be an object' } });
    }
    const ready = await json(`${gw.url}/ready`);
    expect(ready.status).toBe(200);
    expect(ready.body.servers[0]).toMatchObject({ name: 'everything', healthy: true, circuit: 'closed' });
    const other = await curlPost(endpoint, tools(5), as(keys.b));
    expect(other.status).toBe(200);
    expect(other.json.result.tools.map((t: { name: string }) => t.name)).toContain('trigger-long-running-operation');
    // Nor against the sender: its own well-formed requests go through (cut to its one tool).
    const own = await curlPost(endpoint, tools(6), as(keys.a));
    expect(own.json.result.tools.map((t: { name: string }) => t.name)).toEqual(['echo']);

    await gw.app.recorder.audit.flush();
    const refused = readFileSync(join(dir, 'audit.log'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((e) => e['event_type'] === 'request_refused');
    expect(refused).toHaveLength(4);
    expect(refused[0]).toMatchObject({
      identity_id: 'a',
      provider: 'api_key',
      server: 'everything',
      method: 'tools/list',
      success: false,
      reason: 'invalid params',
      error: { code: -32602, message: 'Invalid params: tools/list: params._meta must be an object' },
    });
  });

  it("a well-formed request that times out, sent again and again by A, opens A's circuit only (B's call succeeds); failures of two identities still open it for everyone", async (context) => {
    const { gw, endpoint } = await gatewayWithKeys(context, ['echo', 'trigger-long-running-operation']);
    for (let id = 1; id <= 2; id++) {
      const res = await curlPost(endpoint, slow(id), as(keys.a));
      expect(res.status).toBe(504);
      expect(res.json.error.message).toBe(`Upstream 'everything' did not answer within ${TIMEOUT_MS} ms`);
    }
    const refusedA = await curlPost(endpoint, call(3, 'echo', { message: 'a' }), as(keys.a));
    expect(refusedA.status).toBe(503);
    expect(refusedA.json.error.message).toMatch(
      /^Upstream 'everything' is unavailable to this identity: circuit open after 2 consecutive failures \(last: .*did not answer within/,
    );
    expect(Number(refusedA.headers.get('retry-after'))).toBeGreaterThan(50);

    // B (and C) are not A: their calls reach the server, and the server's circuit is closed.
    for (const [id, key] of [
      [4, keys.b],
      [5, keys.c],
    ] as const) {
      const res = await curlPost(endpoint, call(id, 'echo', { message: 'mine' }), as(key));
      expect(res.status).toBe(200);
      expect(res.json.result.content[0].text).toBe('Echo: mine');
    }
    expect((await json(`${gw.url}/ready`)).body.servers[0]).toMatchObject({ healthy: true, circuit: 'closed' });
    expect(await circuitGauge(gw.url, 'everything')).toBe(0);

    // Two identities in a row find the server failing: that is the server's, for everyone.
    expect((await curlPost(endpoint, slow(6), as(keys.b))).status).toBe(504);
    expect((await curlPost(endpoint, slow(7), as(keys.c))).status).toBe(504);
    const refusedB = await curlPost(endpoint, call(8, 'echo', { message: 'b' }), as(keys.b));
    expect(refusedB.status).toBe(503);
    expect(refusedB.json.error.message).toMatch(/^Upstream 'everything' is unavailable: circuit open after 2 consecutive failures/);
    const ready = await json(`${gw.url}/ready`);
    expect(ready.status).toBe(503);
    expect(ready.body.servers[0]).toMatchObject({ healthy: false, circuit: 'open' });
  });
});
