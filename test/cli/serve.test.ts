/**
 * `mcp-guard serve` as a real process: readiness, a plain JSON-RPC POST, and the shutdown contract
 * of PRODUCT.md: on SIGTERM/SIGINT stop accepting, let in-flight requests finish within the grace
 * period, close upstreams, end every child process and its descendants, exit 0.
 *
 * Every stdio upstream here is started through a wrapper (sh, npx) so that the gateway's child has
 * children of its own; each test puts a unique marker in their arguments and looks for it with ps.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { existsSync, readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import { CliProcess, leftovers, NODE, processesWith, q, ROOT, runCli, tempDir, waitFor, writeConfig } from '../helpers/cli.js';
import { cliFile, ownedBy, testMarker as mark } from '../helpers/concurrent-cli.js';
import { atMostConcurrentTests } from '../helpers/concurrency.js';
import { EverythingServer, freePort } from '../helpers/everything.js';
import { curlPost, EVERYTHING } from '../helpers/gateway.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// The tests run concurrently (describe.concurrent), two at a time: each has its own gateway on
// its own port, and its own marker on the processes of its tree. Most of their time is waiting
// (calls in flight, grace periods, slow starts); the shutdown bounds asserted have slack for a busy machine.
cliFile();
atMostConcurrentTests(2);

function serve(context: TestContext, config: string, extra: string[] = []): CliProcess {
  return ownedBy(context, new CliProcess(['serve', '-c', writeConfig(config), '--host', '127.0.0.1', '--port', '0', ...extra]));
}

function stdioServer(name: string, command: string, args: string[], extra = ''): string {
  return `[[upstream.servers]]\nname = ${q(name)}\npath_prefix = ${q(`/${name}`)}\ntransport = "stdio"\ncommand = ${q(command)}\nargs = [${args.map(q).join(', ')}]\n${extra}\n`;
}

/** server-everything over stdio behind `sh -c`: the gateway's child (sh) has a child (node). */
function everythingViaShell(name: string, m: string, prelude = ''): string {
  // The trailing `; exit $?` keeps sh from exec-ing node, so the tree really has two levels.
  return stdioServer(name, 'sh', ['-c', `${prelude}${q(NODE)} ${q(EVERYTHING)} stdio ${m}; exit $?`]);
}

/**
 * everythingViaShell with the child's input copied to a file on its way (`tee`, in the same process
 * group): `calls()` counts the long-running calls that have reached the child.
 */
function everythingTeed(name: string, m: string): { config: string; calls: () => number } {
  const file = join(tempDir(), `${m}.stdin`);
  const calls = (): number => (existsSync(file) ? readFileSync(file, 'utf8').split('trigger-long-running-operation').length - 1 : 0);
  return { config: everythingViaShell(name, m, `tee -a ${q(file)} | `), calls };
}

function post(base: string, path: string, body: unknown): Promise<{ status: number; json: any; text: string }> {
  return curlPost(`${base}${path}`, body, { 'content-type': 'application/json' });
}

async function readyStatus(base: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${base}/ready`);
  return { status: res.status, body: await res.json() };
}

async function waitReady(base: string, timeoutMs = 20_000): Promise<void> {
  await waitFor(async () => (await readyStatus(base)).status === 200, timeoutMs, `${base}/ready to answer 200`);
}

/** True when a new TCP connection to the gateway's port is refused. */
function refused(base: string): Promise<boolean> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

const longCall = (id: number, duration: number) => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name: 'trigger-long-running-operation', arguments: { duration, steps: 4 } },
});

describe.concurrent('serve: shutdown', () => {
  it('SIGTERM: the in-flight call completes, new connections are refused, exit 0 within the grace period, no process of the tree remains', async (context) => {
    const m = mark('sigterm', context);
    const child = everythingTeed('everything', m);
    const gw = serve(context, `[server]\nshutdown_grace_ms = 8000\n\n${child.config}`);
    const base = await gw.address();
    expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    await waitReady(base);

    // The tree: sh and node, in a process group of their own (not the gateway's).
    const tree = processesWith(m);
    expect(tree.length, JSON.stringify(tree)).toBeGreaterThanOrEqual(2);
    const leader = tree.find((p) => p.ppid === gw.pid);
    expect(leader, JSON.stringify(tree)).toBeDefined();
    expect(tree.map((p) => p.pgid)).toEqual(tree.map(() => leader!.pid));

    const list = await post(base, '/mcp/everything', { jsonrpc: '2.0', id: 1, method: 'tools/list' });
    expect(list.status).toBe(200);
    expect(list.json.result.tools.length).toBeGreaterThan(0);

    const inflight = post(base, '/mcp/everything', longCall(2, 2));
    await waitFor(() => child.calls() > 0, 10_000, 'the call to reach the child');
    const sentAt = gw.signal('SIGTERM');

    await waitFor(() => refused(base), 2_000, 'new connections to be refused');
    await context.expect(fetch(`${base}/health`)).rejects.toThrow();

    const reply = await inflight;
    expect(reply.status, reply.text).toBe(200);
    expect(reply.json.id).toBe(2);
    expect(reply.json.result.content[0].text).toMatch(/Long running operation completed/);

    const exit = await gw.waitExit(12_000);
    const shutdownMs = Math.round(exit.at - sentAt);
    console.log(`serve SIGTERM with a 2 s call in flight: exit after ${shutdownMs} ms`);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(shutdownMs).toBeGreaterThan(1_000); // it did wait for the call
    expect(shutdownMs).toBeLessThan(8_000); // within the grace period
    const logs = gw.logLines().map((l) => l['msg']);
    expect(logs).toContain('shutting down');
    expect(logs).toContain('stopped');
    expect(await leftovers(m)).toEqual([]);
  });

  it('SIGINT with an npx-launched server (npx -> sh -> node): exit 0 promptly, the whole tree ends', async (context) => {
    const m = mark('sigint', context);
    const gw = serve(context, stdioServer('everything', 'npx', ['--no-install', '@modelcontextprotocol/server-everything', 'stdio', m], `cwd = ${q(ROOT)}`));
    const base = await gw.address();
    await waitReady(base, 30_000);
    expect(processesWith(m).length).toBeGreaterThanOrEqual(2);
    const list = await post(base, '/mcp/everything', { jsonrpc: '2.0', id: 1, method: 'tools/list' });
    expect(list.status).toBe(200);
    expect(list.json.result.tools.length).toBeGreaterThan(0);

    const sentAt = gw.signal('SIGINT');
    const exit = await gw.waitExit(10_000);
    const shutdownMs = Math.round(exit.at - sentAt);
    console.log(`serve SIGINT, idle, npx tree: exit after ${shutdownMs} ms`);
    expect(exit).toMatchObject({ code: 0, signal: null });
    // "Promptly" is the behaviour: nothing in flight, so well inside the default shutdown_grace_ms (10 s).
    expect(shutdownMs).toBeLessThan(10_000 / 2);
    expect(await leftovers(m)).toEqual([]);
  });

  it('a call longer than the grace period: exit 0 soon after the grace period, the client gets an answer, nothing remains', async (context) => {
    const m = mark('grace', context);
    const child = everythingTeed('everything', m);
    const gw = serve(context, `[server]\nshutdown_grace_ms = 1000\n\n${child.config}`);
    const base = await gw.address();
    await waitReady(base);
    const inflight = post(base, '/mcp/everything', longCall(7, 30)).catch((err: Error) => ({ status: 0, json: undefined, text: String(err) }));
    await waitFor(() => child.calls() > 0, 10_000, 'the call to reach the child');
    const sentAt = gw.signal('SIGTERM');
    const exit = await gw.waitExit(10_000);
    const shutdownMs = Math.round(exit.at - sentAt);
    console.log(`serve SIGTERM with a call longer than the 1 s grace period: exit after ${shutdownMs} ms`);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(shutdownMs).toBeGreaterThanOrEqual(900);
    expect(shutdownMs).toBeLessThan(4_000);
    // The cut-off call is answered with a JSON-RPC error naming the shutdown, not left hanging.
    const reply = await inflight;
    expect(reply.json?.id, reply.text).toBe(7);
    expect(reply.json?.error?.message, reply.text).toMatch(/shutting down|closed/i);
    expect(await leftovers(m)).toEqual([]);
  });

  it('SIGTERM with an SDK client holding a session and its event stream: exit 0 promptly', async (context) => {
    const m = mark('session', context);
    const gw = serve(context, `[server]\nshutdown_grace_ms = 8000\n\n${everythingViaShell('everything', m)}`);
    const base = await gw.address();
    await waitReady(base);
    // The SDK opens its standalone GET stream without telling: its fetch, watched, shows the 200.
    let streamOpen = false;
    const watched: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (init?.method === 'GET' && res.status === 200) streamOpen = true;
      return res;
    };
    const client = new Client({ name: 'cli-test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${base}/mcp/everything`), { fetch: watched }));
    expect((await client.listTools()).tools.length).toBeGreaterThan(0);
    await waitFor(() => streamOpen, 10_000, "the SDK client's GET stream to open");

    const sentAt = gw.signal('SIGTERM');
    const exit = await gw.waitExit(10_000);
    const shutdownMs = Math.round(exit.at - sentAt);
    console.log(`serve SIGTERM with an idle SDK session: exit after ${shutdownMs} ms`);
    expect(exit).toMatchObject({ code: 0, signal: null });
    // An idle session (an open event stream, no request in flight) does not hold up the shutdown: well inside the 8 s grace.
    expect(shutdownMs).toBeLessThan(8_000 / 2);
    await context.expect(client.listTools()).rejects.toThrow();
    await client.close().catch(() => undefined);
    expect(await leftovers(m)).toEqual([]);
  });

  it('SIGTERM during a streamed call (SDK client, progress over SSE): the stream runs to its result, then exit 0', async (context) => {
    const m = mark('stream', context);
    const gw = serve(context, `[server]\nshutdown_grace_ms = 8000\n\n${everythingViaShell('everything', m)}`);
    const base = await gw.address();
    await waitReady(base);
    const client = new Client({ name: 'cli-test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${base}/mcp/everything`)));
    let sentAt = 0;
    let progressAfterSignal = 0;
    let signalled!: () => void;
    const signalledOnce = new Promise<void>((resolve) => (signalled = resolve));
    const call = client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 2, steps: 5 } }, undefined, {
      onprogress: () => {
        if (sentAt === 0) {
          sentAt = gw.signal('SIGTERM');
          signalled();
        } else progressAfterSignal++;
      },
      timeout: 20_000,
    });
    await signalledOnce;
    const result = await call;
    expect((result.content as Array<{ text: string }>)[0]!.text).toMatch(/Long running operation completed/);
    expect(progressAfterSignal).toBeGreaterThanOrEqual(2);
    const exit = await gw.waitExit(10_000);
    console.log(`serve SIGTERM during a streamed 2 s call: exit after ${Math.round(exit.at - sentAt)} ms`);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(exit.at - sentAt).toBeLessThan(8_000);
    await client.close().catch(() => undefined);
    expect(await leftovers(m)).toEqual([]);
  });

  it('SIGTERM with a session on an http upstream that has stopped answering: exit 0 in bounded time', async (context) => {
    const upstream = await EverythingServer.start('streamableHttp');
    try {
      const gw = serve(
        context,
        `[server]\nshutdown_grace_ms = 2000\n\n[[upstream.servers]]\nname = "remote"\npath_prefix = "/remote"\nurl = ${q(upstream.url)}\ntimeout_ms = 60000\n`,
      );
      const base = await gw.address();
      await waitReady(base);
      const client = new Client({ name: 'cli-test', version: '1.0.0' });
      await client.connect(new StreamableHTTPClientTransport(new URL(`${base}/mcp/remote`)));
      expect((await client.listTools()).tools.length).toBeGreaterThan(0);
      // The upstream freezes: it keeps its connections but answers nothing (not even the DELETE).
      process.kill(upstream.pid!, 'SIGSTOP');
      void client.callTool({ name: 'echo', arguments: { message: 'into the void' } }).catch(() => undefined);
      // Must stay: the frozen upstream cannot show the call arrived; 300 ms lets it reach the gateway.
      await sleep(300);
      const sentAt = gw.signal('SIGTERM');
      const exit = await gw.waitExit(30_000);
      const shutdownMs = Math.round(exit.at - sentAt);
      console.log(`serve SIGTERM, frozen http upstream with a call in flight, 2 s grace: exit after ${shutdownMs} ms`);
      expect(exit).toMatchObject({ code: 0, signal: null });
      // The grace (2 s) bounds the wait on the frozen upstream; wide slack for a busy machine.
      expect(shutdownMs).toBeLessThan(2_000 + 6_000);
      await client.close().catch(() => undefined);
    } finally {
      if (upstream.pid) process.kill(upstream.pid, 'SIGCONT');
      await upstream.stop();
    }
  });

  it('a second signal exits at once, still ending the whole tree', async (context) => {
    const m = mark('twice', context);
    const child = everythingTeed('everything', m);
    const gw = serve(context, `[server]\nshutdown_grace_ms = 20000\n\n${child.config}`);
    const base = await gw.address();
    await waitReady(base);
    void post(base, '/mcp/everything', longCall(3, 30)).catch(() => undefined);
    await waitFor(() => child.calls() > 0, 10_000, 'the call to reach the child');
    gw.signal('SIGTERM');
    await gw.waitForLog('shutting down');
    // Must stay: an exit that does not happen has no barrier; 200 ms is a wide margin for a wrong one.
    await sleep(200);
    expect(gw.running).toBe(true); // waiting for the call
    const sentAt = gw.signal('SIGINT');
    const exit = await gw.waitExit(5_000);
    console.log(`serve second signal: exit after ${Math.round(exit.at - sentAt)} ms, code ${exit.code}`);
    expect(exit.signal).toBeNull();
    expect(exit.code).not.toBe(0); // the in-flight call was cut short
    // "At once" is the behaviour: far inside the 20 s grace the first signal would have waited.
    expect(exit.at - sentAt).toBeLessThan(20_000 / 4);
    expect(await leftovers(m)).toEqual([]);
  });

  it('a child that ignores SIGTERM is killed: exit 0, nothing remains', async (context) => {
    const m = mark('stubborn', context);
    // node ignores SIGTERM and keeps the pipes open; everything still runs beside it.
    const stubborn = `${q(NODE)} -e 'process.on("SIGTERM", () => {}); setInterval(() => {}, 1000)' ${m} & `;
    const gw = serve(context, `[server]\nshutdown_grace_ms = 5000\n\n${everythingViaShell('everything', m, stubborn)}`);
    const base = await gw.address();
    await waitReady(base);
    expect(processesWith(m).length).toBeGreaterThanOrEqual(3);
    const sentAt = gw.signal('SIGTERM');
    const exit = await gw.waitExit(10_000);
    const shutdownMs = Math.round(exit.at - sentAt);
    console.log(`serve SIGTERM, a grandchild ignoring SIGTERM: exit after ${shutdownMs} ms`);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(shutdownMs).toBeLessThan(5_000);
    expect(await leftovers(m)).toEqual([]);
  });

  it('SIGTERM while the upstream is still starting: exit 0 at once, nothing remains', async (context) => {
    const m = mark('starting', context);
    const slow = `${q(NODE)} -e 'setTimeout(() => {}, 10000)' ${m} && `;
    const gw = serve(context, everythingViaShell('everything', m, slow));
    const base = await gw.address();
    await waitFor(() => processesWith(m).length > 0, 5_000, 'the slow child to start');
    expect((await readyStatus(base)).status).toBe(503);
    const sentAt = gw.signal('SIGTERM');
    const exit = await gw.waitExit(10_000);
    console.log(`serve SIGTERM during upstream start-up: exit after ${Math.round(exit.at - sentAt)} ms`);
    expect(exit).toMatchObject({ code: 0, signal: null });
    // "At once" is the behaviour: long before the slow child's 10 s start-up would have ended.
    expect(exit.at - sentAt).toBeLessThan(10_000 / 2);
    expect(await leftovers(m)).toEqual([]);
  });
});

describe.concurrent('serve: readiness', () => {
  it('/ready is 503 while the upstream starts, 200 once it is up; /health and /live at once', async (context) => {
    const m = mark('ready', context);
    const slow = `${q(NODE)} -e 'setTimeout(() => {}, 2500)' ${m} && `;
    const gw = serve(context, everythingViaShell('everything', m, slow));
    const base = await gw.address();
    expect((await fetch(`${base}/health`)).status).toBe(200);
    expect((await fetch(`${base}/live`)).status).toBe(200);
    const early = await readyStatus(base);
    expect(early.status).toBe(503);
    expect(early.body).toMatchObject({ status: 'not_ready' });
    expect(early.body.reason).toMatch(/starting/);
    await waitReady(base, 20_000);
    const ready = await readyStatus(base);
    expect(ready.body).toMatchObject({ status: 'ready', servers: [{ name: 'everything', healthy: true }] });
    gw.signal('SIGTERM');
    expect(await gw.waitExit(10_000)).toMatchObject({ code: 0 });
    expect(await leftovers(m)).toEqual([]);
  });

  it('/ready goes 503 while the only upstream is down and back to 200 after its restart; the new tree ends on SIGTERM too', async (context) => {
    const m = mark('restart', context);
    const gw = serve(context, `${everythingViaShell('everything', m)}restart_backoff_ms = 1500\n`);
    const base = await gw.address();
    await waitReady(base);
    const first = processesWith(m);
    const server = first.find((p) => p.args.includes('stdio') && !p.args.startsWith('sh '));
    expect(server, JSON.stringify(first)).toBeDefined();
    process.kill(server!.pid, 'SIGKILL'); // our own test process: the server under the wrapper dies
    await waitFor(async () => (await readyStatus(base)).status === 503, 5_000, '/ready to go 503');
    const down = await readyStatus(base);
    expect(down.body.reason).toBe('no upstream is healthy');
    expect(down.body.servers[0]).toMatchObject({ name: 'everything', healthy: false });
    await waitReady(base, 20_000);
    expect((await readyStatus(base)).body.servers[0]).toMatchObject({ healthy: true, restarts: 1 });
    const second = processesWith(m);
    expect(second.length).toBeGreaterThanOrEqual(2);
    expect(second.some((p) => first.some((f) => f.pid === p.pid))).toBe(false);
    const list = await post(base, '/mcp/everything', { jsonrpc: '2.0', id: 1, method: 'tools/list' });
    expect(list.json.result.tools.length).toBeGreaterThan(0);
    gw.signal('SIGTERM');
    expect(await gw.waitExit(10_000)).toMatchObject({ code: 0 });
    expect(await leftovers(m)).toEqual([]);
  });

  it('a server that dies while a helper it left behind holds its pipes: noticed, the helper ended, restarted', async (context) => {
    const m = mark('helper', context);
    // sh starts a helper in the background, then becomes the server (exec): the helper shares the pipes.
    const script = `${q(NODE)} -e 'setInterval(() => {}, 1000)' helper-${m} & exec ${q(NODE)} ${q(EVERYTHING)} stdio ${m}`;
    const gw = serve(context, `${stdioServer('everything', 'sh', ['-c', script])}restart_backoff_ms = 200\n`);
    const base = await gw.address();
    await waitReady(base);
    const helper = processesWith(`helper-${m}`);
    const server = processesWith(m).find((p) => !p.args.includes(`helper-${m}`));
    expect(helper).toHaveLength(1);
    expect(server).toBeDefined();
    process.kill(server!.pid, 'SIGKILL');
    await waitFor(async () => (await readyStatus(base)).status === 503, 6_000, '/ready to notice the dead server');
    await waitFor(() => !processesWith(`helper-${m}`).some((p) => p.pid === helper[0]!.pid), 3_000, 'the old helper to be ended');
    await waitReady(base, 20_000);
    const list = await post(base, '/mcp/everything', { jsonrpc: '2.0', id: 1, method: 'tools/list' });
    expect(list.json.result.tools.length).toBeGreaterThan(0);
    gw.signal('SIGTERM');
    expect(await gw.waitExit(10_000)).toMatchObject({ code: 0 });
    expect(await leftovers(m)).toEqual([]);
  });

  it('the listening line carries the address, the servers and the version', async (context) => {
    const m = mark('listen', context);
    const port = await freePort();
    const gw = ownedBy(context, new CliProcess(['run', '-c', writeConfig(everythingViaShell('everything', m)), '--host', '127.0.0.1', '--port', String(port)]));
    const line = await gw.waitForLog('mcp-guard listening');
    expect(line).toMatchObject({ address: `http://127.0.0.1:${port}`, servers: ['everything'] });
    expect(typeof line['version']).toBe('string');
    await waitReady(`http://127.0.0.1:${port}`);
    gw.signal('SIGTERM');
    expect(await gw.waitExit(10_000)).toMatchObject({ code: 0 });
    expect(await leftovers(m)).toEqual([]);
  });
});

describe.concurrent('serve: refuses to start', () => {
  it('an invalid config: exit 1 with the key path, nothing started, nothing listening', async (context) => {
    const m = mark('invalid', context);
    const started = join(tempDir(), 'started');
    const port = await freePort();
    const child = `require("fs").writeFileSync(${JSON.stringify(started)}, "yes"); setInterval(() => {}, 1000)`;
    const config = `${stdioServer('a', NODE, ['-e', child, m])}\n[[upstream.servers]]\nname = "b"\npath_prefix = "/b"\ntransport = "http"\n`;
    const r = await runCli(['serve', '-c', writeConfig(config), '--host', '127.0.0.1', '--port', String(port)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('upstream.servers[1].url: required for transport "http"');
    expect(r.stderr).not.toMatch(/listening/);
    expect(existsSync(started)).toBe(false);
    expect(await leftovers(m, 0)).toEqual([]);
    expect(await refused(`http://127.0.0.1:${port}`)).toBe(true);
  });

  it('--port abc: exit 2 with a usage line', async (context) => {
    const m = mark('badport', context);
    const r = await runCli(['serve', '-c', writeConfig(everythingViaShell('everything', m)), '--port', 'abc']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--port must be an integer from 0 to 65535, got 'abc'/);
    expect(r.stderr).toMatch(/^Usage: mcp-guard/m);
    expect(await leftovers(m, 0)).toEqual([]);
  });

  it('a port already in use: exit 1 saying so, no child left behind', async (context) => {
    const m = mark('inuse', context);
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const r = await runCli(['serve', '-c', writeConfig(everythingViaShell('everything', m)), '--host', '127.0.0.1', '--port', String(port)], {
        timeoutMs: 15_000,
      });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/EADDRINUSE|in use/);
      expect(r.stderr).not.toMatch(/^\s+at /m); // a message, not a stack trace
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
    expect(await leftovers(m)).toEqual([]);
  });
});
