/**
 * Tool integrity must never flag an unchanged tool (issue 21): server-everything as a stdio child
 * and over streamable HTTP, pinned by a real `mcp-guard pin`, then listed many times through a
 * real `mcp-guard serve` in block mode by clients that declare no capability and by clients that
 * declare every one (server-everything offers more tools to those: `pin` pins them too), on
 * sessions, without one (curl) and in the 2026-07-28 era, every page: every tool and prompt stays
 * listed and callable, and nothing is audited or counted as changed.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EverythingServer } from '../helpers/everything.js';
import { tempDir, trackProcesses, writeConfig } from '../helpers/cli.js';
import { curlPost } from '../helpers/gateway.js';
import { auditTable, everything, ReloadGateway, serverTable, textOf, waitFor } from '../reload/helpers.js';
import { integrityTable, modernPost, pinCli, readJson } from './helpers.js';

const { running, mark } = trackProcesses();

let http: EverythingServer;
beforeAll(async () => {
  http = await EverythingServer.start('streamableHttp');
}, 30_000);
afterAll(async () => {
  await http?.stop();
});

async function client(url: string, asking: boolean): Promise<Client> {
  const capabilities = asking ? { sampling: {}, elicitation: { form: {}, url: {} }, roots: { listChanged: true } } : {};
  const c = new Client({ name: 'integrity-no-false-positive', version: '1.0.0' }, { capabilities });
  await c.connect(new StreamableHTTPClientTransport(new URL(url)));
  return c;
}

/** Every tool name of every page. */
async function allTools(c: Client): Promise<string[]> {
  const names: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await c.listTools(cursor === undefined ? {} : { cursor });
    names.push(...page.tools.map((t) => t.name));
    cursor = page.nextCursor;
  } while (cursor);
  return names.sort();
}

async function allPrompts(c: Client): Promise<string[]> {
  const names: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await c.listPrompts(cursor === undefined ? {} : { cursor });
    names.push(...page.prompts.map((p) => p.name));
    cursor = page.nextCursor;
  } while (cursor);
  return names.sort();
}

describe('tool integrity: no false positive on server-everything', () => {
  it('every tool and prompt stays listed and callable across many lists, and nothing is flagged', { timeout: 120_000 }, async () => {
    const m = mark('integrity-everything');
    const dir = tempDir();
    const pins = `${dir}/pins.json`;
    const httpServer = `[[upstream.servers]]\nname = "web"\npath_prefix = "/web"\nurl = "${http.url}"\n`;
    const toml = (audit: string) => serverTable() + auditTable(audit) + integrityTable('block', pins) + everything('local', m) + httpServer;
    const pinned = await pinCli(writeConfig(toml(`${dir}/pin-audit.log`)));
    expect(pinned.code, pinned.stderr).toBe(0);
    const file = readJson(pins);
    const pinnedTools = (server: string) => Object.keys(file.servers[server].tools).sort();
    // The tools offered only to a client that can be asked something are pinned too.
    expect(pinnedTools('web')).toContain('trigger-elicitation-request');
    expect(pinnedTools('web')).toContain('get-roots-list');

    const gw = new ReloadGateway(toml, { running });
    const base = await gw.ready();
    for (const server of ['local', 'web']) {
      const plain = await client(`${base}/mcp/${server}`, false);
      const asking = await client(`${base}/mcp/${server}`, true);
      const everyTool = pinnedTools(server);
      for (let i = 0; i < 10; i++) {
        const [a, b] = await Promise.all([allTools(plain), allTools(asking)]);
        // A client that declares every capability sees every pinned tool; one that declares none, some of them.
        expect(b).toEqual(everyTool);
        for (const name of a) expect(everyTool).toContain(name);
        expect(await allPrompts(plain)).toEqual(Object.keys(file.servers[server].prompts).sort());
      }
      expect(textOf(await plain.callTool({ name: 'echo', arguments: { message: 'hi' } }))).toBe('Echo: hi');
      // Without a session, and as a 2026-07-28 client.
      const curl = await curlPost(`${base}/mcp/${server}`, { jsonrpc: '2.0', id: 1, method: 'tools/list' });
      expect(curl.json.result.tools.length).toBeGreaterThan(5);
      const modern = await modernPost(`${base}/mcp/${server}`, 'tools/call', { name: 'echo', arguments: { message: 'modern' } }, 'echo');
      expect(modern.json?.result?.content?.[0]?.text).toBe('Echo: modern');
      await plain.close();
      await asking.close();
    }
    // The audit log is written in order: once these calls are in it, any earlier definition event would be too.
    await waitFor(() => gw.audit().filter((l) => l['event_type'] === 'tool_call').length >= 4, 10_000, 'the tool_call lines');
    expect(gw.audit().filter((l) => l['event_type'] === 'tool_definition_changed')).toEqual([]);
    expect(gw.audit().filter((l) => String(l['reason']).startsWith('tool integrity'))).toEqual([]);
    for (const result of ['changed', 'unpinned', 'refused']) expect(await gw.metric('mcp_guard_tool_integrity_total', { result })).toBe(0);
  });
});
