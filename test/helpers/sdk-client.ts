/**
 * The official SDK client as the downstream of the end-to-end tests: Client over
 * StreamableHTTPClientTransport, optionally declaring sampling (with a handler whose answer the
 * tests look for) and sending its own headers.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { secretHeaders } from './secret-scan.js';

export interface SdkConnectOptions {
  /** Declare sampling and answer every sampling/createMessage with "sampled: <first message>". */
  sampling?: boolean;
  /** Headers the client sends with every request (e.g. its own Authorization). */
  headers?: Record<string, string>;
  /** Called for each notifications/tools/list_changed (registered before connecting). */
  onToolsChanged?: () => void;
}

export interface SdkConnection {
  client: Client;
  transport: StreamableHTTPClientTransport;
}

export async function connectSdk(url: string, options: SdkConnectOptions = {}): Promise<SdkConnection> {
  secretHeaders(options.headers, 'authorization sent by the SDK client');
  const client = new Client({ name: 'e2e', version: '1.0.0' }, { capabilities: options.sampling ? { sampling: {} } : {} });
  if (options.sampling) {
    client.setRequestHandler(CreateMessageRequestSchema, async (request) => ({
      model: 'test-model',
      role: 'assistant',
      content: { type: 'text', text: `sampled: ${JSON.stringify(request.params.messages[0]?.content)}` },
    }));
  }
  if (options.onToolsChanged) client.setNotificationHandler(ToolListChangedNotificationSchema, async () => options.onToolsChanged?.());
  const transport = new StreamableHTTPClientTransport(new URL(url), options.headers ? { requestInit: { headers: options.headers } } : undefined);
  await client.connect(transport);
  return { client, transport };
}

/** The text of a tools/call result. */
export function resultText(result: unknown): string {
  const content = (result as { content: Array<{ type: string; text?: string }> }).content;
  return content.map((c) => c.text ?? '').join('');
}
