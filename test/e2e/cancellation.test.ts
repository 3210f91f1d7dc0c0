/**
 * A request its client cancels (notifications/cancelled in its session) gets no response: MCP
 * cancellation says the receiver should not send one, and a client that gets one anyway finds no
 * request waiting for it (the v2 SDK reports "Received a response for an unknown message ID").
 * Both official SDK clients, through the gateway, to server-everything over stdio, streamable
 * HTTP and legacy SSE. The POST that carried the request ends without a response: 202 with no
 * body when it would have been JSON, its stream closed when it had become SSE.
 */
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from '@modelcontextprotocol/client';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idKey } from '../../src/jsonrpc/messages.js';
import { EverythingServer } from '../helpers/everything.js';
import { curlPost, EVERYTHING, NODE, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';

let gw: RunningGateway;
const servers: EverythingServer[] = [];

beforeAll(async () => {
  const [http, sse] = await Promise.all([EverythingServer.start('streamableHttp'), EverythingServer.start('sse')]);
  servers.push(http, sse);
  gw = await startGateway(`
[[upstream.servers]]
name = "stdio"
path_prefix = "/stdio"
transport = "stdio"
command = ${q(NODE)}
args = [${q(EVERYTHING)}, "stdio"]
timeout_ms = 20000

[[upstream.servers]]
name = "http"
path_prefix = "/http"
transport = "http"
url = ${q(http.url)}
timeout_ms = 20000

[[upstream.servers]]
name = "sse"
path_prefix = "/sse"
transport = "sse"
url = ${q(sse.url)}
timeout_ms = 20000
`);
}, 60_000);

afterAll(async () => {
  await gw?.stop();
  await Promise.all(servers.map((s) => s.stop()));
});

/** One POST the client made: what it sent, and the whole body it got (once the exchange ended). */
interface Exchange {
  sent: string;
  answer: Promise<{ status: number; body: string }>;
}

/** A fetch that records every POST exchange, its body read whole from a clone. */
function recordingFetch(exchanges: Exchange[]): typeof fetch {
  return (input, init) => {
    const response = fetch(input, init);
    if (init?.method === 'POST') {
      const answer = response.then(async (r) => ({ status: r.status, body: await r.clone().text() }));
      answer.catch(() => undefined);
      exchanges.push({ sent: String(init.body), answer });
    }
    return response;
  };
}

/** 10 s, with progress every 0.5 s when asked for. */
const SLOW = { name: 'trigger-long-running-operation', arguments: { duration: 10, steps: 20 } };

/** How many of a session's requests the gateway holds in flight. */
function inFlight(sessionId: string | undefined): number {
  return gw.app.gateway.sessions.get(sessionId ?? '')?.inflight.size ?? 0;
}

for (const server of ['stdio', 'http', 'sse']) {
  for (const sdk of ['v1', 'v2'] as const) {
    describe(`${sdk} SDK client -> gateway -> ${server} server-everything`, () => {
      it.each([
        { answer: 'JSON', progress: false },
        { answer: 'an SSE stream (progress came first)', progress: true },
      ])('gets no response for a request it cancelled, when the answer would be $answer; the session goes on', async ({ progress }) => {
        const exchanges: Exchange[] = [];
        const errors: string[] = [];
        const url = new URL(`${gw.url}/mcp/${server}`);
        const client =
          sdk === 'v1'
            ? new Client({ name: 'cancel-e2e', version: '1.0.0' })
            : (new ModernClient({ name: 'cancel-e2e', version: '1.0.0' }) as unknown as Client);
        const transport =
          sdk === 'v1'
            ? new StreamableHTTPClientTransport(url, { fetch: recordingFetch(exchanges) })
            : new ModernTransport(url, { fetch: recordingFetch(exchanges) });
        client.onerror = (error) => errors.push(error.message);
        await client.connect(transport as StreamableHTTPClientTransport);
        try {
          const controller = new AbortController();
          let progressed = 0;
          const options = { signal: controller.signal, ...(progress ? { onprogress: () => void progressed++ } : {}) };
          // v2 takes the request options second (no result schema).
          const call = sdk === 'v1' ? client.callTool(SLOW, undefined, options) : (client as unknown as ModernClient).callTool(SLOW, options);
          call.catch(() => undefined);
          await waitFor(() => inFlight(transport.sessionId) === 1 && (!progress || progressed > 0), 10_000, 'the call to be in flight at the gateway');
          controller.abort('changed my mind');
          await expect(call).rejects.toThrow();
          const post = exchanges.find((e) => e.sent.includes('trigger-long-running-operation'));
          expect(post).toBeDefined();
          // The exchange ends (the upstream call is cancelled, not waited out) without a response.
          const { status, body } = await post!.answer;
          expect(body).not.toMatch(/"result"|"error"/);
          expect(body).not.toMatch(/-32800/);
          // JSON: 202 and no body; a stream: its progress, then its end. (The server may send
          // something else first, a log line, which makes even the JSON case a stream.)
          if (progress) expect(body).toMatch(/notifications\/progress/);
          if (status === 202) expect(body).toBe('');
          else expect(status).toBe(200);
          await waitFor(() => inFlight(transport.sessionId) === 0, 10_000, 'the call to end at the gateway');
          const result = (await client.callTool({ name: 'echo', arguments: { message: 'still here' } })) as { content: Array<{ text?: string }> };
          expect(result.content[0]?.text).toContain('still here');
          expect(errors.filter((e) => /unknown message ID/i.test(e))).toEqual([]);
          expect(errors).toEqual([]);
        } finally {
          await client.close();
        }
      });
    });
  }
}

describe('a batch with a request its client cancels (JSON)', () => {
  it('answers the other requests and leaves the cancelled one out', async () => {
    const url = `${gw.url}/mcp/stdio`;
    const client = new Client({ name: 'cancel-batch', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(url));
    await client.connect(transport);
    try {
      const headers = { 'mcp-session-id': transport.sessionId!, 'mcp-protocol-version': transport.protocolVersion ?? '2025-11-25' };
      const batch = curlPost(
        url,
        [
          { jsonrpc: '2.0', id: 'slow', method: 'tools/call', params: SLOW },
          { jsonrpc: '2.0', id: 'echo', method: 'tools/call', params: { name: 'echo', arguments: { message: 'kept' } } },
        ],
        { ...headers, accept: 'application/json' },
      );
      const session = gw.app.gateway.sessions.get(transport.sessionId!);
      await waitFor(() => session?.inflight.has(idKey('slow')) === true, 10_000, 'the slow call to be in flight');
      const cancel = await curlPost(url, { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 'slow', reason: 'test' } }, headers);
      expect(cancel.status).toBe(202);
      const answer = await batch;
      expect(answer.status).toBe(200);
      expect(answer.json).toEqual([
        expect.objectContaining({
          id: 'echo',
          result: expect.objectContaining({ content: [expect.objectContaining({ text: expect.stringContaining('kept') })] }),
        }),
      ]);
    } finally {
      await client.close();
    }
  });
});
