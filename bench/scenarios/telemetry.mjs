/**
 * What tracing costs (issue 22), on the `http` scenario's `full` pipeline (an API key, rate limits
 * never reached, audit to a file, metrics) and its instant HTTP upstream:
 *   off          telemetry off: no [telemetry], no OTEL_* variable (the baseline of the ratios)
 *   before       the same config on another build (MCP_GUARD_BENCH_BASELINE: the path of its
 *                dist/main.js, e.g. the commit before tracing): off against before is what
 *                telemetry off costs; absent when the variable is not set
 *   traces       telemetry on, sample_ratio = 1, every span exported to a local OTLP/HTTP
 *                receiver (bench/lib/otlp-sink.mjs, its own process)
 *   traces-0.1   the same at sample_ratio = 0.1, to a receiver of its own
 * `spans_per_request`: the spans each receiver got per request its gateway answered (a traced
 * request makes five: its SERVER span, the CLIENT span of the upstream exchange, authentication
 * and the address and identity limits; fewer means the SDK's queue dropped some under load).
 */
import { mkdtempSync } from 'node:fs';
import { once } from 'node:events';
import { fork } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareVariants, fullPipelineToml, ROOT, serverToml, startGateway, startInstantUpstream, tomlString, track } from '../lib/harness.mjs';

/** A local OTLP receiver in its own process: its base URL and its span count. */
async function startSink() {
  const child = track(fork(join(ROOT, 'bench/lib/otlp-sink.mjs'), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }));
  const [{ port }] = await once(child, 'message');
  const url = `http://127.0.0.1:${port}`;
  return { url, spans: async () => (await (await fetch(`${url}/count`)).json()).spans };
}

/** The MCP requests a gateway has answered, from its own metrics. */
async function answered(gatewayUrl) {
  const text = await (await fetch(`${gatewayUrl}/metrics`)).text();
  return text
    .split('\n')
    .filter((line) => line.startsWith('mcp_guard_requests_total{'))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);
}

export async function run(settings) {
  const upstream = await startInstantUpstream();
  const [sink, sinkTenth] = await Promise.all([startSink(), startSink()]);
  const dir = mkdtempSync(join(tmpdir(), 'mcp-guard-bench-telemetry-'));
  const full = await fullPipelineToml(serverToml('instant', upstream.url), dir);
  const traces = (receiver, ratio) => `${full.toml}\n[telemetry]\notlp_endpoint = ${tomlString(receiver)}\nsample_ratio = ${ratio}\n`;
  const baseline = process.env['MCP_GUARD_BENCH_BASELINE'];
  const [off, before, on, tenth] = await Promise.all([
    startGateway('telemetry-off', full.toml),
    baseline ? startGateway('telemetry-before', full.toml, {}, { main: baseline }) : undefined,
    startGateway('telemetry-on', traces(sink.url, '1.0')),
    startGateway('telemetry-tenth', traces(sinkTenth.url, '0.1')),
  ]);
  const variants = [
    { name: 'off', url: `${off.url}/mcp/instant`, pid: off.child.pid, headers: full.headers },
    ...(before ? [{ name: 'before', url: `${before.url}/mcp/instant`, pid: before.child.pid, headers: full.headers }] : []),
    { name: 'traces', url: `${on.url}/mcp/instant`, pid: on.child.pid, headers: full.headers },
    { name: 'traces-0.1', url: `${tenth.url}/mcp/instant`, pid: tenth.child.pid, headers: full.headers },
  ];
  const body = { method: 'tools/call', params: { name: 'tool-0', arguments: { n: 1 } } };
  const rows = await compareVariants('telemetry', variants, body, settings);
  // The spans that reached the receiver per request answered (the rest of a batch is exported
  // when the gateway stops): fewer than a request makes means the SDK's queue dropped some.
  for (const [gateway, receiver, name] of [
    [on, sink, 'traces'],
    [tenth, sinkTenth, 'traces-0.1'],
  ]) {
    const requests = await answered(gateway.url);
    gateway.child.kill('SIGTERM');
    await once(gateway.child, 'exit');
    rows.find((r) => r.variant === name).spans_per_request = Number(((await receiver.spans()) / requests).toFixed(2));
  }
  return rows;
}
