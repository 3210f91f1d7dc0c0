/**
 * Identities for the isolation tests: API keys made the way `mcp-guard keygen` makes them, and
 * the official SDK client of one identity recording what its server sends it (sampling requests,
 * log lines, errors such as progress for a token it never sent).
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema, LoggingMessageNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { keygen } from '../../src/cli/keys.js';
import type { RunningGateway } from './gateway.js';

export interface Key {
  key: string;
  block: string;
}

export async function makeKey(id: string): Promise<Key> {
  const printed = await keygen({ id });
  const key = printed.split('\n').find((line) => line.startsWith('mcp_'));
  if (!key) throw new Error(`keygen printed no key:\n${printed}`);
  return { key, block: printed.slice(printed.indexOf('[[auth.api_keys]]')) };
}

export const bearer = (key: Key) => ({ authorization: `Bearer ${key.key}` });

/** An official SDK client (v1) of one identity that records what its server sends it. */
export interface Caller {
  client: Client;
  transport: StreamableHTTPClientTransport;
  /** The sampling requests it was asked (prompts as text). */
  sampled: string[];
  logs: unknown[];
  /** Errors the SDK reported, e.g. progress for a token it never sent. */
  errors: string[];
  close(): Promise<void>;
}

export async function connect(url: string, key: Key, options: { sampling?: boolean } = {}): Promise<Caller> {
  const client = new Client({ name: 'isolation-test', version: '1.0.0' }, { capabilities: options.sampling ? { sampling: {} } : {} });
  const caller: Omit<Caller, 'transport' | 'close'> = { client, sampled: [], logs: [], errors: [] };
  if (options.sampling) {
    client.setRequestHandler(CreateMessageRequestSchema, async (request) => {
      const text = JSON.stringify(request.params.messages[0]?.content);
      caller.sampled.push(text);
      return { model: 'test-model', role: 'assistant', content: { type: 'text', text: `sampled: ${text}` } };
    });
  }
  client.setNotificationHandler(LoggingMessageNotificationSchema, async (n) => {
    caller.logs.push(n.params);
  });
  client.onerror = (error) => caller.errors.push(error.message);
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: bearer(key) } });
  await client.connect(transport);
  return {
    ...caller,
    transport,
    async close() {
      await transport.terminateSession().catch(() => undefined);
      await client.close();
    },
  };
}

export function resultText(result: unknown): string {
  const content = (result as { content?: Array<{ text?: string }> }).content ?? [];
  return content.map((c) => c.text ?? '').join('');
}

/** The server's status as /routes shows it. */
export async function route(gw: RunningGateway, name: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${gw.url}/routes`);
  const body = (await res.json()) as { routes: Array<Record<string, unknown>> };
  return body.routes.find((r) => r['name'] === name)!;
}
