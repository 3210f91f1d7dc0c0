/**
 * What the young-generation GC keeps of each request: V8's own account (`--trace-gc-nvp`) of
 * every scavenge while the `http` scenario's load runs, for
 *   bare      the bare Fastify + undici passthrough (bench/lib/bare-proxy.mjs)
 *   gateway   mcp-guard with nothing on
 *   full      an API key, rate limits (never reached), audit to a file and metrics
 *
 * Per request: bytes promoted to the old generation and bytes that survived a scavenge; per
 * scavenge, its mean pause. A request's objects should all die young. When something long-lived
 * holds on to them (a Map's old hash table, a closure V8 has pretenured: docs/performance.md,
 * items 8 and 21), every request in flight at a scavenge is promoted, scavenges take several
 * times as long, and only mark-compacts free it. A CPU profile does not show that; this does.
 * The guard: at most PROMOTED_LIMIT bytes promoted per request.
 */
import { join } from 'node:path';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fullPipelineToml, load, median, serverToml, startBareProxy, startGateway, startInstantUpstream } from '../lib/harness.mjs';

const PROMOTED_LIMIT = 200;
const TRACE = ['--trace-gc-nvp'];

/** Collects the scavenge lines a process prints from now on. */
function scavenges(child) {
  const lines = [];
  let rest = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (text) => {
    const parts = (rest + text).split('\n');
    rest = parts.pop();
    for (const line of parts) if (line.includes('gc=s ')) lines.push(line);
  });
  return lines;
}

function field(line, name) {
  const match = new RegExp(`\\b${name}=([\\d.]+)`).exec(line);
  return match ? Number(match[1]) : 0;
}

export async function run(settings) {
  const upstream = await startInstantUpstream();
  const dir = mkdtempSync(join(tmpdir(), 'mcp-guard-bench-gc-'));
  const server = serverToml('instant', upstream.url);
  const full = await fullPipelineToml(server, dir);
  const options = { nodeArgs: TRACE, pipeStdout: true };
  const bare = await startBareProxy(upstream.url, options);
  const gateway = await startGateway('gc-gateway', `[server]\nmetrics = false\n${server}`, {}, options);
  const fullGateway = await startGateway('gc-full', full.toml, {}, options);
  const variants = [
    { name: 'bare', url: bare.url, lines: scavenges(bare.child) },
    { name: 'gateway', url: `${gateway.url}/mcp/instant`, lines: scavenges(gateway.child) },
    { name: 'full', url: `${fullGateway.url}/mcp/instant`, headers: full.headers, lines: scavenges(fullGateway.child) },
  ];
  const body = { method: 'tools/call', params: { name: 'tool-0', arguments: { n: 1 } } };
  const samples = variants.map(() => []);
  {
    for (const v of variants) await load({ url: v.url, body, headers: v.headers, connections: settings.connections, durationSecs: 2 });
    for (let round = 0; round < settings.rounds; round++) {
      for (let k = 0; k < variants.length; k++) {
        const i = (k + round) % variants.length;
        const v = variants[i];
        const from = v.lines.length;
        const result = await load({ url: v.url, body, headers: v.headers, connections: settings.connections, durationSecs: settings.durationSecs });
        // The scavenges of this run (a last one may still be on its way: a few ms of output).
        await new Promise((resolve) => setTimeout(resolve, 100));
        const lines = v.lines.slice(from);
        const sum = (name) => lines.reduce((total, line) => total + field(line, name), 0);
        samples[i].push({
          promoted: sum('promoted') / result.requests,
          survived: sum('new_space_survived') / result.requests,
          pause: lines.length ? sum('pause') / lines.length : 0,
          perThousand: (lines.length * 1000) / result.requests,
        });
      }
    }
  }
  return variants.map((v, i) => {
    const promoted = median(samples[i].map((s) => s.promoted));
    return {
      scenario: 'gc',
      variant: v.name,
      promoted_b_per_req: Math.round(promoted),
      survived_b_per_req: Math.round(median(samples[i].map((s) => s.survived))),
      scavenge_pause_ms: Number(median(samples[i].map((s) => s.pause)).toFixed(2)),
      scavenges_per_1000_req: Number(median(samples[i].map((s) => s.perThousand)).toFixed(2)),
      ...(v.name === 'bare' ? {} : { target: `promoted <= ${PROMOTED_LIMIT} B/req`, meets_target: promoted <= PROMOTED_LIMIT }),
    };
  });
}
