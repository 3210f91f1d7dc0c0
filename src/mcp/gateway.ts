/**
 * The gateway's state and its MCP exchanges: the upstreams, the downstream sessions, the shared
 * upstream sessions that serve session-less requests, and how one client request travels to its
 * upstream and back. The order of the stages around it lives in src/pipeline.ts.
 */
import type { GatewayConfig, ServerConfig } from '../config/schema.js';
import { GatewayError } from '../http/errors.js';
import {
  ErrorCode,
  idKey,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from '../jsonrpc/messages.js';
import type { LineLogger, Logger } from '../observability/logger.js';
import { discoverRequest } from '../upstreams/era.js';
import { Cancellation } from '../upstreams/cancellation.js';
import { UpstreamError } from '../upstreams/errors.js';
import type { CallOptions, OpenSessionOptions, RequestOptions, ServerMessage, SessionHandlers, Upstream, UpstreamSession } from '../upstreams/upstream.js';
import { ResultCache } from './cache.js';
import { toLegacyRequest } from './era.js';
import { InputRounds, PendingCall, type CallBinding } from './input-rounds.js';
import { ModernBackedSession } from './modern-upstream.js';
import { errorOutcome, type Outcome, type PostResponse } from './post-response.js';
import { ListenHub, type Listener } from './subscriptions.js';
import { DownstreamSession, refuseServerRequest, SessionStore } from './sessions.js';

/** How long relaying a client's `initialized` may wait for the upstream's GET stream. */
const EVENT_STREAM_WAIT_MS = 2_000;

const SESSIONLESS = 'Session-less clients cannot receive server requests';

/** Shared sessions for session-less requests, per server and forward path; bounded. */
const MAX_SHARED_SESSIONS = 256;

export type UpstreamFactory = (config: ServerConfig) => Upstream;

export class Gateway {
  readonly sessions: SessionStore;
  /** Legacy calls waiting for their 2026-07-28 client to give input (src/mcp/input-rounds.ts). */
  readonly rounds = new InputRounds();
  /** Cacheable results of modern servers (src/mcp/cache.ts). */
  readonly cache = new ResultCache();
  /** Discover results of servers configured as modern, by name. */
  private readonly discovered = new Map<string, Promise<Record<string, unknown>>>();
  private readonly upstreams = new Map<string, Upstream>();
  private readonly shared = new Map<string, Promise<UpstreamSession>>();
  /** 2026-07-28 listen streams, per shared session key (src/mcp/subscriptions.ts). */
  private readonly hubs = new Map<string, ListenHub>();

  constructor(
    readonly config: GatewayConfig,
    createUpstream: UpstreamFactory,
    private readonly log: Logger,
  ) {
    for (const server of config.servers) this.upstreams.set(server.name, createUpstream(server));
    this.sessions = new SessionStore(
      { maxSessions: config.server.max_sessions, idleTimeoutMs: config.server.session_idle_timeout_ms },
      log,
    );
  }

  upstream(name: string): Upstream {
    const upstream = this.upstreams.get(name);
    if (!upstream) throw new Error(`no upstream named ${name}`);
    return upstream;
  }

  allUpstreams(): Upstream[] {
    return [...this.upstreams.values()];
  }

  /** Starts every upstream (stdio children spawn now). Resolves when each has succeeded or failed once. */
  async start(): Promise<void> {
    await Promise.all(this.allUpstreams().map((u) => u.start()));
  }

  /**
   * Ends every session, every upstream and child process, all at once: each piece has its own
   * bounded wait (an HTTP DELETE, SIGTERM before SIGKILL), and one frozen upstream must not make
   * the others wait in turn.
   */
  async close(): Promise<void> {
    const shared = [...this.shared.values()];
    this.shared.clear();
    this.rounds.clear();
    await Promise.all([
      this.sessions.closeAll('shutdown'),
      ...shared.map((p) => p.then((s) => s.close()).catch(() => undefined)),
      ...this.allUpstreams().map((u) => u.close()),
    ]);
  }

  /**
   * Opens a downstream session for a client's initialize, owned by one identity (see ownerKey).
   * `log` is the request's logger (its lines carry the request id), here and in the other
   * methods a request calls.
   */
  async initialize(
    server: ServerConfig,
    forwardPath: string,
    request: JsonRpcRequest,
    owner: string,
    log: LineLogger = this.log,
  ): Promise<{ response: JsonRpcResponse; session?: DownstreamSession }> {
    if (this.sessions.full) throw new GatewayError('too_many_sessions', 'Too many sessions; try again later', request.id);
    let session: DownstreamSession | undefined;
    const handlers: SessionHandlers = {
      onMessage: (m) => {
        if (session) session.deliver(m);
      },
      onClose: (reason) => {
        if (session) void this.sessions.close(session, reason);
      },
    };
    let upstream: UpstreamSession;
    try {
      upstream = await this.openUpstreamSession(server, { initialize: request, forwardPath, handlers });
    } catch (err) {
      throw toGatewayError(err, request.id, log);
    }
    const response = upstream.initializeResult;
    if ('error' in response) {
      await upstream.close();
      return { response };
    }
    const version = typeof response.result['protocolVersion'] === 'string' ? response.result['protocolVersion'] : '';
    session = new DownstreamSession(server.name, upstream, version, owner);
    this.sessions.add(session);
    log.debug({ sessionId: session.id, server: server.name }, 'session opened');
    return { response, session };
  }

  /**
   * The upstream session that serves requests sent without a session (plain curl). One per server
   * and forward path, opened by the gateway itself, reopened when the upstream forgets it.
   */
  sharedSession(server: ServerConfig, forwardPath: string): Promise<UpstreamSession> {
    const key = sharedKey(server, forwardPath);
    let session = this.shared.get(key);
    if (session) return session;
    if (this.shared.size >= MAX_SHARED_SESSIONS) {
      const [oldestKey, oldest] = this.shared.entries().next().value as [string, Promise<UpstreamSession>];
      this.shared.delete(oldestKey);
      void oldest.then((s) => s.close()).catch(() => undefined);
    }
    const handlers: SessionHandlers = {
      onMessage: (m) => {
        // Nobody can answer a server request here: say so at once rather than let it wait.
        if ('id' in m) void session?.then((s) => refuseServerRequest(s, m.id, SESSIONLESS));
        // Change notifications go to the listen streams of 2026-07-28 clients.
        else this.hubs.get(key)?.deliver(m);
      },
      onClose: () => {
        if (this.shared.get(key) === session) this.shared.delete(key);
        // The streams end without a result: their clients listen again, on the next session.
        const hub = this.hubs.get(key);
        this.hubs.delete(key);
        hub?.closeAll();
      },
    };
    session = this.openUpstreamSession(server, { forwardPath, handlers });
    session.catch(() => {
      if (this.shared.get(key) === session) this.shared.delete(key);
    });
    this.shared.set(key, session);
    return session;
  }

  /**
   * Adds a 2026-07-28 listen stream on the shared session of a server and path: it receives the
   * change notifications it asked for until it closes. Returns what removes it.
   */
  async listen(server: ServerConfig, forwardPath: string, upstream: UpstreamSession, listener: Listener): Promise<() => void> {
    const key = sharedKey(server, forwardPath);
    let hub = this.hubs.get(key);
    if (!hub || hub.upstream !== upstream) {
      hub = new ListenHub(upstream);
      this.hubs.set(key, hub);
    }
    const joined = hub;
    await joined.add(listener);
    return () => {
      joined.remove(listener);
      if (joined.size === 0 && this.hubs.get(key) === joined) this.hubs.delete(key);
    };
  }

  /** Shutdown: every listen stream gets its empty result and ends, so none holds the grace period. */
  endListens(): void {
    for (const hub of this.hubs.values()) hub.endAll();
    this.hubs.clear();
  }

  dropSharedSession(server: ServerConfig, forwardPath: string, session: UpstreamSession): void {
    const key = sharedKey(server, forwardPath);
    const current = this.shared.get(key);
    void current?.then((s) => {
      if (s === session && this.shared.get(key) === current) this.shared.delete(key);
    });
  }

  /**
   * An upstream session for a legacy client (or the gateway's own): the server's own session when
   * it speaks the legacy era, or a session the gateway keeps for it in front of a modern server
   * (src/mcp/modern-upstream.ts). The era is probed once per server and remembered.
   */
  private async openUpstreamSession(server: ServerConfig, options: OpenSessionOptions): Promise<UpstreamSession> {
    const upstream = this.upstream(server.name);
    const verdict = await upstream.era({ forwardPath: options.forwardPath });
    if (verdict.era === 'legacy') return upstream.openSession(options);
    const known = verdict.discover ? verdict : { ...verdict, discover: await this.discover(server, options.forwardPath) };
    return new ModernBackedSession(upstream, known, options.forwardPath, options.handlers, options.initialize, this.log.child({ server: server.name }));
  }

  /**
   * The discover result of a server configured as modern (`era = "modern"`: never probed), asked
   * once: a legacy client's initialize answer and its listen filter come from it.
   */
  private discover(server: ServerConfig, forwardPath: string): Promise<Record<string, unknown>> {
    let found = this.discovered.get(server.name);
    if (!found) {
      found = this.upstream(server.name)
        .call(discoverRequest('gateway-discover'), { forwardPath, onMessage: () => undefined })
        .then((response) => {
          if ('result' in response) return response.result;
          throw new UpstreamError('protocol', server.name, `Upstream '${server.name}' answered server/discover with an error: ${response.error.message}`);
        });
      found.catch(() => this.discovered.delete(server.name));
      this.discovered.set(server.name, found);
    }
    return found;
  }

  /**
   * Sends a 2026-07-28 client's request to a modern server as it is (its envelope, MRTR rounds and
   * listen streams pass through). Never throws: failures become JSON-RPC errors.
   */
  async call(
    request: JsonRpcRequest,
    server: ServerConfig,
    forwardPath: string,
    post: PostResponse,
    signal: AbortSignal,
    headers: Record<string, string> | undefined,
    log: LineLogger = this.log,
  ): Promise<Outcome> {
    try {
      const options: CallOptions = { forwardPath, signal, onMessage: (m) => void post.push(m) };
      if (headers) options.headers = headers;
      // A listen lasts until the client closes it: no deadline.
      if (request.method === 'subscriptions/listen') options.timeoutMs = 0;
      const response = await this.upstream(server.name).call(request, options);
      return { response, status: modernStatus(response), cancelled: false };
    } catch (err) {
      return errorOutcome(toGatewayError(err, request.id, log));
    }
  }

  /** Relays a client's notification or answer. */
  async relayToUpstream(message: JsonRpcNotification | JsonRpcResponse, upstream: UpstreamSession, session: DownstreamSession | undefined, log: LineLogger = this.log): Promise<void> {
    if ('method' in message) {
      // Cancellation is by the client's id: the transport knows the wire id, so abort, don't forward.
      if (message.method === 'notifications/cancelled') {
        session?.cancel(message.params?.['requestId']);
        return;
      }
      if (message.method === 'notifications/initialized' && session) {
        // The upstream may announce changes as soon as it is initialized (server-everything adds
        // tools then): have its GET stream connected first, so those are held for the client
        // instead of dropped by the upstream. Bounded: a stream that does not connect soon is
        // not waited for.
        await atMost(upstream.openEventStream(), EVENT_STREAM_WAIT_MS);
      }
      await upstream.send(message).catch((err) => log.warn({ err: describe(err) }, 'could not relay a notification'));
      return;
    }
    if (!session?.takeAnswer(message.id)) {
      log.warn({ id: message.id }, 'dropped an answer to a server request this session was not sent');
      return;
    }
    await upstream.send(message).catch((err) => log.warn({ err: describe(err) }, 'could not relay an answer'));
  }

  /** Sends one client request upstream; never throws: every failure becomes a JSON-RPC error. */
  async forward(
    request: JsonRpcRequest,
    upstream: UpstreamSession,
    session: DownstreamSession | undefined,
    post: PostResponse,
    log: LineLogger = this.log,
  ): Promise<Outcome> {
    const key = session ? idKey(request.id) : '';
    if (session?.inflight.has(key)) {
      return errorOutcome(new GatewayError('invalid_request', `Invalid Request: id ${JSON.stringify(request.id)} is already in flight`, request.id));
    }
    // Only a session's client can cancel (notifications/cancelled names its session's request):
    // a session-less request needs no Cancellation (src/upstreams/cancellation.ts: not an AbortController).
    const controller = session ? new Cancellation() : undefined;
    if (controller) session?.inflight.set(key, controller);
    try {
      const options: RequestOptions = { onMessage: (m) => this.relayToClient(m, upstream, session, post) };
      if (controller) options.signal = controller.signal;
      const response = await upstream.request(request, options);
      return { response, status: 200, cancelled: false };
    } catch (err) {
      return errorOutcome(toGatewayError(err, request.id, log));
    } finally {
      session?.inflight.delete(key);
      session?.touch();
    }
  }

  /**
   * Sends a 2026-07-28 client's request to a legacy server, or continues one that asked the client
   * for input (its `requestState`). Ends with the server's answer, or with an `input_required`
   * result when the server asks the client something first (src/mcp/input-rounds.ts). Never
   * throws. `signal` aborts when the client closes this round's response: the call is cancelled.
   */
  async forwardModern(
    request: JsonRpcRequest,
    upstream: UpstreamSession,
    post: PostResponse,
    signal: AbortSignal,
    capabilities: Record<string, unknown>,
    /** Who may continue the call: computed only when the call takes input rounds. */
    bind: () => CallBinding,
    log: LineLogger = this.log,
  ): Promise<Outcome> {
    let call: PendingCall;
    const requestState = request.params?.['requestState'];
    if (requestState !== undefined) {
      const taken = this.rounds.take(requestState, bind());
      if (typeof taken === 'string') return errorOutcome(new GatewayError('invalid_params', `Invalid params: ${taken}`, request.id));
      call = taken;
      call.respond(request.params?.['inputResponses']);
    } else {
      const controller = new AbortController();
      const started = new PendingCall(upstream, capabilities, controller);
      call = started;
      const options: RequestOptions = {
        signal: controller.signal,
        capabilities,
        onMessage: (m) => ('id' in m ? started.serverRequest(m) : started.relay(m)),
      };
      upstream.request(toLegacyRequest(request), options).then(
        (response) => started.settle({ response, status: 200, cancelled: false }),
        (err: unknown) => started.settle(errorOutcome(toGatewayError(err, request.id, log))),
      ).finally(() => this.rounds.expireWhenSettled(started));
    }
    call.relay = (m) => void post.push(m);
    const cancel = (): void => call.controller.abort();
    signal.addEventListener('abort', cancel, { once: true });
    try {
      const round = await call.next();
      if ('inputRequired' in round) {
        call.binding ??= bind();
        this.rounds.hold(call);
        return { response: { jsonrpc: '2.0', id: request.id, result: round.inputRequired }, status: 200, cancelled: false };
      }
      // The answer carries the id of the request that started the call; this round's is another.
      return { ...round.answer, response: { ...round.answer.response, id: request.id } };
    } finally {
      signal.removeEventListener('abort', cancel);
    }
  }

  /** A message from upstream that belongs to a request in flight: on that request's stream if possible. */
  private relayToClient(message: ServerMessage, upstream: UpstreamSession, session: DownstreamSession | undefined, post: PostResponse): void {
    if ('id' in message && !session) {
      refuseServerRequest(upstream, message.id, SESSIONLESS);
      return;
    }
    if (!post.push(message)) session?.deliver(message);
    // Only the client a server request went to may answer it.
    else if ('id' in message) session?.expectAnswer(message.id);
  }
}

/**
 * The HTTP status of a modern server's answer when it is the only one: the specification's
 * statuses for its own errors (400 for the header, capability and version errors, 404 for an
 * unknown method), 200 for anything else.
 */
function modernStatus(response: JsonRpcResponse): number {
  if (!('error' in response)) return 200;
  const code = response.error.code;
  if (code === ErrorCode.HeaderMismatch || code === ErrorCode.MissingRequiredClientCapability || code === ErrorCode.UnsupportedProtocolVersion) return 400;
  return code === ErrorCode.MethodNotFound ? 404 : 200;
}

/**
 * Settles as `promise` does, or fulfils after `ms` if it has not settled by then. The timer is
 * cleared as soon as the promise settles: a timers/promises delay that loses a Promise.race stays
 * armed for its whole time, and holds its promise and the race's; every session's
 * notifications/initialized left one for 2 s, long enough to be promoted to the old generation
 * as garbage (about 700 B per session in the `memory` bench, until the next full GC).
 */
function atMost(promise: Promise<void>, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    promise.then(
      () => {
        clearTimeout(timer);
        resolve();
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/** The key of the gateway's own upstream session (and its listen streams) for a server and path. */
function sharedKey(server: ServerConfig, forwardPath: string): string {
  return `${server.name}\u0000${forwardPath}`;
}

/** Any failure as a GatewayError; unexpected ones are logged with their cause and shown as internal. */
export function toGatewayError(err: unknown, id: JsonRpcResponse['id'], log: LineLogger): GatewayError {
  if (err instanceof GatewayError) return err;
  if (err instanceof UpstreamError) return GatewayError.fromUpstream(err, id);
  log.error({ err }, 'internal error while handling a request');
  return new GatewayError('internal', 'Internal error', id);
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
