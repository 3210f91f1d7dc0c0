/**
 * A call that comes before any list (issue 21): the gateway does not know the tool's current
 * definition, so in block mode it lists the server first, through the call's own way to it
 * (docs/tool-integrity.md). Tested where no client lists at all:
 *
 *   - a gateway started after the rug was pulled: a session-less (curl) call of the changed tool
 *     is refused and never reaches the server; an unchanged tool's call goes through; both for a
 *     2026-07-28 client too (translated to the legacy server);
 *   - a 2026-07-28 server (test/fixtures/modern-server.mjs, modern only) reached directly by a
 *     2026-07-28 client: the list the gateway makes carries the client's envelope, the pinned
 *     tool is called, and pins written through the gateway's legacy-shaped session match what the
 *     modern server lists (no false positive across the eras).
 */
import { writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupTempDirs, NODE, q, tempDir, writeConfig, ensureBuilt } from '../helpers/cli.js';
import { curlPost, startGateway, type RunningGateway } from '../helpers/gateway.js';
import { callsOf, fixtureFiles, integrityTable, modernPost, pinCli, rugPullServer } from './helpers.js';

const MODERN_FIXTURE = new URL('../fixtures/modern-server.mjs', import.meta.url).pathname;
const running: RunningGateway[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((g) => g.stop()));
});
afterEach(() => cleanupTempDirs());

async function gateway(toml: string): Promise<RunningGateway> {
  const gw = await startGateway(toml);
  running.push(gw);
  return gw;
}

describe('tool integrity: a call before any list', () => {
  it('a gateway started after the change refuses the changed tool at its first call, never reaching the server', { timeout: 90_000 }, async () => {
    await ensureBuilt();
    const dir = tempDir();
    const pins = `${dir}/pins.json`;
    const toml = `[server]\nmetrics = true\n` + integrityTable('block', pins) + rugPullServer('fx', dir, 'integrity-first-call');
    expect((await pinCli(writeConfig(toml))).code).toBe(0);
    // The rug is pulled while the gateway is down: it starts with the changed tool.
    writeFileSync(fixtureFiles(dir).state, JSON.stringify({ changed: true }));
    const gw = await gateway(toml);
    const call = (name: string) => curlPost(`${gw.url}/mcp/fx`, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: { city: 'Oslo' } } });
    const refused = await call('weather');
    expect(refused.json.error.message).toMatch(/Tool "weather" of server "fx" awaits approval: its definition changed since it was pinned/);
    expect(refused.json.error.data).toMatchObject({ reason: 'tool_integrity_changed', server: 'fx' });
    expect((await call('stable')).json.result.content[0].text).toBe('stable');
    const modern = await modernPost(`${gw.url}/mcp/fx`, 'tools/call', { name: 'weather', arguments: { city: 'Oslo' } }, 'weather');
    expect(modern.json.error.message).toMatch(/awaits approval/);
    const prompt = await curlPost(`${gw.url}/mcp/fx`, {
      jsonrpc: '2.0',
      id: 2,
      method: 'prompts/get',
      params: { name: 'forecast', arguments: { city: 'Oslo' } },
    });
    expect(prompt.json.error.message).toMatch(/Prompt "forecast" of server "fx" awaits approval/);
    expect(callsOf(dir)).toEqual(['tools/call stable']);
  });

  it('a 2026-07-28 client of a 2026-07-28 server: the gateway lists with its envelope, and the pinned tool is called', { timeout: 90_000 }, async () => {
    await ensureBuilt();
    const dir = tempDir();
    const pins = `${dir}/pins.json`;
    const server = `[[upstream.servers]]\nname = "modern"\npath_prefix = "/modern"\ncommand = ${q(NODE)}\nargs = [${[MODERN_FIXTURE, 'stdio', '--modern-only'].map(q).join(', ')}]\n`;
    const toml = `[server]\nmetrics = true\n` + integrityTable('block', pins) + server;
    const pinned = await pinCli(writeConfig(toml));
    expect(pinned.code, pinned.stderr).toBe(0);
    const gw = await gateway(toml);
    const url = `${gw.url}/mcp/modern`;
    const called = await modernPost(url, 'tools/call', { name: 'echo', arguments: { text: 'hi' } }, 'echo');
    expect(called.json.result.content[0].text).toBe('echo: hi');
    const listed = await modernPost(url, 'tools/list', {});
    expect(listed.json.result.tools.map((t: { name: string }) => t.name)).toEqual(expect.arrayContaining(['echo', 'add']));
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    expect(metrics).not.toMatch(/mcp_guard_tool_integrity_total\{[^}]*result="(changed|unpinned|refused)"/);
  });
});
