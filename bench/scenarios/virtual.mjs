/**
 * What a virtual server costs (issue 18): one gateway with 10 HTTP servers `d05` .. `d50`, each
 * answering tools/list after its own delay (5, 10, ... 50 ms: bench/lib/delayed-http-upstream.mjs,
 * everything else instantly), and `[[virtual_servers]] all` merging the 10 of them.
 *
 *   list   tools/list on the slowest member's own route (/mcp/d50) against tools/list on the
 *          virtual server (/mcp/all), which asks its 10 members in parallel: one session each,
 *          one request at a time, the two taking turns request by request (the order flipping
 *          every pair) so that noise hits both. Target: p50 of the virtual server ≤ 1.2 × the
 *          slowest member's. Each member's own tools/list is timed too (a few requests each), to
 *          show which is the slowest.
 *   call   tools/call (instant) on a member's own route (/mcp/d05, tool `tool-0`) against the same
 *          call through the virtual server (/mcp/all, tool `d05__tool-0`): CALL_CLIENTS sessions
 *          in a closed loop (bench/lib/mcp-load.mjs, every answer checked), in 16 (or --rounds)
 *          rounds of one short run (0.5 s, or --duration if shorter) each, whose order alternates
 *          (A B, B A, ...); the ratio is the median of each round's virtual/member ratio. Target:
 *          ≥ 0.95. CPU per request is the gateway's (a median over the rounds).
 *
 * Every process it starts (the upstreams' process and the gateway) is stopped by pid at the end.
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { cpuMicros, median, ROOT, serverToml, startGateway, track } from '../lib/harness.mjs';
import { closedLoop, closeSessions, openSessions } from '../lib/mcp-load.mjs';
import { ask } from '../lib/session-ask.mjs';

/** The members' tools/list delays, ms; the members are named after them (d05 .. d50). */
const DELAYS = [5, 10, 15, 20, 25, 30, 35, 40, 45, 50];
const TOOLS = 5;
const VIRTUAL = 'all';
/** tools/list pairs (one on the slowest member, one on the virtual server), and how many make a round. */
const LIST_PAIRS = 250;
const LIST_ROUND = 50;
const LIST_WARMUP = 20;
/** Each member's own tools/list, timed to show the ladder (after a few untimed). */
const MEMBER_WARMUP = 5;
const MEMBER_SAMPLES = 15;
/**
 * tools/call: concurrent sessions, at least this many A/B rounds, each run at most CALL_RUN_SECS
 * (short runs, many of them: on a busy shared machine the two runs of a round then share the
 * same noise, and the median of the rounds' ratios leaves the rounds it hit unevenly out).
 */
const CALL_CLIENTS = 10;
const MIN_CALL_ROUNDS = 16;
const CALL_RUN_SECS = 0.5;
const LIST_TARGET = 1.2;
const CALL_TARGET = 0.95;
const STOP_DEADLINE_MS = 10_000;

const nameOf = (delay) => `d${String(delay).padStart(2, '0')}`;

function percentile(values, p) {
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

const ms = (value) => Number(value.toFixed(2));

/** Starts the delayed upstreams (one process, one port each); resolves with their MCP URLs. */
async function startDelayedUpstreams() {
  const child = track(
    fork(join(ROOT, 'bench/lib/delayed-http-upstream.mjs'), [DELAYS.join(','), String(TOOLS)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }),
  );
  const [{ ports }] = await once(child, 'message');
  return { urls: ports.map((port) => `http://127.0.0.1:${port}/mcp`), child };
}

/** SIGTERM to one child we started, by its pid; SIGKILL if it has not exited by the deadline. */
async function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_DEADLINE_MS);
  await exited;
  clearTimeout(timer);
}

/** The virtual server's tools/list must hold every member's tools, namespaced. */
function checkMerged(message) {
  const names = new Set(message.result.tools.map((t) => t.name));
  for (const delay of DELAYS)
    for (let i = 0; i < TOOLS; i++)
      if (!names.has(`${nameOf(delay)}__tool-${i}`)) throw new Error(`virtual tools/list lacks ${nameOf(delay)}__tool-${i}: ${[...names].join(', ')}`);
  if (names.size !== DELAYS.length * TOOLS) throw new Error(`virtual tools/list has ${names.size} tools, not ${DELAYS.length * TOOLS}`);
}

/** tools/list on the slowest member against the virtual server, taking turns request by request. */
async function compareLists(gatewayUrl) {
  const slowest = nameOf(Math.max(...DELAYS));
  const sessions = [];
  try {
    const [direct] = await openSessions(`${gatewayUrl}/mcp/${slowest}`, 1);
    const [merged] = await openSessions(`${gatewayUrl}/mcp/${VIRTUAL}`, 1);
    sessions.push(direct, merged);
    checkMerged((await ask(merged, 'tools/list')).message);
    // The warm-up goes first: it reaches every member (through the virtual server), so the
    // ladder's first member is not timed while the gateway's hot path is still cold.
    for (let i = 0; i < LIST_WARMUP; i++) {
      await ask(direct, 'tools/list');
      await ask(merged, 'tools/list');
    }
    // Each member's own list, a few times: the ladder, and which one is the slowest.
    const members = {};
    for (const delay of DELAYS) {
      const [session] = await openSessions(`${gatewayUrl}/mcp/${nameOf(delay)}`, 1);
      sessions.push(session);
      for (let i = 0; i < MEMBER_WARMUP; i++) await ask(session, 'tools/list');
      const times = [];
      for (let i = 0; i < MEMBER_SAMPLES; i++) times.push((await ask(session, 'tools/list')).ms);
      members[nameOf(delay)] = ms(median(times));
    }
    const times = { direct: [], merged: [] };
    for (let i = 0; i < LIST_PAIRS; i++) {
      const order = i % 2 === 0 ? ['direct', 'merged'] : ['merged', 'direct'];
      for (const which of order) times[which].push((await ask(which === 'direct' ? direct : merged, 'tools/list')).ms);
    }
    // The p50 ratio of each round of LIST_ROUND pairs: how much it moves between rounds.
    const roundRatios = [];
    for (let start = 0; start < LIST_PAIRS; start += LIST_ROUND) {
      const slice = (which) => times[which].slice(start, start + LIST_ROUND);
      roundRatios.push(Number((median(slice('merged')) / median(slice('direct'))).toFixed(3)));
    }
    const [p50, p90] = [50, 90].map((p) => percentile(times.direct, p));
    const [vp50, vp90] = [50, 90].map((p) => percentile(times.merged, p));
    const ratio = vp50 / p50;
    return [
      {
        scenario: 'virtual',
        variant: `list: ${slowest} (slowest member)`,
        requests: LIST_PAIRS,
        p50_ms: ms(p50),
        p90_ms: ms(p90),
        ratio: 1,
        details: { members_p50_ms: members },
      },
      {
        scenario: 'virtual',
        variant: `list: ${VIRTUAL} (${DELAYS.length} members)`,
        requests: LIST_PAIRS,
        p50_ms: ms(vp50),
        p90_ms: ms(vp90),
        ratio: Number(ratio.toFixed(3)),
        p90_ratio: Number((vp90 / p90).toFixed(3)),
        target: `≤ ${LIST_TARGET}`,
        met: ratio <= LIST_TARGET,
        rounds: roundRatios,
      },
    ];
  } finally {
    await closeSessions(sessions);
  }
}

/** tools/call on a member's own route against the same call through the virtual server, in alternating rounds. */
async function compareCalls(gatewayUrl, gatewayPid, { durationSecs, rounds }) {
  const member = nameOf(Math.min(...DELAYS));
  const variants = [
    { name: `call: ${member} (member route)`, url: `${gatewayUrl}/mcp/${member}`, tool: 'tool-0' },
    { name: `call: ${VIRTUAL} (virtual, ${DELAYS.length} members)`, url: `${gatewayUrl}/mcp/${VIRTUAL}`, tool: `${member}__tool-0` },
  ];
  const sessions = [];
  try {
    for (const v of variants) sessions.push(await openSessions(v.url, CALL_CLIENTS));
    const runOf = async (i, secs) => {
      const before = cpuMicros(gatewayPid);
      const result = await closedLoop(sessions[i], { durationSecs: secs, tool: variants[i].tool });
      const after = cpuMicros(gatewayPid);
      return { ...result, cpuUs: before === undefined || after === undefined ? undefined : (after - before) / result.requests };
    };
    for (let i = 0; i < variants.length; i++) await runOf(i, 1); // warm-up
    const samples = variants.map(() => []);
    const pairs = Math.max(MIN_CALL_ROUNDS, rounds);
    const secs = Math.min(durationSecs, CALL_RUN_SECS);
    // A round in which either run answered nothing (the machine stalled for the whole run: seen
    // on a 2-core machine at load 17) has no ratio: it is run again, at most `pairs` times in all.
    let stalled = 0;
    for (let round = 0; samples[0].length < pairs; round++) {
      const order = round % 2 === 0 ? [0, 1] : [1, 0];
      const runs = [];
      for (const i of order) runs[i] = await runOf(i, secs);
      if (runs.some((r) => r.requests === 0)) {
        if (++stalled > pairs) throw new Error(`virtual: ${stalled} rounds of tools/call answered nothing`);
        continue;
      }
      runs.forEach((r, i) => samples[i].push(r));
    }
    const ratios = samples[1].map((s, round) => s.rps / samples[0][round].rps);
    const cpuOf = (i) => (samples[i].some((s) => s.cpuUs === undefined) ? undefined : median(samples[i].map((s) => s.cpuUs)));
    const ratio = median(ratios);
    return variants.map((v, i) => {
      const cpu = cpuOf(i);
      return {
        scenario: 'virtual',
        variant: v.name,
        clients: CALL_CLIENTS,
        rps: Math.round(median(samples[i].map((s) => s.rps))),
        p50_ms: ms(median(samples[i].map((s) => s.p50))),
        p99_ms: ms(median(samples[i].map((s) => s.p99))),
        // The virtual server's: the median of each round's virtual/member ratio.
        ratio: i === 0 ? 1 : Number(ratio.toFixed(3)),
        cpu_us_per_req: cpu === undefined ? undefined : Math.round(cpu),
        cpu_ratio: cpu === undefined || cpuOf(0) === undefined ? undefined : Number((cpuOf(0) / cpu).toFixed(3)),
        ...(i === 0 ? {} : { target: `≥ ${CALL_TARGET}`, met: ratio >= CALL_TARGET }),
        rounds: samples[i].map((s) => Math.round(s.rps)),
        cpu_rounds: cpu === undefined ? undefined : samples[i].map((s) => Math.round(s.cpuUs)),
        ...(i === 0 ? {} : { details: { round_ratios: ratios.map((r) => Number(r.toFixed(3))), stalled_rounds: stalled } }),
      };
    });
  } finally {
    await Promise.all(sessions.map(closeSessions));
  }
}

export async function run(settings) {
  let upstreams;
  let gateway;
  try {
    upstreams = await startDelayedUpstreams();
    const toml = [
      ...DELAYS.map((delay, i) => serverToml(nameOf(delay), upstreams.urls[i])),
      `[[virtual_servers]]\nname = "${VIRTUAL}"\nservers = [${DELAYS.map((d) => `"${nameOf(d)}"`).join(', ')}]\nseparator = "__"\n`,
    ].join('\n');
    gateway = await startGateway('virtual', toml);
    const lists = await compareLists(gateway.url);
    const calls = await compareCalls(gateway.url, gateway.child.pid, settings);
    return [...lists, ...calls];
  } finally {
    await stop(gateway?.child);
    await stop(upstreams?.child);
  }
}
