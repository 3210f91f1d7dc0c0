/**
 * Where the gateway stands against the ceiling of its own stack, with an instant HTTP upstream:
 *   bare      a Fastify + undici passthrough with no features (the baseline of the ratios)
 *   bare-agent  the same, calling the agent's request() with a ready origin and path, as the
 *             gateway does (bench/lib/bare-proxy.mjs)
 *   direct    the upstream itself, no proxy at all
 *   gateway   mcp-guard with nothing on: no auth, no limits, no audit, [server] metrics = false
 *   default   mcp-guard as configured out of the box (metrics on)
 *   full      an API key, rate limits (never reached), audit to a file and metrics
 * First throughput (closed loop, autocannon), then latency at half of `full`'s throughput (an
 * open loop at a fixed rate, in µs; every variant but `default` and `bare-agent`): the added
 * latency of each proxy is its latency minus the upstream's own, measured in the same rounds.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareVariants, fullPipelineToml, median, serverToml, startBareProxy, startGateway, startInstantUpstream } from '../lib/harness.mjs';
import { rateLoad } from '../lib/rate-load.mjs';

export async function run(settings) {
  const upstream = await startInstantUpstream();
  const bare = await startBareProxy(upstream.url);
  const bareAgent = await startBareProxy(upstream.url, { agent: true });
  const dir = mkdtempSync(join(tmpdir(), 'mcp-guard-bench-http-'));
  const server = serverToml('instant', upstream.url);
  const full = await fullPipelineToml(server, dir);
  const [gateway, defaults, fullGateway] = await Promise.all([
    startGateway('http-gateway', `[server]\nmetrics = false\n${server}`),
    startGateway('http-default', server),
    startGateway('http-full', full.toml),
  ]);
  const variants = [
    { name: 'bare', url: bare.url, pid: bare.child.pid },
    { name: 'bare-agent', url: bareAgent.url, pid: bareAgent.child.pid },
    { name: 'direct', url: upstream.url, pid: upstream.child.pid },
    { name: 'gateway', url: `${gateway.url}/mcp/instant`, pid: gateway.child.pid },
    { name: 'default', url: `${defaults.url}/mcp/instant`, pid: defaults.child.pid },
    { name: 'full', url: `${fullGateway.url}/mcp/instant`, pid: fullGateway.child.pid, headers: full.headers },
  ];
  const body = { method: 'tools/call', params: { name: 'tool-0', arguments: { n: 1 } } };
  const rows = await compareVariants('http', variants, body, settings);

  // Latency at half of the full gateway's throughput, every variant at the same rate; `default`
  // (between `gateway` and `full`) and `bare-agent` are left out to keep the default run within
  // 5 minutes.
  const rate = Math.max(100, Math.round(rows.find((r) => r.variant === 'full').rps / 2));
  const timed = variants.map((v, i) => i).filter((i) => !['default', 'bare-agent'].includes(variants[i].name));
  const samples = variants.map(() => []);
  for (let round = 0; round < settings.rounds; round++) {
    for (let k = 0; k < timed.length; k++) {
      const i = timed[(k + round) % timed.length];
      const v = variants[i];
      samples[i].push(await rateLoad({ url: v.url, body, headers: v.headers, rate, durationSecs: settings.durationSecs }));
    }
  }
  const at = (i, key) => median(samples[i].map((x) => x[key]));
  const direct = variants.findIndex((v) => v.name === 'direct');
  for (const i of timed) {
    const [p50, p99] = [at(i, 'p50'), at(i, 'p99')];
    Object.assign(rows[i], {
      half_load_rps: rate,
      half_load_p50_ms: p50,
      half_load_p99_ms: p99,
      added_p50_ms: Number((p50 - at(direct, 'p50')).toFixed(3)),
      added_p99_ms: Number((p99 - at(direct, 'p99')).toFixed(3)),
    });
  }
  return rows;
}
