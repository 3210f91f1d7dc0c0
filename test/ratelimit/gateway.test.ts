/**
 * Rate limits end to end with the in-memory store: real gateways on 127.0.0.1, real HTTP, an
 * instant recording upstream. Windows are long (tens of seconds) so that no assertion depends on
 * how fast this machine is; the one test about a window ending polls instead of sleeping.
 */
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateApiKey, hashApiKey } from '../../src/auth/key-format.js';
import type { DecisionDetail, LimitScope } from '../../src/ratelimit/limiter.js';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { curlPost, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/recording-upstream.js';

interface Issued {
  key: string;
  block: string;
}

/** An [[auth.api_keys]] entry (and its key) without the cost of a CLI run. */
async function issue(id: string, extra = ''): Promise<Issued> {
  const { key, prefix } = generateApiKey();
  return { key, block: `[[auth.api_keys]]\nid = ${q(id)}\nkey_prefix = ${q(prefix)}\nkey_hash = ${q(await hashApiKey(key))}\n${extra}\n` };
}

const bearer = (key: string) => ({ authorization: `Bearer ${key}` });
const LIST = { jsonrpc: '2.0', id: 1, method: 'tools/list' };
const call = (id: number, name: string) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {} } });
const RETRY_IN = /^Too Many Requests: rate limit of 3 requests per 30 s exceeded; retry in (\d+) s$/;

let recording: RecordingUpstream;

beforeAll(async () => {
  recording = await startRecordingUpstream('http', { tools: ['slow_single', 'slow_other', 'slow_batch', 'fast'] });
});

afterAll(async () => {
  await recording?.stop();
});

/** tools/call requests that reached the upstream, for one tool. */
const reached = (tool: string) => recording.requests.filter((r) => r.tool === tool).length;
const listsReached = () => recording.requests.filter((r) => r.rpcMethod === 'tools/list').length;

describe('identity limits (3 per 30 s), per-key overrides, tool limits', () => {
  let gw: RunningGateway;
  let alice: Issued;
  let bob: Issued;
  let carol: Issued;
  let tooler: Issued;
  let batcher: Issued;
  let watched: Issued;
  let prefixed: Issued;

  beforeAll(async () => {
    await ensureBuilt();
    // carol's entry is printed by `mcp-guard keygen --rate-limit`, as a user makes it.
    const printed = await runCli(['keygen', '--id', 'carol', '--rate-limit', '0.2']);
    expect(printed.code, printed.stderr).toBe(0);
    carol = { key: printed.stdout.split('\n').find((l) => l.startsWith('mcp_'))!, block: printed.stdout.slice(printed.stdout.indexOf('[[auth.api_keys]]')) };
    expect(carol.block).toContain('\nrate_limit = 0.2\n');
    [alice, bob, tooler, batcher, watched, prefixed] = await Promise.all([
      issue('alice'),
      issue('bob'),
      // 1 rps in a 30 s window: 30 requests, so that only the tool limit can refuse them.
      issue('tooler', 'rate_limit = 1'),
      issue('batcher', 'rate_limit = 1'),
      issue('watched', 'rate_limit = 1'),
      issue('prefixed'),
    ]);
    gw = await startGateway(`
[upstream]
url = ${q(recording.url)}

[auth]
max_failures_per_minute = 1000

${alice.block}
${bob.block}
${carol.block}
${tooler.block}
${batcher.block}
${watched.block}
${prefixed.block}

[rate_limit]
requests_per_second = 0.1
burst_size = 3

[[rate_limit.tool_limits]]
tool_pattern = "slow_*"
requests_per_second = 0.1
burst_size = 2
`);
  }, 120_000);

  afterAll(async () => {
    await gw?.stop();
  });

  it('a burst from one identity: burst_size requests pass, the next gets 429 with Retry-After, RateLimit-* and a JSON-RPC error; it never reaches the upstream', async () => {
    for (let i = 1; i <= 3; i++) {
      const res = await curlPost(`${gw.url}/mcp`, LIST, bearer(alice.key));
      expect(res.status, res.text).toBe(200);
      expect(res.headers.get('ratelimit-limit')).toBe('3');
      expect(res.headers.get('ratelimit-remaining')).toBe(String(3 - i));
      expect(Number(res.headers.get('ratelimit-reset'))).toBeGreaterThan(0);
    }
    const before = listsReached();
    const res = await curlPost(`${gw.url}/mcp`, LIST, bearer(alice.key));
    expect(res.status).toBe(429);
    const retryAfter = Number(res.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(30);
    expect(res.headers.get('ratelimit-limit')).toBe('3');
    expect(res.headers.get('ratelimit-remaining')).toBe('0');
    expect(res.headers.get('ratelimit-reset')).toBe(String(retryAfter));
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(res.json).toEqual({
      jsonrpc: '2.0',
      id: null,
      error: { code: -32012, message: `Too Many Requests: rate limit of 3 requests per 30 s exceeded; retry in ${retryAfter} s` },
    });
    expect(listsReached()).toBe(before);
  });

  it('the same limit and headers on a path routed by prefix (the catch-all route and its stage 0 hooks)', async () => {
    for (let i = 1; i <= 3; i++) {
      const res = await curlPost(`${gw.url}/tenant/a/mcp`, LIST, bearer(prefixed.key));
      expect(res.status, res.text).toBe(200);
      expect(res.headers.get('ratelimit-remaining')).toBe(String(3 - i));
    }
    const refused = await curlPost(`${gw.url}/tenant/a/mcp`, LIST, bearer(prefixed.key));
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toMatch(/^\d+$/);
    // The limit is the identity's, whatever the path: /mcp is refused too.
    expect((await curlPost(`${gw.url}/mcp`, LIST, bearer(prefixed.key))).status).toBe(429);
  });

  it('another identity is unaffected', async () => {
    const res = await curlPost(`${gw.url}/mcp`, LIST, bearer(bob.key));
    expect(res.status).toBe(200);
    expect(res.headers.get('ratelimit-remaining')).toBe('2');
    // alice is still refused.
    expect((await curlPost(`${gw.url}/mcp`, LIST, bearer(alice.key))).json.error.message).toMatch(RETRY_IN);
  });

  it('keygen --rate-limit 0.2: the key gets ceil(0.2 x 30) = 6 requests per 30 s instead of 3', async () => {
    for (let i = 1; i <= 6; i++) {
      const res = await curlPost(`${gw.url}/mcp`, LIST, bearer(carol.key));
      expect(res.status, `request ${i}`).toBe(200);
      expect(res.headers.get('ratelimit-limit')).toBe('6');
    }
    const res = await curlPost(`${gw.url}/mcp`, LIST, bearer(carol.key));
    expect(res.status).toBe(429);
    expect(res.json.error.message).toMatch(/^Too Many Requests: rate limit of 6 requests per 30 s exceeded; retry in \d+ s$/);
  });

  it('a tool limit on a single tools/call: HTTP 429 with the request id; the tools of the same pattern share it, other tools and identities do not', async () => {
    for (const id of [1, 2]) {
      const res = await curlPost(`${gw.url}/mcp`, call(id, 'slow_single'), bearer(tooler.key));
      expect(res.status).toBe(200);
      expect(res.json.result.content[0].text).toBe('called slow_single');
    }
    const res = await curlPost(`${gw.url}/mcp`, call(3, 'slow_single'), bearer(tooler.key));
    expect(res.status).toBe(429);
    const retryAfter = Number(res.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(20);
    expect(res.headers.get('ratelimit-limit')).toBe('2');
    expect(res.headers.get('ratelimit-remaining')).toBe('0');
    expect(res.json).toEqual({
      jsonrpc: '2.0',
      id: 3,
      error: { code: -32012, message: `Too Many Requests: rate limit of 2 requests per 20 s exceeded for tool "slow_single"; retry in ${retryAfter} s` },
    });
    expect(reached('slow_single')).toBe(2);

    // The counter is per identity and pattern: slow_other matches slow_* too.
    expect((await curlPost(`${gw.url}/mcp`, call(4, 'slow_other'), bearer(tooler.key))).status).toBe(429);
    expect(reached('slow_other')).toBe(0);
    expect((await curlPost(`${gw.url}/mcp`, call(5, 'fast'), bearer(tooler.key))).status).toBe(200);
    expect((await curlPost(`${gw.url}/mcp`, call(6, 'slow_single'), bearer(watched.key))).status).toBe(200);
  });

  // Regression: the in-memory store handed out its live counter object, so the overlapping checks
  // of one batch all read the final count and every slow_batch call was refused.
  it('a tool limit in a batch: every tools/call counts; the one over the limit gets its error in place, the rest are answered', async () => {
    const res = await curlPost(
      `${gw.url}/mcp`,
      [call(1, 'slow_batch'), call(2, 'slow_batch'), call(3, 'slow_batch'), call(4, 'fast'), { jsonrpc: '2.0', id: 5, method: 'tools/list' }],
      bearer(batcher.key),
    );
    expect(res.status, res.text).toBe(200);
    expect(res.headers.get('retry-after')).toBeNull();
    const byId = new Map((res.json as Array<{ id: number }>).map((m) => [m.id, m as any]));
    expect(byId.size).toBe(5);
    expect(byId.get(1).result.content[0].text).toBe('called slow_batch');
    expect(byId.get(2).result.content[0].text).toBe('called slow_batch');
    expect(byId.get(3)).toEqual({
      jsonrpc: '2.0',
      id: 3,
      error: {
        code: -32012,
        message: expect.stringMatching(/^Too Many Requests: rate limit of 2 requests per 20 s exceeded for tool "slow_batch"; retry in \d+ s$/),
      },
    });
    expect(byId.get(4).result.content[0].text).toBe('called fast');
    expect(byId.get(5).result.tools).toBeDefined();
    expect(reached('slow_batch')).toBe(2);
  });

  it("the gateway's own endpoints are never limited, even for a caller over its limit", async () => {
    for (const path of ['/health', '/ready', '/routes', '/.well-known/oauth-protected-resource']) {
      for (let i = 0; i < 5; i++) {
        const res = await fetch(`${gw.url}${path}`, { headers: bearer(alice.key) });
        expect(res.status, path).toBe(200);
        expect(res.headers.get('ratelimit-limit'), path).toBeNull();
        await res.arrayBuffer();
      }
    }
    // Under the catch-all too: an unknown /health/x is a 404, not a 429.
    expect((await curlPost(`${gw.url}/health/x`, LIST, bearer(alice.key))).status).toBe(404);
  });

  it('onDecision sees each decision: address and identity per request, one per tools/call and matching limit', async () => {
    const seen: Array<{ scope: LimitScope; allowed: boolean; identity: string | undefined; detail: DecisionDetail; url: string }> = [];
    // alice over her limit whether or not the tests above ran.
    for (let i = 0; i < 4; i++) await curlPost(`${gw.url}/mcp`, LIST, bearer(alice.key));
    const limiter = gw.app.limiter!;
    limiter.onDecision = (scope, allowed, request, identity, detail) => seen.push({ scope, allowed, identity: identity?.id, detail, url: request.url });
    try {
      await curlPost(`${gw.url}/mcp`, [call(1, 'fast'), call(2, 'slow_batch')], bearer(watched.key));
      await curlPost(`${gw.url}/mcp`, LIST, bearer(alice.key));
    } finally {
      limiter.onDecision = undefined;
    }
    expect(seen).toEqual([
      { scope: 'address', allowed: true, identity: undefined, detail: {}, url: '/mcp' },
      { scope: 'identity', allowed: true, identity: 'watched', detail: {}, url: '/mcp' },
      { scope: 'tool', allowed: true, identity: 'watched', detail: { tool: 'slow_batch', pattern: 'slow_*' }, url: '/mcp' },
      { scope: 'address', allowed: true, identity: undefined, detail: {}, url: '/mcp' },
      { scope: 'identity', allowed: false, identity: 'alice', detail: {}, url: '/mcp' },
    ]);
  });

  it('a listener that throws is logged and changes nothing for the request', async () => {
    const limiter = gw.app.limiter!;
    limiter.onDecision = () => {
      throw new Error('listener bug');
    };
    try {
      expect((await curlPost(`${gw.url}/mcp`, LIST, bearer(bob.key))).status).toBe(200);
    } finally {
      limiter.onDecision = undefined;
    }
    expect(gw.logs.some((l) => l.includes('"rate limit listener failed"') && l.includes('listener bug'))).toBe(true);
  });
});

describe('per client address, before authentication', () => {
  let gw: RunningGateway;
  let dave: Issued;
  const fromSecondAddress = new Agent({ localAddress: '127.0.0.2' });

  beforeAll(async () => {
    dave = await issue('dave');
    gw = await startGateway(`
[upstream]
url = ${q(recording.url)}

[auth]
max_failures_per_minute = 1000

${dave.block}

[rate_limit]
per_address_requests_per_second = 0.1
per_address_burst_size = 4
`);
  });

  afterAll(async () => {
    await gw?.stop();
    await fromSecondAddress.close();
  });

  it('an unauthenticated flood is refused by the address limit without reaching authentication; a key from that address is refused too; another address is not', async () => {
    const statuses: number[] = [];
    let last;
    for (let i = 0; i < 8; i++) {
      last = await curlPost(`${gw.url}/mcp`, LIST, bearer(`mcp_aaaaaaaa_${'x'.repeat(43)}`));
      statuses.push(last.status);
    }
    expect(statuses).toEqual([401, 401, 401, 401, 429, 429, 429, 429]);
    expect(last!.json).toEqual({
      jsonrpc: '2.0',
      id: null,
      error: { code: -32012, message: expect.stringMatching(/^Too Many Requests: rate limit of 4 requests per 40 s exceeded; retry in \d+ s$/) },
    });
    expect(last!.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(last!.headers.get('www-authenticate')).toBeNull();
    // Authentication saw the first four only.
    expect(gw.logs.filter((l) => l.includes('"authentication failed"'))).toHaveLength(4);

    // The address limit counts every identity of the address together.
    expect((await curlPost(`${gw.url}/mcp`, LIST, bearer(dave.key))).status).toBe(429);

    const other = await undiciFetch(`${gw.url}/mcp`, { method: 'POST', body: JSON.stringify(LIST), headers: bearer(dave.key), dispatcher: fromSecondAddress });
    expect(other.status).toBe(200);
    await other.arrayBuffer();
  });

  it('IPv6 clients are counted by their /64, and an IPv4-mapped address as the IPv4 address it is', async () => {
    const from = async (remoteAddress: string) =>
      (
        await gw.app.app.inject({
          method: 'POST',
          url: '/mcp',
          payload: LIST,
          headers: { 'content-type': 'application/json', ...bearer(dave.key) },
          remoteAddress,
        })
      ).statusCode;
    const sameNetwork = [];
    for (let i = 1; i <= 5; i++) sameNetwork.push(await from(`2001:db8:0:7::${i}`));
    expect(sameNetwork).toEqual([200, 200, 200, 200, 429]);
    expect(await from('2001:db8:0:8::1')).toBe(200);
    const v4 = [];
    for (let i = 0; i < 3; i++) v4.push(await from('192.0.2.9'));
    v4.push(await from('::ffff:192.0.2.9'));
    v4.push(await from('::FFFF:192.0.2.9'));
    expect(v4).toEqual([200, 200, 200, 200, 429]);
  });
});

describe('the window', () => {
  let gw: RunningGateway;
  let erin: Issued;

  beforeAll(async () => {
    erin = await issue('erin');
    gw = await startGateway(`
[upstream]
url = ${q(recording.url)}

${erin.block}

[rate_limit]
requests_per_second = 3
burst_size = 3
`);
  });

  afterAll(async () => {
    await gw?.stop();
  });

  it('after Retry-After, the identity may send again', async () => {
    const send = () => curlPost(`${gw.url}/mcp`, LIST, bearer(erin.key));
    let refused;
    for (let i = 0; i < 10 && refused === undefined; i++) {
      const res = await send();
      if (res.status === 429) refused = res;
      else expect(res.status).toBe(200);
    }
    expect(refused, 'never refused').toBeDefined();
    expect(refused!.headers.get('retry-after')).toBe('1');
    await waitFor(async () => (await send()).status === 200, 10_000, 'a request after the window');
  });
});

describe('switched off, or without [auth]', () => {
  const running: RunningGateway[] = [];

  afterAll(async () => {
    await Promise.all(running.map((gw) => gw.stop()));
  });

  it('enabled = false: nothing is limited and no RateLimit headers are sent', async () => {
    const gw = await startGateway(`
[upstream]
url = ${q(recording.url)}

[rate_limit]
enabled = false
requests_per_second = 0.1
burst_size = 1
per_address_requests_per_second = 0.1
per_address_burst_size = 1
`);
    running.push(gw);
    expect(gw.app.limiter).toBeUndefined();
    for (let i = 0; i < 10; i++) {
      const res = await curlPost(`${gw.url}/mcp`, LIST);
      expect(res.status).toBe(200);
      expect(res.headers.get('ratelimit-limit')).toBeNull();
    }
  });

  it('without [auth], each client address is its own anonymous identity', async () => {
    const gw = await startGateway(`
[upstream]
url = ${q(recording.url)}

[rate_limit]
requests_per_second = 0.1
burst_size = 2
`);
    running.push(gw);
    const second = new Agent({ localAddress: '127.0.0.2' });
    try {
      expect((await curlPost(`${gw.url}/mcp`, LIST)).status).toBe(200);
      expect((await curlPost(`${gw.url}/mcp`, LIST)).status).toBe(200);
      expect((await curlPost(`${gw.url}/mcp`, LIST)).status).toBe(429);
      const res = await undiciFetch(`${gw.url}/mcp`, { method: 'POST', body: JSON.stringify(LIST), dispatcher: second });
      expect(res.status).toBe(200);
      expect(res.headers.get('ratelimit-remaining')).toBe('1');
      await res.arrayBuffer();
    } finally {
      await second.close();
    }
  });
});
