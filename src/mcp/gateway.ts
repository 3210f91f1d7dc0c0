/**
 * The gateway's state and its MCP exchanges: the upstreams, the downstream sessions, the shared
 * upstream sessions that serve session-less requests, and how one client request travels to its
 * upstream and back. The order of the stages around it lives in src/pipeline.ts.
 */
import { ANONYMOUS, ownerKey } from '../auth/identity.js';
import type { GatewayConfig, RouteConfig, ServerConfig, VirtualServerConfig } from '../config/schema.js';
import { GatewayError } from '../http/errors.js';
import { idKey, objectOf, type JsonRpcMessage, type JsonRpcNotification, type JsonRpcRequest, type JsonRpcResponse } from '../jsonrpc/messages.js';
import { randomUUID } from 'node:crypto';
import { SessionSeal, type SealedState } from '../replicas/seal.js';
import { ReplicaBus, type ReplicaMessage } from '../replicas/bus.js';
import type { LineLogger, Logger } from '../observability/logger.js';
import { discoverRequest } from '../upstreams/era.js';
import { Cancellation } from '../upstreams/cancellation.js';
import { waitAtMost } from '../upstreams/deadline.js';
import { UpstreamError } from '../upstreams/errors.js';
import type {
  EraVerdict,
  OpenSessionOptions,
  RequestOptions,
  ResumeState,
  ServerMessage,
  SessionHandlers,
  Upstream,
  UpstreamSession,
} from '../upstreams/upstream.js';
import { ResultCache } from '../eras/cache.js';
import { InputRounds } from '../eras/input-rounds.js';
import { ModernBackedSession } from '../eras/modern-server.js';
import { answered, errorOutcome, type Outcome, type PostResponse } from './post-response.js';
import { ListenHub, type Listener } from '../eras/subscriptions.js';
import { CANCELLED_BY_CLIENT, DownstreamSession, refuseServerRequest, SessionStore, type SessionRefusal } from './sessions.js';
import { TaskOwners } from './tasks.js';
import { errorMessage } from '../error-message.js';
import { settleWithin } from '../delay.js';
import type { ConfigDiff } from '../config/diff.js';
import { VirtualSession } from '../virtual/session.js';
import { scopeOf } from '../virtual/view.js';

/** How long relaying a client's `initialized` may wait for the upstream's GET stream. */
const EVENT_STREAM_WAIT_MS = 2_000;

const SESSIONLESS = 'Session-less clients cannot receive server requests';

/** The gateway's own sessions for session-less requests, per server, forward path and owner; bounded. */
const MAX_SHARED_SESSIONS = 1_024;
/**
 * A session-less caller's upstream session ends after this long unused: opening one again is an
 * initialize round trip (for stdio, a virtual session on the child: nothing), and an idle one
 * holds the server's per-session state for nobody.
 */
const SHARED_IDLE_MS = 60_000;
const SHARED_SWEEP_MS = 15_000;
/** Discover results of servers configured as modern, kept for this many server and path pairs at most. */
const MAX_DISCOVERED = 1_024;

interface SharedEntry {
  session: Promise<UpstreamSession>;
  /** The session once open. */
  resolved?: UpstreamSession;
  /** Requests using it now (sharedSession() until releaseShared()). */
  inUse: number;
  lastUsed: number;
  /** Whose it is (the owner in its key). */
  owner: string;
  /** The server's or virtual server's name (in its key). */
  server: string;
}

export type UpstreamFactory = (config: ServerConfig) => Upstream;

/** What the gateway tells its observers (the metrics) besides what a request records. */
export interface GatewayEvents {
  /** A member of a virtual server was left out of an answer or a session (down, failed, timed out). */
  memberOmitted?(virtualServer: string, server: string, reason: string): void;
}

export class Gateway {
  /** The config it runs with: replaced by a reload (reconfigure), with the servers it names. */
  config: GatewayConfig;
  readonly sessions: SessionStore;
  /** Legacy calls waiting for their 2026-07-28 client to give input (src/eras/input-rounds.ts). */
  readonly rounds = new InputRounds();
  /** Cacheable results of modern servers (src/eras/cache.ts). */
  readonly cache = new ResultCache();
  /** Which identity each task belongs to (src/mcp/tasks.ts). */
  readonly tasks = new TaskOwners();
  /** `[server] max_sessions_per_identity`, or its default: a tenth of max_sessions. */
  private readonly sessionQuota: number;
  /** Discover results of servers configured as modern, by name and forward path. */
  private readonly discovered = new Map<string, Promise<Record<string, unknown>>>();
  /**
   * Modern http servers, by name and forward path, that refused a legacy initialize: the
   * decidedAt of the verdict under which they did (a new probe asks again). Others get a legacy
   * client's session as they are (reachUpstreamSession).
   */
  private readonly legacyRefused = new Map<string, number>();
  private readonly upstreams = new Map<string, Upstream>();
  private readonly servers = new Map<string, ServerConfig>();
  private readonly shared = new Map<string, SharedEntry>();
  private sharedSweep: NodeJS.Timeout | undefined;
  private closing = false;
  /** 2026-07-28 listen streams, per shared session key (src/eras/subscriptions.ts). */
  private readonly hubs = new Map<string, ListenHub>();
  /** With `[server] session_keys`: seals session ids and opens those of other replicas (src/replicas/seal.ts). */
  private seal: SessionSeal | undefined;
  /** Sealed sessions being taken up, by id: two requests at once take one up once. */
  private readonly adopting = new Map<string, Promise<DownstreamSession | undefined>>();
  /** Messages to and from the other replicas, with session_keys and a Redis (src/replicas/bus.ts). */
  private readonly bus: ReplicaBus | undefined;
  /** Rounds this replica asked another to continue (continueElsewhere), by ask id. */
  private readonly asks = new Map<string, { taken(): void; done(result: RoundResult): void }>();
  /** Continues a held 2026-07-28 call for another replica; set by the app (src/eras/forwarding.ts continueHeld). */
  roundHandler: ((requestState: string, request: JsonRpcRequest, binding: Record<string, string>) => Promise<RoundResult>) | undefined;

  constructor(
    config: GatewayConfig,
    private readonly createUpstream: UpstreamFactory,
    private readonly log: Logger,
    private readonly events: GatewayEvents = {},
  ) {
    this.config = config;
    for (const server of config.servers) {
      this.upstreams.set(server.name, createUpstream(server));
      this.servers.set(server.name, server);
    }
    this.sessions = new SessionStore(
      {
        maxSessions: config.server.max_sessions,
        idleTimeoutMs: config.server.session_idle_timeout_ms,
        handshakeTimeoutMs: config.server.session_handshake_timeout_ms,
      },
      log,
    );
    this.sessionQuota = config.server.max_sessions_per_identity ?? Math.max(1, Math.ceil(config.server.max_sessions / 10));
    this.seal = sealOf(config);
    const redisUrl = config.server.redis_url ?? config.rate_limit?.redis_url;
    if (this.seal && redisUrl !== undefined) {
      this.bus = new ReplicaBus(redisUrl, log, () => this.seal);
      this.sessions.replicasSpeak = true;
      this.bus.onMessage((message) => this.fromReplica(message));
    }
  }

  /**
   * A message of another replica (src/replicas/bus.ts): the answer to a server request one of
   * this replica's sessions sent its client, forwarded only if that session expects it; a
   * session its client ended elsewhere, dropped here and refused from now on.
   */
  private fromReplica(message: ReplicaMessage): void {
    switch (message.kind) {
      case 'round':
        this.roundAsked(message);
        return;
      case 'round-taken':
        if (message.to === this.bus?.replica) this.asks.get(message.ask)?.taken();
        return;
      case 'round-result':
        if (message.to === this.bus?.replica) this.asks.get(message.ask)?.done({ messages: message.messages, response: message.response });
        return;
      default:
        break;
    }
    const session = this.sessions.get(message.session);
    if (message.kind === 'taken') {
      session?.touch();
      return;
    }
    if (message.kind === 'answer') {
      // The answer to this replica's own question (an approval), or to its upstream's request.
      if (session?.takeOwnAnswer(message.message)) return;
      if (session?.takeAnswer(message.message.id)) {
        session.upstream.send(message.message).catch((err) => this.log.warn({ err: errorMessage(err) }, 'could not relay an answer from another replica'));
      }
      return;
    }
    this.sessions.revokeId(message.session, message.expires);
    if (session) void this.sessions.close(session, 'ended by its client on another replica');
  }

  /**
   * A 2026-07-28 client's retry whose `requestState` this replica does not hold: the replica that
   * holds the call (src/eras/input-rounds.ts) continues it and sends back the round's result,
   * through Redis. Undefined when no replica says it holds it within ROUND_ACK_MS (expired, or no
   * Redis), or when the round takes longer than `timeoutMs`.
   */
  continueElsewhere(requestState: string, request: JsonRpcRequest, binding: Record<string, string>, timeoutMs: number): Promise<RoundResult | undefined> {
    const bus = this.bus;
    if (!bus) return Promise.resolve(undefined);
    const ask = randomUUID();
    return new Promise((resolve) => {
      const finish = (result: RoundResult | undefined): void => {
        clearTimeout(timer);
        this.asks.delete(ask);
        resolve(result);
      };
      let timer = setTimeout(() => finish(undefined), ROUND_ACK_MS);
      timer.unref();
      this.asks.set(ask, {
        taken: () => {
          clearTimeout(timer);
          timer = setTimeout(() => finish(undefined), timeoutMs);
          timer.unref();
        },
        done: finish,
      });
      bus.publish({ kind: 'round', ask, reply: bus.replica, requestState, request, binding });
    });
  }

  /** Continues, for another replica, a held 2026-07-28 call (roundHandler, set by the app: src/eras/forwarding.ts). */
  private roundAsked(message: Extract<ReplicaMessage, { kind: 'round' }>): void {
    const bus = this.bus;
    if (!bus || !this.roundHandler || !this.rounds.holds(message.requestState)) return;
    bus.publish({ kind: 'round-taken', ask: message.ask, to: message.reply });
    void this.roundHandler(message.requestState, message.request, message.binding).then((result) =>
      bus.publish({ kind: 'round-result', ask: message.ask, to: message.reply, ...result }),
    );
  }

  /**
   * A client's DELETE of a sealed session this replica does not hold: ended without taking it up
   * (no session slot is needed to end one): its id refused everywhere from now on, its upstream
   * session ended when it has one of its own (streamable HTTP). False when the id is not such a
   * session of this route and owner (404).
   */
  async endSealed(id: string, server: RouteConfig, owner: string): Promise<boolean> {
    const state = this.seal?.open(id, server.name);
    if (!state || state.owner !== owner || state.scope !== scopeOf(server) || this.sessions.revoked(id)) return false;
    this.sessions.revokeId(id, state.expires);
    this.bus?.publish({ kind: 'ended', session: id, expires: state.expires });
    const resume = state.upstream as ResumeState | null;
    if (resume?.kind === 'http' && server.transport !== 'virtual') {
      const upstream = this.upstream(server.name);
      const noop: SessionHandlers = { onMessage: () => undefined, onClose: () => undefined };
      const taken = await upstream.resumeSession?.(resume, { forwardPath: state.forwardPath, handlers: noop, owner }).catch(() => undefined);
      await taken?.close();
    }
    return true;
  }

  /** A client ends its session (DELETE): upstream too, and on every replica (no one takes its id up again). */
  async end(session: DownstreamSession): Promise<void> {
    if (session.expires !== Infinity) {
      this.sessions.revokeId(session.id, session.expires);
      this.bus?.publish({ kind: 'ended', session: session.id, expires: session.expires });
    }
    await this.sessions.close(session, 'client DELETE', true);
  }

  /** Whether session ids are sealed (any replica with the same keys can serve them). */
  get sealed(): boolean {
    return this.seal !== undefined;
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
    await Promise.all([this.bus?.start(), ...this.allUpstreams().map((u) => u.start())]);
  }

  /**
   * Ends every session, every upstream and child process, all at once: each piece has its own
   * bounded wait (an HTTP DELETE, SIGTERM before SIGKILL), and one frozen upstream must not make
   * the others wait in turn.
   */
  async close(): Promise<void> {
    this.closing = true;
    if (this.sharedSweep) clearTimeout(this.sharedSweep);
    const shared = [...this.shared.values()].map((entry) => entry.session);
    this.shared.clear();
    this.rounds.clear();
    await Promise.all([
      this.bus?.close(),
      this.sessions.closeAll('shutdown'),
      ...shared.map((p) => p.then((s) => s.close()).catch(() => undefined)),
      ...this.allUpstreams().map((u) => u.close()),
    ]);
  }

  /**
   * Applies a reloaded config (src/app/reload.ts) as a diff: unchanged servers keep their
   * upstream, children, sessions and streams; added servers start; removed and changed ones drain:
   * their sessions take no new request (404: the client initializes again) and end once their
   * calls have finished, then the old upstream closes (a changed server is started anew under
   * its name at once). Sessions of a removed key end at once. A virtual session whose member
   * changed reopens that member on its new upstream and tells its client to list again.
   * Resolves when the draining is done (at most `graceMs`); new requests use the new config from
   * the moment this is called.
   */
  async reconfigure(next: GatewayConfig, diff: ConfigDiff, graceMs: number): Promise<void> {
    if (JSON.stringify(next.server.session_keys) !== JSON.stringify(this.config.server.session_keys)) this.seal = sealOf(next);
    this.config = next;
    const retiring = new Set([...diff.servers.removed, ...diff.servers.changed]);
    const retired: Upstream[] = [];
    for (const name of retiring) {
      const old = this.upstreams.get(name);
      if (old) retired.push(old);
      this.upstreams.delete(name);
      this.servers.delete(name);
    }
    // What the gateway remembers of a server that goes (its discover results, a refused legacy
    // initialize, cached results) came from the old upstream: the new one is asked afresh.
    if (retiring.size > 0) {
      for (const map of [this.discovered, this.legacyRefused]) {
        for (const key of [...map.keys()]) if (retiring.has(key.slice(0, key.indexOf('\u0000')))) map.delete(key);
      }
      this.cache.clear();
    }
    const started: Promise<void>[] = [];
    for (const server of next.servers) {
      if (!this.upstreams.has(server.name)) {
        const upstream = this.createUpstream(server);
        this.upstreams.set(server.name, upstream);
        started.push(upstream.start().catch(() => undefined));
      }
      this.servers.set(server.name, server);
    }
    // The gateway's own sessions on a server that goes: new requests open one on the new upstream.
    const routesGoing = new Set([...retiring, ...diff.virtualServers.removed, ...diff.virtualServers.changed]);
    // A removed key's sessions end; so do a changed key's (its secret rotated, or its servers or
    // tools narrowed: new requests are checked again anyway, but a stream it holds open would go
    // on carrying what it may no longer see), and every JWT identity's when [auth.jwt] changed.
    const removed = new Set(diff.keys.removed);
    const changed = new Set(diff.keys.changed);
    const ownerGone = (owner: string): string | undefined =>
      removed.has(owner)
        ? 'its key was removed'
        : changed.has(owner)
          ? 'its key changed'
          : diff.jwt && owner.startsWith('jwt:')
            ? 'the JWT settings changed'
            : undefined;
    const sharedGoing: SharedEntry[] = [];
    for (const [key, entry] of [...this.shared]) {
      if (!routesGoing.has(entry.server) && ownerGone(entry.owner) === undefined) continue;
      this.retireShared(key);
      sharedGoing.push(entry);
    }
    const draining: DownstreamSession[] = [];
    for (const session of this.sessions.all()) {
      const gone = ownerGone(session.owner);
      if (gone !== undefined) void this.sessions.close(session, gone, true);
      else if (routesGoing.has(session.server)) {
        session.draining = true;
        draining.push(session);
      }
    }
    // Virtual sessions that stay (the clients' and the gateway's own) reopen a member that changed.
    const staying = [
      ...this.sessions
        .all()
        .filter((s) => !s.closed && !s.draining)
        .map((s) => s.upstream),
      ...[...this.shared.values()].map((e) => e.resolved),
    ];
    for (const upstream of staying) {
      if (upstream instanceof VirtualSession) for (const member of diff.servers.changed) upstream.memberReplaced(member);
    }
    const deadline = Date.now() + graceMs;
    await Promise.all([
      ...started,
      ...draining.map(async (session) => {
        await until(() => session.closed || session.inflight.size === 0, deadline);
        await this.sessions.close(session, 'config reloaded');
      }),
      ...sharedGoing.map(async (entry) => {
        await until(() => entry.inUse === 0, deadline);
        await entry.session.then((s) => s.close()).catch(() => undefined);
      }),
    ]);
    await Promise.all(retired.map((upstream) => upstream.close()));
  }

  /**
   * Opens a downstream session for a client's initialize, owned by one identity (see ownerKey).
   * `log` is the request's logger (its lines carry the request id), here and in the other
   * methods a request calls.
   */
  async initialize(
    server: RouteConfig,
    forwardPath: string,
    request: JsonRpcRequest,
    owner: string,
    log: LineLogger = this.log,
  ): Promise<{ response: JsonRpcResponse; session?: DownstreamSession }> {
    // Without authentication every client is the anonymous identity: only max_sessions applies.
    const refusal = this.sessions.reserve(owner, owner === ANONYMOUS_OWNER ? Infinity : this.sessionQuota);
    if (refusal) throw sessionRefusal(refusal, this.sessions, owner, request.id);
    const link = this.sessionLink(server.name, owner);
    let upstream: UpstreamSession;
    try {
      upstream = await this.openUpstreamSession(server, { initialize: request, forwardPath, handlers: link.handlers, owner, shared: this.seal !== undefined });
    } catch (err) {
      this.sessions.release(owner);
      throw toGatewayError(err, request.id, log);
    }
    const response = upstream.initializeResult;
    if ('error' in response) {
      this.sessions.release(owner);
      await upstream.close();
      return { response };
    }
    const version = typeof response.result['protocolVersion'] === 'string' ? response.result['protocolVersion'] : '';
    const scope = scopeOf(server);
    let sealed: { id: string; expires: number; resumable: boolean } | undefined;
    if (this.seal) {
      const expires = Date.now() + this.config.server.session_ttl_ms;
      const resume = upstream.resumeState?.();
      const state: SealedState = {
        route: server.name,
        owner,
        version,
        scope,
        forwardPath,
        client: sealedClient(request),
        upstream: resume ?? null,
        expires,
        nonce: randomUUID(),
      };
      sealed = { id: this.seal.seal(state), expires, resumable: resume !== undefined };
    }
    const session = new DownstreamSession(server.name, upstream, version, owner, scope, sealed);
    session.clientCapabilities = objectOf(request.params?.['capabilities']) ?? {};
    link.bind(session, upstream);
    this.sessions.add(session);
    log.debug({ server: server.name, sealed: sealed !== undefined }, 'session opened');
    return { response, session };
  }

  /**
   * A sealed session (`[server] session_keys`) that another replica opened, taken up here from
   * what its id carries, without a new handshake where the upstream keeps the session (a
   * streamable HTTP server), or opened again where the gateway did the handshake itself (a stdio
   * child shared or per identity, a translated 2026-07-28 server). Undefined for every id that is
   * not such a session for this route and identity (forged, expired, another's, a session whose
   * upstream lives on another replica's connection): the caller answers 404.
   */
  adopt(id: string, server: RouteConfig, owner: string, log: LineLogger = this.log): Promise<DownstreamSession | undefined> | undefined {
    const state = this.seal?.open(id, server.name);
    if (!state || state.owner !== owner || state.scope !== scopeOf(server) || state.upstream === null || this.sessions.revoked(id)) return undefined;
    let pending = this.adopting.get(id);
    if (!pending) {
      pending = this.takeUp(id, server, state, log).finally(() => this.adopting.delete(id));
      this.adopting.set(id, pending);
    }
    return pending;
  }

  private async takeUp(id: string, server: RouteConfig, state: SealedState, log: LineLogger): Promise<DownstreamSession | undefined> {
    const { owner } = state;
    const refusal = this.sessions.reserve(owner, owner === ANONYMOUS_OWNER ? Infinity : this.sessionQuota);
    if (refusal) throw sessionRefusal(refusal, this.sessions, owner, null);
    const link = this.sessionLink(server.name, owner);
    const initialize: JsonRpcRequest = { jsonrpc: '2.0', id: 0, method: 'initialize', params: state.client };
    let upstream: UpstreamSession;
    try {
      upstream = await this.resumeUpstreamSession(server, state.upstream as ResumeState, {
        initialize,
        forwardPath: state.forwardPath,
        handlers: link.handlers,
        owner,
        shared: true,
      });
    } catch (err) {
      this.sessions.release(owner);
      log.info({ server: server.name, err: errorMessage(err) }, 'a sealed session could not be taken up here');
      return undefined;
    }
    // Ended by its client (an `ended` message) while it was being taken up: not served after all.
    if (this.sessions.revoked(id)) {
      this.sessions.release(owner);
      await upstream.close({ keepUpstream: true }).catch(() => undefined);
      return undefined;
    }
    const session = new DownstreamSession(server.name, upstream, state.version, owner, state.scope, { id, expires: state.expires, resumable: true });
    session.clientCapabilities = objectOf(state.client['capabilities']) ?? {};
    session.touch();
    // The replica that opened it no longer takes it for half-open (SessionStore sweep).
    this.bus?.publish({ kind: 'taken', session: id });
    link.bind(session, upstream);
    this.sessions.add(session);
    log.debug({ server: server.name }, 'sealed session taken up');
    return session;
  }

  /** A session's upstream, opened anew or taken up as its ResumeState says. */
  private resumeUpstreamSession(server: RouteConfig, resume: ResumeState, options: OpenSessionOptions): Promise<UpstreamSession> {
    if (server.transport === 'virtual') {
      const members = resume.kind === 'virtual' ? resume.members : {};
      return VirtualSession.open(server, options, {
        // A member not open when the session was sealed is opened here, as one that joins late.
        open: (member, memberOptions) => {
          const state = members[member];
          if (state === null) return Promise.reject(new UpstreamError('protocol', member, 'its session lives on another replica'));
          const config = this.serverConfig(member);
          return state === undefined ? this.openUpstreamSession(config, memberOptions) : this.resumeUpstreamSession(config, state, memberOptions);
        },
        log: this.log.child({ virtualServer: server.name }),
        onOmitted: (member, reason) => this.events.memberOmitted?.(server.name, member, reason),
      });
    }
    if (resume.kind === 'reopen') return this.openUpstreamSession(server, options);
    const upstream = this.upstream(server.name);
    if (resume.kind !== 'http' || !upstream.resumeSession)
      return Promise.reject(new UpstreamError('protocol', server.name, 'this session cannot be taken up here'));
    return upstream.resumeSession(resume, options);
  }

  /**
   * The handlers a client session's upstream session reports to, before the session exists:
   * bind() it once it does. A task's status (or a message about a task) reaches only the task's
   * owner; an upstream that ends the session ends the client's.
   */
  private sessionLink(server: string, owner: string): { handlers: SessionHandlers; bind(session: DownstreamSession, upstream: UpstreamSession): void } {
    let session: DownstreamSession | undefined;
    let upstream: UpstreamSession | undefined;
    return {
      handlers: {
        onMessage: (m) => {
          if (!session || !upstream) return;
          if (this.tasks.deliverable(server, owner, m)) session.deliver(m);
          else if ('id' in m) refuseServerRequest(upstream, m.id, 'Not the client of this task');
        },
        onClose: (reason) => {
          if (session) void this.sessions.close(session, reason);
        },
      },
      bind: (s, u) => {
        session = s;
        upstream = u;
      },
    };
  }

  /**
   * The upstream session that serves requests sent without a session (plain curl), for one
   * identity: one per server, forward path and owner, opened by the gateway itself, reopened when
   * the upstream forgets it. Never shared by two identities: what a server keeps per session
   * (tasks, log level, subscriptions, a stdio child's virtual session) stays with its owner.
   * Bounded (MAX_SHARED_SESSIONS) and closed when idle for SHARED_IDLE_MS; a session in use
   * (a request in flight, see releaseShared, or a listen stream) is never closed as idle.
   */
  sharedSession(server: RouteConfig, forwardPath: string, owner: string): Promise<UpstreamSession> {
    const key = sharedKey(server, forwardPath, owner);
    const found = this.shared.get(key);
    if (found) {
      found.inUse++;
      found.lastUsed = Date.now();
      return found.session;
    }
    if (this.shared.size >= MAX_SHARED_SESSIONS) this.evictShared();
    let session: Promise<UpstreamSession> | undefined;
    const handlers: SessionHandlers = {
      onMessage: (m) => {
        // Nobody can answer a server request here: say so at once rather than let it wait.
        if ('id' in m) void session?.then((s) => refuseServerRequest(s, m.id, SESSIONLESS));
        // Change notifications go to the listen streams of 2026-07-28 clients.
        else this.hubs.get(key)?.deliver(m);
      },
      onClose: () => {
        if (this.shared.get(key)?.session === session) this.shared.delete(key);
        // The streams end without a result: their clients listen again, on the next session.
        const hub = this.hubs.get(key);
        this.hubs.delete(key);
        hub?.closeAll();
      },
    };
    session = this.openUpstreamSession(server, { forwardPath, handlers, owner });
    const entry: SharedEntry = { session, inUse: 1, lastUsed: Date.now(), owner, server: server.name };
    session.then(
      (opened) => (entry.resolved = opened),
      () => {
        if (this.shared.get(key) === entry) this.shared.delete(key);
      },
    );
    this.shared.set(key, entry);
    this.sweepSharedSoon();
    return session;
  }

  /** The request that took a shared session from sharedSession() is done with it. */
  releaseShared(server: RouteConfig, forwardPath: string, owner: string): void {
    const entry = this.shared.get(sharedKey(server, forwardPath, owner));
    if (!entry) return;
    entry.inUse = Math.max(0, entry.inUse - 1);
    entry.lastUsed = Date.now();
  }

  /**
   * Room for one more shared session, taken from the identity that holds the most: its least
   * recently used idle one goes, else its oldest. One caller opening a session per path and
   * query (`/prefix?n=1`, `?n=2`, ...) evicts its own, never another identity's (whose session
   * holds its tasks and subscriptions upstream).
   */
  private evictShared(): void {
    const held = new Map<string, number>();
    let hog = '';
    for (const entry of this.shared.values()) {
      const count = (held.get(entry.owner) ?? 0) + 1;
      held.set(entry.owner, count);
      if (count > (held.get(hog) ?? 0)) hog = entry.owner;
    }
    let victim: string | undefined;
    let first: string | undefined;
    let oldest = Infinity;
    for (const [key, entry] of this.shared) {
      if (entry.owner !== hog) continue;
      first ??= key;
      if (entry.inUse === 0 && !this.hubs.has(key) && entry.lastUsed < oldest) {
        oldest = entry.lastUsed;
        victim = key;
      }
    }
    this.closeShared(victim ?? first!);
  }

  private closeShared(key: string): void {
    const entry = this.retireShared(key);
    void entry?.session.then((s) => s.close()).catch(() => undefined);
  }

  /**
   * Takes a shared session out of use: new requests open another, and its 2026-07-28 listen
   * streams end (their clients listen again, on the next one). The caller closes the session.
   * Its own close does not call back (no onClose), so the streams are ended here.
   */
  private retireShared(key: string): SharedEntry | undefined {
    const entry = this.shared.get(key);
    this.shared.delete(key);
    const hub = this.hubs.get(key);
    this.hubs.delete(key);
    hub?.closeAll();
    return entry;
  }

  /** Shared sessions idle for SHARED_IDLE_MS end; the sweep runs only while there are some. */
  private sweepSharedSoon(): void {
    if (this.sharedSweep || this.closing) return;
    this.sharedSweep = setTimeout(() => {
      this.sharedSweep = undefined;
      const cutoff = Date.now() - SHARED_IDLE_MS;
      for (const [key, entry] of [...this.shared]) {
        if (entry.inUse === 0 && !this.hubs.has(key) && entry.lastUsed < cutoff) this.closeShared(key);
      }
      if (this.shared.size > 0) this.sweepSharedSoon();
    }, SHARED_SWEEP_MS);
    this.sharedSweep.unref();
  }

  /**
   * Adds a 2026-07-28 listen stream on the shared session of a server, path and owner: it
   * receives the change notifications it asked for until it closes. Returns what removes it.
   */
  async listen(server: RouteConfig, forwardPath: string, owner: string, upstream: UpstreamSession, listener: Listener): Promise<() => void> {
    const key = sharedKey(server, forwardPath, owner);
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
      const entry = this.shared.get(key);
      if (entry) entry.lastUsed = Date.now();
    };
  }

  /** Shutdown: every listen stream gets its empty result and ends, so none holds the grace period. */
  endListens(): void {
    for (const hub of this.hubs.values()) hub.endAll();
    this.hubs.clear();
  }

  dropSharedSession(server: RouteConfig, forwardPath: string, owner: string, session: UpstreamSession): void {
    const key = sharedKey(server, forwardPath, owner);
    // At once: the retry that follows must open a new session, not find this one again.
    if (this.shared.get(key)?.resolved === session) this.retireShared(key);
  }

  /**
   * An upstream session for a legacy client (or the gateway's own): the server's own session when
   * it speaks the legacy era, or a session the gateway keeps for it in front of a modern server
   * (src/eras/modern-server.ts). The era is probed once per server and remembered.
   *
   * A client waits for it at most the server's timeout_ms, probe and handshake together, from the
   * moment its request asks (finding 10 of issue 16): startup_timeout_ms is a stdio child's and an
   * SSE stream's, not a client's. Clients that join the same opening (the gateway's own session)
   * wait no longer than the first one's deadline; a session that opens after it is closed.
   */
  private openUpstreamSession(server: RouteConfig, options: OpenSessionOptions): Promise<UpstreamSession> {
    // A virtual session waits for each member at most that member's own deadline, and never fails
    // because of one: a deadline of its own could only turn a slow member into a failed initialize.
    if (server.transport === 'virtual') return this.openVirtualSession(server, options);
    return waitAtMost(this.reachUpstreamSession(server, options), server.timeout_ms, server.name, (late) => void late.close());
  }

  /**
   * A virtual server's session (src/virtual/session.ts): one upstream session per member, each
   * opened as the member's own route opens one (its era, its isolation, its deadline). `server`
   * is the virtual server as the caller sees it: only the members it may reach.
   */
  private openVirtualSession(server: VirtualServerConfig, options: OpenSessionOptions): Promise<UpstreamSession> {
    const log = this.log.child({ virtualServer: server.name });
    return VirtualSession.open(server, options, {
      open: (member, memberOptions) => this.openUpstreamSession(this.serverConfig(member), memberOptions),
      log,
      onOmitted: (member, reason) => this.events.memberOmitted?.(server.name, member, reason),
    });
  }

  /**
   * The era a route's requests are forwarded in: the server's (probed once and remembered), or
   * legacy for a virtual server (it is a session the gateway keeps, whatever its members speak).
   */
  async era(server: RouteConfig, forwardPath: string): Promise<EraVerdict['era']> {
    if (server.transport === 'virtual') return 'legacy';
    return (await this.upstream(server.name).era({ forwardPath })).era;
  }

  serverConfig(name: string): ServerConfig {
    const server = this.servers.get(name);
    if (!server) throw new Error(`no server named ${name}`);
    return server;
  }

  private async reachUpstreamSession(server: ServerConfig, options: OpenSessionOptions): Promise<UpstreamSession> {
    const upstream = this.upstream(server.name);
    const verdict = await upstream.era({ forwardPath: options.forwardPath });
    if (verdict.era === 'legacy') return upstream.openSession(options);
    // A probed http server may serve both eras (the specification's dual-era servers: legacy
    // traffic is whatever has no `_meta` version), and may ask for input only in a legacy session
    // (the conformance suite's reference server does). So a legacy client that can be asked
    // (it declares sampling, elicitation or roots) gets the server's own session when the server
    // takes its initialize: the server's requests reach it as they do directly, which a
    // translation cannot promise. A server that refuses is remembered, per path, and translated
    // (src/eras/modern-server.ts) until its era is probed again. Clients that cannot be asked
    // anything lose nothing to the translation, and keep it.
    const key = `${server.name}\u0000${options.forwardPath}`;
    if (server.transport === 'http' && verdict.source === 'probe' && canBeAsked(options.initialize) && this.legacyRefused.get(key) !== verdict.decidedAt) {
      try {
        return await upstream.openSession(options);
      } catch (error) {
        if (!(error instanceof UpstreamError) || (error.kind !== 'protocol' && error.kind !== 'session_expired')) throw error;
        if (this.legacyRefused.size >= MAX_DISCOVERED) this.legacyRefused.delete(this.legacyRefused.keys().next().value as string);
        this.legacyRefused.set(key, verdict.decidedAt);
        this.log.info({ server: server.name, err: errorMessage(error) }, 'modern upstream refused a legacy session: translating for legacy clients');
      }
    }
    const known = verdict.discover ? verdict : { ...verdict, discover: await this.discover(server, options.forwardPath) };
    return new ModernBackedSession(
      upstream,
      known,
      options.forwardPath,
      options.handlers,
      options.initialize,
      this.log.child({ server: server.name }),
      options.owner,
    );
  }

  /**
   * The discover result of a server configured as modern (`era = "modern"`: never probed), asked
   * once per forward path, as era verdicts are (src/upstreams/era.ts PathVerdicts): with prefix
   * routing each path may be another endpoint, and one caller's choice of path must not decide
   * what the others are answered. Bounded: the oldest path is forgotten first.
   */
  private discover(server: ServerConfig, forwardPath: string): Promise<Record<string, unknown>> {
    const key = `${server.name}\u0000${forwardPath}`;
    let found = this.discovered.get(key);
    if (!found) {
      const asked = this.upstream(server.name)
        .call(discoverRequest('gateway-discover'), { forwardPath, owner: GATEWAY_OWNER, onMessage: () => undefined })
        .then((response) => {
          if ('result' in response) return response.result;
          throw new UpstreamError('protocol', server.name, `Upstream '${server.name}' answered server/discover with an error: ${response.error.message}`);
        });
      found = asked;
      asked.catch(() => {
        if (this.discovered.get(key) === asked) this.discovered.delete(key);
      });
      if (this.discovered.size >= MAX_DISCOVERED) this.discovered.delete(this.discovered.keys().next().value as string);
      this.discovered.set(key, asked);
    }
    return found;
  }

  /** Relays a client's notification or answer. */
  async relayToUpstream(
    message: JsonRpcNotification | JsonRpcResponse,
    upstream: UpstreamSession,
    session: DownstreamSession | undefined,
    log: LineLogger = this.log,
  ): Promise<void> {
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
        await settleWithin(upstream.openEventStream(), EVENT_STREAM_WAIT_MS, () => undefined);
      }
      await upstream.send(message).catch((err) => log.warn({ err: errorMessage(err) }, 'could not relay a notification'));
      return;
    }
    // The answer to the gateway's own question (an approval): the gateway's, never the server's.
    if (session?.takeOwnAnswer(message)) return;
    if (!session?.takeAnswer(message.id)) {
      // A sealed session's server request may have been sent by another replica: it forwards the
      // answer if it sent that request to this session's client.
      if (session?.shared && this.bus && session.mayRelayAnswer()) this.bus.publish({ kind: 'answer', session: session.id, message });
      else log.warn({ id: message.id }, 'dropped an answer to a server request this session was not sent');
      return;
    }
    await upstream.send(message).catch((err) => log.warn({ err: errorMessage(err) }, 'could not relay an answer'));
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
      return answered(response);
    } catch (err) {
      const outcome = errorOutcome(toGatewayError(err, request.id, log));
      // Only what the client itself cancelled (notifications/cancelled) goes unanswered, on a
      // stream or as JSON; a call its session's closing aborted is answered with the error.
      if (controller) outcome.cancelled = controller.reason === CANCELLED_BY_CLIENT;
      return outcome;
    } finally {
      session?.inflight.delete(key);
      session?.touch();
    }
  }

  /** A message from upstream that belongs to a request in flight: on that request's stream if possible. */
  private relayToClient(message: ServerMessage, upstream: UpstreamSession, session: DownstreamSession | undefined, post: PostResponse): void {
    if ('id' in message && !session) {
      refuseServerRequest(upstream, message.id, SESSIONLESS);
      return;
    }
    // A message about another identity's task is not this client's, whichever call it came with.
    if (!this.tasks.deliverable(session?.server, session?.owner, message)) {
      if ('id' in message) refuseServerRequest(upstream, message.id, 'Not the client of this task');
      return;
    }
    if (!post.push(message)) session?.deliver(message);
    // Only the client a server request went to may answer it.
    else if ('id' in message) session?.expectAnswer(message.id);
  }
}

/** How long a replica waits for another to say it holds a 2026-07-28 call (continueElsewhere). */
const ROUND_ACK_MS = 2_000;

/** A 2026-07-28 round continued by another replica: what the call sent meanwhile, and its answer. */
export interface RoundResult {
  messages: JsonRpcMessage[];
  response: JsonRpcResponse;
}

/** The sealer of a config with session_keys. */
function sealOf(config: GatewayConfig): SessionSeal | undefined {
  const keys = config.server.session_keys;
  return keys === undefined ? undefined : new SessionSeal(keys);
}

/** The longest client part of a sealed id: a client that declares more keeps only the standard capabilities. */
const MAX_SEALED_CLIENT = 2_048;

/**
 * What a sealed id keeps of the client's initialize params: what another replica needs to open
 * its session again (its capabilities, version and name). Bounded: the id is a header.
 */
function sealedClient(initialize: JsonRpcRequest): Record<string, unknown> {
  const params = initialize.params ?? {};
  const info = objectOf(params['clientInfo']);
  const client: Record<string, unknown> = {
    protocolVersion: params['protocolVersion'],
    capabilities: objectOf(params['capabilities']) ?? {},
    clientInfo: { name: String(info?.['name'] ?? '').slice(0, 128), version: String(info?.['version'] ?? '').slice(0, 64) },
  };
  if (JSON.stringify(client).length <= MAX_SEALED_CLIENT) return client;
  const declared = objectOf(params['capabilities']) ?? {};
  const capabilities: Record<string, unknown> = {};
  for (const name of ['sampling', 'elicitation', 'roots', 'tasks']) if (declared[name] !== undefined) capabilities[name] = {};
  return { ...client, capabilities };
}

/** Whether a legacy client's initialize declares a capability a server may ask it to use (sampling, elicitation, roots). */
function canBeAsked(initialize: JsonRpcRequest | undefined): boolean {
  const capabilities = initialize?.params?.['capabilities'];
  if (capabilities === null || typeof capabilities !== 'object') return false;
  return ['sampling', 'elicitation', 'roots'].some((name) => (capabilities as Record<string, unknown>)[name] !== undefined);
}

/**
 * The key of the gateway's own upstream session (and its listen streams) for a server, path and
 * owner; for a virtual server, also the members the caller may reach (a JWT's servers claim may
 * differ from one token to the next of the same subject).
 */
function sharedKey(server: RouteConfig, forwardPath: string, owner: string): string {
  return `${server.name}\u0000${forwardPath}\u0000${owner}\u0000${scopeOf(server)}`;
}

/** Resolves once `done()` holds (checked every 50 ms) or at `deadline` (ms since epoch): a reload's drain, never a request's path. */
async function until(done: () => boolean, deadline: number): Promise<void> {
  while (!done() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
}

/** The owner of what the gateway asks a server for itself (a discover), on no caller's behalf. */
const GATEWAY_OWNER = 'gateway:';

const ANONYMOUS_OWNER = ownerKey(ANONYMOUS);

/**
 * An initialize refused for want of a slot: 503 when the gateway has max_sessions open (its
 * capacity: try later, or elsewhere), 429 when this identity has its quota (its own doing: end a
 * session first). Retry-After says when a slot would free itself if nobody did anything.
 */
function sessionRefusal(refusal: SessionRefusal, sessions: SessionStore, owner: string, id: JsonRpcResponse['id']): GatewayError {
  const error =
    refusal === 'full'
      ? new GatewayError('too_many_sessions', 'Too many sessions; try again later', id)
      : new GatewayError('session_quota', 'Too many sessions for this identity: end one (DELETE) or try again later', id);
  error.retryAfterSecs = sessions.retryAfterSecs(refusal === 'full' ? undefined : owner);
  return error;
}

/** Any failure as a GatewayError; unexpected ones are logged with their cause and shown as internal. */
export function toGatewayError(err: unknown, id: JsonRpcResponse['id'], log: LineLogger): GatewayError {
  if (err instanceof GatewayError) return err;
  if (err instanceof UpstreamError) return GatewayError.fromUpstream(err, id);
  log.error({ err }, 'internal error while handling a request');
  return new GatewayError('internal', 'Internal error', id);
}
