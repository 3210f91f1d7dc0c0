/**
 * `mcp-guard pin [-c FILE] [--server NAME] [--approve SERVER:NAME]`: writes the pin file of
 * `[tool_integrity]` (docs/tool-integrity.md) from what the servers list now.
 *
 * It sees each server exactly as the gateway does, so that an unchanged tool is never flagged:
 * through the gateway's own upstream layer (src/mcp/gateway.ts), the same transports, era probe
 * and handshake, on the session the gateway opens for itself, and once more as a client that
 * declares every capability the gateway relays (sampling, elicitation, roots): some servers
 * offer tools only to clients that can be asked something (server-everything does), and those
 * are pinned too. Every page of tools/list and prompts/list is read.
 *
 *   (none)             every configured server; the file is rewritten (servers no longer
 *                      configured leave it)
 *   --server NAME      that server's entries only; the others stay as they are
 *   --approve S:NAME   the tool (and prompt) NAME of server S only: accepts a changed definition
 *
 * Nothing is written when a server cannot be listed: a pin file must not lose entries to an outage.
 */
import type { GatewayConfig, ServerConfig } from '../config/schema.js';
import { errorMessage } from '../error-message.js';
import { definitionOf, listMember, type PinKind } from '../integrity/definitions.js';
import { emptyServerPins, pinFor, pinsOf, readPins, writePins, type Pins, type ServerPins } from '../integrity/pin-file.js';
import type { JsonRpcRequest } from '../jsonrpc/messages.js';
import { Gateway } from '../mcp/gateway.js';
import type { Logger } from '../observability/logger.js';
import { LATEST_PROTOCOL_VERSION } from '../protocol/versions.js';
import { createUpstream } from '../upstreams/factory.js';
import type { UpstreamSession } from '../upstreams/upstream.js';
import { GATEWAY_VERSION } from '../version.js';

export interface PinOptions {
  server?: string | undefined;
  approve?: string | undefined;
}

/** What the command prints and its exit code. */
export interface PinReport {
  code: number;
  stdout: string;
  stderr: string;
}

/** Pages of a list followed at most (a server that loops its cursor must not hang the command). */
const MAX_PAGES = 100;
/** The owner of the sessions `pin` opens (src/upstreams/upstream.ts OpenSessionOptions.owner). */
const PIN_OWNER = 'gateway:pin';

export const DEFAULT_PIN_FILE = 'mcp-guard.pins.json';

export async function pin(config: GatewayConfig, options: PinOptions, log: Logger): Promise<PinReport> {
  const path = config.tool_integrity?.pin_file ?? DEFAULT_PIN_FILE;
  const approve = options.approve === undefined ? undefined : splitApproval(options.approve);
  if (approve && 'error' in approve) return { code: 2, stdout: '', stderr: approve.error };
  const only = approve?.server ?? options.server;
  const servers = only === undefined ? config.servers : config.servers.filter((s) => s.name === only);
  if (only !== undefined && servers.length === 0) {
    return { code: 1, stdout: '', stderr: `no server named ${JSON.stringify(only)} (servers: ${config.servers.map((s) => s.name).join(', ')})` };
  }
  let existing: Pins;
  try {
    existing = (await readPins(path)).pins;
  } catch (err) {
    return { code: 1, stdout: '', stderr: `${errorMessage(err)}; nothing written` };
  }
  const gateway = new Gateway({ ...config, servers, virtual_servers: [] }, (server) => createUpstream(server, { logger: log }), log);
  let listed: Array<{ server: ServerConfig; pins: ServerPins; notes: string[] } | { server: ServerConfig; error: string }>;
  try {
    await gateway.start();
    listed = await Promise.all(
      servers.map((server) =>
        pinsOfServer(gateway, server).then(
          (found) => ({ server, ...found }),
          (err: unknown) => ({ server, error: errorMessage(err) }),
        ),
      ),
    );
  } finally {
    await gateway.close();
  }
  const failed = listed.filter((l): l is { server: ServerConfig; error: string } => 'error' in l);
  if (failed.length > 0) {
    return { code: 1, stdout: '', stderr: `${failed.map((f) => `${f.server.name}: ${f.error}`).join('\n')}\nnothing written to ${path}` };
  }
  const next: Pins = only === undefined ? new Map() : new Map(existing);
  const lines: string[] = [];
  const notes: string[] = [];
  for (const entry of listed) {
    if ('error' in entry) continue;
    const name = entry.server.name;
    notes.push(...entry.notes.map((n) => `${name}: ${n}`));
    const before = existing.get(name) ?? emptyServerPins();
    if (approve) {
      const merged: ServerPins = { tools: new Map(before.tools), prompts: new Map(before.prompts) };
      const approved: string[] = [];
      for (const kind of ['tool', 'prompt'] as const) {
        const found = pinsOf(entry.pins, kind).get(approve.name);
        if (!found) continue;
        pinsOf(merged, kind).set(approve.name, found);
        const was = pinsOf(before, kind).get(approve.name);
        approved.push(`${kind} ${approve.name} ${was === undefined ? 'pinned (new)' : was.sha256 === found.sha256 ? 'unchanged' : 'approved (changed)'}`);
      }
      if (approved.length === 0)
        return { code: 1, stdout: '', stderr: `${name} lists no tool or prompt named ${JSON.stringify(approve.name)}; nothing written` };
      next.set(name, merged);
      lines.push(`${name}: ${approved.join(', ')}`);
    } else {
      next.set(name, entry.pins);
      lines.push(`${name}: ${summary(before, entry.pins)}`);
    }
  }
  try {
    await writePins(path, next);
  } catch (err) {
    return { code: 1, stdout: '', stderr: `pin file ${path}: cannot be written: ${errorMessage(err)}` };
  }
  return { code: 0, stdout: `${lines.join('\n')}\nwrote ${path}\n`, stderr: notes.map((n) => `note: ${n}\n`).join('') };
}

/** `SERVER:NAME` (a server name has no ":"; a tool name may). */
function splitApproval(text: string): { server: string; name: string } | { error: string } {
  const at = text.indexOf(':');
  if (at <= 0 || at === text.length - 1) return { error: `--approve takes SERVER:TOOL, got ${JSON.stringify(text)}` };
  return { server: text.slice(0, at), name: text.slice(at + 1) };
}

/** What changed in one server's pins, in a few words. */
function summary(before: ServerPins, after: ServerPins): string {
  const parts: string[] = [];
  for (const kind of ['tool', 'prompt'] as const) {
    const old = pinsOf(before, kind);
    const now = pinsOf(after, kind);
    const changed = [...now].filter(([n, p]) => old.has(n) && old.get(n)!.sha256 !== p.sha256).map(([n]) => n);
    const added = [...now.keys()].filter((n) => !old.has(n));
    const removed = [...old.keys()].filter((n) => !now.has(n));
    let text = `${now.size} ${kind}${now.size === 1 ? '' : 's'}`;
    const detail = [
      ...(changed.length ? [`changed: ${changed.join(', ')}`] : []),
      ...(added.length && old.size ? [`new: ${added.join(', ')}`] : []),
      ...(removed.length ? [`gone: ${removed.join(', ')}`] : []),
    ];
    if (detail.length) text += ` (${detail.join('; ')})`;
    parts.push(text);
  }
  return parts.join(', ');
}

/**
 * A server's tools and prompts as the gateway sees them: on its own session (as session-less
 * and 2026-07-28 clients get them), then on a session opened for a client that declares every
 * capability the gateway relays; the union, the first definition kept when the two differ.
 */
async function pinsOfServer(gateway: Gateway, server: ServerConfig): Promise<{ pins: ServerPins; notes: string[] }> {
  const pins = emptyServerPins();
  const notes: string[] = [];
  const own = await gateway.sharedSession(server, '', PIN_OWNER);
  try {
    await collect(own, pins, notes, 'the gateway');
  } finally {
    gateway.releaseShared(server, '', PIN_OWNER);
  }
  const initialize: JsonRpcRequest = {
    jsonrpc: '2.0',
    id: 0,
    method: 'initialize',
    params: {
      protocolVersion: LATEST_PROTOCOL_VERSION,
      capabilities: { sampling: {}, elicitation: { form: {}, url: {} }, roots: { listChanged: true } },
      clientInfo: { name: 'mcp-guard pin', version: GATEWAY_VERSION },
    },
  };
  const opened = await gateway.initialize(server, '', initialize, `${PIN_OWNER}:client`);
  if (opened.session) {
    try {
      // As a client does: servers offer what depends on the client's capabilities once it is initialized.
      await opened.session.upstream.send({ jsonrpc: '2.0', method: 'notifications/initialized' });
      await collect(opened.session.upstream, pins, notes, 'a client that can be asked');
    } finally {
      await gateway.sessions.close(opened.session, 'pinned');
    }
  }
  return { pins, notes };
}

async function collect(session: UpstreamSession, into: ServerPins, notes: string[], as: string): Promise<void> {
  for (const kind of ['tool', 'prompt'] as const) {
    for (const item of await listAll(session, kind)) {
      const name = item['name'];
      if (typeof name !== 'string') continue;
      const found = pinFor(definitionOf(kind, item));
      const known = pinsOf(into, kind).get(name);
      if (known === undefined) pinsOf(into, kind).set(name, found);
      else if (known.sha256 !== found.sha256) notes.push(`${kind} ${name} is defined differently for ${as}: the first definition is pinned`);
    }
  }
}

/** Every item of tools/list or prompts/list, every page; none when the server has no such list. */
async function listAll(session: UpstreamSession, kind: PinKind): Promise<Array<Record<string, unknown>>> {
  const items: Array<Record<string, unknown>> = [];
  let cursor: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    const method = kind === 'tool' ? 'tools/list' : 'prompts/list';
    const response = await session.request(
      { jsonrpc: '2.0', id: page + 1, method, ...(cursor === undefined ? {} : { params: { cursor } }) },
      { onMessage: () => undefined },
    );
    if ('error' in response) {
      // A server without prompts (or tools) says so with -32601: it has none to pin.
      if (response.error.code === -32601) return items;
      throw new Error(`${method} failed: ${response.error.message}`);
    }
    const listed = response.result[listMember(kind)];
    if (Array.isArray(listed)) for (const item of listed) if (item !== null && typeof item === 'object') items.push(item as Record<string, unknown>);
    const next = response.result['nextCursor'];
    if (typeof next !== 'string' || next === '') return items;
    cursor = next;
  }
  return items;
}
