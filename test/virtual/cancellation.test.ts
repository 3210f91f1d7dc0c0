/**
 * Cancellation through a virtual server (issue 18): a call the client cancels is cancelled at
 * the member that runs it (stdio and streamable HTTP), gets no response, and the session goes on.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EverythingServer } from '../helpers/everything.js';
import { everythingStdio, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';

let gw: RunningGateway;
let http: EverythingServer;

beforeAll(async () => {
  http = await EverythingServer.start('streamableHttp');
  gw = await startGateway(
    `${everythingStdio('local', 'timeout_ms = 120000\n')}\n` +
      `[[upstream.servers]]\nname = "remote"\npath_prefix = "/remote"\ntransport = "http"\nurl = ${q(http.url)}\ntimeout_ms = 120000\n` +
      '[[virtual_servers]]\nname = "ws"\nservers = ["local", "remote"]\n',
  );
}, 120_000);

afterAll(async () => {
  await gw?.stop();
  await http?.stop();
});

/** A minute: longer than any wait below, so only a cancellation ends it in time. */
const SLOW = { arguments: { duration: 60, steps: 60 } };

describe('a call cancelled through a virtual server', () => {
  it.each(['local', 'remote'])('is cancelled at its %s member, and the session goes on', async (member) => {
    const client = new Client({ name: 'virtual-cancel', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(`${gw.url}/mcp/ws`));
    const errors: string[] = [];
    client.onerror = (error) => errors.push(error.message);
    await client.connect(transport);
    const inFlight = () => gw.app.gateway.sessions.get(transport.sessionId ?? '')?.inflight.size ?? 0;
    try {
      const controller = new AbortController();
      let progressed = 0;
      const call = client.callTool({ name: `${member}__trigger-long-running-operation`, ...SLOW }, undefined, {
        signal: controller.signal,
        onprogress: () => void progressed++,
      });
      call.catch(() => undefined);
      await waitFor(() => inFlight() === 1 && progressed > 0, 20_000, 'the call to be running at the member');
      controller.abort('changed my mind');
      await expect(call).rejects.toThrow();
      // Its call at the member ends now, not in a minute: cancelled there (the transport sends notifications/cancelled), not waited out.
      await waitFor(() => inFlight() === 0, 20_000, 'the call to end at the gateway');
      const result = (await client.callTool({ name: `${member}__echo`, arguments: { message: 'still here' } })) as { content: Array<{ text?: string }> };
      expect(result.content[0]?.text).toBe('Echo: still here');
      expect(errors).toEqual([]);
    } finally {
      await client.close();
    }
  });
});
