/**
 * The official SDK client, over streamable HTTP, through the gateway, to server-everything speaking
 * the legacy HTTP+SSE transport: the shared HTTP-upstream suite, plus what only this transport does.
 */
import { describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/gateway.js';
import { httpUpstreamSuite } from '../helpers/http-upstream-suite.js';
import { resultText } from '../helpers/sdk-client.js';

const ctx = httpUpstreamSuite('sse');

describe('legacy SSE upstream only', () => {
  it("closes the upstream's SSE stream when the client DELETEs its session", async () => {
    const { transport } = await ctx.connect('/mcp/everything');
    const disconnects = (): number => ctx.everything.output.split('Client Disconnected').length - 1;
    const before = disconnects();
    await transport.terminateSession();
    await waitFor(() => disconnects() === before + 1, 5_000, 'the upstream stream to close');
  });

  it("rebuilds a client's upstream session after its server restarts (the initialize is replayed)", async () => {
    const { client } = await ctx.connect('/mcp/victim');
    expect(await client.ping()).toEqual({});
    await ctx.victim.restart();
    const result = await client.callTool({ name: 'echo', arguments: { message: 'same session' } });
    expect(resultText(result)).toBe('Echo: same session');
  });
});
