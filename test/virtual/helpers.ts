/**
 * Shared by the virtual server suites (test/virtual/*.test.ts): members as TOML, the official SDK
 * client (v1) of one identity recording what the virtual server sends it, list walking, raw
 * requests, metrics and audit lines.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  LoggingMessageNotificationSchema,
  PromptListChangedNotificationSchema,
  ResourceListChangedNotificationSchema,
  ResourceUpdatedNotificationSchema,
  ToolListChangedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';
import { existsSync, readFileSync } from 'node:fs';
import { EverythingServer, freePort, type EverythingTransport } from '../helpers/everything.js';
import { EVERYTHING, NODE, jsonOrUndefined, q } from '../helpers/gateway.js';
import type { Key } from '../helpers/identities.js';

/** The paginating member: test/virtual/fixtures/paged-server.mjs (250 tools, 100 a page, and more). */
export const PAGED = new URL('./fixtures/paged-server.mjs', import.meta.url).pathname;
export const PAGED_TOOLS = 250;

/** A stdio member (server-everything unless `args` say otherwise), named `name` at `/name`. */
export function stdioMember(name: string, args: string[] = [EVERYTHING, 'stdio'], extra = ''): string {
  return `[[upstream.servers]]\nname = ${q(name)}\npath_prefix = "/${name}"\ncommand = ${q(NODE)}\nargs = [${args.map(q).join(', ')}]\n${extra}\n`;
}

/** The paginating fixture as a stdio member. */
export function pagedMember(name: string): string {
  return stdioMember(name, [PAGED]);
}

/** A stdio member whose child exits at once, every time (it gives up quickly: crash_loop). */
export function deadMember(name: string): string {
  return stdioMember(name, ['-e', 'process.exit(3)'], 'restart_backoff_ms = 20\nrestart_backoff_max_ms = 40\nmax_restarts = 1');
}

/** An http (streamable HTTP) or sse member at `url`. */
export function httpMember(name: string, url: string, transport: 'http' | 'sse' = 'http', extra = ''): string {
  return `[[upstream.servers]]\nname = ${q(name)}\npath_prefix = "/${name}"\ntransport = ${q(transport)}\nurl = ${q(url)}\n${extra}\n`;
}

/** A `[[virtual_servers]]` entry. */
export function virtualServer(name: string, servers: string[], extra = ''): string {
  return `[[virtual_servers]]\nname = ${q(name)}\nservers = [${servers.map(q).join(', ')}]\n${extra}\n`;
}

/**
 * server-everything over HTTP on `port` (default: a free one), started up to three times: on a machine
 * whose two cores are busy (the suites run in parallel, each with its children) it can miss the
 * helper's 15 s to listen. A failed attempt is stopped before the next.
 */
export async function startEverything(transport: EverythingTransport, port?: number): Promise<EverythingServer> {
  // The helper's constructor is private (EverythingServer.start makes one): this instance is ours to stop and start again.
  const Made = EverythingServer as unknown as new (transport: EverythingTransport, port: number) => EverythingServer;
  const server = new Made(transport, port ?? (await freePort()));
  await startAgain(server);
  return server;
}

/** Starts a stopped server-everything again on its port, up to three times (see startEverything). */
export async function startAgain(server: EverythingServer): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await server.start();
      return;
    } catch (error) {
      await server.stop();
      if (attempt >= 3) throw error;
    }
  }
}

/** An official SDK client (v1) that records what its virtual server sends it. */
export interface Caller {
  client: Client;
  transport: StreamableHTTPClientTransport;
  /** The prompts of the sampling requests it answered (as JSON text). */
  sampled: string[];
  /** notifications/message params. */
  logs: Array<{ level: string; logger?: string; data: unknown }>;
  /** The list_changed notifications it got, by method. */
  changed: string[];
  /** The URIs of the notifications/resources/updated it got. */
  updated: string[];
  /** How many roots/list and elicitation/create requests it answered. */
  asked: { roots: number; elicitation: number };
  errors: string[];
  close(): Promise<void>;
}

/** What the client declares and answers: sampling (an echo of the prompt), roots (one root), elicitation (accepts). */
export interface ClientOptions {
  sampling?: boolean;
  roots?: boolean;
  elicitation?: boolean;
}

export async function connect(url: string, key?: Key, options: ClientOptions = {}): Promise<Caller> {
  const capabilities: Record<string, object> = {};
  if (options.sampling) capabilities['sampling'] = {};
  if (options.roots) capabilities['roots'] = { listChanged: true };
  if (options.elicitation) capabilities['elicitation'] = {};
  const client = new Client({ name: 'virtual-test', version: '1.0.0' }, { capabilities });
  const caller: Omit<Caller, 'transport' | 'close'> = {
    client,
    sampled: [],
    logs: [],
    changed: [],
    updated: [],
    asked: { roots: 0, elicitation: 0 },
    errors: [],
  };
  if (options.roots) {
    client.setRequestHandler(ListRootsRequestSchema, async () => {
      caller.asked.roots++;
      return { roots: [{ uri: 'file:///virtual-test-root', name: 'virtual-test-root' }] };
    });
  }
  if (options.elicitation) {
    client.setRequestHandler(ElicitRequestSchema, async () => {
      caller.asked.elicitation++;
      return { action: 'accept', content: { name: 'Ada Lovelace', email: 'ada@example.com', age: 36, role: 'engineer' } };
    });
  }
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, async (n) => {
    caller.updated.push(n.params.uri);
  });
  if (options.sampling) {
    client.setRequestHandler(CreateMessageRequestSchema, async (request) => {
      const text = JSON.stringify(request.params.messages[0]?.content);
      caller.sampled.push(text);
      return { model: 'virtual-test-model', role: 'assistant', content: { type: 'text', text: `client sampled ${text}` } };
    });
  }
  client.setNotificationHandler(LoggingMessageNotificationSchema, async (n) => {
    caller.logs.push(n.params as Caller['logs'][number]);
  });
  for (const schema of [ToolListChangedNotificationSchema, PromptListChangedNotificationSchema, ResourceListChangedNotificationSchema]) {
    client.setNotificationHandler(schema, async (n) => {
      caller.changed.push(n.method);
    });
  }
  client.onerror = (error) => caller.errors.push(error.message);
  const headers: Record<string, string> = key ? { authorization: `Bearer ${key.key}` } : {};
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
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

type Lister = 'listTools' | 'listPrompts' | 'listResources' | 'listResourceTemplates';
const ITEMS = { listTools: 'tools', listPrompts: 'prompts', listResources: 'resources', listResourceTemplates: 'resourceTemplates' } as const;

/** Every item of a list, page by page (the cursors walked to the end), and how many pages it took. */
export async function walk(client: Client, lister: Lister): Promise<{ items: Array<Record<string, any>>; pages: number }> {
  const items: Array<Record<string, any>> = [];
  let cursor: string | undefined;
  let pages = 0;
  do {
    const page = (await client[lister](cursor === undefined ? {} : { cursor })) as Record<string, any>;
    pages++;
    items.push(...(page[ITEMS[lister]] as Array<Record<string, any>>));
    cursor = page['nextCursor'] as string | undefined;
    if (pages > 50) throw new Error(`${lister}: more than 50 pages`);
  } while (cursor !== undefined);
  return { items, pages };
}

/** The names (or URIs) of items, counted: a name listed twice shows up as 2. */
export function counts(names: string[]): Map<string, number> {
  const found = new Map<string, number>();
  for (const name of names) found.set(name, (found.get(name) ?? 0) + 1);
  return found;
}

/** The text of a tools/call result. */
export function text(result: unknown): string {
  const content = (result as { content?: Array<{ text?: string }> }).content ?? [];
  return content.map((c) => c.text ?? '').join('');
}

/** One legacy JSON-RPC POST (answer as JSON or one SSE event), with the session id and headers given. */
export async function rawPost(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: any; text: string; headers: Headers }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: JSON.stringify(body),
  });
  const raw = await res.text();
  let json = jsonOrUndefined(raw);
  if (json === undefined) {
    // An SSE answer: the last data line that is a JSON-RPC response.
    const datas = raw
      .split('\n')
      .filter((line) => line.startsWith('data:'))
      .map((line) => jsonOrUndefined(line.slice(5).trim()))
      .filter((m) => Array.isArray(m) || (m && 'id' in m && ('result' in m || 'error' in m)));
    json = datas.at(-1);
  }
  return { status: res.status, json, text: raw, headers: res.headers };
}

/** A value of GET /metrics: the sample whose name and labels are given, or 0 when absent. */
export async function metric(gatewayUrl: string, name: string, labels: Record<string, string>): Promise<number> {
  const body = await (await fetch(`${gatewayUrl}/metrics`)).text();
  for (const line of body.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([label, value]) => line.includes(`${label}="${value}"`))) return Number(line.split(' ').at(-1));
  }
  return 0;
}

/** The audit file's events (parsed lines). */
export function auditEvents(file: string): Array<Record<string, any>> {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Record<string, any>);
}

/** A list cursor as a virtual server makes it (names/ src/virtual/names.ts): what an attacker would forge. */
export function forgedCursor(next: Record<string, string>): string {
  return Buffer.from(JSON.stringify({ v: 1, next }), 'utf8').toString('base64url');
}
