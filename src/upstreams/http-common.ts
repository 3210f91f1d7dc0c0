/**
 * What the two HTTP transports (streamable HTTP and legacy HTTP+SSE) share: the undici Agent, the
 * one function that sends an HTTP request and turns its failures into UpstreamErrors, the
 * gateway's own initialize handshake, how replies and progress are routed through the correlator,
 * the health record behind status(), and the Upstream class that owns the sessions.
 */
import type { Agent } from 'undici';
// Only undici's Agent is loaded, not its whole index (src/types/undici-agent.d.ts says why).
import UndiciAgent from 'undici/lib/dispatcher/agent.js';
import { GATEWAY_MANAGED_HEADERS } from '../config/constants.js';
import type { ServerConfig } from '../config/schema.js';
import {
  isNotification,
  isResponse,
  toMessage,
  type JsonRpcMessage,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from '../jsonrpc/messages.js';
import type { Logger } from '../observability/logger.js';
import { GATEWAY_NAME, GATEWAY_VERSION } from '../version.js';
import type { CancelSignal } from './cancellation.js';
import type { Correlator } from './correlator.js';
import { configuredVerdict, isFresh, PathVerdicts, withLegacyVersion } from './era.js';
import type { ModernHttp } from './modern-http.js';
import { connectFailed, UpstreamError } from './errors.js';
import { BodyTooLarge, exchange, type ExchangeResponse } from './exchange.js';
import { nestedTooDeep, tooDeepError } from './inbound.js';
import type {
  CallOptions,
  EraVerdict,
  OpenSessionOptions,
  RequestOptions,
  ServerMessage,
  Upstream,
  UpstreamSession,
  UpstreamState,
  UpstreamStatus,
} from './upstream.js';
import { errorMessage } from '../error-message.js';
import { delay } from '../delay.js';

export interface HttpUpstreamDeps {
  logger: Logger;
}

/** What a session needs from the upstream that opened it. */
export interface HttpContext {
  readonly config: ServerConfig;
  /** The configured headers that may be sent (lower-cased, managed ones left out), computed once. */
  readonly configuredHeaders: Readonly<Record<string, string>>;
  readonly agent: Agent;
  readonly logger: Logger;
  readonly health: UpstreamHealth;
  /** Called once by a session when it has ended (closed or expired). */
  forget(session: HttpSession): void;
}

/** A session before it is usable: open() runs the initialize handshake. */
export interface HttpSession extends UpstreamSession {
  open(initialize: JsonRpcRequest | undefined): Promise<void>;
}

export type HttpResponse = ExchangeResponse;

/** How long close() waits for the upstream to acknowledge a DELETE or in-flight exchanges. */
export const CLOSE_TIMEOUT_MS = 2_000;
/**
 * The largest body the gateway reads as one answer: the same limit as one SSE event
 * (sse-stream.ts) and one stdout line of a stdio child (stdio.ts).
 */
export const MAX_BODY_BYTES = 32 * 1024 * 1024;
/** Error bodies are read this far, for the log and for the session-expired check. */
const ERROR_BODY_LIMIT = 4_096;
/** Error body text that reaches the log, after sanitizing. */
const LOG_SNIPPET_CHARS = 200;

/** status() for an HTTP upstream: healthy until a failure is seen, again after a success. */
export class UpstreamHealth {
  private state: UpstreamState = 'idle';
  private healthy = true;
  private lastError: string | undefined;
  private since = Date.now();

  /** The server answered (any status below 500). */
  succeeded(): void {
    this.healthy = true;
    this.lastError = undefined;
    this.setState('ready');
  }

  /** A request could not reach the server, or it answered 5xx. */
  failed(error: UpstreamError): void {
    this.healthy = false;
    this.lastError = error.message;
    // 'idle' stays 'idle': http upstreams have no process that could be in backoff.
    if (this.state === 'ready') this.setState('idle');
  }

  stopped(): void {
    this.healthy = false;
    this.lastError = 'Upstream closed';
    this.setState('stopped');
  }

  snapshot(): UpstreamStatus {
    const status: UpstreamStatus = { state: this.state, healthy: this.healthy, restarts: 0, since: this.since };
    if (this.lastError !== undefined) status.lastError = this.lastError;
    return status;
  }

  private setState(state: UpstreamState): void {
    if (this.state === state) return;
    this.state = state;
    this.since = Date.now();
  }
}

/**
 * The Upstream of both HTTP transports: one undici Agent (keep-alive, one connection pool per
 * origin) and the sessions opened through it. Sessions connect lazily; start() does nothing.
 */
export abstract class HttpUpstream implements Upstream {
  protected readonly context: HttpContext;
  private readonly sessions = new Set<HttpSession>();
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
    readonly config: ServerConfig,
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

  protected abstract newSession(options: OpenSessionOptions): HttpSession;

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
      return Promise.reject(new UpstreamError('protocol', name, `Upstream '${name}' speaks the legacy era of MCP: it takes requests in sessions, not one by one`));
    }
    return this.modern.call(request, options);
  }

  async openSession(options: OpenSessionOptions): Promise<UpstreamSession> {
    if (this.closed) throw this.shuttingDown();
    let session: HttpSession | undefined;
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
      agent.close().then(() => true, () => true),
      delay(Math.max(0, deadline - Date.now())).then(() => false),
    ]);
    if (!closedInTime) await agent.destroy().catch(() => undefined);
  }
}

/** undici's connect timeout: at most 10 s, never longer than the request deadline. */
function connectTimeout(config: ServerConfig): number {
  return config.timeout_ms > 0 ? Math.min(10_000, config.timeout_ms) : 10_000;
}

/**
 * The upstream url with the forwarded path (and query) appended. When both carry a query, the
 * configured parameters win: an operator may pin one (an API key, a tenant) that a client must
 * not be able to override.
 */
export function targetUrl(configured: string, forwardPath: string, server: string): URL {
  const url = new URL(configured);
  if (forwardPath === '') return url;
  const queryAt = forwardPath.indexOf('?');
  const path = queryAt === -1 ? forwardPath : forwardPath.slice(0, queryAt);
  const query = queryAt === -1 ? '' : forwardPath.slice(queryAt + 1);
  const base = url.pathname.replace(/\/+$/, '');
  if (path !== '' && path !== '/') {
    url.pathname = base + (path.startsWith('/') ? path : `/${path}`);
    // The URL parser resolves dot segments (also %2e%2e): never leave the configured path.
    if (url.pathname !== base && !url.pathname.startsWith(`${base}/`)) {
      throw new UpstreamError('protocol', server, `The forwarded path leaves the url of upstream '${server}'`);
    }
  }
  for (const [key, value] of new URLSearchParams(query)) {
    if (!url.searchParams.has(key)) url.searchParams.append(key, value);
  }
  return url;
}

/** A url as it may appear in logs: no credentials, no query (which may hold a key). */
export function loggableUrl(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

/**
 * Headers the transports set themselves (or leave out on purpose): the ones config validation
 * already refuses, plus those a transport sets per request. Configured values never pass.
 */
const MANAGED_HEADERS = new Set<string>([...GATEWAY_MANAGED_HEADERS, 'accept', 'content-type', 'last-event-id']);

/** True for a header the transports set themselves (lower-case name): never configured or passed along. */
export function isManagedHeader(name: string): boolean {
  return MANAGED_HEADERS.has(name);
}

/** The configured headers (credentials for this upstream) that may go on the wire. */
function configuredHeaders(config: ServerConfig): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(config.headers)) {
    const key = name.toLowerCase();
    if (!MANAGED_HEADERS.has(key)) headers[key] = value;
  }
  return headers;
}

/**
 * Request headers: the configured ones (never anything from the client) plus the protocol's own.
 * A configured header may not stand in for a managed one, not even where the transport sends
 * none (no Mcp-Session-Id on initialize).
 */
export function requestHeaders(context: HttpContext, own: Record<string, string | undefined>): Record<string, string> {
  const headers: Record<string, string> = { ...context.configuredHeaders };
  for (const [name, value] of Object.entries(own)) if (value !== undefined) headers[name] = value;
  return headers;
}

/** The deadline of a POST that expects no answer (a notification, the client's reply). */
export function sendSignal(config: ServerConfig): AbortSignal {
  return AbortSignal.timeout(sendTimeoutMs(config));
}

/** How long a POST that expects no answer may take: the server's timeout_ms, else 30 s. */
export function sendTimeoutMs(config: ServerConfig): number {
  return config.timeout_ms > 0 ? config.timeout_ms : 30_000;
}

export interface HttpRequestOptions {
  method: 'GET' | 'POST' | 'DELETE';
  url: URL;
  headers: Record<string, string>;
  body?: string;
  signal: StopSignal;
}

/**
 * Sends one HTTP request and resolves when the response headers arrive. Every failure before that
 * is an UpstreamError: 'connect' (refused, DNS, TLS, reset), 'timeout' or 'cancelled' (the signal;
 * a timeout is an AbortSignal.timeout()). Records the upstream's health.
 */
export async function httpRequest(context: HttpContext, options: HttpRequestOptions): Promise<HttpResponse> {
  const { config, agent, health } = context;
  let response: HttpResponse;
  try {
    const target = dispatchTarget(options.url);
    response = await exchange(agent, {
      origin: target.origin,
      path: target.path,
      method: options.method,
      headers: options.headers,
      body: options.body ?? null,
      signal: options.signal,
    });
  } catch (error) {
    if (options.signal.aborted) throw abortError(config.name, options.signal);
    const failure = requestFailed(config.name, error, options.url);
    health.failed(failure);
    throw failure;
  }
  if (response.statusCode < 500) health.succeeded();
  return response;
}

/**
 * A URL's origin and path with query, as the agent takes them. undici's top-level request() works
 * them out from the URL on every call (its origin getter alone cost 5-7 us per request in
 * profiles); the URLs the transports send to live as long as their session (or, for calls without
 * a forwarded path, as the upstream) and are never changed, so each is worked out once. The
 * WeakMap lets go of an entry with its URL.
 */
const targets = new WeakMap<URL, { origin: string; path: string }>();

function dispatchTarget(url: URL): { origin: string; path: string } {
  let target = targets.get(url);
  if (target === undefined) {
    target = { origin: url.origin, path: url.pathname + url.search };
    targets.set(url, target);
  }
  return target;
}

/**
 * What an HTTP exchange that failed before its response headers means. "Failed to connect" only
 * when it may be true: a server that took the request and closed the connection without an answer
 * (it crashed, a proxy gave up) may have acted on it, and one that answered with what is not HTTP
 * was reached.
 */
function requestFailed(server: string, error: unknown, url: URL): UpstreamError {
  const code = errorCode(error);
  if (code === 'UND_ERR_SOCKET') {
    return new UpstreamError('closed', server, `Upstream '${server}' closed the connection before answering (${url.host})`, { cause: error });
  }
  if (error instanceof Error && error.name === 'HTTPParserError') {
    return new UpstreamError('protocol', server, `Upstream '${server}' answered with something that is not HTTP (${url.host})`, { cause: error });
  }
  return connectFailed(server, `${code ?? errorMessage(error)} (${url.host})`, error);
}

/** The UpstreamError for an aborted HTTP exchange. */
export function abortError(server: string, signal: StopSignal): UpstreamError {
  const reason: unknown = signal.reason;
  if (reason instanceof Error && reason.name === 'TimeoutError') {
    return new UpstreamError('timeout', server, `Upstream '${server}' did not answer in time`, { cause: reason });
  }
  return new UpstreamError('cancelled', server, 'Request cancelled', { cause: reason });
}

/** The code of a socket or undici error; a refused dual-stack connect is an AggregateError. */
function errorCode(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const e = error as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.code === 'string') return e.code;
  if (Array.isArray(e.errors) && e.errors.length > 0) return errorCode(e.errors[0]);
  return e.cause === undefined ? undefined : errorCode(e.cause);
}


/**
 * Reads a response body with `read`; a body that fails half way (the server died, the connection
 * was reset) means the answer will never come: kind 'closed'.
 */
export async function readBody<T>(server: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (error) {
    if (error instanceof UpstreamError) throw error;
    // sse-stream.ts's limit on one event (eventsource-parser's error): the server's fault, not a lost connection.
    if ((error as { type?: unknown }).type === 'max-buffer-size-exceeded') {
      throw new UpstreamError('protocol', server, `Upstream '${server}' sent an event over the size limit (${(error as Error).message})`, { cause: error });
    }
    throw new UpstreamError('closed', server, `Upstream '${server}' closed the connection while answering`, { cause: error });
  }
}

/** Any thrown value as an UpstreamError (a failure in our own code counts as 'protocol'). */
export function asUpstreamError(error: unknown, server: string): UpstreamError {
  if (error instanceof UpstreamError) return error;
  return new UpstreamError('protocol', server, `Upstream '${server}': ${errorMessage(error)}`, { cause: error });
}

/**
 * The reason given when a request's HTTP exchange is stopped because the request is over (its
 * answer came, or its deadline or cancellation). One shared object: abort() without a reason
 * builds a DOMException with a stack trace, which showed in profiles when it ran per request.
 */
export const EXCHANGE_OVER = new Error('the request is over');

/** What an HTTP exchange can be stopped by: an AbortSignal, or a Cancellation (cancellation.ts). */
export type StopSignal = CancelSignal;

/** A response header as one string (undici gives arrays for repeated headers). */
export function header(response: HttpResponse, name: string): string | undefined {
  const value = response.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The media type of a response, without parameters, lower-cased. */
export function mediaType(response: HttpResponse): string {
  return (header(response, 'content-type') ?? '').split(';', 1)[0]!.trim().toLowerCase();
}

/**
 * Reads a whole answer as text. One over `limit` bytes is a protocol fault, refused from its
 * Content-Length when it has one, else once that many bytes have arrived (the body is destroyed).
 */
export async function readText(response: HttpResponse, server: string, limit = MAX_BODY_BYTES): Promise<string> {
  const tooLarge = (): UpstreamError =>
    new UpstreamError('protocol', server, `Upstream '${server}' answered with a body over the limit of ${limit} bytes`);
  const declared = header(response, 'content-length');
  if (declared !== undefined && /^\d+$/.test(declared) && Number(declared) > limit) {
    response.body.destroy();
    throw tooLarge();
  }
  try {
    return await response.body.text(limit);
  } catch (error) {
    throw error instanceof BodyTooLarge ? tooLarge() : error;
  }
}

/** Reads at most `limit` bytes of a body as text, then releases it. */
export async function readLimited(body: HttpResponse['body'], limit = ERROR_BODY_LIMIT): Promise<string> {
  const decoder = new TextDecoder();
  let text = '';
  let bytes = 0;
  try {
    for await (const chunk of body) {
      text += decoder.decode(chunk.subarray(0, limit - bytes), { stream: true });
      bytes += chunk.length;
      if (bytes >= limit) break;
    }
  } catch {
    // A body that fails half way is still worth what arrived.
  }
  return text + decoder.decode();
}

/** Discards a body so that its connection can be reused; never throws. */
export async function discard(body: HttpResponse['body']): Promise<void> {
  await body.dump(64 * 1024).catch(() => undefined);
}

/**
 * Body text fit for a log line: bounded, no control characters, and none of the configured header
 * values (a server that echoes its request in an error page must not put credentials in our log).
 */
export function logSnippet(text: string, config: ServerConfig): string {
  let snippet = text;
  for (const value of Object.values(config.headers)) {
    if (value.length >= 4) snippet = snippet.split(value).join('[redacted]');
  }
  return snippet.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim().slice(0, LOG_SNIPPET_CHARS);
}

/**
 * The error for a response that is not 2xx, after logging its status and a short snippet of its
 * body (never in the error, which may reach clients). Also returns the body text read so far.
 */
export async function statusError(
  context: HttpContext,
  response: HttpResponse,
  what: string,
): Promise<{ error: UpstreamError; body: string }> {
  const name = context.config.name;
  const body = await readLimited(response.body);
  const failure = new UpstreamError('protocol', name, `Upstream '${name}' answered HTTP ${response.statusCode}`);
  if (response.statusCode >= 500) context.health.failed(failure);
  context.logger.warn({ status: response.statusCode, what, body: logSnippet(body, context.config) }, 'upstream answered an HTTP error');
  return { error: failure, body };
}

/**
 * The MCP SDK's example servers (server-everything among them, and many built from that template)
 * answer 400 "Bad Request: No valid session ID provided" for a session they no longer know where
 * the spec (2025-03-26, Session Management) says 404. Treat that answer as expiry too.
 */
export function saysSessionUnknown(status: number, body: string): boolean {
  if (status !== 400) return false;
  try {
    const parsed = JSON.parse(body) as { error?: { message?: unknown } };
    const message = parsed.error?.message;
    return typeof message === 'string' && /session/i.test(message);
  } catch {
    return false;
  }
}

/**
 * Decodes a body or an SSE event's data: one JSON-RPC message or a batch. Text nested deeper than
 * MAX_UPSTREAM_DEPTH is not parsed (inbound.ts): it goes to `onTooDeep` when given (an SSE event:
 * dropped, or its request failed, and the stream goes on), else it is a protocol fault (a JSON
 * body: the request it answers fails).
 */
export function parseMessages(text: string, server: string, onTooDeep?: (text: string) => void): JsonRpcMessage[] {
  if (nestedTooDeep(text)) {
    if (!onTooDeep) throw tooDeepError(server);
    onTooDeep(text);
    return [];
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new UpstreamError('protocol', server, `Upstream '${server}' sent a body that is not JSON`, { cause: error });
  }
  const items: unknown[] = Array.isArray(value) ? value : [value];
  return items.map((item) => {
    const message = toMessage(item);
    if (typeof message === 'string') {
      throw new UpstreamError('protocol', server, `Upstream '${server}' sent an invalid JSON-RPC message: ${message}`);
    }
    return message;
  });
}

/**
 * The first routing step for every message from upstream: responses go to their request,
 * progress to the request that owns its token. Returns what is left to deliver (notifications and
 * server-to-client requests), or undefined when the message has been dealt with.
 */
export function routeReplies<Owner>(
  correlator: Correlator<Owner>,
  message: JsonRpcMessage,
  logger: Logger,
): ServerMessage | undefined {
  if (isResponse(message)) {
    if (!correlator.resolve(message)) logger.debug({ id: message.id }, 'dropped a response to no request in flight');
    return undefined;
  }
  if (isNotification(message)) {
    if (correlator.routeNotification(message)) return undefined;
    // Progress for a request that has ended (or was never ours) has no one to go to.
    if (message.method === 'notifications/progress') return undefined;
  }
  return message as ServerMessage;
}

/** Hands a message to the core, which must not be able to break a read loop by throwing. */
export function deliver(target: (message: ServerMessage) => void, message: ServerMessage, logger: Logger): void {
  try {
    target(message);
  } catch (error) {
    logger.error({ err: error, method: message.method }, 'message handler threw');
  }
}

/**
 * The initialize the gateway sends for a session it owns (no client initialize to forward). It
 * declares sampling and elicitation: a server asks for them while handling a 2026-07-28 client's
 * call, and the gateway relays them to that client as `input_required` rounds
 * (src/mcp/input-rounds.ts). A plain session-less client cannot answer: such requests are
 * refused at once (src/mcp/gateway.ts).
 */
export function gatewayInitialize(protocolVersion: string): JsonRpcRequest {
  return {
    jsonrpc: '2.0',
    id: 0,
    method: 'initialize',
    params: { protocolVersion, capabilities: { sampling: {}, elicitation: {} }, clientInfo: { name: GATEWAY_NAME, version: GATEWAY_VERSION } },
  };
}

export const INITIALIZED: JsonRpcNotification = { jsonrpc: '2.0', method: 'notifications/initialized' };

/** The two calls the initialize handshake makes, on whatever connection the transport chooses. */
export interface HandshakeChannel {
  request(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse>;
  send(message: JsonRpcNotification): Promise<void>;
}

export interface HandshakeOptions {
  /** The client's initialize; absent = the gateway's own with `protocolVersion`. */
  initialize: JsonRpcRequest | undefined;
  protocolVersion: string;
  /**
   * Send `notifications/initialized` after a successful result. Only when the client will not send
   * its own (the gateway's own initialize, or a replay after a reconnect).
   */
  announce: boolean;
  timeoutMs: number;
  onMessage: (message: ServerMessage) => void;
}

/**
 * The MCP lifecycle's initialization phase (spec: basic/lifecycle). An answer that is a JSON-RPC
 * error is returned, not thrown: the core relays it to the client.
 */
export async function handshake(channel: HandshakeChannel, options: HandshakeOptions): Promise<JsonRpcResponse> {
  const initialize = options.initialize ?? gatewayInitialize(options.protocolVersion);
  const response = await channel.request(initialize, { timeoutMs: options.timeoutMs, onMessage: options.onMessage });
  if (options.announce && 'result' in response) await channel.send(INITIALIZED);
  return response;
}

/** The protocol version a server chose in its initialize result, if it is one. */
export function negotiatedVersion(response: JsonRpcResponse): string | undefined {
  if (!('result' in response)) return undefined;
  const version = response.result['protocolVersion'];
  return typeof version === 'string' ? version : undefined;
}

