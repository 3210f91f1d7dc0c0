/**
 * What the gateway costs in time to start and in memory, measured on the gateway's own process
 * (its PID's VmRSS in /proc; the bench's own memory is irrelevant):
 *
 *   startup_ms        spawn of `node dist/main.js serve` (one stdio upstream, the instant stdio
 *                     server, and one HTTP upstream, the instant HTTP server) until GET /ready
 *                     answers 200; median of STARTS starts. Baseline: `node -e` with a bare
 *                     node:http server, from spawn until it answers its first request.
 *   idle_rss_mb       the gateway's RSS at rest: after /ready, a few warm-up requests and 12 s
 *                     without traffic, by which time V8's memory reducer has shrunk the young
 *                     generation and compacted; median of the same starts. Baselines: the bare
 *                     node:http server after the same, and the stack floor (bare-proxy.mjs
 *                     --floor: Fastify, undici, pino and prom-client's default metrics, loaded and
 *                     used, nothing else), left idle side by side with the gateway. `warm_mb` is
 *                     the reading 1 s after the warm-up, before the reducer (how idle RSS was
 *                     measured until 2026-11-21).
 *   sessions_<kind>   RSS with SESSIONS MCP sessions open through one upstream kind, each with its
 *                     GET stream held open, minus the RSS of the same gateway process warmed up on
 *                     that path (WARM_SESSIONS sessions opened and closed, then a settle), in MB per
 *                     1,000 sessions. A fresh gateway for each kind, started with its young
 *                     generation at its maximum size (SESSIONS_NODE_ARGS): V8 grows it while
 *                     sessions open, by up to 24 MB, which is GC headroom rather than memory held
 *                     per session, and which would land on whichever sessions opened when the
 *                     heuristic fired. cold_mb is the growth from the reading before the warm-up.
 *
 * MB are MiB (VmRSS kB / 1024); idle_rss_mb also gives RssAnon (VmRSS less the pages mapped from
 * the node binary and libraries, which every node process has). No GC is forced (the gateway runs
 * as in production, without --expose-gc): RSS is read after a settle time, median of three
 * readings; a forced GC would show a figure no running gateway has. slope_mb (the second 500
 * sessions alone, per 1,000) is free of one-time costs. The HTTP upstream
 * answers GET with 405: the gateway still gives the client its GET stream (200, SSE), tries the
 * upstream's GET once, sees 405 as "no event stream" and does not retry.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SessionSet } from '../lib/sessions.mjs';
import { freePort, median, ROOT, serverToml, startInstantUpstream, track } from '../lib/harness.mjs';

const BARE_PROXY = join(ROOT, 'bench/lib/bare-proxy.mjs');

const STARTS = 3;
const SESSIONS = 1000;
const CONCURRENCY = 50;
const WARM_SESSIONS = 100;
// The idle readings: 1 s after the warm-up, and after V8's memory reducer, which shrinks the young
// generation and compacts once allocation has stopped for about 8 s.
const WARM_READ_MS = 1000;
const IDLE_READ_MS = 12_000;
const SESSIONS_SETTLE_MS = 2000;
// The sessions gateway starts with V8's young generation at its maximum (16 MB semi-spaces, the
// default maximum on 64-bit). V8 grows it from 1 MB when many objects survive their first GC, as
// they do while hundreds of sessions open: up to 24 MB of RSS that would otherwise land on the
// sessions opened first, or not, depending on when the heuristic fired (docs/performance.md).
const SESSIONS_NODE_ARGS = ['--min-semi-space-size=16'];
const READY_DEADLINE_MS = 30_000;
const STOP_DEADLINE_MS = 30_000;
const IDLE_TARGET_MB = 60;
const PER_1000_TARGET_MB = 30;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const round1 = (x) => Math.round(x * 10) / 10;

/** One field of /proc/PID/status (VmRSS, RssAnon), in MiB. */
function statusMb(pid, field) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
  if (!match) throw new Error(`no ${field} for pid ${pid}`);
  return Number(match[1]) / 1024;
}

/** Median of three readings a quarter second apart: one reading can land mid-allocation. */
async function settledRss(pid, settleMs) {
  await sleep(settleMs);
  const readings = [];
  for (let i = 0; i < 3; i++) {
    if (i) await sleep(250);
    readings.push(statusMb(pid, 'VmRSS'));
  }
  return median(readings);
}

/** One GET on a fresh connection; resolves with the status, rejects when nothing listens. */
function probe(url) {
  return new Promise((resolve, reject) => {
    const req = get(url, { agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.setTimeout(5_000, () => req.destroy(new Error('probe timed out')));
  });
}

/**
 * Spawns `node ARGS` and polls `readyUrl` every 5 ms until it answers 200. Resolves with the
 * child and the milliseconds from spawn to that answer.
 */
async function spawnUntilReady(name, args, readyUrl, env = {}) {
  const started = performance.now();
  const child = track(spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'] }));
  const deadline = Date.now() + READY_DEADLINE_MS;
  for (;;) {
    try {
      if ((await probe(readyUrl)) === 200) break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}) before it was ready`);
    if (Date.now() > deadline) {
      await stop(child);
      throw new Error(`${name} not ready within ${READY_DEADLINE_MS} ms`);
    }
    await sleep(5);
  }
  return { child, ms: performance.now() - started };
}

/** SIGTERM to one child we started, by its pid; SIGKILL if it has not exited by the deadline. */
async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_DEADLINE_MS);
  await exited;
  clearTimeout(timer);
}

async function check(res, what) {
  const text = await res.text();
  if (!res.ok) throw new Error(`${what}: ${res.status} ${text.slice(0, 200)}`);
  return text;
}

/** One sessionless tools/call to `endpoint`; resolves with the answer's text once it is checked. */
async function toolCall(endpoint, i, what) {
  const res = await fetch(endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: i + 1, method: 'tools/call', params: { name: 'tool-0', arguments: { n: i } } }),
  });
  const text = await check(res, what);
  if (!text.includes('"result"')) throw new Error(`${what}: ${text.slice(0, 200)}`);
  return text;
}

/** A few requests through each upstream (sessionless tools/call) and to /ready. */
async function warmGateway(url) {
  for (let i = 0; i < 10; i++) {
    for (const server of ['stdio', 'http']) await toolCall(`${url}/mcp/${server}`, i, `warm-up ${server}`);
    await check(await fetch(`${url}/ready`), 'warm-up /ready');
  }
}

async function warmBare(url) {
  for (let i = 0; i < 30; i++) await check(await fetch(url), 'warm-up bare node');
}

/** mcp_guard_active_sessions, as the gateway counts them. */
async function activeSessions(url) {
  const text = await check(await fetch(`${url}/metrics`), '/metrics');
  const match = /^mcp_guard_active_sessions(?:\{[^}]*\})? (\d+)/m.exec(text);
  if (!match) throw new Error('/metrics has no mcp_guard_active_sessions');
  return Number(match[1]);
}

function gatewayArgs(config, port, nodeArgs = []) {
  return [...nodeArgs, join(ROOT, 'dist/main.js'), 'serve', '-c', config, '--port', String(port)];
}
const GATEWAY_ENV = { MCP_GUARD_LOG_LEVEL: 'warn' };

async function startGateway(config, nodeArgs = []) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const { child, ms } = await spawnUntilReady('gateway', gatewayArgs(config, port, nodeArgs), `${url}/ready`, GATEWAY_ENV);
  return { child, url, ms };
}

async function startBare() {
  const port = await freePort();
  const code = `require('node:http').createServer((req, res) => res.end('ok')).listen(${port}, '127.0.0.1')`;
  const url = `http://127.0.0.1:${port}/`;
  const { child, ms } = await spawnUntilReady('bare node', ['-e', code], url);
  return { child, url, ms };
}

async function startFloor(upstreamUrl) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const { child, ms } = await spawnUntilReady('stack floor', [BARE_PROXY, upstreamUrl, String(port), '--floor'], `${url}/metrics`);
  return { child, url, ms };
}

/** The stack floor's warm-up: what warmGateway sends, through the passthrough, and /metrics. */
async function warmFloor(url) {
  for (let i = 0; i < 10; i++) {
    for (let j = 0; j < 2; j++) await toolCall(`${url}/mcp`, i, 'warm-up stack floor');
    await check(await fetch(`${url}/metrics`), 'warm-up stack floor /metrics');
  }
}

const KINDS = {
  gateway: { start: (config) => startGateway(config), warm: warmGateway },
  bare_node: { start: () => startBare(), warm: warmBare },
  stack_floor: { start: (_config, upstreamUrl) => startFloor(upstreamUrl), warm: warmFloor },
};

/**
 * Start-up time and RSS of the gateway, bare node and the stack floor, STARTS of each: every
 * process is started alone (the kinds take turns, so that drift hits them alike) and warmed up,
 * then all are left idle side by side. RSS is read WARM_READ_MS after the last warm-up (the
 * earlier `idle` reading; the first processes have then been idle a few seconds longer, still
 * short of the memory reducer) and again IDLE_READ_MS after it, once the reducer has run.
 */
async function startsAndIdle(config, upstreamUrl) {
  const kinds = Object.keys(KINDS);
  const procs = [];
  try {
    for (let i = 0; i < STARTS; i++) {
      for (let j = 0; j < kinds.length; j++) {
        const kind = kinds[(i + j) % kinds.length];
        const proc = await KINDS[kind].start(config, upstreamUrl);
        procs.push({ kind, ...proc });
        await KINDS[kind].warm(proc.url);
      }
    }
    const warmed = performance.now();
    const warm = await Promise.all(procs.map((p) => settledRss(p.child.pid, WARM_READ_MS)));
    await sleep(Math.max(0, IDLE_READ_MS - (performance.now() - warmed)));
    const idle = await Promise.all(procs.map((p) => settledRss(p.child.pid, 0)));
    const out = Object.fromEntries(kinds.map((k) => [k, { ms: [], warm: [], rss: [], anon: [] }]));
    for (const [i, p] of procs.entries()) {
      out[p.kind].ms.push(p.ms);
      out[p.kind].warm.push(warm[i]);
      out[p.kind].rss.push(idle[i]);
      out[p.kind].anon.push(statusMb(p.child.pid, 'RssAnon'));
    }
    return out;
  } finally {
    await Promise.all(procs.map((p) => stop(p.child)));
  }
}

/** A fresh gateway: idle RSS, then SESSIONS sessions with GET streams through one server. */
async function sessionsCost(config, server) {
  const gateway = await startGateway(config, SESSIONS_NODE_ARGS);
  const pid = gateway.child.pid;
  const sessions = new SessionSet(`${gateway.url}/mcp/${server}`);
  try {
    await warmGateway(gateway.url);
    const cold = await settledRss(pid, WARM_READ_MS);
    const warm = new SessionSet(`${gateway.url}/mcp/${server}`);
    try {
      const warmErrors = [...(await warm.open(WARM_SESSIONS, CONCURRENCY)), ...(await warm.close(CONCURRENCY))];
      if (warmErrors.length) throw new Error(`${server}: warm-up: ${warmErrors.length} sessions failed; first: ${warmErrors[0].message}`);
    } finally {
      await warm.agent.destroy().catch(() => undefined);
    }
    const idle = await settledRss(pid, SESSIONS_SETTLE_MS);
    const half = SESSIONS / 2;
    let openMs = performance.now();
    let errors = await sessions.open(half, CONCURRENCY);
    openMs = performance.now() - openMs;
    if (errors.length) throw new Error(`${server}: ${errors.length} of ${half} sessions failed to open; first: ${errors[0].message}`);
    const atHalf = await settledRss(pid, SESSIONS_SETTLE_MS);
    const resumed = performance.now();
    errors = await sessions.open(SESSIONS - half, CONCURRENCY);
    openMs += performance.now() - resumed;
    if (errors.length) throw new Error(`${server}: ${errors.length} of ${SESSIONS - half} sessions failed to open; first: ${errors[0].message}`);
    const full = await settledRss(pid, SESSIONS_SETTLE_MS);
    // Checked after the reading (a scrape allocates): every session really open, on both sides.
    const counted = await activeSessions(gateway.url);
    if (sessions.openStreams !== SESSIONS || sessions.endedEarly || counted !== SESSIONS) {
      throw new Error(
        `${server}: ${sessions.openStreams} GET streams open (${sessions.endedEarly} ended early), gateway counts ${counted} sessions; expected ${SESSIONS}`,
      );
    }
    const deleteErrors = await sessions.close(CONCURRENCY);
    if (deleteErrors.length) throw new Error(`${server}: ${deleteErrors.length} DELETEs failed; first: ${deleteErrors[0].message}`);
    const afterClose = await settledRss(pid, SESSIONS_SETTLE_MS);
    const left = await activeSessions(gateway.url);
    if (left !== 0) throw new Error(`${server}: ${left} sessions still open after DELETE`);
    const perThousand = ((full - idle) * 1000) / SESSIONS;
    return {
      scenario: 'memory',
      variant: `sessions_${server}`,
      value: round1(perThousand),
      unit: 'MB/1000 sessions',
      target: `<= ${PER_1000_TARGET_MB}`,
      meets_target: perThousand <= PER_1000_TARGET_MB,
      idle_mb: round1(idle),
      cold_idle_mb: round1(cold),
      cold_mb: round1(((full - cold) * 1000) / SESSIONS),
      at_500_mb: round1(atHalf),
      at_1000_mb: round1(full),
      // The second 500 alone, per 1,000: free of one-time costs (code warm-up, connection pools).
      slope_mb: round1(((full - atHalf) * 1000) / (SESSIONS - half)),
      after_close_mb: round1(afterClose),
      open_per_sec: Math.round((SESSIONS * 1000) / openMs),
    };
  } finally {
    await sessions.agent.destroy().catch(() => undefined);
    await stop(gateway.child);
  }
}

export async function run() {
  const upstream = await startInstantUpstream();
  const dir = mkdtempSync(join(tmpdir(), 'mcp-guard-bench-memory-'));
  const config = join(dir, 'mcp-guard.toml');
  writeFileSync(config, [serverToml('stdio'), serverToml('http', upstream.url)].join('\n'));
  try {
    const { gateway, bare_node: bare, stack_floor: floor } = await startsAndIdle(config, upstream.url);
    const startMs = median(gateway.ms);
    const bareMs = median(bare.ms);
    const idle = median(gateway.rss);
    const bareIdle = median(bare.rss);
    const floorIdle = median(floor.rss);
    const rows = [
      {
        scenario: 'memory',
        variant: 'startup_ms',
        value: Math.round(startMs),
        unit: 'ms to /ready',
        baseline: Math.round(bareMs),
        ratio: Number((startMs / bareMs).toFixed(2)),
        rounds: { gateway: gateway.ms.map(Math.round), bare_node: bare.ms.map(Math.round), stack_floor: floor.ms.map(Math.round) },
      },
      {
        scenario: 'memory',
        variant: 'idle_rss_mb',
        value: round1(idle),
        unit: 'MB',
        baseline: round1(bareIdle),
        ratio: Number((idle / bareIdle).toFixed(2)),
        target: `<= ${IDLE_TARGET_MB}`,
        meets_target: idle <= IDLE_TARGET_MB,
        // The chosen libraries alone (bare-proxy.mjs --floor), and the gateway over them.
        stack_floor_mb: round1(floorIdle),
        over_floor_mb: round1(idle - floorIdle),
        // Anonymous (private) pages only: VmRSS less the node binary and libraries mapped from files.
        anon_mb: round1(median(gateway.anon)),
        baseline_anon_mb: round1(median(bare.anon)),
        stack_floor_anon_mb: round1(median(floor.anon)),
        // The reading WARM_READ_MS after the warm-up, before the memory reducer (the method until 2026-11-21).
        warm_mb: round1(median(gateway.warm)),
        stack_floor_warm_mb: round1(median(floor.warm)),
        rounds: {
          gateway: gateway.rss.map(round1),
          bare_node: bare.rss.map(round1),
          stack_floor: floor.rss.map(round1),
          gateway_warm: gateway.warm.map(round1),
          stack_floor_warm: floor.warm.map(round1),
          gateway_anon: gateway.anon.map(round1),
        },
      },
    ];
    for (const server of ['stdio', 'http']) rows.push(await sessionsCost(config, server));
    return rows;
  } finally {
    await stop(upstream.child);
  }
}
