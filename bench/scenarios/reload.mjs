/**
 * What reloading the config costs (issue 20, "Measured"; docs/operations.md "Reload").
 *
 *   load    100 SIGHUP reloads under load: RELOAD_CLIENTS sessions (an API key each request, as
 *           a Bearer token) call tools/call in a closed loop on an unchanged stdio server (the
 *           instant one, isolation "shared"), while the reloads alternate adding and removing an
 *           HTTP server and an API key. Every answer is checked (a result echoing the call's own
 *           arguments). Target: 0 failed calls; the unchanged server's child keeps its pid.
 *   block   the event loop of a gateway with 1,000 HTTP servers (urls of 127.0.0.1 ports nothing
 *           listens on: an HTTP upstream connects only when asked) during a reload that changes a
 *           few of them (5 changed, 1 added, 1 removed). Measured twice: inside the gateway
 *           (a --require'd preload runs perf_hooks.monitorEventLoopDelay at 1 ms resolution and
 *           prints its max on SIGUSR2, which also resets it: from the SIGHUP to the "config
 *           reloaded" log line), and from outside (GET /health every 5 ms over the same window,
 *           the worst latency). The same windows without a reload (idle) show the machine's own
 *           noise. Target: max event-loop delay during the reload ≤ 50 ms (the median over
 *           BLOCK_RELOADS reloads of each one's max; the worst is reported too). Beside it, the
 *           reload's synchronous steps timed in this process, where no other process's noise
 *           reaches them: the copy of the loaded config from the loader child (v8 serialize and
 *           deserialize, as its IPC does), the diff, the new router.
 *
 * Every process it starts (the gateways and their children) is stopped by pid at the end.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, INSTANT_STDIO_UPSTREAM, median, ROOT, tomlString, track } from '../lib/harness.mjs';

const RELOADS = 100;
const RELOAD_CLIENTS = 10;
const SERVERS = 1_000;
const BLOCK_RELOADS = 10;
const SYNC_ROUNDS = 20;
const BLOCK_TARGET_MS = 50;
const HEALTH_EVERY_MS = 5;
const STOP_DEADLINE_MS = 10_000;
const PROTOCOL_VERSION = '2025-06-18';
const ACCEPT = 'application/json, text/event-stream';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The preload of the `block` gateway: the max event-loop delay since the last SIGUSR2, printed on SIGUSR2. */
const PRELOAD = `
const { monitorEventLoopDelay } = require('node:perf_hooks');
const h = monitorEventLoopDelay({ resolution: 1 });
h.enable();
process.on('SIGUSR2', () => {
  process.stderr.write('EVENT_LOOP_DELAY ' + JSON.stringify({ max_ms: h.max / 1e6, p99_ms: h.percentile(99) / 1e6, mean_ms: h.mean / 1e6 }) + '\\n');
  h.reset();
});
`;

/** Starts `mcp-guard serve -c FILE` with its stderr read line by line (the reload log lines, the preload's figures). */
async function startGateway(name, toml, { nodeArgs = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), `mcp-guard-bench-${name}-`));
  const config = join(dir, 'mcp-guard.toml');
  const port = await freePort();
  const withPort = (text) => `[server]\nhost = "127.0.0.1"\nport = ${port}\nmetrics = true\nshutdown_grace_ms = 5000\n\n${text}`;
  writeFileSync(config, withPort(toml));
  const child = track(
    spawn(process.execPath, [...nodeArgs, join(ROOT, 'dist/main.js'), 'serve', '-c', config], {
      env: { ...process.env, MCP_GUARD_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'ignore', 'pipe'],
    }),
  );
  const lines = [];
  const waiters = [];
  let partial = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    partial += chunk;
    let nl;
    while ((nl = partial.indexOf('\n')) !== -1) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      lines.push(line);
      for (const w of [...waiters]) if (w.test(line)) w.resolve(line);
    }
  });
  /** Resolves with the first line from now on that passes `test`. */
  const nextLine = (test, timeoutMs = 60_000) =>
    new Promise((resolve, reject) => {
      const w = { test, resolve: (line) => (clearTimeout(timer), waiters.splice(waiters.indexOf(w), 1), resolve(line)) };
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(w), 1);
        reject(new Error(`${name}: no matching log line within ${timeoutMs} ms; last lines:\n${lines.slice(-5).join('\n')}`));
      }, timeoutMs);
      waiters.push(w);
    });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      if ((await fetch(`${url}/health`)).status === 200) break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null) throw new Error(`gateway ${name} exited with ${child.exitCode}:\n${lines.slice(-10).join('\n')}`);
    if (Date.now() > deadline) throw new Error(`gateway ${name} not listening within 120 s`);
    await sleep(100);
  }
  const reloadDone = (line) => /"msg":"config (reloaded|reload refused)/.test(line);
  return {
    url,
    child,
    lines,
    nextLine,
    /** Rewrites the config, sends SIGHUP; resolves with the reload's log line (parsed) and the time it took. */
    async reload(text) {
      writeFileSync(config, withPort(text));
      const done = nextLine(reloadDone);
      const started = performance.now();
      child.kill('SIGHUP');
      const line = JSON.parse(await done);
      return { line, ms: performance.now() - started };
    },
  };
}

async function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_DEADLINE_MS);
  await exited;
  clearTimeout(timer);
}

/** The pids of the children of `pid` whose command line holds `text` (Linux /proc). */
async function childPids(pid, text) {
  const { readdirSync, readFileSync } = await import('node:fs');
  const out = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== pid) continue;
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(text)) out.push(Number(entry));
    } catch {
      // gone
    }
  }
  return out;
}

/** The JSON-RPC response to `id` in a JSON or SSE body. */
function answerOf(text, id) {
  if (text.trimStart().startsWith('{')) return JSON.parse(text);
  for (const event of text.split(/\r?\n\r?\n/)) {
    const data = event
      .split(/\r?\n/)
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).trim())
      .join('\n');
    if (!data) continue;
    const message = JSON.parse(data);
    if (message.id === id) return message;
  }
  return undefined;
}

let nextId = 1;

/** One session with `headers`: initialize, initialized; `call(args)` throws unless the answer echoes args. */
async function openSession(url, headers) {
  const base = { 'content-type': 'application/json', accept: ACCEPT, 'mcp-protocol-version': PROTOCOL_VERSION, ...headers };
  const id = nextId++;
  const init = await fetch(url, {
    method: 'POST',
    headers: base,
    body: JSON.stringify({
      jsonrpc: '2.0',
      id,
      method: 'initialize',
      params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'bench', version: '1' } },
    }),
  });
  await init.text();
  const sessionId = init.headers.get('mcp-session-id');
  if (init.status !== 200 || !sessionId) throw new Error(`initialize: HTTP ${init.status}`);
  const withSession = { ...base, 'mcp-session-id': sessionId };
  const ack = await fetch(url, { method: 'POST', headers: withSession, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) });
  await ack.text();
  return {
    async call(args) {
      const callId = nextId++;
      const res = await fetch(url, {
        method: 'POST',
        headers: withSession,
        body: JSON.stringify({ jsonrpc: '2.0', id: callId, method: 'tools/call', params: { name: 'tool-0', arguments: args } }),
      });
      const text = await res.text();
      if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${text.slice(0, 200)}`);
      const message = answerOf(text, callId);
      const got = message?.result?.content?.[0]?.text;
      if (got !== JSON.stringify(args)) throw new Error(`unexpected answer: ${text.slice(0, 200)}`);
    },
  };
}

async function keyOf(id) {
  const { generateApiKey, hashApiKey } = await import(`${ROOT}/dist/auth/key-format.js`);
  const key = generateApiKey();
  const toml = `[[auth.api_keys]]\nid = "${id}"\nkey_prefix = "${key.prefix}"\nkey_hash = ${tomlString(await hashApiKey(key.key))}\n`;
  return { toml, headers: { authorization: `Bearer ${key.key}` } };
}

const idleHttp = (name, port) => `[[upstream.servers]]\nname = "${name}"\npath_prefix = "/${name}"\nurl = "http://127.0.0.1:${port}/mcp"\n`;

/** (a) RELOADS reloads under the load of RELOAD_CLIENTS sessions on an unchanged server. */
export async function reloadsUnderLoad() {
  const steady = await keyOf('steady');
  const rotating = await keyOf('rotating');
  const stable = [
    '[[upstream.servers]]',
    'name = "stable"',
    'path_prefix = "/stable"',
    'transport = "stdio"',
    'isolation = "shared"',
    `command = ${tomlString(process.execPath)}`,
    `args = [${tomlString(INSTANT_STDIO_UPSTREAM)}]`,
    '',
  ].join('\n');
  const config = (i) => [stable, i % 2 === 1 ? idleHttp('extra', 9) : '', steady.toml, i % 2 === 1 ? rotating.toml : ''].join('\n');
  let gateway;
  try {
    gateway = await startGateway('reload-load', config(0));
    const pidsBefore = await childPids(gateway.child.pid, INSTANT_STDIO_UPSTREAM);
    const sessions = await Promise.all(Array.from({ length: RELOAD_CLIENTS }, () => openSession(`${gateway.url}/mcp/stable`, steady.headers)));
    let ok = 0;
    const failures = [];
    let stopping = false;
    const loops = sessions.map(async (s, c) => {
      for (let n = 0; !stopping; n++) {
        try {
          await s.call({ c, n });
          ok++;
        } catch (err) {
          failures.push(err.message);
        }
      }
    });
    while (ok < RELOAD_CLIENTS * 10) await sleep(10);
    const reloadMs = [];
    const started = performance.now();
    const okBefore = ok;
    for (let i = 1; i <= RELOADS; i++) {
      const { line, ms } = await gateway.reload(config(i));
      if (line.msg !== 'config reloaded') throw new Error(`reload ${i}: ${JSON.stringify(line)}`);
      reloadMs.push(ms);
    }
    const elapsed = (performance.now() - started) / 1000;
    const during = ok - okBefore;
    stopping = true;
    await Promise.all(loops);
    const pidsAfter = await childPids(gateway.child.pid, INSTANT_STDIO_UPSTREAM);
    const samePid = pidsBefore.length === 1 && pidsAfter.length === 1 && pidsBefore[0] === pidsAfter[0];
    return {
      scenario: 'reload',
      variant: `load: ${RELOADS} reloads, ${RELOAD_CLIENTS} clients`,
      requests: during,
      rps: Math.round(during / elapsed),
      failed_calls: failures.length,
      reload_p50_ms: Math.round(median(reloadMs)),
      reload_max_ms: Math.round(Math.max(...reloadMs)),
      target: 'failed calls = 0',
      met: failures.length === 0 && samePid,
      details: {
        unchanged_child_same_pid: samePid,
        pids_before: pidsBefore,
        pids_after: pidsAfter,
        first_failures: failures.slice(0, 5),
        seconds: Number(elapsed.toFixed(1)),
      },
    };
  } finally {
    await stop(gateway?.child);
  }
}

/** GET /health every HEALTH_EVERY_MS until `done()`: the latencies, ms. */
async function sampleHealth(url, done) {
  const latencies = [];
  while (!done()) {
    const started = performance.now();
    const res = await fetch(`${url}/health`);
    await res.text();
    const ms = performance.now() - started;
    latencies.push(ms);
    if (ms < HEALTH_EVERY_MS) await sleep(HEALTH_EVERY_MS - ms);
  }
  return latencies;
}

/** (b) the event loop during the reload of a SERVERS-server config. */
export async function blockedByReload() {
  const dir = mkdtempSync(join(tmpdir(), 'mcp-guard-bench-reload-preload-'));
  const preload = join(dir, 'event-loop-delay.cjs');
  writeFileSync(preload, PRELOAD);
  const deadPort = await freePort();
  // Server i, at a port nothing listens on; `variant` changes the first few and swaps the last one.
  const config = (variant) => {
    const servers = [];
    for (let i = 0; i < SERVERS; i++) {
      if (i === SERVERS - 1) servers.push(idleHttp(variant % 2 === 0 ? `s${i}` : `s${i}b`, deadPort));
      else servers.push(idleHttp(`s${i}`, i < 5 && variant % 2 === 1 ? deadPort + 1 : deadPort));
    }
    return servers.join('\n');
  };
  let gateway;
  try {
    gateway = await startGateway('reload-block', config(0), { nodeArgs: ['--require', preload] });
    /** The preload's figures since the last call (SIGUSR2 prints them and resets). */
    const loopDelay = async () => {
      const next = gateway.nextLine((line) => line.startsWith('EVENT_LOOP_DELAY '));
      gateway.child.kill('SIGUSR2');
      return JSON.parse((await next).slice('EVENT_LOOP_DELAY '.length));
    };
    // The start-up's work (and its garbage) out of the way before anything is measured.
    await sleep(2_000);
    const rows = { reload: [], idle: [] };
    for (let round = 0; round < BLOCK_RELOADS; round++) {
      // Idle: a window as long as the last reload took, no reload.
      const idleMs = rows.reload.at(-1)?.ms ?? 1_000;
      await loopDelay();
      let idleDone = false;
      const idleHealth = sampleHealth(gateway.url, () => idleDone);
      await sleep(idleMs);
      idleDone = true;
      const idleLatencies = await idleHealth;
      rows.idle.push({ ...(await loopDelay()), health_max_ms: Math.max(...idleLatencies), ms: idleMs });

      await loopDelay();
      let reloadDone = false;
      const health = sampleHealth(gateway.url, () => reloadDone);
      const { line, ms } = await gateway.reload(config(round + 1));
      reloadDone = true;
      const latencies = await health;
      if (line.msg !== 'config reloaded') throw new Error(`block reload ${round + 1}: ${JSON.stringify(line)}`);
      rows.reload.push({ ...(await loopDelay()), health_max_ms: Math.max(...latencies), health_samples: latencies.length, ms, changes: line.servers });
    }
    const round2 = (v) => Number(v.toFixed(2));
    const summary = (list, key) => ({ median: round2(median(list.map((r) => r[key]))), max: round2(Math.max(...list.map((r) => r[key]))) });
    const loopMax = summary(rows.reload, 'max_ms');
    return [
      {
        scenario: 'reload',
        variant: `block: reload of ${SERVERS} servers (in the gateway)`,
        requests: BLOCK_RELOADS,
        loop_max_ms: loopMax.median,
        loop_max_worst_ms: loopMax.max,
        health_max_ms: summary(rows.reload, 'health_max_ms').median,
        reload_p50_ms: Math.round(median(rows.reload.map((r) => r.ms))),
        target: `≤ ${BLOCK_TARGET_MS} ms`,
        // The median over the reloads of each one's max (a shared machine's own stalls, as large
        // in the idle windows, land in some windows whatever runs): the worst is shown beside it.
        met: loopMax.median <= BLOCK_TARGET_MS,
        details: {
          changes: rows.reload[0].changes,
          rounds: rows.reload.map((r) => ({
            loop_max_ms: round2(r.max_ms),
            loop_p99_ms: round2(r.p99_ms),
            health_max_ms: round2(r.health_max_ms),
            samples: r.health_samples,
            ms: Math.round(r.ms),
          })),
        },
      },
      {
        scenario: 'reload',
        variant: `block: idle, same windows (noise)`,
        requests: BLOCK_RELOADS,
        loop_max_ms: summary(rows.idle, 'max_ms').median,
        loop_max_worst_ms: summary(rows.idle, 'max_ms').max,
        health_max_ms: summary(rows.idle, 'health_max_ms').median,
        details: { rounds: rows.idle.map((r) => ({ loop_max_ms: round2(r.max_ms), health_max_ms: round2(r.health_max_ms) })) },
      },
    ];
  } finally {
    await stop(gateway?.child);
  }
}

/** The reload's synchronous steps for a SERVERS-server config, timed in this process (medians of SYNC_ROUNDS). */
export async function syncSteps() {
  const { serialize, deserialize } = await import('node:v8');
  const { parseConfig } = await import(`${ROOT}/dist/config/load.js`);
  const { diffConfig, appliesAnything } = await import(`${ROOT}/dist/config/diff.js`);
  const { routerOf } = await import(`${ROOT}/dist/app/services.js`);
  const config = (variant) =>
    Array.from({ length: SERVERS }, (_, i) =>
      i === SERVERS - 1 ? idleHttp(variant % 2 ? `s${i}b` : `s${i}`, 9) : idleHttp(`s${i}`, i < 5 && variant % 2 ? 10 : 9),
    ).join('\n');
  const running = parseConfig(config(0), { env: {} });
  const times = { copy: [], diff: [], router: [], total: [] };
  for (let round = 0; round < SYNC_ROUNDS; round++) {
    const loaded = parseConfig(config(round + 1), { env: {} });
    const t0 = performance.now();
    const next = deserialize(serialize(loaded));
    const t1 = performance.now();
    appliesAnything(diffConfig(running, next));
    const t2 = performance.now();
    routerOf(next);
    const t3 = performance.now();
    times.copy.push(t1 - t0);
    times.diff.push(t2 - t1);
    times.router.push(t3 - t2);
    times.total.push(t3 - t0);
  }
  const ms = (list) => Number(median(list).toFixed(2));
  return {
    scenario: 'reload',
    variant: `block: synchronous steps of a ${SERVERS}-server reload (in process)`,
    requests: SYNC_ROUNDS,
    loop_max_ms: ms(times.total),
    details: { copy_ms: ms(times.copy), diff_ms: ms(times.diff), router_ms: ms(times.router) },
  };
}

export async function run() {
  const block = await blockedByReload();
  const sync = await syncSteps();
  const load = await reloadsUnderLoad();
  return [...block, sync, load];
}
