/**
 * Downstream sessions: the gateway's own MCP sessions with its clients. The gateway mints the
 * session ids (never the upstream's), so a client can only reach the upstream session that was
 * opened for it, and each session is bound to the server it was opened on.
 */
import { randomUUID } from 'node:crypto';
import { ErrorCode, errorResponse, idKey, type JsonRpcId, type JsonRpcResponse } from '../jsonrpc/messages.js';
import type { Logger } from '../observability/logger.js';
import type { CloseOptions, ServerMessage, UpstreamSession } from '../upstreams/upstream.js';
import type { SseWriter } from './sse-writer.js';
import { getStreamEventId, MAX_REPLAYED } from './resume.js';
import type { Cancellation } from '../upstreams/cancellation.js';

const KEEP_UPSTREAM: CloseOptions = { keepUpstream: true };
/** Answers a session may relay to the other replicas per minute (DownstreamSession.mayRelayAnswer). */
const MAX_RELAYED_ANSWERS = 64;
/** Sealed ids remembered as ended by their client, at most. */
const MAX_REVOKED = 10_000;

/** Notifications held for a client without a GET stream, at most. */
const MAX_HELD_NOTIFICATIONS = 100;

/** Answers a server-to-client request that no client can take, so the upstream does not wait. */
export function refuseServerRequest(upstream: UpstreamSession, id: JsonRpcId, reason: string): void {
  void upstream.send(errorResponse(id, ErrorCode.MethodNotFound, reason)).catch(() => undefined);
}

/**
 * A session's client requests in flight, by id key: aborting one cancels it upstream. Two arrays
 * and a scan rather than a Map, which would keep every request alive past the young-generation GC
 * (src/upstreams/id-table.ts says why); a session has few requests in flight at once.
 */
export class CallsInFlight {
  private readonly keys: string[] = [];
  private readonly controllers: Cancellation[] = [];

  get size(): number {
    return this.keys.length;
  }

  has(key: string): boolean {
    return this.keys.includes(key);
  }

  get(key: string): Cancellation | undefined {
    const at = this.keys.indexOf(key);
    return at === -1 ? undefined : this.controllers[at];
  }

  set(key: string, controller: Cancellation): void {
    const at = this.keys.indexOf(key);
    if (at !== -1) this.controllers[at] = controller;
    else {
      this.keys.push(key);
      this.controllers.push(controller);
    }
  }

  delete(key: string): void {
    const at = this.keys.indexOf(key);
    if (at === -1) return;
    // The last takes the place of the one that ends: no shifting.
    const last = this.keys.length - 1;
    this.keys[at] = this.keys[last]!;
    this.controllers[at] = this.controllers[last]!;
    this.keys.pop();
    this.controllers.pop();
  }

  values(): Cancellation[] {
    return [...this.controllers];
  }
}

/**
 * The reason a request in flight is aborted with when its client sent notifications/cancelled
 * for it: such a request gets no response at all (src/mcp/gateway.ts forward). Aborted for any
 * other reason (its session closed by a DELETE, the upstream or shutdown), it is answered with
 * an error, on a stream too.
 */
export const CANCELLED_BY_CLIENT = Symbol('cancelled by the client');

/** A sealed session's id and what it fixed (src/replicas/seal.ts). */
export interface SealedId {
  id: string;
  /** Ms since epoch: the id is refused after it (session_ttl_ms from its initialize). */
  expires: number;
  /** Another replica can serve it: ending it here does not end it upstream (only its client's DELETE does). */
  resumable: boolean;
}

export class DownstreamSession {
  /** A random UUID, or with `[server] session_keys` the sealed state any replica can serve. */
  readonly id: string;
  /** Ms since epoch after which a sealed session is refused; Infinity for an unsealed one. */
  readonly expires: number;
  /** Another replica may serve it too: closing it here leaves its upstream session open. */
  readonly shared: boolean;
  lastActivity = Date.now();
  /** The client's standalone GET stream, when open. */
  eventStream: SseWriter | undefined;
  /** The client's requests in flight, by id: aborting one cancels it upstream. */
  readonly inflight = new CallsInFlight();
  /**
   * Server-to-client requests sent to this client and not answered yet. Created with the first:
   * most sessions never get one, and an empty Set with its hash table is about 150 B per session.
   */
  private serverRequests: Set<string> | undefined;
  /**
   * The gateway's own requests to this client (an approval's elicitation, src/integrity/approval.ts)
   * waiting for its answer, by id key: the answer goes to the gateway, never upstream. Created with the first.
   */
  private ownRequests: Map<string, (answer: JsonRpcResponse) => void> | undefined;
  /** The capabilities the client declared in its initialize (what the gateway itself may ask it). */
  clientCapabilities: Record<string, unknown> = {};
  /**
   * Notifications that arrived while the client had no GET stream open, delivered when it opens
   * one: a server announces list changes right after the handshake, usually just before the
   * client's GET arrives. Bounded: the oldest are dropped first. Created with the first, like
   * serverRequests.
   */
  private held: ServerMessage[] | undefined;
  closed = false;
  /** Answers relayed to the other replicas in the minute since relayedSince (mayRelayAnswer). */
  private relayed = 0;
  private relayedSince = 0;
  /** The id of the last event sent on a GET stream (src/mcp/resume.ts: g.<n>). */
  private eventSeq = 0;
  /** The last MAX_REPLAYED notifications sent on GET streams, for a client that resumes. Created with the first. */
  private sent: Array<{ seq: number; message: ServerMessage }> | undefined;
  /**
   * Its server was removed or changed by a reload: it takes no new request (404, as a session
   * that ended, so the client initializes again on what the server is now) and ends once its
   * calls in flight have finished (src/mcp/gateway.ts reconfigure).
   */
  draining = false;
  /**
   * The client has come back after its initialize (notifications/initialized, any request, its
   * GET stream): until then the session is half-open, and is closed after the handshake timeout.
   */
  established = false;

  constructor(
    readonly server: string,
    readonly upstream: UpstreamSession,
    readonly protocolVersion: string,
    /** The identity that opened it (ownerKey): only that identity may use it. */
    readonly owner: string,
    /** A virtual server's session: the members its identity could reach when it opened (src/virtual/view.ts scopeOf). */
    readonly scope = '',
    sealed?: SealedId,
  ) {
    this.id = sealed?.id ?? randomUUID();
    this.expires = sealed?.expires ?? Infinity;
    this.shared = sealed?.resumable ?? false;
  }

  /** Client activity on the session (never the server's): it is alive, and its handshake done. */
  touch(): void {
    this.lastActivity = Date.now();
    this.established = true;
  }

  /** Remembers a server request sent to this client, so that only this client may answer it. */
  expectAnswer(id: JsonRpcId): void {
    (this.serverRequests ??= new Set()).add(idKey(id));
  }

  /** The gateway asked this client something itself (`id`): its answer goes to `answered`, once. */
  awaitOwnAnswer(id: JsonRpcId, answered: (answer: JsonRpcResponse) => void): void {
    (this.ownRequests ??= new Map()).set(idKey(id), answered);
  }

  /** The gateway no longer waits for its own request `id` (it timed out). */
  forgetOwnRequest(id: JsonRpcId): void {
    this.ownRequests?.delete(idKey(id));
  }

  /** The session ends: the gateway's own requests still waiting are answered with an error (an approval is then cancelled, not waited for). */
  endOwnRequests(): void {
    const waiting = this.ownRequests;
    this.ownRequests = undefined;
    for (const answered of waiting?.values() ?? []) answered(errorResponse(null, ErrorCode.InternalError, 'The session ended'));
  }

  /** True (once) when `answer` answers one of the gateway's own requests to this client; it is then handled. */
  takeOwnAnswer(answer: JsonRpcResponse): boolean {
    if (answer.id === null || this.ownRequests === undefined) return false;
    const key = idKey(answer.id);
    const answered = this.ownRequests.get(key);
    if (answered === undefined) return false;
    this.ownRequests.delete(key);
    answered(answer);
    return true;
  }

  /**
   * Whether an answer this replica did not expect may go to the other replicas (the one whose
   * upstream asked forwards it): at most MAX_RELAYED_ANSWERS a minute per session, so that a
   * client cannot turn stray answers into traffic for every replica.
   */
  mayRelayAnswer(): boolean {
    const now = Date.now();
    if (now - this.relayedSince > 60_000) {
      this.relayedSince = now;
      this.relayed = 0;
    }
    return ++this.relayed <= MAX_RELAYED_ANSWERS;
  }

  /** True (once) when the client answers a server request that was sent to it. */
  takeAnswer(id: JsonRpcId | null): boolean {
    return id !== null && this.serverRequests !== undefined && this.serverRequests.delete(idKey(id));
  }

  /**
   * A message that belongs to no request in flight goes to the GET stream; a notification waits
   * for one (bounded). A server request that cannot be delivered is answered at once, so the
   * upstream never waits for nothing.
   */
  deliver(message: ServerMessage): void {
    if (this.eventStream && this.sendOnStream(this.eventStream, message)) {
      if ('id' in message) this.expectAnswer(message.id);
    } else if ('id' in message) {
      refuseServerRequest(this.upstream, message.id, 'The client has no open stream to receive server requests');
    } else if ((this.held ??= []).push(message) > MAX_HELD_NOTIFICATIONS) {
      this.held.shift();
    }
  }

  /**
   * Attaches the client's GET stream: sends it what was held, and relays the upstream's own
   * standalone stream for as long as the client's is open.
   */
  attachEventStream(stream: SseWriter, after?: number): void {
    this.eventStream = stream;
    this.touch();
    // A client that comes back with Last-Event-ID gets the events it missed that are still kept.
    if (after !== undefined && this.sent) for (const { seq, message } of this.sent) if (seq > after) stream.write(message, false, getStreamEventId(seq));
    const held = this.held;
    this.held = undefined;
    if (held) for (const message of held) this.sendOnStream(stream, message);
    void this.upstream.openEventStream();
    stream.onClose(() => {
      if (this.eventStream !== stream) return;
      this.eventStream = undefined;
      this.touch();
      this.upstream.closeEventStream();
    });
  }

  /** Writes a message on the GET stream with the next event id, and keeps it for a client that comes back. */
  private sendOnStream(stream: SseWriter, message: ServerMessage): boolean {
    const seq = this.eventSeq + 1;
    if (!stream.write(message, false, getStreamEventId(seq))) return false;
    this.eventSeq = seq;
    // Server requests are not replayed: they are answered at once when they cannot be delivered.
    if (!('id' in message) && (this.sent ??= []).push({ seq, message }) > MAX_REPLAYED) this.sent.shift();
    return true;
  }

  /** notifications/cancelled from the client: the request gets no response (CANCELLED_BY_CLIENT). */
  cancel(requestId: unknown): void {
    if (typeof requestId !== 'string' && typeof requestId !== 'number') return;
    this.inflight.get(idKey(requestId))?.abort(CANCELLED_BY_CLIENT);
  }
}

export interface SessionLimits {
  maxSessions: number;
  idleTimeoutMs: number;
  /** A session whose client sends nothing after its initialize for this long is closed. */
  handshakeTimeoutMs: number;
}

/** Why a session cannot open now: the gateway is full, or the identity has its quota. */
export type SessionRefusal = 'full' | 'quota';

export class SessionStore {
  private readonly sessions = new Map<string, DownstreamSession>();
  /** Sealed ids ended by their client, until they expire (revoke()). */
  private readonly revokedIds = new Map<string, number>();
  /** Sessions per owner, open or reserved (reserve() until add() or release()). */
  private readonly perOwner = new Map<string, number>();
  /** Slots reserved by initializes still waiting for their upstream session. */
  private reserved = 0;
  private readonly sweeper: NodeJS.Timeout;
  /** Replicas tell each other when they take a session up (src/replicas/bus.ts): a half-open sealed session then ends upstream too. */
  replicasSpeak = false;

  constructor(
    private readonly limits: SessionLimits,
    private readonly log: Logger,
  ) {
    // Often enough that an idle session ends within half its timeout after it, and a half-open
    // one within half the handshake timeout after it (15 s with the default 30 s).
    const every = Math.min(60_000, Math.max(1_000, limits.idleTimeoutMs / 2), Math.max(100, limits.handshakeTimeoutMs / 2));
    this.sweeper = setInterval(() => this.sweep(), every);
    this.sweeper.unref();
  }

  get size(): number {
    return this.sessions.size;
  }

  get full(): boolean {
    return this.sessions.size + this.reserved >= this.limits.maxSessions;
  }

  /** Sessions of one owner, open or being opened. */
  countOf(owner: string): number {
    return this.perOwner.get(owner) ?? 0;
  }

  /**
   * Holds a slot for a session of `owner` while its upstream session opens, so that concurrent
   * initializes cannot all pass the limits: add() then takes it, or release() gives it back.
   * `quota`: the most sessions this owner may have.
   */
  reserve(owner: string, quota: number): SessionRefusal | undefined {
    if (this.full) return 'full';
    const count = this.countOf(owner);
    if (count >= quota) return 'quota';
    this.perOwner.set(owner, count + 1);
    this.reserved++;
    return undefined;
  }

  /** A reserved slot that did not become a session. */
  release(owner: string): void {
    this.reserved = Math.max(0, this.reserved - 1);
    this.uncount(owner);
  }

  /**
   * Seconds until a slot frees itself if no client does anything: the soonest a session (of
   * `owner`, or any) would be closed as half-open or idle. At least 1.
   */
  retryAfterSecs(owner?: string): number {
    let soonest = Infinity;
    for (const session of this.sessions.values()) {
      if (owner !== undefined && session.owner !== owner) continue;
      const at = session.lastActivity + (session.established ? this.limits.idleTimeoutMs : this.limits.handshakeTimeoutMs);
      if (at < soonest) soonest = at;
    }
    if (soonest === Infinity) return 1;
    return Math.max(1, Math.ceil((soonest - Date.now()) / 1000));
  }

  get(id: string): DownstreamSession | undefined {
    return this.sessions.get(id);
  }

  /**
   * A sealed session its client ended (DELETE): no replica that learns of it takes its id up
   * again before it expires. Bounded: the soonest to expire is forgotten first.
   */
  revokeId(id: string, expires: number): void {
    if (expires === Infinity) return;
    this.revokedIds.set(id, expires);
    if (this.revokedIds.size > MAX_REVOKED) {
      let soonest: string | undefined;
      let at = Infinity;
      for (const [id, expires] of this.revokedIds) if (expires < at) [soonest, at] = [id, expires];
      this.revokedIds.delete(soonest!);
    }
  }

  /** Whether a sealed id was ended by its client (revoke) and has not expired yet. */
  revoked(id: string): boolean {
    const expires = this.revokedIds.get(id);
    if (expires === undefined) return false;
    if (expires > Date.now()) return true;
    this.revokedIds.delete(id);
    return false;
  }

  /** Every open session. */
  all(): DownstreamSession[] {
    return [...this.sessions.values()];
  }

  /** A session opened on a slot that reserve() held for its owner. */
  add(session: DownstreamSession): void {
    this.reserved = Math.max(0, this.reserved - 1);
    this.sessions.set(session.id, session);
  }

  /**
   * Ends a session: its GET stream, its calls in flight, its upstream session. Never throws. A
   * session another replica may serve keeps its upstream session, unless `endUpstream` (its
   * client's DELETE, its key removed).
   */
  async close(session: DownstreamSession, reason: string, endUpstream = false): Promise<void> {
    if (session.closed) return;
    session.closed = true;
    this.sessions.delete(session.id);
    this.uncount(session.owner);
    this.log.debug({ sessionId: session.id, server: session.server, reason }, 'session closed');
    session.eventStream?.end();
    session.endOwnRequests();
    for (const ac of session.inflight.values()) ac.abort();
    await session.upstream.close(session.shared && !endUpstream ? KEEP_UPSTREAM : undefined).catch(() => undefined);
  }

  async closeAll(reason: string): Promise<void> {
    await Promise.all([...this.sessions.values()].map((s) => this.close(s, reason)));
    clearInterval(this.sweeper);
  }

  private uncount(owner: string): void {
    const count = (this.perOwner.get(owner) ?? 0) - 1;
    if (count > 0) this.perOwner.set(owner, count);
    else this.perOwner.delete(owner);
  }

  /**
   * Sessions with nothing open and nothing in flight for longer than the idle timeout end, and
   * half-open ones (no word from the client since its initialize: it never sent `initialized`,
   * or its next requests went to another gateway) after the handshake timeout.
   */
  private sweep(): void {
    const now = Date.now();
    const cutoff = now - this.limits.idleTimeoutMs;
    const handshakeCutoff = now - this.limits.handshakeTimeoutMs;
    for (const session of this.sessions.values()) {
      if (session.expires <= now) {
        // Past its sealed expiry no replica can serve it: it ends upstream too.
        void this.close(session, 'sealed id expired', true);
      } else if (!session.established && session.lastActivity < handshakeCutoff) {
        // A sealed session another replica took up is not half-open (it says so through Redis:
        // Gateway fromReplica 'taken'); one nobody took up ends upstream too when replicas can
        // say so, else it is left to the other replicas (and ends upstream at its expiry).
        void this.close(session, 'half-open', this.replicasSpeak);
      } else if (session.lastActivity < cutoff && !session.eventStream?.open && session.inflight.size === 0) {
        void this.close(session, 'idle');
      }
    }
  }
}
