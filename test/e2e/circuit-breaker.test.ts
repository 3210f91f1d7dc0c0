/**
 * A persistently failing upstream behind a real gateway: clients see the connection failures
 * (502), then the circuit opens and they get a fast 503 with Retry-After that says why; /ready,
 * /routes and /metrics show it; and once the server is back, the first request after the open
 * period goes through and everything works again, without restarting the gateway.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { EverythingServer, freePort } from '../helpers/everything.js';
import { curlPost, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { connectSdk, resultText, type SdkConnection } from '../helpers/sdk-client.js';

const OPEN_MS = 400;
const tools = (id: number) => ({ jsonrpc: '2.0', id, method: 'tools/list' });

let gw: RunningGateway | undefined;
let upstream: EverythingServer | undefined;
const clients: SdkConnection[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.client.close().catch(() => undefined)));
  await gw?.stop();
  await upstream?.stop();
  gw = undefined;
  upstream = undefined;
});

async function gatewayTo(port: number): Promise<RunningGateway> {
  gw = await startGateway(`
[[upstream.servers]]
name = "flaky"
path_prefix = "/flaky"
url = ${q(`http://127.0.0.1:${port}/mcp`)}
circuit_failure_threshold = 2
circuit_open_ms = ${OPEN_MS}
`);
  return gw;
}

async function json(url: string): Promise<{ status: number; body: any }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() };
}

async function circuitGauge(base: string): Promise<number | undefined> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const match = /^mcp_guard_upstream_circuit_open\{server="flaky"\} (\d+)$/m.exec(text);
  return match ? Number(match[1]) : undefined;
}

/** Waits, without sending a request upstream, until the open period is over. */
async function untilHalfOpen(base: string): Promise<void> {
  await waitFor(async () => (await json(`${base}/routes`)).body.routes[0].circuit === 'half_open', 5_000, 'the circuit to become half-open');
}

const CIRCUIT_OPEN = /^Upstream 'flaky' is unavailable: circuit open after 2 consecutive failures \(last: Failed to connect to 'flaky': ECONNREFUSED .*\); retrying in 1 s$/;

describe('circuit breaker through the gateway', () => {
  it('502s, then a fast 503 circuit-open with Retry-After, visible in /ready, /routes and /metrics; recovers once the server is back', async () => {
    const port = await freePort();
    const { url } = await gatewayTo(port);
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
    expect(refused.headers.get('retry-after')).toBe('1');
    // An SDK client's connect fails the same way, with the reason in its error.
    await expect(connectSdk(`${url}/mcp/flaky`)).rejects.toThrow(/circuit open after 2 consecutive failures/);

    const ready = await json(`${url}/ready`);
    expect(ready.status).toBe(503);
    expect(ready.body.servers).toEqual([
      expect.objectContaining({ name: 'flaky', healthy: false, circuit: 'open', error: expect.stringMatching(/circuit open after 2 consecutive failures/) }),
    ]);
    expect((await json(`${url}/routes`)).body.routes[0]).toMatchObject({ name: 'flaky', circuit: 'open', healthy: false });
    expect(await circuitGauge(url)).toBe(1);
    const opened = gw!.logs.map((l) => JSON.parse(l) as { level: number; msg: string; server?: string }).find((l) => l.msg.startsWith('upstream circuit opened'));
    expect(opened).toMatchObject({ level: 40, server: 'flaky' });

    // The server comes back; after the open period the next request is the trial, and succeeds.
    upstream = await EverythingServer.start('streamableHttp', port);
    await untilHalfOpen(url);
    const back = await curlPost(`${url}/mcp/flaky`, tools(4));
    expect(back.status).toBe(200);
    expect(back.json.result.tools.map((t: { name: string }) => t.name)).toContain('echo');

    const connection = await connectSdk(`${url}/mcp/flaky`);
    clients.push(connection);
    expect(resultText(await connection.client.callTool({ name: 'echo', arguments: { message: 'recovered' } }))).toBe('Echo: recovered');

    const readyAgain = await json(`${url}/ready`);
    expect(readyAgain.status).toBe(200);
    expect(readyAgain.body.servers[0]).toMatchObject({ name: 'flaky', healthy: true, circuit: 'closed' });
    expect(readyAgain.body.servers[0].error).toBeUndefined();
    expect(await circuitGauge(url)).toBe(0);
    expect(gw!.logs.some((l) => (JSON.parse(l) as { msg: string }).msg.startsWith('upstream circuit closed'))).toBe(true);
  });

  it('a client inside a session gets the same 503 and Retry-After on its requests, and a new session once the server is back', async () => {
    const port = await freePort();
    upstream = await EverythingServer.start('streamableHttp', port);
    const { url } = await gatewayTo(port);
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
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(refused.headers.get('mcp-session-id')).toBe(session['mcp-session-id']);

    await upstream.start();
    await untilHalfOpen(url);
    // The restarted server forgot the session: the client is told to start a new one (404), and
    // that answer from the server closes the circuit.
    const expired = await curlPost(`${url}/mcp/flaky`, tools(6), session);
    expect(expired.status).toBe(404);
    expect((await json(`${url}/routes`)).body.routes[0].circuit).toBe('closed');
    const connection = await connectSdk(`${url}/mcp/flaky`);
    clients.push(connection);
    expect(resultText(await connection.client.callTool({ name: 'echo', arguments: { message: 'again' } }))).toBe('Echo: again');
  });
});
