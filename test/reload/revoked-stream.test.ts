/**
 * A reload that takes a server away from a key (its `servers` narrowed, or its secret rotated:
 * the key "changed", not "removed") ends that key's sessions: new requests were refused anyway
 * (403 / 404), but a GET stream opened before the reload would otherwise go on carrying the
 * revoked server's messages for as long as the client holds it (review finding).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Reloader } from '../../src/app/reload.js';
import { parseConfig } from '../../src/config/load.js';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { bearer, makeKey, type Key } from '../helpers/identities.js';
import { connect, httpMember, rawPost, stdioMember, virtualServer, type Caller } from '../virtual/helpers.js';
import { waitFor } from '../helpers/gateway.js';

let gw: RunningGateway;
let k: Key;
let caller: Caller | undefined;

// b: an http member nothing listens on (it is only connected to when asked).
const toml = (servers: string) => `
${stdioMember('a')}
${httpMember('b', 'http://127.0.0.1:9/mcp')}
${virtualServer('ws', ['a', 'b'])}

[auth]
${k.block}
servers = [${servers}]
`;

beforeAll(async () => {
  k = await makeKey('narrowed');
  gw = await startGateway(toml('"a"'));
}, 120_000);

afterAll(async () => {
  await caller?.close().catch(() => undefined);
  await gw?.stop();
});

describe('reload: a key that loses a server', () => {
  it("no longer receives that server's messages on a stream it opened before the reload", { timeout: 90_000 }, async () => {
    caller = await connect(`${gw.url}/mcp/ws`, k);
    await caller.client.callTool({ name: 'a__toggle-simulated-logging', arguments: {} });
    await waitFor(() => caller!.logs.length > 0, 20_000, 'a log line of member a');

    const reloaded = await new Reloader(gw.app.services, async () => parseConfig(toml('"b"'), { env: {} })).reload('review');
    expect(reloaded.result).toBe('applied');

    // Requests are refused from now on: per request, as documented.
    const direct = await rawPost(`${gw.url}/mcp/a`, { jsonrpc: '2.0', id: 1, method: 'tools/list' }, bearer(k));
    expect(direct.status).toBe(403);

    // ...and the session whose stream still carried member a's log lines has ended, stream and all.
    const open = () => gw.app.gateway.sessions.all().filter((s) => s.owner === 'api_key:narrowed' && !s.closed);
    await waitFor(() => open().length === 0, 20_000, "the narrowed key's session to end");
    expect(gw.app.gateway.sessions.all().some((s) => s.owner === 'api_key:narrowed')).toBe(false);
  });
});
