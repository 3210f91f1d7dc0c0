/**
 * Shared limits on a real redis-server: two gateways enforce one combined limit, and Redis going
 * away (stopped, or hung with SIGSTOP) never hangs a request: `on_store_error` decides, and the
 * limits apply again when Redis is back, without a restart.
 *
 * Every request here carries its own deadline (REQUEST_BOUND_MS, far above redis_timeout_ms), so
 * that a request hanging on Redis fails the test instead of blocking it.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateApiKey, hashApiKey } from '../../src/auth/key-format.js';
import { q, startGateway, type RunningGateway } from '../helpers/gateway.js';
import { sharedRedis, startRedis, type RedisServer } from '../helpers/redis.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/recording-upstream.js';

const REQUEST_BOUND_MS = 10_000;
/** Ids unique to this run: with REDIS_URL, counters of an earlier run may still be in the server. */
const RUN = randomBytes(3).toString('hex');
const LIST = { jsonrpc: '2.0', id: 1, method: 'tools/list' };
const call = (id: number, name: string) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {} } });

interface Issued {
  id: string;
  key: string;
  block: string;
}

async function issue(name: string): Promise<Issued> {
  const id = `${name}-${RUN}`;
  const { key, prefix } = generateApiKey();
  return { id, key, block: `[[auth.api_keys]]\nid = ${q(id)}\nkey_prefix = ${q(prefix)}\nkey_hash = ${q(await hashApiKey(key))}\n` };
}

interface Answer {
  status: number;
  headers: Headers;
  json: any;
}

/** One POST with a deadline: a hang is a failure, never a blocked test. */
async function post(url: string, body: unknown, key?: string): Promise<Answer> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(REQUEST_BOUND_MS),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? JSON.parse(text) : undefined };
}

/** Sends until `done` holds, at most `attempts` times, 100 ms apart; returns the answer that satisfied it. */
async function sendUntil(send: () => Promise<Answer>, done: (a: Answer) => boolean, attempts: number, what: string): Promise<Answer> {
  for (let i = 0; i < attempts; i++) {
    const answer = await send();
    if (done(answer)) return answer;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`gave up waiting for ${what} after ${attempts} requests`);
}

function config(upstream: string, redisUrl: string, onStoreError: 'allow' | 'deny', keys: Issued[]): string {
  return `
[upstream]
url = ${q(upstream)}

[auth]
max_failures_per_minute = 1000

${keys.map((k) => k.block).join('\n')}

[rate_limit]
requests_per_second = 0.1
burst_size = 3
store = "redis"
redis_url = ${q(redisUrl)}
redis_timeout_ms = 200
on_store_error = ${q(onStoreError)}
# The address counter lasts far longer than the test (its window is burst / rate), so that it can
# be read back whatever the machine's speed: the default (200 at 100/s) lasts 2 s.
per_address_requests_per_second = 0.1
per_address_burst_size = 1000

[[rate_limit.tool_limits]]
tool_pattern = "slow_*"
requests_per_second = 0.1
burst_size = 2
`;
}

/** The warnings about the store a gateway logged (JSON lines, level 40). */
function storeWarnings(gw: RunningGateway): string[] {
  return gw.logs.filter((line) => {
    const parsed = JSON.parse(line) as { level: number; msg: string };
    return parsed.level === 40 && parsed.msg.startsWith('rate limit store');
  });
}

let recording: RecordingUpstream;

beforeAll(async () => {
  recording = await startRecordingUpstream('http', { tools: ['slow_a', 'fast'] });
});

afterAll(async () => {
  await recording?.stop();
});

describe('two gateways, one Redis', () => {
  let redis: RedisServer;
  let inspect: Redis;
  let a: RunningGateway;
  let b: RunningGateway;
  let alice: Issued;
  let tooler: Issued;

  beforeAll(async () => {
    redis = await sharedRedis();
    inspect = new Redis(redis.url, { lazyConnect: true });
    await inspect.connect();
    [alice, tooler] = await Promise.all([issue('alice'), issue('tooler')]);
    const toml = config(recording.url, redis.url, 'deny', [alice, tooler]);
    [a, b] = await Promise.all([startGateway(toml), startGateway(toml)]);
  });

  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    inspect?.disconnect();
    await redis?.stop();
  });

  it('enforce one combined limit: 3 requests in all pass, alternating between them; then both refuse', async () => {
    const answers = [];
    for (const gw of [a, b, a, b, a]) answers.push(await post(`${gw.url}/mcp`, LIST, alice.key));
    expect(answers.map((x) => x.status)).toEqual([200, 200, 200, 429, 429]);
    expect(answers.slice(0, 3).map((x) => x.headers.get('ratelimit-remaining'))).toEqual(['2', '1', '0']);
    expect(answers[3]!.json.error).toEqual({
      code: -32012,
      message: expect.stringMatching(/^Too Many Requests: rate limit of 3 requests per 30 s exceeded; retry in \d+ s$/),
    });
    expect(Number(answers[4]!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);

    // One counter in Redis, named after the limit and the identity (docs/rate-limits.md).
    expect(await inspect.get(`mcp-guard:ratelimit:identity:api_key:${alice.id}`)).toBe('5');
    const ttl = await inspect.pttl(`mcp-guard:ratelimit:identity:api_key:${alice.id}`);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(30_000);
    expect(Number(await inspect.get('mcp-guard:ratelimit:address:127.0.0.1'))).toBeGreaterThanOrEqual(5);
  });

  it('tool limits are shared too, batch elements included', async () => {
    const batch = await post(`${a.url}/mcp`, [call(1, 'slow_a'), call(2, 'fast')], tooler.key);
    expect(batch.status).toBe(200);
    expect(batch.json.map((m: { result?: unknown }) => m.result !== undefined)).toEqual([true, true]);
    expect((await post(`${b.url}/mcp`, call(3, 'slow_a'), tooler.key)).status).toBe(200);
    const refused = await post(`${a.url}/mcp`, call(4, 'slow_a'), tooler.key);
    expect(refused.status).toBe(429);
    expect(refused.json).toMatchObject({ id: 4, error: { code: -32012, message: expect.stringContaining('for tool "slow_a"') } });
    expect(await inspect.get(`mcp-guard:ratelimit:tool:slow_*:api_key:${tooler.id}`)).toBe('3');
  });
});

describe('Redis unavailable', () => {
  let redis: RedisServer;
  let allow: RunningGateway;
  let deny: RunningGateway;
  const late: RunningGateway[] = [];
  const keys: Record<string, Issued> = {};
  const storeErrors: string[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    for (const name of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) keys[name] = await issue(name);
    const all = Object.values(keys);
    [allow, deny] = await Promise.all([
      startGateway(config(recording.url, redis.url, 'allow', all)),
      startGateway(config(recording.url, redis.url, 'deny', all)),
    ]);
    allow.app.limiter!.onStoreError = (error, scope) => storeErrors.push(`${scope}: ${error.name}`);
  });

  afterAll(async () => {
    await Promise.all([allow?.stop(), deny?.stop(), ...late.map((gw) => gw.stop())]);
    await redis?.stop();
  });

  it('stopped: "allow" lets every request through and "deny" answers 503 with Retry-After; none hangs; one warning, every failure counted', async () => {
    const send = (gw: RunningGateway) => post(`${gw.url}/mcp`, LIST, keys['alice']!.key);
    expect((await Promise.all([send(allow), send(allow), send(allow), send(allow)])).map((x) => x.status).sort()).toEqual([200, 200, 200, 429]);

    await redis.stop();
    for (let i = 0; i < 5; i++) {
      const res = await send(allow);
      expect(res.status).toBe(200);
      expect(res.headers.get('ratelimit-limit')).toBeNull();
    }
    // Address and identity limit: two failed store calls per request.
    expect(allow.app.limiter!.stats.storeErrors).toBeGreaterThanOrEqual(10);
    expect(storeErrors.length).toBe(allow.app.limiter!.stats.storeErrors);
    expect(storeErrors).toContain('address: StoreError');
    expect(storeErrors).toContain('identity: StoreError');
    expect(storeWarnings(allow)).toHaveLength(1);

    for (let i = 0; i < 3; i++) {
      const res = await send(deny);
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      expect(res.json).toEqual({
        jsonrpc: '2.0',
        id: null,
        error: { code: -32012, message: 'Service Unavailable: the rate limit cannot be checked right now; retry in 1 s' },
      });
    }
    expect(storeWarnings(deny)).toHaveLength(1);
    expect(JSON.parse(storeWarnings(deny)[0]!)).toMatchObject({ store: 'redis', onStoreError: 'deny' });
    // Only the MCP routes depend on the store.
    const health = await fetch(`${deny.url}/health`, { signal: AbortSignal.timeout(REQUEST_BOUND_MS) });
    expect(health.status).toBe(200);
    await health.arrayBuffer();
  });

  it('back (restarted, empty): the limits apply again without restarting the gateways', async () => {
    await redis.start();
    const send = (gw: RunningGateway, who: string) => post(`${gw.url}/mcp`, LIST, keys[who]!.key);
    const counted = await sendUntil(
      () => send(allow, 'bob'),
      (x) => x.headers.get('ratelimit-limit') === '3',
      100,
      'the store to answer again',
    );
    expect(counted.status).toBe(200);
    await sendUntil(
      () => send(allow, 'bob'),
      (x) => x.status === 429,
      3,
      'the limit of 3',
    );
    expect(allow.logs.some((l) => l.includes('"rate limit store is answering again"'))).toBe(true);

    // The deny gateway shares bob's counter (one Redis): frank's is fresh.
    await sendUntil(
      () => send(deny, 'frank'),
      (x) => x.status === 200,
      100,
      'the deny gateway to answer',
    );
    await sendUntil(
      () => send(deny, 'frank'),
      (x) => x.status === 429,
      3,
      'the limit of 3 on the deny gateway',
    );
  });

  it('hung (SIGSTOP): each request ends after the command timeout; "allow" passes, "deny" refuses; resumed, it counts again', async () => {
    redis.pause();
    try {
      const passed = await post(`${allow.url}/mcp`, LIST, keys['carol']!.key);
      expect(passed.status).toBe(200);
      expect(passed.headers.get('ratelimit-limit')).toBeNull();
      const refused = await post(`${deny.url}/mcp`, call(7, 'fast'), keys['carol']!.key);
      expect(refused.status).toBe(503);
      expect(refused.json.error.code).toBe(-32012);
    } finally {
      redis.resume();
    }
    await sendUntil(
      () => post(`${deny.url}/mcp`, LIST, keys['dave']!.key),
      (x) => x.status === 200,
      100,
      'the store after SIGCONT',
    );
  });

  it('a gateway started while Redis is down starts, passes requests ("allow"), and limits once Redis is up', async () => {
    await redis.stop();
    const gw = await startGateway(config(recording.url, redis.url, 'allow', [keys['erin']!]));
    late.push(gw);
    expect(gw.logs.some((l) => l.includes('rate limit store not reachable at start-up'))).toBe(true);
    const send = () => post(`${gw.url}/mcp`, LIST, keys['erin']!.key);
    for (let i = 0; i < 5; i++) expect((await send()).status).toBe(200);

    await redis.start();
    await sendUntil(send, (x) => x.status === 429, 150, 'the limit once Redis is up');
  });
});
