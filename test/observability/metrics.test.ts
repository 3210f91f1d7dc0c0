/**
 * Metrics: every family as a scrape shows it, with bounded label values, and every exposition
 * validated by the real parser (`promtool check metrics`). The last block scrapes a real gateway
 * with a stdio server-everything upstream.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ClientNotificationSchema, ClientRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance } from 'fastify';
import { register as globalRegistry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { registerMetricsRoute } from '../../src/http/metrics.js';
import { DURATION_BUCKETS, HTTP_METHODS, MCP_METHODS, Metrics, type GatewayView } from '../../src/observability/metrics.js';
import { EVERYTHING, NODE, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { expectValidExposition, expectValidPrometheusConfig, expectValidPromQL } from '../helpers/promtool.js';

/**
 * Intended lint findings: prom-client's default Node.js gauges carry a `_total` suffix
 * (nodejs_active_handles_total, ...). They are prom-client's standard names, kept as every Node.js
 * dashboard expects them; none of MCP Guard's own families may produce a lint finding.
 */
const PROM_CLIENT_DEFAULT_LINT = [/^nodejs_active_(handles|requests|resources)_total non-counter metrics should not have "_total" suffix$/];

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a text exposition (comments skipped, label values unescaped). */
function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`unparsable line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_m, c: string) => (c === 'n' ? '\n' : c));
    }
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The samples of one metric name, optionally only those whose labels include `labels`. */
function series(text: string, name: string, labels: Record<string, string> = {}): Sample[] {
  return parse(text).filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The value of the one sample matching; fails when there is none or several. */
function value(text: string, name: string, labels: Record<string, string> = {}): number {
  const found = series(text, name, labels);
  if (found.length !== 1)
    throw new Error(`expected one ${name}${JSON.stringify(labels)}, found ${found.length}:\n${found.map((s) => JSON.stringify(s)).join('\n')}`);
  return found[0]!.value;
}

/** Scrapes and validates with promtool: every exposition a test looks at goes through the parser. */
async function scrape(metrics: Metrics): Promise<string> {
  const text = await metrics.text();
  await expectValidExposition(text, PROM_CLIENT_DEFAULT_LINT);
  return text;
}

function fakeGateway(
  servers: Array<{ name: string; transport: 'stdio' | 'http' | 'sse'; healthy: boolean; restarts: number; circuit?: 'closed' | 'open' | 'half_open' }>,
  sessions = 0,
) {
  const view = {
    servers,
    sessions: { size: sessions },
    allUpstreams: () =>
      view.servers.map((s) => ({
        config: { name: s.name, transport: s.transport },
        status: () => ({ healthy: s.healthy, restarts: s.restarts, ...(s.circuit ? { circuit: s.circuit } : {}) }),
      })),
  };
  const asView: GatewayView = view;
  return { view, asView };
}

describe('promtool check (the validator every scrape goes through)', () => {
  it('rejects a malformed exposition and lint problems that are not allowed', async () => {
    await expect(expectValidExposition('mcp_guard_broken{method="x" 1\n')).rejects.toThrow(/promtool check metrics failed \(exit 1\)/);
    const gaugeNamedTotal = '# HELP x_total A gauge.\n# TYPE x_total gauge\nx_total 1\n';
    await expect(expectValidExposition(gaugeNamedTotal)).rejects.toThrow(/should not have "_total" suffix/);
    await expect(expectValidExposition(gaugeNamedTotal, [/^x_total non-counter/])).resolves.toMatchObject({ code: 3, problems: [] });
  });
});

describe('Metrics: request-level families', () => {
  it('counts requests by HTTP method, status and server, and times them by method and server', async () => {
    const m = new Metrics({ defaultMetrics: false, servers: ['files', 'search'] });
    m.request('POST', 200, 0.003, 'files');
    m.request('POST', 200, 0.2, 'files');
    m.request('POST', 200, 0.01, 'search');
    m.request('POST', 401, 0.0004); // refused before routing
    m.request('POST', 404, 0.0004); // unknown server: routed to none
    m.request('GET', 200, 120, 'files');
    m.request('DELETE', 204, 0.001, 'search');
    const text = await scrape(m);
    expect(value(text, 'mcp_guard_requests_total', { method: 'POST', status: '200', server: 'files' })).toBe(2);
    expect(value(text, 'mcp_guard_requests_total', { method: 'POST', status: '200', server: 'search' })).toBe(1);
    expect(value(text, 'mcp_guard_requests_total', { method: 'POST', status: '401', server: 'none' })).toBe(1);
    expect(value(text, 'mcp_guard_requests_total', { method: 'POST', status: '404', server: 'none' })).toBe(1);
    expect(value(text, 'mcp_guard_requests_total', { method: 'GET', status: '200', server: 'files' })).toBe(1);
    expect(value(text, 'mcp_guard_requests_total', { method: 'DELETE', status: '204', server: 'search' })).toBe(1);
    for (const s of series(text, 'mcp_guard_requests_total')) expect(Object.keys(s.labels).sort()).toEqual(['method', 'server', 'status']);
    expect(value(text, 'mcp_guard_request_duration_seconds_count', { method: 'POST', server: 'files' })).toBe(2);
    expect(value(text, 'mcp_guard_request_duration_seconds_sum', { method: 'POST', server: 'files' })).toBeCloseTo(0.203);
    expect(value(text, 'mcp_guard_request_duration_seconds_bucket', { method: 'POST', server: 'files', le: '0.005' })).toBe(1);
    expect(value(text, 'mcp_guard_request_duration_seconds_bucket', { method: 'POST', server: 'none', le: '0.0005' })).toBe(2);
    for (const s of series(text, 'mcp_guard_request_duration_seconds_count')) expect(Object.keys(s.labels).sort()).toEqual(['method', 'server']);
    // A long-lived SSE stream lands past the last finite bucket.
    expect(value(text, 'mcp_guard_request_duration_seconds_bucket', { method: 'GET', server: 'files', le: '30' })).toBe(0);
    expect(value(text, 'mcp_guard_request_duration_seconds_bucket', { method: 'GET', server: 'files', le: '+Inf' })).toBe(1);
  });

  it('keeps the earlier gateway\'s selectors working: method="POST", sum by (status), sum by (method)', async () => {
    const m = new Metrics({ defaultMetrics: false, servers: ['a', 'b'] });
    m.request('POST', 200, 0.01, 'a');
    m.request('POST', 200, 0.01, 'b');
    m.request('POST', 429, 0.01, 'a');
    m.request('POST', 401, 0.01);
    m.request('GET', 200, 1, 'b');
    const text = await scrape(m);
    const sum = (samples: Sample[]) => samples.reduce((total, s) => total + s.value, 0);
    const byLabel = (name: string, label: string) => {
      const out: Record<string, number> = {};
      for (const s of series(text, name)) out[s.labels[label]!] = (out[s.labels[label]!] ?? 0) + s.value;
      return out;
    };
    expect(sum(series(text, 'mcp_guard_requests_total', { method: 'POST' }))).toBe(4);
    expect(byLabel('mcp_guard_requests_total', 'status')).toEqual({ '200': 3, '401': 1, '429': 1 });
    expect(byLabel('mcp_guard_requests_total', 'method')).toEqual({ POST: 4, GET: 1 });
    expect(sum(series(text, 'mcp_guard_request_duration_seconds_count', { method: 'POST' }))).toBe(4);
    expect(byLabel('mcp_guard_request_duration_seconds_count', 'method')).toEqual({ POST: 4, GET: 1 });
  });

  it('folds unknown HTTP methods, servers and odd statuses into "other"', async () => {
    const m = new Metrics({ defaultMetrics: false, servers: ['files'] });
    m.request('PUT', 200, 0.01, 'files');
    m.request('post', 400, 0.01, 'files'); // HTTP methods are case-sensitive; Node reports them upper-case
    m.request('tools/call', 400, 0.01, 'files'); // a JSON-RPC method is never an HTTP method
    m.request('x'.repeat(10_000), 400, 0.01, 'files');
    m.request('POST', 200, 0.01, 'not-configured');
    m.request('POST', 200, 0.01, 'y'.repeat(10_000));
    m.request('POST', 999, 0.01, 'files');
    m.request('POST', Number.NaN, 0.01, 'files');
    m.request('POST', 200, Number.NaN, 'files'); // counted, not timed
    m.upstreamRequest('files', 'ping', -1, 'ok');
    const text = await scrape(m);
    expect(value(text, 'mcp_guard_requests_total', { method: 'other', status: '200', server: 'files' })).toBe(1);
    expect(value(text, 'mcp_guard_requests_total', { method: 'other', status: '400', server: 'files' })).toBe(3);
    expect(value(text, 'mcp_guard_requests_total', { method: 'POST', status: '200', server: 'other' })).toBe(2);
    expect(value(text, 'mcp_guard_requests_total', { method: 'POST', status: 'other', server: 'files' })).toBe(2);
    expect(value(text, 'mcp_guard_requests_total', { method: 'POST', status: '200', server: 'files' })).toBe(1);
    expect(value(text, 'mcp_guard_request_duration_seconds_count', { method: 'POST', server: 'files' })).toBe(2);
    expect(value(text, 'mcp_guard_upstream_requests_total', { server: 'files', method: 'ping' })).toBe(1);
    expect(series(text, 'mcp_guard_upstream_latency_seconds_count', { server: 'files' })).toHaveLength(0);
    const labelValues = (label: string) => [...new Set(series(text, 'mcp_guard_requests_total').map((s) => s.labels[label]))].sort();
    expect(labelValues('method')).toEqual(['POST', 'other']);
    expect(labelValues('server')).toEqual(['files', 'other']);
  });

  it('without configured servers, every server is "other" and an unrouted request is still "none"', async () => {
    const m = new Metrics({ defaultMetrics: false });
    m.request('POST', 200, 0.01, 'files');
    m.request('POST', 401, 0.01);
    m.upstreamRequest('files', 'tools/call', 0.01, 'ok');
    m.learnTools('files', ['read_file']);
    m.toolCall('files', 'read_file', 'ok');
    const text = await scrape(m);
    expect(value(text, 'mcp_guard_requests_total', { method: 'POST', status: '200', server: 'other' })).toBe(1);
    expect(value(text, 'mcp_guard_requests_total', { method: 'POST', status: '401', server: 'none' })).toBe(1);
    expect(value(text, 'mcp_guard_upstream_requests_total', { server: 'other', method: 'tools/call', outcome: 'ok' })).toBe(1);
    expect(value(text, 'mcp_guard_tool_calls_total', { server: 'other', tool: '__other__', outcome: 'ok' })).toBe(1);
    expect(text).not.toContain('"files"');
  });

  it('has exactly POST, GET and DELETE as HTTP method values', () => {
    expect([...HTTP_METHODS].sort()).toEqual(['DELETE', 'GET', 'POST']);
  });

  it('knows every client request and notification method of the SDK it is built with', () => {
    const fromSdk = [...ClientRequestSchema.options, ...ClientNotificationSchema.options].map((o) => o.shape.method.value);
    expect(fromSdk.length).toBeGreaterThan(15);
    // The v1 SDK speaks 2025-11-25; 2026-07-28 adds these two client requests.
    expect([...MCP_METHODS].sort()).toEqual([...new Set([...fromSdk, 'server/discover', 'subscriptions/listen'])].sort());
  });

  it('uses buckets from sub-millisecond to 30 s', () => {
    expect(DURATION_BUCKETS[0]).toBeLessThan(0.001);
    expect(DURATION_BUCKETS.at(-1)).toBe(30);
    expect([...DURATION_BUCKETS].sort((a, b) => a - b)).toEqual(DURATION_BUCKETS);
  });

  it('counts authentication by provider and result', async () => {
    const m = new Metrics({ defaultMetrics: false });
    m.auth('api_key', 'success');
    m.auth('api_key', 'success');
    m.auth('jwt', 'failure');
    m.auth('api_key', 'throttled');
    m.auth('api_key', 'unavailable');
    m.auth('anonymous', 'success');
    const text = await scrape(m);
    expect(value(text, 'mcp_guard_auth_total', { provider: 'api_key', result: 'success' })).toBe(2);
    expect(value(text, 'mcp_guard_auth_total', { provider: 'jwt', result: 'failure' })).toBe(1);
    expect(value(text, 'mcp_guard_auth_total', { provider: 'api_key', result: 'throttled' })).toBe(1);
    expect(value(text, 'mcp_guard_auth_total', { provider: 'api_key', result: 'unavailable' })).toBe(1);
    expect(value(text, 'mcp_guard_auth_total', { provider: 'anonymous', result: 'success' })).toBe(1);
  });

  it('keeps mcp_guard_rate_limit_total{allowed} as it was and counts refusals by scope apart', async () => {
    const m = new Metrics({ defaultMetrics: false });
    let text = await scrape(m);
    // Present at zero from the start, so rates and ratios have no gaps.
    expect(value(text, 'mcp_guard_rate_limit_total', { allowed: 'true' })).toBe(0);
    expect(value(text, 'mcp_guard_rate_limit_total', { allowed: 'false' })).toBe(0);
    expect(
      series(text, 'mcp_guard_rate_limited_total')
        .map((s) => s.labels['scope'])
        .sort(),
    ).toEqual(['address', 'identity', 'tool']);
    m.rateLimit(true);
    m.rateLimit(true);
    m.rateLimit(false, 'address');
    m.rateLimit(false, 'tool');
    m.rateLimit(false, 'tool');
    m.rateLimit(false);
    m.rateLimitStoreError();
    text = await scrape(m);
    // The earlier gateway's series: exactly one label, one increment per decision.
    for (const s of series(text, 'mcp_guard_rate_limit_total')) expect(Object.keys(s.labels)).toEqual(['allowed']);
    expect(value(text, 'mcp_guard_rate_limit_total', { allowed: 'true' })).toBe(2);
    expect(value(text, 'mcp_guard_rate_limit_total', { allowed: 'false' })).toBe(4);
    expect(value(text, 'mcp_guard_rate_limited_total', { scope: 'address' })).toBe(1);
    expect(value(text, 'mcp_guard_rate_limited_total', { scope: 'identity' })).toBe(0);
    expect(value(text, 'mcp_guard_rate_limited_total', { scope: 'tool' })).toBe(2);
    expect(value(text, 'mcp_guard_rate_limited_total', { scope: 'other' })).toBe(1);
    expect(value(text, 'mcp_guard_rate_limit_store_errors_total')).toBe(1);
  });

  it('counts upstream requests by server, JSON-RPC method and outcome, and times them by server', async () => {
    const m = new Metrics({ defaultMetrics: false, servers: ['files', 'search'] });
    m.upstreamRequest('files', 'tools/call', 0.05, 'ok');
    m.upstreamRequest('files', 'tools/call', 30.5, 'timeout');
    m.upstreamRequest('files', 'vendor/custom', 0.01, 'error');
    m.upstreamRequest('search', 'initialize', 0.2, 'ok');
    m.upstreamRequest('search', 'GET', 0.2, 'ok'); // HTTP methods belong to requests to the gateway only
    m.upstreamRequest('search', 'POST', 0.2, 'ok');
    m.upstreamRequest('rogue', 'tools/call', 0.2, 'error'); // not a configured server
    const text = await scrape(m);
    expect(value(text, 'mcp_guard_upstream_requests_total', { server: 'files', method: 'tools/call', outcome: 'ok' })).toBe(1);
    expect(value(text, 'mcp_guard_upstream_requests_total', { server: 'files', method: 'tools/call', outcome: 'timeout' })).toBe(1);
    expect(value(text, 'mcp_guard_upstream_requests_total', { server: 'files', method: 'other', outcome: 'error' })).toBe(1);
    expect(value(text, 'mcp_guard_upstream_requests_total', { server: 'search', method: 'initialize', outcome: 'ok' })).toBe(1);
    expect(value(text, 'mcp_guard_upstream_requests_total', { server: 'search', method: 'other', outcome: 'ok' })).toBe(2);
    expect(value(text, 'mcp_guard_upstream_requests_total', { server: 'other', method: 'tools/call', outcome: 'error' })).toBe(1);
    expect(series(text, 'mcp_guard_upstream_requests_total', { server: 'rogue' })).toHaveLength(0);
    expect(value(text, 'mcp_guard_upstream_latency_seconds_count', { server: 'files' })).toBe(3);
    expect(value(text, 'mcp_guard_upstream_latency_seconds_bucket', { server: 'files', le: '30' })).toBe(2);
    expect(value(text, 'mcp_guard_upstream_latency_seconds_count', { server: 'search' })).toBe(3);
    expect(value(text, 'mcp_guard_upstream_latency_seconds_count', { server: 'other' })).toBe(1);
    for (const s of series(text, 'mcp_guard_upstream_latency_seconds_count')) expect(Object.keys(s.labels)).toEqual(['server']);
  });
});

describe('Metrics: tool calls with bounded tool names', () => {
  it('uses names the server listed; anything else, or another server\'s tool, is "__other__"', async () => {
    const m = new Metrics({ defaultMetrics: false, servers: ['files', 'search', 'unlisted'] });
    m.learnTools('files', ['read_file', 'write_file']);
    m.learnTools('search', ['query']);
    m.toolCall('files', 'read_file', 'ok');
    m.toolCall('files', 'read_file', 'ok');
    m.toolCall('files', 'write_file', 'denied');
    m.toolCall('files', 'rm_rf', 'error');
    m.toolCall('files', 'query', 'rate_limited'); // listed by search, not by files
    m.toolCall('unlisted', 'anything', 'ok'); // a server never listed
    const text = await scrape(m);
    expect(value(text, 'mcp_guard_tool_calls_total', { server: 'files', tool: 'read_file', outcome: 'ok' })).toBe(2);
    expect(value(text, 'mcp_guard_tool_calls_total', { server: 'files', tool: 'write_file', outcome: 'denied' })).toBe(1);
    expect(value(text, 'mcp_guard_tool_calls_total', { server: 'files', tool: '__other__', outcome: 'error' })).toBe(1);
    expect(value(text, 'mcp_guard_tool_calls_total', { server: 'files', tool: '__other__', outcome: 'rate_limited' })).toBe(1);
    expect(value(text, 'mcp_guard_tool_calls_total', { server: 'unlisted', tool: '__other__', outcome: 'ok' })).toBe(1);
    expect(series(text, 'mcp_guard_tool_calls_total', { tool: 'rm_rf' })).toHaveLength(0);
  });

  it('counts a server that is not configured as "other", with every tool "__other__", and learns nothing from it', async () => {
    const m = new Metrics({ defaultMetrics: false, servers: ['files'] });
    m.learnTools('files', ['read_file']);
    m.learnTools('rogue', ['read_file', 'steal']);
    m.learnTools('other', ['steal']); // the catch-all value is not a server either
    m.toolCall('rogue', 'steal', 'ok');
    m.toolCall('rogue', 'read_file', 'ok');
    m.toolCall('other', 'steal', 'denied');
    m.toolCall('files', 'read_file', 'ok');
    const text = await scrape(m);
    expect(value(text, 'mcp_guard_tool_calls_total', { server: 'other', tool: '__other__', outcome: 'ok' })).toBe(2);
    expect(value(text, 'mcp_guard_tool_calls_total', { server: 'other', tool: '__other__', outcome: 'denied' })).toBe(1);
    expect(value(text, 'mcp_guard_tool_calls_total', { server: 'files', tool: 'read_file', outcome: 'ok' })).toBe(1);
    expect(series(text, 'mcp_guard_tool_calls_total', { tool: 'steal' })).toHaveLength(0);
    expect(series(text, 'mcp_guard_tool_calls_total', { server: 'rogue' })).toHaveLength(0);
  });

  it('holds the per-server cap: the first maxToolsPerServer names listed, the rest "__other__"', async () => {
    const m = new Metrics({ defaultMetrics: false, maxToolsPerServer: 3, servers: ['a', 'b'] });
    m.learnTools('a', ['t1', 't2']);
    m.learnTools('a', ['t2', 't3', 't4', 't5']); // a later page / list_changed adds, up to the cap
    m.learnTools('b', ['t4', 't5', 't6', 't7']); // each server has its own cap
    for (const tool of ['t1', 't2', 't3', 't4', 't5']) m.toolCall('a', tool, 'ok');
    for (const tool of ['t4', 't5', 't6', 't7']) m.toolCall('b', tool, 'ok');
    const text = await scrape(m);
    expect(
      series(text, 'mcp_guard_tool_calls_total', { server: 'a' })
        .map((s) => s.labels['tool'])
        .sort(),
    ).toEqual(['__other__', 't1', 't2', 't3']);
    expect(value(text, 'mcp_guard_tool_calls_total', { server: 'a', tool: '__other__' })).toBe(2);
    expect(
      series(text, 'mcp_guard_tool_calls_total', { server: 'b' })
        .map((s) => s.labels['tool'])
        .sort(),
    ).toEqual(['__other__', 't4', 't5', 't6']);
  });

  it('defaults to 100 tools per server and never learns empty or very long names', async () => {
    const m = new Metrics({ defaultMetrics: false, servers: ['big'] });
    const many = Array.from({ length: 150 }, (_, i) => `tool_${i}`);
    m.learnTools('big', ['', 'x'.repeat(129), ...many]);
    for (const tool of ['', 'x'.repeat(129), ...many]) m.toolCall('big', tool, 'ok');
    const text = await scrape(m);
    const tools = series(text, 'mcp_guard_tool_calls_total', { server: 'big' });
    expect(tools).toHaveLength(101);
    expect(value(text, 'mcp_guard_tool_calls_total', { server: 'big', tool: '__other__' })).toBe(52);
    expect(value(text, 'mcp_guard_tool_calls_total', { server: 'big', tool: 'tool_99' })).toBe(1);
  });

  it('escapes whatever a server names its tools so the exposition stays valid', async () => {
    const m = new Metrics({ defaultMetrics: false, servers: ['odd'] });
    const odd = ['quote"d', 'back\\slash', 'new\nline', 'ünïcødé/tool', '{brace}=,'];
    m.learnTools('odd', odd);
    for (const tool of odd) m.toolCall('odd', tool, 'ok');
    const text = await scrape(m);
    expect(
      series(text, 'mcp_guard_tool_calls_total', { server: 'odd' })
        .map((s) => s.labels['tool'])
        .sort(),
    ).toEqual([...odd].sort());
  });
});

describe('Metrics: active identities', () => {
  it('counts distinct identities seen in the last 5 minutes, with an injected clock', async () => {
    let now = 1_000_000;
    const m = new Metrics({ defaultMetrics: false, now: () => now });
    expect(value(await scrape(m), 'mcp_guard_active_identities')).toBe(0);
    m.identitySeen('alice');
    m.identitySeen('alice');
    now += 60_000;
    m.identitySeen('bob');
    expect(value(await scrape(m), 'mcp_guard_active_identities')).toBe(2);
    now += 240_000; // alice last seen exactly 5 minutes ago: still in
    expect(value(await scrape(m), 'mcp_guard_active_identities')).toBe(2);
    now += 1;
    expect(value(await scrape(m), 'mcp_guard_active_identities')).toBe(1);
    m.identitySeen('alice'); // seen again: back in, bob still in
    expect(value(await scrape(m), 'mcp_guard_active_identities')).toBe(2);
    now += 300_000;
    expect(value(await scrape(m), 'mcp_guard_active_identities')).toBe(1);
    now += 1;
    expect(value(await scrape(m), 'mcp_guard_active_identities')).toBe(0);
  });

  it('keeps bounded memory: beyond maxIdentities the least recently seen are forgotten', async () => {
    let now = 0;
    const m = new Metrics({ defaultMetrics: false, now: () => now, maxIdentities: 100, identityWindowSeconds: 60 });
    for (let i = 0; i < 1_000; i++) {
      now += 1;
      m.identitySeen(`id-${i}`);
    }
    const text = await scrape(m);
    expect(value(text, 'mcp_guard_active_identities')).toBe(100);
    expect(text).toContain('seen in the last 60 s');
    // Memory does not wait for a scrape to shrink either: old entries go as new ones arrive.
    now += 61_000;
    m.identitySeen('late');
    expect(value(await scrape(m), 'mcp_guard_active_identities')).toBe(1);
  });
});

describe('Metrics: callbacks read at scrape time', () => {
  it("follows the audit log's cumulative loss counts (AuditLog.stats fits), zero before any is set", async () => {
    const m = new Metrics({ defaultMetrics: false });
    let text = await scrape(m);
    expect(value(text, 'mcp_guard_audit_dropped_total', { stage: 'queue' })).toBe(0);
    expect(value(text, 'mcp_guard_audit_dropped_total', { stage: 'write' })).toBe(0);
    expect(value(text, 'mcp_guard_audit_dropped_total', { stage: 'export' })).toBe(0);
    const stats = { recorded: 100, dropped: 3, exportDropped: 0, written: 97, writeFailures: 1, exportFailures: 0 };
    m.setAuditStats(() => stats);
    text = await scrape(m);
    expect(value(text, 'mcp_guard_audit_dropped_total', { stage: 'queue' })).toBe(3);
    expect(value(text, 'mcp_guard_audit_dropped_total', { stage: 'write' })).toBe(1);
    stats.dropped = 5;
    stats.exportDropped = 7;
    text = await scrape(m);
    expect(value(text, 'mcp_guard_audit_dropped_total', { stage: 'queue' })).toBe(5);
    expect(value(text, 'mcp_guard_audit_dropped_total', { stage: 'export' })).toBe(7);
    // A counter never goes down.
    stats.dropped = 1;
    text = await scrape(m);
    expect(value(text, 'mcp_guard_audit_dropped_total', { stage: 'queue' })).toBe(5);
    // A failing callback does not fail the scrape; the counts stay where they were.
    m.setAuditStats(() => {
      throw new Error('audit writer gone');
    });
    text = await scrape(m);
    expect(value(text, 'mcp_guard_audit_dropped_total', { stage: 'queue' })).toBe(5);
    expect(value(text, 'mcp_guard_audit_dropped_total', { stage: 'export' })).toBe(7);
  });

  it('bindGateway: upstream up/down with its transport, restarts, active sessions', async () => {
    const m = new Metrics({ defaultMetrics: false });
    let text = await scrape(m);
    expect(series(text, 'mcp_guard_upstream_up')).toHaveLength(0);
    expect(value(text, 'mcp_guard_active_sessions')).toBe(0);
    const { view, asView } = fakeGateway(
      [
        { name: 'local', transport: 'stdio', healthy: true, restarts: 0 },
        { name: 'api', transport: 'http', healthy: false, restarts: 0 },
        { name: 'stream', transport: 'sse', healthy: true, restarts: 0 },
      ],
      4,
    );
    m.bindGateway(asView);
    text = await scrape(m);
    expect(value(text, 'mcp_guard_upstream_up', { server: 'local', transport: 'stdio' })).toBe(1);
    expect(value(text, 'mcp_guard_upstream_up', { server: 'api', transport: 'http' })).toBe(0);
    expect(value(text, 'mcp_guard_upstream_up', { server: 'stream', transport: 'sse' })).toBe(1);
    expect(value(text, 'mcp_guard_upstream_restarts_total', { server: 'local' })).toBe(0);
    expect(value(text, 'mcp_guard_active_sessions')).toBe(4);

    view.servers[0]!.healthy = false;
    view.servers[0]!.restarts = 2;
    view.servers[1]!.healthy = true;
    view.sessions.size = 1;
    text = await scrape(m);
    expect(value(text, 'mcp_guard_upstream_up', { server: 'local' })).toBe(0);
    expect(value(text, 'mcp_guard_upstream_up', { server: 'api' })).toBe(1);
    expect(value(text, 'mcp_guard_upstream_restarts_total', { server: 'local' })).toBe(2);
    expect(value(text, 'mcp_guard_active_sessions')).toBe(1);
    expect(text).toMatch(/# TYPE mcp_guard_upstream_restarts_total counter/);
    // Scraping twice does not count the same restarts twice.
    text = await scrape(m);
    expect(value(text, 'mcp_guard_upstream_restarts_total', { server: 'local' })).toBe(2);
  });

  it('bindGateway: a circuit that is open or half-open is 1, closed 0; a server without a circuit breaker has no series', async () => {
    const m = new Metrics({ defaultMetrics: false });
    const { view, asView } = fakeGateway([
      { name: 'local', transport: 'stdio', healthy: true, restarts: 0, circuit: 'closed' },
      { name: 'api', transport: 'http', healthy: false, restarts: 0, circuit: 'open' },
      { name: 'plain', transport: 'sse', healthy: true, restarts: 0 },
    ]);
    m.bindGateway(asView);
    let text = await scrape(m);
    expect(value(text, 'mcp_guard_upstream_circuit_open', { server: 'local' })).toBe(0);
    expect(value(text, 'mcp_guard_upstream_circuit_open', { server: 'api' })).toBe(1);
    expect(series(text, 'mcp_guard_upstream_circuit_open')).toHaveLength(2);
    view.servers[1]!.circuit = 'half_open';
    text = await scrape(m);
    expect(value(text, 'mcp_guard_upstream_circuit_open', { server: 'api' })).toBe(1);
    view.servers[1]!.circuit = 'closed';
    text = await scrape(m);
    expect(value(text, 'mcp_guard_upstream_circuit_open', { server: 'api' })).toBe(0);
  });
});

describe('Metrics: its own registry', () => {
  it('never touches the global registry, and two instances live side by side', async () => {
    const before = await globalRegistry.metrics();
    const a = new Metrics();
    const b = new Metrics();
    a.request('POST', 200, 0.001);
    expect(await globalRegistry.metrics()).toBe(before);
    expect(globalRegistry.getSingleMetric('mcp_guard_requests_total')).toBeUndefined();
    expect(value(await scrape(a), 'mcp_guard_requests_total', { method: 'POST' })).toBe(1);
    expect(series(await scrape(b), 'mcp_guard_requests_total')).toHaveLength(0);
  });

  it('includes process and Node.js metrics unless told not to', async () => {
    const withDefaults = await scrape(new Metrics());
    expect(series(withDefaults, 'process_cpu_seconds_total')).toHaveLength(1);
    expect(withDefaults).toMatch(/^# TYPE nodejs_heap_size_used_bytes gauge$/m);
    const without = await scrape(new Metrics({ defaultMetrics: false }));
    expect(without).not.toMatch(/^process_|^nodejs_/m);
    // With nothing recorded yet, the exposition is still valid and complete.
    for (const family of [
      'mcp_guard_requests_total',
      'mcp_guard_request_duration_seconds',
      'mcp_guard_auth_total',
      'mcp_guard_rate_limit_total',
      'mcp_guard_active_identities',
      'mcp_guard_upstream_requests_total',
      'mcp_guard_upstream_latency_seconds',
      'mcp_guard_tool_calls_total',
      'mcp_guard_cache_lookups_total',
      'mcp_guard_upstream_up',
      'mcp_guard_upstream_circuit_open',
      'mcp_guard_upstream_restarts_total',
      'mcp_guard_active_sessions',
      'mcp_guard_rate_limited_total',
      'mcp_guard_rate_limit_store_errors_total',
      'mcp_guard_audit_dropped_total',
    ]) {
      expect(without).toMatch(new RegExp(`^# TYPE ${family} `, 'm'));
    }
  });
});

describe('GET /metrics', () => {
  const apps: FastifyInstance[] = [];
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((app) => app.close()));
  });

  it("serves the exposition with the registry's content type, unauthenticated by default", async () => {
    const metrics = new Metrics({ servers: ['files'] });
    metrics.request('POST', 200, 0.01, 'files');
    const app = Fastify();
    apps.push(app);
    registerMetricsRoute(app, metrics);
    const res = await app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe(metrics.registry.contentType);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4; charset=utf-8$/);
    expect(res.headers['cache-control']).toBe('no-store');
    await expectValidExposition(res.body, PROM_CLIENT_DEFAULT_LINT);
    expect(value(res.body, 'mcp_guard_requests_total', { method: 'POST', status: '200', server: 'files' })).toBe(1);
  });

  it('runs the protect hook when one is given', async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    const app = Fastify();
    apps.push(app);
    registerMetricsRoute(app, metrics, async (request, reply) => {
      if (request.headers.authorization !== 'Bearer good') await reply.code(401).send({ error: 'unauthorized' });
    });
    expect((await app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(401);
    const ok = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: 'Bearer good' } });
    expect(ok.statusCode).toBe(200);
    await expectValidExposition(ok.body);
  });
});

describe('GET /metrics bound to a real gateway (stdio server-everything)', () => {
  let gw: RunningGateway;
  let app: FastifyInstance;
  let url: string;
  const metrics = new Metrics({ servers: ['everything'] });

  beforeAll(async () => {
    gw = await startGateway(`
[[upstream.servers]]
name = "everything"
path_prefix = "/everything"
transport = "stdio"
command = ${q(NODE)}
args = [${q(EVERYTHING)}, "stdio"]
restart_backoff_ms = 100
timeout_ms = 20000
`);
    app = Fastify();
    registerMetricsRoute(app, metrics);
    metrics.bindGateway(gw.app.gateway);
    url = `${await app.listen({ host: '127.0.0.1', port: 0 })}/metrics`;
  });

  afterAll(async () => {
    await app?.close();
    await gw?.stop();
  });

  async function get(): Promise<string> {
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(metrics.registry.contentType);
    const text = await res.text();
    await expectValidExposition(text, PROM_CLIENT_DEFAULT_LINT);
    return text;
  }

  it('shows the upstream up, its restarts and the open sessions', async () => {
    let text = await get();
    expect(value(text, 'mcp_guard_upstream_up', { server: 'everything', transport: 'stdio' })).toBe(1);
    expect(value(text, 'mcp_guard_upstream_restarts_total', { server: 'everything' })).toBe(0);
    expect(value(text, 'mcp_guard_active_sessions')).toBe(0);

    const transport = new StreamableHTTPClientTransport(new URL(`${gw.url}/mcp/everything`));
    const client = new Client({ name: 'metrics-test', version: '1.0.0' });
    await client.connect(transport);
    try {
      text = await get();
      expect(value(text, 'mcp_guard_active_sessions')).toBe(1);

      // Tool names come from the server's own tools/list: those are the only tool label values.
      const { tools } = await client.listTools();
      metrics.learnTools(
        'everything',
        tools.map((t) => t.name),
      );
      metrics.toolCall('everything', 'echo', 'ok');
      metrics.toolCall('everything', 'not-a-tool', 'error');
      text = await get();
      expect(value(text, 'mcp_guard_tool_calls_total', { server: 'everything', tool: 'echo', outcome: 'ok' })).toBe(1);
      expect(value(text, 'mcp_guard_tool_calls_total', { server: 'everything', tool: '__other__', outcome: 'error' })).toBe(1);

      // The child dies: down until restarted, then up with one restart counted.
      const upstream = gw.app.gateway.upstream('everything');
      const pid = upstream.status().pid;
      expect(pid).toBeTypeOf('number');
      process.kill(pid!, 'SIGKILL');
      await waitFor(() => !upstream.status().healthy || upstream.status().pid !== pid, 10_000, 'the child to be seen dead');
      await waitFor(() => upstream.status().healthy && upstream.status().pid !== pid, 15_000, 'the child to restart');
      text = await get();
      expect(value(text, 'mcp_guard_upstream_up', { server: 'everything', transport: 'stdio' })).toBe(1);
      expect(value(text, 'mcp_guard_upstream_restarts_total', { server: 'everything' })).toBe(upstream.status().restarts);
      expect(upstream.status().restarts).toBeGreaterThanOrEqual(1);

      await transport.terminateSession();
      await waitFor(() => gw.app.gateway.sessions.size === 0, 5_000, 'the session to end');
      text = await get();
      expect(value(text, 'mcp_guard_active_sessions')).toBe(0);
    } finally {
      await client.close();
    }
  });
});

describe('docs/metrics.md and the examples agree with the code', () => {
  const root = (path: string) => fileURLToPath(new URL(`../../${path}`, import.meta.url));
  const families = async (): Promise<string[]> => {
    const text = await scrape(new Metrics({ defaultMetrics: false }));
    return [...text.matchAll(/^# TYPE (mcp_guard_\w+) /gm)].map((m) => m[1]!);
  };

  /** The label names of each family (histogram series also have `le`), from a scrape where every family has a series. */
  const familyLabels = async (): Promise<Map<string, Set<string>>> => {
    const m = new Metrics({ defaultMetrics: false, servers: ['s'] });
    m.request('POST', 200, 0.001, 's');
    m.auth('jwt', 'success');
    m.rateLimit(false, 'tool');
    m.rateLimitStoreError();
    m.upstreamRequest('s', 'ping', 0.001, 'ok');
    m.toolCall('s', 't', 'ok');
    m.cacheLookup('s', true);
    m.memberOmitted('s', 's');
    m.configReload('applied');
    m.toolIntegrityEvent('s', 'changed');
    m.toolApproval('s', 'accepted');
    m.bindGateway(fakeGateway([{ name: 's', transport: 'stdio', healthy: true, restarts: 0, circuit: 'closed' }]).asView);
    const text = await scrape(m);
    const names = new Set(await families());
    const labels = new Map<string, Set<string>>();
    for (const sample of parse(text)) {
      const family = names.has(sample.name) ? sample.name : sample.name.replace(/_(bucket|sum|count)$/, '');
      const set = labels.get(family) ?? new Set<string>();
      for (const l of Object.keys(sample.labels)) if (l !== 'le') set.add(l);
      labels.set(family, set);
    }
    expect([...labels.keys()].sort()).toEqual([...names].sort());
    return labels;
  };

  /**
   * Every label a query names exists where it is used: matchers and `{label}` mentions on the
   * family they select, `by`/`on`/`ignoring` lists on one of the families in the expression.
   */
  const expectKnownLabels = (expr: string, labels: Map<string, Set<string>>): void => {
    const inExpr = new Set<string>();
    for (const [, name, body] of expr.matchAll(/(mcp_guard_[a-z_]+)(?:\{([^}]*)\})?/g)) {
      const family = labels.has(name!) ? name! : name!.replace(/_(bucket|sum|count)$/, '');
      const own = labels.get(family);
      expect(own, `${name} in ${expr}`).toBeDefined();
      const allowed = new Set([...own!, ...(name!.endsWith('_bucket') ? ['le'] : [])]);
      for (const l of allowed) inExpr.add(l);
      for (const [, l] of (body ?? '').replace(/"(?:[^"\\]|\\.)*"/g, '""').matchAll(/([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=|,|$)/g))
        expect(allowed, `${l} on ${name} in ${expr}`).toContain(l);
    }
    for (const [, list] of expr.matchAll(/\b(?:by|on|ignoring)\s*\(([^)]*)\)/g)) {
      for (const l of list!
        .split(',')
        .map((x) => x.trim())
        .filter((x) => x !== ''))
        expect(inExpr, `${l} in ${expr}`).toContain(l);
    }
  };

  it('docs/metrics.md: its PromQL parses, and every label it names exists on its family', async () => {
    const docs = readFileSync(root('docs/metrics.md'), 'utf8');
    const labels = await familyLabels();
    const block = /```promql\n([\s\S]*?)```/.exec(docs);
    expect(block).not.toBeNull();
    const queries = block![1]!.split('\n').filter((line) => line.trim() !== '' && !line.startsWith('#'));
    expect(queries.length).toBeGreaterThanOrEqual(8);
    await expectValidPromQL(queries);
    for (const q of queries) expectKnownLabels(q, labels);
    // Inline mentions such as `mcp_guard_rate_limited_total{scope}` or `..._total{allowed="false"}` too.
    for (const [code] of docs.matchAll(/`mcp_guard_[a-z_]+\{[^`]*\}`/g)) expectKnownLabels(code.slice(1, -1), labels);
    // The earlier gateway's queries on the HTTP method are among them, unchanged.
    expect(queries).toContain('sum by (status) (rate(mcp_guard_requests_total{method="POST"}[5m]))');
  });

  it('docs/metrics.md lists every family, and no family that does not exist', async () => {
    const docs = readFileSync(root('docs/metrics.md'), 'utf8');
    const exposed = await families();
    expect(exposed).toHaveLength(23);
    for (const family of exposed) expect(docs).toContain(`| \`${family}\` |`);
    const mentioned = new Set([...docs.matchAll(/mcp_guard_[a-z_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, '')));
    expect([...mentioned].filter((name) => !exposed.includes(name))).toEqual([]);
  });

  it('examples/prometheus.yml is a valid Prometheus config scraping 127.0.0.1:3000/metrics', async () => {
    const path = root('examples/prometheus.yml');
    await expectValidPrometheusConfig(path);
    const yaml = readFileSync(path, 'utf8');
    expect(yaml).toMatch(/metrics_path: \/metrics/);
    expect(yaml).toContain('"127.0.0.1:3000"');
  });

  it('examples/grafana-dashboard.json: valid JSON, valid PromQL over existing families, the panels asked for', async () => {
    const dashboard = JSON.parse(readFileSync(root('examples/grafana-dashboard.json'), 'utf8')) as {
      uid: string;
      title: string;
      schemaVersion: number;
      templating: { list: Array<{ name: string; type: string }> };
      panels: Array<{
        id: number;
        type: string;
        title: string;
        datasource: { type: string; uid: string };
        gridPos: { x: number; y: number; w: number; h: number };
        targets: Array<{ refId: string; expr: string; legendFormat: string }>;
      }>;
    };
    expect(dashboard.uid).toBe('mcp-guard');
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(dashboard.templating.list.map((v) => `${v.name}:${v.type}`)).toEqual(['datasource:datasource', 'server:query']);

    const { panels } = dashboard;
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    // Panels fit the 24-column grid and do not overlap.
    const cells = new Set<string>();
    for (const p of panels) {
      expect(p.datasource).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          expect(cells.has(`${x},${y}`), `${p.title} overlaps at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
      }
      expect(new Set(p.targets.map((t) => t.refId)).size).toBe(p.targets.length);
    }

    const titles = panels.map((p) => p.title).join('\n');
    for (const wanted of [
      /request rate by status/i,
      /latency p50 \/ p99 by method/i,
      /authentication/i,
      /rate limit/i,
      /upstream up/i,
      /restarts/i,
      /tool calls by server \/ tool/i,
      /active sessions/i,
    ]) {
      expect(titles).toMatch(wanted);
    }

    // Every expression parses (Grafana's variables replaced as Grafana would) and names existing families.
    const exprs = panels.flatMap((p) => p.targets.map((t) => t.expr));
    await expectValidPromQL(exprs.map((e) => e.replaceAll('$__rate_interval', '1m').replaceAll('$server', '.*')));
    const exposed = await families();
    for (const expr of exprs) {
      for (const [name] of expr.matchAll(/mcp_guard_[a-z_]+/g)) {
        expect(exposed, `${name} in ${expr}`).toContain(name.replace(/_bucket$/, ''));
      }
    }
    // Grouping and legend labels are labels the families have.
    const labels = new Set(['le', 'method', 'status', 'provider', 'result', 'allowed', 'scope', 'server', 'transport', 'outcome', 'tool', 'stage']);
    for (const p of panels) {
      for (const t of p.targets) {
        for (const [, list] of t.expr.matchAll(/by \(([^)]*)\)/g)) for (const l of list!.split(',')) expect(labels, `${l} in ${t.expr}`).toContain(l.trim());
        for (const [, l] of t.legendFormat.matchAll(/\{\{(\w+)\}\}/g)) expect(labels, `${l} in ${p.title}`).toContain(l);
      }
    }
    const perFamily = await familyLabels();
    for (const expr of exprs) expectKnownLabels(expr.replaceAll('$__rate_interval', '1m'), perFamily);
    const populated = new Metrics({ defaultMetrics: false, servers: ['s'] });
    populated.request('POST', 200, 0.001, 's');
    populated.request('POST', 401, 0.001);
    populated.auth('jwt', 'success');
    populated.rateLimit(false, 'tool');
    populated.upstreamRequest('s', 'ping', 0.001, 'ok');
    populated.toolCall('s', 't', 'ok');
    populated.bindGateway(fakeGateway([{ name: 's', transport: 'stdio', healthy: true, restarts: 0 }]).asView);
    const exposition = await scrape(populated);
    const declared = new Set([...exposition.matchAll(/(\w+)="/g)].map((m) => m[1]!));
    for (const l of declared) expect(labels).toContain(l);
    const used = new Set(exprs.flatMap((e) => [...e.matchAll(/mcp_guard_[a-z_]+/g)].map((m) => m[0].replace(/_bucket$/, ''))));
    expect([...used].sort()).toEqual(
      expect.arrayContaining([
        'mcp_guard_requests_total',
        'mcp_guard_request_duration_seconds',
        'mcp_guard_auth_total',
        'mcp_guard_rate_limit_total',
        'mcp_guard_upstream_up',
        'mcp_guard_upstream_restarts_total',
        'mcp_guard_tool_calls_total',
        'mcp_guard_active_sessions',
      ]),
    );
  });
});
