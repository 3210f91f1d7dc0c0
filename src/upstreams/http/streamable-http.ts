/**
 * The streamable HTTP upstream transport (MCP spec 2025-03-26 .. 2025-11-25, basic/transports):
 * every message is a POST to one endpoint, answered by 202, a JSON body or an SSE stream that
 * carries the response and whatever the server sends while handling the request; an optional
 * GET stream carries messages that belong to no request; DELETE ends the session.
 */
import type { HttpServerConfig } from '../../config/schema.js';
import { delay } from '../../delay.js';
import type { JsonRpcMessage, JsonRpcNotification, JsonRpcRequest, JsonRpcResponse } from '../../jsonrpc/messages.js';
import { LATEST_PROTOCOL_VERSION } from '../../protocol/versions.js';
import { traceHeaders } from '../../protocol/trace-context.js';
import { Cancellation } from '../cancellation.js';
import { cancelNotification } from '../correlator.js';
import { UpstreamError } from '../errors.js';
import type { OpenSessionOptions, RequestOptions, ResumeState } from '../upstream.js';
import { discard, parseMessages, readBody, readText, saysSessionUnknown, statusError } from './body.js';
import type { HttpContext } from './context.js';
import { handshake, negotiatedVersion } from './handshake.js';
import { ModernHttp } from './modern-http.js';
import {
  asUpstreamError,
  EXCHANGE_OVER,
  header,
  httpRequest,
  mediaType,
  requestHeaders,
  sendTimeoutMs,
  type HttpResponse,
  type StopSignal,
} from './request.js';
import { HttpSession } from './session.js';
import { eventMessages, readEvents, type SseEvent } from './sse-stream.js';
import { CLOSE_TIMEOUT_MS, HttpUpstream, type HttpUpstreamDeps } from './upstream.js';
import { loggableUrl, targetUrl } from './url.js';

/** Reconnect pace of the GET stream. */
const STREAM_RETRY_MIN_MS = 500;
const STREAM_RETRY_MAX_MS = 10_000;
/**
 * The shortest wait before resuming a request's stream, whatever `retry` the server asked for: a
 * server that asks for 0 and ends every stream at once must not make the gateway loop.
 */
const RESUME_FLOOR_MS = 100;
/** setTimeout's limit: a longer wait would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class StreamableHttpUpstream extends HttpUpstream {
  /** 2026-07-28 servers: the era probe and stateless calls (modern-http.ts). */
  protected readonly modern = new ModernHttp(this.context);
  /**
   * The url of every session opened without a forwarded path (the usual case): one URL for them
   * all rather than one parsed per session (a URL and its context are about 200 B, with its href).
   * Only read: undici takes its origin and path. Sessions with a forwarded path parse their own,
   * since a client chooses the path and a cache of them would grow as it pleases.
   */
  private baseUrl: URL | undefined;

  constructor(config: HttpServerConfig, deps: HttpUpstreamDeps) {
    super(config, deps, 'http');
  }

  /** A session another replica opened (sealed sessions): taken up by its id, without a handshake. */
  protected override takeUp(state: Extract<ResumeState, { kind: 'http' }>, options: OpenSessionOptions): StreamableHttpSession {
    const session = this.newSession(options);
    const version = state.version ?? LATEST_PROTOCOL_VERSION;
    session.resume(state, { jsonrpc: '2.0', id: options.initialize?.id ?? 0, result: { protocolVersion: version, capabilities: {} } });
    return session;
  }

  protected newSession(options: OpenSessionOptions): StreamableHttpSession {
    const { config } = this.context;
    const url =
      options.forwardPath === '' ? (this.baseUrl ??= targetUrl(config.url, '', config.name)) : targetUrl(config.url, options.forwardPath, config.name);
    return new StreamableHttpSession(this.context, options, url);
  }
}

function succeeded(response: HttpResponse): boolean {
  return response.statusCode >= 200 && response.statusCode < 300;
}

/** A session's standalone GET stream: `stop` ends it; `ready` settles once it is connected, refused or failed once. */
interface EventStream {
  readonly stop: Cancellation | undefined;
  readonly ready: Promise<void>;
}

/**
 * The GET stream of a session whose server answered it 405 (it has none): nothing to stop, ready.
 * One object for every such session, in place of its own stop and promise, which would otherwise
 * stay for the session's life only to say "asked already, do not ask again" until the client's
 * stream closes (a server without GET streams, like the `memory` bench's, had ~900 B per session
 * in them with an AbortController: its EventTarget, listener maps and a hidden class of its own).
 */
const NO_EVENT_STREAM: EventStream = { stop: undefined, ready: Promise.resolve() };

/**
 * What a POST that expects no answer (a notification, the client's reply) is aborted with at its
 * deadline, sendTimeoutMs() (request.ts): the reason AbortSignal.timeout() gives, which
 * abortError() makes an UpstreamError of kind 'timeout'. send() runs that deadline on a timer of
 * its own, cleared once the POST is done, rather than with sendSignal(): an AbortSignal.timeout()
 * keeps its timer (and, through a WeakRef, which scavenges treat as strong, its signal) until the
 * deadline, 30 s or more, or until a full GC finds the signal unreachable. Every session's
 * notifications/initialized left its signal, its listener maps and its timer to be promoted to the
 * old generation, as garbage that stayed until the next full GC.
 */
function sendTimedOut(): DOMException {
  return new DOMException('The operation was aborted due to timeout', 'TimeoutError');
}

/**
 * The reason given when the GET stream is closed. One shared object, as for EXCHANGE_OVER: it
 * only ends the exchange and is never shown.
 */
const EVENT_STREAM_CLOSED = new Error('the event stream is closed');

class StreamableHttpSession extends HttpSession {
  private readonly url: URL;
  /** Mcp-Session-Id; absent for a stateless server. */
  private sessionId: string | undefined;
  private protocolVersion: string | undefined;
  /** The headers of a POST, while sessionId and protocolVersion stay as they are. */
  private postHeaders: Record<string, string> | undefined;
  /** The initialize request must never be cancelled (spec: basic/utilities/cancellation). */
  private initializeWireId: number | undefined;
  /** The GET stream while open (or known to be refused: NO_EVENT_STREAM). */
  private eventStream: EventStream | undefined;
  /** The last event id of the server's GET stream: every GET after the first resumes from it (Last-Event-ID). */
  private readonly eventCursor: { lastEventId?: string } = {};

  constructor(
    context: HttpContext,
    options: OpenSessionOptions,
    /** targetUrl(config.url, options.forwardPath): possibly shared with other sessions, never changed. */
    url: URL,
  ) {
    super(context, options);
    this.url = url;
  }

  /** The server's own session, by its id: what another replica needs to take it up (resume()). */
  resumeState(): ResumeState {
    const state: ResumeState = { kind: 'http' };
    if (this.sessionId !== undefined) state.sid = this.sessionId;
    if (this.protocolVersion !== undefined) state.version = this.protocolVersion;
    return state;
  }

  /** Takes up a session another replica opened: no handshake, the server knows it already. */
  resume(state: { sid?: string; version?: string }, initializeResult: JsonRpcResponse): void {
    this.sessionId = state.sid;
    this.protocolVersion = state.version;
    this.postHeaders = undefined;
    this.result = initializeResult;
  }

  async open(initialize: JsonRpcRequest | undefined): Promise<void> {
    const response = await handshake(this, {
      initialize,
      protocolVersion: LATEST_PROTOCOL_VERSION,
      // The client sends its own notifications/initialized through send().
      announce: initialize === undefined,
      // A request a client waits for (its own initialize, or the gateway's for its request):
      // timeout_ms, as any request (finding 10 of issue 16).
      timeoutMs: this.context.config.timeout_ms,
      onMessage: (message) => this.deliver(message),
    });
    this.result = response;
  }

  request(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    if (this.ended) return Promise.reject(this.endedError());
    const timeoutMs = options.timeoutMs ?? this.context.config.timeout_ms;
    const { wire, response } = this.correlator.begin(request, options, timeoutMs, undefined);
    const wireId = wire.id as number;
    // The answer, the deadline or a cancellation all end the HTTP exchange too, unless its body
    // has been read already (the usual case: then there is nothing left to stop). The reason is
    // one shared object, because abort() without one builds a DOMException with a stack trace:
    // measurable when it happened on every request.
    const exchange = new Cancellation();
    const state = { read: false };
    const stop = (): void => {
      if (!state.read) exchange.abort(EXCHANGE_OVER);
    };
    response.then(stop, stop);
    this.exchange(wire, exchange, state).catch((error: unknown) => {
      this.correlator.fail(wireId, asUpstreamError(error, this.context.config.name));
    });
    if (request.method !== 'initialize') return response;
    this.initializeWireId = wireId;
    // Adopted before anyone sees the result, so that the next message carries the header.
    return response.then((result) => {
      this.protocolVersion = negotiatedVersion(result);
      this.postHeaders = undefined;
      return result;
    });
  }

  async send(message: JsonRpcNotification | JsonRpcResponse): Promise<void> {
    if (this.ended) throw this.endedError();
    const stop = new Cancellation();
    const deadline = setTimeout(() => stop.abort(sendTimedOut()), sendTimeoutMs(this.context.config));
    // Like AbortSignal.timeout()'s timer: it must not hold the process open.
    deadline.unref();
    try {
      const response = await this.post(message, stop);
      // 202 is the rule for notifications and responses; a body, if any, carries nothing for us.
      await discard(response.body);
    } catch (error) {
      throw this.sendFailed(error);
    } finally {
      clearTimeout(deadline);
    }
  }

  openEventStream(): Promise<void> {
    if (this.ended) return Promise.resolve();
    if (this.eventStream) return this.eventStream.ready;
    // An Cancellation rather than an AbortController, as for a request's exchange: an
    // AbortSignal (an EventTarget with its listener maps) held for the life of the stream is
    // several times the size (sendTimedOut() above says what else it costs).
    const stop = new Cancellation();
    let settle!: () => void;
    const ready = new Promise<void>((resolve) => (settle = resolve));
    this.eventStream = { stop, ready };
    void this.runEventStream(stop, settle).finally(settle);
    return ready;
  }

  closeEventStream(): void {
    this.eventStream?.stop?.abort(EVENT_STREAM_CLOSED);
    this.eventStream = undefined;
  }

  protected stopStreams(): void {
    this.closeEventStream();
  }

  /** A session the upstream gave an id is ended there too (unless it expired: then it is gone already). */
  protected override async leave(): Promise<void> {
    if (this.sessionId !== undefined) await this.deleteSession();
  }

  /** One request's POST and the reading of its answer, until the response has arrived. */
  private async exchange(wire: JsonRpcRequest, signal: Cancellation, state: { read: boolean }): Promise<void> {
    const wireId = wire.id as number;
    const response = await this.post(wire, signal);
    if (wire.method === 'initialize') {
      this.sessionId = header(response, 'mcp-session-id');
      this.postHeaders = undefined;
    }
    if (response.statusCode === 202) {
      // No answer on this POST: it can only come on the GET stream; the deadline bounds the wait.
      await discard(response.body);
      return;
    }
    const name = this.context.config.name;
    const type = mediaType(response);
    if (type === 'application/json') {
      const text = await readBody(name, () => readText(response, name));
      state.read = true;
      for (const message of parseMessages(text, name)) this.dispatch(message, wireId);
      if (this.correlator.get(wireId) !== undefined) throw this.protocolError('answered without a response to the request');
    } else if (type === 'text/event-stream') {
      await this.readRequestStream(response, wireId, signal);
    } else {
      await discard(response.body);
      throw this.protocolError(`answered a request with content-type '${type}'`);
    }
  }

  /**
   * Reads a request's SSE stream until the response to it has come or the request is over.
   *
   * A server may end the stream before answering once it has sent an event id, and deliver the
   * rest on a GET that resumes after the last id it sent, `retry` ms later (spec 2025-11-25,
   * "Resumability and Redelivery"; SEP-1699 polling). The resumed streams are read like the first
   * one, for as long as the server keeps ending them. The request's deadline (restarted by
   * progress) and its cancellation abort `stop`, which ends a pause or a resumed GET at once.
   */
  private async readRequestStream(response: HttpResponse, wireId: number, stop: Cancellation): Promise<void> {
    const name = this.context.config.name;
    // Per SSE exchange, not per event: the cursor and three closures.
    const cursor: { lastEventId: string | undefined; retryMs: number | undefined; messages: number } = {
      lastEventId: undefined,
      retryMs: undefined,
      messages: 0,
    };
    const onEvent = (event: SseEvent): boolean => {
      // An empty id resets it: nothing to resume from (WHATWG HTML, "Server-sent events").
      if (event.id !== undefined) cursor.lastEventId = event.id === '' ? undefined : event.id;
      for (const message of eventMessages(event, name, onTooDeep)) {
        cursor.messages++;
        this.dispatch(message, wireId);
      }
      // Stop at the response: the stream carries nothing else for this request.
      return this.correlator.get(wireId) !== undefined;
    };
    const onRetry = (ms: number): void => {
      cursor.retryMs = ms;
    };
    const onTooDeep = (text: string): void => this.dropTooDeep(text);
    await readBody(name, () => readEvents(response.body, onEvent, onRetry));

    // Resumed streams in a row that carried no message (a server that ends them at once, or holds
    // them and sends nothing): each doubles the wait before the next.
    let idle = 0;
    while (this.correlator.get(wireId) !== undefined) {
      const lastEventId = cursor.lastEventId;
      if (lastEventId === undefined) throw this.endedEarly();
      const wait = resumeDelay(cursor.retryMs, idle);
      this.context.logger.debug({ id: wireId, waitMs: wait }, 'upstream ended a request stream before answering; resuming it');
      await delay(wait, { signal: stop, unref: false });
      if (this.correlator.get(wireId) === undefined) return;
      const resumed = await httpRequest(this.context, {
        method: 'GET',
        url: this.url,
        headers: this.headers({ accept: 'text/event-stream', 'last-event-id': lastEventId }),
        signal: stop,
      });
      if (resumed.statusCode === 405) {
        // The server has no GET stream: what it did not send on the request's stream never comes.
        await discard(resumed.body);
        this.context.logger.warn({ status: 405 }, 'upstream ended a request stream before answering and cannot resume it');
        throw this.endedEarly();
      }
      // 404: the session is gone (expired here, as for a POST).
      await this.checkStatus(resumed, 'GET resuming a request stream');
      if (mediaType(resumed) !== 'text/event-stream') {
        await discard(resumed.body);
        throw this.protocolError(`answered the GET resuming a request stream with '${mediaType(resumed)}'`);
      }
      const before = cursor.messages;
      await readBody(name, () => readEvents(resumed.body, onEvent, onRetry));
      idle = cursor.messages === before ? idle + 1 : 0;
    }
  }

  private endedEarly(): UpstreamError {
    const name = this.context.config.name;
    return new UpstreamError('closed', name, `Upstream '${name}' ended the stream before answering`);
  }

  /**
   * Routes one message from upstream. What arrives on a request's stream and is not a reply
   * belongs to that request (a sampling request, a log line made while handling it); the rest
   * belongs to the session.
   */
  private dispatch(message: JsonRpcMessage, ownerWireId: number | undefined): void {
    const rest = this.route(message);
    if (!rest) return;
    const owner = ownerWireId === undefined ? undefined : this.correlator.get(ownerWireId);
    this.deliver(rest, owner?.onMessage);
  }

  /** A POST of one message with the session's headers; resolves with a 2xx response. */
  private async post(message: JsonRpcMessage, signal: StopSignal): Promise<HttpResponse> {
    // The same for every POST of the session until initialize settles its id and version: built
    // once, not per request (undici only reads it).
    const headers = (this.postHeaders ??= this.headers({
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
    }));
    // The message's `_meta` trace context, also as headers (src/protocol/trace-context.ts).
    const trace = traceHeaders(message);
    const response = await httpRequest(this.context, {
      method: 'POST',
      url: this.url,
      headers: trace ? { ...headers, ...trace } : headers,
      body: JSON.stringify(message),
      signal,
    });
    if (!succeeded(response)) await this.checkStatus(response, 'POST');
    return response;
  }

  /** The session's headers: configured ones, then Mcp-Session-Id and MCP-Protocol-Version. */
  private headers(own: Record<string, string | undefined>): Record<string, string> {
    return requestHeaders(this.context, {
      ...own,
      'mcp-session-id': this.sessionId,
      // Not on initialize: the version is negotiated by it (spec 2025-06-18, Protocol Version Header).
      'mcp-protocol-version': this.protocolVersion,
    });
  }

  /** Throws for a response that is not 2xx; a session the upstream no longer knows ends here. */
  private async checkStatus(response: HttpResponse, what: string): Promise<void> {
    if (succeeded(response)) return;
    const { error, body } = await statusError(this.context, response, what);
    const hadSession = this.sessionId !== undefined;
    if (hadSession && (response.statusCode === 404 || saysSessionUnknown(response.statusCode, body))) {
      this.expire();
      throw this.endedError();
    }
    throw error;
  }

  /** The upstream dropped the session (spec: Session Management, 404 on Mcp-Session-Id). */
  private expire(): void {
    if (this.ended) return;
    this.end = 'expired';
    this.release();
    this.context.logger.info('upstream session expired');
    this.handlers.onClose('upstream session expired');
  }

  protected endedError(): UpstreamError {
    const name = this.context.config.name;
    return this.end === 'expired'
      ? new UpstreamError('session_expired', name, `Upstream '${name}' no longer knows the session`)
      : new UpstreamError('closed', name, `The session with upstream '${name}' is closed`);
  }

  /** The correlator's cancel callback (deadline or client abort): best effort, not awaited. */
  protected sendCancel(wireId: number, reason: string): void {
    if (this.ended || wireId === this.initializeWireId) return;
    this.send(cancelNotification(wireId, reason)).catch(() => undefined);
  }

  /** DELETE ends the session upstream (spec: Session Management); 404 and 405 are fine. */
  private async deleteSession(): Promise<void> {
    try {
      const response = await httpRequest(this.context, {
        method: 'DELETE',
        url: this.url,
        headers: this.headers({}),
        signal: AbortSignal.timeout(CLOSE_TIMEOUT_MS),
      });
      await discard(response.body);
      this.context.logger.debug({ status: response.statusCode }, 'upstream session deleted');
    } catch (error) {
      this.context.logger.debug({ err: error }, 'could not delete the upstream session');
    }
  }

  /**
   * The standalone GET stream (spec: "Listening for Messages from the Server"), kept open until
   * closeEventStream(): reconnects with backoff and resumes with Last-Event-ID when the server
   * gave ids.
   */
  private async runEventStream(stop: Cancellation, settled: () => void): Promise<void> {
    // The session's, not the stream's: a stream closed with its client's and opened again with the
    // next one resumes where the last one stopped, so what the server sent meanwhile is not lost.
    const cursor = this.eventCursor;
    let wait = STREAM_RETRY_MIN_MS;
    while (!stop.aborted && !this.ended) {
      try {
        const outcome = await this.readEventStream(stop, cursor, () => {
          wait = STREAM_RETRY_MIN_MS;
          settled();
        });
        if (outcome === 'unsupported') {
          // Not asked again while the client's stream stays open, as before; what marks it is shared.
          if (this.eventStream?.stop === stop) this.eventStream = NO_EVENT_STREAM;
          return;
        }
        this.context.logger.debug('upstream event stream ended; reconnecting');
      } catch (error) {
        settled();
        if (stop.aborted || this.ended) return;
        this.context.logger.warn({ err: error }, 'upstream event stream failed; reconnecting');
      }
      // Unref'd: a backoff must not hold the process open.
      await delay(wait, { signal: stop });
      wait = Math.min(wait * 2, STREAM_RETRY_MAX_MS);
    }
  }

  private async readEventStream(signal: Cancellation, cursor: { lastEventId?: string }, connected: () => void): Promise<'unsupported' | 'ended'> {
    const response = await httpRequest(this.context, {
      method: 'GET',
      url: this.url,
      headers: this.headers({ accept: 'text/event-stream', 'last-event-id': cursor.lastEventId }),
      signal,
    });
    if (response.statusCode === 405) {
      await discard(response.body);
      this.context.logger.debug({ url: loggableUrl(this.url) }, 'upstream offers no event stream');
      return 'unsupported';
    }
    await this.checkStatus(response, 'GET');
    if (mediaType(response) !== 'text/event-stream') {
      await discard(response.body);
      throw this.protocolError(`answered the event stream GET with '${mediaType(response)}'`);
    }
    connected();
    const onTooDeep = (text: string): void => this.dropTooDeep(text);
    await readEvents(response.body, (event) => {
      if (event.id !== undefined) cursor.lastEventId = event.id;
      for (const message of eventMessages(event, this.context.config.name, onTooDeep)) this.dispatch(message, undefined);
    });
    return 'ended';
  }
}

/**
 * How long to wait before resuming a request's stream: the server's `retry` (else
 * STREAM_RETRY_MIN_MS), never under RESUME_FLOOR_MS; doubled for each resumed stream in a row
 * that carried no message, up to STREAM_RETRY_MAX_MS or the server's own `retry` when longer. The
 * spec makes `retry` the least a client waits; waiting more after a failed attempt is what
 * WHATWG's reconnection allows ("exponential backoff").
 */
function resumeDelay(retryMs: number | undefined, idle: number): number {
  const base = Math.min(Math.max(retryMs ?? STREAM_RETRY_MIN_MS, RESUME_FLOOR_MS), MAX_TIMER_MS);
  return idle === 0 ? base : Math.max(base, Math.min(base * 2 ** idle, STREAM_RETRY_MAX_MS));
}
