/**
 * Reloads under load (issue 20, docs/operations.md "Reload"): 10 SIGHUP reloads (adding and
 * removing a server and a key, in turn) while 5 SDK clients call echo in a loop on an unchanged
 * server (a real server-everything stdio child): no call fails, the child keeps its pid. The
 * 100-reload measurement is bench/scenarios/reload.mjs.
 */
import { describe, expect, it } from 'vitest';
import { trackProcesses } from '../helpers/cli.js';
import { alive, bearer, everything, keyToml, newKey, RawSession, ReloadGateway, sdkClient, serverTable, textOf, waitFor } from './helpers.js';

const { running, mark } = trackProcesses();

const CLIENTS = 5;
const RELOADS = 10;

/** An HTTP server nothing listens for (an http upstream connects only when asked). */
const idleHttp = (name: string) => `[[upstream.servers]]\nname = "${name}"\npath_prefix = "/${name}"\nurl = "http://127.0.0.1:9/mcp"\n\n`;

describe('reload under load', () => {
  it(`${RELOADS} SIGHUP reloads under the load of ${CLIENTS} clients on an unchanged server fail no call`, { timeout: 180_000 }, async () => {
    const m = mark('reload-load');
    const steady = await newKey('steady');
    const rotating = await newKey('rotating');
    // Odd reloads add a server and a key, even ones remove them (adding a stdio server: sighup.test.ts).
    const config = (i: number) => () =>
      serverTable() + everything('stable', m) + (i % 2 === 1 ? idleHttp('extra') : '') + keyToml(steady) + (i % 2 === 1 ? keyToml(rotating) : '');
    const gw = new ReloadGateway(config(0), { running, env: { MCP_GUARD_LOG_LEVEL: 'info' } });
    const base = await gw.ready();
    const stablePid = await gw.waitChild(`${m}-stable`);

    const clients = await Promise.all(Array.from({ length: CLIENTS }, () => sdkClient(`${base}/mcp/stable`, { headers: bearer(steady) })));
    let ok = 0;
    const failures: string[] = [];
    let stop = false;
    const loops = clients.map(async ({ client }, c) => {
      for (let n = 0; !stop; n++) {
        const message = `c${c}-${n}`;
        try {
          const text = textOf(await client.callTool({ name: 'echo', arguments: { message } }, undefined, { timeout: 30_000 }));
          if (text === `Echo: ${message}`) ok++;
          else failures.push(`${message}: ${text}`);
        } catch (err) {
          failures.push(`${message}: ${(err as Error).message}`);
        }
      }
    });
    try {
      await waitFor(() => ok >= CLIENTS * 5, 20_000, 'the load to run');
      for (let i = 1; i <= RELOADS; i++) {
        const before = ok;
        const line = await gw.reload(config(i));
        expect(line['msg'], JSON.stringify(line)).toBe('config reloaded');
        // Calls go on between reloads (each reload lands on calls in flight).
        await waitFor(() => ok >= before + CLIENTS, 20_000, `calls after reload ${i}`);
        if (i === RELOADS - 1) {
          // The key and server added last are there (the next reload removes them again).
          const routes = (await (await fetch(`${base}/routes`)).json()) as { routes: Array<{ name: string }> };
          expect(routes.routes.map((r) => r.name).sort()).toEqual(['extra', 'stable']);
          await waitFor(
            async () => {
              try {
                const session = await RawSession.open(`${base}/mcp/stable`, bearer(rotating));
                return (await session.call('echo', { message: 'x' })).message?.result?.content?.[0]?.text === 'Echo: x';
              } catch {
                return false;
              }
            },
            30_000,
            'the added key to work',
          );
        }
      }
      expect(await gw.metric('mcp_guard_config_reloads_total', { result: 'applied' })).toBe(RELOADS);
    } finally {
      stop = true;
      await Promise.all(loops);
      await Promise.all(clients.map(({ client }) => client.close().catch(() => undefined)));
    }
    console.log(`${RELOADS} reloads under load: ${ok} calls answered, ${failures.length} failed`);
    expect(failures).toEqual([]);
    expect(gw.childPid(`${m}-stable`)).toBe(stablePid);
    expect(alive(stablePid)).toBe(true);
    expect(
      (await fetch(`${base}/mcp/stable`, { method: 'POST', headers: { ...bearer(rotating), 'content-type': 'application/json' }, body: '{}' })).status,
    ).toBe(401);
  });
});
