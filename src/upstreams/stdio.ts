/**
 * A stdio upstream: one supervised child process per server, shared by every client.
 *
 * The gateway owns the child's MCP session: it sends the one `initialize` itself, declaring the
 * client capabilities it can relay (sampling, elicitation, roots), and answers each client's own
 * handshake from the child's reply. Each client gets a virtual session; the correlator rewrites
 * request ids and progress tokens so that replies never cross between clients.
 *
 * Supervision: a child that exits is restarted with exponential backoff; after `max_restarts`
 * consecutive quick failures the server is reported as `crash_loop` and retried at the slowest
 * pace only. A request in flight when the child dies fails at once (never left to the client's
 * own timeout, supergateway #139). The child gets an explicit environment, never the gateway's,
 * and runs in its own process group so that the whole tree (`npx` -> `sh` -> `node`) ends with it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { LATEST_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS } from '../mcp/protocol.js';
import type { ServerConfig } from '../config/schema.js';
import {
  ErrorCode,
  errorResponse,
  idKey,
  isRequest,
  isResponse,
  objectOf,
  toMessage,
  type JsonRpcId,
  type JsonRpcMessage,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from '../jsonrpc/messages.js';
import { META, MODERN_PROTOCOL_VERSION } from '../mcp/era.js';
import type { Logger } from '../observability/logger.js';
import type { UpstreamDeps } from './upstream.js';
import { GATEWAY_NAME, GATEWAY_VERSION } from '../version.js';
import { Correlator, cancelNotification } from './correlator.js';
import { configuredVerdict, discoverRequest, isFresh, probedVerdict, readProbeAnswer, type ProbeAnswer } from './era.js';
import { UpstreamError } from './errors.js';
import { MAX_LINE_BYTES, readLines, responseIdOf, type OversizedLine } from './line-reader.js';
import { dropTooDeep, failInFlight, nestedTooDeep } from './inbound.js';
import { killGroup, terminateTree, track } from './process-tree.js';
import type {
  CallOptions,
  EraVerdict,
  OpenSessionOptions,
  RequestOptions,
  ServerMessage,
  SessionHandlers,
  Upstream,
  UpstreamSession,
  UpstreamState,
  UpstreamStatus,
} from './upstream.js';

/** The environment a child inherits from the gateway; everything else comes from `env` in config. */
const INHERITED_ENV = ['HOME', 'LOGNAME', 'PATH', 'SHELL', 'TERM', 'USER', 'LANG', 'TMPDIR'] as const;

/** A child that ran this long before exiting was healthy: its exit does not count as a quick failure. */
const STABLE_AFTER_MS = 30_000;
/**
 * Bytes waiting to be written to a child's stdin beyond which requests are refused rather than
 * queued: a child that does not read its input must not fill the gateway's memory.
 */
const STDIN_BACKLOG_BYTES = 8 * 1024 * 1024;
/** stderr lines are logged up to this length. */
const MAX_STDERR_LINE = 2_000;
/**
 * Server-to-client requests a child may have waiting on its clients at once. Beyond, a new one is
 * answered with an error at once: a hostile or broken server sending requests that no client
 * answers must not grow the gateway's memory without bound.
 */
const MAX_PENDING_SERVER_REQUESTS = 1_000;
/**
 * How long a starting child has to answer the era probe (`server/discover`) before it is taken
 * for a legacy server that ignores unknown requests; at most half of startup_timeout_ms, which
 * bounds the whole start (probe and initialize). Legacy servers built on the SDKs answer an error
 * at once; a modern one that answers later than this is still recognised while its initialize is
 * in flight (see initializeOrAdopt).
 */
const PROBE_TIMEOUT_MS = 2_000;

/** The owner of a 2026-07-28 call in the correlator: it belongs to no session, only to its caller. */
class ModernCall {
  constructor(readonly owner: string) {}
}
/** Who a request in flight is for: a client's session, a 2026-07-28 caller, or the gateway itself (null). */
type CallOwner = VirtualSession | ModernCall | null;

/** The identity (owner key) a request in flight is for; undefined for the gateway's own. */
function ownerOf(owner: CallOwner): string | undefined {
  return owner === null ? undefined : owner.owner;
}

/** Notifications about the server as a whole, which every client may see. */
const SERVER_WIDE = new Set([
  'notifications/tools/list_changed',
  'notifications/prompts/list_changed',
  'notifications/resources/list_changed',
]);

/** How a probe written to a child ended. */
type ProbeOutcome = { kind: 'answer'; response: JsonRpcResponse } | { kind: 'silent' } | { kind: 'exited' } | { kind: 'gone' };

/** A probe written to a child, until it ends. */
interface PendingProbe {
  child: ChildProcess;
  id: string;
  /** Written while the child starts (before initialize): its exit is then part of the probe. */
  atStart: boolean;
  settle(outcome: ProbeOutcome): void;
}

/**
 * The client capabilities the gateway declares to the child: the ones it can relay to a client.
 * Roots only with relay_roots: a shared child would apply one client's roots to every client.
 */
function relayedCapabilities(config: ServerConfig): Record<string, object> {
  return config.relay_roots ? { sampling: {}, elicitation: {}, roots: { listChanged: true } } : { sampling: {}, elicitation: {} };
}

/** Which client capability a server-to-client request needs. */
const REQUIRED_CAPABILITY: Record<string, 'sampling' | 'elicitation' | 'roots'> = {
  'sampling/createMessage': 'sampling',
  'elicitation/create': 'elicitation',
  'roots/list': 'roots',
};

export function childEnvironment(configured: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const key of INHERITED_ENV) {
    const value = process.env[key];
    // A value starting with "()" is a shell function export (shellshock): never pass it on.
    if (value !== undefined && !value.startsWith('()')) env[key] = value;
  }
  return { ...env, ...configured };
}

/** The protocol version to answer a client with: its own when we support it and the child does too. */
export function negotiateVersion(requested: unknown, upstream: string): string {
  if (typeof requested === 'string' && SUPPORTED_PROTOCOL_VERSIONS.includes(requested)) {
    return requested < upstream ? requested : upstream;
  }
  return upstream;
}

interface ChildInit {
  protocolVersion: string;
  result: Record<string, unknown>;
}

export class StdioUpstream implements Upstream {
  private state: UpstreamState = 'idle';
  private since = Date.now();
  private lastError: string | undefined;
  private restarts = 0;
  private quickFailures = 0;
  private child: ChildProcess | undefined;
  private childStartedAt = 0;
  /** Why the gateway itself ended the current child, when it did (reported instead of the signal). */
  private exitReason: string | undefined;
  private init: ChildInit | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  /** Writes the current child's stdin has taken (their callbacks), and the watch on its backlog. */
  private flushes = 0;
  private readonly onFlushed = (error?: Error | null): void => {
    if (!error) this.flushes++;
  };
  private stdinWatch: NodeJS.Timeout | undefined;
  /**
   * The stdin corked for the current turn of the event loop: every message written in one turn
   * goes to the child in one write. Each write to a pipe wakes the child, and that wake-up is
   * most of what a write costs (a CPU profile at 10 clients: 23% of the gateway's time in
   * writeUtf8String, one write per request).
   */
  private corked: NonNullable<ChildProcess['stdin']> | undefined;
  private readonly uncork = (): void => {
    const stdin = this.corked;
    this.corked = undefined;
    stdin?.uncork();
  };
  private readyWaiters: Array<{ resolve: () => void; reject: (e: UpstreamError) => void }> = [];
  private readonly sessions = new Set<VirtualSession>();
  /** Server-to-client requests delivered to a client and not answered yet: child id -> session. */
  private readonly serverRequests = new Map<string, { session: VirtualSession; id: JsonRpcId }>();
  /** Resource subscriptions: uri -> sessions. The child sees one subscription per uri. */
  private readonly subscriptions = new Map<string, Set<VirtualSession>>();
  /** The session that last told us its roots changed: the one to ask when the child asks for roots. */
  private rootsSession: VirtualSession | undefined;
  private readonly correlator: Correlator<CallOwner>;
  private readonly log: Logger;
  /**
   * The era of the current child, and of the next one while it is fresh: configured, or probed
   * when a child starts and kept across restarts for a day.
   */
  private eraVerdict: EraVerdict | undefined;
  /** The current child speaks 2026-07-28: it was never initialized and takes call() only. */
  private modernChild = false;
  /** era({ refresh }) on an initialized legacy child: its next start probes again. */
  private reprobe = false;
  private probing: PendingProbe | undefined;
  private probeCount = 0;
  /**
   * A start probe that went unanswered in time, while the same child's initialize is in flight:
   * its late answer may still say that the child is modern.
   */
  private lateProbe: { child: ChildProcess; id: string; modern?: Extract<ProbeAnswer, { kind: 'modern' }> } | undefined;
  private rediscovering: Promise<EraVerdict> | undefined;
  private readonly onRestart: ((server: string) => void) | undefined;
  private readonly onContained: UpstreamDeps['onContained'];
  /** When a client last sent something or a session ended (ms since epoch): an isolated child's idle clock. */
  lastActive = Date.now();

  constructor(
    readonly config: ServerConfig,
    deps: UpstreamDeps,
  ) {
    this.log = deps.logger.child({ server: config.name, transport: 'stdio' });
    this.onRestart = deps.onRestart;
    this.onContained = deps.onContained;
    this.correlator = new Correlator(config.name, (wireId, reason) => this.write(cancelNotification(wireId, reason)));
    this.eraVerdict = configuredVerdict(config);
  }

  status(): UpstreamStatus {
    const s: UpstreamStatus = {
      state: this.state,
      healthy: this.state === 'ready',
      restarts: this.restarts,
      since: this.since,
    };
    if (this.lastError !== undefined && this.state !== 'ready') s.lastError = this.lastError;
    if (this.child?.pid !== undefined && this.state === 'ready') s.pid = this.child.pid;
    return s;
  }

  get verdict(): EraVerdict | undefined {
    return this.eraVerdict;
  }

  /** A session is open on the child or a call is in flight: an isolated child is not idle. */
  get busy(): boolean {
    return this.sessions.size > 0 || this.correlator.size > 0;
  }

  /** A request is in flight on the child (an isolated child with one may not be ended to make room). */
  get working(): boolean {
    return this.correlator.size > 0;
  }

  /** Ends every session on the child, telling each one's client (its downstream session ends too). */
  endSessions(reason: string): void {
    for (const session of [...this.sessions]) {
      session.detach();
      session.handlers.onClose(reason);
    }
  }

  /**
   * The verdict of the running child whatever its age (a child's era does not change while it
   * runs), else the remembered one while fresh, else the one its next start reaches (starting
   * the server when idle). `refresh` asks a running modern child again; an initialized legacy
   * child cannot be asked (a dual-era child has pinned the legacy era), so its next start probes.
   */
  async era(options: { forwardPath?: string; refresh?: boolean } = {}): Promise<EraVerdict> {
    const known = this.eraVerdict;
    if (known?.source === 'config') return known;
    const running = this.writable();
    if (options.refresh) {
      if (running && this.modernChild) return (this.rediscovering ??= this.rediscover().finally(() => (this.rediscovering = undefined)));
      this.reprobe = true;
      if (running && known) return known;
    } else if (known && (running || isFresh(known))) {
      return known;
    }
    // A client waits for this: at most timeout_ms; the start goes on within startup_timeout_ms.
    await this.whenReady(this.config.timeout_ms);
    if (!this.eraVerdict) throw this.unavailable();
    return this.eraVerdict;
  }

  /**
   * Sends one 2026-07-28 request to a modern child: ids and progress tokens rewritten and restored
   * as for legacy requests (the child is shared), notifications/cancelled on abort or timeout.
   * A `subscriptions/listen` gets the notifications that name it in
   * `_meta["io.modelcontextprotocol/subscriptionId"]` (the client's id restored there), has a
   * deadline only until the first of them, and ends with the child's (empty) result, or when the
   * child cancels it.
   */
  async call(request: JsonRpcRequest, options: CallOptions): Promise<JsonRpcResponse> {
    if (this.eraVerdict?.era === 'legacy') throw this.legacyOnly();
    const timeoutMs = options.timeoutMs ?? this.config.timeout_ms;
    if (!this.writable()) await this.whenReady(timeoutMs);
    if (!this.modernChild) throw this.legacyOnly();
    this.lastActive = Date.now();
    const outgoing = this.correlator.begin(request, options, timeoutMs, new ModernCall(options.owner));
    const refused = this.send(outgoing.wire);
    if (refused) this.correlator.fail(outgoing.wire.id as number, refused);
    return outgoing.response;
  }

  private legacyOnly(): UpstreamError {
    const name = this.config.name;
    return new UpstreamError('protocol', name, `Upstream '${name}' speaks the legacy era of MCP: it takes requests in sessions, not one by one`);
  }

  /** Spawns and initializes the child. Resolves once the first attempt has succeeded or failed. */
  async start(): Promise<void> {
    if (this.state !== 'idle') return;
    await this.launch().catch(() => undefined);
  }

  async openSession(options: OpenSessionOptions): Promise<UpstreamSession> {
    // As in era(): the client's timeout_ms, not the child's startup_timeout_ms (finding 10).
    await this.whenReady(this.config.timeout_ms);
    if (this.modernChild) {
      const name = this.config.name;
      throw new UpstreamError('protocol', name, `Upstream '${name}' speaks the 2026-07-28 era of MCP: it has no sessions`);
    }
    const init = this.init;
    if (!init) throw this.unavailable();
    const session = new VirtualSession(this, options.handlers, options.initialize, init, options.owner);
    this.sessions.add(session);
    return session;
  }

  async close(): Promise<void> {
    this.setState('stopped');
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.rejectWaiters(this.unavailable());
    for (const session of [...this.sessions]) session.detach();
    const child = this.child;
    if (child) await terminateTree(child);
    this.child = undefined;
    this.correlator.failAll(new UpstreamError('closed', this.config.name, `Upstream '${this.config.name}' is shutting down`));
  }

  // ---- used by VirtualSession ---------------------------------------------------------------

  /** @internal Sends a client request to the child; waits for the child to be ready first. */
  async request(session: VirtualSession, request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    this.lastActive = Date.now();
    const timeoutMs = options.timeoutMs ?? this.config.timeout_ms;
    if (!this.writable()) await this.whenReady(timeoutMs);
    const outgoing = this.correlator.begin(request, options, timeoutMs, session);
    const refused = this.send(outgoing.wire);
    if (refused) this.correlator.fail(outgoing.wire.id as number, refused);
    return outgoing.response;
  }

  /** @internal Writes a message to the child's stdin. False when it could not be written. */
  write(message: JsonRpcMessage): boolean {
    return this.send(message) === undefined;
  }

  /**
   * Writes a message to the child's stdin, or says why it cannot: no child to write to, or a
   * child that has left STDIN_BACKLOG_BYTES unread (refused, not queued: the gateway's memory).
   */
  private send(message: JsonRpcMessage): UpstreamError | undefined {
    const child = this.child;
    const stdin = child?.stdin;
    if (!child || !stdin || stdin.destroyed || !stdin.writable) return this.unavailable();
    if (stdin.writableLength >= STDIN_BACKLOG_BYTES) {
      const name = this.config.name;
      return new UpstreamError('unavailable', name, `Upstream '${name}' has not read ${stdin.writableLength} bytes of its input yet; request not sent`);
    }
    if (this.corked !== stdin) {
      // A previous child's stream needs no flush: it is gone.
      if (this.corked === undefined) setImmediate(this.uncork);
      this.corked = stdin;
      stdin.cork();
    }
    if (!stdin.write(`${JSON.stringify(message)}\n`, this.onFlushed)) this.watchStdin(child, stdin);
    return undefined;
  }

  /**
   * Called when the child's stdin is backed up: if it takes no write at all for timeout_ms, the
   * child is not reading (every request written since has timed out, and so would the next ones):
   * it is ended and restarted. A child that reads, however slowly, is left alone.
   */
  private watchStdin(child: ChildProcess, stdin: NonNullable<ChildProcess['stdin']>): void {
    if (this.stdinWatch) return;
    const limitMs = this.config.timeout_ms;
    let flushed = this.flushes;
    const check = (): void => {
      this.stdinWatch = undefined;
      if (this.child !== child || !stdin.writableNeedDrain) return;
      if (this.flushes !== flushed) {
        flushed = this.flushes;
        this.stdinWatch = setTimeout(check, limitMs).unref();
        return;
      }
      const name = this.config.name;
      this.log.error({ waitingBytes: stdin.writableLength, forMs: limitMs }, 'upstream child is not reading its input; ending it');
      this.endChild(child, `Upstream '${name}' stopped reading its input (${stdin.writableLength} bytes unread for ${limitMs} ms)`);
    };
    this.stdinWatch = setTimeout(check, limitMs).unref();
  }

  /** @internal A client answers a server-to-client request: only the client it was sent to may. */
  answerServerRequest(session: VirtualSession, response: JsonRpcResponse): void {
    if (response.id === null) return;
    const key = idKey(response.id);
    if (this.serverRequests.get(key)?.session !== session) {
      this.log.warn({ id: response.id }, 'a client answered a server request that was not sent to it; dropped');
      return;
    }
    this.serverRequests.delete(key);
    this.write(response);
  }

  /** @internal */
  setRootsSession(session: VirtualSession): void {
    this.rootsSession = session;
  }

  /** @internal Subscribes a session to a resource; the child is asked only for the first one. */
  async subscribe(session: VirtualSession, request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    const uri = request.params?.['uri'];
    if (typeof uri !== 'string') return this.request(session, request, options);
    const subscribers = this.subscriptions.get(uri);
    if (subscribers && subscribers.size > 0) {
      subscribers.add(session);
      return { jsonrpc: '2.0', id: request.id, result: {} };
    }
    const response = await this.request(session, request, options);
    if ('result' in response) this.subscriptions.set(uri, new Set([session]));
    return response;
  }

  /** @internal Unsubscribes; the child is told only when the last subscriber leaves. */
  async unsubscribe(session: VirtualSession, request: JsonRpcRequest | null, uri: string, options?: RequestOptions): Promise<JsonRpcResponse | undefined> {
    const subscribers = this.subscriptions.get(uri);
    subscribers?.delete(session);
    if (subscribers && subscribers.size > 0) {
      return request ? { jsonrpc: '2.0', id: request.id, result: {} } : undefined;
    }
    this.subscriptions.delete(uri);
    if (request && options) return this.request(session, request, options);
    this.write({ jsonrpc: '2.0', id: `unsubscribe-${Date.now()}`, method: 'resources/unsubscribe', params: { uri } });
    return undefined;
  }

  /** @internal A session ends: fail its calls, release its subscriptions and pending server requests. */
  forget(session: VirtualSession): void {
    this.sessions.delete(session);
    this.lastActive = Date.now();
    if (this.rootsSession === session) this.rootsSession = undefined;
    this.correlator.failAll(new UpstreamError('closed', this.config.name, 'Session closed'), session);
    for (const [key, pending] of this.serverRequests) {
      if (pending.session !== session) continue;
      this.serverRequests.delete(key);
      this.write(errorResponse(pending.id, ErrorCode.InternalError, 'The client session ended'));
    }
    for (const [uri, subscribers] of this.subscriptions) {
      if (subscribers.has(session)) void this.unsubscribe(session, null, uri);
    }
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  private setState(state: UpstreamState): void {
    if (this.state === state) return;
    this.state = state;
    this.since = Date.now();
  }

  private unavailable(): UpstreamError {
    const name = this.config.name;
    const last = this.lastError ? `; last error: ${this.lastError}` : '';
    return new UpstreamError('unavailable', name, `Upstream '${name}' is not available: ${this.notAvailableBecause()}${last}`);
  }

  /** Why no request can be written now, in words (a state name such as "ready" would mislead). */
  private notAvailableBecause(): string {
    switch (this.state) {
      case 'idle':
        return 'it has not been started';
      case 'starting':
        return 'it is starting';
      case 'ready':
        // The child has exited and its pipes are not closed yet: the restart follows their close.
        return 'its process has ended';
      case 'backoff':
        return 'it is restarting';
      case 'crash_loop':
        return `it keeps failing soon after it starts (crash loop); it is restarted every ${this.config.restart_backoff_max_ms} ms`;
      case 'stopped':
        return 'the gateway is shutting down';
    }
  }

  /** True when a request can be written to a running, initialized child now. */
  private writable(): boolean {
    const stdin = this.child?.stdin;
    return this.state === 'ready' && stdin !== undefined && stdin !== null && !stdin.destroyed && stdin.writable;
  }

  private whenReady(timeoutMs: number): Promise<void> {
    // 'ready' with no stdin to write to: the child has just exited (its 'close' is still to come,
    // then the restart); wait for that restart like any other.
    if (this.writable()) return Promise.resolve();
    // A crash loop or a stopped server fails fast; a (re)start in progress is worth waiting for.
    if (this.state === 'crash_loop' || this.state === 'stopped') return Promise.reject(this.unavailable());
    if (this.state === 'idle') void this.start();
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e: UpstreamError) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.readyWaiters = this.readyWaiters.filter((w) => w !== waiter);
        reject(
          new UpstreamError('timeout', this.config.name, `Upstream '${this.config.name}' did not become ready within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      this.readyWaiters.push(waiter);
    });
  }

  private rejectWaiters(error: UpstreamError): void {
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w.reject(error);
  }

  /** One attempt: spawn, initialize. On failure, schedules the next attempt and rejects. */
  private async launch(): Promise<void> {
    this.setState('starting');
    this.childStartedAt = Date.now();
    let child: ChildProcess;
    try {
      child = this.spawnChild();
    } catch (err) {
      this.onFailure(`Failed to start '${this.config.name}': ${(err as Error).message}`);
      throw err;
    }
    try {
      child = await this.settleEra(child);
      if (!this.modernChild) await this.initializeOrAdopt(child);
    } catch (err) {
      const message = err instanceof UpstreamError ? err.message : String(err);
      // The child is alive but did not initialize: end it.
      if (this.child === child) this.endChild(child, message);
      throw err;
    }
    this.setState('ready');
    this.lastError = undefined;
    this.log.info({ pid: child.pid, era: this.eraVerdict?.era, protocolVersion: this.modernChild ? this.eraVerdict?.version : this.init?.protocolVersion }, 'upstream ready');
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w.resolve();
    this.resubscribe();
  }

  /**
   * Decides the era of a child that has just started: the configured or fresh remembered
   * verdict, else a probe before anything else is written to it (stdio "Backward Compatibility":
   * a DiscoverResult is modern; an error, another result or silence is legacy). A child that
   * exits on the probe (some SDKs end on any request before initialize) is legacy: it is started
   * again and not probed. Returns the child to go on with.
   */
  private async settleEra(child: ChildProcess): Promise<ChildProcess> {
    this.modernChild = false;
    this.init = undefined;
    const known = this.eraVerdict;
    if (known && (known.source === 'config' || (!this.reprobe && isFresh(known)))) {
      this.modernChild = known.era === 'modern';
      return child;
    }
    this.reprobe = false;
    this.lateProbe = undefined;
    let version = MODERN_PROTOCOL_VERSION;
    let outcome = await this.probeChild(child, version, true);
    let answer = outcome.kind === 'answer' ? readProbeAnswer(outcome.response) : undefined;
    if (answer?.kind === 'retry') {
      version = answer.version;
      outcome = await this.probeChild(child, version, true);
      answer = outcome.kind === 'answer' ? readProbeAnswer(outcome.response) : undefined;
    }
    if (this.state === 'stopped' || outcome.kind === 'gone') throw this.unavailable();
    const timeoutMs = this.probeTimeoutMs();
    const why =
      outcome.kind === 'silent' ? `no answer to server/discover within ${timeoutMs} ms`
      : outcome.kind === 'exited' ? 'the child exited on server/discover'
      : answer?.kind === 'legacy' ? answer.why
      : answer?.kind === 'retry' ? 'server/discover refused every version it named'
      : undefined;
    this.eraVerdict = probedVerdict(answer?.kind === 'modern' ? answer : { kind: 'legacy', why: why ?? '' });
    this.modernChild = answer?.kind === 'modern';
    this.log.info({ era: this.eraVerdict.era, version: this.eraVerdict.version, ...(why ? { why } : {}) }, 'upstream era probed');
    if (outcome.kind === 'exited') {
      this.log.info('starting the upstream child again, without the probe');
      return this.spawnChild();
    }
    return child;
  }

  /**
   * Writes `server/discover` to a child and waits for its answer, its exit, or PROBE_TIMEOUT_MS.
   * The probe has a string id and bypasses the correlator: nothing is sent when it times out
   * (notifications/cancelled before initialize would be one more thing for a legacy server to
   * refuse).
   */
  private probeChild(child: ChildProcess, version: string, atStart: boolean): Promise<ProbeOutcome> {
    return new Promise((resolve) => {
      const id = `mcp-guard-discover-${++this.probeCount}`;
      const probe: PendingProbe = {
        child,
        id,
        atStart,
        settle: (outcome) => {
          if (this.probing !== probe) return;
          this.probing = undefined;
          clearTimeout(timer);
          child.off('exit', exited);
          if (outcome.kind === 'silent' && atStart) this.lateProbe = { child, id };
          resolve(outcome);
        },
      };
      // The process's exit, not the close of its pipes: a descendant may hold those for a while.
      // At start the exit is part of starting (settleEra starts the child again): the child is let
      // go of here, so that its close is not booked as a failure with a restart.
      const exited = (): void => {
        if (atStart && this.probing === probe && this.child === child) this.child = undefined;
        probe.settle({ kind: 'exited' });
      };
      const timer = setTimeout(() => probe.settle({ kind: 'silent' }), this.probeTimeoutMs());
      this.probing = probe;
      child.once('exit', exited);
      // A write that fails (the child is going) is settled by its exit.
      this.write(discoverRequest(id, version));
    });
  }

  private probeTimeoutMs(): number {
    return Math.max(1, Math.min(Math.floor(this.config.startup_timeout_ms / 2), PROBE_TIMEOUT_MS));
  }

  /** An answer to a probe (a string id the correlator does not know). False: not one. */
  private probeAnswered(message: JsonRpcResponse): boolean {
    const probe = this.probing;
    if (probe && message.id === probe.id) {
      probe.settle({ kind: 'answer', response: message });
      return true;
    }
    const late = this.lateProbe;
    if (late && message.id === late.id) {
      const answer = readProbeAnswer(message);
      if (answer.kind === 'modern') late.modern = answer;
      return true;
    }
    return false;
  }

  /**
   * Initializes a child taken for legacy. When it refuses (or never answers) initialize but has
   * answered the probe late with a DiscoverResult, it is a modern server that was slow to start
   * (npx fetching it): it is used as one, not failed and restarted as legacy forever. A child
   * that went silent through the probe and then refuses initialize has started by now, and may
   * answer the late probe after the refusal (the v2 SDK does): it is asked again before the start
   * fails, and if it still is not modern its next start probes again rather than being taken for
   * legacy for as long as the verdict stays fresh.
   */
  private async initializeOrAdopt(child: ChildProcess): Promise<void> {
    try {
      await this.initialize(child);
      if (this.lateProbe?.modern) this.log.info('upstream answered server/discover late but took initialize: kept as legacy');
    } catch (error) {
      const late = this.lateProbe?.child === child ? this.lateProbe : undefined;
      let modern = late?.modern;
      const refused = error instanceof UpstreamError && error.kind === 'protocol';
      if (!modern && late && refused && this.child === child) {
        this.log.info('upstream went silent through server/discover and then refused initialize: asking it again');
        modern = (await this.probeAgain(child)) ?? late.modern;
        if (!modern) this.reprobe = true;
      }
      if (!modern || this.child !== child) throw error;
      this.eraVerdict = probedVerdict(modern);
      this.modernChild = true;
      this.log.info({ era: 'modern', version: modern.version }, 'upstream answered server/discover late and refused initialize: it is modern');
    } finally {
      this.lateProbe = undefined;
    }
  }

  /** server/discover to a started child (one retry on the version it names); its DiscoverResult, if modern. */
  private async probeAgain(child: ChildProcess): Promise<Extract<ProbeAnswer, { kind: 'modern' }> | undefined> {
    let answer: ProbeAnswer | undefined;
    for (let version = MODERN_PROTOCOL_VERSION, attempt = 0; attempt < 2; attempt++) {
      const outcome = await this.probeChild(child, version, false);
      answer = outcome.kind === 'answer' ? readProbeAnswer(outcome.response) : undefined;
      if (answer?.kind !== 'retry') break;
      version = answer.version;
    }
    return answer?.kind === 'modern' ? answer : undefined;
  }

  /** era({ refresh }) on a running modern child: asks it again; a failure keeps the verdict. */
  private async rediscover(): Promise<EraVerdict> {
    const child = this.child;
    const name = this.config.name;
    if (!child) throw this.unavailable();
    const outcome = await this.probeChild(child, this.eraVerdict?.version ?? MODERN_PROTOCOL_VERSION, false);
    if (outcome.kind === 'silent') throw new UpstreamError('timeout', name, `Upstream '${name}' did not answer server/discover within ${this.probeTimeoutMs()} ms`);
    if (outcome.kind !== 'answer') throw this.unavailable();
    const answer = readProbeAnswer(outcome.response);
    if (answer.kind !== 'modern') throw new UpstreamError('protocol', name, `Upstream '${name}' answered server/discover with no usable DiscoverResult`);
    if (this.child === child) this.eraVerdict = probedVerdict(answer);
    return probedVerdict(answer);
  }

  /**
   * Ends a child the gateway gave up on; its exit handler does the bookkeeping (calls in flight
   * fail, a restart is scheduled) and reports this reason rather than the signal we sent.
   */
  private endChild(child: ChildProcess, reason: string): void {
    this.exitReason = reason;
    // Reported at once (status(), check-upstream), not only once the child has gone.
    this.lastError = reason;
    void terminateTree(child);
  }

  private spawnChild(): ChildProcess {
    const { command, args, env, cwd } = this.config;
    if (!command) throw new Error('no command configured');
    const child = spawn(command, args, {
      env: childEnvironment(env),
      cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
      // Its own process group: the whole tree can be signalled at once (kill(-pid)).
      detached: true,
      windowsHide: true,
    });
    this.child = child;
    let spawnError: string | undefined;
    child.once('error', (err) => {
      spawnError = `Failed to start '${this.config.name}': ${err.message}`;
      this.log.error({ err: err.message }, 'child process error');
      // A spawn that failed (ENOENT, EACCES) has no pid and may never emit 'close'.
      if (child.pid === undefined && this.child === child) {
        this.child = undefined;
        this.onExit(spawnError);
        if (this.probing?.child === child) this.probing.settle({ kind: 'gone' });
      }
    });
    child.stdin?.on('error', (err) => this.log.debug({ err: err.message }, 'child stdin error'));
    readLines(child.stdout!, (line) => this.onLine(line), (line) => this.onOversizedLine(line));
    readLines(
      child.stderr!,
      (line) => {
        if (line.length > 0) this.log.info({ stream: 'stderr' }, line.length > MAX_STDERR_LINE ? `${line.slice(0, MAX_STDERR_LINE)}…` : line);
      },
      (line) => this.log.error({ stream: 'stderr', bytes: line.bytes, limitBytes: MAX_LINE_BYTES }, 'upstream wrote a line over the size limit; dropped'),
    );
    child.once('close', (code, signal) => {
      if (this.child !== child) return;
      this.child = undefined;
      // Stragglers of the tree (a grandchild that outlived npx) end with it.
      killGroup(child, 'SIGKILL');
      const probe = this.probing;
      if (probe?.child === child) {
        probe.settle({ kind: 'exited' });
        // Exiting on the start probe is part of starting (settleEra starts it again), not a failure.
        if (probe.atStart) return;
      }
      this.onExit(spawnError ?? `exited (${signal ? `signal ${signal}` : `code ${code}`})`);
    });
    track(child);
    return child;
  }

  private async initialize(child: ChildProcess): Promise<void> {
    const request: JsonRpcRequest = {
      jsonrpc: '2.0',
      id: 0,
      method: 'initialize',
      params: {
        protocolVersion: LATEST_PROTOCOL_VERSION,
        capabilities: relayedCapabilities(this.config),
        clientInfo: { name: GATEWAY_NAME, version: GATEWAY_VERSION },
      },
    };
    // What the start has left of startup_timeout_ms after the era probe.
    const { name, startup_timeout_ms: startupMs } = this.config;
    const remainingMs = Math.max(1, this.childStartedAt + startupMs - Date.now());
    const outgoing = this.correlator.begin(request, { onMessage: () => undefined }, remainingMs, null);
    if (!this.write(outgoing.wire)) this.correlator.fail(outgoing.wire.id as number, this.unavailable());
    const response = await outgoing.response.catch((error: unknown) => {
      if (error instanceof UpstreamError && error.kind === 'timeout') throw new UpstreamError('timeout', name, `Upstream '${name}' did not answer within ${startupMs} ms`);
      throw error;
    });
    if (this.child !== child) throw this.unavailable();
    if ('error' in response) {
      throw new UpstreamError('protocol', this.config.name, `Upstream '${this.config.name}' refused initialize: ${response.error.message}`);
    }
    const version = response.result['protocolVersion'];
    if (typeof version !== 'string' || !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
      throw new UpstreamError('protocol', this.config.name, `Upstream '${this.config.name}' answered unsupported protocol version ${String(version)}`);
    }
    this.init = { protocolVersion: version, result: response.result };
    if (this.eraVerdict?.era === 'legacy' && this.eraVerdict.version !== version) this.eraVerdict = { ...this.eraVerdict, version };
    this.write({ jsonrpc: '2.0', method: 'notifications/initialized' });
  }

  private onExit(how: string): void {
    const reason = this.exitReason;
    this.exitReason = undefined;
    if (this.stdinWatch) clearTimeout(this.stdinWatch);
    this.stdinWatch = undefined;
    const message = reason ?? (how.startsWith('Failed') ? how : `Upstream '${this.config.name}' ${how}`);
    this.correlator.failAll(new UpstreamError('closed', this.config.name, `${message} while the request was in flight`));
    // Requests the dead child made to clients will never be answered: tell those clients.
    for (const { session, id } of this.serverRequests.values()) {
      session.handlers.onMessage({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: id, reason: message } });
    }
    this.serverRequests.clear();
    if (this.state === 'stopped') return;
    this.log.warn({ reason: how }, 'upstream child exited');
    this.onFailure(message);
  }

  /** Books a failed or ended child and schedules the next start. */
  private onFailure(message: string): void {
    this.lastError = message;
    const ranFor = Date.now() - this.childStartedAt;
    this.quickFailures = ranFor >= STABLE_AFTER_MS ? 1 : this.quickFailures + 1;
    const crashLoop = this.quickFailures > this.config.max_restarts;
    const delay = crashLoop
      ? this.config.restart_backoff_max_ms
      : Math.min(this.config.restart_backoff_ms * 2 ** (this.quickFailures - 1), this.config.restart_backoff_max_ms);
    this.setState(crashLoop ? 'crash_loop' : 'backoff');
    if (crashLoop) this.rejectWaiters(this.unavailable());
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.state === 'stopped') return;
      this.restarts++;
      this.log.info({ attempt: this.quickFailures, restarts: this.restarts }, 'restarting upstream child');
      this.onRestart?.(this.config.name);
      this.launch().catch(() => undefined);
    }, delay);
    this.restartTimer.unref();
    this.log.warn({ delayMs: delay, quickFailures: this.quickFailures, state: this.state }, 'upstream will be restarted');
  }

  /** Subscriptions held by clients survive a restart of the child. */
  private resubscribe(): void {
    for (const uri of this.subscriptions.keys()) {
      this.write({ jsonrpc: '2.0', id: `resubscribe-${idKey(uri)}`, method: 'resources/subscribe', params: { uri } });
    }
  }

  // ---- reading the child ----------------------------------------------------------------------

  /**
   * A stdout line over the limit is lost, but when it is recognisably the response to a request in
   * flight (its id at either end, as JSON-RPC libraries write it), that request fails now with a
   * reason instead of waiting for its deadline.
   */
  private onOversizedLine(line: OversizedLine): void {
    this.log.error({ bytes: line.bytes, limitBytes: MAX_LINE_BYTES }, 'upstream wrote a line over the size limit; dropped');
    const wireId = responseIdOf(line.head, line.tail);
    if (wireId === undefined || !this.correlator.get(wireId)) return;
    const name = this.config.name;
    this.correlator.fail(
      wireId,
      new UpstreamError('protocol', name, `Upstream '${name}' answered with a message of ${line.bytes} bytes, over the limit of ${MAX_LINE_BYTES} bytes`),
    );
  }

  /**
   * One line of the child's stdout. A line nested deeper than MAX_UPSTREAM_DEPTH is not parsed
   * (inbound.ts): the request it answers fails, anything else is dropped. Nothing a handler throws
   * on the child's message may escape: it would end the gateway from the stdout reader.
   */
  private onLine(line: string): void {
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
        if (!this.correlator.resolve(message) && !this.probeAnswered(message)) this.log.debug({ id: message.id }, 'reply to no request in flight; ignored');
      } else if (isRequest(message)) {
        this.onServerRequest(message);
      } else {
        this.onServerNotification(message);
      }
    } catch (error) {
      this.log.error({ err: error, method: 'method' in message ? message.method.slice(0, 100) : undefined }, 'message handler threw');
    }
  }

  private onServerNotification(message: JsonRpcNotification): void {
    if (this.correlator.routeNotification(message)) return;
    if (this.modernChild && this.routeSubscription(message)) return;
    switch (message.method) {
      case 'notifications/resources/updated': {
        const uri = message.params?.['uri'];
        const subscribers = typeof uri === 'string' ? this.subscriptions.get(uri) : undefined;
        for (const session of subscribers ?? []) session.handlers.onMessage(message);
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
        if (SERVER_WIDE.has(message.method)) this.broadcast(message);
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
    const owners = this.sessionOwners();
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
      this.broadcast(message);
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

  /** The identities with a session on this child. */
  private sessionOwners(): Set<string> {
    const owners = new Set<string>();
    for (const session of this.sessions) owners.add(session.owner);
    return owners;
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

  private broadcast(message: ServerMessage): void {
    for (const session of this.sessions) session.handlers.onMessage(message);
  }

  /**
   * A request from the child to a client. Over stdio nothing says which client's call caused it,
   * so: the newest call in flight from a client that declared the needed capability; for
   * roots/list outside any call, the client that last announced its roots. With no candidate the
   * gateway answers itself (empty roots, or an error).
   */
  private onServerRequest(message: JsonRpcRequest): void {
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
    const owners = this.sessionOwners();
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
    if (!target && capability === 'roots' && this.rootsSession) {
      const session = this.rootsSession;
      target = { session, deliver: (m) => session.handlers.onMessage(m) };
    }
    if (!target) {
      if (message.method === 'roots/list') this.write({ jsonrpc: '2.0', id: message.id, result: { roots: [] } });
      else this.write(errorResponse(message.id, ErrorCode.MethodNotFound, `No connected client can handle ${message.method}`));
      return;
    }
    if (this.serverRequests.size >= MAX_PENDING_SERVER_REQUESTS) {
      this.log.warn({ method: message.method, pending: this.serverRequests.size }, 'too many server requests waiting on clients; refused');
      this.write(errorResponse(message.id, ErrorCode.InternalError, `Too many requests waiting on clients (${MAX_PENDING_SERVER_REQUESTS}); ${message.method} refused`));
      return;
    }
    this.serverRequests.set(idKey(message.id), { session: target.session, id: message.id });
    target.deliver(message);
  }
}

/** One client's view of the shared child. */
class VirtualSession implements UpstreamSession {
  readonly initializeResult: JsonRpcResponse;
  private readonly capabilities: Record<string, unknown>;
  private closed = false;

  constructor(
    private readonly upstream: StdioUpstream,
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
    if (this.closed) throw new UpstreamError('closed', this.upstream.config.name, 'Session closed');
    switch (request.method) {
      case 'resources/subscribe':
        return this.upstream.subscribe(this, request, options);
      case 'resources/unsubscribe': {
        const uri = request.params?.['uri'];
        if (typeof uri !== 'string') return this.upstream.request(this, request, options);
        return (await this.upstream.unsubscribe(this, request, uri, options))!;
      }
      default:
        return this.upstream.request(this, request, options);
    }
  }

  async send(message: JsonRpcNotification | JsonRpcResponse): Promise<void> {
    if (this.closed) return;
    if ('method' in message) {
      // The gateway did the child's handshake itself; a client's own initialized is not news to it.
      if (message.method === 'notifications/initialized') return;
      if (message.method === 'notifications/roots/list_changed') {
        // Without relay_roots the child never asked for roots: a client's roots stay with it.
        if (!this.upstream.config.relay_roots) return;
        this.upstream.setRootsSession(this);
      }
      this.upstream.write(message);
      return;
    }
    this.upstream.answerServerRequest(this, message);
  }

  async openEventStream(): Promise<void> {
    // Every message of the child already reaches the session's handlers.
  }

  closeEventStream(): void {}

  async close(): Promise<void> {
    this.detach();
  }

  /** Ends the session without touching the child. */
  detach(): void {
    if (this.closed) return;
    this.closed = true;
    this.upstream.forget(this);
  }
}
