/**
 * One client session on a virtual server: an upstream session per member (each opened the way the
 * member's own route opens one, so per the member's isolation and era), merged into one MCP server.
 * The pipeline sees an ordinary UpstreamSession; everything about members happens here.
 *
 *   initialize        the members asked in parallel; a member that is down is left out and tried
 *                     again in the background: initialize never fails because of one
 *   lists             every live member asked in parallel, its items namespaced (src/virtual/names.ts),
 *                     one cursor for all the members' next pages; a member that is down, fails
 *                     or times out is left out of the answer (logged and counted)
 *   by name / URI     tools/call, prompts/get, resources/read|subscribe|unsubscribe and
 *                     completion/complete go to the member that owns the name, URI or reference
 *   to every member   logging/setLevel, notifications/initialized, roots/list_changed
 *   ping              answered here
 *   server messages   a member's requests (sampling, elicitation, roots) get an id of this session,
 *                     so the client's answer goes back to the member that asked; resource URIs
 *                     and log lines say which member they came from
 *   a member returns  list_changed for tools, prompts and resources, so the client lists again
 */
import { errorMessage } from '../error-message.js';
import {
  ErrorCode,
  errorResponse,
  objectOf,
  type JsonRpcId,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from '../jsonrpc/messages.js';
import type { VirtualServerConfig } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import { LATEST_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS } from '../protocol/versions.js';
import { UpstreamError } from '../upstreams/errors.js';
import type { CloseOptions, OpenSessionOptions, RequestOptions, ResumeState, ServerMessage, SessionHandlers, UpstreamSession } from '../upstreams/upstream.js';
import { GATEWAY_VERSION } from '../version.js';
import { decodeCursor, encodeCursor, type Namespace, type Owned } from './names.js';
import { namespaceOf } from './view.js';

/** What a virtual session needs from the gateway. */
export interface VirtualDeps {
  /** Opens an upstream session on a member, as its own route would (era, isolation, deadline). */
  open(member: string, options: OpenSessionOptions): Promise<UpstreamSession>;
  log: Logger;
  /** A member was left out of an answer or of the session (down, failed, timed out): for the metrics. */
  onOmitted?(member: string, reason: string): void;
}

/** A virtual server as one identity sees it: its name, the members it may reach, their separator. */

/** The lists a virtual server merges: the method, and the key of its items. */
const LISTS: Readonly<Record<string, { key: string; kind: 'name' | 'uri' | 'template' }>> = {
  'tools/list': { key: 'tools', kind: 'name' },
  'prompts/list': { key: 'prompts', kind: 'name' },
  'resources/list': { key: 'resources', kind: 'uri' },
  'resources/templates/list': { key: 'resourceTemplates', kind: 'template' },
};

const CHANGED = ['notifications/tools/list_changed', 'notifications/prompts/list_changed', 'notifications/resources/list_changed'];

/** How long initialize waits for the members to open before it answers with those that have. */
const INITIALIZE_PATIENCE_MS = 5_000;
/** A member that is down is tried again after this long, doubling to RETRY_MAX_MS. */
const RETRY_FIRST_MS = 1_000;
const RETRY_MAX_MS = 30_000;
/** Server requests waiting for the client's answer, at most (the oldest is forgotten first). */
const MAX_PENDING_SERVER_REQUESTS = 1_024;

interface Member {
  name: string;
  session: UpstreamSession | undefined;
  /** Why it is not there (undefined while it is). */
  down: string | undefined;
  retry: NodeJS.Timeout | undefined;
  retryMs: number;
  /** Opening now (at start or on a retry). */
  opening: boolean;
}

export class VirtualSession implements UpstreamSession {
  initializeResult: JsonRpcResponse;
  private readonly names: Namespace;
  private readonly members = new Map<string, Member>();
  /** Server requests forwarded to the client, by the id the client saw: the member and its own id. */
  private readonly serverRequests = new Map<string, { member: string; id: JsonRpcId }>();
  private nextServerRequest = 0;
  /** Requests in flight per member session (ask()), and sessions a reload replaced that end when theirs are done. */
  private readonly busy = new Map<UpstreamSession, number>();
  private readonly retired = new Set<UpstreamSession>();
  private logLevel: string | undefined;
  private initialized = false;
  private eventStream = false;
  private closed = false;

  private constructor(
    private readonly view: VirtualServerConfig,
    private readonly options: OpenSessionOptions,
    private readonly deps: VirtualDeps,
  ) {
    this.names = namespaceOf(view);
    for (const name of view.servers)
      this.members.set(name, { name, session: undefined, down: undefined, retry: undefined, retryMs: RETRY_FIRST_MS, opening: false });
    this.initializeResult = { jsonrpc: '2.0', id: 0, result: {} };
  }

  /**
   * Opens a session on every member at once; resolves when each has opened or failed, or after
   * INITIALIZE_PATIENCE_MS (never rejects): a member that is slow to open (a crash-looping child,
   * a server that accepts connections and never answers) does not hold the client's initialize
   * for its whole timeout. It joins when it opens, and the client is told to list again.
   */
  static async open(view: VirtualServerConfig, options: OpenSessionOptions, deps: VirtualDeps): Promise<VirtualSession> {
    const session = new VirtualSession(view, options, deps);
    const opening = [...session.members.values()].map((member) => ({ member, opened: session.openMember(member) }));
    let patience: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(opening.map(({ opened }) => opened)), new Promise((resolve) => (patience = setTimeout(resolve, INITIALIZE_PATIENCE_MS)))]);
    clearTimeout(patience);
    for (const { member, opened } of opening) {
      if (!member.opening) continue;
      void opened.then(async (ok) => {
        if (ok) await session.joined(member);
      });
    }
    session.initializeResult = session.merged();
    return session;
  }

  /** Members whose session is open now. */
  private live(): Array<{ name: string; session: UpstreamSession }> {
    const found: Array<{ name: string; session: UpstreamSession }> = [];
    for (const member of this.members.values()) if (member.session) found.push({ name: member.name, session: member.session });
    return found;
  }

  private async openMember(member: Member): Promise<boolean> {
    member.opening = true;
    let opened: UpstreamSession | undefined;
    const handlers: SessionHandlers = {
      onMessage: (message) => this.fromMember(member.name, message, (m) => this.options.handlers.onMessage(m)),
      // Only the member's current session: one replaced by a reload may end after its successor opened.
      onClose: (reason) => {
        if (opened !== undefined && member.session === opened) this.memberClosed(member, reason);
      },
    };
    const options: OpenSessionOptions = { forwardPath: '', handlers, owner: this.options.owner };
    if (this.options.initialize) options.initialize = this.options.initialize;
    if (this.options.shared) options.shared = true;
    try {
      const session = await this.deps.open(member.name, options);
      opened = session;
      const init = session.initializeResult;
      if ('error' in init) {
        void session.close();
        throw new Error(`initialize failed: ${init.error.message}`);
      }
      if (this.closed) {
        void session.close();
        return false;
      }
      member.session = session;
      member.down = undefined;
      member.retryMs = RETRY_FIRST_MS;
      return true;
    } catch (err) {
      member.opening = false;
      // Logged when it goes down, not on every retry that finds it still down (counted each time).
      const quiet = member.down !== undefined;
      member.down = errorMessage(err);
      this.omitted(member.name, member.down, quiet);
      this.retryLater(member);
      return false;
    } finally {
      member.opening = false;
    }
  }

  /** A member that is down is tried again in the background while this session lives. */
  private retryLater(member: Member): void {
    if (this.closed || member.retry || member.opening) return;
    const delay = member.retryMs;
    member.retryMs = Math.min(RETRY_MAX_MS, member.retryMs * 2);
    member.retry = setTimeout(() => {
      member.retry = undefined;
      void this.rejoin(member);
    }, delay);
    member.retry.unref();
  }

  /** A member that was down is tried again. */
  private async rejoin(member: Member): Promise<void> {
    if (this.closed || member.session) return;
    if (await this.openMember(member)) await this.joined(member);
  }

  /** A member opened after the others: it gets what the client has set up so far, and the client lists again. */
  private async joined(member: Member): Promise<void> {
    const session = member.session;
    if (!session || this.closed) return;
    this.deps.log.info({ server: member.name }, 'a member of a virtual server joined');
    if (this.eventStream) await session.openEventStream();
    if (this.initialized) await session.send({ jsonrpc: '2.0', method: 'notifications/initialized' }).catch(() => undefined);
    if (this.logLevel !== undefined) {
      const setLevel: JsonRpcRequest = { jsonrpc: '2.0', id: 'virtual-set-level', method: 'logging/setLevel', params: { level: this.logLevel } };
      await session.request(setLevel, { onMessage: () => undefined }).catch(() => undefined);
    }
    this.listsChanged();
  }

  /**
   * A reload changed this member's server: its session here is reopened on the server's new
   * upstream (the old one ends once the calls it carries have), and the client lists again.
   */
  memberReplaced(name: string): void {
    const member = this.members.get(name);
    if (!member || this.closed) return;
    const old = member.session;
    member.session = undefined;
    member.down = 'its server was reconfigured';
    // A late answer to the old session's request must not reach the new one under a reused id.
    for (const [id, pending] of this.serverRequests) if (pending.member === name) this.serverRequests.delete(id);
    if (old) this.retire(old);
    if (member.retry) clearTimeout(member.retry);
    member.retry = undefined;
    member.retryMs = RETRY_FIRST_MS;
    if (!member.opening) void this.rejoin(member);
  }

  /** Ends a member session that is no longer used, once the requests it carries are done. */
  private retire(session: UpstreamSession): void {
    if ((this.busy.get(session) ?? 0) === 0) void session.close().catch(() => undefined);
    else this.retired.add(session);
  }

  /** Sends a request on a member's session, counted so that a retired session ends after it. */
  private async ask(session: UpstreamSession, request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    this.busy.set(session, (this.busy.get(session) ?? 0) + 1);
    try {
      return await session.request(request, options);
    } finally {
      const left = (this.busy.get(session) ?? 1) - 1;
      if (left > 0) this.busy.set(session, left);
      else {
        this.busy.delete(session);
        if (this.retired.delete(session)) void session.close().catch(() => undefined);
      }
    }
  }

  private memberClosed(member: Member, reason: string): void {
    if (this.closed) return;
    member.session = undefined;
    member.down = reason;
    for (const [id, pending] of this.serverRequests) if (pending.member === member.name) this.serverRequests.delete(id);
    this.omitted(member.name, `its session ended: ${reason}`);
    this.listsChanged();
    this.retryLater(member);
  }

  /** A member left out of an answer or of the session: counted always, logged unless `quiet` (it was down already). */
  private omitted(member: string, reason: string, quiet = false): void {
    const fields = { server: member, reason };
    if (quiet) this.deps.log.debug(fields, 'a member of a virtual server is left out');
    else this.deps.log.warn(fields, 'a member of a virtual server is left out');
    this.deps.onOmitted?.(member, reason);
  }

  /** Tells the client its lists changed (once it has initialized: notifications before that are not allowed). */
  private listsChanged(): void {
    if (!this.initialized || this.closed) return;
    for (const method of CHANGED) this.options.handlers.onMessage({ jsonrpc: '2.0', method });
  }

  /**
   * The answer to the client's initialize: what the members offer, merged. Every capability a
   * member may bring is declared whatever is up now (a member that returns must not need a new
   * session), with list_changed, which the virtual server always sends when its members change.
   */
  private merged(): JsonRpcResponse {
    const requested = this.options.initialize?.params?.['protocolVersion'];
    const protocolVersion = typeof requested === 'string' && SUPPORTED_PROTOCOL_VERSIONS.includes(requested) ? requested : LATEST_PROTOCOL_VERSION;
    const instructions: string[] = [];
    let subscribe = false;
    for (const { name, session } of this.live()) {
      const init = session.initializeResult;
      const result = 'result' in init ? init.result : {};
      const text = result['instructions'];
      if (typeof text === 'string' && text.trim() !== '') instructions.push(`## ${name}\n\n${text.trim()}`);
      if (objectOf(objectOf(result['capabilities'])?.['resources'])?.['subscribe'] === true) subscribe = true;
    }
    const result: Record<string, unknown> = {
      protocolVersion,
      capabilities: {
        tools: { listChanged: true },
        prompts: { listChanged: true },
        resources: { subscribe, listChanged: true },
        logging: {},
        completions: {},
      },
      serverInfo: { name: this.view.name, title: `${this.view.name} (MCP Guard virtual server)`, version: GATEWAY_VERSION },
    };
    if (instructions.length > 0) result['instructions'] = instructions.join('\n\n');
    return { jsonrpc: '2.0', id: this.options.initialize?.id ?? 0, result };
  }

  async request(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    const method = request.method;
    const list = LISTS[method];
    if (list) return this.list(request, list.key, list.kind, options);
    switch (method) {
      case 'ping':
        return { jsonrpc: '2.0', id: request.id, result: {} };
      case 'tools/call':
      case 'prompts/get':
        return this.byName(request, options);
      case 'resources/read':
      case 'resources/subscribe':
      case 'resources/unsubscribe':
        return this.byUri(request, options);
      case 'completion/complete':
        return this.byReference(request, options);
      case 'logging/setLevel':
        return this.setLevel(request, options);
      default:
        return errorResponse(request.id, ErrorCode.MethodNotFound, `Method not found: ${method} is not available on virtual server "${this.view.name}"`);
    }
  }

  /**
   * A list from every live member at once, each item namespaced, with one cursor for the members'
   * next pages. A member that fails, times out or is down is left out of this answer only.
   */
  private async list(request: JsonRpcRequest, key: string, kind: 'name' | 'uri' | 'template', options: RequestOptions): Promise<JsonRpcResponse> {
    const params = { ...(request.params ?? {}) };
    const cursor = params['cursor'];
    delete params['cursor'];
    // Progress from several members under one token would interleave: a merged list reports none.
    const meta = objectOf(params['_meta']);
    if (meta && 'progressToken' in meta) {
      const { progressToken: _dropped, ...rest } = meta;
      params['_meta'] = rest;
    }
    let plan: Array<[string, string | undefined]>;
    if (cursor === undefined) plan = [...this.members.keys()].map((name) => [name, undefined]);
    else {
      const decoded = decodeCursor(cursor, this.names);
      if (!decoded) return errorResponse(request.id, ErrorCode.InvalidParams, 'Invalid params: unknown cursor (start the list again without one)');
      plan = [...decoded];
    }
    const pages = await Promise.all(
      plan.map(async ([name, own]) => {
        const session = this.members.get(name)?.session;
        if (!session) {
          this.omitted(name, this.members.get(name)?.down ?? 'down', true);
          return undefined;
        }
        const asked: JsonRpcRequest = {
          jsonrpc: '2.0',
          id: request.id,
          method: request.method,
          params: own === undefined ? params : { ...params, cursor: own },
        };
        try {
          const response = await this.ask(session, asked, this.relayed(name, options));
          if ('error' in response) {
            // A member that refuses the cursor it gave (stale, or forged inside ours) fails the
            // page: leaving it out would end the client's list early without a word.
            if (own !== undefined) return { name, result: undefined, refused: response.error };
            this.omitted(name, `${request.method}: ${response.error.message}`);
            return undefined;
          }
          return { name, result: response.result, refused: undefined };
        } catch (err) {
          if (err instanceof UpstreamError && err.kind === 'cancelled') throw err;
          this.omitted(name, `${request.method}: ${errorMessage(err)}`);
          return undefined;
        }
      }),
    );
    const items: unknown[] = [];
    const next = new Map<string, string>();
    for (const page of pages) {
      if (page?.refused) {
        return errorResponse(
          request.id,
          page.refused.code,
          `${page.refused.message} (server "${page.name}", continuing a list of virtual server "${this.view.name}")`,
        );
      }
    }
    for (const page of pages) {
      if (!page?.result) continue;
      const found = page.result[key];
      if (Array.isArray(found)) for (const item of found) pushRenamed(items, item, page.name, kind, this.names);
      const more = page.result['nextCursor'];
      if (typeof more === 'string' && more !== '') next.set(page.name, more);
    }
    const result: Record<string, unknown> = { [key]: items };
    const nextCursor = encodeCursor(next);
    if (nextCursor !== undefined) result['nextCursor'] = nextCursor;
    return { jsonrpc: '2.0', id: request.id, result };
  }

  /** tools/call and prompts/get: to the member whose name prefixes the tool's or prompt's. */
  private async byName(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    const name = request.params?.['name'];
    const owned = typeof name === 'string' ? this.names.splitName(name) : undefined;
    const what = request.method === 'tools/call' ? 'tool' : 'prompt';
    if (!owned) {
      return errorResponse(
        request.id,
        ErrorCode.InvalidParams,
        `Unknown ${what}: ${JSON.stringify(name)} (on virtual server "${this.view.name}" each ${what} is named <server>${this.view.separator}<name>)`,
      );
    }
    const response = await this.toMember(owned, { ...request, params: { ...request.params, name: owned.own } }, options);
    return this.withMemberUris(owned.member, response);
  }

  /** resources/read, subscribe and unsubscribe: to the member whose URI it is. */
  private async byUri(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    const uri = request.params?.['uri'];
    const owned = typeof uri === 'string' ? this.names.splitUri(uri) : undefined;
    if (!owned) return unknownResource(request.id, uri, this.view.name);
    const response = await this.toMember(owned, { ...request, params: { ...request.params, uri: owned.own } }, options);
    return this.withMemberUris(owned.member, response);
  }

  /** completion/complete: to the member of the prompt or resource its reference names. */
  private async byReference(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    const ref = objectOf(request.params?.['ref']);
    let owned: Owned | undefined;
    let rewritten: Record<string, unknown> | undefined;
    if (ref?.['type'] === 'ref/prompt' && typeof ref['name'] === 'string') {
      owned = this.names.splitName(ref['name']);
      if (owned) rewritten = { ...ref, name: owned.own };
    } else if (ref?.['type'] === 'ref/resource' && typeof ref['uri'] === 'string') {
      owned = this.names.splitUri(ref['uri']);
      if (owned) rewritten = { ...ref, uri: owned.own };
    }
    if (!owned || !rewritten)
      return errorResponse(
        request.id,
        ErrorCode.InvalidParams,
        `Invalid params: the reference names no prompt or resource of virtual server "${this.view.name}"`,
      );
    return this.toMember(owned, { ...request, params: { ...request.params, ref: rewritten } }, options);
  }

  /** logging/setLevel: to every live member, remembered for those that join later. */
  private async setLevel(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    const level = request.params?.['level'];
    if (typeof level === 'string') this.logLevel = level;
    await Promise.all(
      this.live().map(({ name, session }) =>
        this.ask(session, request, this.relayed(name, options)).then(
          (response) => {
            if ('error' in response) this.deps.log.info({ server: name, err: response.error.message }, 'a member refused logging/setLevel');
          },
          (err: unknown) => this.omitted(name, `logging/setLevel: ${errorMessage(err)}`),
        ),
      ),
    );
    return { jsonrpc: '2.0', id: request.id, result: {} };
  }

  private toMember(owned: Owned, request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    const member = this.members.get(owned.member)!;
    if (!member.session) {
      return Promise.reject(new UpstreamError('unavailable', owned.member, `Upstream '${owned.member}' is unavailable: ${member.down ?? 'not connected'}`));
    }
    return this.ask(member.session, request, this.relayed(owned.member, options));
  }

  /** The request's options, its relay seeing a member's messages as this session presents them. */
  private relayed(member: string, options: RequestOptions): RequestOptions {
    const relay = options.onMessage;
    return { ...options, onMessage: (message) => this.fromMember(member, message, relay) };
  }

  /** A message from a member, as the client sees it: its server requests renumbered, its URIs and log lines the member's. */
  private fromMember(member: string, message: ServerMessage, deliver: (message: ServerMessage) => void): void {
    if ('id' in message) {
      const id = `${this.view.name}-${++this.nextServerRequest}`;
      if (this.serverRequests.size >= MAX_PENDING_SERVER_REQUESTS) this.serverRequests.delete(this.serverRequests.keys().next().value as string);
      this.serverRequests.set(id, { member, id: message.id });
      deliver({ ...message, id });
      return;
    }
    deliver(this.notificationOf(member, message));
  }

  private notificationOf(member: string, message: JsonRpcNotification): JsonRpcNotification {
    const params = message.params;
    if (message.method === 'notifications/resources/updated' && typeof params?.['uri'] === 'string') {
      return { ...message, params: { ...params, uri: this.names.uri(member, params['uri']) } };
    }
    if (message.method === 'notifications/message' && params) {
      const logger = params['logger'];
      return { ...message, params: { ...params, logger: typeof logger === 'string' && logger !== '' ? `${member}/${logger}` : member } };
    }
    return message;
  }

  /** Resource links and embedded resources in a member's result, under the URIs the client knows. */
  private withMemberUris(member: string, response: JsonRpcResponse): JsonRpcResponse {
    if (!('result' in response) || !mentionsUris(response.result)) return response;
    const result = response.result;
    const rename = (uri: unknown) => (typeof uri === 'string' ? this.names.uri(member, uri) : uri);
    const content = (item: unknown): unknown => {
      const block = objectOf(item);
      if (!block) return item;
      if (block['type'] === 'resource_link') return { ...block, uri: rename(block['uri']) };
      const resource = objectOf(block['resource']);
      if (block['type'] === 'resource' && resource) return { ...block, resource: { ...resource, uri: rename(resource['uri']) } };
      return item;
    };
    if (Array.isArray(result['content'])) return { ...response, result: { ...result, content: result['content'].map(content) } };
    if (Array.isArray(result['contents'])) {
      return {
        ...response,
        result: { ...result, contents: result['contents'].map((c: unknown) => (objectOf(c) ? { ...objectOf(c), uri: rename(objectOf(c)!['uri']) } : c)) },
      };
    }
    if (Array.isArray(result['messages'])) {
      const messages = result['messages'].map((m: unknown) => (objectOf(m) ? { ...objectOf(m), content: content(objectOf(m)!['content']) } : m));
      return { ...response, result: { ...result, messages } };
    }
    return response;
  }

  /** The client's notifications and answers: an answer to the member that asked, set-up to every member. */
  async send(message: JsonRpcNotification | JsonRpcResponse): Promise<void> {
    if (!('method' in message)) {
      const key = typeof message.id === 'string' ? message.id : undefined;
      const pending = key === undefined ? undefined : this.serverRequests.get(key);
      if (!pending || key === undefined) {
        this.deps.log.warn({ id: message.id }, 'dropped an answer to no server request of this virtual session');
        return;
      }
      this.serverRequests.delete(key);
      await this.members.get(pending.member)?.session?.send({ ...message, id: pending.id });
      return;
    }
    if (message.method === 'notifications/initialized') this.initialized = true;
    else if (message.method !== 'notifications/roots/list_changed') return;
    await Promise.all(this.live().map(({ session }) => session.send(message).catch(() => undefined)));
  }

  async openEventStream(): Promise<void> {
    this.eventStream = true;
    await Promise.all(this.live().map(({ session }) => session.openEventStream()));
  }

  closeEventStream(): void {
    this.eventStream = false;
    for (const { session } of this.live()) session.closeEventStream();
  }

  /**
   * Each member as it can be taken up (null: it cannot, and is left out on another replica); a
   * member that is not open now is opened there, as a member that joins late is here.
   */
  resumeState(): ResumeState {
    const members: Record<string, ResumeState | null> = {};
    for (const { name, session } of this.live()) members[name] = session.resumeState?.() ?? null;
    return { kind: 'virtual', members };
  }

  async close(options?: CloseOptions): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const sessions: UpstreamSession[] = [];
    for (const member of this.members.values()) {
      if (member.retry) clearTimeout(member.retry);
      member.retry = undefined;
      if (member.session) sessions.push(member.session);
      member.session = undefined;
    }
    sessions.push(...this.retired);
    this.retired.clear();
    this.serverRequests.clear();
    await Promise.all(sessions.map((s) => s.close(options).catch(() => undefined)));
  }
}

/** Whether a call's, read's or prompt's result holds a URI to rename (most tool results hold none: nothing is copied then). */
function mentionsUris(result: Record<string, unknown>): boolean {
  const blocks = result['content'] ?? result['messages'];
  if (Array.isArray(result['contents'])) return true;
  if (!Array.isArray(blocks)) return false;
  for (const item of blocks) {
    const block = objectOf(item);
    const type = objectOf(block?.['content'])?.['type'] ?? block?.['type'];
    if (type === 'resource_link' || type === 'resource') return true;
  }
  return false;
}

/** A member's list item under its namespaced name or URI; an item without one is left out. */
function pushRenamed(items: unknown[], item: unknown, member: string, kind: 'name' | 'uri' | 'template', names: Namespace): void {
  const entry = objectOf(item);
  if (!entry) return;
  if (kind === 'name' && typeof entry['name'] === 'string') items.push({ ...entry, name: names.name(member, entry['name']) });
  else if (kind === 'uri' && typeof entry['uri'] === 'string') items.push({ ...entry, uri: names.uri(member, entry['uri']) });
  else if (kind === 'template' && typeof entry['uriTemplate'] === 'string') items.push({ ...entry, uriTemplate: names.uri(member, entry['uriTemplate']) });
}

function unknownResource(id: JsonRpcId, uri: unknown, virtual: string): JsonRpcResponse {
  return errorResponse(
    id,
    ErrorCode.InvalidParams,
    `Unknown resource: ${JSON.stringify(uri)} (on virtual server "${virtual}" resource URIs are mcp-guard://<server>/<the server's own URI>)`,
  );
}
