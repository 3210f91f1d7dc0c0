/**
 * What a stdio child writes on stdout, routed to the one it is for: responses to their request
 * (the correlator, or the era probe), notifications to the request, session or subscription they
 * belong to, server-to-client requests to the client that can answer them.
 *
 * A stdio child is shared, and nothing on its wire says which client a message is about. A
 * message that names no request goes to the one identity it can be attributed to, never to a
 * guess: when several identities have sessions or calls on the child it is contained (withheld
 * from every client and reported through onContained). An isolated child (pool.ts) serves one
 * identity, so there everything is attributed.
 */
import type { StdioServerConfig } from '../../config/schema.js';
import {
  ErrorCode,
  errorResponse,
  idKey,
  isRequest,
  isResponse,
  toMessage,
  type JsonRpcId,
  type JsonRpcMessage,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from '../../jsonrpc/messages.js';
import { META } from '../../protocol/modern.js';
import type { Logger } from '../../observability/logger.js';
import type { Correlator } from '../correlator.js';
import { UpstreamError } from '../errors.js';
import { dropTooDeep, failInFlight, nestedTooDeep } from '../inbound.js';
import type { ServerMessage, UpstreamDeps } from '../upstream.js';
import { MAX_LINE_BYTES, responseIdOf, type OversizedLine } from './line-reader.js';
import type { VirtualSession, VirtualSessions } from './virtual-sessions.js';

/**
 * Server-to-client requests a child may have waiting on its clients at once. Beyond, a new one is
 * answered with an error at once: a hostile or broken server sending requests that no client
 * answers must not grow the gateway's memory without bound.
 */
const MAX_PENDING_SERVER_REQUESTS = 1_000;

/** Notifications about the server as a whole, which every client may see. */
const SERVER_WIDE = new Set(['notifications/tools/list_changed', 'notifications/prompts/list_changed', 'notifications/resources/list_changed']);

/** Which client capability a server-to-client request needs. */
const REQUIRED_CAPABILITY: Record<string, 'sampling' | 'elicitation' | 'roots'> = {
  'sampling/createMessage': 'sampling',
  'elicitation/create': 'elicitation',
  'roots/list': 'roots',
};

/** The owner of a 2026-07-28 call in the correlator: it belongs to no session, only to its caller. */
export class ModernCall {
  constructor(readonly owner: string) {}
}
/** Who a request in flight is for: a client's session, a 2026-07-28 caller, or the gateway itself (null). */
export type CallOwner = VirtualSession | ModernCall | null;

/** The identity (owner key) a request in flight is for; undefined for the gateway's own. */
function ownerOf(owner: CallOwner): string | undefined {
  return owner === null ? undefined : owner.owner;
}

/** What the routing reads and writes. */
export interface RoutingParts {
  config: StdioServerConfig;
  log: Logger;
  correlator: Correlator<CallOwner>;
  sessions: VirtualSessions;
  /** The era probe (probe.ts): it takes the answers to server/discover, and knows whether the child is modern. */
  probe: { answered(message: JsonRpcResponse): boolean; readonly modern: boolean };
  /** Writes to the child's stdin (stdin-writer.ts). */
  write(message: JsonRpcMessage): boolean;
  onContained: UpstreamDeps['onContained'];
}

export class ServerMessages {
  /** Server-to-client requests delivered to a client and not answered yet: child id -> session. */
  private readonly serverRequests = new Map<string, { session: VirtualSession; id: JsonRpcId }>();
  private readonly config: StdioServerConfig;
  private readonly log: Logger;
  private readonly correlator: Correlator<CallOwner>;
  private readonly sessions: VirtualSessions;
  private readonly probe: RoutingParts['probe'];
  private readonly write: (message: JsonRpcMessage) => boolean;
  private readonly onContained: UpstreamDeps['onContained'];

  constructor(parts: RoutingParts) {
    this.config = parts.config;
    this.log = parts.log;
    this.correlator = parts.correlator;
    this.sessions = parts.sessions;
    this.probe = parts.probe;
    this.write = (message) => parts.write(message);
    this.onContained = parts.onContained;
  }

  /**
   * One line of the child's stdout. A line nested deeper than MAX_UPSTREAM_DEPTH is not parsed
   * (inbound.ts): the request it answers fails, anything else is dropped. Nothing a handler throws
   * on the child's message may escape: it would end the gateway from the stdout reader.
   */
  line(line: string): void {
    if (line.trim() === '') return;
    if (nestedTooDeep(line)) {
      dropTooDeep(line, this.config.name, this.log, failInFlight(this.correlator));
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      this.log.warn({ line: line.slice(0, 200) }, 'upstream wrote a line that is not JSON; ignored');
      return;
    }
    const message = toMessage(value);
    if (typeof message === 'string') {
      this.log.warn({ reason: message }, 'upstream wrote an invalid JSON-RPC message; ignored');
      return;
    }
    try {
      if (isResponse(message)) {
        if (!this.correlator.resolve(message) && !this.probe.answered(message)) this.log.debug({ id: message.id }, 'reply to no request in flight; ignored');
      } else if (isRequest(message)) {
        this.request(message);
      } else {
        this.notification(message);
      }
    } catch (error) {
      this.log.error({ err: error, method: 'method' in message ? message.method.slice(0, 100) : undefined }, 'message handler threw');
    }
  }

  /**
   * A stdout line over the limit is lost, but when it is recognisably the response to a request in
   * flight (its id at either end, as JSON-RPC libraries write it), that request fails now with a
   * reason instead of waiting for its deadline.
   */
  oversizedLine(line: OversizedLine): void {
    this.log.error({ bytes: line.bytes, limitBytes: MAX_LINE_BYTES }, 'upstream wrote a line over the size limit; dropped');
    const wireId = responseIdOf(line.head, line.tail);
    if (wireId === undefined || !this.correlator.get(wireId)) return;
    const name = this.config.name;
    this.correlator.fail(
      wireId,
      new UpstreamError('protocol', name, `Upstream '${name}' answered with a message of ${line.bytes} bytes, over the limit of ${MAX_LINE_BYTES} bytes`),
    );
  }

  /** A client answers a server-to-client request: only the client it was sent to may. */
  answer(session: VirtualSession, response: JsonRpcResponse): void {
    if (response.id === null) return;
    const key = idKey(response.id);
    if (this.serverRequests.get(key)?.session !== session) {
      this.log.warn({ id: response.id }, 'a client answered a server request that was not sent to it; dropped');
      return;
    }
    this.serverRequests.delete(key);
    this.write(response);
  }

  /** A session has ended: the child's requests waiting on it are answered with an error. */
  sessionEnded(session: VirtualSession): void {
    for (const [key, pending] of this.serverRequests) {
      if (pending.session !== session) continue;
      this.serverRequests.delete(key);
      this.write(errorResponse(pending.id, ErrorCode.InternalError, 'The client session ended'));
    }
  }

  /** The child has ended: requests it made to clients will never be answered; tell those clients. */
  childEnded(reason: string): void {
    for (const { session, id } of this.serverRequests.values()) {
      session.handlers.onMessage({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: id, reason } });
    }
    this.serverRequests.clear();
  }

  private notification(message: JsonRpcNotification): void {
    if (this.correlator.routeNotification(message)) return;
    if (this.probe.modern && this.routeSubscription(message)) return;
    switch (message.method) {
      case 'notifications/resources/updated': {
        const uri = message.params?.['uri'];
        if (typeof uri !== 'string') return;
        for (const session of this.sessions.subscribersOf(uri)) session.handlers.onMessage(message);
        return;
      }
      case 'notifications/cancelled': {
        // The child cancels one of its own requests to a client: tell only that client.
        const id = message.params?.['requestId'];
        const session = typeof id === 'string' || typeof id === 'number' ? this.serverRequests.get(idKey(id))?.session : undefined;
        session?.handlers.onMessage(message);
        return;
      }
      case 'notifications/progress':
        // Its token names no request in flight (one that ended or was cancelled): for nobody. It
        // carries the gateway's own token, which means nothing to any client.
        this.log.debug({ method: message.method }, 'progress for no request in flight; dropped');
        return;
      default:
        if (SERVER_WIDE.has(message.method)) this.sessions.broadcast(message);
        else this.deliverAttributed(message);
    }
  }

  /**
   * A notification that names no request (a log line, a task's status, a method we do not know):
   * to the one identity it can be attributed to, never to a guess. Only while every session and
   * every call on the child is one identity's: then, while exactly one call is in flight it
   * belongs to that call; while several are, to that identity's sessions; with none, to every
   * session. Otherwise (a shared child serving several identities) it goes to nobody and is
   * reported (onContained): the one call in flight of B is no proof that a line is not about an
   * idle session of A's (A's simulated logging, A's task). An isolated child serves one identity:
   * everything is attributed.
   */
  private deliverAttributed(message: JsonRpcNotification): void {
    const calls = this.correlator.inFlight().filter((entry) => entry.owner !== null);
    const owners = this.sessions.owners();
    for (const entry of calls) owners.add(ownerOf(entry.owner)!);
    if (owners.size > 1) {
      this.contain(message.method, 'several identities have sessions or calls on this server');
      return;
    }
    if (calls.length === 1) {
      calls[0]!.onMessage(message);
      return;
    }
    if (calls.length === 0) {
      this.sessions.broadcast(message);
      return;
    }
    const [owner] = owners;
    let delivered = false;
    for (const session of this.sessions) {
      if (session.owner !== owner) continue;
      session.handlers.onMessage(message);
      delivered = true;
    }
    // Only 2026-07-28 calls of that identity: the newest of them.
    if (!delivered) calls[calls.length - 1]!.onMessage(message);
  }

  /** A server message kept from every client: it could not be attributed to one identity. */
  private contain(method: string, reason: string): void {
    this.log.info({ method, reason }, 'server message not attributable to one identity; withheld from every client');
    this.onContained?.(this.config.name, method, reason);
  }

  /**
   * A modern child's notification for one `subscriptions/listen` call (stdio demultiplexes them
   * by `_meta["io.modelcontextprotocol/subscriptionId"]`, the listen request's id), or the
   * child's notifications/cancelled that ends one. False: not for a listen in flight.
   */
  private routeSubscription(message: JsonRpcNotification): boolean {
    const params = message.params;
    if (message.method === 'notifications/cancelled') {
      const listen = this.correlator.get(params?.['requestId']);
      if (!(listen?.owner instanceof ModernCall) || listen.method !== 'subscriptions/listen') return false;
      const name = this.config.name;
      this.correlator.fail(listen.wireId, new UpstreamError('closed', name, `Upstream '${name}' ended the subscription`));
      return true;
    }
    const meta = params?.['_meta'];
    if (typeof meta !== 'object' || meta === null) return false;
    const listen = this.correlator.get((meta as Record<string, unknown>)[META.subscriptionId]);
    if (!(listen?.owner instanceof ModernCall) || listen.method !== 'subscriptions/listen') return false;
    // The stream has started: from now on it runs until it is ended, not until a deadline.
    this.correlator.endDeadline(listen.wireId);
    message.params = { ...params, _meta: { ...meta, [META.subscriptionId]: listen.clientId } };
    try {
      listen.onMessage(message);
    } catch (error) {
      this.log.error({ err: error, method: message.method }, 'message handler threw');
    }
    return true;
  }

  /**
   * A request from the child to a client. Over stdio nothing says which client's call caused it,
   * so: the newest call in flight from a client that declared the needed capability; for
   * roots/list outside any call, the client that last announced its roots. With no candidate the
   * gateway answers itself (empty roots, or an error).
   */
  private request(message: JsonRpcRequest): void {
    if (message.method === 'ping') {
      this.write({ jsonrpc: '2.0', id: message.id, result: {} });
      return;
    }
    const capability = REQUIRED_CAPABILITY[message.method];
    if (capability === 'roots' && !this.config.relay_roots) {
      this.write({ jsonrpc: '2.0', id: message.id, result: { roots: [] } });
      return;
    }
    // Nothing on the wire says which call (or which session's background work) caused it: with
    // several identities on the child, any choice could hand one identity's prompt (and its
    // answer) to another, as deliverAttributed says of log lines.
    const owners = this.sessions.owners();
    for (const entry of this.correlator.inFlight()) {
      const owner = ownerOf(entry.owner);
      if (owner !== undefined) owners.add(owner);
    }
    if (owners.size > 1) {
      this.contain(message.method, 'several identities have sessions or calls on this server');
      if (message.method === 'roots/list') this.write({ jsonrpc: '2.0', id: message.id, result: { roots: [] } });
      else this.write(errorResponse(message.id, ErrorCode.MethodNotFound, `${message.method} cannot be attributed to one client of this shared server`));
      return;
    }
    let target: { session: VirtualSession; deliver: (m: ServerMessage) => void } | undefined;
    for (const entry of this.correlator.inFlight()) {
      const owner = entry.owner;
      // 2026-07-28 calls cannot take requests from the server (MRTR replaced them).
      if (owner === null || owner instanceof ModernCall) continue;
      if (capability && !(entry.capabilities ? entry.capabilities[capability] !== undefined : owner.hasCapability(capability))) continue;
      target = { session: owner, deliver: entry.onMessage };
    }
    const rootsSession = this.sessions.rootsSession;
    if (!target && capability === 'roots' && rootsSession) {
      target = { session: rootsSession, deliver: (m) => rootsSession.handlers.onMessage(m) };
    }
    if (!target) {
      if (message.method === 'roots/list') this.write({ jsonrpc: '2.0', id: message.id, result: { roots: [] } });
      else this.write(errorResponse(message.id, ErrorCode.MethodNotFound, `No connected client can handle ${message.method}`));
      return;
    }
    if (this.serverRequests.size >= MAX_PENDING_SERVER_REQUESTS) {
      this.log.warn({ method: message.method, pending: this.serverRequests.size }, 'too many server requests waiting on clients; refused');
      this.write(
        errorResponse(message.id, ErrorCode.InternalError, `Too many requests waiting on clients (${MAX_PENDING_SERVER_REQUESTS}); ${message.method} refused`),
      );
      return;
    }
    this.serverRequests.set(idKey(message.id), { session: target.session, id: message.id });
    target.deliver(message);
  }
}
