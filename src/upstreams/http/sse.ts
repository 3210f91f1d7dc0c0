/**
 * The legacy HTTP+SSE upstream transport (MCP spec 2024-11-05, basic/transports): one GET opens a
 * server-sent event stream whose first `endpoint` event names the URL to POST messages to; every
 * reply comes back on that one stream as a `message` event.
 *
 * The stream is the session: when it drops, every request in flight is failed at once (nothing
 * else would ever answer it) and the session is rebuilt on a new stream, lazily for a session the
 * gateway owns, eagerly (replaying the client's initialize) for a client's.
 */
import type { HttpServerConfig } from '../../config/schema.js';
import { delay } from '../../delay.js';
import type { JsonRpcMessage, JsonRpcNotification, JsonRpcRequest, JsonRpcResponse } from '../../jsonrpc/messages.js';
import { traceHeaders } from '../../protocol/trace-context.js';
import { Cancellation } from '../cancellation.js';
import { cancelNotification } from '../correlator.js';
import { waitAtMost } from '../deadline.js';
import { UpstreamError } from '../errors.js';
import type { OpenSessionOptions, RequestOptions } from '../upstream.js';
import { discard, statusError } from './body.js';
import type { HttpContext } from './context.js';
import { handshake } from './handshake.js';
import { asUpstreamError, EXCHANGE_OVER, httpRequest, mediaType, requestHeaders, sendSignal, sendTimeoutMs, type StopSignal } from './request.js';
import { HttpSession } from './session.js';
import { eventMessages, readEvents, type SseEvent } from './sse-stream.js';
import { HttpUpstream, type HttpUpstreamDeps } from './upstream.js';
import { loggableUrl, targetUrl } from './url.js';

/** The only protocol version the HTTP+SSE transport was specified for. */
const SSE_PROTOCOL_VERSION = '2024-11-05';
/** Rebuilding a client's session: attempts, and the pace between them (within startup_timeout_ms). */
const RECONNECT_ATTEMPTS = 5;
const RECONNECT_FIRST_WAIT_MS = 500;

export class SseUpstream extends HttpUpstream {
  /** HTTP+SSE exists only in the legacy era: no probe, no stateless calls. */
  protected readonly modern = undefined;

  constructor(config: HttpServerConfig, deps: HttpUpstreamDeps) {
    super(config, deps, 'sse');
  }

  protected newSession(options: OpenSessionOptions): SseSession {
    return new SseSession(this.context, options);
  }
}

/** One GET stream and the endpoint it announced. */
interface Connection {
  readonly abort: AbortController;
  endpoint: URL | undefined;
  lost: boolean;
}

/**
 * One client's (or the gateway's own) HTTP+SSE session: a GET stream at a time, rebuilt when lost.
 * Its requests are owned by the connection they were posted on, so a drop fails exactly those.
 */
class SseSession extends HttpSession<Connection> {
  private readonly sseUrl: URL;
  /** The client's initialize, replayed on a new stream so that the client keeps its session. */
  private clientInitialize: JsonRpcRequest | undefined;
  /** Every stream this session has open (one, plus one being established at most). */
  private readonly connections = new Set<Connection>();
  private current: Connection | undefined;
  private connecting: Promise<Connection> | undefined;

  constructor(context: HttpContext, options: OpenSessionOptions) {
    super(context, options);
    this.sseUrl = targetUrl(context.config.url, options.forwardPath, context.config.name);
  }

  async open(initialize: JsonRpcRequest | undefined): Promise<void> {
    this.clientInitialize = initialize && structuredClone(initialize);
    // The client sends its own notifications/initialized through send().
    this.result = await this.establish(initialize === undefined, this.clientWaitMs());
  }

  async request(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    const connection = await this.connection(options.timeoutMs ?? this.context.config.timeout_ms);
    if (options.signal?.aborted) {
      throw new UpstreamError('cancelled', this.context.config.name, 'Request cancelled by the client');
    }
    return this.requestOn(connection, request, options);
  }

  async send(message: JsonRpcNotification | JsonRpcResponse): Promise<void> {
    const connection = await this.connection(sendTimeoutMs(this.context.config));
    try {
      await this.post(connection, message, sendSignal(this.context.config));
    } catch (error) {
      const failure = this.sendFailed(error);
      this.afterPostFailure(connection, failure);
      throw failure;
    }
  }

  /** The one stream already carries everything; there is no separate event stream to open. */
  async openEventStream(): Promise<void> {}

  closeEventStream(): void {}

  /** Closing ends every stream; the server ends the session with its stream (there is no DELETE). */
  protected stopStreams(): void {
    this.current = undefined;
    for (const connection of this.connections) connection.abort.abort();
  }

  protected endedError(): UpstreamError {
    return this.closedError('The session is closed');
  }

  /**
   * The live connection, re-established when the stream was lost. A caller waits for that at most
   * `waitMs` (its request's deadline; undefined or 0: as long as it takes), while the rebuilding,
   * which other callers may share, goes on (finding 10 of issue 16).
   */
  private connection(waitMs?: number): Promise<Connection> {
    if (this.ended) return Promise.reject(this.endedError());
    if (this.current) return Promise.resolve(this.current);
    this.connecting ??= this.reconnect().finally(() => (this.connecting = undefined));
    return waitMs ? waitAtMost(this.connecting, waitMs, this.context.config.name) : this.connecting;
  }

  /**
   * How long establishing a stream may take while a client waits for it (its initialize, or a
   * request on the gateway's own session): startup_timeout_ms, and never longer than timeout_ms.
   */
  private clientWaitMs(): number {
    const { startup_timeout_ms: startup, timeout_ms: timeout } = this.context.config;
    return Math.min(startup, timeout);
  }

  /**
   * A session the gateway owns is simply initialized again on a new stream (one attempt per
   * request that needs it). A client's session is rebuilt by replaying its initialize, with a few
   * attempts; when they all fail the client is told that its session is gone.
   */
  private async reconnect(): Promise<Connection> {
    if (!this.clientInitialize) {
      // Only ever asked for by a request (the gateway's own session is rebuilt lazily).
      await this.establish(true, this.clientWaitMs());
      return this.liveConnection();
    }
    const deadline = Date.now() + this.context.config.startup_timeout_ms;
    let wait = RECONNECT_FIRST_WAIT_MS;
    for (let attempt = 1; ; attempt++) {
      if (this.ended) throw this.endedError();
      try {
        // The replayed initialize's answer is discarded: the client already has one. Nobody waits
        // for the rebuilding itself (a request that comes meanwhile waits at most its deadline).
        await this.establish(true, this.context.config.startup_timeout_ms);
        this.context.logger.info({ attempt }, 'upstream session re-established');
        return this.liveConnection();
      } catch (error) {
        if (this.ended) throw error;
        this.context.logger.warn({ err: error, attempt }, 'could not re-establish the upstream session');
        if (attempt >= RECONNECT_ATTEMPTS || Date.now() + wait > deadline) {
          void this.close();
          this.handlers.onClose('upstream connection lost');
          throw this.closedError('The upstream connection was lost');
        }
      }
      await delay(wait);
      wait *= 2;
    }
  }

  /** The connection establish() has just made current, unless it has been lost already. */
  private liveConnection(): Connection {
    if (!this.current) throw this.closedError('The upstream closed the SSE stream');
    return this.current;
  }

  /**
   * A new stream and the initialize handshake on it, each within `limitMs`; the stream becomes the
   * current one.
   */
  private async establish(announce: boolean, limitMs: number): Promise<JsonRpcResponse> {
    const connection = await this.connect(limitMs);
    try {
      const response = await handshake(
        {
          request: (request, options) => this.requestOn(connection, request, options),
          send: (message) => this.post(connection, message, sendSignal(this.context.config)),
        },
        {
          initialize: this.clientInitialize,
          protocolVersion: SSE_PROTOCOL_VERSION,
          announce,
          timeoutMs: limitMs,
          onMessage: (message) => this.deliver(message),
        },
      );
      // A failed handshake is relayed to the client the first time; a reconnect needs a session.
      if (this.result && !('result' in response)) throw this.protocolError('refused the replayed initialize');
      if (this.ended) throw this.endedError();
      if (connection.lost) throw this.closedError('The upstream closed the SSE stream');
      this.current = connection;
      return response;
    } catch (error) {
      this.drop(connection);
      throw error;
    }
  }

  /** Opens the GET stream and waits (up to `limitMs`) for its `endpoint` event. */
  private async connect(limitMs: number): Promise<Connection> {
    const name = this.context.config.name;
    const connection: Connection = { abort: new AbortController(), endpoint: undefined, lost: false };
    this.connections.add(connection);
    const timer = setTimeout(
      () => connection.abort.abort(new UpstreamError('timeout', name, `Upstream '${name}' sent no endpoint within ${limitMs} ms`)),
      limitMs,
    );
    try {
      const response = await httpRequest(this.context, {
        method: 'GET',
        url: this.sseUrl,
        headers: requestHeaders(this.context, { accept: 'text/event-stream' }),
        signal: connection.abort.signal,
      });
      if (response.statusCode < 200 || response.statusCode >= 300) throw (await statusError(this.context, response, 'GET')).error;
      if (mediaType(response) !== 'text/event-stream') {
        await discard(response.body);
        throw this.protocolError(`answered the SSE GET with '${mediaType(response)}'`);
      }
      await new Promise<void>((announced, failed) => {
        readEvents(response.body, (event) => this.onEvent(connection, event, announced))
          .then(() => failed(this.closedError('The upstream closed the SSE stream')), failed)
          .finally(() => this.drop(connection));
      });
      return connection;
    } catch (error) {
      this.drop(connection);
      const reason: unknown = connection.abort.signal.reason;
      throw reason instanceof UpstreamError ? reason : asUpstreamError(error, name);
    } finally {
      clearTimeout(timer);
    }
  }

  /** One event on a stream: first the endpoint, then messages. */
  private onEvent(connection: Connection, event: SseEvent, announced: () => void): void {
    if (connection.endpoint === undefined) {
      if (event.event !== 'endpoint') return;
      connection.endpoint = this.endpointUrl(event.data);
      announced();
      return;
    }
    let messages: JsonRpcMessage[];
    try {
      messages = eventMessages(event, this.context.config.name, (text) => this.dropTooDeep(text));
    } catch (error) {
      // It cannot be matched to a request, and the stream still serves the others.
      this.context.logger.warn({ err: error }, 'dropped an upstream event that is not JSON-RPC');
      return;
    }
    for (const message of messages) this.dispatch(connection, message);
  }

  /**
   * The endpoint is relative to the SSE url. It must stay on the same origin: the POSTs carry the
   * configured credentials, which must never go to a host the operator did not configure.
   */
  private endpointUrl(data: string): URL {
    let endpoint: URL;
    try {
      endpoint = new URL(data.trim(), this.sseUrl);
    } catch {
      throw this.protocolError('sent an endpoint that is not a URL');
    }
    if (endpoint.origin !== this.sseUrl.origin) {
      this.context.logger.warn({ origin: endpoint.origin, expected: this.sseUrl.origin }, 'upstream endpoint on another origin');
      throw this.protocolError('sent an endpoint on another origin');
    }
    return endpoint;
  }

  /**
   * Replies go to their requests. The legacy transport cannot tell which request a server-to-client
   * request or a notification belongs to: with exactly one request in flight it is that one's,
   * otherwise the session's.
   */
  private dispatch(connection: Connection, message: JsonRpcMessage): void {
    const rest = this.route(message);
    if (!rest) return;
    const inFlight = [...this.correlator.inFlight()].filter((request) => request.owner === connection);
    this.deliver(rest, inFlight.length === 1 ? inFlight[0]!.onMessage : undefined);
  }

  /** A stream ended (or failed to start): its requests can never be answered now. */
  private drop(connection: Connection): void {
    if (connection.lost) return;
    connection.lost = true;
    connection.abort.abort();
    this.connections.delete(connection);
    this.correlator.failAll(this.closedError('The upstream closed the SSE stream'), connection);
    if (this.current !== connection) return;
    this.current = undefined;
    if (this.ended) return;
    this.context.logger.warn({ url: loggableUrl(this.sseUrl) }, 'upstream SSE stream lost');
    // A client's session is rebuilt now, so that its notifications resume without a request.
    if (this.clientInitialize) this.connection().catch(() => undefined);
  }

  private requestOn(connection: Connection, request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    const timeoutMs = options.timeoutMs ?? this.context.config.timeout_ms;
    const { wire, response } = this.correlator.begin(request, options, timeoutMs, connection);
    // The reply comes on the stream; the POST only says "accepted". A POST to a session the
    // server has forgotten may never be answered at all: the deadline aborts it too.
    const post = new Cancellation();
    const stop = (): void => post.abort(EXCHANGE_OVER);
    response.then(stop, stop);
    this.post(connection, wire, post).catch((error: unknown) => {
      const failure = asUpstreamError(error, this.context.config.name);
      this.correlator.fail(wire.id as number, failure);
      this.afterPostFailure(connection, failure);
    });
    return response;
  }

  /** POSTs one message to the stream's endpoint; resolves when the server accepted it (2xx). */
  private async post(connection: Connection, message: JsonRpcMessage, signal: StopSignal): Promise<void> {
    const name = this.context.config.name;
    if (connection.lost || !connection.endpoint) throw this.closedError('The upstream closed the SSE stream');
    const response = await httpRequest(this.context, {
      method: 'POST',
      url: connection.endpoint,
      // The message's `_meta` trace context, also as headers (src/protocol/trace-context.ts).
      headers: requestHeaders(this.context, { 'content-type': 'application/json', ...traceHeaders(message) }),
      body: JSON.stringify(message),
      signal,
    });
    if (response.statusCode >= 200 && response.statusCode < 300) return discard(response.body);
    const { error } = await statusError(this.context, response, 'POST');
    if (response.statusCode !== 404) throw error;
    throw new UpstreamError('session_expired', name, `Upstream '${name}' no longer knows the session`);
  }

  /**
   * A 404 means the server no longer knows this stream's session: the stream is dropped (after
   * the failed request got its own error) and a new one gives a new session.
   */
  private afterPostFailure(connection: Connection, failure: UpstreamError): void {
    if (failure.kind === 'session_expired') this.drop(connection);
  }

  /** The correlator's cancel callback (deadline or client abort): best effort, not awaited. */
  protected sendCancel(wireId: number, reason: string): void {
    const connection = this.current;
    if (!connection || this.ended) return;
    this.post(connection, cancelNotification(wireId, reason), sendSignal(this.context.config)).catch(() => undefined);
  }

  private closedError(message: string): UpstreamError {
    return new UpstreamError('closed', this.context.config.name, `${message} ('${this.context.config.name}')`);
  }
}
