/**
 * A 2026-07-28 client's subscriptions/listen on a virtual server (issue 18): it subscribes to a
 * member's resource under its virtual URI, and the member's updates reach the stream under that
 * URI.
 */
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EverythingServer } from '../helpers/everything.js';
import { everythingStdio, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';

let gw: RunningGateway;
let http: EverythingServer;

beforeAll(async () => {
  http = await EverythingServer.start('streamableHttp');
  gw = await startGateway(
    `${everythingStdio('local')}\n[[upstream.servers]]\nname = "remote"\npath_prefix = "/remote"\ntransport = "http"\nurl = ${q(http.url)}\n` +
      '[[virtual_servers]]\nname = "ws"\nservers = ["local", "remote"]\n',
  );
}, 120_000);

afterAll(async () => {
  await gw?.stop();
  await http?.stop();
});

describe('subscriptions/listen on a virtual server', () => {
  it("delivers a member's resource updates under the virtual URI", { timeout: 60_000 }, async () => {
    const client = new Client({ name: 'virtual-listen', version: '1.0.0' }, { versionNegotiation: { mode: { pin: '2026-07-28' } } });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${gw.url}/mcp/ws`)));
    const updates: string[] = [];
    client.setNotificationHandler('notifications/resources/updated', (n: { params: { uri: string } }) => {
      updates.push(n.params.uri);
    });
    try {
      const uri = 'mcp-guard://remote/demo://resource/static/document/architecture.md';
      const subscription = await client.listen({ resourceSubscriptions: [uri], toolsListChanged: true });
      expect(subscription.honoredFilter).toMatchObject({ toolsListChanged: true, resourceSubscriptions: [uri] });
      await client.callTool({ name: 'remote__toggle-subscriber-updates', arguments: {} });
      await waitFor(() => updates.includes(uri), 30_000, 'a resource update under the virtual URI');
      expect(updates.every((u) => u.startsWith('mcp-guard://remote/'))).toBe(true);
      await client.callTool({ name: 'remote__toggle-subscriber-updates', arguments: {} });
      await subscription.close();
    } finally {
      await client.close();
    }
  });
});
