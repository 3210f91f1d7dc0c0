/**
 * Upstream faults, end to end: `mcp-guard serve` as a real process, real MCP clients (the official
 * SDK client and plain HTTP), and upstreams that misbehave on purpose (fault-stdio-server.mjs,
 * fault-upstreams.ts): a child that hangs, stops reading, writes garbage or huge lines, exits at
 * start or is killed; HTTP servers that refuse connections, answer 5xx, stall, drop their streams
 * or answer with what is not MCP. Each fault is followed by a good request to the same server on
 * the same gateway: recovery without a restart of the gateway.
 *
 * One gateway serves every test; each test has its own server(s), so that a fault of one can
 * also be seen not to disturb the others. All traffic stays on 127.0.0.1.
 *
 * The stdio blocks and the refused-connection block run concurrently (describe.concurrent), each on
 * servers of its own (`faulty` takes the calls of three blocks, none of which restarts it or reads
 * another's calls); the tests within a block, one after the other. The blocks on `flaky` and
 * `legacy` come after them, one test at a time, as before: one turns the whole server down, and
 * another drops the legacy stream.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/everything.js';
import { CliProcess, leftovers, marker, NODE, processesWith, q, runCli, tempDir, trackProcesses, waitFor, writeConfig } from '../helpers/cli.js';
import { connectSdk, resultText, type SdkConnection } from '../helpers/sdk-client.js';
import { BODY_SECRET, startFaultUpstream, type FaultHttpUpstream } from './fault-upstreams.js';
import { childrenOf, ready, serveConfig, toolCall } from './helpers.js';

trackProcesses();

const FAULT_SERVER = new URL('./fault-stdio-server.mjs', import.meta.url).pathname;
/** The configured credential of the HTTP upstream: never in a client's answer, never in a log. */
const UPSTREAM_TOKEN = 'Bearer upstream-token-5b2f90aa';
const MiB = 1024 * 1024;

const m = marker('faults');
const dir = tempDir();
const logOf = (server: string) => join(dir, `${server}.log`);
const crashFlag = join(dir, 'crashy-may-start');

let gw: CliProcess;
let base: string;
let flaky: FaultHttpUpstream;
let legacy: FaultHttpUpstream;
/** Started by the tests, on the ports the gateway found refusing. */
let lateHttp: FaultHttpUpstream | undefined;
let lateSse: FaultHttpUpstream | undefined;
let refusedPort: number;
let refusedSsePort: number;
const clients: SdkConnection[] = [];

function stdioServer(name: string, fields: string, extraArgs: string[] = []): string {
  return (
    `[[upstream.servers]]\nname = ${q(name)}\npath_prefix = "/${name}"\ntransport = "stdio"\ncommand = ${q(NODE)}\n` +
    `args = [${[FAULT_SERVER, logOf(name), m, ...extraArgs].map(q).join(', ')}]\n${fields}\n`
  );
}

function httpServer(name: string, transport: 'http' | 'sse', url: string, fields: string): string {
  return `[[upstream.servers]]\nname = ${q(name)}\npath_prefix = "/${name}"\ntransport = "${transport}"\nurl = ${q(url)}\n${fields}\n`;
}

beforeAll(async () => {
  [flaky, legacy, refusedPort, refusedSsePort] = await Promise.all([startFaultUpstream('http'), startFaultUpstream('sse'), freePort(), freePort()]);
  // The wrapper: `sh -c` runs the server as its child (no exec), and the server keeps the pipes
  // when the sh is killed: the gateway sees its child's exit well before the pipes close.
  const wrapper = `"$0" "$1" "$2" "$3" --stubborn; exit $?`;
  const toml =
    `[server]\nshutdown_grace_ms = 2000\n\n` +
    stdioServer('faulty', 'timeout_ms = 1500\nrestart_backoff_ms = 100') +
    // The same server for answers of tens of MB: reading one takes about a second on a quiet
    // machine and more on a busy one, so its deadline is far from what the tests time.
    stdioServer('bulky', 'timeout_ms = 30000\nrestart_backoff_ms = 100') +
    // Its test makes more than circuit_failure_threshold requests fail in a row on purpose.
    stdioServer('deaf', 'timeout_ms = 2000\nrestart_backoff_ms = 100\ncircuit_failure_threshold = 0') +
    stdioServer('crashy', 'restart_backoff_ms = 100\nrestart_backoff_max_ms = 400\nmax_restarts = 2\nstartup_timeout_ms = 5000', [
      '--crash-unless',
      crashFlag,
    ]) +
    `[[upstream.servers]]\nname = "wrapped"\npath_prefix = "/wrapped"\ntransport = "stdio"\ncommand = "sh"\n` +
    `args = ["-c", ${q(wrapper)}, ${q(NODE)}, ${q(FAULT_SERVER)}, ${q(logOf('wrapped'))}, ${q(m)}]\ntimeout_ms = 10000\nrestart_backoff_ms = 100\n\n` +
    httpServer('refused', 'http', `http://127.0.0.1:${refusedPort}/mcp`, 'timeout_ms = 3000') +
    httpServer('refused_sse', 'sse', `http://127.0.0.1:${refusedSsePort}/sse`, 'timeout_ms = 3000\nstartup_timeout_ms = 3000') +
    httpServer('flaky', 'http', flaky.url, `timeout_ms = 1500\nheaders = { Authorization = ${q(UPSTREAM_TOKEN)} }`) +
    httpServer('legacy', 'sse', legacy.url, 'timeout_ms = 1500\nstartup_timeout_ms = 3000');
  gw = serveConfig(toml, dir);
  base = await gw.address();
  await waitFor(
    async () => {
      const { body } = await ready(base);
      return ['faulty', 'bulky', 'deaf', 'wrapped'].every((name) => body.servers.find((s: { name: string }) => s.name === name)?.healthy);
    },
    15_000,
    'the stdio servers to be ready',
  );
}, 60_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.client.close().catch(() => undefined)));
  if (gw?.running) {
    gw.signal('SIGTERM');
    const exit = await gw.waitExit(15_000);
    expect(exit.code).toBe(0);
  }
  await Promise.all([flaky, legacy, lateHttp, lateSse].map((u) => u?.stop()));
  // Every process of the test (children and the stubborn grandchild) ended with the gateway.
  expect(await leftovers(m, 3_000)).toEqual([]);
}, 30_000);

/** A JSON-RPC POST as a plain HTTP client sends it: JSON only, so every error keeps its status. */
async function post(server: string, body: unknown): Promise<{ status: number; json: any; text: string }> {
  const res = await fetch(`${base}/mcp/${server}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

let nextId = 1;
const call = (server: string, tool: string, args: Record<string, unknown> = {}) => post(server, toolCall(nextId++, tool, args));

/** What a user depends on in a failure: the status, the JSON-RPC code, and a message naming the server. */
function expectFailure(res: { status: number; json: any; text: string }, status: number, code: number, server: string): string {
  expect(res.status, res.text).toBe(status);
  expect(res.json).toMatchObject({ jsonrpc: '2.0', error: { code } });
  const message: string = res.json.error.message;
  expect(message).toContain(`'${server}'`);
  return message;
}

/** The recovery check: the same server, same gateway, a good request. */
async function expectEcho(server: string, text = 'after'): Promise<string> {
  const res = await call(server, 'echo', { text });
  expect(res.status, res.text).toBe(200);
  const answer = resultText(res.json.result);
  expect(answer).toContain(`echo ${text}`);
  return answer;
}

const pidOf = (answer: string) => Number(/pid (\d+)/.exec(answer)?.[1]);

/** A process's resident memory (VmRSS), for the report. */
const rssMiB = (pid: number) => Math.round(Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024);

/** The lines fault-stdio-server.mjs logged for one server. */
function received(server: string): Array<{ pid: number; event: string; method?: string; id?: number; requestId?: number; reason?: string; tool?: string }> {
  const file = logOf(server);
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

function gatewayLogged(msg: string): Array<Record<string, unknown>> {
  return gw.logLines().filter((l) => l['msg'] === msg);
}

async function sdk(server: string): Promise<SdkConnection> {
  const connection = await connectSdk(`${base}/mcp/${server}`);
  clients.push(connection);
  return connection;
}

async function serverStatus(name: string): Promise<{ healthy: boolean; state: string; error?: string; restarts: number }> {
  const { body } = await ready(base);
  return body.servers.find((s: { name: string }) => s.name === name);
}

describe.concurrent('a stdio child that hangs', () => {
  it.sequential('gets a timely 504 naming the server, the child is sent notifications/cancelled, and the next call on the same child works', async () => {
    const pid = pidOf(await expectEcho('faulty', 'before'));
    const res = await call('faulty', 'hang');
    expect(expectFailure(res, 504, -32002, 'faulty')).toBe("Upstream 'faulty' did not answer within 1500 ms");
    // What the child saw: the call, then its cancellation, by the id it was sent.
    const hung = received('faulty').find((l) => l.tool === 'hang');
    expect(hung?.id).toBeTypeOf('number');
    await waitFor(() => received('faulty').some((l) => l.method === 'notifications/cancelled'), 5_000, 'the cancellation to reach the child');
    expect(received('faulty').find((l) => l.method === 'notifications/cancelled')).toMatchObject({ requestId: hung!.id, reason: 'timeout', pid });
    // The same child (no restart) answers the next call.
    expect(pidOf(await expectEcho('faulty'))).toBe(pid);
  });

  it.sequential('the same through the SDK client: the call rejects with the gateway error, the session goes on', async ({ expect }) => {
    const { client } = await sdk('faulty');
    await expect(client.callTool({ name: 'hang', arguments: {} })).rejects.toThrow(/Upstream 'faulty' did not answer within 1500 ms/);
    const result = await client.callTool({ name: 'echo', arguments: { text: 'sdk' } });
    expect(resultText(result)).toContain('echo sdk');
  });
});

describe.concurrent('a stdio child that stops reading its stdin', () => {
  it('refuses requests beyond 8 MiB of unread input at once (503), does not hold up other servers, and restarts the child', async () => {
    const pid = pidOf(await expectEcho('deaf', 'before'));
    const rssBefore = rssMiB(gw.pid);
    expect((await call('deaf', 'stop_reading')).status).toBe(200);
    // ~1 MB each: the pipe takes 64 KiB, then the gateway's buffer holds up to STDIN_BACKLOG_BYTES.
    const payload = 'a'.repeat(1_000_000);
    const calls = Array.from({ length: 14 }, () => call('deaf', 'echo', { text: payload }));
    // Meanwhile another stdio server answers as usual.
    await expectEcho('faulty', 'meanwhile');
    const results = await Promise.all(calls);
    const refused = results.filter((r) => r.status === 503);
    const accepted = results.filter((r) => r.status !== 503);
    for (const r of refused)
      expect(expectFailure(r, 503, -32000, 'deaf')).toMatch(/^Upstream 'deaf' has not read \d+ bytes of its input yet; request not sent$/);
    // Those written before the limit fail at their deadline, or when the child is ended.
    for (const r of accepted) {
      expect([502, 504], r.text).toContain(r.status);
      expect(r.json.error.message).toContain("'deaf'");
    }
    expect(refused.length).toBeGreaterThan(0);
    console.log(`deaf child: ${accepted.length} requests written, ${refused.length} refused at once; gateway RSS ${rssBefore} -> ${rssMiB(gw.pid)} MiB`);
    expect(accepted.length * 1_000_000).toBeLessThanOrEqual(8 * MiB + 2 * 1_000_000);
    // No write for timeout_ms: the child is ended, restarted, and serves again.
    await waitFor(() => gatewayLogged('upstream child is not reading its input; ending it').length > 0, 10_000, 'the gateway to end the deaf child');
    const after = await expectEcho('deaf');
    expect(pidOf(after)).not.toBe(pid);
    const status = await serverStatus('deaf');
    expect(status).toMatchObject({ healthy: true, state: 'ready' });
    expect(status.restarts).toBeGreaterThanOrEqual(1);
  });
});

describe.concurrent('a stdio child writing what is not a message', () => {
  it.sequential('skips garbage lines, JSON that is not JSON-RPC, invalid UTF-8 and a reply to no request', async () => {
    const res = await call('faulty', 'garbage');
    expect(res.status, res.text).toBe(200);
    expect(resultText(res.json.result)).toBe('garbage survived');
    // Logged (the gateway's log is written asynchronously): the three lines that are not JSON.
    await waitFor(() => gatewayLogged('upstream wrote a line that is not JSON; ignored').length >= 3, 5_000, 'the garbage to be logged');
    await expectEcho('faulty');
  });

  it.sequential('drops a 50 MB line up to its newline and goes on reading after it', async () => {
    const pid = pidOf(await expectEcho('bulky', 'before'));
    const res = await call('bulky', 'noise', { mb: 50 });
    expect(res.status, res.text).toBe(200);
    expect(resultText(res.json.result)).toBe(`noise done pid ${pid}`);
    await waitFor(
      () => gatewayLogged('upstream wrote a line over the size limit; dropped').some((l) => l['bytes'] === 50 * MiB),
      5_000,
      'the dropped line to be logged',
    );
    expect(pidOf(await expectEcho('bulky'))).toBe(pid);
  });

  it.sequential('fails a call whose answer is over the 32 MiB limit at once (502), not at its deadline', async () => {
    const res = await call('bulky', 'huge_answer', { mb: 40 });
    expect(expectFailure(res, 502, -32000, 'bulky')).toMatch(/^Upstream 'bulky' answered with a message of \d+ bytes, over the limit of 33554432 bytes$/);
    await expectEcho('bulky');
  });

  it.sequential('passes valid answers of 5 MB and of just under 32 MiB intact', async () => {
    for (const bytes of [5_000_000, 32 * MiB - 1024]) {
      const res = await call('bulky', 'big', { bytes });
      expect(res.status).toBe(200);
      const text = resultText(res.json.result);
      expect(text.length).toBe(bytes);
      expect(text).toBe('0123456789'.repeat(Math.ceil(bytes / 10)).slice(0, bytes));
    }
  });
});

describe.concurrent('a stdio child that exits at start', () => {
  it('is restarted with backoff, reported as a crash loop with the reason, answered 503 naming it, and serves once it can start', async () => {
    await waitFor(async () => (await serverStatus('crashy')).state === 'crash_loop', 10_000, 'crashy to be in crash_loop');
    const status = await serverStatus('crashy');
    expect(status).toMatchObject({ healthy: false, error: "Upstream 'crashy' exited (code 3)" });
    expect(status.restarts).toBeGreaterThanOrEqual(2);
    const res = await call('crashy', 'echo', { text: 'no' });
    expect(expectFailure(res, 503, -32000, 'crashy')).toBe(
      "Upstream 'crashy' is not available: it keeps failing soon after it starts (crash loop); it is restarted every 400 ms; last error: Upstream 'crashy' exited (code 3)",
    );
    // The child's own words are in the gateway's log.
    await waitFor(() => gw.stderr.includes('fault-server: cannot start:'), 5_000, "the child's stderr in the log");
    // check-upstream says why too.
    const config = writeConfig(stdioServer('crashy', '', ['--crash-unless', crashFlag]), 'crashy.toml', dir);
    const check = await runCli(['check-upstream', '-c', config, '--json', '--timeout', '5']);
    expect(check.code).toBe(1);
    expect(JSON.parse(check.stdout)).toMatchObject([{ name: 'crashy', ok: false, error: "Upstream 'crashy' exited (code 3)" }]);
    // The cause goes away: the next restart (at most 400 ms later) succeeds.
    writeFileSync(crashFlag, '');
    await waitFor(async () => (await serverStatus('crashy')).healthy, 10_000, 'crashy to recover');
    await expectEcho('crashy');
  });
});

describe.concurrent('a stdio request at the moment its child is killed', () => {
  it('waits for the restart and is answered by the new child (never a 503 "not available (ready)")', async () => {
    const before = pidOf(await expectEcho('wrapped', 'before'));
    const sh = childrenOf(gw.pid).find((c) => c.args.startsWith('sh ') && c.args.includes(logOf('wrapped')));
    expect(sh, JSON.stringify(childrenOf(gw.pid))).toBeDefined();
    process.kill(sh!.pid, 'SIGKILL');
    // The server (the sh's child) keeps the pipes for STRAGGLER_GRACE_MS: the gateway knows its
    // child exited, but the restart waits for the pipes. Call once the gateway knows (within that window).
    await waitFor(async () => !(await serverStatus('wrapped')).healthy, 5_000, 'the gateway to see its child exit');
    const res = await call('wrapped', 'echo', { text: 'at the kill' });
    expect(res.status, res.text).toBe(200);
    expect(resultText(res.json.result)).toContain('echo at the kill');
    expect(pidOf(resultText(res.json.result))).not.toBe(before);
    // The stubborn server of the killed wrapper is gone (its group was killed).
    await waitFor(() => !processesWith(m).some((p) => p.pid === before), 5_000, 'the old server to be gone');
  });
});

describe.concurrent('an HTTP upstream that refuses connections', () => {
  it(`answers 502 "Failed to connect to 'refused'", then serves once a server listens on that port`, async ({ expect }) => {
    const res = await call('refused', 'echo', { text: 'nobody' });
    expect(expectFailure(res, 502, -32000, 'refused')).toMatch(
      new RegExp(`^Failed to connect to 'refused': ECONNREFUSED \\(127\\.0\\.0\\.1:${refusedPort}\\)$`),
    );
    await expect(connectSdk(`${base}/mcp/refused`)).rejects.toThrow(/Failed to connect to 'refused'/);
    expect(await serverStatus('refused')).toMatchObject({ healthy: false, error: expect.stringContaining("Failed to connect to 'refused'") });
    lateHttp = await startFaultUpstream('http', refusedPort);
    await expectEcho('refused');
    const { client } = await sdk('refused');
    expect(resultText(await client.callTool({ name: 'echo', arguments: { text: 'sdk' } }))).toBe('echo sdk');
    expect(await serverStatus('refused')).toMatchObject({ healthy: true });
  });

  it(`the same for a legacy SSE upstream`, async ({ expect }) => {
    const res = await call('refused_sse', 'echo', { text: 'nobody' });
    expect(expectFailure(res, 502, -32000, 'refused_sse')).toContain("Failed to connect to 'refused_sse'");
    await expect(connectSdk(`${base}/mcp/refused_sse`)).rejects.toThrow(/Failed to connect to 'refused_sse'/);
    lateSse = await startFaultUpstream('sse', refusedSsePort);
    await expectEcho('refused_sse');
    const { client } = await sdk('refused_sse');
    expect(resultText(await client.callTool({ name: 'echo', arguments: { text: 'sdk' } }))).toBe('echo sdk');
  });
});

describe('an HTTP upstream answering 5xx', () => {
  it('answers 502 "answered HTTP N" naming the server, never the upstream body, and the next call works (a 401 too)', async () => {
    for (const status of [500, 502, 503, 401]) {
      for (const json of [false, true]) {
        const res = await call('flaky', 'fail', { status, json });
        expect(expectFailure(res, 502, -32000, 'flaky')).toBe(`Upstream 'flaky' answered HTTP ${status}`);
        expect(res.text).not.toContain(BODY_SECRET);
        expect(res.text).not.toContain(UPSTREAM_TOKEN);
        await expectEcho('flaky');
      }
    }
    // The log has a snippet of the body for the operator, without the configured credential.
    await waitFor(() => gatewayLogged('upstream answered an HTTP error').length >= 8, 5_000, 'the HTTP errors to be logged');
    const logged = gatewayLogged('upstream answered an HTTP error');
    expect(JSON.stringify(logged)).toContain(BODY_SECRET);
    expect(JSON.stringify(logged)).toContain('[redacted]');
    expect(gw.stderr).not.toContain(UPSTREAM_TOKEN);
  });

  it('a whole server answering 503 (a proxy before a dead server): sessions fail with 502 and work again once it is back', async () => {
    const { client } = await sdk('flaky');
    flaky.down = { status: 503, type: 'text/html', body: `<html><body>Service Unavailable ${BODY_SECRET}</body></html>` };
    try {
      await expect(client.callTool({ name: 'echo', arguments: { text: 'down' } })).rejects.toThrow(/Upstream 'flaky' answered HTTP 503/);
      await expect(connectSdk(`${base}/mcp/flaky`)).rejects.toThrow(/Upstream 'flaky' answered HTTP 503/);
      expect(expectFailure(await call('flaky', 'echo'), 502, -32000, 'flaky')).toBe("Upstream 'flaky' answered HTTP 503");
      expect(await serverStatus('flaky')).toMatchObject({ healthy: false, error: "Upstream 'flaky' answered HTTP 503" });
    } finally {
      flaky.down = undefined;
    }
    expect(resultText(await client.callTool({ name: 'echo', arguments: { text: 'back' } }))).toBe('echo back');
    await expectEcho('flaky');
    expect(await serverStatus('flaky')).toMatchObject({ healthy: true });
  });
});

describe('an HTTP upstream that stalls mid-stream', () => {
  it('answers 504 at timeout_ms after the last progress, aborts the upstream POST and posts notifications/cancelled', async () => {
    const started = Date.now();
    const res = await post('flaky', {
      jsonrpc: '2.0',
      id: 'stall-1',
      method: 'tools/call',
      params: { name: 'stall', arguments: { after_ms: 800 }, _meta: { progressToken: 'p-1' } },
    });
    const elapsed = Date.now() - started;
    expect(expectFailure(res, 504, -32002, 'flaky')).toBe("Upstream 'flaky' did not answer within 1500 ms");
    // The second progress (at 800 ms) restarted the 1500 ms clock.
    expect(elapsed).toBeGreaterThanOrEqual(800 + 1500 - 50);
    const wireId = flaky.received.find((r) => r.method === 'tools/call' && r.params?.['name'] === 'stall')?.id;
    await waitFor(() => flaky.aborted.includes(wireId!), 5_000, 'the upstream POST to be aborted');
    await waitFor(
      () => flaky.received.some((r) => r.method === 'notifications/cancelled' && r.params?.['requestId'] === wireId),
      5_000,
      'notifications/cancelled upstream',
    );
    await expectEcho('flaky');
  });

  it('the SDK client gets the progress, then the timeout error on the same stream', async () => {
    const { client } = await sdk('flaky');
    const progress: number[] = [];
    const error = await client
      .callTool({ name: 'stall', arguments: { after_ms: 0 } }, undefined, { onprogress: (p) => progress.push(p.progress) })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: -32002, message: expect.stringContaining("Upstream 'flaky' did not answer within 1500 ms") });
    expect(progress.length).toBeGreaterThanOrEqual(1);
    expect(resultText(await client.callTool({ name: 'echo', arguments: { text: 'sdk' } }))).toBe('echo sdk');
  });
});

describe('an HTTP upstream that never answers', () => {
  it('answers 504 at timeout_ms, aborts the upstream POST and posts notifications/cancelled', async () => {
    const res = await call('flaky', 'silent');
    expect(expectFailure(res, 504, -32002, 'flaky')).toBe("Upstream 'flaky' did not answer within 1500 ms");
    const wireId = flaky.received.find((r) => r.method === 'tools/call' && r.params?.['name'] === 'silent')?.id;
    await waitFor(() => flaky.aborted.includes(wireId!), 5_000, 'the upstream POST to be aborted');
    await waitFor(
      () => flaky.received.some((r) => r.method === 'notifications/cancelled' && r.params?.['requestId'] === wireId),
      5_000,
      'notifications/cancelled upstream',
    );
    await expectEcho('flaky');
  });
});

describe('an upstream that drops its stream', () => {
  it('streamable HTTP: a POST whose SSE answer is cut (socket destroyed) fails at once with 502, then the next call works', async () => {
    const res = await call('flaky', 'drop');
    expect(expectFailure(res, 502, -32000, 'flaky')).toBe("Upstream 'flaky' closed the connection while answering");
    await expectEcho('flaky');
    const { client } = await sdk('flaky');
    await expect(client.callTool({ name: 'drop', arguments: {} })).rejects.toThrow(/Upstream 'flaky' closed the connection while answering/);
    expect(resultText(await client.callTool({ name: 'echo', arguments: { text: 'sdk' } }))).toBe('echo sdk');
  });

  it.each([
    ['end_early', "Upstream 'flaky' ended the stream before answering"],
    ['close_early', `Upstream 'flaky' closed the connection before answering (127.0.0.1:PORT)`],
    ['not_http', `Upstream 'flaky' answered with something that is not HTTP (127.0.0.1:PORT)`],
  ])(
    'streamable HTTP %s: 502 saying what happened (never "Failed to connect": the request may have reached it), then the next call works',
    async (tool, message) => {
      expect(expectFailure(await call('flaky', tool), 502, -32000, 'flaky')).toBe(message.replace('PORT', String(flaky.port)));
      await expectEcho('flaky');
    },
  );

  it('legacy SSE: calls in flight fail at once with 502 when the GET stream drops; the gateway reconnects and the session goes on', async () => {
    const res = await call('legacy', 'drop');
    expect(expectFailure(res, 502, -32000, 'legacy')).toBe("The upstream closed the SSE stream ('legacy')");
    await expectEcho('legacy');
    const { client } = await sdk('legacy');
    const streams = legacy.streams;
    await expect(client.callTool({ name: 'drop', arguments: {} })).rejects.toThrow(/The upstream closed the SSE stream \('legacy'\)/);
    // The same client session, on a new upstream stream (its initialize replayed).
    expect(resultText(await client.callTool({ name: 'echo', arguments: { text: 'sdk' } }))).toBe('echo sdk');
    expect(legacy.streams).toBeGreaterThan(streams);
  });
});

describe('an upstream that answers with what is not MCP', () => {
  it.each([
    ['bad_json', "Upstream 'flaky' sent a body that is not JSON"],
    ['wrong_type', "Upstream 'flaky' answered a request with content-type 'text/html'"],
    ['wrong_id', "Upstream 'flaky' answered without a response to the request"],
    ['sse_bad_event', "Upstream 'flaky' sent a body that is not JSON"],
    ['huge_json', `Upstream 'flaky' answered with a body over the limit of ${32 * MiB} bytes`],
    ['huge_event', `Upstream 'flaky' sent an event over the size limit (Buffered data exceeded max buffer size of ${32 * MiB} characters)`],
  ])('streamable HTTP %s: 502 with what was wrong, then the next call works', async (tool, message) => {
    expect(expectFailure(await call('flaky', tool), 502, -32000, 'flaky')).toBe(message);
    await expectEcho('flaky');
  });

  it('legacy SSE: an event that is not JSON is dropped (it names no request): the call fails at its deadline, the stream goes on', async () => {
    expect(expectFailure(await call('legacy', 'bad_event'), 504, -32002, 'legacy')).toBe("Upstream 'legacy' did not answer within 1500 ms");
    await expectEcho('legacy');
  });
});
