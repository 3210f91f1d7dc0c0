/**
 * Reloads by `watch_config`, and through a virtual server (issue 20, docs/operations.md "Reload"),
 * on a real `mcp-guard serve` with real server-everything stdio children:
 *
 *   - `watch_config = true`: an edit written as a temp file renamed over the config is picked up,
 *     and counted once;
 *   - a virtual server's session is told tools/list_changed when a member's server changes, and
 *     then lists that member's tools again.
 */
import { describe, expect, it } from 'vitest';
import { trackProcesses } from '../helpers/cli.js';
import { alive, everything, ReloadGateway, sdkClient, serverTable, textOf, waitFor } from './helpers.js';

const { running, mark } = trackProcesses();

/** An HTTP server nothing listens for (an http upstream connects only when asked). */
const idleHttp = (name: string) => `[[upstream.servers]]\nname = "${name}"\npath_prefix = "/${name}"\nurl = "http://127.0.0.1:9/mcp"\n\n`;

describe('reload: watch_config, virtual servers', () => {
  it('watch_config: an edit written as a temp file renamed over the config is applied, and counted once', { timeout: 120_000 }, async () => {
    const m = mark('reload-watch');
    const base0 = serverTable('watch_config = true') + everything('stable', m);
    const gw = new ReloadGateway(() => base0, { running });
    const base = await gw.ready();
    await gw.process.waitForLog('watching the config file for changes');
    const stablePid = await gw.waitChild(`${m}-stable`);
    const routes = async () => ((await (await fetch(`${base}/routes`)).json()) as { routes: Array<{ name: string }> }).routes.map((r) => r.name).sort();

    gw.writeAndRename(base0 + idleHttp('extra'));
    await waitFor(async () => (await gw.metric('mcp_guard_config_reloads_total', { result: 'applied' })) === 1, 20_000, 'the edit to be applied');
    expect(await routes()).toEqual(['extra', 'stable']);

    // A second edit: applied as the second reload, never a third (the first edit counted once).
    gw.writeAndRename(base0);
    await waitFor(async () => (await gw.metric('mcp_guard_config_reloads_total', { result: 'applied' })) === 2, 20_000, 'the second edit to be applied');
    expect(await routes()).toEqual(['stable']);
    expect(await gw.metric('mcp_guard_config_reloads_total')).toBe(2);
    const lines = gw.reloads();
    expect(lines.map((l) => [l['msg'], l['trigger']])).toEqual([
      ['config reloaded', 'watch_config'],
      ['config reloaded', 'watch_config'],
    ]);
    expect(lines.map((l) => l['servers'])).toEqual([{ added: ['extra'] }, { removed: ['extra'] }]);
    expect(gw.childPid(`${m}-stable`)).toBe(stablePid);
  });

  it("a virtual server's session gets tools/list_changed when a member's server changes, and lists the member again", { timeout: 120_000 }, async () => {
    const m = mark('reload-virtual');
    const config = (tag: string) => () =>
      serverTable() +
      everything('a', m, tag) +
      everything('b', m) +
      '[[virtual_servers]]\nname = "v"\npath_prefix = "/v"\nservers = ["a", "b"]\nseparator = "__"\n';
    const gw = new ReloadGateway(config('v1'), { running });
    const base = await gw.ready();
    const oldA = await gw.waitChild(`${m}-a v1`);
    const b = await gw.waitChild(`${m}-b`);

    let changed = 0;
    const { client } = await sdkClient(`${base}/mcp/v`, { onToolsChanged: () => void changed++ });
    const names = async () => (await client.listTools()).tools.map((t) => t.name);
    expect(await names()).toEqual(expect.arrayContaining(['a__echo', 'b__echo']));

    const line = await gw.reload(config('v2'));
    expect(line['servers']).toEqual({ changed: ['a'] });
    await waitFor(() => changed > 0, 20_000, 'tools/list_changed on the virtual session');
    // The member is listed again (reopened on its new upstream), and calls reach the new child.
    await waitFor(async () => (await names()).includes('a__echo'), 20_000, 'the changed member to be listed again');
    expect(await names()).toEqual(expect.arrayContaining(['a__echo', 'b__echo']));
    expect(textOf(await client.callTool({ name: 'a__echo', arguments: { message: 'again' } }))).toBe('Echo: again');
    const newA = await gw.waitChild(`${m}-a v2`);
    expect(newA).not.toBe(oldA);
    await waitFor(() => !alive(oldA), 20_000, "the old member's child to end");
    expect(gw.childPid(`${m}-b`)).toBe(b);
    await client.close();
  });
});
