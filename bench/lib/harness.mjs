/**
 * What every benchmark scenario shares: child processes that stop with the bench, free ports,
 * waiting for readiness, autocannon runs with a unique JSON-RPC id per request, medians.
 */
import { fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';

export const ROOT = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');
/** The minimal stdio MCP server of the benchmarks: `node INSTANT_STDIO_UPSTREAM [TOOLS]`. */
export const INSTANT_STDIO_UPSTREAM = join(ROOT, 'bench/lib/instant-stdio-upstream.mjs');
const children = new Set();

/** Registers a child process of a scenario's own, so that it ends with the bench. */
export function track(child) {
  children.add(child);
  return child;
}

/** Ends every child this bench started (by pid), whatever happens to the bench. */
export function stopChildren() {
  for (const child of children) if (child.exitCode === null && !child.killed) child.kill('SIGTERM');
}
process.on('exit', stopChildren);
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130));

export async function freePort() {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  return port;
}

/** Starts the instant HTTP upstream; resolves with its MCP URL. */
export async function startInstantUpstream(tools = 5) {
  const child = fork(join(ROOT, 'bench/lib/instant-http-upstream.mjs'), ['0', String(tools)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  children.add(child);
  const [{ port }] = await once(child, 'message');
  return { url: `http://127.0.0.1:${port}/mcp`, child };
}

/**
 * Starts the bare Fastify + undici passthrough in front of `upstreamUrl`; resolves with its URL.
 * `agent`: the variant that calls the agent's own request() with the origin and path worked out
 * once (bare-proxy.mjs says why both exist).
 */
export async function startBareProxy(upstreamUrl, { agent = false, nodeArgs = [], pipeStdout = false } = {}) {
  const child = fork(join(ROOT, 'bench/lib/bare-proxy.mjs'), [upstreamUrl, '0', ...(agent ? ['--agent'] : [])], {
    execArgv: nodeArgs,
    stdio: ['ignore', pipeStdout ? 'pipe' : 'ignore', 'inherit', 'ipc'],
  });
  children.add(child);
  const [{ port }] = await once(child, 'message');
  return { url: `http://127.0.0.1:${port}/mcp`, child };
}

/** Starts `mcp-guard serve` on a config (`main`: another build's dist/main.js); resolves once /ready answers 200. */
export async function startGateway(name, toml, env = {}, { nodeArgs = [], pipeStdout = false, main = join(ROOT, 'dist/main.js') } = {}) {
  const dir = mkdtempSync(join(tmpdir(), `mcp-guard-bench-${name}-`));
  const config = join(dir, 'mcp-guard.toml');
  writeFileSync(config, toml);
  const port = await freePort();
  const child = spawn(process.execPath, [...nodeArgs, main, 'serve', '-c', config, '--port', String(port)], {
    env: { ...process.env, MCP_GUARD_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', pipeStdout ? 'pipe' : 'ignore', 'inherit'],
  });
  children.add(child);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`${url}/ready`)).status === 200) break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null) throw new Error(`gateway ${name} exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error(`gateway ${name} not ready within 30 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { name, url, child };
}

/**
 * One autocannon run of POSTs of a JSON-RPC request, each with its own id. Returns requests per
 * second and latency percentiles in ms; non-2xx answers are counted and make the run invalid.
 */
export async function load({ url, body, headers = {}, connections, durationSecs }) {
  let id = 0;
  const template = JSON.stringify({ jsonrpc: '2.0', id: 0, ...body });
  const result = await autocannon({
    url,
    connections,
    duration: durationSecs,
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    requests: [{ setupRequest: (req) => ({ ...req, body: template.replace('"id":0', `"id":${++id}`) }) }],
  });
  const bad = result.non2xx + result.errors + result.timeouts;
  if (bad > 0) throw new Error(`${url}: ${bad} failed requests (non2xx ${result.non2xx}, errors ${result.errors}, timeouts ${result.timeouts})`);
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, requests: result.requests.total };
}

const TICKS_PER_SECOND = 100; // USER_HZ: 100 on every Linux that Node supports

/**
 * CPU time (user + system) a process has used so far, in µs, from /proc/PID/stat; undefined where
 * there is no /proc. Divided by the requests of a run, it is what one request costs the process:
 * a figure that a busy shared machine disturbs far less than requests per second.
 */
export function cpuMicros(pid) {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export function tomlString(value) {
  return JSON.stringify(value);
}

/**
 * Runs gateway variants against one another: the first request of each timed alone, a warm-up,
 * then `rounds` rounds in which every variant runs once, in an order that rotates each round, so
 * that drift on a shared machine hits them all alike. The first variant is the baseline of the
 * ratios. Each variant: { name, url (of its MCP endpoint), headers, pid (of the process serving
 * it, for its CPU time per request) }.
 */
export async function compareVariants(scenario, variants, body, { durationSecs, rounds, connections }) {
  return compareLoops(
    scenario,
    variants.map((v) => ({
      name: v.name,
      pid: v.pid,
      run: (secs) => load({ url: v.url, body, headers: v.headers ?? {}, connections, durationSecs: secs }),
      async first() {
        const res = await fetch(v.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(v.headers ?? {}) },
          body: JSON.stringify({ jsonrpc: '2.0', id: 0, ...body }),
        });
        await res.text();
        if (res.status !== 200) throw new Error(`${v.name}: first request answered ${res.status}`);
      },
    })),
    { durationSecs, rounds },
  );
}

/**
 * The method behind compareVariants, for any load generator (autocannon there; one that checks
 * every answer, such as `statelessLoop` in mcp-load.mjs, elsewhere): the first request of each
 * variant timed alone, a WARMUP_SECS warm-up, then `rounds` rounds in an order that rotates each round;
 * the first variant is the baseline of the ratios. Each variant: { name, pid (of the process
 * serving it), run(secs) (one closed-loop run: { rps, p50, p99, requests, completed? }, throwing
 * on any bad answer), first() (one request, checked), and optionally upstream: { pid, calls() }
 * (the server behind a proxy: its CPU per request, and `calls()`, a running count of the requests
 * it received, which shows how many of the variant's requests reached it) }.
 */
/** Each variant's warm-up before the rounds: long enough for the hot path to be optimised (thousands of requests). */
const WARMUP_SECS = 1;

export async function compareLoops(scenario, variants, { durationSecs, rounds }) {
  const runOf = async (v, secs) => {
    const before = cpuMicros(v.pid);
    const upstreamBefore = cpuMicros(v.upstream?.pid);
    const callsBefore = v.upstream?.calls();
    const result = await v.run(secs);
    const after = cpuMicros(v.pid);
    const upstreamAfter = cpuMicros(v.upstream?.pid);
    // The CPU went on every request answered, the few after the window included.
    const served = result.completed ?? result.requests;
    const per = (a, b) => (a === undefined || b === undefined ? undefined : (b - a) / served);
    return {
      ...result,
      cpuUs: per(before, after),
      upstreamCpuUs: per(upstreamBefore, upstreamAfter),
      upstreamCalls: callsBefore === undefined ? undefined : (v.upstream.calls() - callsBefore) / served,
    };
  };
  const firstMs = [];
  for (const v of variants) {
    const started = performance.now();
    await v.first();
    firstMs.push(Math.round(performance.now() - started));
  }
  for (const v of variants) await runOf(v, WARMUP_SECS);
  const samples = variants.map(() => []);
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < variants.length; k++) {
      const i = (k + round) % variants.length;
      samples[i].push(await runOf(variants[i], durationSecs));
    }
  }
  const medianOf = (i, key) => (samples[i].some((s) => s[key] === undefined) ? undefined : median(samples[i].map((s) => s[key])));
  const baseline = medianOf(0, 'rps');
  const baselineCpu = medianOf(0, 'cpuUs');
  return variants.map((v, i) => {
    const rps = medianOf(i, 'rps');
    const cpu = medianOf(i, 'cpuUs');
    const upstreamCpu = medianOf(i, 'upstreamCpuUs');
    const upstreamCalls = medianOf(i, 'upstreamCalls');
    return {
      scenario,
      variant: v.name,
      rps: Math.round(rps),
      p50_ms: Number(medianOf(i, 'p50').toFixed(2)),
      p99_ms: Number(medianOf(i, 'p99').toFixed(2)),
      ratio: Number((rps / baseline).toFixed(3)),
      cpu_us_per_req: cpu === undefined ? undefined : Math.round(cpu),
      cpu_ratio: cpu === undefined || baselineCpu === undefined ? undefined : Number((baselineCpu / cpu).toFixed(3)),
      // Only for variants with a server behind them (a table shows every column any row has).
      ...(upstreamCpu === undefined ? {} : { upstream_cpu_us_per_req: Math.round(upstreamCpu) }),
      ...(upstreamCalls === undefined ? {} : { upstream_calls_per_req: Number(upstreamCalls.toFixed(4)) }),
      first_request_ms: firstMs[i],
      rounds: samples[i].map((s) => Math.round(s.rps)),
      cpu_rounds: cpu === undefined ? undefined : samples[i].map((s) => Math.round(s.cpuUs)),
    };
  });
}

/**
 * One `[[upstream.servers]]` block named `name`, at path_prefix `/name`: the streamable HTTP
 * server at `url`, or the instant stdio server when `url` is undefined. `extra`: more TOML lines
 * for the block.
 */
export function serverToml(name, url, extra = []) {
  const source =
    url === undefined
      ? ['transport = "stdio"', `command = ${tomlString(process.execPath)}`, `args = [${tomlString(INSTANT_STDIO_UPSTREAM)}]`]
      : [`url = ${tomlString(url)}`];
  return [`[[upstream.servers]]`, `name = "${name}"`, `path_prefix = "/${name}"`, ...source, ...extra, ''].join('\n');
}

/**
 * The `full` configuration of the http and gc scenarios around one `[[upstream.servers]]` block:
 * an API key (the one returned, to send as a Bearer token), rate limits never reached, audit to a
 * file in `dir`, and metrics.
 */
export async function fullPipelineToml(server, dir) {
  const { generateApiKey, hashApiKey } = await import(`${ROOT}/dist/auth/key-format.js`);
  const key = generateApiKey();
  const toml = [
    server,
    `[audit]\nfile = ${tomlString(join(dir, 'audit.log'))}\n`,
    `[[auth.api_keys]]\nid = "bench"\nkey_prefix = "${key.prefix}"\nkey_hash = ${tomlString(await hashApiKey(key.key))}\n`,
    '[rate_limit]\nrequests_per_second = 1000000\nburst_size = 1000000\nper_address_requests_per_second = 1000000\nper_address_burst_size = 1000000\n',
  ].join('\n');
  return { toml, headers: { authorization: `Bearer ${key.key}` } };
}
