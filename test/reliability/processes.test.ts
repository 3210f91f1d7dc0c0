/**
 * No process left behind, measured: `mcp-guard serve` as a real process with stdio children that
 * die over and over, and a wrapper whose grandchildren must end with it.
 *
 * Crash/restart cycles: RELIABILITY_CYCLES, default 200 in `npm test` (about 15 ms per cycle on an
 * idle machine, many times that on a busy one); `npm run reliability` runs 1,000. Every cycle is a
 * real tools/call answered by the child, then the child ends (it exits by itself after answering,
 * or the test SIGKILLs it), then the gateway's restart is seen in /ready.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CliProcess, leftovers, trackProcesses, NODE, processesWith, q, tempDir, waitFor } from '../helpers/cli.js';
import { writeFlappingServer, writeWrapperTree } from './fixtures.js';
import { childrenOf, metric, openFds, postJson, ready, serveConfig, sleep, toolCall } from './helpers.js';

const CYCLES = Number(process.env['RELIABILITY_CYCLES'] ?? 200);

const { running, mark } = trackProcesses();

function serve(toml: string, dir?: string): CliProcess {
  const p = serveConfig(toml, dir);
  running.push(p);
  return p;
}

describe('crash/restart cycles of a stdio child', () => {
  it(`${CYCLES} cycles (child exits after answering, or is SIGKILLed): every call answered, every restart counted, no process or descriptor left behind`, async () => {
    const m = mark('flap');
    const dir = tempDir();
    const gw = serve(
      `[server]\nshutdown_grace_ms = 2000\n\n[audit]\nfile = ${q(join(dir, 'audit.log'))}\n\n` +
        `[[upstream.servers]]\nname = "flap"\npath_prefix = "/flap"\ntransport = "stdio"\ncommand = "sh"\nargs = [${q(writeFlappingServer(dir))}, ${q(m)}]\n` +
        `restart_backoff_ms = 1\nrestart_backoff_max_ms = 1\nmax_restarts = 1000000000\ntimeout_ms = 10000\nstartup_timeout_ms = 10000\n`,
      dir,
    );
    const base = await gw.address();
    await waitFor(async () => (await ready(base)).status === 200, 10_000, '/ready');
    const fdsBefore = openFds(gw.pid);
    const url = `${base}/mcp/flap`;
    const seen = new Set<number>();
    const started = performance.now();
    const deadline = started + Number(process.env['RELIABILITY_DEADLINE_MS'] ?? 150_000);
    let exitedByItself = 0;
    let killed = 0;
    for (let i = 0; i < CYCLES; i++) {
      const exits = i % 2 === 0;
      const r = await postJson(url, toolCall(i + 1, exits ? 'answer_then_exit' : 'answer'));
      expect(r.status, `cycle ${i}: ${r.text}`).toBe(200);
      const pid = Number(/^pid (\d+)$/.exec(r.json?.result?.content?.[0]?.text ?? '')?.[1]);
      expect(pid, `cycle ${i}: ${r.text}`).toBeGreaterThan(0);
      expect(seen.has(pid), `cycle ${i}: pid ${pid} answered twice`).toBe(false);
      seen.add(pid);
      if (exits) exitedByItself++;
      else {
        process.kill(pid, 'SIGKILL'); // the gateway's current child, which carries our marker
        killed++;
      }
      // The gateway has noticed the end and started (and initialized) the next child.
      for (;;) {
        const { status, body } = await ready(base);
        if (status === 200 && body.servers[0].restarts === i + 1) break;
        if (performance.now() > deadline) throw new Error(`cycle ${i}: no restart seen before the deadline: ${JSON.stringify(body)}`);
        await sleep(2);
      }
      if ((i + 1) % 100 === 0) {
        // The current child is the only process of the marker, and the gateway's only child.
        const alive = processesWith(m);
        expect(alive, `after ${i + 1} cycles`).toHaveLength(1);
        expect(seen.has(alive[0]!.pid)).toBe(false);
        expect(childrenOf(gw.pid).map((c) => c.pid)).toEqual([alive[0]!.pid]);
      }
    }
    const elapsed = performance.now() - started;
    const restarts = await metric(base, 'mcp_guard_upstream_restarts_total{server="flap"}');
    const alive = processesWith(m);
    const children = childrenOf(gw.pid);
    const fdsAfter = openFds(gw.pid);
    console.log(
      `${CYCLES} crash/restart cycles (${exitedByItself} exits, ${killed} SIGKILLs) in ${Math.round(elapsed)} ms ` +
        `(${(elapsed / CYCLES).toFixed(1)} ms per cycle): restarts_total ${restarts}, marker processes alive ${alive.length}, ` +
        `gateway children ${children.length} (${children.filter((c) => c.stat.startsWith('Z')).length} zombies), fds ${fdsBefore} -> ${fdsAfter}`,
    );
    expect(restarts).toBe(CYCLES);
    expect(alive).toHaveLength(1);
    expect(children).toHaveLength(1);
    expect(children[0]!.stat).not.toMatch(/^Z/);
    expect(children[0]!.pid).toBe(alive[0]!.pid);
    // The pipes of every dead child (CYCLES of them) are closed: the descriptor count does not grow with the cycles.
    expect(fdsAfter).toBeLessThanOrEqual(fdsBefore + 5);

    const sentAt = gw.signal('SIGTERM');
    const exit = await gw.waitExit(10_000);
    expect(exit).toMatchObject({ code: 0, signal: null });
    console.log(`SIGTERM after the cycles: exit 0 after ${Math.round(exit.at - sentAt)} ms`);
    expect(await leftovers(m)).toEqual([]);
    const audit = readFileSync(join(dir, 'audit.log'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { event_type: string });
    expect(audit.filter((e) => e.event_type === 'upstream_restart')).toHaveLength(CYCLES);
    expect(audit.filter((e) => e.event_type === 'tool_call')).toHaveLength(CYCLES);
    expect(audit.at(-1)?.event_type).toBe('gateway_stop');
  }, 300_000);
});

describe('a wrapper that spawns grandchildren (like npx -> sh -> node)', () => {
  /** outer sh -> inner sh -> node server (holds the pipes), and outer sh -> node helper (holds none). */
  function wrapped(label: string, stubborn = false) {
    const m = mark(label);
    const dir = tempDir();
    const outer = writeWrapperTree(dir, NODE, 20, stubborn);
    const gw = serve(
      `[server]\nshutdown_grace_ms = 3000\n\n[[upstream.servers]]\nname = "wrapped"\npath_prefix = "/wrapped"\ntransport = "stdio"\n` +
        `command = "sh"\nargs = [${q(outer)}, ${q(m)}]\nrestart_backoff_ms = 100\n`,
      dir,
    );
    return { m, gw };
  }

  /** The four processes of one tree: outer sh, inner sh, the server, the background helper. */
  function tree(m: string, gatewayPid: number) {
    const rows = processesWith(m);
    const outer = rows.find((r) => r.ppid === gatewayPid);
    return { rows, outer, server: rows.find((r) => r.args.includes('slow-server.mjs')), helper: rows.find((r) => r.args.includes(`bg-${m}`)) };
  }

  it('SIGTERM of the gateway: exit 0, none of the wrapper, its grandchildren or the background helper remains', async () => {
    const { m, gw } = wrapped('wrap-term');
    const base = await gw.address();
    await waitFor(async () => (await ready(base)).status === 200, 15_000, '/ready');
    const t = tree(m, gw.pid);
    expect(t.rows, JSON.stringify(t.rows)).toHaveLength(4);
    expect(t.outer && t.server && t.helper, JSON.stringify(t.rows)).toBeTruthy();
    const r = await postJson(`${base}/mcp/wrapped`, toolCall(1, 'slow', { tag: 'a' }));
    expect(r.json?.result?.content?.[0]?.text, r.text).toBe('slow answer a');
    const sentAt = gw.signal('SIGTERM');
    const exit = await gw.waitExit(10_000);
    console.log(`wrapper tree (4 processes), SIGTERM of the gateway: exit ${exit.code} after ${Math.round(exit.at - sentAt)} ms`);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(await leftovers(m)).toEqual([]);
  });

  for (const stubborn of [false, true]) {
    const what = stubborn ? 'a stubborn server (ignores the end of stdin and SIGTERM, keeps the pipes)' : 'a server that exits when its stdin ends';
    it(`the wrapper alone crashes (SIGKILL), with ${what}: its descendants end, the server is restarted, SIGTERM later leaves nothing`, async () => {
      const { m, gw } = wrapped(stubborn ? 'wrap-stubborn' : 'wrap-crash', stubborn);
      const base = await gw.address();
      await waitFor(async () => (await ready(base)).status === 200, 15_000, '/ready');
      const first = tree(m, gw.pid);
      expect(first.rows, JSON.stringify(first.rows)).toHaveLength(4);
      process.kill(first.outer!.pid, 'SIGKILL'); // only the wrapper: the inner sh, the server and the helper live on
      const killedAt = performance.now();
      const firstPids = new Set(first.rows.map((r) => r.pid));
      // The orphans are ended with their group, not left to init: at once when the pipes close,
      // at most STRAGGLER_GRACE_MS (2 s) after the wrapper's exit when a descendant keeps them open.
      await waitFor(() => !processesWith(m).some((r) => firstPids.has(r.pid)), 6_000, 'the orphaned descendants to end');
      const orphansGoneMs = Math.round(performance.now() - killedAt);
      await waitFor(
        async () => {
          const { status, body } = await ready(base);
          return status === 200 && body.servers[0].restarts === 1;
        },
        15_000,
        'the restart',
      );
      const second = tree(m, gw.pid);
      console.log(
        `wrapper SIGKILLed alone, ${stubborn ? 'stubborn' : 'polite'} server: its 3 descendants gone after ${orphansGoneMs} ms; restarted with a new tree of ${second.rows.length}`,
      );
      // Time is the behaviour: polite ones before STRAGGLER_GRACE_MS (2 s) could run out, stubborn ones at it, with 3 s of slack.
      expect(orphansGoneMs).toBeLessThan(stubborn ? 2_000 + 3_000 : 2_000);
      expect(second.rows, JSON.stringify(second.rows)).toHaveLength(4);
      expect(second.rows.some((r) => firstPids.has(r.pid))).toBe(false);
      const r = await postJson(`${base}/mcp/wrapped`, toolCall(2, 'slow', { tag: 'b' }));
      expect(r.json?.result?.content?.[0]?.text, r.text).toBe('slow answer b');
      const sentAt = gw.signal('SIGTERM');
      const exit = await gw.waitExit(10_000);
      console.log(`  then SIGTERM of the gateway: exit ${exit.code} after ${Math.round(exit.at - sentAt)} ms`);
      expect(exit).toMatchObject({ code: 0, signal: null });
      expect(await leftovers(m)).toEqual([]);
    });
  }
});
