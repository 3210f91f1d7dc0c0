/**
 * `mcp-guard check-upstream`: every configured server (stdio, streamable HTTP, legacy SSE) gets a
 * handshake and a tools/list; one row per server; exit 0 only if all are healthy; a broken server
 * says why without hiding the healthy ones; --timeout bounds the whole run; and no child process
 * outlives the command.
 */
import { existsSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckResult } from '../../src/cli/check-upstream.js';
import { cleanupTempDirs, ensureBuilt, leftovers, NODE, q, runCli, tempDir, writeConfig } from '../helpers/cli.js';
import { testMarker } from '../helpers/concurrent-cli.js';
import { EverythingServer, freePort } from '../helpers/everything.js';
import { EVERYTHING } from '../helpers/gateway.js';

type Row = CheckResult;

let http: EverythingServer;
let sse: EverythingServer;

beforeAll(async () => {
  [, http, sse] = await Promise.all([ensureBuilt(), EverythingServer.start('streamableHttp'), EverythingServer.start('sse')]);
}, 120_000);

afterAll(async () => {
  await Promise.all([http?.stop(), sse?.stop()]);
  cleanupTempDirs();
});

/**
 * A marker for the processes of one test. Most tests run concurrently (each runs the command on a
 * config of its own, its processes carrying its own marker): once this test is over, whatever a
 * failed assertion left running with its marker is ended (by pid), so tests stay independent.
 * Those that bound the command's run time (--timeout 2) run one after the other, alone, as
 * before: the bound's slack is for a busy machine, not for the other tests of this file.
 */
const mark = testMarker;

function stdioServer(name: string, command: string, args: string[], extra = ''): string {
  return `[[upstream.servers]]\nname = ${q(name)}\npath_prefix = ${q(`/${name}`)}\ntransport = "stdio"\ncommand = ${q(command)}\nargs = [${args.map(q).join(', ')}]\n${extra}\n`;
}

function urlServer(name: string, transport: 'http' | 'sse', url: string): string {
  return `[[upstream.servers]]\nname = ${q(name)}\npath_prefix = ${q(`/${name}`)}\ntransport = ${q(transport)}\nurl = ${q(url)}\n`;
}

function healthy(stdioMarker: string): string {
  return [stdioServer('local', NODE, [EVERYTHING, 'stdio', stdioMarker]), urlServer('remote', 'http', http.url), urlServer('legacy', 'sse', sse.url)].join(
    '\n',
  );
}

/** Parses the table: the header, then one row per server. */
function tableRows(stdout: string): Array<Record<string, string>> {
  const lines = stdout.trimEnd().split('\n');
  const header = lines[0]!.split(/\s{2,}/);
  expect(header).toEqual(['NAME', 'TRANSPORT', 'ERA', 'STATUS', 'LATENCY', 'TOOLS', 'DETAIL']);
  const starts = header.map((h) => lines[0]!.indexOf(h));
  return lines.slice(1).map((line) => {
    const row: Record<string, string> = {};
    header.forEach((h, i) => (row[h] = line.slice(starts[i], starts[i + 1] ?? undefined).trim()));
    return row;
  });
}

describe.concurrent('check-upstream', () => {
  it('all healthy (stdio, http, sse): exit 0, one row each with its tools, as a table', async (context) => {
    const m = mark('healthy-table', context);
    const r = await runCli(['check-upstream', '-c', writeConfig(healthy(m)), '--timeout', '20']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const rows = tableRows(r.stdout);
    expect(rows.map((row) => [row['NAME'], row['TRANSPORT'], row['ERA'], row['STATUS']])).toEqual([
      ['local', 'stdio', 'legacy 2025-11-25', 'ok'],
      ['remote', 'http', 'legacy 2025-11-25', 'ok'],
      ['legacy', 'sse', 'legacy 2024-11-05', 'ok'],
    ]);
    for (const row of rows) {
      expect(Number(row['TOOLS'])).toBeGreaterThan(0);
      expect(row['LATENCY']).toMatch(/^\d+ ms$/);
      expect(row['DETAIL']).toBe('');
    }
    expect(await leftovers(m)).toEqual([]);
  });

  it('all healthy, --json: the same rows as JSON', async (context) => {
    const m = mark('healthy-json', context);
    const r = await runCli(['check-upstream', '-c', writeConfig(healthy(m)), '--json']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout) as Row[];
    expect(rows.map((row) => [row.name, row.transport, row.ok, row.error])).toEqual([
      ['local', 'stdio', true, null],
      ['remote', 'http', true, null],
      ['legacy', 'sse', true, null],
    ]);
    for (const row of rows) {
      expect(row.tools).toBeGreaterThan(0);
      expect(row.latency_ms).toBeGreaterThanOrEqual(0);
      expect(row.era).toBe('legacy');
      expect(Date.parse(row.era_decided_at!)).toBeGreaterThan(Date.now() - 60_000);
    }
    expect(rows.map((row) => row.protocol_version)).toEqual(['2025-11-25', '2025-11-25', '2024-11-05']);
    // Over stdio the gateway declares sampling, elicitation and roots, so server-everything adds
    // the tools that use them: never fewer tools than over http/sse.
    expect(rows[0]!.tools).toBeGreaterThanOrEqual(Math.max(rows[1]!.tools!, rows[2]!.tools!));
    expect(await leftovers(m)).toEqual([]);
  });

  it('broken servers: exit 1, each says why, the healthy rows are still ok', async (context) => {
    const m = mark('broken', context);
    const deadPort = await freePort();
    const config = [
      healthy(m),
      stdioServer('dies', NODE, ['-e', 'process.exit(3)', m]),
      urlServer('nothing_there', 'http', `http://127.0.0.1:${deadPort}/mcp`),
      urlServer('nothing_there_sse', 'sse', `http://127.0.0.1:${deadPort}/sse`),
      stdioServer('no_such_command', `/nonexistent/${m}`, []),
    ].join('\n');
    const path = writeConfig(config);

    const json = await runCli(['check-upstream', '-c', path, '--json', '--timeout', '20']);
    expect(json.code, json.stdout + json.stderr).toBe(1);
    const rows = JSON.parse(json.stdout) as Row[];
    const byName = Object.fromEntries(rows.map((row) => [row.name, row]));
    expect(rows.map((row) => row.name)).toEqual(['local', 'remote', 'legacy', 'dies', 'nothing_there', 'nothing_there_sse', 'no_such_command']);
    for (const name of ['local', 'remote', 'legacy']) {
      expect(byName[name], name).toMatchObject({ ok: true, error: null });
      expect(byName[name]!.tools).toBeGreaterThan(0);
    }
    for (const name of ['dies', 'nothing_there', 'nothing_there_sse', 'no_such_command']) {
      expect(byName[name], name).toMatchObject({ ok: false, tools: null });
    }
    // The era is known where the server answered the probe, or could not have been asked (sse).
    expect(byName['nothing_there']).toMatchObject({ era: null, protocol_version: null, era_decided_at: null });
    expect(byName['nothing_there_sse']).toMatchObject({ era: 'legacy', protocol_version: null });
    expect(byName['dies']!.error).toMatch(/'dies'.*exited \(code 3\)/);
    expect(byName['nothing_there']!.error).toMatch(/Failed to connect to 'nothing_there'/);
    expect(byName['nothing_there_sse']!.error).toMatch(/Failed to connect to 'nothing_there_sse'/);
    expect(byName['no_such_command']!.error).toMatch(/Failed to start 'no_such_command'.*ENOENT/);

    const table = await runCli(['check-upstream', '-c', path, '--timeout', '20']);
    expect(table.code).toBe(1);
    const status = Object.fromEntries(tableRows(table.stdout).map((row) => [row['NAME'], row]));
    expect(status['local']!['STATUS']).toBe('ok');
    expect(status['remote']!['STATUS']).toBe('ok');
    expect(status['legacy']!['STATUS']).toBe('ok');
    expect(status['dies']!['STATUS']).toBe('error');
    expect(status['dies']!['TOOLS']).toBe('-');
    expect(status['nothing_there']!['DETAIL']).toMatch(/^Failed to connect to 'nothing_there'/);
    expect(await leftovers(m)).toEqual([]);
  });

  describe('a 2026-07-28 server (the v2 SDK fixture)', () => {
    const FIXTURE = new URL('../fixtures/modern-server.mjs', import.meta.url).pathname;
    let modern: { pid: number; url: string; stop: () => Promise<void> };
    beforeAll(async () => {
      const { spawn } = await import('node:child_process');
      const child = spawn(NODE, [FIXTURE, 'http', '0', '--modern-only'], { stdio: ['ignore', 'pipe', 'ignore'] });
      const port = await new Promise<number>((resolve, reject) => {
        let out = '';
        child.stdout!.on('data', (chunk: Buffer) => {
          out += chunk.toString('utf8');
          const match = /listening (\d+)/.exec(out);
          if (match) resolve(Number(match[1]));
        });
        child.once('exit', () => reject(new Error('the fixture exited')));
      });
      modern = {
        pid: child.pid!,
        url: `http://127.0.0.1:${port}/mcp`,
        stop: async () => {
          if (child.exitCode !== null || child.signalCode !== null) return;
          const exited = new Promise((resolve) => child.once('exit', resolve));
          process.kill(child.pid!, 'SIGTERM');
          await exited;
        },
      };
    });
    afterAll(async () => {
      await modern?.stop();
    });

    it('is found modern over stdio and http and listed without a session; a configured era is shown as such', async (context) => {
      const m = mark('modern', context);
      const config = [
        stdioServer('modern_stdio', NODE, [FIXTURE, 'stdio', '--modern-only', m]),
        urlServer('modern_http', 'http', modern.url),
        stdioServer('dual_as_legacy', NODE, [FIXTURE, 'stdio', m], 'era = "legacy"'),
      ].join('\n');
      const path = writeConfig(config);
      const json = await runCli(['check-upstream', '-c', path, '--json', '--timeout', '20']);
      expect(json.code, json.stdout + json.stderr).toBe(0);
      const rows = JSON.parse(json.stdout) as Row[];
      expect(rows.map((row) => [row.name, row.era, row.protocol_version, row.ok, row.tools])).toEqual([
        ['modern_stdio', 'modern', '2026-07-28', true, 6],
        ['modern_http', 'modern', '2026-07-28', true, 6],
        ['dual_as_legacy', 'legacy', '2025-11-25', true, 6],
      ]);
      const table = await runCli(['check-upstream', '-c', path, '--timeout', '20']);
      expect(table.code).toBe(0);
      expect(tableRows(table.stdout).map((row) => row['ERA'])).toEqual(['modern 2026-07-28', 'modern 2026-07-28', 'legacy 2025-11-25']);
      expect(await leftovers(m)).toEqual([]);
    });
  });

  it.sequential('--timeout 2 with a stdio server that never answers: exit 1 in bounded time, nothing left running', async (context) => {
    const m = mark('silent', context);
    const config = [stdioServer('silent', NODE, ['-e', 'setInterval(() => {}, 1000)', m]), urlServer('remote', 'http', http.url)].join('\n');
    const r = await runCli(['check-upstream', '-c', writeConfig(config), '--timeout', '2', '--json'], { timeoutMs: 15_000 });
    console.log(`check-upstream --timeout 2 (silent stdio server): ${r.durationMs} ms`);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    // The deadline is the behaviour: --timeout 2, plus wide slack for the CLI's own start-up on a busy machine
    // (7.4 s seen in all under a load of 22), far below the default --timeout of 30 s.
    expect(r.durationMs).toBeGreaterThanOrEqual(2_000);
    expect(r.durationMs).toBeLessThan(2_000 + 10_000);
    const rows = JSON.parse(r.stdout) as Row[];
    expect(rows[0]).toMatchObject({ name: 'silent', ok: false, tools: null });
    expect(rows[0]!.error).toMatch(/'silent'.*2000 ms/);
    expect(rows[0]!.latency_ms).toBeGreaterThanOrEqual(1_900);
    expect(rows[1]).toMatchObject({ name: 'remote', ok: true });
    expect(await leftovers(m)).toEqual([]);
  });

  it.sequential('--timeout 2 with a silent tree that ignores SIGTERM (sh -> node): still bounded, the whole tree ends', async (context) => {
    const m = mark('stubborn', context);
    // The grandchild ignores SIGTERM and holds the pipes open: only SIGKILL to the group ends it.
    const script = `${q(NODE)} -e 'process.on("SIGTERM", () => {}); setInterval(() => {}, 1000)' ${m} & wait`;
    const r = await runCli(['check-upstream', '-c', writeConfig(stdioServer('stubborn', 'sh', ['-c', script])), '--timeout', '2'], { timeoutMs: 15_000 });
    console.log(`check-upstream --timeout 2 (SIGTERM-ignoring tree): ${r.durationMs} ms`);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    // 2 s --timeout + 2 s for the group to go after SIGTERM before SIGKILL + process start-up (slow under load).
    expect(r.durationMs).toBeLessThan(2_000 + 2_000 + 8_000);
    expect(tableRows(r.stdout)[0]!['STATUS']).toBe('error');
    expect(tableRows(r.stdout)[0]!['DETAIL']).toMatch(/'stubborn' did not answer within 2000 ms/);
    expect(await leftovers(m)).toEqual([]);
  });

  it.sequential('a wrapper that exits at once, leaving a grandchild that holds its pipes: reported long before --timeout', async (context) => {
    const m = mark('orphan', context);
    const script = `${q(NODE)} -e 'setInterval(() => {}, 1000)' ${m} & exit 3`;
    const r = await runCli(['check-upstream', '-c', writeConfig(stdioServer('orphaning', 'sh', ['-c', script])), '--timeout', '20', '--json'], {
      timeoutMs: 25_000,
    });
    console.log(`check-upstream (wrapper exits, grandchild keeps the pipes): ${r.durationMs} ms`);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    // "Long before --timeout" is the behaviour: well inside its 20 s.
    expect(r.durationMs).toBeLessThan(20_000 / 2);
    const rows = JSON.parse(r.stdout) as Row[];
    expect(rows[0]).toMatchObject({ name: 'orphaning', ok: false });
    expect(rows[0]!.error).toMatch(/'orphaning' exited \(code 3\)/);
    expect(await leftovers(m)).toEqual([]);
  });

  describe.sequential('an http server that accepts connections and never answers', () => {
    let server: Server;
    let port: number;
    const sockets = new Set<Socket>();
    beforeAll(async () => {
      server = createServer((socket) => {
        sockets.add(socket);
        socket.on('error', () => undefined);
        socket.on('close', () => sockets.delete(socket));
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as { port: number }).port;
    });
    afterAll(async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    });

    it.each(['http', 'sse'] as const)('%s: --timeout 2 ends the check in bounded time', async (transport) => {
      const path = transport === 'sse' ? '/sse' : '/mcp';
      const r = await runCli(
        ['check-upstream', '-c', writeConfig(urlServer('mute', transport, `http://127.0.0.1:${port}${path}`)), '--timeout', '2', '--json'],
        {
          timeoutMs: 15_000,
        },
      );
      console.log(`check-upstream --timeout 2 (mute ${transport} server): ${r.durationMs} ms`);
      expect(r.code, r.stdout + r.stderr).toBe(1);
      // The deadline is the behaviour: --timeout 2, plus wide slack for the CLI's own start-up on a busy machine
      // (far below the default --timeout of 30 s).
      expect(r.durationMs).toBeLessThan(2_000 + 10_000);
      const rows = JSON.parse(r.stdout) as Row[];
      expect(rows[0]).toMatchObject({ name: 'mute', ok: false, tools: null });
      expect(rows[0]!.error).toMatch(/mute/);
    });
  });

  it('an invalid config: exit 1, the key path on stderr, nothing started', async (context) => {
    const m = mark('invalid', context);
    const started = join(tempDir(), 'started');
    const child = `require("fs").writeFileSync(${JSON.stringify(started)}, "yes"); setInterval(() => {}, 1000)`;
    const config = `${stdioServer('a', NODE, ['-e', child, m])}\n[[upstream.servers]]\nname = "b"\npath_prefix = "/b"\ntransport = "http"\n`;
    const r = await runCli(['check-upstream', '-c', writeConfig(config)]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('upstream.servers[1].url: required for transport "http"');
    expect(existsSync(started)).toBe(false);
    expect(await leftovers(m, 0)).toEqual([]);
  });

  it('the wrong transport or path: each row says what is likely wrong, not a bare HTTP status', async () => {
    const base = (url: string) => url.slice(0, url.lastIndexOf('/'));
    const config = [
      // An SSE server configured as streamable HTTP.
      urlServer('sse_as_http', 'http', sse.url),
      // A streamable HTTP server configured as SSE.
      urlServer('http_as_sse', 'sse', http.url),
      // The right transport, a path where nothing is served.
      urlServer('wrong_path', 'http', `${base(http.url)}/nothing-here`),
      urlServer('wrong_path_sse', 'sse', `${base(sse.url)}/nothing-here`),
    ].join('\n');
    const r = await runCli(['check-upstream', '-c', writeConfig(config), '--json', '--timeout', '20']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const byName = Object.fromEntries((JSON.parse(r.stdout) as Row[]).map((row) => [row.name, row]));
    for (const row of Object.values(byName)) expect(row, row.name).toMatchObject({ ok: false, tools: null });
    expect(byName['sse_as_http']!.error).toMatch(/is this an SSE server\? try transport = "sse"/);
    expect(byName['http_as_sse']!.error).toMatch(/is this a streamable HTTP server\? try transport = "http"/);
    expect(byName['wrong_path']!.error).toMatch(/HTTP 404.*check the url's path/);
    expect(byName['wrong_path_sse']!.error).toMatch(/HTTP 404.*check the url's path/);
  });
});
