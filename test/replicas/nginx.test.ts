/**
 * Two gateway replicas behind a real nginx (round-robin, kept-alive upstream connections, no
 * buffering, X-Forwarded-For) sharing a real redis-server: session-less calls spread over both
 * and all answered, with the client's address in the audit log; a streamed answer (SSE) passes
 * through; a rolling restart with `shutdown_delay_ms` under load loses no request, though open
 * source nginx has no active health check (it keeps sending during the delay, and the answers'
 * `Connection: close` empties its pool of connections to the leaving replica).
 */
import { existsSync, readFileSync } from 'node:fs';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupTempDirs, q, waitFor } from '../helpers/cli.js';
import type { LoadBalancer } from '../helpers/load-balancer.js';
import type { RedisServer } from '../helpers/redis.js';
import { auditFile, echoCall, everythingUpstream, sessionlessLoad, startNginx, startRedis, startReplicas, type Replicas } from '../helpers/replicas.js';

afterAll(() => cleanupTempDirs());

function toolCalls(file: string): Array<Record<string, unknown>> {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l['event_type'] === 'tool_call');
}

const SHUTDOWN_DELAY_MS = 2_000;
const SHUTDOWN_GRACE_MS = 5_000;

describe('two replicas behind nginx', () => {
  let redis: RedisServer;
  let replicas: Replicas;
  let lb: LoadBalancer;
  const audits: string[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    replicas = await startReplicas({
      count: 2,
      configFor: (i, context) => {
        audits[i] = auditFile(context);
        return (
          `[server]\nshutdown_delay_ms = ${SHUTDOWN_DELAY_MS}\nshutdown_grace_ms = ${SHUTDOWN_GRACE_MS}\ntrusted_proxies = ["127.0.0.2"]\n` +
          `[audit]\nfile = ${q(audits[i]!)}\n` +
          `[rate_limit]\nstore = "redis"\nredis_url = ${q(redis.url)}\nrequests_per_second = 100000\nburst_size = 100000\n` +
          `per_address_requests_per_second = 100000\nper_address_burst_size = 100000\n` +
          everythingUpstream(context)
        );
      },
    });
    lb = await startNginx(replicas.backends);
  }, 120_000);

  afterAll(async () => {
    await lb?.stop();
    await replicas?.stop();
    await redis?.stop();
  }, 60_000);

  it('spreads session-less calls over both replicas, all answered; the audit names the client, not nginx', async () => {
    const agent = new Agent();
    const outcomes = [];
    for (let n = 0; n < 20; n++) outcomes.push(await echoCall(agent, `${lb.url}/mcp/everything`, `spread ${n}`));
    await agent.close();
    expect(outcomes.filter((o) => !o.ok).map((o) => o.problem)).toEqual([]);
    const served = () => audits.map((file) => toolCalls(file).length);
    await waitFor(() => served().reduce((a, b) => a + b, 0) === 20, 5_000, 'an audit line for each of the 20 calls');
    for (const count of served()) expect(count, `calls served per replica: ${served().join(', ')}`).toBeGreaterThanOrEqual(4);
    for (const file of audits) for (const line of toolCalls(file)) expect(line['client_ip']).toBe('127.0.0.1');
  });

  it('passes a streamed answer through: progress notifications, then the result, as SSE', async () => {
    const res = await request(`${lb.url}/mcp/everything`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 7,
        method: 'tools/call',
        params: { name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 3 }, _meta: { progressToken: 'p1' } },
      }),
    });
    expect(res.statusCode).toBe(200);
    expect(String(res.headers['content-type'])).toContain('text/event-stream');
    const events = (await res.body.text())
      .split('\n')
      .filter((l) => l.startsWith('data: '))
      .map((l) => JSON.parse(l.slice(6)) as Record<string, any>);
    expect(events.filter((e) => e['method'] === 'notifications/progress').length).toBeGreaterThanOrEqual(1);
    expect(events.at(-1)).toMatchObject({ id: 7, result: { content: [{ type: 'text' }] } });
  });

  it('a rolling restart under load (SIGTERM with shutdown_delay_ms) loses no request', async () => {
    let done = false;
    const load = sessionlessLoad({ url: `${lb.url}/mcp/everything`, clients: 5, until: () => done, maxRequests: 20_000, maxMs: 120_000 });
    try {
      for (const replica of replicas.list) {
        const okBefore = load.live.ok;
        await waitFor(() => load.live.ok >= okBefore + 100 || load.live.failures.length > 0, 30_000, 'calls to flow');
        replica.signal('SIGTERM');
        const exit = await replica.waitExit(SHUTDOWN_DELAY_MS + SHUTDOWN_GRACE_MS + 15_000);
        expect(exit).toMatchObject({ code: 0, signal: null });
        await replica.restart();
      }
      const okBefore = load.live.ok;
      await waitFor(() => load.live.ok >= okBefore + 100 || load.live.failures.length > 0, 30_000, 'calls to flow after the restart');
    } finally {
      done = true;
    }
    const result = await load.finished;
    console.log(
      `rolling restart of 2 replicas behind nginx under load: ${result.sent} session-less requests by 5 clients in ${result.durationMs} ms, ${result.sent - result.ok} lost`,
    );
    expect(result.failures.slice(0, 10)).toEqual([]);
    expect(result.ok).toBe(result.sent);
    expect(result.sent).toBeGreaterThanOrEqual(300);
  }, 120_000);
});
