/**
 * The base of a legacy-era HTTP session, streamable HTTP's (streamable-http.ts) and HTTP+SSE's
 * (sse.ts) alike: what the two share whatever carries their messages. It holds the session's
 * handlers, its initialize answer, its requests in flight (one correlator: deadlines, cancellation,
 * progress), the routing of what the server sends (replies to their request, the rest to the
 * request it belongs to or to the session), and the one way a session ends: every request in
 * flight failed, the upstream told to forget it, then whatever else the transport does to leave.
 */
import type { JsonRpcMessage, JsonRpcNotification, JsonRpcRequest, JsonRpcResponse } from '../../jsonrpc/messages.js';
import { isNotification, isResponse } from '../../jsonrpc/messages.js';
import type { Logger } from '../../observability/logger.js';
import { Correlator } from '../correlator.js';
import { wireIdStart } from '../id-table.js';
import { UpstreamError } from '../errors.js';
import { dropTooDeep, failInFlight } from '../inbound.js';
import type { CloseOptions, OpenSessionOptions, RequestOptions, ServerMessage, SessionHandlers, UpstreamSession } from '../upstream.js';
import type { HttpContext } from './context.js';
import { asUpstreamError } from './request.js';

/** open until close(); 'expired' when the upstream no longer knows the session (streamable HTTP's 404). */
export type SessionEnd = 'open' | 'expired' | 'closed';

/** Where a message the server sends outside a reply goes: a request's own handler or the session's. */
type MessageHandler = (message: ServerMessage) => void;

/**
 * A session before it is usable: open() runs the initialize handshake. `Owner` is what each request
 * in flight is tagged with (HTTP+SSE: the stream it was posted on, so that losing a stream fails
 * exactly its requests).
 */
export abstract class HttpSession<Owner = undefined> implements UpstreamSession {
  /** The answer to the initialize, once open() has had it. */
  protected result: JsonRpcResponse | undefined;
  protected readonly handlers: SessionHandlers;
  protected readonly correlator: Correlator<Owner>;
  protected end: SessionEnd = 'open';

  constructor(
    protected readonly context: HttpContext,
    options: OpenSessionOptions,
  ) {
    this.handlers = options.handlers;
    this.correlator = new Correlator(context.config.name, (wireId, reason) => this.sendCancel(wireId, reason), options.shared ? wireIdStart() : 1);
  }

  get initializeResult(): JsonRpcResponse {
    if (!this.result) throw new Error('the session is not initialized');
    return this.result;
  }

  /** Runs the initialize handshake (the client's initialize, or the gateway's own when undefined). */
  abstract open(initialize: JsonRpcRequest | undefined): Promise<void>;
  abstract request(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse>;
  abstract send(message: JsonRpcNotification | JsonRpcResponse): Promise<void>;
  abstract openEventStream(): Promise<void>;
  abstract closeEventStream(): void;

  /**
   * Ends the session: streams stopped, requests in flight failed, then leave() unless it expired
   * or another replica may still serve it (`keepUpstream`).
   */
  async close(options?: CloseOptions): Promise<void> {
    if (this.end === 'closed') return;
    const expired = this.end === 'expired';
    this.end = 'closed';
    this.release();
    if (!expired && options?.keepUpstream !== true) await this.leave();
  }

  /** True once the session has been closed or has expired: nothing more goes upstream. */
  protected get ended(): boolean {
    return this.end !== 'open';
  }

  /** Stops whatever the session reads from (its streams), at close or expiry. */
  protected abstract stopStreams(): void;

  /** The error of a request made to, or in flight on, a session that has ended. */
  protected abstract endedError(): UpstreamError;

  /** The correlator's cancel callback (deadline or client abort): best effort, not awaited. */
  protected abstract sendCancel(wireId: number, reason: string): void;

  /** What else closing takes once the session is released (streamable HTTP: the DELETE). Never throws. */
  protected async leave(): Promise<void> {}

  /** The session has ended (closed or expired): its streams stop, its requests fail, the upstream forgets it. */
  protected release(): void {
    this.stopStreams();
    this.correlator.failAll(this.endedError());
    this.context.forget(this);
  }

  /**
   * The first routing step for every message from upstream (routeReplies). Returns what is left to
   * deliver (notifications and server-to-client requests), or undefined when it has been dealt with.
   */
  protected route(message: JsonRpcMessage): ServerMessage | undefined {
    return routeReplies(this.correlator, message, this.context.logger);
  }

  /** Hands a server message to `target` (the handler of the request it belongs to), else to the session's. */
  protected deliver(message: ServerMessage, target: MessageHandler = this.handlers.onMessage): void {
    deliver(target, message, this.context.logger);
  }

  /**
   * An event nested too deep (inbound.ts): the request it answers fails, anything else is dropped;
   * the stream goes on.
   */
  protected dropTooDeep(text: string): void {
    dropTooDeep(text, this.context.config.name, this.context.logger, failInFlight(this.correlator));
  }

  /** A message that could not be sent (send()): logged, and returned as an UpstreamError to throw. */
  protected sendFailed(error: unknown): UpstreamError {
    const failure = asUpstreamError(error, this.context.config.name);
    this.context.logger.warn({ err: failure, kind: failure.kind }, 'could not send a message upstream');
    return failure;
  }

  protected protocolError(what: string): UpstreamError {
    const name = this.context.config.name;
    return new UpstreamError('protocol', name, `Upstream '${name}' ${what}`);
  }
}

/**
 * Responses go to their request, progress to the request that owns its token. Returns what is
 * left to deliver (notifications and server-to-client requests), or undefined when the message
 * has been dealt with.
 */
function routeReplies<Owner>(correlator: Correlator<Owner>, message: JsonRpcMessage, logger: Logger): ServerMessage | undefined {
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
function deliver(target: MessageHandler, message: ServerMessage, logger: Logger): void {
  try {
    target(message);
  } catch (error) {
    logger.error({ err: error, method: message.method }, 'message handler threw');
  }
}
