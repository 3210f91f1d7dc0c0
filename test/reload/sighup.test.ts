/**
 * Reloading the config with SIGHUP (issue 20, docs/operations.md "Reload"), on a real
 * `mcp-guard serve` with real server-everything stdio children:
 *
 *   - a long call survives a reload that adds a server and a key and removes another key; the
 *     unchanged server's child keeps its pid; the new server and key work; the removed key gets
 *     401 and its open session ends;
 *   - an invalid config (bad TOML, then an unknown virtual server member) changes nothing, and is
 *     counted and audited;
 *   - rate limits switched on by a reload wait for a restart (restart_required), as documented.
 *
 * A changed server's drain: changed.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { trackProcesses } from '../helpers/cli.js';
import {
  alive,
  auditTable,
  bearer,
  everything,
  keyToml,
  newKey,
  post,
  PROTOCOL_VERSION,
  RawSession,
  ReloadGateway,
  sdkClient,
  serverTable,
  textOf,
  waitFor,
  type Key,
} from './helpers.js';

const { running, mark } = trackProcesses();

/**
 * A call long enough to span a reload on a busy machine (the reload's validation in a child
 * process has taken up to 12 s at a load average of 26): one progress notification a second.
 */
const LONG = { name: 'trigger-long-running-operation', arguments: { duration: 12, steps: 12 } };

function initialize(id: number) {
  return {
    jsonrpc: '2.0',
    id,
    method: 'initialize',
    params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'reload', version: '1' } },
  };
}

describe('reload on SIGHUP', () => {
  it('a long call survives a reload that adds a server and a key and removes a key; the unchanged child keeps its pid', { timeout: 120_000 }, async () => {
    const m = mark('sighup-add');
    const [alice, bob, carol] = await Promise.all([newKey('alice'), newKey('bob'), newKey('carol')]);
    const config = (keys: Key[], servers: string) => (audit: string) => serverTable() + auditTable(audit) + servers + keys.map((k) => keyToml(k)).join('');
    const gw = new ReloadGateway(config([alice, bob], everything('stable', m)), { running });
    const base = await gw.ready();
    const stablePid = await gw.waitChild(`${m}-stable`);

    // alice's long call, in flight (it has reported progress) when the signal arrives.
    const { client } = await sdkClient(`${base}/mcp/stable`, { headers: bearer(alice) });
    let progress = 0;
    let settled = false;
    const long = client.callTool(LONG, undefined, { onprogress: () => void progress++, timeout: 60_000 }).finally(() => (settled = true));
    // bob's session, open across the reload that removes his key.
    const bobs = await RawSession.open(`${base}/mcp/stable`, bearer(bob));
    expect((await bobs.call('echo', { message: 'before' })).message.result.content[0].text).toBe('Echo: before');
    await waitFor(() => progress > 0, 20_000, 'the long call to report progress');

    const line = await gw.reload(config([alice, carol], everything('stable', m) + everything('added', m)));
    expect(line['msg']).toBe('config reloaded');
    expect(line['servers']).toEqual({ added: ['added'] });
    expect(line['keys']).toEqual({ added: ['api_key:carol'], removed: ['api_key:bob'] });
    expect(line['restart_required']).toBeUndefined();
    const progressAtReload = progress;
    expect(settled, 'the long call was still in flight when the reload was applied').toBe(false);

    // The removed key: 401 for anything new, and its open session was ended at once.
    expect((await post(`${base}/mcp/stable`, initialize(1), bearer(bob))).status).toBe(401);
    expect((await bobs.call('echo', { message: 'after' })).status).toBe(401);
    const closedLine = () => gw.process.logLines().find((l) => l['msg'] === 'session closed' && l['sessionId'] === bobs.id);
    await waitFor(() => closedLine() !== undefined, 10_000, "bob's session to end");
    expect(closedLine()!['reason']).toBe('its key was removed');

    // The new key on the new server: works soon (its child starts on the reload).
    let carols: RawSession | undefined;
    await waitFor(
      async () => {
        try {
          carols ??= await RawSession.open(`${base}/mcp/added`, bearer(carol));
          return (await carols.call('echo', { message: 'new' })).message?.result?.content?.[0]?.text === 'Echo: new';
        } catch {
          return false;
        }
      },
      30_000,
      'the new key to reach the new server',
    );
    expect(gw.childPid(`${m}-added`)).toBeDefined();

    // The long call completes, having gone on reporting progress through the reload.
    const result = await long;
    expect(textOf(result)).toMatch(/Long running operation completed/);
    expect(progress).toBeGreaterThan(progressAtReload);
    // The unchanged server's child is the same process; alice's session goes on.
    expect(gw.childPid(`${m}-stable`)).toBe(stablePid);
    expect(alive(stablePid)).toBe(true);
    expect(textOf(await client.callTool({ name: 'echo', arguments: { message: 'still' } }))).toBe('Echo: still');
    await client.close();

    expect(await gw.metric('mcp_guard_config_reloads_total', { result: 'applied' })).toBe(1);
    const [audit] = await gw.reloadAudits(1);
    expect(audit).toMatchObject({
      success: true,
      reason: 'applied',
      changes: { servers: { added: ['added'] }, keys: { added: ['api_key:carol'], removed: ['api_key:bob'] } },
    });
    expect(JSON.stringify(audit)).not.toContain(carol.hash);
  });

  it('an invalid config (bad TOML, an unknown virtual server member) changes nothing and is counted and audited', { timeout: 120_000 }, async () => {
    const m = mark('sighup-invalid');
    const valid = (audit: string) => serverTable() + auditTable(audit) + everything('stable', m);
    const gw = new ReloadGateway(valid, { running });
    const base = await gw.ready();
    const stablePid = await gw.waitChild(`${m}-stable`);
    const session = await RawSession.open(`${base}/mcp/stable`);

    const bad = await gw.reload((audit) => `${valid(audit)}\nthis is = = not [toml\n`);
    expect(bad['msg']).toBe('config reload refused: the running config stays');
    expect(String(bad['reason'])).not.toBe('');
    expect((await session.call('echo', { message: 'one' })).message.result.content[0].text).toBe('Echo: one');
    expect(await gw.metric('mcp_guard_config_reloads_total', { result: 'invalid' })).toBe(1);

    // Valid TOML, invalid config: a virtual server naming a server that does not exist, and a new server with it.
    const unknown = await gw.reload(
      (audit) =>
        `${valid(audit)}\n[[upstream.servers]]\nname = "other"\npath_prefix = "/other"\nurl = "http://127.0.0.1:9/mcp"\n\n[[virtual_servers]]\nname = "v"\nservers = ["stable", "nope"]\n`,
    );
    expect(unknown['msg']).toBe('config reload refused: the running config stays');
    expect(String(unknown['reason'])).toMatch(/virtual_servers/);
    expect(String(unknown['reason'])).toMatch(/nope/);
    const routes = (await (await fetch(`${base}/routes`)).json()) as { routes: Array<{ name: string }> };
    expect(routes.routes.map((r) => r.name)).toEqual(['stable']);
    expect((await post(`${base}/mcp/other`, initialize(2))).status).toBe(404);
    expect((await session.call('echo', { message: 'two' })).message.result.content[0].text).toBe('Echo: two');
    expect(await gw.metric('mcp_guard_config_reloads_total', { result: 'invalid' })).toBe(2);
    expect(await gw.metric('mcp_guard_config_reloads_total', { result: 'applied' })).toBe(0);

    const audits = await gw.reloadAudits(2);
    expect(audits.map((a) => a['success'])).toEqual([false, false]);
    expect(String(audits[1]!['reason'])).toMatch(/nope/);

    // The file fixed: applied, and the running server never noticed any of it.
    const fixed = await gw.reload((audit) => `${valid(audit)}\n[[upstream.servers]]\nname = "other"\npath_prefix = "/other"\nurl = "http://127.0.0.1:9/mcp"\n`);
    expect(fixed['msg']).toBe('config reloaded');
    expect(fixed['servers']).toEqual({ added: ['other'] });
    expect((await session.call('echo', { message: 'three' })).message.result.content[0].text).toBe('Echo: three');
    expect(gw.childPid(`${m}-stable`)).toBe(stablePid);
    expect(await gw.metric('mcp_guard_config_reloads_total', { result: 'applied' })).toBe(1);
  });

  it('rate limits switched on by a reload wait for a restart: listed in restart_required, nothing limited meanwhile', async () => {
    const plain = (audit: string) =>
      serverTable() + auditTable(audit) + '[[upstream.servers]]\nname = "x"\npath_prefix = "/x"\nurl = "http://127.0.0.1:9/mcp"\n';
    const gw = new ReloadGateway(plain, { running });
    const base = await gw.process.address();
    gw.base = base;
    const line = await gw.reload(
      (audit) => `${plain(audit)}\n[rate_limit]\nrequests_per_second = 1\nburst_size = 1\nper_address_requests_per_second = 1\nper_address_burst_size = 1\n`,
    );
    expect(line['msg']).toBe('config reloaded: nothing to apply');
    expect(line['restartRequired']).toEqual(['rate_limit.enabled']);
    // What runs is what was started: no limits (a restart would answer 429 from the second request).
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await post(`${base}/mcp/x`, { jsonrpc: '2.0', id: i, method: 'ping' })).status);
    expect(statuses).not.toContain(429);
    expect(await gw.metric('mcp_guard_config_reloads_total', { result: 'unchanged' })).toBe(1);
    const [audit] = await gw.reloadAudits(1);
    expect(audit).toMatchObject({ success: true, reason: 'unchanged', changes: { restart_required: ['rate_limit.enabled'] } });
  });
});
