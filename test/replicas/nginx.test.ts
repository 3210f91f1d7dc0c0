/**
 * Two gateway replicas behind a real nginx (round-robin, kept-alive upstream connections, no
 * buffering, X-Forwarded-For) sharing a real redis-server: session-less calls spread over both
 * and all answered, with the client's address in the audit log; a streamed answer (SSE) passes
 * through as it comes.
 *
 * No rolling restart here: open source nginx has no active health check, so it keeps opening
 * connections to a replica up to the instant its listener closes, and a POST it has sent on one
 * of those is neither answered nor retried (0 to 3 lost per run of 1,000-4,000 requests on a busy
 * machine; docs/operations.md). The zero-loss rolling restart is haproxy's (haproxy.test.ts).
 */
import { existsSync, readFileSync } from 'node:fs';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupTempDirs, q, waitFor } from '../helpers/cli.js';
import type { LoadBalancer } from '../helpers/load-balancer.js';
import type { RedisServer } from '../helpers/redis.js';
import { auditFile, echoCall, everythingUpstream, startNginx, startRedis, startReplicas, type Replicas } from '../helpers/replicas.js';

afterAll(() => cleanupTempDirs());

function toolCalls(file: string): Array<Record<string, unknown>> {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l['event_type'] === 'tool_call');
}

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
          `[server]\ntrusted_proxies = ["127.0.0.2"]\n` +
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
    // Read as it arrives: the first progress event comes in an earlier read than the result, which
    // the server sends a second later (a buffering proxy would hand over both at the end).
    let text = '';
    let progressAt = -1;
    let resultAt = -1;
    let reads = 0;
    for await (const chunk of res.body) {
      text += (chunk as Buffer).toString('utf8');
      if (progressAt === -1 && text.includes('notifications/progress')) progressAt = reads;
      if (resultAt === -1 && text.includes('"result"')) resultAt = reads;
      reads++;
    }
    expect(progressAt).toBeGreaterThanOrEqual(0);
    expect(progressAt).toBeLessThan(resultAt);
    const events = text
      .split('\n')
      .filter((l) => l.startsWith('data: '))
      .map((l) => JSON.parse(l.slice(6)) as Record<string, any>);
    expect(events.filter((e) => e['method'] === 'notifications/progress').length).toBeGreaterThanOrEqual(1);
    expect(events.at(-1)).toMatchObject({ id: 7, result: { content: [{ type: 'text' }] } });
  });
});
