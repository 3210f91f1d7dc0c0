/**
 * A stdio MCP server served over streamable HTTP: MCP Guard against the npm proxies that do the
 * same job, all three wrapping the same instant stdio server (bench/lib/instant-stdio-upstream.mjs)
 * and all driven the same way, at 1, 10 and 100 concurrent clients:
 *
 *   mcp-proxy     (baseline of the ratios) one shared upstream child; one MCP server object and
 *                 transport per client session.
 *   supergateway  --outputTransport streamableHttp --stateful: one upstream child per session.
 *   mcp-guard     `mcp-guard serve` with one stdio server (defaults: metrics on, no auth, no
 *                 audit): one shared upstream child, one gateway session per client.
 *   bare-bridge   the ceiling of our stack: Fastify and one shared child with wire ids, nothing
 *                 else (bench/lib/bare-stdio-bridge.mjs). What mcp-guard could reach at best.
 *
 * A client is one MCP client with its own session on its own connection: initialize,
 * notifications/initialized, then tools/call in a closed loop, every request with a unique id
 * (bench/lib/mcp-load.mjs; it reads SSE answers, which both peers send, as well as JSON, and checks
 * every answer). Sessions are opened before the measurement, per client count and proxy
 * (`open_ms`: how long opening all of them took), and ended with DELETE afterwards. At each client
 * count the proxies take turns round after round in a rotating order, after one warm-up each;
 * figures are medians over the rounds and `ratio` is req/s over mcp-proxy's in the same run.
 * `upstream_procs` counts the upstream server processes the proxy had running while its sessions
 * were open. `--connections` does not apply: the client counts are fixed.
 *
 * Every proxy listens on 127.0.0.1 only, on a free port; every process is tracked and ended by
 * pid. The upstream processes carry a marker in their environment, so after the proxies have
 * stopped any process of ours still alive (there should be none) is found and ended by pid.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { freePort, INSTANT_STDIO_UPSTREAM, median, ROOT, serverToml, startGateway, tomlString, track } from '../lib/harness.mjs';
import { closedLoop, closeSessions, openSessions } from '../lib/mcp-load.mjs';

const CLIENT_COUNTS = [1, 10, 100];
const MARKER = 'MCP_GUARD_BENCH_STDIO';
const READY_DEADLINE_MS = 30_000;

function binOf(pkg) {
  const manifest = JSON.parse(readFileSync(join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8'));
  const bin = typeof manifest.bin === 'string' ? manifest.bin : manifest.bin[pkg];
  return { path: join(ROOT, 'node_modules', pkg, bin), version: manifest.version };
}

/** Spawns a proxy (tracked), waits until GET `readyPath` answers 200 or the deadline passes. */
async function startProxy(name, args, port, readyPath, marker) {
  const child = track(
    spawn(process.execPath, args, {
      env: { ...process.env, [MARKER]: marker },
      // stdin ignored: supergateway stops when a pipe on its stdin closes.
      stdio: ['ignore', 'ignore', 'inherit'],
    }),
  );
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + READY_DEADLINE_MS;
  for (;;) {
    try {
      const res = await fetch(`${base}${readyPath}`, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode} before it was ready`);
    if (Date.now() > deadline) throw new Error(`${name} not ready within ${READY_DEADLINE_MS / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { name, child, base, marker };
}

/**
 * mcp-proxy 6.7: stateful streamable HTTP (the default), which is what serves many session-holding
 * clients best: --stateless builds a new MCP server object and transport for every request, and
 * gives clients no session. One upstream child serves every session either way. Also:
 *   --server stream   only the streamable HTTP endpoint (no legacy /sse endpoint).
 *   --no-eventStore   no resumability buffer (Last-Event-ID replay); request/response clients do
 *                     not use it and MCP Guard has none either. The README recommends it for
 *                     request/response deployments.
 *   --no-modern       serve only 2025-era clients (ours are): without it every POST is first
 *                     converted to a web Request and classified as 2025-era or 2026-07-28.
 *   --host 127.0.0.1  (default "::").
 * It answers every POST with SSE (the CLI has no switch for JSON responses).
 */
async function startMcpProxy(marker) {
  const { path, version } = binOf('mcp-proxy');
  const port = await freePort();
  const args = [path, '--host', '127.0.0.1', '--port', String(port), '--server', 'stream', '--no-eventStore', '--no-modern'];
  const p = await startProxy('mcp-proxy', [...args, '--', process.execPath, INSTANT_STDIO_UPSTREAM], port, '/ping', marker);
  return { ...p, version, url: `${p.base}/mcp` };
}

/**
 * supergateway 4: stdio → streamable HTTP in --stateful mode. Its stateless mode spawns a new
 * upstream process for every POST (and initializes it) and gives clients no session, so a user
 * serving many clients chooses stateful, where each session gets its own upstream process for its
 * lifetime (spawned through `sh -c`). Also --logLevel none: at the default (info) it logs every
 * message in both directions. It has no listen-address option, so it runs with a preload that
 * binds its port to 127.0.0.1 (bench/lib/stdio-listen-localhost.mjs). Answers are SSE.
 */
async function startSupergateway(marker) {
  const { path, version } = binOf('supergateway');
  const port = await freePort();
  const preload = pathToFileURL(join(ROOT, 'bench/lib/stdio-listen-localhost.mjs')).href;
  const quote = (s) => `'${s.replaceAll("'", "'\\''")}'`;
  const args = [
    '--import',
    preload,
    path,
    '--stdio',
    `${quote(process.execPath)} ${quote(INSTANT_STDIO_UPSTREAM)}`,
    '--outputTransport',
    'streamableHttp',
    '--stateful',
    '--port',
    String(port),
    '--logLevel',
    'none',
    '--healthEndpoint',
    '/healthz',
  ];
  const p = await startProxy('supergateway', args, port, '/healthz', marker);
  return { ...p, version, url: `${p.base}/mcp` };
}

/**
 * The ceiling of our stack (bench/lib/bare-stdio-bridge.mjs): Fastify and one child, wire ids and
 * nothing else. Not a product: it shows what any gateway built on Fastify can reach at each client
 * count on this machine, which the target against mcp-proxy has to be read against.
 */
async function startBareBridge(marker) {
  const port = await freePort();
  const args = [join(ROOT, 'bench/lib/bare-stdio-bridge.mjs'), String(port), process.execPath, INSTANT_STDIO_UPSTREAM];
  const p = await startProxy('bare-bridge', args, port, '/ping', marker);
  return { ...p, version: '-', url: `${p.base}/mcp` };
}

/** MCP Guard with its defaults and one stdio server; the marker reaches the child through `env`. */
async function startMcpGuard(marker) {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  const toml = serverToml('instant', undefined, [`env = { ${MARKER} = ${tomlString(marker)} }`]);
  const gw = await startGateway('stdio', toml);
  return { name: 'mcp-guard', child: gw.child, base: gw.url, marker, version, url: `${gw.url}/mcp/instant` };
}

/** Processes (of this user) whose environment holds the marker, exactly or as a prefix. */
function markedProcesses(marker, { prefix = false } = {}) {
  const found = [];
  let entries;
  try {
    entries = readdirSync('/proc');
  } catch {
    return found; // no /proc: nothing to look at
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const env = readFileSync(`/proc/${entry}/environ`, 'latin1').split('\0');
      const wanted = `${MARKER}=${marker}`;
      if (!env.some((e) => (prefix ? e.startsWith(wanted) : e === wanted))) continue;
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'latin1').split('\0');
      found.push({ pid: Number(entry), argv });
    } catch {
      // gone, or not ours
    }
  }
  return found;
}

/**
 * CPU time (user + system, in µs) the processes have used so far, from /proc/PID/stat (USER_HZ is
 * 100 on every Linux Node supports); undefined without /proc. Processes already gone count 0.
 */
function cpuMicros(pids) {
  let total = 0;
  for (const pid of pids) {
    let stat;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch (err) {
      if (err.code === 'ENOENT' && pid !== pids[0]) continue;
      return undefined;
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    total += ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100;
  }
  return total;
}

/** Upstream server processes of a proxy (the node processes, not supergateway's `sh -c` wrappers). */
function upstreamProcesses(marker) {
  // argv[1]: mcp-proxy's own command line also names the upstream (after `--`).
  return markedProcesses(marker).filter(({ argv }) => argv[1] === INSTANT_STDIO_UPSTREAM && !/(^|\/)(ba|da)?sh$/.test(argv[0]));
}

async function stopAll(proxies, runMarker) {
  await Promise.all(
    proxies.map(async ({ child }) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }),
  );
  // Upstream processes end with their proxy; give them a moment, then end any left, by pid.
  const deadline = Date.now() + 5_000;
  let left = markedProcesses(`${runMarker}-`, { prefix: true });
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    left = markedProcesses(`${runMarker}-`, { prefix: true });
  }
  for (const { pid, argv } of left) {
    console.warn(`stdio: ending leftover process ${pid} (${argv.join(' ').slice(0, 120)})`);
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** One client count: open sessions on every proxy, warm up, rounds in rotating order, close. */
async function compareAt(clients, proxies, { durationSecs, rounds }) {
  const sessions = [];
  const openMs = [];
  const upstreams = [];
  try {
    for (const p of proxies) {
      const started = performance.now();
      sessions.push(await openSessions(p.url, clients));
      openMs.push(Math.round(performance.now() - started));
      upstreams.push(upstreamProcesses(p.marker).map(({ pid }) => pid));
    }
    // The CPU a request costs: the proxy's and its upstream processes' (the load generator's not),
    // which a busy shared machine disturbs far less than req/s.
    const runOf = async (i, secs) => {
      const pids = [proxies[i].child.pid, ...upstreams[i]];
      const before = cpuMicros(pids);
      // Which proxy failed is in the message: a peer proxy that drops a connection now and then
      // ("other side closed", seen once at 1 client) must not read as MCP Guard's failure.
      const result = await closedLoop(sessions[i], { durationSecs: secs }).catch((error) => {
        throw new Error(`${proxies[i].name} at ${clients} clients: ${error.message}`, { cause: error });
      });
      const after = cpuMicros(pids);
      return { ...result, cpuUs: before === undefined || after === undefined ? undefined : (after - before) / result.requests };
    };
    for (let i = 0; i < proxies.length; i++) await runOf(i, Math.min(2, durationSecs));
    const samples = proxies.map(() => []);
    for (let round = 0; round < rounds; round++) {
      for (let k = 0; k < proxies.length; k++) {
        const i = (k + round) % proxies.length;
        samples[i].push(await runOf(i, durationSecs));
      }
    }
    const baseline = median(samples[0].map((s) => s.rps));
    const cpuOf = (i) => (samples[i].some((s) => s.cpuUs === undefined) ? undefined : median(samples[i].map((s) => s.cpuUs)));
    return proxies.map((p, i) => {
      const rps = median(samples[i].map((s) => s.rps));
      const cpu = cpuOf(i);
      return {
        scenario: 'stdio',
        variant: p.name,
        clients,
        rps: Math.round(rps),
        p50_ms: Number(median(samples[i].map((s) => s.p50)).toFixed(2)),
        p99_ms: Number(median(samples[i].map((s) => s.p99)).toFixed(2)),
        ratio: Number((rps / baseline).toFixed(3)),
        // CPU per request (proxy + its upstream processes), and mcp-proxy's divided by it (2 = half the CPU).
        cpu_us_per_req: cpu === undefined ? undefined : Math.round(cpu),
        cpu_ratio: cpu === undefined || cpuOf(0) === undefined ? undefined : Number((cpuOf(0) / cpu).toFixed(3)),
        upstream_procs: upstreams[i].length,
        open_ms: openMs[i],
        version: p.version,
        rounds: samples[i].map((s) => Math.round(s.rps)),
      };
    });
  } finally {
    await Promise.all(sessions.map(closeSessions));
  }
}

export async function run(settings) {
  const runMarker = `${process.pid}-${Date.now()}`;
  const proxies = [];
  try {
    // mcp-proxy first: the baseline of the ratios.
    proxies.push(await startMcpProxy(`${runMarker}-mcp-proxy`));
    proxies.push(await startSupergateway(`${runMarker}-supergateway`));
    proxies.push(await startMcpGuard(`${runMarker}-mcp-guard`));
    proxies.push(await startBareBridge(`${runMarker}-bare-bridge`));
    const rows = [];
    for (const clients of CLIENT_COUNTS) rows.push(...(await compareAt(clients, proxies, settings)));
    return rows;
  } finally {
    await stopAll(proxies, runMarker);
  }
}
