/**
 * A circuit breaker around one Upstream, as API gateways guard a server that keeps failing
 * (Envoy's outlier detection, resilience4j): after `circuit_failure_threshold` consecutive
 * failures the circuit opens, and for `circuit_open_ms` every request fails at once with a 503
 * that says why, without touching the server. Then it is half-open: one trial request (one per
 * owner, below) goes through. Its success closes the circuit; its failure opens it again for twice
 * as long, up to `circuit_open_max_ms`. No timer runs: the state moves on when a request arrives.
 *
 * A decorator (factory.ts applies it): the gateway core and the transports do not know it exists.
 *
 * What a settled request tells the circuit (classify()):
 *   - failure: the transport got no answer: kinds connect, timeout, closed, protocol (HTTP 5xx, an
 *     answer that is not MCP). For stdio, timeouts only: a child that exits or is restarting is
 *     the supervisor's (restart backoff, crash_loop, and 'unavailable' already fails at once),
 *     but a child that hangs and lets every request time out is seen by nothing else.
 *   - success: any answer: a JSON-RPC result or error (an application-level answer), a session the
 *     server no longer knows (it answered), an HTTP status below 500 (it answered; and a client
 *     must not be able to open the circuit for everyone by asking for a path the server refuses).
 *   - neither: the client cancelled, or ended its session while requests were in flight; the
 *     server is shutting down or restarting (unavailable).
 *
 * Whose failure (issue 16, finding 5: one identity's requests opened the circuit for everyone).
 * Every request has an owner, the owner key of its caller's identity (OpenSessionOptions.owner,
 * CallOptions.owner). A failure a request can cause (a timeout, a 5xx or a connection closed in
 * answer to it: a long-running tool, a request the server chokes on) counts first against its
 * owner's own circuit, with the same threshold and periods: that owner alone then gets the fast
 * 503s. The server's circuit, which refuses everyone, opens only on consecutive failures that
 * no single owner explains:
 *   - a failure no request can cause: the server cannot be reached (kind connect), or the
 *     gateway's own era probe failed;
 *   - or failures from at least two distinct owners among the consecutive ones: the server fails
 *     for more than the one caller who might be steering it.
 * Without [auth] every caller is the one anonymous owner: everyone's failures are then the
 * server's, as before owners were told apart. Half-open, each owner has its own trial slot, and
 * the server's circuit opens again on a trial's failure only when it is server-wide or a second
 * owner's trial failed too: an owner cannot hold it open for others by always being the trial.
 * Per-owner state exists only from an owner's failure to its next success, at most
 * MAX_OWNER_CIRCUITS of them (the oldest forgotten first).
 *
 * Guarded: openSession (http and sse: it is the upstream's initialize; stdio sessions are answered
 * from the gateway's own handshake with the child and never reach it, so they pass), each
 * session's request, and its notifications while the circuit refuses (never counted: a write to a
 * hung child succeeds); a 2026-07-28 call() like a request, and an http server's era probe like
 * its openSession. Event streams, answers to the server's own requests and close pass through.
 *
 * Hot path: while closed, a session's request costs two checks (the server's state, whether any
 * owner has a circuit of its own) and one `.then` on the transport's own promise, with handlers
 * bound once per session (its owner with them): no closure, timer or async wrapper per request.
 * openSession and a 2026-07-28 call() allocate their settle handlers (they carry the owner).
 * The clock is read only when a circuit is not closed.
 */
import { ANONYMOUS, ownerKey } from '../auth/identity.js';
import type { ServerConfig, Transport } from '../config/schema.js';
import type { JsonRpcNotification, JsonRpcRequest, JsonRpcResponse } from '../jsonrpc/messages.js';
import type { Logger } from '../observability/logger.js';
import { isFresh } from './era.js';
import { UpstreamError } from './errors.js';
import type {
  CallOptions,
  CloseOptions,
  CircuitState,
  ResumeState,
  EraVerdict,
  OpenSessionOptions,
  RequestOptions,
  Upstream,
  UpstreamDeps,
  UpstreamSession,
  UpstreamStatus,
} from './upstream.js';
import { errorMessage } from '../error-message.js';

/** What one settled request says about the server. */
export type Verdict = 'failure' | 'success' | 'neither';

/**
 * The message of the one failure that carries an HTTP status (statusError() in http/body.ts).
 * Only 5xx count: below that the server answered.
 */
const ANSWERED_HTTP = /answered HTTP (\d{3})$/;

/** Retry-After while the trial request is in flight: its outcome is due any moment. */
const TRIAL_RETRY_AFTER_MS = 1_000;

/** What a request that failed with `error` says about a server of this transport. */
export function classify(error: unknown, transport: Transport): Verdict {
  if (!(error instanceof UpstreamError)) return 'neither';
  switch (error.kind) {
    case 'timeout':
      return 'failure';
    case 'connect':
    case 'closed':
    case 'protocol': {
      if (transport === 'stdio') return 'neither';
      const status = error.kind === 'protocol' ? ANSWERED_HTTP.exec(error.message)?.[1] : undefined;
      return status !== undefined && Number(status) < 500 ? 'success' : 'failure';
    }
    case 'session_expired':
      return 'success';
    case 'unavailable':
    case 'cancelled':
    case 'circuit_open':
      return 'neither';
  }
}

/** Who settles a request: its owner key, or undefined for the gateway's own probe. */
type Owner = string | undefined;

/** Which of the circuits a request admitted while one was not closed goes through as the trial. */
interface Admission {
  serverTrial: boolean;
  ownerTrial: boolean;
}

/** One circuit's state machine: closed; open for a while after consecutive failures; half-open with a trial. */
class Breaker {
  state: CircuitState = 'closed';
  failures = 0;
  lastFailure = '';
  /** When the circuit last opened (performance.now()). */
  private openedAt = 0;
  /** The current open period: circuit_open_ms, doubled per failed trial up to circuit_open_max_ms. */
  openMs: number;
  /** The owner breaker's one trial in flight (the server's are per owner: Circuit.trials). */
  trialInFlight = false;

  constructor(private readonly config: ServerConfig) {
    this.openMs = config.circuit_open_ms;
  }

  /** True when the open period is over (the state is then half-open). */
  expired(): boolean {
    if (this.state === 'open' && this.remainingMs() > 0) return false;
    this.state = 'half_open';
    return true;
  }

  remember(error: unknown): void {
    this.failures++;
    this.lastFailure = errorMessage(error);
  }

  open(ms: number): boolean {
    const reopened = this.state === 'half_open';
    this.state = 'open';
    this.openMs = ms;
    this.openedAt = performance.now();
    this.trialInFlight = false;
    return reopened;
  }

  doubled(): number {
    return Math.min(this.openMs * 2, this.config.circuit_open_max_ms);
  }

  reset(): void {
    this.state = 'closed';
    this.failures = 0;
    this.lastFailure = '';
    this.openMs = this.config.circuit_open_ms;
    this.trialInFlight = false;
  }

  remainingMs(): number {
    return this.openedAt + this.openMs - performance.now();
  }

  /** The 503 a refused request gets; `whose` words the circuit ("" or " to this identity"). */
  refusal(name: string, whose: string, trialInFlight: boolean): UpstreamError {
    const remaining = this.remainingMs();
    const waiting = this.state === 'open' && remaining > 0;
    const count = `${this.failures} consecutive failure${this.failures === 1 ? '' : 's'}`;
    const next = waiting ? `retrying in ${Math.ceil(remaining / 1000)} s` : trialInFlight ? 'a trial request is in flight' : 'retrying now';
    return new UpstreamError(
      'circuit_open',
      name,
      `Upstream '${name}' is unavailable${whose}: circuit ${waiting ? 'open' : 'half-open'} after ${count} (last: ${this.lastFailure}); ${next}`,
      { retryAfterMs: waiting ? remaining : TRIAL_RETRY_AFTER_MS },
    );
  }
}

/** The owner key of every caller of a gateway without [auth]: one owner that is everyone. */
const EVERYONE = ownerKey(ANONYMOUS);

/**
 * Owners whose own circuit the breaker remembers at once (an owner is remembered only from its
 * first failure until its next success): bounded, the oldest forgotten first.
 */
export const MAX_OWNER_CIRCUITS = 1_000;

/**
 * The circuits of one upstream, shared by its sessions: the server's, and one per owner with
 * failures (see "Whose failure" above).
 */
class Circuit {
  private readonly server: Breaker;
  /** The owners of the consecutive failures the server's count holds: the first one, and whether another (or a server-wide failure) joined it. */
  private streakOwner: string | undefined;
  private streakShared = false;
  /** Half-open: the owners whose trial is in flight (one each), and the owner of a failed trial. */
  private readonly trials = new Set<Owner>();
  private trialFailedBy: string | undefined;
  /** Per-owner circuits, of owners whose last request failed or whose circuit is not closed. */
  private readonly owners = new Map<string, Breaker>();

  constructor(
    private readonly config: ServerConfig,
    private readonly log: Logger,
  ) {
    this.server = new Breaker(config);
  }

  get state(): CircuitState {
    return this.server.state;
  }

  /** True when a request of `owner` goes through without any trial: the hot path. */
  quiet(owner: Owner): boolean {
    if (this.server.state !== 'closed') return false;
    if (this.owners.size === 0 || owner === undefined) return true;
    const own = this.owners.get(owner);
    return own === undefined || own.state === 'closed';
  }

  classify(error: unknown): Verdict {
    return classify(error, this.config.transport);
  }

  /** A request admitted while quiet settled with an answer. */
  succeeded(owner: Owner): void {
    if (this.server.state === 'closed' && this.server.failures !== 0) this.resetStreak();
    if (this.owners.size !== 0 && owner !== undefined && this.owners.get(owner)?.state === 'closed') this.owners.delete(owner);
  }

  /** A request settled; `admission` when it was admitted while something was not closed. */
  record(owner: Owner, verdict: Verdict, error: unknown, admission?: Admission): void {
    if (verdict === 'success') {
      if (admission?.serverTrial) this.closeServer();
      this.succeeded(owner);
      if (admission?.ownerTrial && owner !== undefined) this.closeOwner(owner);
    } else if (verdict === 'failure') {
      // A failure no request can cause (the server cannot be reached, the gateway's own probe),
      // and one of the caller everyone is without [auth], is the server's; any other is its owner's.
      const serverWide = owner === undefined || owner === EVERYONE || (error instanceof UpstreamError && error.kind === 'connect');
      if (admission?.serverTrial) this.serverTrialFailed(owner, serverWide, error);
      else if (this.server.state === 'closed') this.serverFailed(owner, serverWide, error);
      if (!serverWide) {
        if (admission?.ownerTrial) this.ownerTrialFailed(owner!, error);
        else this.ownerFailed(owner!, error);
      }
    }
    // 'neither' (the client cancelled it, ...): nothing changes, and a trial's slot is free again.
    this.release(owner, admission);
  }

  /**
   * For a request while not quiet: the error to refuse it with, or which circuits it is the
   * trial of (the caller settles it with record(..., admission)).
   */
  admit(owner: Owner): Admission | UpstreamError {
    const own = owner === undefined || this.owners.size === 0 ? undefined : this.owners.get(owner);
    const ownerTrial = own !== undefined && own.state !== 'closed';
    if (ownerTrial && (!own.expired() || own.trialInFlight)) return own.refusal(this.config.name, ' to this identity', own.trialInFlight);
    const serverTrial = this.server.state !== 'closed';
    if (serverTrial) {
      if (!this.server.expired()) return this.refusal();
      if (this.server.state === 'half_open' && this.trials.has(owner)) return this.server.refusal(this.config.name, '', true);
      if (this.trials.size === 0) this.log.debug({ failures: this.server.failures }, 'upstream circuit half-open: a trial request goes through');
      this.trials.add(owner);
    }
    if (ownerTrial) own.trialInFlight = true;
    return { serverTrial, ownerTrial };
  }

  /** True while the server's circuit refuses everyone: open, or half-open with a trial in flight for `owner`. */
  refusing(owner?: Owner): boolean {
    if (this.server.state === 'closed') return false;
    if (this.server.state === 'open' && this.server.remainingMs() > 0) return true;
    return owner !== undefined && this.trials.has(owner);
  }

  /** The server's refusal. */
  refusal(): UpstreamError {
    return this.server.refusal(this.config.name, '', this.trials.size > 0);
  }

  /** The transport's status with the server's circuit; not healthy while it refuses everyone. */
  status(inner: UpstreamStatus): UpstreamStatus {
    const server = this.server;
    if (server.state === 'closed') return { ...inner, circuit: 'closed' };
    if (!(server.state === 'open' && server.remainingMs() > 0)) {
      // The open period is over: a request sent now reaches the server (as a trial), so the
      // transport's own health stands. Readiness does not stay down for want of the request that
      // would bring it back.
      return { ...inner, circuit: 'half_open' };
    }
    return { ...inner, circuit: 'open', healthy: false, lastError: this.refusal().message };
  }

  private release(owner: Owner, admission: Admission | undefined): void {
    if (admission === undefined) return;
    if (admission.serverTrial) this.trials.delete(owner);
    if (admission.ownerTrial && owner !== undefined) {
      const own = this.owners.get(owner);
      if (own) own.trialInFlight = false;
    }
  }

  private resetStreak(): void {
    this.server.failures = 0;
    this.server.lastFailure = '';
    this.streakOwner = undefined;
    this.streakShared = false;
  }

  private serverFailed(owner: Owner, serverWide: boolean, error: unknown): void {
    this.server.remember(error);
    if (serverWide) this.streakShared = true;
    else if (this.streakOwner === undefined) this.streakOwner = owner;
    else if (this.streakOwner !== owner) this.streakShared = true;
    if (this.server.failures >= this.config.circuit_failure_threshold && this.streakShared) this.openServer(this.config.circuit_open_ms);
  }

  /**
   * The server's trial failed. A server-wide failure opens it again; an owner's failure only when
   * another owner's trial failed too since it became half-open: one owner cannot keep the server's
   * circuit open for others by being its trial.
   */
  private serverTrialFailed(owner: Owner, serverWide: boolean, error: unknown): void {
    // Another owner's trial settled first (trials run one per owner): this one counts as any request.
    if (this.server.state !== 'half_open') {
      if (this.server.state === 'closed') this.serverFailed(owner, serverWide, error);
      return;
    }
    this.server.remember(error);
    if (serverWide || (this.trialFailedBy !== undefined && this.trialFailedBy !== owner)) this.openServer(this.server.doubled());
    else this.trialFailedBy = owner;
  }

  private openServer(ms: number): void {
    const reopened = this.server.open(ms);
    this.trials.clear();
    this.trialFailedBy = undefined;
    this.log.warn(
      { failures: this.server.failures, lastError: this.server.lastFailure, openMs: ms },
      reopened ? 'upstream circuit opened again: the trial request failed' : 'upstream circuit opened: requests fail fast',
    );
  }

  private closeServer(): void {
    if (this.server.state === 'closed') return;
    this.log.info({ failures: this.server.failures }, 'upstream circuit closed: the trial request succeeded');
    this.server.reset();
    this.resetStreak();
    this.trials.clear();
    this.trialFailedBy = undefined;
  }

  private ownerFailed(owner: string, error: unknown): void {
    let own = this.owners.get(owner);
    if (own === undefined) {
      if (this.owners.size >= MAX_OWNER_CIRCUITS) this.owners.delete(this.owners.keys().next().value!);
      own = new Breaker(this.config);
      this.owners.set(owner, own);
    }
    if (own.state !== 'closed') return;
    own.remember(error);
    if (own.failures >= this.config.circuit_failure_threshold) this.openOwner(owner, own, this.config.circuit_open_ms);
  }

  private ownerTrialFailed(owner: string, error: unknown): void {
    const own = this.owners.get(owner);
    if (own === undefined) return;
    own.remember(error);
    this.openOwner(owner, own, own.doubled());
  }

  private openOwner(owner: string, own: Breaker, ms: number): void {
    const reopened = own.open(ms);
    this.log.warn(
      { owner, failures: own.failures, lastError: own.lastFailure, openMs: ms },
      reopened
        ? 'upstream circuit opened again for one identity: its trial request failed'
        : 'upstream circuit opened for one identity: its requests fail fast',
    );
  }

  private closeOwner(owner: string): void {
    const own = this.owners.get(owner);
    if (own === undefined || own.state === 'closed') return;
    this.log.info({ owner, failures: own.failures }, 'upstream circuit closed for one identity: its trial request succeeded');
    this.owners.delete(owner);
  }
}

/** An Upstream whose requests go through a circuit breaker. */
export class CircuitBreakerUpstream implements Upstream {
  readonly config: ServerConfig;
  private readonly circuit: Circuit;
  /** The http era probe in flight through the circuit, per forward path (as the transport's). */
  private readonly probing = new Map<string, Promise<EraVerdict>>();

  constructor(
    private readonly inner: Upstream,
    deps: UpstreamDeps,
  ) {
    this.config = inner.config;
    this.circuit = new Circuit(inner.config, deps.logger.child({ server: inner.config.name }));
  }

  start(): Promise<void> {
    return this.inner.start();
  }

  status(): UpstreamStatus {
    return this.circuit.status(this.inner.status());
  }

  resumeSession(state: Extract<ResumeState, { kind: 'http' }>, options: OpenSessionOptions): Promise<UpstreamSession> {
    const inner = this.inner;
    if (!inner.resumeSession) return Promise.reject(new UpstreamError('protocol', this.config.name, 'This session cannot be taken up here'));
    return inner.resumeSession(state, options).then((session) => new GuardedSession(session, this.circuit, options.owner));
  }

  openSession(options: OpenSessionOptions): Promise<UpstreamSession> {
    const circuit = this.circuit;
    const owner: Owner = options.owner;
    const guard = (session: UpstreamSession): UpstreamSession => new GuardedSession(session, circuit, owner);
    if (this.config.transport === 'stdio') return this.inner.openSession(options).then(guard);
    return guarded(circuit, owner, () => this.inner.openSession(options)).then(guard);
  }

  get verdict(): EraVerdict | undefined {
    return this.inner.verdict;
  }

  verdictFor(forwardPath: string): EraVerdict | undefined {
    return this.inner.verdictFor ? this.inner.verdictFor(forwardPath) : this.inner.verdict;
  }

  /**
   * An http server's era probe is its first contact, like openSession there: guarded, and its
   * failure counts, against the server (the gateway sends it, whoever's request waits for it). A
   * verdict the transport already holds is passed through without touching the circuit (it says
   * nothing about the server now); stdio probes as part of starting the child, which supervision
   * looks after.
   */
  era(options?: { forwardPath?: string; refresh?: boolean }): Promise<EraVerdict> {
    if (this.config.transport === 'stdio') return this.inner.era(options);
    const path = options?.forwardPath ?? '';
    const known = this.verdictFor(path);
    if (known?.source === 'config' || (!options?.refresh && isFresh(known))) return Promise.resolve(known!);
    // One probe per path, counted once, however many callers wait for it; a caller of another
    // path never waits for it nor shares its failure.
    const running = this.probing.get(path);
    if (running) return running;
    // A probe of a path the client chose (prefix routing: url + its path and query) fails as that
    // path does: a 5xx, timeout or non-MCP answer there says nothing of the server, and counting
    // it as the server's let one identity open the circuit for all. Only an unreachable server is.
    const chosen = path !== '';
    const verdict = chosen ? (error: unknown): Verdict => (error instanceof UpstreamError && error.kind === 'connect' ? 'failure' : 'neither') : undefined;
    const probe = guarded(this.circuit, undefined, () => this.inner.era(options), verdict);
    const shared = probe.finally(() => {
      if (this.probing.get(path) === shared) this.probing.delete(path);
    });
    this.probing.set(path, shared);
    return shared;
  }

  /**
   * Guarded like a session's request: a JSON-RPC error is an answer, so a success. A server
   * known to be legacy refuses the call itself, without reaching the server: not counted.
   */
  call(request: JsonRpcRequest, options: CallOptions): Promise<JsonRpcResponse> {
    if (this.verdictFor(options.forwardPath)?.era === 'legacy') return this.inner.call(request, options);
    return guarded(this.circuit, options.owner, () => this.inner.call(request, options));
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/**
 * `work` through the circuit for `owner`, without the per-session handlers: openSession and a
 * 2026-07-28 call (one closure each; a session's requests take the bound path of GuardedSession).
 */
function guarded<T>(circuit: Circuit, owner: Owner, work: () => Promise<T>, verdict = (error: unknown) => circuit.classify(error)): Promise<T> {
  if (circuit.quiet(owner)) {
    return settled(work).then(
      (value) => {
        circuit.succeeded(owner);
        return value;
      },
      (error: unknown) => {
        circuit.record(owner, verdict(error), error);
        throw error;
      },
    );
  }
  const admission = circuit.admit(owner);
  if (admission instanceof UpstreamError) return Promise.reject(admission);
  return settled(work).then(
    (value) => {
      circuit.record(owner, 'success', undefined, admission);
      return value;
    },
    (error: unknown) => {
      circuit.record(owner, verdict(error), error, admission);
      throw error;
    },
  );
}

/** A session whose requests go through its upstream's circuits: the server's and its owner's. */
class GuardedSession implements UpstreamSession {
  readonly initializeResult: JsonRpcResponse;
  /** Set by close(): a 'closed' failure after it is the gateway's doing, not the server's. */
  private closed = false;

  constructor(
    private readonly inner: UpstreamSession,
    private readonly circuit: Circuit,
    private readonly owner: Owner,
  ) {
    this.initializeResult = inner.initializeResult;
  }

  // Bound once per session, not per request: the hot path allocates nothing of its own.
  private readonly passed = (response: JsonRpcResponse): JsonRpcResponse => {
    this.circuit.succeeded(this.owner);
    return response;
  };

  private readonly failed = (error: unknown): never => {
    this.circuit.record(this.owner, this.verdict(error), error);
    throw error;
  };

  private readonly classifyOwn = (error: unknown): Verdict => this.verdict(error);

  /**
   * A client ending its session with requests in flight fails them as 'closed': that is not the
   * server's failure (and must not let a client open the circuit for everyone). Anything else,
   * even after close() (the server expiring the session ends it too), says what it says.
   */
  private verdict(error: unknown): Verdict {
    return this.closed && error instanceof UpstreamError && error.kind === 'closed' ? 'neither' : this.circuit.classify(error);
  }

  request(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    if (this.circuit.quiet(this.owner)) return this.inner.request(request, options).then(this.passed, this.failed);
    return guarded(this.circuit, this.owner, () => this.inner.request(request, options), this.classifyOwn);
  }

  send(message: JsonRpcNotification | JsonRpcResponse): Promise<void> {
    // An answer to the server's own request goes through: the server asked, so it waits for it.
    // Notifications are refused while the server's circuit refuses this owner, and never counted.
    if ('method' in message && this.circuit.state !== 'closed' && this.circuit.refusing(this.owner)) return Promise.reject(this.circuit.refusal());
    return this.inner.send(message);
  }

  openEventStream(): Promise<void> {
    return this.inner.openEventStream();
  }

  closeEventStream(): void {
    this.inner.closeEventStream();
  }

  close(options?: CloseOptions): Promise<void> {
    this.closed = true;
    return this.inner.close(options);
  }

  resumeState(): ResumeState | undefined {
    return this.inner.resumeState?.();
  }
}

/** A call's promise, also when it throws instead of rejecting: a trial must settle, or the circuit would wait for it forever. */
function settled<T>(call: () => Promise<T>): Promise<T> {
  try {
    return call();
  } catch (error) {
    return Promise.reject(error);
  }
}
