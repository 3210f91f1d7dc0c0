/**
 * Issue 16, as an attacker tries it: several identities (API keys) on one stdio server
 * (server-everything), each with the official SDK client, trying to see or steer each other's
 * work. With `isolation = "identity"` (the default) every identity has its own child, so nothing
 * can cross; with `isolation = "shared"` a server message that cannot be attributed to one
 * identity goes to nobody and is reported.
 *
 * Each describe block has a gateway of its own (its own identities, children and log) and the
 * blocks run concurrently, two at a time: most of their time is spent waiting on
 * server-everything (its 5 s log interval, its long-running operations). The tests of one block
 * share its gateway and its afterEach, so they run one after the other (it.sequential; their
 * timeout is the configured 60 s).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { atMostConcurrentBlocks } from '../helpers/concurrency.js';
import { EverythingServer } from '../helpers/everything.js';
import { curlPost, everythingStdio, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { bearer, connect, makeKey, resultText as text, route, type Caller, type Key } from '../helpers/identities.js';

/**
 * Finding 3's attack: Alice (who declared sampling) has a call in flight, the window in which a
 * shared child used to pick her; Bob (who did not) asks the server to sample. His prompt must not
 * reach her, and he gets no sampled answer. Returns Alice's client, her call done.
 */
async function bobAsksWhileAliceWorks(gw: RunningGateway, alice: Key, bob: Key, open: Caller[]): Promise<Caller> {
  const a = await connect(`${gw.url}/mcp/everything`, alice, { sampling: true });
  open.push(a);
  const b = await connect(`${gw.url}/mcp/everything`, bob);
  open.push(b);
  const along = a.client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 2, steps: 2 } });
  const bobs = await b.client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'bob-secret-prompt', maxTokens: 10 } }).then(
    (r) => text(r),
    (e: Error) => e.message,
  );
  expect(bobs).not.toContain('sampled:');
  await along;
  expect(a.sampled).toEqual([]);
  return a;
}

/** Two blocks at a time: each starts a gateway and its children. */
const takeSlot = atMostConcurrentBlocks(2);

describe.concurrent('stdio isolation = "identity" (the default): one child per identity', () => {
  takeSlot();
  let alice: Key;
  let bob: Key;
  let gw: RunningGateway;
  const open: Caller[] = [];

  beforeAll(async () => {
    [alice, bob] = await Promise.all([makeKey('alice'), makeKey('bob')]);
    gw = await startGateway(`
${everythingStdio('everything', 'timeout_ms = 30000\nchild_idle_ms = 500')}

[auth]
${alice.block}
${bob.block}
`);
  }, 60_000);

  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => c.close()));
  });

  afterAll(async () => {
    await gw?.stop();
  });

  it("starts each identity's child on its first request and ends it child_idle_ms after its last session", async () => {
    // The spare started with the gateway: one process, never used by anyone yet.
    expect((await route(gw, 'everything'))['children']).toBe(1);
    const a = await connect(`${gw.url}/mcp/everything`, alice);
    open.push(a);
    const b = await connect(`${gw.url}/mcp/everything`, bob);
    open.push(b);
    expect((await route(gw, 'everything'))['children']).toBe(2);
    await Promise.all(open.splice(0).map((c) => c.close()));
    await waitFor(async () => (await route(gw, 'everything'))['children'] === 0, 20_000, 'both children to end once idle');
    // And a new one starts for the next caller.
    const again = await curlPost(`${gw.url}/mcp/everything`, { jsonrpc: '2.0', id: 1, method: 'tools/list' }, bearer(alice));
    expect(again.status).toBe(200);
    expect(again.json.result.tools.length).toBeGreaterThan(0);
  });
});

describe.concurrent.each(['stdio', 'http'] as const)('identities never cross through a %s upstream (isolation = "identity", the default)', (transport) => {
  takeSlot();
  let alice: Key;
  let bob: Key;
  let gw: RunningGateway;
  let everything: EverythingServer | undefined;
  const open: Caller[] = [];

  beforeAll(async () => {
    [alice, bob] = await Promise.all([makeKey('alice'), makeKey('bob')]);
    if (transport === 'http') everything = await EverythingServer.start('streamableHttp');
    const server = everything
      ? `[[upstream.servers]]\nname = "everything"\npath_prefix = "/everything"\nurl = ${JSON.stringify(everything.url)}\ntimeout_ms = 30000\n`
      : everythingStdio('everything', 'timeout_ms = 30000\nchild_idle_ms = 500');
    gw = await startGateway(`
${server}

[auth]
${alice.block}
${bob.block}
`);
  }, 60_000);

  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => c.close()));
  });

  afterAll(async () => {
    await gw?.stop();
    await everything?.stop();
  });

  it.sequential('finding 3: a sampling request goes only to the identity whose call made it', async () => {
    const a = await bobAsksWhileAliceWorks(gw, alice, bob, open);
    // Alice's own sampling request does reach her.
    const own = await a.client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'alice-prompt', maxTokens: 10 } });
    expect(text(own)).toContain('alice-prompt');
    expect(a.sampled).toHaveLength(1);
  });

  it.sequential("finding 4: the log lines of one identity's server never reach another identity", async () => {
    const a = await connect(`${gw.url}/mcp/everything`, alice);
    open.push(a);
    const b = await connect(`${gw.url}/mcp/everything`, bob);
    open.push(b);
    await a.client.setLoggingLevel('debug');
    await b.client.setLoggingLevel('debug');
    expect(text(await a.client.callTool({ name: 'toggle-simulated-logging', arguments: {} }))).toContain('Started');
    // The server logs every 5 s to its session: wait for two of Alice's lines.
    await waitFor(() => a.logs.length >= 2, 30_000, "two of alice's simulated log lines");
    expect(b.logs).toEqual([]);
    await a.client.callTool({ name: 'toggle-simulated-logging', arguments: {} });
  });

  it.sequential("finding 1: another identity's task cannot be listed, read or cancelled, even without any session", async () => {
    const started = await curlPost(
      `${gw.url}/mcp/everything`,
      { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'simulate-research-query', arguments: { topic: 'alice-topic' }, task: { ttl: 60_000 } } },
      bearer(alice),
    );
    expect(started.status).toBe(200);
    const taskId = started.json.result?.task?.taskId as string;
    expect(taskId).toBeTypeOf('string');
    const mine = await curlPost(`${gw.url}/mcp/everything`, { jsonrpc: '2.0', id: 2, method: 'tasks/list' }, bearer(alice));
    expect(mine.json.result.tasks.map((t: { taskId: string }) => t.taskId)).toContain(taskId);
    const theirs = await curlPost(`${gw.url}/mcp/everything`, { jsonrpc: '2.0', id: 3, method: 'tasks/list' }, bearer(bob));
    expect(JSON.stringify(theirs.json)).not.toContain(taskId);
    for (const method of ['tasks/get', 'tasks/result', 'tasks/cancel']) {
      const res = await curlPost(`${gw.url}/mcp/everything`, { jsonrpc: '2.0', id: 4, method, params: { taskId } }, bearer(bob));
      expect(res.json.error, `${method}: ${res.text}`).toBeDefined();
      expect(res.text).not.toContain('alice-topic');
    }
    // Alice's task was not cancelled by Bob.
    const status = await curlPost(`${gw.url}/mcp/everything`, { jsonrpc: '2.0', id: 5, method: 'tasks/get', params: { taskId } }, bearer(alice));
    expect(status.json.result?.status).not.toBe('cancelled');
  });
});

describe.concurrent('stdio isolation: max_children', () => {
  takeSlot();
  let alice: Key;
  let bob: Key;
  let gw: RunningGateway;

  beforeAll(async () => {
    [alice, bob] = await Promise.all([makeKey('alice'), makeKey('bob')]);
    gw = await startGateway(`
${everythingStdio('everything', 'timeout_ms = 30000\nmax_children = 1\nchild_idle_ms = 600000')}

[auth]
${alice.block}
${bob.block}
`);
  }, 60_000);

  afterAll(async () => {
    await gw?.stop();
  });

  it('refuses a new identity with 503 and Retry-After while every child is working, and makes room once one is idle', async () => {
    // 8 s: the refusal below must come while the call is still in flight, however busy the
    // machine (the blocks of this file run concurrently); the test waits for the call's end anyway.
    const longCall = curlPost(
      `${gw.url}/mcp/everything`,
      { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'trigger-long-running-operation', arguments: { duration: 8, steps: 2 } } },
      bearer(alice),
    );
    // Alice's child is working: wait until her call is in flight on it.
    await waitFor(
      async () => (await route(gw, 'everything'))['children'] === 1 && gw.logs.some((l) => l.includes('child assigned')),
      20_000,
      'alice to have her child',
    );
    const refused = await curlPost(`${gw.url}/mcp/everything`, { jsonrpc: '2.0', id: 2, method: 'tools/list' }, bearer(bob));
    expect(refused.status).toBe(503);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(refused.json.error.message).toMatch(/max_children/);
    expect((await longCall).json.result).toBeDefined();
    // Alice's child has nothing in flight now: Bob's request ends it and gets a child of his own.
    const served = await curlPost(`${gw.url}/mcp/everything`, { jsonrpc: '2.0', id: 3, method: 'tools/list' }, bearer(bob));
    expect(served.status).toBe(200);
    expect(served.json.result.tools.length).toBeGreaterThan(0);
  }, 60_000);
});

describe.concurrent("stdio isolation at max_children: a child holding its owner's task is ended last", () => {
  takeSlot();
  let alice: Key;
  let bob: Key;
  let carol: Key;
  let gw: RunningGateway;

  beforeAll(async () => {
    [alice, bob, carol] = await Promise.all([makeKey('alice'), makeKey('bob'), makeKey('carol')]);
    gw = await startGateway(`
${everythingStdio('everything', 'timeout_ms = 30000\nmax_children = 2\nchild_idle_ms = 600000')}

[auth]
${alice.block}
${bob.block}
${carol.block}
`);
  }, 60_000);

  afterAll(async () => {
    await gw?.stop();
  });

  it('makes room by ending the child of an identity without tasks, though it was used more recently', async () => {
    const started = await curlPost(
      `${gw.url}/mcp/everything`,
      { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'simulate-research-query', arguments: { topic: 'alice-topic' }, task: { ttl: 60_000 } } },
      bearer(alice),
    );
    const taskId = started.json.result?.task?.taskId as string;
    expect(taskId, started.text).toBeTypeOf('string');
    // Bob's child is the more recently used of the two; Carol needs room.
    expect((await curlPost(`${gw.url}/mcp/everything`, { jsonrpc: '2.0', id: 2, method: 'tools/list' }, bearer(bob))).status).toBe(200);
    expect((await curlPost(`${gw.url}/mcp/everything`, { jsonrpc: '2.0', id: 3, method: 'tools/list' }, bearer(carol))).status).toBe(200);
    expect((await route(gw, 'everything'))['children']).toBe(2);
    // Alice's child, and her task in it, are still there.
    const status = await curlPost(`${gw.url}/mcp/everything`, { jsonrpc: '2.0', id: 4, method: 'tasks/get', params: { taskId } }, bearer(alice));
    expect(status.json.result?.taskId, status.text).toBe(taskId);
  }, 60_000);
});

describe.concurrent('stdio isolation = "session": one child per client session', () => {
  takeSlot();
  let alice: Key;
  let gw: RunningGateway;

  beforeAll(async () => {
    alice = await makeKey('alice');
    gw = await startGateway(`
${everythingStdio('everything', 'isolation = "session"\ntimeout_ms = 30000')}

[auth]
${alice.block}
`);
  }, 60_000);

  afterAll(async () => {
    await gw?.stop();
  });

  it('gives two sessions of one identity two children, and ends a child with its session', async () => {
    const one = await connect(`${gw.url}/mcp/everything`, alice);
    const two = await connect(`${gw.url}/mcp/everything`, alice);
    try {
      await one.client.setLoggingLevel('debug');
      await one.client.callTool({ name: 'toggle-simulated-logging', arguments: {} });
      expect((await route(gw, 'everything'))['children']).toBe(2);
      await waitFor(() => one.logs.length >= 1, 30_000, 'a log line on the first session');
      // Same identity, other session: its own child, which logs nothing.
      expect(two.logs).toEqual([]);
    } finally {
      await one.close();
    }
    await waitFor(async () => (await route(gw, 'everything'))['children'] === 1, 10_000, "the first session's child to end with it");
    await two.close();
  }, 60_000);
});

describe.concurrent('stdio isolation = "session" at max_children: one identity cannot push another out', () => {
  takeSlot();
  let alice: Key;
  let mallory: Key;
  let gw: RunningGateway;

  beforeAll(async () => {
    [alice, mallory] = await Promise.all([makeKey('alice'), makeKey('mallory')]);
    gw = await startGateway(`
${everythingStdio('everything', 'isolation = "session"\nmax_children = 3\ntimeout_ms = 30000')}

[auth]
${alice.block}
${mallory.block}
`);
  }, 60_000);

  afterAll(async () => {
    await gw?.stop();
  });

  it("ends the idle children of the identity holding the most, so a flood of sessions ends the flooder's own", async () => {
    const a = await connect(`${gw.url}/mcp/everything`, alice);
    const flood: Caller[] = [];
    try {
      // Mallory opens many sessions, each wanting a child of its own, far beyond max_children.
      for (let i = 0; i < 6; i++) flood.push(await connect(`${gw.url}/mcp/everything`, mallory));
      expect((await route(gw, 'everything'))['children']).toBe(3);
      // Alice's session, idle all along, still has its child.
      expect(text(await a.client.callTool({ name: 'echo', arguments: { message: 'still here' } }))).toContain('still here');
      // Mallory's oldest sessions were the ones ended.
      const first = await flood[0]!.client.callTool({ name: 'echo', arguments: { message: 'x' } }).then(
        () => 'served',
        (e: Error) => e.message,
      );
      expect(first).not.toBe('served');
    } finally {
      await Promise.all([a, ...flood].map((c) => c.close()));
    }
  }, 90_000);
});

describe.concurrent('stdio isolation = "shared": what cannot be attributed to one identity goes to nobody', () => {
  takeSlot();
  let alice: Key;
  let bob: Key;
  let carol: Key;
  let gw: RunningGateway;
  const open: Caller[] = [];

  beforeAll(async () => {
    [alice, bob, carol] = await Promise.all([makeKey('alice'), makeKey('bob'), makeKey('carol')]);
    gw = await startGateway(`
${everythingStdio('everything', 'isolation = "shared"\ntimeout_ms = 30000')}

[auth]
${alice.block}
${bob.block}
${carol.block}
`);
  }, 60_000);

  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => c.close()));
  });

  afterAll(async () => {
    await gw?.stop();
  });

  it.sequential('finding 3: a sampling request made while two identities have calls in flight is refused, not given to either', async () => {
    const a = await bobAsksWhileAliceWorks(gw, alice, bob, open);
    expect(gw.logs.some((l) => l.includes('withheld from every client') && l.includes('sampling/createMessage'))).toBe(true);
    // Alone on the server (Bob's session ended), Alice's own sampling request is hers without
    // doubt, and reaches her.
    await open.splice(1, 1)[0]!.close();
    const own = await a.client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'alice-prompt', maxTokens: 10 } });
    expect(text(own)).toContain('alice-prompt');
  });

  it.sequential('finding 4: log lines with sessions of several identities are withheld from all of them', async () => {
    const a = await connect(`${gw.url}/mcp/everything`, alice);
    open.push(a);
    const b = await connect(`${gw.url}/mcp/everything`, bob);
    open.push(b);
    await a.client.setLoggingLevel('debug');
    await a.client.callTool({ name: 'toggle-simulated-logging', arguments: {} });
    await waitFor(() => gw.logs.some((l) => l.includes('withheld from every client') && l.includes('notifications/message')), 30_000, 'a withheld log line');
    expect(b.logs).toEqual([]);
    await a.client.callTool({ name: 'toggle-simulated-logging', arguments: {} });
  });

  it.sequential('finding 4: progress of a cancelled call reaches nobody, with no internal token leaked', async () => {
    const a = await connect(`${gw.url}/mcp/everything`, alice);
    open.push(a);
    const b = await connect(`${gw.url}/mcp/everything`, bob);
    open.push(b);
    const c = await connect(`${gw.url}/mcp/everything`, carol);
    open.push(c);
    const abort = new AbortController();
    let progressed = 0;
    const cancelled = a.client
      .callTool({ name: 'trigger-long-running-operation', arguments: { duration: 3, steps: 6 } }, undefined, {
        signal: abort.signal,
        onprogress: () => {
          progressed++;
          abort.abort();
        },
      })
      .catch((e: Error) => e);
    await waitFor(() => progressed >= 1, 20_000, 'the first progress');
    expect(await cancelled).toBeInstanceOf(Error);
    // Carol's call, started after Alice's was cancelled, ends after Alice's would have: by then
    // the server has sent all of the cancelled call's progress.
    await c.client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 3, steps: 1 } });
    expect(b.errors.filter((e) => /progress/i.test(e))).toEqual([]);
    expect(a.errors.filter((e) => /progress/i.test(e))).toEqual([]);
  });
});
