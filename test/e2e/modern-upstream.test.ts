/**
 * Clients of both eras through a real gateway to a modern (2026-07-28) server: the fixture built
 * on the official v2 server package (test/fixtures/modern-server.mjs), modern-only (it refuses
 * every legacy request), over stdio and streamable HTTP. The gateway detects the server's era by
 * itself (`era` is not configured).
 *
 * - the v1 SDK client (legacy): the gateway holds the session, answers initialize from the
 *   server's discover result, turns input_required answers into real requests to the client,
 *   and listens for list changes on the client's behalf;
 * - the v2 client (auto mode or pinned): requests go through as they are, input rounds
 *   (elicitation and sampling) and listen streams included;
 * - a plain curl POST without a session.
 */
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from '@modelcontextprotocol/client';
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema, ElicitRequestSchema, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/everything.js';
import { curlPost, NODE, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';

const FIXTURE = new URL('../fixtures/modern-server.mjs', import.meta.url).pathname;
const MODERN = '2026-07-28';

function text(result: unknown): string {
  const content = (result as { content?: Array<{ type: string; text?: string }> }).content ?? [];
  return content.map((c) => c.text ?? '').join('');
}

/** The fixture over HTTP on a free port, modern-only; resolves once it accepts connections. */
async function startHttpFixture(): Promise<{ url: string; child: ChildProcess; stderr: () => string }> {
  const port = await freePort();
  const child = spawn(NODE, [FIXTURE, 'http', String(port), '--modern-only'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const url = `http://127.0.0.1:${port}/mcp`;
  await waitFor(
    async () => {
      try {
        await fetch(url, { method: 'GET' });
        return true;
      } catch {
        return false;
      }
    },
    10_000,
    'the modern fixture to listen',
  );
  return { url, child, stderr: () => stderr };
}

describe.each(['stdio', 'http', 'stdio with era = "modern"'] as const)('a modern-only server over %s behind the gateway', (transport) => {
  let fixture: { url: string; child: ChildProcess; stderr: () => string } | undefined;
  /** How many subscriptions/listen the fixture has received (its `event: recv` lines: its stderr, or the gateway's log of a child's). */
  const listens = (): number => (fixture ? fixture.stderr().split('\n') : gw.logs).filter((l) => l.includes('event: recv subscriptions/listen')).length;
  let gw: RunningGateway;
  let url: string;

  beforeAll(async () => {
    let toml: string;
    if (transport !== 'http') {
      // Configured as modern: never probed, so the gateway asks for the discover result itself.
      const era = transport === 'stdio' ? '' : 'era = "modern"\n';
      toml = `[[upstream.servers]]\nname = "modern"\npath_prefix = "/modern"\ncommand = ${q(NODE)}\nargs = [${q(FIXTURE)}, "stdio", "--modern-only"]\n${era}`;
    } else {
      fixture = await startHttpFixture();
      toml = `[[upstream.servers]]\nname = "modern"\npath_prefix = "/modern"\ntransport = "http"\nurl = ${q(fixture.url)}\n`;
    }
    gw = await startGateway(toml);
    url = `${gw.url}/mcp/modern`;
  });
  afterAll(async () => {
    await gw?.stop();
    fixture?.child.kill('SIGTERM');
  });

  it('a legacy client gets a session: initialize from discover, tools, calls, ping', async () => {
    const client = new LegacyClient({ name: 'legacy-e2e', version: '1.0.0' });
    await client.connect(new LegacyTransport(new URL(url)));
    try {
      expect(client.getServerVersion()?.name).toBe('modern-fixture');
      const { tools } = await client.listTools();
      expect(tools.map((t) => t.name)).toEqual(expect.arrayContaining(['echo', 'add', 'confirm', 'sample']));
      expect(text(await client.callTool({ name: 'echo', arguments: { text: 'from the past' } }))).toBe('echo: from the past');
      await client.ping();
      await client.setLoggingLevel('info');
    } finally {
      await client.close();
    }
  });

  it("a legacy client answers the server's input requests as real requests (elicitation and sampling)", async () => {
    const client = new LegacyClient({ name: 'legacy-e2e', version: '1.0.0' }, { capabilities: { elicitation: {}, sampling: {} } });
    client.setRequestHandler(ElicitRequestSchema, async () => ({ action: 'accept', content: { ok: true } }));
    client.setRequestHandler(CreateMessageRequestSchema, async () => ({ model: 'm', role: 'assistant', content: { type: 'text', text: 'legacy sample' } }));
    await client.connect(new LegacyTransport(new URL(url)));
    try {
      expect(text(await client.callTool({ name: 'confirm', arguments: {} }))).toContain('true');
      expect(text(await client.callTool({ name: 'sample', arguments: { prompt: 'hello' } }))).toContain('legacy sample');
    } finally {
      await client.close();
    }
  });

  it('a legacy client with a GET stream hears of list changes (the gateway listens for it)', async () => {
    let changed = 0;
    const client = new LegacyClient({ name: 'legacy-e2e', version: '1.0.0' });
    client.setNotificationHandler(ToolListChangedNotificationSchema, async () => {
      changed++;
    });
    const listensBefore = listens();
    await client.connect(new LegacyTransport(new URL(url)));
    try {
      // The SDK opens the GET stream after initialized; the gateway then opens its listen on the server.
      await waitFor(() => listens() > listensBefore, 10_000, "the gateway's subscriptions/listen to reach the server");
      await client.callTool({ name: 'notify', arguments: {} });
      await waitFor(() => changed > 0, 5_000, 'notifications/tools/list_changed');
    } finally {
      await client.close();
    }
  });

  it('a modern client reaches the server as it is: era, calls, input rounds', async () => {
    const client = new ModernClient({ name: 'modern-e2e', version: '1.0.0' }, { capabilities: { elicitation: {} }, versionNegotiation: { mode: 'auto' } });
    client.setRequestHandler('elicitation/create', async () => ({ action: 'accept', content: { ok: true } }));
    await client.connect(new ModernTransport(new URL(url)));
    try {
      expect(client.getProtocolEra()).toBe('modern');
      expect(text(await client.callTool({ name: 'add', arguments: { a: 2, b: 3 } }))).toBe('5');
      expect(text(await client.callTool({ name: 'confirm', arguments: {} }))).toContain('true');
    } finally {
      await client.close();
    }
  });

  it("a modern client answers the server's sampling request (an input round) and the call completes", async () => {
    const client = new ModernClient(
      { name: 'modern-e2e', version: '1.0.0' },
      { capabilities: { sampling: {} }, versionNegotiation: { mode: { pin: MODERN } } },
    );
    const asked: unknown[] = [];
    client.setRequestHandler('sampling/createMessage', async (request: { params: unknown }) => {
      asked.push(request.params);
      return { model: 'test-model', role: 'assistant', content: { type: 'text', text: 'modern sample' }, stopReason: 'endTurn' };
    });
    await client.connect(new ModernTransport(new URL(url)));
    try {
      expect(client.getProtocolEra()).toBe('modern');
      expect(text(await client.callTool({ name: 'sample', arguments: { prompt: 'hello from the server' } }))).toBe('sampled: modern sample');
      // One round: the server asked once, with its own prompt.
      expect(asked).toHaveLength(1);
      expect(JSON.stringify(asked[0])).toContain('hello from the server');
    } finally {
      await client.close();
    }
  });

  it("a modern client's listen stream passes through", async () => {
    const client = new ModernClient({ name: 'modern-e2e', version: '1.0.0' }, { versionNegotiation: { mode: { pin: MODERN } } });
    let changed = 0;
    client.setNotificationHandler('notifications/tools/list_changed', () => {
      changed++;
    });
    await client.connect(new ModernTransport(new URL(url)));
    try {
      const subscription = await client.listen({ toolsListChanged: true });
      expect(subscription.honoredFilter).toMatchObject({ toolsListChanged: true });
      await client.callTool({ name: 'notify', arguments: {} });
      await waitFor(() => changed > 0, 5_000, 'notifications/tools/list_changed on the listen stream');
      await subscription.close();
    } finally {
      await client.close();
    }
  });

  it('a plain curl POST without a session works too', async () => {
    const res = await curlPost(url, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { text: 'curl' } } });
    expect(res.status).toBe(200);
    expect(res.json.result.content[0].text).toBe('echo: curl');
  });
});
