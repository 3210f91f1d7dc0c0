/**
 * MCP sessions through real gateway processes behind a real haproxy in round-robin (no
 * stickiness), with sealed session ids and a real redis-server between the replicas (issue 19,
 * "How it is checked"), with the official SDK client:
 *
 * - a whole session (initialize, lists, calls, progress, sampling) with each request on the next
 *   replica, over a stdio upstream and a streamable HTTP one;
 * - a session that survives the SIGKILL of the replica that created it;
 * - a call whose replica is SIGKILLed while it streams: the client learns at once that it was
 *   interrupted (its stream's event ids, Last-Event-ID to another replica), instead of waiting for
 *   its own timeout, and its session goes on;
 * - a rolling restart (SIGTERM with shutdown_delay_ms) under SDK calls: no call fails.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupTempDirs, q, waitFor } from '../helpers/cli.js';
import { EverythingServer } from '../helpers/everything.js';
import { startHaproxy, type Haproxy } from '../helpers/haproxy.js';
import type { RedisServer } from '../helpers/redis.js';
import { everythingUpstream, startRedis, startReplicas, type Replicas } from '../helpers/replicas.js';

afterAll(() => cleanupTempDirs());

const SESSION_KEY = `k1:${'r'.repeat(40)}`;
const SHUTDOWN_DELAY_MS = 3_000;
const SHUTDOWN_GRACE_MS = 10_000;

/** Sends each request where `choose` says (a replica's own URL, or the load balancer), counting where they went. */
function routed(choose: (body: Record<string, unknown> | undefined, method: string) => string): typeof fetch {
  return (input, init) => {
    let body: Record<string, unknown> | undefined;
    try {
      body = typeof init?.body === 'string' ? (JSON.parse(init.body) as Record<string, unknown>) : undefined;
    } catch {
      body = undefined;
    }
    const url = new URL(input instanceof Request ? input.url : String(input));
    const target = new URL(choose(body, init?.method ?? 'GET'));
    url.host = target.host;
    return fetch(url, init);
  };
}

async function connect(url: string, fetchVia: typeof fetch, sampled?: string[]): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
  const client = new Client({ name: 'through-haproxy', version: '1.0.0' }, { capabilities: sampled ? { sampling: {} } : {} });
  if (sampled) {
    client.setRequestHandler(CreateMessageRequestSchema, async (request) => {
      sampled.push(JSON.stringify(request.params.messages[0]?.content));
      return { model: 'test-model', role: 'assistant', content: { type: 'text', text: 'sampled through haproxy' } };
    });
  }
  const transport = new StreamableHTTPClientTransport(new URL(url), { fetch: fetchVia });
  await client.connect(transport);
  return { client, transport };
}

describe('sealed sessions behind haproxy, round-robin, two replicas and redis', () => {
  let redis: RedisServer;
  let http: EverythingServer;
  let replicas: Replicas;
  let lb: Haproxy;

  beforeAll(async () => {
    [redis, http] = await Promise.all([startRedis(), EverythingServer.start('streamableHttp')]);
    replicas = await startReplicas({
      count: 2,
      configFor: (_i, context) =>
        `[server]\nsession_keys = [${q(SESSION_KEY)}]\nredis_url = ${q(redis.url)}\n` +
        `shutdown_delay_ms = ${SHUTDOWN_DELAY_MS}\nshutdown_grace_ms = ${SHUTDOWN_GRACE_MS}\ntrusted_proxies = ["127.0.0.2"]\n` +
        everythingUpstream(context) +
        `[[upstream.servers]]\nname = "remote"\npath_prefix = "/remote"\nurl = ${q(http.url)}\n`,
    });
    lb = await startHaproxy(replicas.backends);
    await waitFor(async () => Object.values(await lb.serverStates()).every((s) => s === 'UP'), 10_000, 'haproxy to see every replica UP');
  }, 120_000);

  afterAll(async () => {
    await lb?.stop();
    await replicas?.stop();
    await Promise.all([redis?.stop(), http?.stop()]);
  }, 60_000);

  for (const server of ['everything', 'remote']) {
    it(`serves a whole SDK session on ${server} through round-robin: lists, calls, progress, sampling`, async () => {
      const sampled: string[] = [];
      const { client } = await connect(`${lb.url}/mcp/${server}`, fetch, sampled);
      try {
        expect((await client.listTools()).tools.map((t) => t.name)).toContain('echo');
        await client.listPrompts();
        await client.listResources();
        for (let i = 0; i < 6; i++) {
          const echoed = await client.callTool({ name: 'echo', arguments: { message: `through haproxy ${i}` } });
          expect(JSON.stringify(echoed.content)).toContain(`through haproxy ${i}`);
        }
        const progress: number[] = [];
        const long = await client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 3 } }, undefined, {
          onprogress: (p) => progress.push(p.progress),
        });
        expect(JSON.stringify(long.content)).toContain('completed');
        expect(progress.length).toBeGreaterThan(0);
        for (let i = 0; i < 3; i++) {
          const result = await client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: `round ${i}`, maxTokens: 5 } });
          expect(JSON.stringify(result.content)).toContain('sampled through haproxy');
        }
        expect(sampled).toHaveLength(3);
      } finally {
        await client.close();
      }
    }, 90_000);
  }

  it('keeps a session whose creating replica is SIGKILLed, and tells a client at once that a call streamed by a killed replica was interrupted', async () => {
    const [first, second] = replicas.list;
    // initialize on replica 0 itself; the long call on replica 1 itself; everything else through haproxy.
    const fetchVia = routed((body) => {
      if (body?.['method'] === 'initialize') return first!.url;
      if (body?.['method'] === 'tools/call' && (body['params'] as { name?: string })?.name === 'trigger-long-running-operation') return second!.url;
      return lb.url;
    });
    const { client } = await connect(`${lb.url}/mcp/everything`, fetchVia);
    try {
      expect(JSON.stringify((await client.callTool({ name: 'echo', arguments: { message: 'before' } })).content)).toContain('before');
      first!.signal('SIGKILL');
      await first!.waitExit(10_000);
      await waitFor(async () => (await lb.serverStates())['g0']?.startsWith('DOWN') === true, 10_000, 'haproxy to see g0 DOWN');
      // The replica that created the session is gone: the session goes on.
      expect(JSON.stringify((await client.callTool({ name: 'echo', arguments: { message: 'after the kill' } })).content)).toContain('after the kill');

      await first!.restart();
      await waitFor(async () => (await lb.serverStates())['g0'] === 'UP', 10_000, 'haproxy to see g0 UP again');
      // A call streamed by replica 1, which is killed once the call is under way (its first progress).
      let progressed = false;
      const call = client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 60, steps: 60 } }, undefined, {
        onprogress: () => (progressed = true),
        timeout: 120_000,
      });
      const failure = call.then(
        () => new Error('the call succeeded'),
        (error: unknown) => error as Error,
      );
      await waitFor(() => progressed, 30_000, 'the long call to be under way on replica 1');
      second!.signal('SIGKILL');
      await second!.waitExit(10_000);
      const error = await failure;
      expect(error.message).toMatch(/interrupted/);
      // And the session still serves, from the replica that is left.
      await waitFor(async () => (await lb.serverStates())['g1']?.startsWith('DOWN') === true, 10_000, 'haproxy to see g1 DOWN');
      expect(JSON.stringify((await client.callTool({ name: 'echo', arguments: { message: 'still here' } })).content)).toContain('still here');
      await second!.restart();
      await waitFor(async () => (await lb.serverStates())['g1'] === 'UP', 10_000, 'haproxy to see g1 UP again');
    } finally {
      await client.close();
    }
  }, 180_000);

  it('a rolling restart under SDK calls (SIGTERM with shutdown_delay_ms, one replica at a time) fails no call', async () => {
    const clients = await Promise.all(Array.from({ length: 5 }, () => connect(`${lb.url}/mcp/everything`, fetch)));
    let done = false;
    let calls = 0;
    const failures: string[] = [];
    const started = Date.now();
    const loops = clients.map(async ({ client }, c) => {
      for (let n = 0; !done && calls < 20_000 && Date.now() - started < 240_000; n++) {
        calls++;
        try {
          const result = await client.callTool({ name: 'echo', arguments: { message: `client ${c} call ${n}` } });
          if (!JSON.stringify(result.content).includes(`client ${c} call ${n}`)) failures.push(`client ${c} call ${n}: ${JSON.stringify(result)}`);
        } catch (error) {
          failures.push(`client ${c} call ${n}: ${String(error)}`);
        }
      }
    });
    try {
      for (const replica of replicas.list) {
        const before = calls;
        await waitFor(() => calls >= before + 50, 30_000, 'calls to flow');
        replica.signal('SIGTERM');
        const exit = await replica.waitExit(SHUTDOWN_DELAY_MS + SHUTDOWN_GRACE_MS + 15_000);
        expect(exit).toMatchObject({ code: 0, signal: null });
        await replica.restart();
        await waitFor(async () => (await lb.serverStates())[`g${replica.index}`] === 'UP', 10_000, `haproxy to see g${replica.index} UP again`);
      }
      const before = calls;
      await waitFor(() => calls >= before + 50, 30_000, 'calls to flow after the restarts');
    } finally {
      done = true;
      await Promise.all(loops);
      await Promise.all(clients.map(({ client }) => client.close()));
    }
    console.log(`rolling restart of 2 replicas behind haproxy under SDK sessions: ${calls} calls by 5 clients, ${failures.length} failed`);
    expect(failures.slice(0, 5)).toEqual([]);
    expect(calls).toBeGreaterThanOrEqual(150);
  }, 300_000);
});
