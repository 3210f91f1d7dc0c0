/**
 * A stdio upstream: one supervised child process per server, shared by every client.
 *
 * This class composes the parts, each in its own file:
 * - supervisor.ts: spawns the child, restarts it with backoff, reports a crash loop, ends its
 *   process tree. A request in flight when the child dies fails at once (never left to the
 *   client's own timeout, supergateway #139).
 * - stdin-writer.ts: writes to the child, one write per turn, refusing beyond a backlog.
 * - probe.ts: the child's era (legacy or 2026-07-28), configured or probed at start.
 * - server-messages.ts: routes what the child writes to the request, session or client it is for.
 * - virtual-sessions.ts: several client sessions over the child's one MCP session.
 * The correlator (../correlator.ts) rewrites request ids and progress tokens so that replies never
 * cross between clients. Here: the start sequence (era, then the gateway's own initialize), and
 * the Upstream interface the gateway calls.
 */
import type { ChildProcess } from 'node:child_process';
import type { StdioServerConfig } from '../../config/schema.js';
import type { JsonRpcMessage, JsonRpcRequest, JsonRpcResponse } from '../../jsonrpc/messages.js';
import type { Logger } from '../../observability/logger.js';
import { Correlator, cancelNotification } from '../correlator.js';
import { isFresh } from '../era.js';
import { UpstreamError } from '../errors.js';
import type { CallOptions, EraVerdict, OpenSessionOptions, RequestOptions, Upstream, UpstreamDeps, UpstreamSession, UpstreamStatus } from '../upstream.js';
import { EraProbe } from './probe.js';
import { ModernCall, ServerMessages, type CallOwner } from './server-messages.js';
import { StdinWriter } from './stdin-writer.js';
import { ChildSupervisor } from './supervisor.js';
import { VirtualSessions, initializeRequest, readInitializeResult, type ChildInit, type VirtualSession } from './virtual-sessions.js';

export class StdioUpstream implements Upstream {
  /** When a client last sent something or a session ended (ms since epoch): an isolated child's idle clock. */
  lastActive = Date.now();
  private readonly log: Logger;
  private readonly supervisor: ChildSupervisor;
  private readonly stdin: StdinWriter;
  private readonly correlator: Correlator<CallOwner>;
  private readonly probe: EraProbe;
  private readonly sessions: VirtualSessions;
  private readonly messages: ServerMessages;
  /** The current child's answer to the gateway's initialize (a legacy child, once initialized). */
  private init: ChildInit | undefined;

  constructor(
    readonly config: StdioServerConfig,
    deps: UpstreamDeps,
  ) {
    this.log = deps.logger.child({ server: config.name, transport: 'stdio' });
    const write = (message: JsonRpcMessage): boolean => this.stdin.write(message);
    this.supervisor = new ChildSupervisor(
      config,
      this.log,
      {
        settleEra: (child) => {
          this.init = undefined;
          return this.probe.settle(child);
        },
        initialize: async (child) => {
          if (!this.probe.modern) await this.probe.initializeOrAdopt(child, () => this.initialize(child));
        },
        ready: (child) => this.ready(child),
        line: (line) => this.messages.line(line),
        oversizedLine: (line) => this.messages.oversizedLine(line),
        childGone: (child, how) => this.probe.childGone(child, how),
        ended: (message) => this.childEnded(message),
      },
      deps.onRestart,
    );
    this.stdin = new StdinWriter(config, this.log, this.supervisor);
    this.correlator = new Correlator(config.name, (wireId, reason) => write(cancelNotification(wireId, reason)));
    this.probe = new EraProbe(config, this.log, this.supervisor, write);
    this.sessions = new VirtualSessions({
      config,
      request: (session, request, options) => this.request(session, request, options),
      write,
      answerServerRequest: (session, response) => this.messages.answer(session, response),
      sessionEnded: (session) => this.sessionEnded(session),
    });
    this.messages = new ServerMessages({
      config,
      log: this.log,
      correlator: this.correlator,
      sessions: this.sessions,
      probe: this.probe,
      write,
      onContained: deps.onContained,
    });
  }

  status(): UpstreamStatus {
    return this.supervisor.status();
  }

  get verdict(): EraVerdict | undefined {
    return this.probe.verdict;
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
    this.sessions.endAll(reason);
  }

  /**
   * The verdict of the running child whatever its age (a child's era does not change while it
   * runs), else the remembered one while fresh, else the one its next start reaches (starting
   * the server when idle). `refresh` asks a running modern child again; an initialized legacy
   * child cannot be asked (a dual-era child has pinned the legacy era), so its next start probes.
   */
  async era(options: { forwardPath?: string; refresh?: boolean } = {}): Promise<EraVerdict> {
    const known = this.probe.verdict;
    if (known?.source === 'config') return known;
    const running = this.supervisor.writable();
    if (options.refresh) {
      if (running && this.probe.modern) return this.probe.rediscover();
      this.probe.probeNextStart();
      if (running && known) return known;
    } else if (known && (running || isFresh(known))) {
      return known;
    }
    // A client waits for this: at most timeout_ms; the start goes on within startup_timeout_ms.
    await this.supervisor.whenReady(this.config.timeout_ms);
    const verdict = this.probe.verdict;
    if (!verdict) throw this.supervisor.unavailable();
    return verdict;
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
    if (this.probe.verdict?.era === 'legacy') throw this.legacyOnly();
    const timeoutMs = options.timeoutMs ?? this.config.timeout_ms;
    if (!this.supervisor.writable()) await this.supervisor.whenReady(timeoutMs);
    if (!this.probe.modern) throw this.legacyOnly();
    this.lastActive = Date.now();
    const outgoing = this.correlator.begin(request, options, timeoutMs, new ModernCall(options.owner));
    const refused = this.stdin.send(outgoing.wire);
    if (refused) this.correlator.fail(outgoing.wire.id as number, refused);
    return outgoing.response;
  }

  /** Spawns and initializes the child. Resolves once the first attempt has succeeded or failed. */
  async start(): Promise<void> {
    await this.supervisor.start();
  }

  async openSession(options: OpenSessionOptions): Promise<UpstreamSession> {
    // As in era(): the client's timeout_ms, not the child's startup_timeout_ms (finding 10).
    await this.supervisor.whenReady(this.config.timeout_ms);
    if (this.probe.modern) {
      const name = this.config.name;
      throw new UpstreamError('protocol', name, `Upstream '${name}' speaks the 2026-07-28 era of MCP: it has no sessions`);
    }
    const init = this.init;
    if (!init) throw this.supervisor.unavailable();
    return this.sessions.open(options.handlers, options.initialize, init, options.owner);
  }

  async close(): Promise<void> {
    this.supervisor.stop();
    this.sessions.detachAll();
    await this.supervisor.endProcess();
    this.correlator.failAll(new UpstreamError('closed', this.config.name, `Upstream '${this.config.name}' is shutting down`));
  }

  private legacyOnly(): UpstreamError {
    const name = this.config.name;
    return new UpstreamError('protocol', name, `Upstream '${name}' speaks the legacy era of MCP: it takes requests in sessions, not one by one`);
  }

  /** A client request from one of the sessions; waits for the child to be ready first. */
  private async request(session: VirtualSession, request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    this.lastActive = Date.now();
    const timeoutMs = options.timeoutMs ?? this.config.timeout_ms;
    if (!this.supervisor.writable()) await this.supervisor.whenReady(timeoutMs);
    const outgoing = this.correlator.begin(request, options, timeoutMs, session);
    const refused = this.stdin.send(outgoing.wire);
    if (refused) this.correlator.fail(outgoing.wire.id as number, refused);
    return outgoing.response;
  }

  /** A session has ended: its calls fail, and the child's requests waiting on it are answered. */
  private sessionEnded(session: VirtualSession): void {
    this.lastActive = Date.now();
    this.correlator.failAll(new UpstreamError('closed', this.config.name, 'Session closed'), session);
    this.messages.sessionEnded(session);
  }

  /** The gateway's own initialize of a legacy child, within what the start has left of startup_timeout_ms after the era probe. */
  private async initialize(child: ChildProcess): Promise<void> {
    const { name, startup_timeout_ms: startupMs } = this.config;
    const remainingMs = Math.max(1, this.supervisor.childStartedAt + startupMs - Date.now());
    const outgoing = this.correlator.begin(initializeRequest(this.config), { onMessage: () => undefined }, remainingMs, null);
    if (!this.stdin.write(outgoing.wire)) this.correlator.fail(outgoing.wire.id as number, this.supervisor.unavailable());
    const response = await outgoing.response.catch((error: unknown) => {
      if (error instanceof UpstreamError && error.kind === 'timeout')
        throw new UpstreamError('timeout', name, `Upstream '${name}' did not answer within ${startupMs} ms`);
      throw error;
    });
    if (this.supervisor.child !== child) throw this.supervisor.unavailable();
    this.init = readInitializeResult(name, response);
    this.probe.noteLegacyVersion(this.init.protocolVersion);
    this.stdin.write({ jsonrpc: '2.0', method: 'notifications/initialized' });
  }

  private ready(child: ChildProcess): void {
    const modern = this.probe.modern;
    this.log.info(
      { pid: child.pid, era: this.probe.verdict?.era, protocolVersion: modern ? this.probe.verdict?.version : this.init?.protocolVersion },
      'upstream ready',
    );
    // Subscriptions held by clients survive a restart of the child.
    this.sessions.resubscribe();
  }

  /** The child has ended: what was in flight on it fails with `message`. */
  private childEnded(message: string): void {
    this.stdin.childExited();
    this.correlator.failAll(new UpstreamError('closed', this.config.name, `${message} while the request was in flight`));
    this.messages.childEnded(message);
  }
}
