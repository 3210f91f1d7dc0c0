/**
 * Sealed sessions (`[server] session_keys`): two real gateways with the same keys, the official
 * SDK client sending each of its requests to the next gateway in turn (round-robin with no
 * stickiness, as a load balancer would), real server-everything upstreams over stdio and
 * streamable HTTP. And what an attacker would try: another identity's id, a forged or altered id,
 * an id of another route, an expired one, one sealed with a key the gateways do not have, an id
 * its client ended.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { SessionSeal } from '../../src/replicas/seal.js';
import { EverythingServer } from '../helpers/everything.js';
import { everythingStdio, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { bearer, makeKey, type Key } from '../helpers/identities.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { CreateMessageRequestSchema } from '@modelcontextprotocol/sdk/types.js';

const KEY_1 = 'k1:' + 'a'.repeat(40);
const KEY_2 = 'k2:' + 'b'.repeat(40);

/** A fetch that sends each request to the next gateway in turn, and counts where each went. */
function roundRobin(gateways: RunningGateway[]): { fetch: typeof fetch; served: number[] } {
  const served = gateways.map(() => 0);
  let next = 0;
  const rr: typeof fetch = (input, init) => {
    const at = next++ % gateways.length;
    served[at]!++;
    const url = new URL(input instanceof Request ? input.url : String(input));
    const target = new URL(gateways[at]!.url);
    url.host = target.host;
    return fetch(url, init);
  };
  return { fetch: rr, served };
}

async function connectRoundRobin(gateways: RunningGateway[], path: string, headers: Record<string, string>) {
  const rr = roundRobin(gateways);
  const client = new Client({ name: 'round-robin', version: '1.0.0' }, { capabilities: {} });
  const transport = new StreamableHTTPClientTransport(new URL(`${gateways[0]!.url}${path}`), { fetch: rr.fetch, requestInit: { headers } });
  await client.connect(transport);
  return { client, transport, served: rr.served };
}

async function post(url: string, body: unknown, headers: Record<string, string>): Promise<{ status: number; json: any; headers: Headers }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text.startsWith('{') ? JSON.parse(text) : text };
}

const INIT = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'curl', version: '1' } },
};

describe('sealed sessions across two replicas', () => {
  let http: EverythingServer;
  let alice: Key;
  let bob: Key;
  let a: RunningGateway;
  let b: RunningGateway;
  let rotated: RunningGateway;

  beforeAll(async () => {
    [http, alice, bob] = await Promise.all([EverythingServer.start('streamableHttp'), makeKey('alice'), makeKey('bob')]);
    const config = (keys: string[]) => `
[server]
session_keys = [${keys.map(q).join(', ')}]

${alice.block}
${bob.block}

${everythingStdio('local')}

[[upstream.servers]]
name = "remote"
path_prefix = "/remote"
url = ${q(http.url)}
`;
    [a, b, rotated] = await Promise.all([startGateway(config([KEY_1])), startGateway(config([KEY_1])), startGateway(config([KEY_2, KEY_1]))]);
  }, 120_000);

  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop(), rotated?.stop()]);
    await http?.stop();
  });

  for (const server of ['local', 'remote']) {
    it(`serves a whole SDK session on ${server} from either replica, each request to the next`, async () => {
      const { client, served } = await connectRoundRobin([a, b], `/mcp/${server}`, bearer(alice));
      try {
        const tools = await client.listTools();
        expect(tools.tools.map((t) => t.name)).toContain('echo');
        for (let i = 0; i < 4; i++) {
          const result = await client.callTool({ name: 'echo', arguments: { message: `hello ${i}` } });
          expect(JSON.stringify(result.content)).toContain(`hello ${i}`);
        }
        const progress: number[] = [];
        const long = await client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 3 } }, undefined, {
          onprogress: (p) => progress.push(p.progress),
        });
        expect(JSON.stringify(long.content)).toContain('completed');
        expect(progress.length).toBeGreaterThan(0);
        // Both replicas served requests of the one session.
        expect(served[0]).toBeGreaterThan(2);
        expect(served[1]).toBeGreaterThan(2);
      } finally {
        await client.close();
      }
    }, 60_000);
  }

  it('refuses the id to another identity, on another route, altered, expired or sealed with an unknown key: 404 on every replica', async () => {
    const opened = await post(`${a.url}/mcp/local`, INIT, bearer(alice));
    expect(opened.status).toBe(200);
    const id = opened.headers.get('mcp-session-id')!;
    expect(id.startsWith('k1.')).toBe(true);
    const list = { jsonrpc: '2.0', id: 2, method: 'tools/list' };
    // The owner is served by the other replica.
    expect((await post(`${b.url}/mcp/local`, list, { ...bearer(alice), 'mcp-session-id': id })).status).toBe(200);
    for (const gw of [a, b]) {
      expect((await post(`${gw.url}/mcp/local`, list, { ...bearer(bob), 'mcp-session-id': id })).status).toBe(404);
      expect((await post(`${gw.url}/mcp/remote`, list, { ...bearer(alice), 'mcp-session-id': id })).status).toBe(404);
    }
    // One changed character anywhere in the sealed part.
    const body = id.slice(3);
    const flipped = `k1.${body.slice(0, 20)}${body[20] === 'A' ? 'B' : 'A'}${body.slice(21)}`;
    expect((await post(`${b.url}/mcp/local`, list, { ...bearer(alice), 'mcp-session-id': flipped })).status).toBe(404);
    // Sealed with the right key, for the right owner and route, but expired.
    const seal = new SessionSeal([KEY_1]);
    const expired = seal.seal({
      route: 'local',
      owner: 'key:alice',
      version: '2025-06-18',
      scope: '',
      forwardPath: '',
      client: { capabilities: {} },
      upstream: { kind: 'reopen' },
      expires: Date.now() - 1,
      nonce: 'x',
    });
    expect((await post(`${b.url}/mcp/local`, list, { ...bearer(alice), 'mcp-session-id': expired })).status).toBe(404);
    // A key the gateways do not have, with a key id they do.
    const forged = new SessionSeal(['k1:' + 'z'.repeat(40)]).seal({
      route: 'local',
      owner: 'key:alice',
      version: '2025-06-18',
      scope: '',
      forwardPath: '',
      client: { capabilities: {} },
      upstream: { kind: 'reopen' },
      expires: Date.now() + 60_000,
      nonce: 'y',
    });
    expect((await post(`${b.url}/mcp/local`, list, { ...bearer(alice), 'mcp-session-id': forged })).status).toBe(404);
    // Other spellings of the same bytes (padding, the standard alphabet, a stray character) are not
    // the id: one id, one spelling, so that revoking it revokes it.
    const standard = body.replace(/-/g, '+').replace(/_/g, '/');
    for (const variant of [`${id}=`, `${id}==`, `${id}!`, `k1.${standard}`].filter((v) => v !== id)) {
      expect((await post(`${b.url}/mcp/local`, list, { ...bearer(alice), 'mcp-session-id': variant })).status).toBe(404);
    }
    // Garbage of every shape.
    for (const junk of ['k1.', 'k1.!!!!', '.abc', 'k9.' + body, 'x'.repeat(9_000)]) {
      expect((await post(`${b.url}/mcp/local`, list, { ...bearer(alice), 'mcp-session-id': junk })).status).toBe(404);
    }
  }, 60_000);

  it('opens ids sealed before a key rotation with the older key, and seals new ones with the first', async () => {
    const opened = await post(`${a.url}/mcp/remote`, INIT, bearer(alice));
    const id = opened.headers.get('mcp-session-id')!;
    const list = { jsonrpc: '2.0', id: 2, method: 'tools/list' };
    const served = await post(`${rotated.url}/mcp/remote`, list, { ...bearer(alice), 'mcp-session-id': id });
    expect(served.status).toBe(200);
    const fresh = await post(`${rotated.url}/mcp/remote`, INIT, bearer(alice));
    expect(fresh.headers.get('mcp-session-id')!.startsWith('k2.')).toBe(true);
    // A replica without the new key cannot open it.
    expect((await post(`${a.url}/mcp/remote`, list, { ...bearer(alice), 'mcp-session-id': fresh.headers.get('mcp-session-id')! })).status).toBe(404);
  }, 60_000);

  it('ends a session deleted through a replica that never served it, without taking it up', async () => {
    const opened = await post(`${a.url}/mcp/remote`, INIT, bearer(alice));
    const id = opened.headers.get('mcp-session-id')!;
    const headers = { ...bearer(alice), 'mcp-session-id': id };
    const list = { jsonrpc: '2.0', id: 2, method: 'tools/list' };
    // Not the owner: 404, and nothing ended.
    expect((await fetch(`${b.url}/mcp/remote`, { method: 'DELETE', headers: { ...bearer(bob), 'mcp-session-id': id } })).status).toBe(404);
    expect((await post(`${a.url}/mcp/remote`, list, headers)).status).toBe(200);
    expect((await fetch(`${b.url}/mcp/remote`, { method: 'DELETE', headers })).status).toBe(200);
    // Ended upstream: the replica that opened it learns so on its next request; the other refuses it.
    expect((await post(`${a.url}/mcp/remote`, list, headers)).status).toBe(404);
    expect((await post(`${b.url}/mcp/remote`, list, headers)).status).toBe(404);
    expect((await fetch(`${b.url}/mcp/remote`, { method: 'DELETE', headers })).status).toBe(404);
  }, 60_000);

  it('ends a session its client deleted: upstream, and on the replica that took the DELETE', async () => {
    const opened = await post(`${a.url}/mcp/remote`, INIT, bearer(alice));
    const id = opened.headers.get('mcp-session-id')!;
    const headers = { ...bearer(alice), 'mcp-session-id': id };
    const list = { jsonrpc: '2.0', id: 2, method: 'tools/list' };
    expect((await post(`${b.url}/mcp/remote`, list, headers)).status).toBe(200);
    const deleted = await fetch(`${b.url}/mcp/remote`, { method: 'DELETE', headers });
    expect(deleted.status).toBe(200);
    expect((await post(`${b.url}/mcp/remote`, list, headers)).status).toBe(404);
    // The upstream forgot it too: the replica that opened it learns so on its next request.
    expect((await post(`${a.url}/mcp/remote`, list, headers)).status).toBe(404);
  }, 60_000);
});

/** The body of a fetch the SDK transport makes, when it is one JSON-RPC message. */
function bodyOf(init: RequestInit | undefined): Record<string, unknown> | undefined {
  if (typeof init?.body !== 'string') return undefined;
  try {
    return JSON.parse(init.body) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

describe('sealed sessions with Redis between the replicas', () => {
  let redis: RedisServer;
  let http: EverythingServer;
  let alice: Key;
  let a: RunningGateway;
  let b: RunningGateway;

  beforeAll(async () => {
    [redis, http, alice] = await Promise.all([startRedis(), EverythingServer.start('streamableHttp'), makeKey('alice')]);
    const config = `
[server]
session_keys = [${q(KEY_1)}]
redis_url = ${q(redis.url)}

${alice.block}

${everythingStdio('local')}

[[upstream.servers]]
name = "remote"
path_prefix = "/remote"
url = ${q(http.url)}
`;
    [a, b] = await Promise.all([startGateway(config), startGateway(config)]);
  }, 120_000);

  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await Promise.all([http?.stop(), redis?.stop()]);
  });

  for (const server of ['local', 'remote']) {
    it(`relays a sampling answer sent to the other replica to the one whose upstream asked (${server})`, async () => {
      // Every request to replica a, every answer to a server request to replica b.
      const answersToB: typeof fetch = (input, init) => {
        const body = bodyOf(init);
        const target = new URL(body && 'result' in body ? b.url : a.url);
        const url = new URL(input instanceof Request ? input.url : String(input));
        url.host = target.host;
        return fetch(url, init);
      };
      const client = new Client({ name: 'sampling', version: '1.0.0' }, { capabilities: { sampling: {} } });
      const sampled: string[] = [];
      client.setRequestHandler(CreateMessageRequestSchema, async (request) => {
        sampled.push(JSON.stringify(request.params.messages[0]?.content));
        return { model: 'test-model', role: 'assistant', content: { type: 'text', text: 'sampled by the client' } };
      });
      const transport = new StreamableHTTPClientTransport(new URL(`${a.url}/mcp/${server}`), { fetch: answersToB, requestInit: { headers: bearer(alice) } });
      await client.connect(transport);
      try {
        const result = await client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'across replicas', maxTokens: 5 } });
        expect(sampled).toHaveLength(1);
        expect(JSON.stringify(result.content)).toContain('sampled by the client');
      } finally {
        await client.close();
      }
    }, 60_000);
  }

  it('continues a 2026-07-28 sampling round on the replica that holds the call when the retry reaches the other one', async () => {
    const MODERN = '2026-07-28';
    const meta = {
      'io.modelcontextprotocol/protocolVersion': MODERN,
      'io.modelcontextprotocol/clientCapabilities': { sampling: {} },
      'io.modelcontextprotocol/clientInfo': { name: 'mrtr', version: '1' },
    };
    const headers = { ...bearer(alice), 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/call', 'mcp-name': 'trigger-sampling-request' };
    const call = (id: number, prompt: string, extra: Record<string, unknown> = {}) => ({
      jsonrpc: '2.0',
      id,
      method: 'tools/call',
      params: { name: 'trigger-sampling-request', arguments: { prompt, maxTokens: 5 }, _meta: meta, ...extra },
    });
    const first = await post(`${a.url}/mcp/local`, call(1, 'round robin'), headers);
    expect(first.json.result.resultType).toBe('input_required');
    const { inputRequests, requestState } = first.json.result;
    const key = Object.keys(inputRequests)[0]!;
    const answer = { [key]: { role: 'assistant', content: { type: 'text', text: 'answered on b' }, model: 'm', stopReason: 'endTurn' } };
    // The same state for another call, through the other replica: refused by the holder.
    const other = await post(`${b.url}/mcp/local`, call(2, 'another prompt', { inputResponses: answer, requestState }), headers);
    expect(JSON.stringify(other.json)).toContain('belongs to another request');
    const done = await post(`${b.url}/mcp/local`, call(3, 'round robin', { inputResponses: answer, requestState }), headers);
    expect(done.json.id).toBe(3);
    expect(done.json.result.resultType).toBe('complete');
    expect(JSON.stringify(done.json.result.content)).toContain('answered on b');
    // Single use, on every replica.
    for (const gw of [a, b]) {
      const again = await post(`${gw.url}/mcp/local`, call(4, 'round robin', { inputResponses: answer, requestState }), headers);
      expect(JSON.stringify(again.json)).toContain('unknown or has expired');
    }
  }, 60_000);

  it("ignores messages on the replicas' Redis channel that were not sealed with the session keys", async () => {
    const opened = await post(`${a.url}/mcp/local`, INIT, bearer(alice));
    const id = opened.headers.get('mcp-session-id')!;
    const headers = { ...bearer(alice), 'mcp-session-id': id };
    const list = { jsonrpc: '2.0', id: 2, method: 'tools/list' };
    const { Redis } = await import('ioredis');
    const attacker = new Redis(redis.url);
    try {
      // Someone who can reach Redis, and saw the id, forges an 'ended' for it.
      const forged = JSON.stringify({ from: 'attacker', kind: 'ended', session: id, expires: Date.now() + 60_000 });
      const receivers = await attacker.publish('mcp-guard:replicas', forged);
      expect(receivers).toBeGreaterThanOrEqual(2);
      // Each replica drops it with a warning (awaited, bounded by the test timeout), and the session goes on.
      await waitFor(() => [a, b].every((gw) => gw.logs.some((l) => l.includes('not sealed with the session keys'))), 10_000, 'both replicas to drop it');
      expect((await post(`${a.url}/mcp/local`, list, headers)).status).toBe(200);
      expect((await post(`${b.url}/mcp/local`, list, headers)).status).toBe(200);
    } finally {
      attacker.disconnect();
    }
  }, 60_000);

  it('ends a session its client deleted on every replica, a stdio one too', async () => {
    const opened = await post(`${a.url}/mcp/local`, INIT, bearer(alice));
    const id = opened.headers.get('mcp-session-id')!;
    const headers = { ...bearer(alice), 'mcp-session-id': id };
    const list = { jsonrpc: '2.0', id: 2, method: 'tools/list' };
    expect((await post(`${b.url}/mcp/local`, list, headers)).status).toBe(200);
    expect((await fetch(`${b.url}/mcp/local`, { method: 'DELETE', headers })).status).toBe(200);
    // Replica a held the session in memory: the message from b ends it there (pub/sub is
    // asynchronous, so the test waits for it, bounded).
    const deadline = Date.now() + 10_000;
    let status = 200;
    while (status === 200 && Date.now() < deadline) {
      status = (await post(`${a.url}/mcp/local`, list, headers)).status;
      if (status === 200) await new Promise((resolve) => setImmediate(resolve));
    }
    expect(status).toBe(404);
    expect((await post(`${b.url}/mcp/local`, list, headers)).status).toBe(404);
  }, 60_000);
});
