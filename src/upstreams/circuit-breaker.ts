/**
 * A circuit breaker around one Upstream, as API gateways guard a server that keeps failing
 * (Envoy's outlier detection, resilience4j): after `circuit_failure_threshold` consecutive
 * failures the circuit opens, and for `circuit_open_ms` every request fails at once with a 503
 * that says why, without touching the server. Then it is half-open: exactly one trial request
 * goes through. Its success closes the circuit; its failure opens it again for twice as long, up
 * to `circuit_open_max_ms`. No timer runs: the state moves on when a request arrives.
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
 * Guarded: openSession (http and sse: it is the upstream's initialize; stdio sessions are answered
 * from the gateway's own handshake with the child and never reach it, so they pass), each
 * session's request, and its notifications while the circuit refuses (never counted: a write to a
 * hung child succeeds); a 2026-07-28 call() like a request, and an http server's era probe like
 * its openSession. Event streams, answers to the server's own requests and close pass through.
 *
 * Hot path: while closed, a request costs one state check and one `.then` on the transport's own
 * promise, with handlers bound once per upstream and session: no closure, timer or async wrapper
 * per request.
 * The clock is read only when the circuit is not closed.
 */
import type { ServerConfig, Transport } from '../config/schema.js';
import type { JsonRpcNotification, JsonRpcRequest, JsonRpcResponse } from '../jsonrpc/messages.js';
import type { Logger } from '../observability/logger.js';
import { isFresh } from './era.js';
import { UpstreamError } from './errors.js';
import type {
  CallOptions,
  CircuitState,
  EraVerdict,
  OpenSessionOptions,
  RequestOptions,
  Upstream,
  UpstreamDeps,
  UpstreamSession,
  UpstreamStatus,
} from './upstream.js';

/** What one settled request says about the server. */
export type Verdict = 'failure' | 'success' | 'neither';

/**
 * The message of the one failure that carries an HTTP status (statusError() in http-common.ts).
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

/** The state machine, one per upstream, shared by its sessions. */
class Circuit {
  state: CircuitState = 'closed';
  private failures = 0;
  private lastFailure = '';
  /** When the circuit last opened (performance.now()). */
  private openedAt = 0;
  /** The current open period: circuit_open_ms, doubled per failed trial up to circuit_open_max_ms. */
  private openMs: number;
  private trialInFlight = false;

  constructor(
    private readonly config: ServerConfig,
    private readonly log: Logger,
  ) {
    this.openMs = config.circuit_open_ms;
  }

  // Settle handlers, bound once: `.then(circuit.passed, circuit.failed)` allocates no closure.

  readonly passed = <T>(value: T): T => {
    this.record(false, 'success');
    return value;
  };

  readonly failed = (error: unknown): never => {
    this.record(false, this.classify(error), error);
    throw error;
  };

  readonly trialPassed = <T>(value: T): T => {
    this.record(true, 'success');
    return value;
  };

  readonly trialFailed = (error: unknown): never => {
    this.record(true, this.classify(error), error);
    throw error;
  };

  classify(error: unknown): Verdict {
    return classify(error, this.config.transport);
  }

  /** What a settled request said; `trial` for the one request let through while half-open. */
  record(trial: boolean, verdict: Verdict, error?: unknown): void {
    if (trial) {
      this.trialInFlight = false;
      if (verdict === 'success') this.close();
      else if (verdict === 'failure') {
        this.remember(error);
        this.open(Math.min(this.openMs * 2, this.config.circuit_open_max_ms));
      }
      // 'neither' (the client cancelled it, ...): still half-open, and the next request is the trial.
      return;
    }
    // Requests admitted while closed count only while it still is: a late failure must not extend
    // an open period, and only the trial decides a half-open circuit.
    if (this.state !== 'closed') return;
    if (verdict === 'success') this.failures = 0;
    else if (verdict === 'failure') {
      this.remember(error);
      if (this.failures >= this.config.circuit_failure_threshold) this.open(this.config.circuit_open_ms);
    }
  }

  /**
   * For a request while not closed: the error to refuse it with, or undefined when it goes
   * through as the one trial (the caller then settles it with trialPassed / trialFailed).
   */
  admit(): UpstreamError | undefined {
    if (this.state === 'open') {
      if (this.remainingMs() > 0) return this.refusal();
      this.state = 'half_open';
      this.log.debug({ failures: this.failures }, 'upstream circuit half-open: one trial request goes through');
    }
    if (this.trialInFlight) return this.refusal();
    this.trialInFlight = true;
    return undefined;
  }

  /** True while requests are refused: open, or half-open with the trial in flight. */
  refusing(): boolean {
    return this.state !== 'closed' && (this.trialInFlight || (this.state === 'open' && this.remainingMs() > 0));
  }

  refusal(): UpstreamError {
    const name = this.config.name;
    const remaining = this.remainingMs();
    const waiting = this.state === 'open' && remaining > 0;
    const count = `${this.failures} consecutive failure${this.failures === 1 ? '' : 's'}`;
    const next = waiting ? `retrying in ${Math.ceil(remaining / 1000)} s` : 'a trial request is in flight';
    return new UpstreamError(
      'circuit_open',
      name,
      `Upstream '${name}' is unavailable: circuit ${waiting ? 'open' : 'half-open'} after ${count} (last: ${this.lastFailure}); ${next}`,
      { retryAfterMs: waiting ? remaining : TRIAL_RETRY_AFTER_MS },
    );
  }

  /** The transport's status with the circuit's state; not healthy while requests are refused. */
  status(inner: UpstreamStatus): UpstreamStatus {
    if (this.state === 'closed') return { ...inner, circuit: 'closed' };
    if (!this.refusing()) {
      // The open period is over and no trial is in flight: a request sent now reaches the server
      // (as the trial), so the transport's own health stands. Readiness does not stay down for
      // want of the request that would bring it back.
      return { ...inner, circuit: 'half_open' };
    }
    return { ...inner, circuit: this.state === 'open' && this.remainingMs() > 0 ? 'open' : 'half_open', healthy: false, lastError: this.refusal().message };
  }

  private remember(error: unknown): void {
    this.failures++;
    this.lastFailure = error instanceof Error ? error.message : String(error);
  }

  private open(ms: number): void {
    const reopened = this.state === 'half_open';
    this.state = 'open';
    this.openMs = ms;
    this.openedAt = performance.now();
    this.log.warn(
      { failures: this.failures, lastError: this.lastFailure, openMs: ms },
      reopened ? 'upstream circuit opened again: the trial request failed' : 'upstream circuit opened: requests fail fast',
    );
  }

  private close(): void {
    if (this.state === 'closed') return;
    this.log.info({ failures: this.failures }, 'upstream circuit closed: the trial request succeeded');
    this.state = 'closed';
    this.failures = 0;
    this.lastFailure = '';
    this.openMs = this.config.circuit_open_ms;
  }

  private remainingMs(): number {
    return this.openedAt + this.openMs - performance.now();
  }
}

/** An Upstream whose requests go through a circuit breaker. */
export class CircuitBreakerUpstream implements Upstream {
  readonly config: ServerConfig;
  private readonly circuit: Circuit;
  /** The http era probe in flight through the circuit. */
  private probing: Promise<EraVerdict> | undefined;

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

  openSession(options: OpenSessionOptions): Promise<UpstreamSession> {
    const circuit = this.circuit;
    if (this.config.transport === 'stdio') return this.inner.openSession(options).then(this.guard);
    if (circuit.state === 'closed') return this.inner.openSession(options).then(this.opened, circuit.failed);
    const refusal = circuit.admit();
    if (refusal) return Promise.reject(refusal);
    return settled(() => this.inner.openSession(options)).then(this.trialOpened, circuit.trialFailed);
  }

  get verdict(): EraVerdict | undefined {
    return this.inner.verdict;
  }

  /**
   * An http server's era probe is its first contact, like openSession there: guarded, and its
   * failure counts. A verdict the transport already holds is passed through without touching the
   * circuit (it says nothing about the server now); stdio probes as part of starting the child,
   * which supervision looks after.
   */
  era(options?: { forwardPath?: string; refresh?: boolean }): Promise<EraVerdict> {
    const known = this.inner.verdict;
    if (this.config.transport === 'stdio' || known?.source === 'config' || (!options?.refresh && isFresh(known))) return this.inner.era(options);
    // One probe, counted once, however many callers wait for it.
    if (this.probing) return this.probing;
    const circuit = this.circuit;
    let probe: Promise<EraVerdict>;
    if (circuit.state === 'closed') probe = this.inner.era(options).then(circuit.passed, circuit.failed);
    else {
      const refusal = circuit.admit();
      if (refusal) return Promise.reject(refusal);
      probe = settled(() => this.inner.era(options)).then(circuit.trialPassed, circuit.trialFailed);
    }
    const shared = probe.finally(() => {
      if (this.probing === shared) this.probing = undefined;
    });
    this.probing = shared;
    return shared;
  }

  /**
   * Guarded like a session's request: a JSON-RPC error is an answer, so a success. A server
   * known to be legacy refuses the call itself, without reaching the server: not counted.
   */
  call(request: JsonRpcRequest, options: CallOptions): Promise<JsonRpcResponse> {
    const circuit = this.circuit;
    if (this.inner.verdict?.era === 'legacy') return this.inner.call(request, options);
    if (circuit.state === 'closed') return this.inner.call(request, options).then(circuit.passed, circuit.failed);
    const refusal = circuit.admit();
    if (refusal) return Promise.reject(refusal);
    return settled(() => this.inner.call(request, options)).then(circuit.trialPassed, circuit.trialFailed);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private readonly guard = (session: UpstreamSession): UpstreamSession => new GuardedSession(session, this.circuit);
  private readonly opened = (session: UpstreamSession): UpstreamSession => this.guard(this.circuit.passed(session));
  private readonly trialOpened = (session: UpstreamSession): UpstreamSession => this.guard(this.circuit.trialPassed(session));
}

/** A session whose requests go through its upstream's circuit. */
class GuardedSession implements UpstreamSession {
  readonly initializeResult: JsonRpcResponse;
  /** Set by close(): a 'closed' failure after it is the gateway's doing, not the server's. */
  private closed = false;

  constructor(
    private readonly inner: UpstreamSession,
    private readonly circuit: Circuit,
  ) {
    this.initializeResult = inner.initializeResult;
  }

  // Bound once per session, not per request.
  private readonly failed = (error: unknown): never => {
    this.circuit.record(false, this.verdict(error), error);
    throw error;
  };

  private readonly trialFailed = (error: unknown): never => {
    this.circuit.record(true, this.verdict(error), error);
    throw error;
  };

  /**
   * A client ending its session with requests in flight fails them as 'closed': that is not the
   * server's failure (and must not let a client open the circuit for everyone). Anything else,
   * even after close() (the server expiring the session ends it too), says what it says.
   */
  private verdict(error: unknown): Verdict {
    return this.closed && error instanceof UpstreamError && error.kind === 'closed' ? 'neither' : this.circuit.classify(error);
  }

  request(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    const circuit = this.circuit;
    if (circuit.state === 'closed') return this.inner.request(request, options).then(circuit.passed, this.failed);
    const refusal = circuit.admit();
    if (refusal) return Promise.reject(refusal);
    return settled(() => this.inner.request(request, options)).then(circuit.trialPassed, this.trialFailed);
  }

  send(message: JsonRpcNotification | JsonRpcResponse): Promise<void> {
    // An answer to the server's own request goes through: the server asked, so it waits for it.
    if ('method' in message && this.circuit.state !== 'closed' && this.circuit.refusing()) return Promise.reject(this.circuit.refusal());
    return this.inner.send(message);
  }

  openEventStream(): Promise<void> {
    return this.inner.openEventStream();
  }

  closeEventStream(): void {
    this.inner.closeEventStream();
  }

  close(): Promise<void> {
    this.closed = true;
    return this.inner.close();
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
