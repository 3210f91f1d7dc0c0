/**
 * Issue 16, an adversarial review of the isolation work: identity B (an API key) tries to see,
 * steer or break identity A's work, or the gateway, with real server-everything upstreams (stdio
 * and streamable HTTP). Each describe block is one attack; a test asserts the secure behaviour
 * (it failed while the hole was open, and stays as a regression test).
 *
 * Each describe block has a gateway of its own and the blocks run concurrently, two at a time.
 * The tests of the first block only read what its beforeAll set up, and run concurrently too;
 * those of a block whose tests build on a shared state (a circuit, a probed path) run one after
 * the other (it.sequential; their timeout is the configured 60 s).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { atMostConcurrentBlocks } from '../helpers/concurrency.js';
import { EverythingServer } from '../helpers/everything.js';
import { curlPost, everythingStdio, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { bearer, connect, makeKey, type Caller, type Key } from '../helpers/identities.js';

/** A raw POST with JSON and SSE accepted; an SSE body is read whole, its response message returned. */
async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any; text: string }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  if ((res.headers.get('content-type') ?? '').includes('text/event-stream')) {
    const messages = text
      .split('\n')
      .filter((line) => line.startsWith('data:') && line.slice(5).trim() !== '')
      .map((line) => JSON.parse(line.slice(5)));
    json = messages.length === 1 ? messages[0] : (messages.find((m) => 'result' in m || 'error' in m) ?? messages);
  } else if (text !== '') {
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
  }
  return { status: res.status, json, text };
}

const startTask = (id: number, topic: string) => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name: 'simulate-research-query', arguments: { topic }, task: { ttl: 120_000 } },
});

const MODERN_ENVELOPE = {
  'io.modelcontextprotocol/protocolVersion': '2026-07-28',
  'io.modelcontextprotocol/clientCapabilities': {},
  'io.modelcontextprotocol/clientInfo': { name: 'attacker', version: '1.0.0' },
};

/** Two blocks at a time: each starts a gateway and its upstreams. */
const takeSlot = atMostConcurrentBlocks(2);

describe.concurrent.each(['stdio', 'http'] as const)('attack over %s: B uses what it learnt of A (session id, task id) in every request shape', (transport) => {
  takeSlot();
  let alice: Key;
  let bob: Key;
  let gw: RunningGateway;
  let everything: EverythingServer | undefined;
  let url: string;
  let taskId: string;
  let aliceSession: string;

  beforeAll(async () => {
    [alice, bob] = await Promise.all([makeKey('alice'), makeKey('bob')]);
    if (transport === 'http') everything = await EverythingServer.start('streamableHttp');
    const server = everything
      ? `[[upstream.servers]]\nname = "everything"\npath_prefix = "/everything"\nurl = ${q(everything.url)}\ntimeout_ms = 30000\n`
      : everythingStdio('everything', 'timeout_ms = 30000');
    gw = await startGateway(`${server}\n[auth]\n${alice.block}\n${bob.block}\n`);
    url = `${gw.url}/mcp/everything`;
    // A's session-less task, and a session of A's (B learns both ids, e.g. from a shared log).
    const started = await post(url, startTask(1, 'alice-secret-topic'), bearer(alice));
    taskId = started.json?.result?.task?.taskId;
    expect(taskId, started.text).toBeTypeOf('string');
    const init = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...bearer(alice) },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 0,
        method: 'initialize',
        params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'alice', version: '1' } },
      }),
    });
    aliceSession = init.headers.get('mcp-session-id')!;
    await init.text();
    expect(aliceSession).toBeTypeOf('string');
  }, 60_000);

  afterAll(async () => {
    await gw?.stop();
    await everything?.stop();
  });

  it("B cannot use A's Mcp-Session-Id: POST, GET and DELETE are 404, and A's session lives on", async () => {
    const session = { 'mcp-session-id': aliceSession, 'mcp-protocol-version': '2025-11-25' };
    const posted = await post(url, { jsonrpc: '2.0', id: 2, method: 'tools/list' }, { ...bearer(bob), ...session });
    expect(posted.status).toBe(404);
    const got = await fetch(url, { headers: { accept: 'text/event-stream', ...bearer(bob), ...session } });
    expect(got.status).toBe(404);
    await got.text();
    const deleted = await fetch(url, { method: 'DELETE', headers: { ...bearer(bob), ...session } });
    expect(deleted.status).toBe(404);
    await deleted.text();
    const mine = await post(url, { jsonrpc: '2.0', id: 3, method: 'tools/list' }, { ...bearer(alice), ...session });
    expect(mine.status).toBe(200);
    expect(mine.json.result.tools.length).toBeGreaterThan(0);
  });

  it("a batch mixing an allowed call with tasks/get|result|cancel of A's task, a related-task _meta and a forged cursor: only B's own call is answered", async () => {
    const batch = [
      { jsonrpc: '2.0', id: 10, method: 'tools/call', params: { name: 'echo', arguments: { message: 'hi' } } },
      { jsonrpc: '2.0', id: 11, method: 'tasks/get', params: { taskId } },
      { jsonrpc: '2.0', id: 12, method: 'tasks/result', params: { taskId } },
      { jsonrpc: '2.0', id: 13, method: 'tasks/cancel', params: { taskId } },
      {
        jsonrpc: '2.0',
        id: 14,
        method: 'tools/call',
        params: { name: 'echo', arguments: { message: 'x' }, _meta: { 'io.modelcontextprotocol/related-task': { taskId } } },
      },
      // The reference server's own cursor is a task id: B forges one naming A's task.
      { jsonrpc: '2.0', id: 15, method: 'tasks/list', params: { cursor: taskId } },
      { jsonrpc: '2.0', id: 16, method: 'tasks/list' },
    ];
    const res = await post(url, batch, bearer(bob));
    expect(res.status).toBe(200);
    const byId = new Map<number, any>((res.json as any[]).map((m) => [m.id, m]));
    expect(byId.get(10).result.content[0].text).toBe('Echo: hi');
    for (const id of [11, 12, 13, 14, 15]) expect(byId.get(id).error?.code, `id ${id}: ${JSON.stringify(byId.get(id))}`).toBe(-32602);
    expect(JSON.stringify(byId.get(16))).not.toContain(taskId);
    expect(res.text).not.toContain('alice-secret-topic');
    // A's task was not cancelled.
    const status = await post(url, { jsonrpc: '2.0', id: 17, method: 'tasks/get', params: { taskId } }, bearer(alice));
    expect(status.json.result?.taskId).toBe(taskId);
    expect(status.json.result?.status).not.toBe('cancelled');
  }, 30_000);

  it("a 2026-07-28 request (protocol version in _meta) reaches neither A's task nor A's session", async () => {
    for (const method of ['tasks/get', 'tasks/result', 'tasks/cancel']) {
      const res = await post(
        url,
        { jsonrpc: '2.0', id: 20, method, params: { taskId, _meta: MODERN_ENVELOPE } },
        { ...bearer(bob), 'mcp-protocol-version': '2026-07-28', 'mcp-method': method },
      );
      expect(res.json?.error, `${method}: ${res.text}`).toBeDefined();
      expect(res.text).not.toContain('alice-secret-topic');
    }
    // A modern request naming A's session id: sessions do not exist in that era, and B's is not A's.
    const res = await post(
      url,
      {
        jsonrpc: '2.0',
        id: 21,
        method: 'tools/call',
        params: { name: 'echo', arguments: { message: 'x' }, _meta: { ...MODERN_ENVELOPE, 'io.modelcontextprotocol/related-task': { taskId } } },
      },
      { ...bearer(bob), 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'echo', 'mcp-session-id': aliceSession },
    );
    expect(res.json?.error?.code, res.text).toBe(-32602);
    const status = await post(url, { jsonrpc: '2.0', id: 22, method: 'tasks/get', params: { taskId } }, bearer(alice));
    expect(status.json.result?.status).not.toBe('cancelled');
  }, 30_000);
});

describe.concurrent('attack: notifications/cancelled naming the request id of another identity\'s call (isolation = "shared")', () => {
  takeSlot();
  let alice: Key;
  let bob: Key;
  let gw: RunningGateway;
  const open: Caller[] = [];

  beforeAll(async () => {
    [alice, bob] = await Promise.all([makeKey('alice'), makeKey('bob')]);
    gw = await startGateway(`${everythingStdio('everything', 'isolation = "shared"\ntimeout_ms = 30000')}\n[auth]\n${alice.block}\n${bob.block}\n`);
  }, 60_000);

  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => c.close()));
  });

  afterAll(async () => {
    await gw?.stop();
  });

  it("B's cancellation of every small id, on B's own session and without one, leaves A's call running", async () => {
    const url = `${gw.url}/mcp/everything`;
    const a = await connect(url, alice);
    open.push(a);
    const b = await connect(url, bob);
    open.push(b);
    let progressed = 0;
    const along = a.client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 2, steps: 4 } }, undefined, {
      onprogress: () => {
        progressed++;
      },
    });
    await waitFor(() => progressed >= 1, 20_000, "A's call to be in flight");
    // Client ids and the gateway's wire ids alike are small integers: B names them all.
    const cancels = Array.from({ length: 20 }, (_, i) => ({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: i, reason: 'bob' } }));
    const onSession = await post(url, cancels, { ...bearer(bob), 'mcp-session-id': b.transport.sessionId!, 'mcp-protocol-version': '2025-11-25' });
    expect(onSession.status).toBe(202);
    const sessionless = await post(url, cancels, bearer(bob));
    expect(sessionless.status).toBe(202);
    const result = await along;
    expect((result.content as Array<{ text: string }>)[0]!.text).toMatch(/completed/i);
  }, 60_000);
});

describe.concurrent('attack: a log line of A in shared mode, sent while only B has a call in flight (isolation = "shared")', () => {
  takeSlot();
  let alice: Key;
  let bob: Key;
  let gw: RunningGateway;
  const open: Caller[] = [];

  beforeAll(async () => {
    [alice, bob] = await Promise.all([makeKey('alice'), makeKey('bob')]);
    gw = await startGateway(`${everythingStdio('everything', 'isolation = "shared"\ntimeout_ms = 30000')}\n[auth]\n${alice.block}\n${bob.block}\n`);
  }, 60_000);

  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => c.close()));
  });

  afterAll(async () => {
    await gw?.stop();
  });

  it("is withheld from B (it cannot be attributed to B's call), not guessed to be B's", async () => {
    const url = `${gw.url}/mcp/everything`;
    const a = await connect(url, alice);
    open.push(a);
    const b = await connect(url, bob);
    open.push(b);
    await a.client.setLoggingLevel('debug');
    // A turns on the server's simulated logging (a line every 5 s, to the child's one session).
    await a.client.callTool({ name: 'toggle-simulated-logging', arguments: {} });
    try {
      // B's one call in flight (long enough to span several of those lines) until one of them is withheld.
      const withheld = (): number => gw.logs.filter((l) => l.includes('withheld from every client') && l.includes('notifications/message')).length;
      const before = withheld();
      const abort = new AbortController();
      const call = b.client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 30, steps: 30 } }, undefined, {
        onprogress: () => undefined,
        timeout: 60_000,
        signal: abort.signal,
      });
      call.catch(() => undefined);
      await waitFor(() => withheld() > before, 30_000, 'a log line withheld while B has a call in flight');
      abort.abort();
      await call.catch(() => undefined);
      expect(b.logs).toEqual([]);
      expect(withheld()).toBeGreaterThan(before);
    } finally {
      await a.client.callTool({ name: 'toggle-simulated-logging', arguments: {} });
    }
  }, 60_000);
});

describe.concurrent("attack: flooding session-less requests with distinct query strings to evict A's upstream session", () => {
  takeSlot();
  let alice: Key;
  let bob: Key;
  let gw: RunningGateway;
  let everything: EverythingServer;

  beforeAll(async () => {
    [alice, bob] = await Promise.all([makeKey('alice'), makeKey('bob')]);
    everything = await EverythingServer.start('streamableHttp');
    gw = await startGateway(`
${everythingStdio('local', 'timeout_ms = 30000')}

[[upstream.servers]]
name = "web"
path_prefix = "/web"
url = ${q(everything.url)}
timeout_ms = 30000

[auth]
${alice.block}
${bob.block}
`);
  }, 60_000);

  afterAll(async () => {
    await gw?.stop();
    await everything?.stop();
  });

  it("B's flood of gateway-owned sessions (one per path and query) never ends A's, and A's task stays reachable", async () => {
    const web = `${gw.url}/mcp/web`;
    const started = await post(web, startTask(1, 'alice-topic'), bearer(alice));
    const taskId = started.json?.result?.task?.taskId as string;
    expect(taskId, started.text).toBeTypeOf('string');
    // Each distinct query string is a new gateway-owned session for B (a virtual session on B's
    // own stdio child: no upstream round trip). More of them than the gateway keeps in all.
    for (let i = 0; i < 1_100; i += 50) {
      const batch = Array.from({ length: 50 }, (_, j) => curlPost(`${gw.url}/local?n=${i + j}`, { jsonrpc: '2.0', id: 1, method: 'ping' }, bearer(bob)));
      for (const res of await Promise.all(batch)) expect(res.status).toBe(200);
    }
    const status = await post(web, { jsonrpc: '2.0', id: 2, method: 'tasks/get', params: { taskId } }, bearer(alice));
    expect(status.json.result?.taskId, status.text).toBe(taskId);
  }, 120_000);
});

describe.concurrent("attack: B's own requests open the server's circuit for A", () => {
  takeSlot();
  let alice: Key;
  let bob: Key;
  let gw: RunningGateway;
  let everything: EverythingServer;
  let lb: Server;

  beforeAll(async () => {
    [alice, bob] = await Promise.all([makeKey('alice'), makeKey('bob')]);
    everything = await EverythingServer.start('streamableHttp');
    const target = new URL(everything.url);
    // A load balancer in front of server-everything: only its MCP path is routed; any other path
    // is answered 503 ("no target"), as balancers do.
    lb = createServer((req, res) => {
      if ((req.url ?? '').split('?')[0] !== target.pathname) {
        res.writeHead(503, { 'content-type': 'text/plain' }).end('no healthy target');
        return;
      }
      const upstream = httpRequest({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      upstream.on('error', () => res.destroy());
      req.pipe(upstream);
    });
    await new Promise<void>((resolve) => lb.listen(0, '127.0.0.1', resolve));
    const lbUrl = `http://127.0.0.1:${(lb.address() as AddressInfo).port}${target.pathname}`;
    gw = await startGateway(`
${everythingStdio('local', 'timeout_ms = 1500\ncircuit_failure_threshold = 2\ncircuit_open_ms = 60000')}

[[upstream.servers]]
name = "web"
path_prefix = "/web"
strip_prefix = true
url = ${q(lbUrl)}
timeout_ms = 10000
circuit_failure_threshold = 2
circuit_open_ms = 60000

[auth]
${alice.block}
${bob.block}
`);
  }, 60_000);

  afterAll(async () => {
    await gw?.stop();
    await new Promise<void>((resolve) => lb?.close(() => resolve()));
    await everything?.stop();
  });

  it.sequential("B's calls that time out open B's own circuit only: A is still served", async () => {
    const url = `${gw.url}/mcp/local`;
    // Each identity's child started first: what times out below is B's call, not a busy
    // machine's slow start of a child.
    for (const key of [alice, bob]) expect((await curlPost(url, { jsonrpc: '2.0', id: 0, method: 'tools/list' }, bearer(key))).status).toBe(200);
    const long = { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'trigger-long-running-operation', arguments: { duration: 10, steps: 1 } } };
    for (let i = 0; i < 2; i++) {
      const res = await curlPost(url, long, bearer(bob));
      expect(res.json.error, res.text).toBeDefined();
    }
    const third = await curlPost(url, { jsonrpc: '2.0', id: 2, method: 'tools/list' }, bearer(bob));
    expect(third.status).toBe(503);
    expect(third.json.error.message).toMatch(/to this identity/);
    const alices = await curlPost(url, { jsonrpc: '2.0', id: 3, method: 'tools/list' }, bearer(alice));
    expect(alices.status, alices.text).toBe(200);
  });

  it.sequential("B's requests on a path the upstream refuses (the era probe follows B's path) do not open the circuit for A", async () => {
    // Before anyone has reached "web", B's requests name a path of B's choosing under its prefix.
    for (let i = 0; i < 3; i++) await curlPost(`${gw.url}/web/nowhere`, { jsonrpc: '2.0', id: 1, method: 'tools/list' }, bearer(bob));
    const alices = await curlPost(`${gw.url}/mcp/web`, { jsonrpc: '2.0', id: 2, method: 'tools/list' }, bearer(alice));
    expect(alices.status, alices.text).toBe(200);
    expect(alices.json.result.tools.length).toBeGreaterThan(0);
  });
});

describe.concurrent('era verdict poisoning through the probe path', () => {
  takeSlot();
  // A 2026-07-28-only server (the v2 fixture, `--modern-only`: it refuses legacy traffic) behind
  // a reverse proxy that routes one path to it: /mcp/good. /mcp/hang is held unanswered and any
  // other path is a 404, as a proxy answers a path with no route. The gateway reaches it by
  // prefix with strip_prefix, so the client's path under the prefix is the path probed.
  const FIXTURE = new URL('../fixtures/modern-server.mjs', import.meta.url).pathname;
  let alice: Key;
  let bob: Key;
  let gw: RunningGateway;
  let fixture: ChildProcess;
  let fixturePort = 0;
  const events: string[] = [];
  let front: Server;
  const held: Array<() => void> = [];
  let hangs = 0;

  beforeAll(async () => {
    [alice, bob] = await Promise.all([makeKey('alice'), makeKey('bob')]);
    fixture = spawn(process.execPath, [FIXTURE, 'http', '0', '--modern-only'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    fixture.stderr!.on('data', (chunk: Buffer) => {
      err += chunk.toString('utf8');
      let nl;
      while ((nl = err.indexOf('\n')) !== -1) {
        const line = err.slice(0, nl);
        err = err.slice(nl + 1);
        if (line.startsWith('event: ')) events.push(line.slice('event: '.length));
      }
    });
    fixturePort = await new Promise<number>((resolve, reject) => {
      let out = '';
      fixture.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString('utf8');
        const match = /listening (\d+)/.exec(out);
        if (match) resolve(Number(match[1]));
      });
      fixture.once('exit', (code) => reject(new Error(`fixture exited (${code})`)));
    });
    front = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      if (path === '/mcp/hang') {
        hangs++;
        held.push(() => res.destroy());
        return;
      }
      if (path !== '/mcp/good') {
        req.resume();
        res.writeHead(404, { 'content-type': 'text/plain' }).end('no route');
        return;
      }
      const upstream = httpRequest({ host: '127.0.0.1', port: fixturePort, path: '/mcp', method: req.method, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      upstream.on('error', () => res.destroy());
      req.pipe(upstream);
    });
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(front.address() as AddressInfo).port}/mcp`;
    // Two servers on the same front, so that each test starts with nothing probed.
    const server = (name: string) =>
      `[[upstream.servers]]\nname = "${name}"\npath_prefix = "/${name}"\nstrip_prefix = true\nurl = ${q(url)}\ntimeout_ms = 8000\n`;
    gw = await startGateway(`${server('m1')}\n${server('m2')}\n[auth]\n${alice.block}\n${bob.block}\n`);
  }, 60_000);

  afterAll(async () => {
    await gw?.stop();
    for (const release of held.splice(0)) release();
    await new Promise<void>((resolve) => front?.close(() => resolve()));
    if (fixture && fixture.exitCode === null && fixture.signalCode === null) {
      const exited = new Promise((resolve) => fixture.once('exit', resolve));
      fixture.kill('SIGTERM');
      await exited;
    }
  });

  const modernHeaders = (method: string, name?: string) => ({
    'mcp-protocol-version': '2026-07-28',
    'mcp-method': method,
    ...(name ? { 'mcp-name': name } : {}),
  });
  const modernEcho = (id: number, text: string) => ({
    jsonrpc: '2.0',
    id,
    method: 'tools/call',
    params: { name: 'echo', arguments: { text }, _meta: MODERN_ENVELOPE },
  });

  /** A's requests to the good path, in both eras: answered by the modern server, never initialized. */
  async function aliceIsServed(prefix: string): Promise<void> {
    const modern = await post(`${gw.url}/${prefix}/good`, modernEcho(10, 'alice'), { ...bearer(alice), ...modernHeaders('tools/call', 'echo') });
    expect(modern.status, modern.text).toBe(200);
    expect(modern.json?.result?.content?.[0]?.text, modern.text).toBe('echo: alice');
    const legacy = await curlPost(`${gw.url}/${prefix}/good`, { jsonrpc: '2.0', id: 11, method: 'tools/list' }, bearer(alice));
    expect(legacy.status, legacy.text).toBe(200);
    expect(
      legacy.json?.result?.tools?.map((t: { name: string }) => t.name),
      legacy.text,
    ).toContain('echo');
    // The gateway spoke 2026-07-28 to it throughout: no legacy handshake reached the server.
    expect(events).not.toContain('recv initialize');
  }

  it.sequential("B's probe of a path that answers 404 does not make the server legacy for A's requests to another path", async () => {
    // B first, before anyone has reached the server: its path answers 404, legacy by the fallback.
    const bobs = await post(`${gw.url}/m1/nowhere`, modernEcho(1, 'bob'), { ...bearer(bob), ...modernHeaders('tools/call', 'echo') });
    expect(bobs.json?.result, bobs.text).toBeUndefined();
    const bobLegacy = await curlPost(`${gw.url}/m1/nowhere`, { jsonrpc: '2.0', id: 2, method: 'tools/list' }, bearer(bob));
    expect(bobLegacy.json?.result, bobLegacy.text).toBeUndefined();
    await aliceIsServed('m1');
    // B's path keeps its own verdict; its requests still fail there, and A's still pass.
    const again = await post(`${gw.url}/m1/nowhere`, modernEcho(3, 'bob'), { ...bearer(bob), ...modernHeaders('tools/call', 'echo') });
    expect(again.json?.result, again.text).toBeUndefined();
    await aliceIsServed('m1');
  });

  it.sequential("A's request does not wait for, nor fail with, B's probe of a path that never answers", async () => {
    const bobs = post(`${gw.url}/m2/hang`, modernEcho(1, 'bob'), { ...bearer(bob), ...modernHeaders('tools/call', 'echo') });
    await waitFor(() => hangs === 1, 10_000, "B's probe to reach the held path");
    // B's probe is in flight (for up to timeout_ms); A's request to the good path has its own.
    await aliceIsServed('m2');
    expect(hangs).toBe(1);
    for (const release of held.splice(0)) release();
    expect((await bobs).json?.result).toBeUndefined();
  });
});
