/**
 * `[server] shutdown_delay_ms` on a real `mcp-guard serve`: after SIGTERM, /ready answers 503 at
 * once while every other request is still served (on new connections too) with
 * `Connection: close`, for the configured delay; then the usual graceful stop. A second signal
 * during the delay starts the graceful stop at once (exit 0), it does not kill the process.
 */
import { Agent, request } from 'undici';
import { describe, expect, it, type TestContext } from 'vitest';
import { CliProcess, NODE, q, waitFor, writeConfig } from '../helpers/cli.js';
import { cliFile, ownedBy } from '../helpers/concurrent-cli.js';
import { EVERYTHING } from '../helpers/gateway.js';

cliFile();

const UPSTREAM = `[[upstream.servers]]\nname = "everything"\npath_prefix = "/everything"\ntransport = "stdio"\ncommand = ${q(NODE)}\nargs = [${q(EVERYTHING)}, "stdio"]\n`;
const ECHO = { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { message: 'still here' } } };

function serve(context: TestContext, server: string): CliProcess {
  return ownedBy(context, new CliProcess(['serve', '-c', writeConfig(`[server]\n${server}\n${UPSTREAM}`), '--host', '127.0.0.1', '--port', '0']));
}

async function get(agent: Agent, url: string): Promise<{ status: number; connection: unknown }> {
  const res = await request(url, { dispatcher: agent });
  await res.body.text();
  return { status: res.statusCode, connection: res.headers['connection'] };
}

async function echo(agent: Agent, base: string): Promise<{ status: number; connection: unknown; text: string }> {
  const res = await request(`${base}/mcp/everything`, {
    method: 'POST',
    dispatcher: agent,
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify(ECHO),
  });
  return { status: res.statusCode, connection: res.headers['connection'], text: await res.body.text() };
}

// Generous bounds: gateways start slowly on a busy machine; no assertion depends on its speed.
describe.concurrent('serve: shutdown_delay_ms', { timeout: 150_000 }, () => {
  it('after SIGTERM: /ready 503 at once, every other request still served with Connection: close, then the graceful stop', async (context) => {
    // Long enough for the requests below to land inside it on a busy machine.
    const DELAY_MS = 8_000;
    const gw = serve(context, `shutdown_delay_ms = ${DELAY_MS}\nshutdown_grace_ms = 2000`);
    const base = await gw.address(60_000);
    const agent = new Agent({ keepAliveTimeout: 60_000 });
    context.onTestFinished(() => agent.close());
    await waitFor(async () => (await get(agent, `${base}/ready`)).status === 200, 60_000, '/ready 200');
    const before = await echo(agent, base);
    expect(before.status, before.text).toBe(200);
    expect(before.connection).not.toBe('close');

    const sentAt = gw.signal('SIGTERM');
    await waitFor(async () => (await get(agent, `${base}/ready`)).status === 503, 10_000, '/ready 503');
    // Served during the delay (a fresh connection each time: the last answer said close).
    const during = await echo(agent, base);
    expect(during.status, during.text).toBe(200);
    expect(JSON.parse(during.text).result.content[0].text).toContain('still here');
    expect(during.connection).toBe('close');
    expect((await get(agent, `${base}/health`)).connection).toBe('close');
    expect(gw.running).toBe(true);

    const exit = await gw.waitExit(DELAY_MS + 2_000 + 15_000);
    expect(exit).toMatchObject({ code: 0, signal: null });
    // The delay is the behaviour: the process cannot have stopped before it ran out.
    expect(exit.at - sentAt).toBeGreaterThanOrEqual(DELAY_MS * 0.9);
    const msgs = gw.logLines().map((l) => l['msg']);
    expect(msgs).toContain('stopped');
    expect(gw.logLines().find((l) => l['msg'] === 'shutting down')).toMatchObject({ delayMs: DELAY_MS, graceMs: 2000 });
  });

  it('a second SIGTERM during the delay starts the graceful stop at once: exit 0 long before the delay ends', async (context) => {
    const DELAY_MS = 120_000;
    const gw = serve(context, `shutdown_delay_ms = ${DELAY_MS}`);
    const base = await gw.address(60_000);
    const agent = new Agent();
    context.onTestFinished(() => agent.close());
    await waitFor(async () => (await get(agent, `${base}/ready`)).status === 200, 60_000, '/ready 200');
    gw.signal('SIGTERM');
    await waitFor(async () => (await get(agent, `${base}/ready`)).status === 503, 10_000, '/ready 503');
    expect((await echo(agent, base)).status).toBe(200);
    gw.signal('SIGINT');
    // A tenth of the delay: ample for a graceful stop with nothing in flight, far from the delay itself.
    const exit = await gw.waitExit(DELAY_MS / 10);
    expect(exit).toMatchObject({ code: 0, signal: null });
    const msgs = gw.logLines().map((l) => l['msg']);
    expect(msgs).toContain('second signal: ending the shutdown delay, stopping now');
    expect(msgs).toContain('stopped');
  });

  it('without a delay (the default) SIGTERM stops accepting at once, as before', async (context) => {
    const gw = serve(context, '');
    const base = await gw.address(60_000);
    const agent = new Agent();
    context.onTestFinished(() => agent.close());
    await waitFor(async () => (await get(agent, `${base}/ready`)).status === 200, 60_000, '/ready 200');
    gw.signal('SIGTERM');
    const exit = await gw.waitExit(15_000);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(gw.logLines().find((l) => l['msg'] === 'shutting down')).toMatchObject({ delayMs: 0 });
  });
});
