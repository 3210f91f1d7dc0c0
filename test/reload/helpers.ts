/**
 * What the reload tests share (issue 20, docs/operations.md "Reload"): a real `mcp-guard serve`
 * whose config file the test rewrites and then reloads (SIGHUP, or a write-and-rename with
 * `watch_config`), real server-everything stdio children carrying the test's marker (found with
 * ps, ended by pid), API keys made the way `mcp-guard keygen` makes them, raw HTTP sessions for
 * exact status codes and the official SDK client for the rest. Every wait is a condition polled
 * within a bound, never a fixed sleep. The listener's host and port are in the file (`port = 0`),
 * not on the command line: see the report of issue 20 on `--port` and reloads.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateApiKey, hashApiKey } from '../../src/auth/key-format.js';
import { CliProcess, NODE, processesWith, q, tempDir, waitFor } from '../helpers/cli.js';
import { EVERYTHING } from '../helpers/gateway.js';
import { secret, secretHeaders } from '../helpers/secret-scan.js';

export { q, waitFor };

export interface Key {
  id: string;
  key: string;
  prefix: string;
  hash: string;
}

/** A new API key (as `mcp-guard keygen` makes one) and its argon2id hash. */
export async function newKey(id: string): Promise<Key> {
  const { key, prefix } = generateApiKey();
  secret(key, `reload test key ${id}`);
  return { id, key, prefix, hash: await hashApiKey(key) };
}

export function keyToml(k: Key, extra = ''): string {
  return `[[auth.api_keys]]\nid = ${q(k.id)}\nkey_prefix = ${q(k.prefix)}\nkey_hash = ${q(k.hash)}\n${extra}\n`;
}

export function bearer(k: Key): Record<string, string> {
  return { authorization: `Bearer ${k.key}` };
}

/**
 * server-everything as one shared stdio child (isolation "shared": one process, started with the
 * gateway), named `name` at `/name`; `m` (the test's marker) and `tag` are extra arguments it
 * ignores: the marker finds the child with ps, a new tag makes the server "changed".
 */
export function everything(name: string, m: string, tag = 'v1', extra = ''): string {
  return (
    `[[upstream.servers]]\nname = ${q(name)}\npath_prefix = ${q(`/${name}`)}\ntransport = "stdio"\nisolation = "shared"\n` +
    `command = ${q(NODE)}\nargs = [${[EVERYTHING, 'stdio', `${m}-${name}`, tag].map(q).join(', ')}]\n${extra}\n`
  );
}

/** The `[server]` table every test starts from: the listener in the file (not on the command line), metrics on. */
export function serverTable(extra = ''): string {
  return `[server]\nhost = "127.0.0.1"\nport = 0\nmetrics = true\nshutdown_grace_ms = 20000\n${extra}\n`;
}

export function auditTable(file: string): string {
  return `[audit]\nenabled = true\nfile = ${q(file)}\n`;
}

/** Log messages that end one reload, whatever its result. */
const RELOAD_DONE = new Set(['config reloaded', 'config reloaded: nothing to apply', 'config reload refused: the running config stays']);

/** A running `mcp-guard serve -c FILE` whose file the test rewrites. */
export class ReloadGateway {
  readonly dir: string;
  readonly path: string;
  readonly auditFile: string;
  readonly process: CliProcess;
  base = '';

  constructor(toml: (auditFile: string) => string, options: { env?: Record<string, string | undefined>; running?: CliProcess[] } = {}) {
    this.dir = tempDir();
    this.path = join(this.dir, 'mcp-guard.toml');
    this.auditFile = join(this.dir, 'audit.log');
    writeFileSync(this.path, toml(this.auditFile));
    this.process = new CliProcess(['serve', '-c', this.path], { env: { MCP_GUARD_LOG_LEVEL: 'debug', ...options.env } });
    options.running?.push(this.process);
  }

  get pid(): number {
    return this.process.pid;
  }

  /** Listening, and every configured server started once (/ready 200). */
  async ready(timeoutMs = 30_000): Promise<string> {
    this.base = await this.process.address(timeoutMs);
    await waitFor(async () => (await fetch(`${this.base}/ready`)).status === 200, timeoutMs, '/ready to answer 200');
    return this.base;
  }

  /** The lines that ended a reload so far. */
  reloads(): Array<Record<string, unknown>> {
    return this.process.logLines().filter((l) => RELOAD_DONE.has(l['msg'] as string));
  }

  /** Writes the file in place (a new content). */
  write(toml: string | ((auditFile: string) => string)): void {
    writeFileSync(this.path, typeof toml === 'string' ? toml : toml(this.auditFile));
  }

  /** Writes a temp file next to the config and renames it over the config, as editors do. */
  writeAndRename(toml: string): void {
    const tmp = join(this.dir, `.mcp-guard.toml.${process.hrtime.bigint()}.tmp`);
    writeFileSync(tmp, toml);
    renameSync(tmp, this.path);
  }

  /** Writes `toml` (string, or a function of the audit file), sends SIGHUP and waits for that reload's end: its log line. */
  async reload(toml: string | ((auditFile: string) => string), timeoutMs = 30_000): Promise<Record<string, unknown>> {
    const before = this.reloads().length;
    writeFileSync(this.path, typeof toml === 'string' ? toml : toml(this.auditFile));
    this.process.signal('SIGHUP');
    return this.nextReload(before, timeoutMs);
  }

  /** Waits until more than `before` reloads have ended; returns the first after them. */
  async nextReload(before: number, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    await waitFor(
      () => {
        if (!this.process.running) throw new Error(`mcp-guard exited during a reload:\n${this.process.stderr}`);
        return this.reloads().length > before;
      },
      timeoutMs,
      'the reload to end',
    );
    return this.reloads()[before]!;
  }

  /** The value of one sample of /metrics (0 when absent). */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const text = await (await fetch(`${this.base}/metrics`)).text();
    let total = 0;
    for (const line of text.split('\n')) {
      if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
      const m = /^[^{ ]+(?:\{([^}]*)\})? (\S+)$/.exec(line);
      if (!m) continue;
      const have = Object.fromEntries([...(m[1] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
      if (Object.entries(labels).every(([k, v]) => have[k] === v)) total += Number(m[2]);
    }
    return total;
  }

  /** The audit file's lines (the audit log writes asynchronously: poll with waitFor). */
  audit(): Array<Record<string, unknown>> {
    if (!existsSync(this.auditFile)) return [];
    return readFileSync(this.auditFile, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  /** The audit lines of `config_reloaded`, once there are at least `count`. */
  async reloadAudits(count: number, timeoutMs = 10_000): Promise<Array<Record<string, unknown>>> {
    const lines = () => this.audit().filter((l) => l['event_type'] === 'config_reloaded');
    await waitFor(() => lines().length >= count, timeoutMs, `${count} config_reloaded audit lines`);
    return lines();
  }

  /** The pid of the gateway's child that carries `tag` in its arguments (a stdio upstream), if one runs. */
  childPid(tag: string): number | undefined {
    return processesWith(tag).find((p) => p.ppid === this.pid)?.pid;
  }

  /** Waits for the gateway's child carrying `tag` to run; returns its pid. */
  async waitChild(tag: string, timeoutMs = 20_000): Promise<number> {
    let pid: number | undefined;
    await waitFor(() => (pid = this.childPid(tag)) !== undefined, timeoutMs, `a child carrying ${tag}`);
    return pid!;
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const ACCEPT = 'application/json, text/event-stream';
export const PROTOCOL_VERSION = '2025-06-18';

/** The JSON-RPC message answering `id` in a JSON or SSE body. */
export function answerOf(text: string, id: number | string): any {
  const trimmed = text.trim();
  if (trimmed.startsWith('{')) return JSON.parse(trimmed);
  for (const event of text.split(/\r?\n\r?\n/)) {
    const data = event
      .split(/\r?\n/)
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).trim())
      .join('\n');
    if (!data) continue;
    const message = JSON.parse(data);
    if (message.id === id) return message;
  }
  return undefined;
}

/** One POST to an MCP endpoint, raw: its status, session id and the answer to `body.id`. */
export async function post(
  url: string,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<{ status: number; sessionId: string | null; text: string; message: any }> {
  secretHeaders(headers, 'authorization of a reload test');
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: ACCEPT, 'mcp-protocol-version': PROTOCOL_VERSION, ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let message: any;
  try {
    message = body['id'] === undefined ? undefined : answerOf(text, body['id'] as number);
  } catch {
    message = undefined;
  }
  return { status: res.status, sessionId: res.headers.get('mcp-session-id'), text, message };
}

let nextId = 1000;

/** A raw MCP session: initialize, notifications/initialized, then requests with its Mcp-Session-Id. */
export class RawSession {
  private constructor(
    readonly url: string,
    readonly id: string,
    private readonly headers: Record<string, string>,
  ) {}

  static async open(url: string, headers: Record<string, string> = {}): Promise<RawSession> {
    const init = await post(
      url,
      {
        jsonrpc: '2.0',
        id: nextId++,
        method: 'initialize',
        params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'reload', version: '1' } },
      },
      headers,
    );
    if (init.status !== 200 || !init.sessionId) throw new Error(`initialize on ${url}: HTTP ${init.status} ${init.text.slice(0, 300)}`);
    const session = new RawSession(url, init.sessionId, headers);
    const ack = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, 'mcp-protocol-version': PROTOCOL_VERSION, 'mcp-session-id': session.id, ...headers },
      body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
    });
    await ack.text();
    if (ack.status !== 202) throw new Error(`notifications/initialized: HTTP ${ack.status}`);
    return session;
  }

  request(method: string, params: Record<string, unknown> = {}, headers: Record<string, string> = this.headers) {
    return post(this.url, { jsonrpc: '2.0', id: nextId++, method, params }, { 'mcp-session-id': this.id, ...headers });
  }

  call(name: string, args: Record<string, unknown>, headers?: Record<string, string>) {
    return this.request('tools/call', { name, arguments: args }, headers);
  }
}

/** The official SDK client over streamable HTTP. */
export async function sdkClient(
  url: string,
  options: { headers?: Record<string, string>; onToolsChanged?: () => void } = {},
): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
  secretHeaders(options.headers, 'authorization of a reload test (SDK)');
  const client = new Client({ name: 'reload-test', version: '1.0.0' }, { capabilities: {} });
  if (options.onToolsChanged) client.setNotificationHandler(ToolListChangedNotificationSchema, async () => options.onToolsChanged?.());
  const transport = new StreamableHTTPClientTransport(new URL(url), options.headers ? { requestInit: { headers: options.headers } } : undefined);
  await client.connect(transport);
  return { client, transport };
}

export function textOf(result: unknown): string {
  const content = (result as { content?: Array<{ text?: string }> }).content ?? [];
  return content.map((c) => c.text ?? '').join('');
}
