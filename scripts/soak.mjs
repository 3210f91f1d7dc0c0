/**
 * A bounded soak run of a real gateway: `node scripts/soak.mjs [--minutes N] [--out FILE]`
 * (`npm run soak`; 10 minutes by default, `SOAK_MINUTES` too).
 *
 * 1. Starts `node dist/main.js serve` with two upstreams, the instant stdio server (`/mcp/stdio`)
 *    and the instant HTTP upstream (`/mcp/http`), one API key, rate limits far above the load,
 *    audit to a file (rotated at 20 MiB, 2 backups), metrics on.
 * 2. Measures the gateway's maximum throughput (3 s of closed-loop tools/call on both upstreams),
 *    then sends half of it, at a fixed rate, for the whole run: tools/call (most), tools/list,
 *    session opens (initialize + initialized) and closes (DELETE), some with a GET stream opened
 *    and closed in between; half of it to each upstream. Every answer is checked.
 * 3. Every 30 s (runs shorter than 3 minutes: a sixth of the run, at least 5 s), SIGKILLs the
 *    stdio child (the gateway's child process running the instant stdio server, by PID). A failed
 *    request to the stdio upstream in flight during the 2 s after a kill is an injected-fault
 *    error; any other failure (the HTTP upstream's, the stdio upstream's outside those windows)
 *    is an error outside faults.
 * 4. Every 10 s (short runs: a sixth of the run), samples the gateway's RSS, open file
 *    descriptors, `/ready` restarts, requests done and errors.
 * 5. Prints a table, writes bench/results/soak-<date>.json (or --out), and exits 1 when a target
 *    is missed: errors outside faults = 0; restarts >= kills; growth of fds other than sockets
 *    (pipes, files: where a leaked child or file shows) <= 2 and of sockets <= 16 (quiet readings,
 *    below); RSS growth < 10% from the sample after the warm-up (1 minute, or 20% of shorter runs)
 *    to the last one. RSS is reported but not judged for runs shorter than 3 minutes: the heap
 *    is still growing to its working size then, whatever the gateway does.
 *
 * The fd target compares two quiet readings: session churn (whose connections come and go) is
 * paused, and no fault window is open, when the fds are counted after the warm-up and at the end.
 * The periodic samples are raw.
 *
 * Traffic goes to 127.0.0.1 only. Every process started here is ended by PID at the end, on
 * SIGINT/SIGTERM and on any exit (bench/lib/harness.mjs); the run stops by itself.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'undici';
import { INSTANT_STDIO_UPSTREAM, ROOT, serverToml, startGateway as startServe, startInstantUpstream, tomlString } from '../bench/lib/harness.mjs';

// ---- settings ---------------------------------------------------------------------------------

function minutesSetting() {
  const at = process.argv.indexOf('--minutes');
  const raw = at !== -1 ? process.argv[at + 1] : (process.env.SOAK_MINUTES ?? '10');
  const minutes = Number(raw);
  if (!Number.isFinite(minutes) || minutes <= 0 || minutes > 24 * 60) {
    console.error(`soak: --minutes must be a number of minutes > 0 (got ${raw})`);
    process.exit(2);
  }
  return minutes;
}
const outAt = process.argv.indexOf('--out');
const MINUTES = minutesSetting();
const DURATION_MS = Math.round(MINUTES * 60_000);
const FAULT_EVERY_MS = Math.min(30_000, Math.max(5_000, Math.round(DURATION_MS / 6)));
const FAULT_WINDOW_MS = 2_000;
const SAMPLE_EVERY_MS = Math.min(10_000, Math.max(2_000, Math.round(DURATION_MS / 6)));
const WARMUP_MS = Math.min(60_000, Math.round(DURATION_MS * 0.2));
const JUDGE_RSS = DURATION_MS >= 3 * 60_000;
const RSS_GROWTH_MAX_PCT = 10;
const FD_GROWTH_MAX = 2;
/**
 * Sockets may grow this much between the quiet readings without counting as a leak: the gateway's
 * connection pool to the HTTP upstream opens more connections under a load peak and keeps them
 * while they are alive (a 30 s CI run saw 30 -> 34). A leak grows without bound; this does not.
 */
const SOCKET_GROWTH_MAX = 16;
const MAX_PROBE_SECS = 3;
const CLIENTS_PER_UPSTREAM = 8; // long-lived sessions, each on its own keep-alive connection
const MAX_IN_FLIGHT = 256; // a stalled gateway does not pile up an unbounded queue
const STEP_TIMEOUT_MS = 15_000;
const PROTOCOL_VERSION = '2025-06-18';
const ACCEPT = 'application/json, text/event-stream';

const { generateApiKey, hashApiKey } = await import(`${ROOT}/dist/auth/key-format.js`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();

// ---- the gateway --------------------------------------------------------------------------------

const workDir = mkdtempSync(join(tmpdir(), 'mcp-guard-soak-'));
process.on('exit', () => rmSync(workDir, { recursive: true, force: true }));

async function startGateway(httpUpstreamUrl, keyPrefix, keyHash) {
  const toml = [
    '[server]',
    'host = "127.0.0.1"',
    'metrics = true',
    '',
    '[auth]',
    '[[auth.api_keys]]',
    'id = "soak"',
    `key_prefix = ${tomlString(keyPrefix)}`,
    `key_hash = ${tomlString(keyHash)}`,
    '',
    // Far above anything the soak sends: the limiter runs on every request, never refuses.
    '[rate_limit]',
    'enabled = true',
    'requests_per_second = 1000000',
    'burst_size = 1000000',
    'per_address_requests_per_second = 1000000',
    'per_address_burst_size = 1000000',
    '',
    '[audit]',
    `file = ${tomlString(join(workDir, 'audit.log'))}`,
    'rotate_max_bytes = 20971520',
    'max_backups = 2',
    '',
    // Kills come faster than the 30 s after which a child counts as stable: with the defaults
    // the backoff would double per kill and the server would end in crash_loop after 5.
    serverToml('stdio', undefined, ['restart_backoff_ms = 100', 'restart_backoff_max_ms = 500', 'max_restarts = 100000']),
    serverToml('http', httpUpstreamUrl),
  ].join('\n');
  return startServe('soak', toml, { MCP_GUARD_LOG_LEVEL: 'error' });
}

// ---- /proc ----------------------------------------------------------------------------------------

function rssKb(pid) {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}
function fdCount(pid) {
  return readdirSync(`/proc/${pid}/fd`).length;
}
/** The gateway's fds by kind (socket, pipe, anon_inode, file), for the report. */
function fdKinds(pid) {
  const kinds = {};
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    const kind = /^(socket|pipe|anon_inode)/.exec(target)?.[1] ?? 'file';
    kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  return kinds;
}
/** PIDs of the gateway's children running the instant stdio server. */
function stdioChildren(pid) {
  const pids = new Set();
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    let text = '';
    try {
      text = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8');
    } catch {
      continue; // the thread ended meanwhile
    }
    for (const p of text.split(/\s+/).filter(Boolean)) pids.add(Number(p));
  }
  return [...pids].filter((p) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').includes(INSTANT_STDIO_UPSTREAM);
    } catch {
      return false;
    }
  });
}
async function readyRestarts(url) {
  const res = await fetch(`${url}/ready`);
  const body = await res.json();
  // /ready lists the upstreams with their restarts; take the stdio server's, wherever it sits.
  const servers = body.upstreams ?? body.servers ?? body;
  const list = Array.isArray(servers) ? servers : Object.entries(servers).map(([name, v]) => ({ name, ...v }));
  const stdio = list.find((s) => s?.name === 'stdio');
  return { status: res.status, restarts: Number(stdio?.restarts ?? NaN), state: stdio?.state ?? stdio?.status };
}
async function metricsRestarts(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = /^mcp_guard_upstream_restarts_total\{[^}]*server="stdio"[^}]*\}\s+(\d+)/m.exec(text);
  return m ? Number(m[1]) : NaN;
}

// ---- MCP over HTTP ----------------------------------------------------------------------------

let nextId = 1;

/** The JSON-RPC response with `id` from a JSON or SSE answer; throws when it is not there. */
async function readAnswer(statusCode, headers, body, id) {
  const type = String(headers['content-type'] ?? '');
  const text = await body.text();
  if (statusCode !== 200) throw new Error(`HTTP ${statusCode}: ${text.slice(0, 200)}`);
  if (type.startsWith('text/event-stream')) {
    for (const event of text.split(/\r?\n\r?\n/)) {
      const data = event
        .split(/\r?\n/)
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(l[5] === ' ' ? 6 : 5))
        .join('\n');
      if (!data) continue;
      const message = JSON.parse(data);
      if (message.id === id && ('result' in message || 'error' in message)) return message;
    }
    throw new Error(`SSE answer without the response to id ${id}`);
  }
  const message = JSON.parse(text);
  if (message?.id !== id) throw new Error(`not the response to id ${id}: ${text.slice(0, 200)}`);
  return message;
}

function newClient(origin) {
  return new Client(origin, { pipelining: 1, keepAliveTimeout: 60_000, headersTimeout: STEP_TIMEOUT_MS, bodyTimeout: STEP_TIMEOUT_MS });
}

/** Sends one JSON-RPC request; resolves with its checked `result`. */
async function rpc(session, method, params) {
  const id = nextId++;
  const res = await session.client.request({
    path: session.path,
    method: 'POST',
    headers: session.headers,
    body: JSON.stringify({ jsonrpc: '2.0', id, method, params }),
  });
  const message = await readAnswer(res.statusCode, res.headers, res.body, id);
  if (!message.result) throw new Error(`${method}: ${JSON.stringify(message).slice(0, 200)}`);
  return { id, result: message.result };
}

/** initialize + notifications/initialized on `client`: 2 requests. */
async function openSession(client, path, token) {
  const base = { 'content-type': 'application/json', accept: ACCEPT, authorization: `Bearer ${token}` };
  const id = nextId++;
  const init = await client.request({
    path,
    method: 'POST',
    headers: base,
    body: JSON.stringify({
      jsonrpc: '2.0',
      id,
      method: 'initialize',
      params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'mcp-guard-soak', version: '1' } },
    }),
  });
  const sessionId = init.headers['mcp-session-id'];
  const message = await readAnswer(init.statusCode, init.headers, init.body, id);
  if (!message.result?.protocolVersion || typeof sessionId !== 'string') throw new Error(`initialize: ${JSON.stringify(message).slice(0, 200)}`);
  const headers = { ...base, 'mcp-session-id': sessionId, 'mcp-protocol-version': message.result.protocolVersion };
  const ok = await client.request({ path, method: 'POST', headers, body: '{"jsonrpc":"2.0","method":"notifications/initialized"}' });
  await ok.body.dump();
  if (ok.statusCode < 200 || ok.statusCode > 299) throw new Error(`notifications/initialized: HTTP ${ok.statusCode}`);
  return { client, path, headers, sessionId };
}

async function deleteSession(session) {
  const res = await session.client.request({ path: session.path, method: 'DELETE', headers: session.headers });
  await res.body.dump();
  if (res.statusCode < 200 || res.statusCode > 299) throw new Error(`DELETE: HTTP ${res.statusCode}`);
}

async function toolsCall(session) {
  const n = nextId;
  const { result } = await rpc(session, 'tools/call', { name: 'tool-0', arguments: { n } });
  if (result.content?.[0]?.text !== `{"n":${n}}`) throw new Error(`tools/call: wrong echo ${JSON.stringify(result).slice(0, 200)}`);
}

async function toolsList(session) {
  const { result } = await rpc(session, 'tools/list', {});
  if (!Array.isArray(result.tools) || result.tools.length !== 5) throw new Error(`tools/list: ${JSON.stringify(result).slice(0, 200)}`);
}

// ---- the run --------------------------------------------------------------------------------------

const counts = { requests: 0, errorsOutside: 0, errorsFault: 0, byKind: {} };
const problems = [];
const faultProblems = [];
const kills = []; // performance.now() of each SIGKILL
let inFlight = 0;
let churnInFlight = 0;
let churnPaused = false;
let skipped = 0;

function inFaultWindow(start, end) {
  return kills.some((k) => end >= k && start <= k + FAULT_WINDOW_MS);
}

/** Runs one operation of `requests` HTTP requests; books its success or failure. */
async function booked(kind, upstream, requests, op) {
  const start = now();
  inFlight++;
  try {
    await op();
    counts.requests += requests;
    counts.byKind[kind] = (counts.byKind[kind] ?? 0) + 1;
  } catch (err) {
    counts.requests += requests;
    const fault = upstream === 'stdio' && inFaultWindow(start, now());
    if (fault) {
      counts.errorsFault++;
      if (faultProblems.length < 5) faultProblems.push(`${kind} at ${((start - t0) / 1000).toFixed(1)} s: ${err.message}`);
    } else {
      counts.errorsOutside++;
      if (problems.length < 10) problems.push(`${kind} ${upstream} at ${((start - t0) / 1000).toFixed(1)} s: ${err.message}`);
    }
  } finally {
    inFlight--;
  }
}

/** A short-lived session: open, a tools/call, maybe a GET stream opened and closed, DELETE. */
async function churn(origin, path, token, withStream) {
  churnInFlight++;
  const client = newClient(origin);
  try {
    const session = await openSession(client, path, token);
    await toolsCall(session);
    if (withStream) {
      const streamClient = newClient(origin);
      try {
        const ac = new AbortController();
        const res = await streamClient.request({ path, method: 'GET', headers: { ...session.headers, accept: 'text/event-stream' }, signal: ac.signal });
        if (res.statusCode !== 200) throw new Error(`GET stream: HTTP ${res.statusCode}`);
        res.body.on('error', () => undefined);
        res.body.resume();
        await sleep(50);
        ac.abort();
      } finally {
        await streamClient.destroy();
      }
    }
    await deleteSession(session);
  } finally {
    await client.close().catch(() => client.destroy());
    churnInFlight--;
  }
}

let t0 = now();

async function main() {
  const key = generateApiKey();
  const http = await startInstantUpstream();
  const gw = await startGateway(http.url, key.prefix, await hashApiKey(key.key));
  const gwPid = gw.child.pid;
  const { origin } = new URL(gw.url);
  const paths = { stdio: '/mcp/stdio', http: '/mcp/http' };
  console.log(
    `soak: ${MINUTES} min; gateway pid ${gwPid} on ${gw.url}; kill every ${FAULT_EVERY_MS / 1000} s, sample every ${SAMPLE_EVERY_MS / 1000} s, warm-up ${WARMUP_MS / 1000} s`,
  );

  // Long-lived sessions, each on its own keep-alive connection.
  const sessions = { stdio: [], http: [] };
  for (const upstream of ['stdio', 'http']) {
    for (let i = 0; i < CLIENTS_PER_UPSTREAM; i++) sessions[upstream].push(await openSession(newClient(origin), paths[upstream], key.key));
  }
  const all = [...sessions.stdio, ...sessions.http];

  // Maximum throughput: closed loop on every session at once.
  let probeDone = 0;
  const probeEnd = now() + MAX_PROBE_SECS * 1000;
  await Promise.all(
    all.map(async (s) => {
      while (now() < probeEnd) {
        await toolsCall(s);
        probeDone++;
      }
    }),
  );
  const maxRps = Math.round(probeDone / MAX_PROBE_SECS);
  const rate = Math.max(10, Math.round(maxRps / 2));
  console.log(`soak: maximum ${maxRps} req/s (closed loop, ${all.length} sessions); holding ${rate} req/s`);

  // Picks the least busy long-lived session of an upstream.
  const busy = new Map(all.map((s) => [s, 0]));
  const pick = (upstream) => sessions[upstream].reduce((a, b) => (busy.get(b) < busy.get(a) ? b : a));
  const onSession = (upstream, kind, fn) => {
    const s = pick(upstream);
    busy.set(s, busy.get(s) + 1);
    return booked(kind, upstream, 1, () => fn(s)).finally(() => busy.set(s, busy.get(s) - 1));
  };

  // One operation in the mix; every request of it counts towards the rate.
  let opIndex = 0;
  const dispatch = () => {
    const i = opIndex++;
    const upstream = i % 2 === 0 ? 'stdio' : 'http';
    const slot = Math.floor(i / 2) % 100;
    if (slot < 88) return { cost: 1, run: () => onSession(upstream, 'tools/call', toolsCall) };
    if (slot < 96) return { cost: 1, run: () => onSession(upstream, 'tools/list', toolsList) };
    if (churnPaused) return { cost: 1, run: () => onSession(upstream, 'tools/call', toolsCall) };
    const withStream = slot >= 99;
    // initialize, initialized, tools/call, [GET], DELETE
    const requests = withStream ? 5 : 4;
    return {
      cost: requests,
      run: () => booked(withStream ? 'session+stream' : 'session', upstream, requests, () => churn(origin, paths[upstream], key.key, withStream)),
    };
  };

  // Samples, quiet fd readings, faults, all on the run's clock.
  t0 = now();
  const end = t0 + DURATION_MS;
  const samples = [];
  const sample = async () => {
    const t = now();
    const ready = await readyRestarts(gw.url).catch(() => ({ status: 0, restarts: NaN }));
    const row = {
      t_s: Math.round((t - t0) / 1000),
      rss_kb: rssKb(gwPid),
      fds: fdCount(gwPid),
      fd_kinds: fdKinds(gwPid),
      restarts: ready.restarts,
      requests: counts.requests,
      errors_outside: counts.errorsOutside,
      errors_fault: counts.errorsFault,
      in_flight: inFlight,
    };
    samples.push(row);
    const kinds = Object.entries(row.fd_kinds)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    console.log(
      `soak: t=${row.t_s}s rss=${(row.rss_kb / 1024).toFixed(1)} MiB fds=${row.fds} (${kinds}) restarts=${row.restarts} requests=${row.requests} errors outside=${row.errors_outside} in faults=${row.errors_fault}`,
    );
  };
  /** fds with churn paused and no fault window open. */
  const quietFds = async () => {
    churnPaused = true;
    try {
      const deadline = now() + 10_000;
      while ((churnInFlight > 0 || inFaultWindow(now(), now())) && now() < deadline) await sleep(5);
      // The lowest of 25 readings over half a second: a connection that the gateway's own pool
      // opens and closes at a peak is not what the check is after.
      let best;
      for (let i = 0; i < 25; i++) {
        await sleep(20);
        const count = fdCount(gwPid);
        if (best === undefined || count < best.count) best = { count, kinds: fdKinds(gwPid) };
      }
      return best;
    } finally {
      churnPaused = false;
    }
  };
  const killTimes = [];
  for (let t = FAULT_EVERY_MS; t + FAULT_WINDOW_MS < DURATION_MS; t += FAULT_EVERY_MS) killTimes.push(t);
  const sampleTimes = [];
  for (let t = 0; t < DURATION_MS; t += SAMPLE_EVERY_MS) sampleTimes.push(t);
  sampleTimes.push(DURATION_MS);
  if (!sampleTimes.includes(WARMUP_MS)) sampleTimes.push(WARMUP_MS);
  sampleTimes.sort((a, b) => a - b);

  const killed = [];
  const faults = (async () => {
    for (const at of killTimes) {
      await sleep(t0 + at - now());
      let pids = stdioChildren(gwPid);
      for (let i = 0; pids.length === 0 && i < 200; i++) {
        await sleep(10); // still restarting from the last kill
        pids = stdioChildren(gwPid);
      }
      if (pids.length !== 1) {
        problems.push(`kill at ${at / 1000} s: ${pids.length} stdio children of the gateway`);
        continue;
      }
      kills.push(now());
      process.kill(pids[0], 'SIGKILL');
      killed.push(pids[0]);
    }
  })();

  let fdQuietFirst;
  const sampler = (async () => {
    for (const at of sampleTimes) {
      if (at >= DURATION_MS) break;
      await sleep(t0 + at - now());
      await sample();
      if (at === WARMUP_MS) fdQuietFirst = await quietFds();
    }
  })();

  // The load: `rate` requests per second, scheduled on the clock; a slot is skipped (and counted)
  // when MAX_IN_FLIGHT operations are still waiting.
  let sent = 0;
  const pending = new Set();
  while (now() < end) {
    const due = ((now() - t0) / 1000) * rate;
    while (sent < due) {
      if (inFlight >= MAX_IN_FLIGHT) {
        skipped++;
        sent++;
        continue;
      }
      const op = dispatch();
      sent += op.cost;
      const p = op.run();
      pending.add(p);
      void p.finally(() => pending.delete(p));
    }
    await sleep(2);
  }
  await Promise.all([faults, sampler]);
  const fdQuietLast = await quietFds(); // load still has to drain: churn is paused, calls finish
  await Promise.all(pending);
  await sample();
  const elapsedS = (now() - t0) / 1000;

  const restartsReady = (await readyRestarts(gw.url)).restarts;
  const restartsMetrics = await metricsRestarts(gw.url);
  const ready = await readyRestarts(gw.url);

  // Ends the sessions, then the gateway (SIGTERM by PID) and checks that its child went with it.
  await Promise.all(all.map((s) => deleteSession(s).catch(() => undefined)));
  await Promise.all(all.map((s) => s.client.close().catch(() => s.client.destroy())));
  const lastChild = stdioChildren(gwPid);
  const exited = new Promise((r) => gw.child.once('exit', (code, signal) => r({ code, signal })));
  gw.child.kill('SIGTERM');
  const gatewayExit = await Promise.race([exited, sleep(20_000).then(() => ({ code: 'timeout' }))]);
  const childrenLeft = lastChild.filter((p) => {
    try {
      process.kill(p, 0);
      return true;
    } catch {
      return false;
    }
  });
  http.child.kill('SIGTERM');

  const fdFirst = fdQuietFirst.count;
  const fdLast = fdQuietLast.count;
  const socketsOf = (reading) => reading.kinds.socket ?? 0;
  const socketGrowth = socketsOf(fdQuietLast) - socketsOf(fdQuietFirst);
  const otherGrowth = fdLast - socketsOf(fdQuietLast) - (fdFirst - socketsOf(fdQuietFirst));
  // ---- report ----------------------------------------------------------------------------------
  const warm = samples.find((s) => s.t_s * 1000 >= WARMUP_MS - 500) ?? samples[0];
  const last = samples[samples.length - 1];
  const rssGrowthPct = Number((((last.rss_kb - warm.rss_kb) / warm.rss_kb) * 100).toFixed(1));
  const checks = [
    { target: 'errors outside injected faults = 0', value: counts.errorsOutside, ok: counts.errorsOutside === 0 },
    {
      target: `restarts (/ready, /metrics) >= kills (${killed.length}), >= 1`,
      value: `${restartsReady}, ${restartsMetrics}`,
      ok: killed.length >= 1 && restartsReady >= killed.length && restartsMetrics === restartsReady,
    },
    { target: `fd growth other than sockets (quiet readings) <= ${FD_GROWTH_MAX}`, value: otherGrowth, ok: otherGrowth <= FD_GROWTH_MAX },
    { target: `socket growth (quiet readings) <= ${SOCKET_GROWTH_MAX}`, value: socketGrowth, ok: socketGrowth <= SOCKET_GROWTH_MAX },
    {
      target: `RSS growth after warm-up < ${RSS_GROWTH_MAX_PCT}%${JUDGE_RSS ? '' : ' (not judged: run < 3 min)'}`,
      value: `${rssGrowthPct}%`,
      ok: !JUDGE_RSS || rssGrowthPct < RSS_GROWTH_MAX_PCT,
    },
    {
      target: 'gateway exits 0 on SIGTERM, stdio child gone',
      value: `exit ${gatewayExit.code}, ${childrenLeft.length} left`,
      ok: gatewayExit.code === 0 && childrenLeft.length === 0,
    },
    { target: 'no kill found 0 or 2+ stdio children', value: killTimes.length - killed.length, ok: killed.length === killTimes.length },
  ];
  const report = {
    date: new Date().toISOString(),
    minutes: MINUTES,
    node: process.version,
    elapsed_s: Number(elapsedS.toFixed(1)),
    max_rps: maxRps,
    target_rps: rate,
    achieved_rps: Math.round(counts.requests / elapsedS),
    requests: counts.requests,
    operations: counts.byKind,
    skipped_slots: skipped,
    errors_outside_faults: counts.errorsOutside,
    errors_in_fault_windows: counts.errorsFault,
    kills: killed.length,
    fault_every_s: FAULT_EVERY_MS / 1000,
    fault_window_s: FAULT_WINDOW_MS / 1000,
    restarts_ready: restartsReady,
    restarts_metrics: restartsMetrics,
    stdio_state_at_end: ready.state,
    warmup_s: WARMUP_MS / 1000,
    rss_kb_first: samples[0].rss_kb,
    rss_kb_after_warmup: warm.rss_kb,
    rss_kb_last: last.rss_kb,
    rss_growth_pct: rssGrowthPct,
    rss_judged: JUDGE_RSS,
    fds_first_sample: samples[0].fds,
    fds_last_sample: last.fds,
    fds_quiet_after_warmup: fdFirst,
    fds_quiet_end: fdLast,
    fd_growth: fdLast - fdFirst,
    fd_growth_non_socket: otherGrowth,
    socket_growth: socketGrowth,
    fd_kinds_quiet_after_warmup: fdQuietFirst.kinds,
    fd_kinds_quiet_end: fdQuietLast.kinds,
    gateway_exit: gatewayExit,
    problems,
    fault_errors_first: faultProblems,
    checks,
    samples,
    passed: checks.every((c) => c.ok),
  };
  const out = outAt !== -1 ? process.argv[outAt + 1] : join(ROOT, 'bench/results', `soak-${report.date.slice(0, 19).replaceAll(':', '-')}.json`);
  mkdirSync(join(out, '..'), { recursive: true });
  writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);

  console.log('');
  console.log(`| figure | value |\n|---|---|`);
  const rows = [
    ['duration', `${report.elapsed_s} s at ${rate} req/s (max ${maxRps}); achieved ${report.achieved_rps} req/s`],
    [
      'requests',
      `${counts.requests} (${Object.entries(counts.byKind)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}; ${skipped} slots skipped)`,
    ],
    ['errors outside faults', counts.errorsOutside],
    ['errors in fault windows', `${counts.errorsFault} (${killed.length} kills, ${FAULT_WINDOW_MS / 1000} s windows)`],
    ['restarts', `/ready ${restartsReady}, /metrics ${restartsMetrics}`],
    [
      'RSS',
      `${(samples[0].rss_kb / 1024).toFixed(1)} MiB first, ${(warm.rss_kb / 1024).toFixed(1)} MiB at ${warm.t_s} s, ${(last.rss_kb / 1024).toFixed(1)} MiB last: ${rssGrowthPct}%`,
    ],
    [
      'fds',
      `samples ${samples[0].fds} → ${last.fds}; quiet ${fdFirst} → ${fdLast} (${JSON.stringify(fdQuietFirst.kinds)} → ${JSON.stringify(fdQuietLast.kinds)})`,
    ],
    ['gateway exit', `${gatewayExit.code}, ${childrenLeft.length} stdio children left`],
  ];
  for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);
  console.log('');
  for (const c of checks) console.log(`${c.ok ? 'ok  ' : 'FAIL'} ${c.target}: ${c.value}`);
  for (const p of problems) console.log(`problem: ${p}`);
  for (const p of faultProblems) console.log(`fault-window error: ${p}`);
  console.log(`soak: report ${out}`);
  return report.passed;
}

// A bound on the whole run, whatever happens: the run's length plus 3 minutes.
const watchdog = setTimeout(() => {
  console.error('soak: did not finish in time');
  process.exit(3);
}, DURATION_MS + 180_000);
watchdog.unref();

main().then(
  (passed) => process.exit(passed ? 0 : 1),
  (err) => {
    console.error(`soak: ${err.stack ?? err}`);
    process.exit(1);
  },
);
