/**
 * Tool integrity against a server that pulls the rug (issue 21, docs/tool-integrity.md): the
 * fixture (test/fixtures/rug-pull-server.mjs) adds hidden instructions to its `weather` tool and
 * changes its `forecast` prompt after the first call, and announces both with list_changed.
 * A real `mcp-guard serve`, pins written by a real `mcp-guard pin`, the official SDK client.
 *
 *   - block: the changed tool and prompt disappear from the lists, and their calls are refused
 *     and never reach the server, even from a client that never listed again (its old list);
 *     a tool the server does not list is refused by name; the change is audited and counted
 *     once however many lists show it; a 2026-07-28 request is refused the same way;
 *     `pin --approve` plus a reload restores the tool; a pin file that cannot be used refuses a
 *     reload and the pins in force stay;
 *   - warn: the same change is only recorded;
 *   - trust on first use: no pin file, tools pinned as first listed (written to the file), a
 *     later change caught;
 *   - a virtual server hides the changed member tool and refuses its namespaced call.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { tempDir, trackProcesses, writeConfig } from '../helpers/cli.js';
import { auditTable, ReloadGateway, sdkClient, serverTable, textOf, waitFor } from '../reload/helpers.js';
import { callsOf, integrityTable, modernPost, pinCli, readJson, rugPullServer } from './helpers.js';

const { running, mark } = trackProcesses();

function definitionEvents(gw: ReloadGateway): Array<Record<string, any>> {
  return gw.audit().filter((l) => l['event_type'] === 'tool_definition_changed');
}

describe('tool integrity: a server that changes its tool after review', () => {
  it('block: the changed tool is hidden and refused (never reaching the server) until approved and reloaded', { timeout: 120_000 }, async () => {
    const m = mark('integrity-block');
    const dir = tempDir();
    const pins = `${dir}/pins.json`;
    const toml = (audit: string) => serverTable() + auditTable(audit) + integrityTable('block', pins) + rugPullServer('fx', dir, m);

    // The pins, from the command an operator runs (and reviews in CI).
    const pinned = await pinCli(writeConfig(toml(`${dir}/pin-audit.log`)));
    expect(pinned.code, pinned.stderr).toBe(0);
    expect(pinned.stdout).toContain('fx: 2 tools, 1 prompt');
    const file = readJson(pins);
    expect(Object.keys(file.servers.fx.tools)).toEqual(['stable', 'weather']);
    expect(file.servers.fx.tools.weather.definition.description).toBe('The weather in a city.');
    expect(file.servers.fx.tools.weather.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(Object.keys(file.servers.fx.prompts)).toEqual(['forecast']);
    expect(callsOf(dir)).toEqual([]);

    const gw = new ReloadGateway(toml, { running });
    const base = await gw.ready();
    const { client } = await sdkClient(`${base}/mcp/fx`);
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['weather', 'stable']);
    expect(textOf(await client.callTool({ name: 'weather', arguments: { city: 'Oslo' } }))).toBe('sunny in Oslo');
    expect(callsOf(dir)).toEqual(['tools/call weather']);

    // The rug is pulled (hidden instructions, list_changed). This client holds its old list and
    // calls again without listing: refused, and the server never sees the call.
    await expect(client.callTool({ name: 'weather', arguments: { city: 'Oslo' } })).rejects.toThrow(
      /Tool "weather" of server "fx" awaits approval: its definition changed since it was pinned/,
    );
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['stable']);
    expect((await client.listPrompts()).prompts.map((p) => p.name)).toEqual([]);
    await expect(client.getPrompt({ name: 'forecast', arguments: { city: 'Oslo' } })).rejects.toThrow(/Prompt "forecast" of server "fx" awaits approval/);
    // An attacker calling by name what the server answers but never lists.
    await expect(client.callTool({ name: 'hidden', arguments: {} })).rejects.toThrow(/its server does not list it/);
    // A 2026-07-28 client (translated to the legacy server) is refused the same way.
    const modern = await modernPost(`${base}/mcp/fx`, 'tools/call', { name: 'weather', arguments: { city: 'Oslo' } }, 'weather');
    expect(modern.json?.error?.message).toMatch(/awaits approval/);
    const modernList = await modernPost(`${base}/mcp/fx`, 'tools/list', {});
    expect(modernList.json.result.tools.map((t: { name: string }) => t.name)).toEqual(['stable']);
    expect(textOf(await client.callTool({ name: 'stable', arguments: {} }))).toBe('stable');
    expect(callsOf(dir)).toEqual(['tools/call weather', 'tools/call stable']);

    // Audited and counted once, whatever the number of lists that showed the change.
    for (let i = 0; i < 5; i++) await client.listTools();
    await waitFor(() => definitionEvents(gw).length >= 2, 10_000, 'the tool_definition_changed lines');
    const events = definitionEvents(gw);
    expect(events).toHaveLength(2);
    const tool = events.find((e) => e['definition'].kind === 'tool')!;
    expect(tool).toMatchObject({ server: 'fx', tool: 'weather', reason: 'changed', success: false });
    expect(tool['definition']).toMatchObject({
      name: 'weather',
      result: 'changed',
      fields: ['description'],
      old_sha256: file.servers.fx.tools.weather.sha256,
      mode: 'block',
    });
    expect(tool['definition'].new_sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(events.find((e) => e['definition'].kind === 'prompt')!['definition']).toMatchObject({ name: 'forecast', fields: ['description'] });
    expect(await gw.metric('mcp_guard_tool_integrity_total', { server: 'fx', result: 'changed' })).toBe(2);
    expect(await gw.metric('mcp_guard_tool_integrity_total', { server: 'fx', result: 'refused' })).toBe(4);
    const refusals = gw.audit().filter((l) => l['event_type'] === 'authz_denied' && String(l['reason']).startsWith('tool integrity'));
    expect(refusals.map((l) => l['reason'])).toEqual([
      'tool integrity: changed',
      'tool integrity: changed',
      'tool integrity: unlisted',
      'tool integrity: changed',
    ]);

    // An operator reviews the change and approves it; a reload makes the gateway read the pins again.
    const approved = await pinCli(gw.path, '--approve', 'fx:weather');
    expect(approved.code, approved.stderr).toBe(0);
    expect(approved.stdout).toContain('fx: tool weather approved (changed)\n');
    expect(readJson(pins).servers.fx.tools.weather.definition.description).toContain('<IMPORTANT>');
    expect(readJson(pins).servers.fx.tools.stable).toEqual(file.servers.fx.tools.stable);
    const reload = await gw.reload(toml);
    expect(reload['msg']).toMatch(/^config reloaded/);
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['weather', 'stable']);
    expect(textOf(await client.callTool({ name: 'weather', arguments: { city: 'Bergen' } }))).toBe('sunny in Bergen');
    expect(callsOf(dir).at(-1)).toBe('tools/call weather');

    // A pin file that cannot be used refuses the reload: the pins in force stay.
    writeFileSync(pins, '{ "version": 1, "servers": ');
    const refused = await gw.reload(toml);
    expect(refused['msg']).toBe('config reload refused: the running config stays');
    expect(String(refused['reason'])).toContain('not valid JSON');
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['weather', 'stable']);
    await client.close();
  });

  it('warn: the change is audited and counted once, and nothing is hidden or refused', { timeout: 90_000 }, async () => {
    const m = mark('integrity-warn');
    const dir = tempDir();
    const pins = `${dir}/pins.json`;
    const toml = (audit: string) => serverTable() + auditTable(audit) + integrityTable('warn', pins) + rugPullServer('fx', dir, m);
    expect((await pinCli(writeConfig(toml(`${dir}/pin-audit.log`)))).code).toBe(0);
    const gw = new ReloadGateway(toml, { running });
    const base = await gw.ready();
    const { client } = await sdkClient(`${base}/mcp/fx`);
    await client.listTools();
    await client.callTool({ name: 'weather', arguments: { city: 'Oslo' } });
    expect(textOf(await client.callTool({ name: 'weather', arguments: { city: 'Rome' } }))).toBe('sunny in Rome');
    for (let i = 0; i < 3; i++) expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['weather', 'stable']);
    expect(callsOf(dir)).toEqual(['tools/call weather', 'tools/call weather']);
    await waitFor(() => definitionEvents(gw).length >= 1, 10_000, 'the tool_definition_changed line');
    expect(definitionEvents(gw).map((e) => [e['tool'], e['definition'].result, e['definition'].mode])).toEqual([['weather', 'changed', 'warn']]);
    expect(await gw.metric('mcp_guard_tool_integrity_total', { server: 'fx', result: 'changed' })).toBe(1);
    expect(await gw.metric('mcp_guard_tool_integrity_total', { server: 'fx', result: 'refused' })).toBe(0);
    await client.close();
  });

  it('trust on first use: tools are pinned as first listed (and written), and a later change is caught', { timeout: 90_000 }, async () => {
    const m = mark('integrity-tofu');
    const dir = tempDir();
    const pins = `${dir}/pins.json`;
    const toml = (audit: string) =>
      serverTable() + auditTable(audit) + integrityTable('block', pins, 'trust_on_first_use = true') + rugPullServer('fx', dir, m);
    const gw = new ReloadGateway(toml, { running });
    const base = await gw.ready();
    const { client } = await sdkClient(`${base}/mcp/fx`);
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['weather', 'stable']);
    await waitFor(() => existsSync(pins) && readJson(pins).servers?.fx?.tools?.weather !== undefined, 10_000, 'the pins made on first use in the file');
    expect(readJson(pins).servers.fx.tools.weather.definition.description).toBe('The weather in a city.');
    expect(await gw.metric('mcp_guard_tool_integrity_total', { server: 'fx', result: 'trusted' })).toBe(2);
    await client.callTool({ name: 'weather', arguments: { city: 'Oslo' } });
    await expect(client.callTool({ name: 'weather', arguments: { city: 'Oslo' } })).rejects.toThrow(/awaits approval/);
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['stable']);
    // The first definition stays the pin: the change was not trusted.
    expect(readJson(pins).servers.fx.tools.weather.definition.description).toBe('The weather in a city.');
    expect(callsOf(dir)).toEqual(['tools/call weather']);
    await client.close();
  });

  it('a virtual server hides the changed member tool and refuses its namespaced call', { timeout: 90_000 }, async () => {
    const m = mark('integrity-virtual');
    const dir = tempDir();
    const pins = `${dir}/pins.json`;
    const virtual = `[[virtual_servers]]\nname = "ws"\nservers = ["fx"]\n`;
    const toml = (audit: string) => serverTable() + auditTable(audit) + integrityTable('block', pins) + rugPullServer('fx', dir, m) + virtual;
    expect((await pinCli(writeConfig(toml(`${dir}/pin-audit.log`)))).code).toBe(0);
    // The pins are per real server and tool: the virtual server has none of its own.
    expect(Object.keys(readJson(pins).servers)).toEqual(['fx']);
    const gw = new ReloadGateway(toml, { running });
    const base = await gw.ready();
    const { client } = await sdkClient(`${base}/mcp/ws`);
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['fx__weather', 'fx__stable']);
    expect(textOf(await client.callTool({ name: 'fx__weather', arguments: { city: 'Oslo' } }))).toBe('sunny in Oslo');
    await expect(client.callTool({ name: 'fx__weather', arguments: { city: 'Oslo' } })).rejects.toThrow(/Tool "fx__weather" of server "fx" awaits approval/);
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['fx__stable']);
    expect((await client.listPrompts()).prompts.map((p) => p.name)).toEqual([]);
    expect(callsOf(dir)).toEqual(['tools/call weather']);
    await waitFor(() => definitionEvents(gw).length >= 1, 10_000, 'the tool_definition_changed line');
    expect(definitionEvents(gw)[0]).toMatchObject({ server: 'fx', tool: 'weather' });
    await client.close();
  });
});
