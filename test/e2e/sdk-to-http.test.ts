/**
 * The official SDK client, over streamable HTTP, through the gateway, to server-everything speaking
 * streamable HTTP: the shared HTTP-upstream suite, plus what only this transport does.
 */
import { describe, expect, it } from 'vitest';
import { curlPost, waitFor } from '../helpers/gateway.js';
import { httpUpstreamSuite } from '../helpers/http-upstream-suite.js';

const ctx = httpUpstreamSuite('http');

describe('streamable HTTP upstream only', () => {
  it('ends the upstream session too when the client DELETEs its session', async () => {
    const { transport } = await ctx.connect('/mcp/everything');
    const deletes = (): number => ctx.everything.output.split('Received session termination request').length - 1;
    const before = deletes();
    await transport.terminateSession();
    await waitFor(() => deletes() === before + 1, 5_000, 'the upstream DELETE');
  });

  it('tells a client whose upstream session died with its server to start a new one (404, -32001)', async () => {
    const { client, transport } = await ctx.connect('/mcp/victim');
    expect(await client.ping()).toEqual({});
    await ctx.victim.restart();
    const res = await curlPost(`${ctx.gw.url}/mcp/victim`, { jsonrpc: '2.0', method: 'tools/list', id: 1 }, { 'mcp-session-id': transport.sessionId! });
    expect(res.status).toBe(404);
    expect(res.json.error.code).toBe(-32001);
  });
});
