/**
 * The Upstream of both HTTP transports (streamable HTTP and legacy HTTP+SSE): one undici Agent
 * (keep-alive, one connection pool per origin), the sessions opened through it, the server's era
 * (configured, or probed once per forward path) and the health record behind status(). The
 * transports add how a session is made (newSession) and, for streamable HTTP, the 2026-07-28 side.
 */
// Only undici's Agent is loaded, not its whole index (src/types/undici-agent.d.ts says why).
import UndiciAgent from 'undici/lib/dispatcher/agent.js';
import type { HttpServerConfig } from '../../config/schema.js';
import type { JsonRpcRequest, JsonRpcResponse } from '../../jsonrpc/messages.js';
import type { Logger } from '../../observability/logger.js';
import { delay } from '../../delay.js';
import { configuredVerdict, isFresh, PathVerdicts, withLegacyVersion } from '../era.js';
import { UpstreamError } from '../errors.js';
import type { CallOptions, EraVerdict, OpenSessionOptions, ResumeState, Upstream, UpstreamSession, UpstreamStatus } from '../upstream.js';
import type { HttpContext } from './context.js';
import { negotiatedVersion } from './handshake.js';
import { UpstreamHealth } from './health.js';
import type { ModernHttp } from './modern-http.js';
import { asUpstreamError, configuredHeaders } from './request.js';
import type { HttpSession } from './session.js';

export interface HttpUpstreamDeps {
  logger: Logger;
}

/** How long close() waits for the upstream to acknowledge a DELETE or in-flight exchanges. */
export const CLOSE_TIMEOUT_MS = 2_000;

/**
 * The Upstream of both HTTP transports: one undici Agent (keep-alive, one connection pool per
 * origin) and the sessions opened through it. Sessions connect lazily; start() does nothing.
 */
export abstract class HttpUpstream implements Upstream {
  protected readonly context: HttpContext;
  private readonly sessions = new Set<UpstreamSession>();
  private closed = false;
  /** The `era` setting's verdict (always legacy for sse): every path has it, nothing is probed. */
  private configured: EraVerdict | undefined;
  /** Probed verdicts, one per forward path (era.ts PathVerdicts says why). */
  private readonly verdicts = new PathVerdicts();
  /** The probe in flight per forward path, shared by everyone who asks for that path's era meanwhile. */
  private readonly probing = new Map<string, Promise<EraVerdict>>();
  /** The 2026-07-28 side of the transport: probe and stateless calls. None for sse (legacy only). */
  protected abstract readonly modern: ModernHttp | undefined;

  constructor(
    readonly config: HttpServerConfig,
    deps: HttpUpstreamDeps,
    transport: 'http' | 'sse',
  ) {
    const agent = new UndiciAgent({
      connect: { timeout: connectTimeout(config) },
      // No undici timeouts on headers or bodies: the correlator's deadline governs each request,
      // and an SSE stream may legitimately stay silent for hours.
      headersTimeout: 0,
      bodyTimeout: 0,
    });
    this.context = {
      config,
      agent,
      configuredHeaders: configuredHeaders(config),
      logger: deps.logger.child({ upstream: config.name, transport }),
      health: new UpstreamHealth(),
      forget: (session) => this.sessions.delete(session),
    };
    this.configured = configuredVerdict(config);
  }

  protected abstract newSession(options: OpenSessionOptions): HttpSession<unknown>;

  async start(): Promise<void> {}

  status(): UpstreamStatus {
    return this.context.health.snapshot();
  }

  /** The configured verdict, else the url's own probed one, else the latest probed for any path. */
  get verdict(): EraVerdict | undefined {
    return this.configured ?? this.verdicts.shown;
  }

  /** The verdict for requests to url + forwardPath: the configured one, else that path's own. */
  verdictFor(forwardPath: string): EraVerdict | undefined {
    return this.configured ?? this.verdicts.get(forwardPath);
  }

  /**
   * The configured verdict (always legacy for sse), else the one remembered for this forward path
   * while fresh, else one probe of url + forwardPath shared by every caller that asks for the same
   * path while it runs. A failed probe rejects and leaves the path's previous verdict as it was.
   * Each path is probed on its own: with prefix routing a client chooses the path, and a path
   * that answers 404 (legacy by the fallback rules) or never answers must not decide the era of
   * requests to other paths, nor make them wait for its probe.
   */
  era(options: { forwardPath?: string; refresh?: boolean } = {}): Promise<EraVerdict> {
    const path = options.forwardPath ?? '';
    const known = this.verdictFor(path);
    if (known?.source === 'config' || (!options.refresh && isFresh(known))) return Promise.resolve(known!);
    const running = this.probing.get(path);
    if (running) return running;
    const modern = this.modern;
    if (this.closed || !modern) return Promise.reject(this.shuttingDown());
    const probing = modern.probe(path).then(
      (verdict) => {
        this.probing.delete(path);
        if (!this.closed) this.verdicts.set(path, verdict);
        return verdict;
      },
      (error: unknown) => {
        this.probing.delete(path);
        throw asUpstreamError(error, this.config.name);
      },
    );
    this.probing.set(path, probing);
    return probing;
  }

  call(request: JsonRpcRequest, options: CallOptions): Promise<JsonRpcResponse> {
    const name = this.config.name;
    if (this.closed) return Promise.reject(this.shuttingDown());
    if (!this.modern || this.verdictFor(options.forwardPath)?.era === 'legacy') {
      return Promise.reject(
        new UpstreamError('protocol', name, `Upstream '${name}' speaks the legacy era of MCP: it takes requests in sessions, not one by one`),
      );
    }
    return this.modern.call(request, options);
  }

  /** Takes up a session another replica opened (sealed sessions), without a handshake. */
  async resumeSession(state: Extract<ResumeState, { kind: 'http' }>, options: OpenSessionOptions): Promise<UpstreamSession> {
    if (this.closed) throw this.shuttingDown();
    const session = this.takeUp(state, options);
    this.sessions.add(session);
    return session;
  }

  /** The transport's way to take a session up; HTTP+SSE cannot: its connection is the session. */
  protected takeUp(_state: Extract<ResumeState, { kind: 'http' }>, _options: OpenSessionOptions): HttpSession<unknown> {
    const name = this.config.name;
    throw new UpstreamError('protocol', name, `A session of upstream '${name}' lives on the connection of the replica that opened it`);
  }

  async openSession(options: OpenSessionOptions): Promise<UpstreamSession> {
    if (this.closed) throw this.shuttingDown();
    let session: HttpSession<unknown> | undefined;
    try {
      session = this.newSession(options);
      this.sessions.add(session);
      await session.open(options.initialize);
      // A legacy verdict learns its version from the first initialize that answers.
      this.learnVersion(options.forwardPath, session.initializeResult);
      return session;
    } catch (error) {
      await session?.close();
      throw asUpstreamError(error, this.config.name);
    }
  }

  private learnVersion(forwardPath: string, initializeResult: JsonRpcResponse): void {
    const known = this.verdictFor(forwardPath);
    if (known === undefined || known.version !== undefined) return;
    const learnt = withLegacyVersion(known, negotiatedVersion(initializeResult));
    if (learnt === known || learnt === undefined) return;
    if (known.source === 'config') this.configured = learnt;
    else this.verdicts.set(forwardPath, learnt);
  }

  private shuttingDown(): UpstreamError {
    return new UpstreamError('unavailable', this.config.name, `Upstream '${this.config.name}' is shutting down`);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.modern?.close();
    // One deadline for the whole close (session DELETEs, then the agent), so a frozen upstream
    // costs a shutdown CLOSE_TIMEOUT_MS, not twice that.
    const deadline = Date.now() + CLOSE_TIMEOUT_MS;
    await Promise.all([...this.sessions].map((s) => s.close()));
    this.context.health.stopped();
    // Sessions have aborted their streams; close() still waits for exchanges that ignore aborts,
    // so bound it and then tear down whatever is left.
    const agent = this.context.agent;
    const closedInTime = await Promise.race([
      agent.close().then(
        () => true,
        () => true,
      ),
      delay(Math.max(0, deadline - Date.now())).then(() => false),
    ]);
    if (!closedInTime) await agent.destroy().catch(() => undefined);
  }
}

/** undici's connect timeout: at most 10 s, never longer than the request deadline. */
function connectTimeout(config: HttpServerConfig): number {
  return config.timeout_ms > 0 ? Math.min(10_000, config.timeout_ms) : 10_000;
}
