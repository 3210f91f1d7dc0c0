/**
 * Gateway replicas behind a real haproxy (round-robin, no stickiness, health check on /ready) with
 * a real redis-server for the shared limits, as a platform team deploys them (issue 19):
 *
 * - session-less calls spread over every replica and all succeed;
 * - the audit `client_ip` is the client's, not haproxy's (`[server] trusted_proxies`);
 * - a rolling restart under load (each replica in turn: SIGTERM with `shutdown_delay_ms`, exit,
 *   start again on its port) loses no request;
 * - a Redis-shared limit holds through the load balancer within 10%, per client, not per proxy,
 *   and a client cannot get a fresh limit with forged forwarding headers.
 *
 * Everything runs on 127.0.0.1; haproxy connects to the gateways from 127.0.0.2, the clients of
 * the limit tests from 127.0.0.3-5. Every process is stopped by pid in afterAll.
 */
import { existsSync, readFileSync } from 'node:fs';
import { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupTempDirs, q, waitFor } from '../helpers/cli.js';
import { startHaproxy, type Haproxy } from '../helpers/haproxy.js';
import type { RedisServer } from '../helpers/redis.js';
import { auditFile, echoCall, everythingUpstream, sessionlessLoad, startRedis, startReplicas, type Replicas } from '../helpers/replicas.js';

afterAll(() => cleanupTempDirs());

/** The tool_call lines of a replica's audit file. */
function toolCalls(file: string): Array<Record<string, unknown>> {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l['event_type'] === 'tool_call');
}

/** What haproxy's health check needs to take a replica out (inter 200 ms, fall 2), with a wide margin. */
const SHUTDOWN_DELAY_MS = 3_000;
const SHUTDOWN_GRACE_MS = 5_000;

describe('three replicas behind haproxy, round-robin', () => {
  let redis: RedisServer;
  let replicas: Replicas;
  let lb: Haproxy;
  const audits: string[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    replicas = await startReplicas({
      count: 3,
      configFor: (i, context) => {
        audits[i] = auditFile(context);
        return (
          `[server]\nshutdown_delay_ms = ${SHUTDOWN_DELAY_MS}\nshutdown_grace_ms = ${SHUTDOWN_GRACE_MS}\ntrusted_proxies = ["127.0.0.2"]\n` +
          `[audit]\nfile = ${q(audits[i]!)}\n` +
          // Shared through Redis, and high: the load below comes from one address.
          `[rate_limit]\nstore = "redis"\nredis_url = ${q(redis.url)}\nrequests_per_second = 100000\nburst_size = 100000\n` +
          `per_address_requests_per_second = 100000\nper_address_burst_size = 100000\n` +
          everythingUpstream(context)
        );
      },
    });
    lb = await startHaproxy(replicas.backends);
    await waitFor(async () => Object.values(await lb.serverStates()).every((s) => s === 'UP'), 10_000, 'haproxy to see every replica UP');
  }, 120_000);

  afterAll(async () => {
    await lb?.stop();
    await replicas?.stop();
    await redis?.stop();
  }, 60_000);

  it('spreads session-less calls over every replica, all answered; the audit names the client, not haproxy', async () => {
    const agent = new Agent();
    const before = audits.map((file) => toolCalls(file).length);
    const outcomes = [];
    for (let n = 0; n < 30; n++) outcomes.push(await echoCall(agent, `${lb.url}/mcp/everything`, `spread ${n}`));
    await agent.close();
    expect(outcomes.filter((o) => !o.ok).map((o) => o.problem)).toEqual([]);
    const served = () => audits.map((file, i) => toolCalls(file).length - before[i]!);
    await waitFor(() => served().reduce((a, b) => a + b, 0) === 30, 5_000, 'an audit line for each of the 30 calls');
    // Round-robin: about 10 each; every replica at least a fifth of its share.
    for (const count of served()) expect(count, `calls served per replica: ${served().join(', ')}`).toBeGreaterThanOrEqual(2);
    // haproxy is the socket peer (127.0.0.2); the client is 127.0.0.1, from X-Forwarded-For.
    for (const file of audits) for (const line of toolCalls(file)) expect(line['client_ip']).toBe('127.0.0.1');
  });

  it('a rolling restart under load (SIGTERM with shutdown_delay_ms, one replica at a time) loses no request', async () => {
    let done = false;
    const load = sessionlessLoad({ url: `${lb.url}/mcp/everything`, clients: 10, until: () => done, maxRequests: 40_000, maxMs: 240_000 });
    try {
      for (const replica of replicas.list) {
        const okBefore = load.live.ok;
        await waitFor(() => load.live.ok >= okBefore + 100 || load.live.failures.length > 0, 30_000, 'calls to flow');
        replica.signal('SIGTERM');
        // haproxy takes the replica out while it still serves: that is what the delay is for.
        await waitFor(
          async () => (await lb.serverStates())[`g${replica.index}`]?.startsWith('DOWN') === true,
          SHUTDOWN_DELAY_MS,
          `haproxy to see g${replica.index} DOWN`,
        );
        expect(replica.process.running).toBe(true);
        const exit = await replica.waitExit(SHUTDOWN_DELAY_MS + SHUTDOWN_GRACE_MS + 15_000);
        expect(exit).toMatchObject({ code: 0, signal: null });
        await replica.restart();
        await waitFor(async () => (await lb.serverStates())[`g${replica.index}`] === 'UP', 10_000, `haproxy to see g${replica.index} UP again`);
      }
      const okBefore = load.live.ok;
      await waitFor(() => load.live.ok >= okBefore + 100 || load.live.failures.length > 0, 30_000, 'calls to flow after the restart');
    } finally {
      done = true;
    }
    const result = await load.finished;
    console.log(
      `rolling restart of 3 replicas behind haproxy under load: ${result.sent} session-less requests by 10 clients in ${result.durationMs} ms, ${result.sent - result.ok} lost`,
    );
    expect(result.failures.slice(0, 10)).toEqual([]);
    expect(result.ok).toBe(result.sent);
    expect(result.sent).toBeGreaterThanOrEqual(400);
  }, 240_000);
});

describe('a Redis-shared limit through haproxy: per client, within 10%', () => {
  let redis: RedisServer;
  let replicas: Replicas;
  let lb: Haproxy;
  const audits: string[] = [];
  /** Per client address: 10 requests per 200 s window (long: no assertion depends on this machine's speed). */
  const LIMIT = 10;

  beforeAll(async () => {
    redis = await startRedis();
    replicas = await startReplicas({
      count: 2,
      configFor: (i, context) => {
        audits[i] = auditFile(context);
        return (
          `[server]\ntrusted_proxies = ["127.0.0.2"]\n[audit]\nfile = ${q(audits[i]!)}\n` +
          `[rate_limit]\nstore = "redis"\nredis_url = ${q(redis.url)}\nper_address_requests_per_second = 0.05\nper_address_burst_size = ${LIMIT}\n` +
          everythingUpstream(context)
        );
      },
    });
    lb = await startHaproxy(replicas.backends);
    await waitFor(async () => Object.values(await lb.serverStates()).every((s) => s === 'UP'), 10_000, 'haproxy to see every replica UP');
  }, 120_000);

  afterAll(async () => {
    await lb?.stop();
    await replicas?.stop();
    await redis?.stop();
  }, 60_000);

  /** Sends `count` calls from `address` to `url`; returns how many were answered 200 and how many 429. */
  async function burst(address: string, url: string, count: number, headers: (n: number) => Record<string, string> = () => ({})) {
    const agent = new Agent({ localAddress: address });
    const statuses: number[] = [];
    for (let n = 0; n < count; n++) statuses.push((await echoCall(agent, url, `${address} ${n}`, headers(n))).status);
    await agent.close();
    return {
      ok: statuses.filter((s) => s === 200).length,
      limited: statuses.filter((s) => s === 429).length,
      other: statuses.filter((s) => s !== 200 && s !== 429),
    };
  }

  const linesOf = (address: string) => audits.map((file) => toolCalls(file).filter((l) => l['client_ip'] === address).length);

  it('one client gets the limit once across both replicas, not once per replica', async () => {
    const a = await burst('127.0.0.3', `${lb.url}/mcp/everything`, 3 * LIMIT);
    console.log(`shared per-address limit of ${LIMIT} through haproxy and 2 replicas: ${a.ok} of ${3 * LIMIT} allowed`);
    expect(a.other).toEqual([]);
    expect(a.ok).toBeGreaterThanOrEqual(LIMIT * 0.9);
    expect(a.ok).toBeLessThanOrEqual(LIMIT * 1.1);
    expect(a.limited).toBe(3 * LIMIT - a.ok);
    // Both replicas counted against the one limit (each served some of the allowed calls).
    await waitFor(() => linesOf('127.0.0.3').reduce((x, y) => x + y, 0) === a.ok, 5_000, 'the audit lines of the allowed calls');
    for (const count of linesOf('127.0.0.3')) expect(count).toBeGreaterThan(0);
  });

  it('another client behind the same proxy has a limit of its own, and its own audit address', async () => {
    const b = await burst('127.0.0.4', `${lb.url}/mcp/everything`, 2 * LIMIT);
    expect(b.ok).toBeGreaterThanOrEqual(LIMIT * 0.9);
    expect(b.ok).toBeLessThanOrEqual(LIMIT * 1.1);
    await waitFor(() => linesOf('127.0.0.4').reduce((x, y) => x + y, 0) === b.ok, 5_000, "the audit lines of 127.0.0.4's calls");
  });

  it('forged X-Forwarded-For and Forwarded headers get no fresh limit, through haproxy or straight to a replica', async () => {
    const forged = (n: number) => ({ 'x-forwarded-for': `198.51.100.${n}`, forwarded: `for=198.51.100.${n}` });
    const c = await burst('127.0.0.5', `${lb.url}/mcp/everything`, 2 * LIMIT, forged);
    expect(c.ok).toBeGreaterThanOrEqual(LIMIT * 0.9);
    expect(c.ok).toBeLessThanOrEqual(LIMIT * 1.1);
    // Straight to a replica, the client is not a trusted proxy: its headers are ignored, its limit is spent.
    const direct = await burst('127.0.0.5', `${replicas.list[0]!.url}/mcp/everything`, 3, forged);
    expect(direct.ok).toBe(0);
    expect(direct.limited).toBe(3);
    await waitFor(() => linesOf('127.0.0.5').reduce((x, y) => x + y, 0) === c.ok, 5_000, "the audit lines of 127.0.0.5's calls");
    for (const file of audits) for (const line of toolCalls(file)) expect(String(line['client_ip'])).not.toMatch(/^198\.51\.100\./);
  });
});
