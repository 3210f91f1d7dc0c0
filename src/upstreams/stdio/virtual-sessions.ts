/**
 * Several client sessions over one stdio child, which is one MCP session.
 *
 * The gateway owns the child's session: it sends the one `initialize` itself, declaring the client
 * capabilities it can relay (sampling, elicitation, roots), and answers each client's own
 * handshake from the child's reply. Each client gets a VirtualSession; what the child holds once
 * for all of them is shared here: a resource subscription is asked of the child for its first
 * subscriber only and released with its last, and survives a restart of the child.
 *
 * A session's requests go to the child through the upstream (upstream.ts, SessionChannel); what
 * the child writes back reaches the sessions through server-messages.ts.
 */
import type { StdioServerConfig } from '../../config/schema.js';
import { idKey, objectOf, type JsonRpcMessage, type JsonRpcNotification, type JsonRpcRequest, type JsonRpcResponse } from '../../jsonrpc/messages.js';
import { LATEST_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS } from '../../protocol/versions.js';
import { GATEWAY_NAME, GATEWAY_VERSION } from '../../version.js';
import { UpstreamError } from '../errors.js';
import type { RequestOptions, ResumeState, ServerMessage, SessionHandlers, UpstreamSession } from '../upstream.js';

const REOPEN: ResumeState = { kind: 'reopen' };

/** The child's answer to the gateway's initialize: every client's own initialize is answered from it. */
export interface ChildInit {
  protocolVersion: string;
  result: Record<string, unknown>;
}

/**
 * The client capabilities the gateway declares to the child: the ones it can relay to a client.
 * Roots only with relay_roots: a shared child would apply one client's roots to every client.
 */
function relayedCapabilities(config: StdioServerConfig): Record<string, object> {
  return config.relay_roots ? { sampling: {}, elicitation: {}, roots: { listChanged: true } } : { sampling: {}, elicitation: {} };
}

/** The gateway's own initialize to the child (id 0). */
export function initializeRequest(config: StdioServerConfig): JsonRpcRequest {
  return {
    jsonrpc: '2.0',
    id: 0,
    method: 'initialize',
    params: {
      protocolVersion: LATEST_PROTOCOL_VERSION,
      capabilities: relayedCapabilities(config),
      clientInfo: { name: GATEWAY_NAME, version: GATEWAY_VERSION },
    },
  };
}

/** The child's answer to initialize, or why the child cannot be used (an error, a version we do not speak). */
export function readInitializeResult(name: string, response: JsonRpcResponse): ChildInit {
  if ('error' in response) {
    throw new UpstreamError('protocol', name, `Upstream '${name}' refused initialize: ${response.error.message}`);
  }
  const version = response.result['protocolVersion'];
  if (typeof version !== 'string' || !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
    throw new UpstreamError('protocol', name, `Upstream '${name}' answered unsupported protocol version ${String(version)}`);
  }
  return { protocolVersion: version, result: response.result };
}

/** The protocol version to answer a client with: its own when we support it and the child does too. */
export function negotiateVersion(requested: unknown, upstream: string): string {
  if (typeof requested === 'string' && SUPPORTED_PROTOCOL_VERSIONS.includes(requested)) {
    return requested < upstream ? requested : upstream;
  }
  return upstream;
}

/** What the sessions need from the upstream they run on (upstream.ts). */
export interface SessionChannel {
  readonly config: StdioServerConfig;
  /** Sends a client request to the child, waiting for the child to be ready first. */
  request(session: VirtualSession, request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse>;
  /** Writes a message to the child's stdin. False when it could not be written. */
  write(message: JsonRpcMessage): boolean;
  /** A client answers a server-to-client request (only the client it was sent to may). */
  answerServerRequest(session: VirtualSession, response: JsonRpcResponse): void;
  /** A session has ended: its calls fail, the server requests waiting on it are answered. */
  sessionEnded(session: VirtualSession): void;
}

/** The sessions open on one child, and what they hold on it together. */
export class VirtualSessions implements Iterable<VirtualSession> {
  private readonly sessions = new Set<VirtualSession>();
  /** Resource subscriptions: uri -> sessions. The child sees one subscription per uri. */
  private readonly subscriptions = new Map<string, Set<VirtualSession>>();
  /** The session that last told us its roots changed: the one to ask when the child asks for roots. */
  private rootsHolder: VirtualSession | undefined;

  constructor(private readonly channel: SessionChannel) {}

  get size(): number {
    return this.sessions.size;
  }

  [Symbol.iterator](): Iterator<VirtualSession> {
    return this.sessions.values();
  }

  /** The session to ask for roots outside any call, if one has announced them. */
  get rootsSession(): VirtualSession | undefined {
    return this.rootsHolder;
  }

  /** A client's session on the child, its initialize answered from the child's. */
  open(handlers: SessionHandlers, initialize: JsonRpcRequest | undefined, init: ChildInit, owner: string): VirtualSession {
    const session = new VirtualSession(this, this.channel, handlers, initialize, init, owner);
    this.sessions.add(session);
    return session;
  }

  /** The identities with a session on this child. */
  owners(): Set<string> {
    const owners = new Set<string>();
    for (const session of this.sessions) owners.add(session.owner);
    return owners;
  }

  broadcast(message: ServerMessage): void {
    for (const session of this.sessions) session.handlers.onMessage(message);
  }

  /** The sessions subscribed to a resource. */
  subscribersOf(uri: string): Iterable<VirtualSession> {
    return this.subscriptions.get(uri) ?? [];
  }

  /** Ends every session, telling each one's client (its downstream session ends too). */
  endAll(reason: string): void {
    for (const session of [...this.sessions]) {
      session.detach();
      session.handlers.onClose(reason);
    }
  }

  /** Ends every session without a word to its client (the gateway is shutting down). */
  detachAll(): void {
    for (const session of [...this.sessions]) session.detach();
  }

  /** A restarted child: the subscriptions held by clients survive it. */
  resubscribe(): void {
    for (const uri of this.subscriptions.keys()) {
      this.channel.write({ jsonrpc: '2.0', id: `resubscribe-${idKey(uri)}`, method: 'resources/subscribe', params: { uri } });
    }
  }

  /** Subscribes a session to a resource; the child is asked only for the first one. */
  async subscribe(session: VirtualSession, request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    const uri = request.params?.['uri'];
    if (typeof uri !== 'string') return this.channel.request(session, request, options);
    const subscribers = this.subscriptions.get(uri);
    if (subscribers && subscribers.size > 0) {
      subscribers.add(session);
      return { jsonrpc: '2.0', id: request.id, result: {} };
    }
    const response = await this.channel.request(session, request, options);
    if ('result' in response) this.subscriptions.set(uri, new Set([session]));
    return response;
  }

  /** Unsubscribes; the child is told only when the last subscriber leaves. */
  async unsubscribe(session: VirtualSession, request: JsonRpcRequest | null, uri: string, options?: RequestOptions): Promise<JsonRpcResponse | undefined> {
    const subscribers = this.subscriptions.get(uri);
    subscribers?.delete(session);
    if (subscribers && subscribers.size > 0) {
      return request ? { jsonrpc: '2.0', id: request.id, result: {} } : undefined;
    }
    this.subscriptions.delete(uri);
    if (request && options) return this.channel.request(session, request, options);
    this.channel.write({ jsonrpc: '2.0', id: `unsubscribe-${Date.now()}`, method: 'resources/unsubscribe', params: { uri } });
    return undefined;
  }

  setRootsSession(session: VirtualSession): void {
    this.rootsHolder = session;
  }

  /** A session ends: its calls fail, its pending server requests and subscriptions are released. */
  forget(session: VirtualSession): void {
    this.sessions.delete(session);
    if (this.rootsHolder === session) this.rootsHolder = undefined;
    this.channel.sessionEnded(session);
    for (const [uri, subscribers] of this.subscriptions) {
      if (subscribers.has(session)) void this.unsubscribe(session, null, uri);
    }
  }
}

/** One client's view of the shared child. */
export class VirtualSession implements UpstreamSession {
  readonly initializeResult: JsonRpcResponse;
  private readonly capabilities: Record<string, unknown>;
  private closed = false;

  constructor(
    private readonly sessions: VirtualSessions,
    private readonly channel: SessionChannel,
    readonly handlers: SessionHandlers,
    initialize: JsonRpcRequest | undefined,
    init: ChildInit,
    /** The identity it is for (OpenSessionOptions.owner). */
    readonly owner: string,
  ) {
    const params = initialize?.params ?? {};
    this.capabilities = objectOf(params['capabilities']) ?? {};
    this.initializeResult = {
      jsonrpc: '2.0',
      id: initialize?.id ?? 0,
      result: { ...init.result, protocolVersion: negotiateVersion(params['protocolVersion'], init.protocolVersion) },
    };
  }

  hasCapability(name: string): boolean {
    return this.capabilities[name] !== undefined;
  }

  async request(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    if (this.closed) throw new UpstreamError('closed', this.channel.config.name, 'Session closed');
    switch (request.method) {
      case 'resources/subscribe':
        return this.sessions.subscribe(this, request, options);
      case 'resources/unsubscribe': {
        const uri = request.params?.['uri'];
        if (typeof uri !== 'string') return this.channel.request(this, request, options);
        return (await this.sessions.unsubscribe(this, request, uri, options))!;
      }
      default:
        return this.channel.request(this, request, options);
    }
  }

  async send(message: JsonRpcNotification | JsonRpcResponse): Promise<void> {
    if (this.closed) return;
    if ('method' in message) {
      // The gateway did the child's handshake itself; a client's own initialized is not news to it.
      if (message.method === 'notifications/initialized') return;
      if (message.method === 'notifications/roots/list_changed') {
        // Without relay_roots the child never asked for roots: a client's roots stay with it.
        if (!this.channel.config.relay_roots) return;
        this.sessions.setRootsSession(this);
      }
      this.channel.write(message);
      return;
    }
    this.channel.answerServerRequest(this, message);
  }

  async openEventStream(): Promise<void> {
    // Every message of the child already reaches the session's handlers.
  }

  closeEventStream(): void {}

  async close(): Promise<void> {
    this.detach();
  }

  /** Another replica opens it again on its own child, as here: the gateway did the child's handshake. */
  resumeState(): ResumeState {
    return REOPEN;
  }

  /** Ends the session without touching the child. */
  detach(): void {
    if (this.closed) return;
    this.closed = true;
    this.sessions.forget(this);
  }
}
