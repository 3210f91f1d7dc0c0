/**
 * A tool limit applies by the member's tool (issue 18): a call through a virtual server counts
 * against the same limit as a call on the member's own route, and a server-qualified pattern
 * limits only that server's tool.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curlPost, everythingStdio, startGateway, type RunningGateway } from '../helpers/gateway.js';

let gw: RunningGateway;

beforeAll(async () => {
  gw = await startGateway(
    `${everythingStdio('a')}\n${everythingStdio('b')}\n` +
      '[[virtual_servers]]\nname = "ws"\nservers = ["a", "b"]\n' +
      // A rate so low that nothing refills during the test: the burst is all there is.
      '[rate_limit]\nenabled = true\nrequests_per_second = 1000\nburst_size = 1000\n' +
      '[[rate_limit.tool_limits]]\ntool_pattern = "a:echo"\nrequests_per_second = 0.001\nburst_size = 2\n',
  );
}, 120_000);

afterAll(async () => gw?.stop());

const call = (path: string, name: string, id: number) =>
  curlPost(`${gw.url}${path}`, { jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: { message: 'x' } } });

describe('tool limits on a virtual server', () => {
  it('count the member tool across routes, and a qualified pattern spares the other member', async () => {
    expect((await call('/mcp/a', 'echo', 1)).status).toBe(200);
    expect((await call('/mcp/ws', 'a__echo', 2)).status).toBe(200);
    // The burst of 2 is used up, whichever route used it.
    const limited = await call('/mcp/ws', 'a__echo', 3);
    expect(limited.status).toBe(429);
    expect(limited.json.error.message).toMatch(/rate limit/i);
    expect((await call('/mcp/a', 'echo', 4)).status).toBe(429);
    // b's echo is another server's tool: "a:echo" does not limit it.
    for (let id = 5; id < 9; id++) expect((await call('/mcp/ws', 'b__echo', id)).json.result.content[0].text).toBe('Echo: x');
  });
});
