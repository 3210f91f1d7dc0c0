/**
 * A legacy client's session in front of a modern (2026-07-28) server.
 *
 * The legacy client expects a session: an `initialize` answer, requests from the server while it
 * handles a call (sampling, elicitation, roots), a GET stream of notifications, `ping`,
 * `logging/setLevel`, `resources/subscribe`. The modern server has none of that: each request
 * stands alone with its context in `_meta`, it asks for input by answering `input_required`,
 * and change notifications come on a `subscriptions/listen` stream.
 *
 * `ModernBackedSession` is the session the gateway's core sees (the same `UpstreamSession` every
 * transport gives it), built on the upstream's stateless `call()`:
 *
 * - the answer to `initialize` comes from the server's `server/discover` result;
 * - each request gets the envelope: the protocol version, the capabilities and the client info
 *   the client gave in its `initialize`, the log level it set;
 * - an `input_required` answer becomes real requests to the client, one per input request, and
 *   the call is made again with their answers (`inputResponses`, `requestState`), up to
 *   MAX_ROUNDS times;
 * - `ping` and `logging/setLevel` are answered here; `resources/subscribe` and the GET stream
 *   become one `subscriptions/listen` stream, opened again when what it asks for changes;
 * - `notifications/cancelled` from the client cancels the call (over HTTP: its stream closes).
 */
import {
  ErrorCode,
  errorResponse,
  idKey,
  objectOf,
  type JsonRpcId,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from '../jsonrpc/messages.js';
import type { Logger } from '../observability/logger.js';
import { UpstreamError } from '../upstreams/errors.js';
import type { EraVerdict, RequestOptions, ResumeState, SessionHandlers, Upstream, UpstreamSession } from '../upstreams/upstream.js';
import { GATEWAY_NAME, GATEWAY_VERSION } from '../version.js';
import { MODERN_PROTOCOL_VERSION } from '../protocol/versions.js';
import { META } from '../protocol/modern.js';
import { LATEST_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS } from '../protocol/versions.js';
import { errorMessage } from '../error-message.js';

/** The most input rounds one call may take (the official SDK's default is 10). */
export const MAX_ROUNDS = 10;
/** Wait before a listen stream that ended unasked is opened again; doubled up to LISTEN_RETRY_MAX_MS. */
const LISTEN_RETRY_MS = 1_000;
const LISTEN_RETRY_MAX_MS = 30_000;

/** The members a modern result has that a legacy client has no use for. */
const MODERN_ONLY = ['resultType', 'ttlMs', 'cacheScope'];

/** The `initialize` answer a legacy client gets for a modern server, from its discover result. */
export function initializeFromDiscover(verdict: EraVerdict, requested: unknown, fallbackName: string): Record<string, unknown> {
  const discover = verdict.discover ?? {};
  const serverInfo = objectOf(objectOf(discover['_meta'])?.[META.serverInfo]) ?? objectOf(discover['serverInfo']) ?? { name: fallbackName, version: '' };
  const result: Record<string, unknown> = {
    protocolVersion: typeof requested === 'string' && SUPPORTED_PROTOCOL_VERSIONS.includes(requested) ? requested : LATEST_PROTOCOL_VERSION,
    capabilities: objectOf(discover['capabilities']) ?? {},
    serverInfo,
  };
  if (typeof discover['instructions'] === 'string') result['instructions'] = discover['instructions'];
  return result;
}

/** A modern result as a legacy client takes it. */
function toLegacyResponse(response: JsonRpcResponse): JsonRpcResponse {
  if (!('result' in response)) return response;
  const result = { ...response.result };
  for (const key of MODERN_ONLY) delete result[key];
  return { ...response, result };
}

interface PendingInput {
  resolve(result: Record<string, unknown>): void;
  reject(error: UpstreamError | { code: number; message: string }): void;
}

export class ModernBackedSession implements UpstreamSession {
  readonly initializeResult: JsonRpcResponse;
  private readonly envelope: Record<string, unknown>;
  private readonly capabilities: Record<string, unknown>;
  private logLevel: string | undefined;
  /** The client's calls in flight, by id: its notifications/cancelled aborts one. */
  private readonly calls = new Map<string, AbortController>();
  /** Requests sent to the client for an input round, by their id. */
  private readonly inputs = new Map<string, PendingInput>();
  private inputIds = 0;
  /** The resources the client subscribed to. */
  private readonly subscribed = new Set<string>();
  private listen: AbortController | undefined;
  private listenWanted = false;
  private listenRetryMs = LISTEN_RETRY_MS;
  private listenIds = 0;
  private closed = false;

  constructor(
    private readonly upstream: Upstream,
    private readonly verdict: EraVerdict,
    private readonly forwardPath: string,
    private readonly handlers: SessionHandlers,
    initialize: JsonRpcRequest | undefined,
    private readonly log: Logger,
    /** Who the session is for (OpenSessionOptions.owner): every call it makes carries it. */
    private readonly owner: string,
  ) {
    const params = initialize?.params ?? {};
    this.capabilities = objectOf(params['capabilities']) ?? {};
    this.envelope = {
      [META.protocolVersion]: verdict.version ?? MODERN_PROTOCOL_VERSION,
      [META.clientCapabilities]: this.capabilities,
      [META.clientInfo]: objectOf(params['clientInfo']) ?? { name: GATEWAY_NAME, version: GATEWAY_VERSION },
    };
    this.initializeResult = {
      jsonrpc: '2.0',
      id: initialize?.id ?? 0,
      result: initializeFromDiscover(verdict, params['protocolVersion'], upstream.config.name),
    };
  }

  async request(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    if (this.closed) throw new UpstreamError('closed', this.upstream.config.name, 'Session closed');
    switch (request.method) {
      case 'ping':
        return { jsonrpc: '2.0', id: request.id, result: {} };
      case 'logging/setLevel': {
        const level = request.params?.['level'];
        this.logLevel = typeof level === 'string' ? level : undefined;
        return { jsonrpc: '2.0', id: request.id, result: {} };
      }
      case 'resources/subscribe':
      case 'resources/unsubscribe': {
        const uri = request.params?.['uri'];
        if (typeof uri !== 'string') return errorResponse(request.id, ErrorCode.InvalidParams, 'Invalid params: uri must be a string');
        const had = this.subscribed.has(uri);
        if (request.method === 'resources/subscribe') this.subscribed.add(uri);
        else this.subscribed.delete(uri);
        if (had !== this.subscribed.has(uri)) this.relisten();
        return { jsonrpc: '2.0', id: request.id, result: {} };
      }
      default:
        return this.callWithRounds(request, options);
    }
  }

  async send(message: JsonRpcNotification | JsonRpcResponse): Promise<void> {
    if ('method' in message) {
      if (message.method === 'notifications/cancelled') {
        const id = message.params?.['requestId'];
        if (typeof id === 'string' || typeof id === 'number') this.calls.get(idKey(id))?.abort();
      }
      // Other client notifications (initialized, roots changed) have no modern counterpart.
      return;
    }
    const key = typeof message.id === 'string' || typeof message.id === 'number' ? String(message.id) : '';
    const pending = this.inputs.get(key);
    if (!pending) return;
    this.inputs.delete(key);
    if ('result' in message) pending.resolve(message.result);
    else pending.reject(message.error);
  }

  async openEventStream(): Promise<void> {
    this.listenWanted = true;
    if (!this.listen) this.relisten();
  }

  closeEventStream(): void {
    this.listenWanted = false;
    this.listen?.abort();
    this.listen = undefined;
  }

  /** The server keeps nothing per session: another replica opens it again as it was opened here. */
  resumeState(): ResumeState {
    return { kind: 'reopen' };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.closeEventStream();
    for (const controller of this.calls.values()) controller.abort();
    this.calls.clear();
    for (const pending of this.inputs.values()) pending.reject(new UpstreamError('closed', this.upstream.config.name, 'Session closed'));
    this.inputs.clear();
  }

  /** A call, and the input rounds it takes: each `input_required` becomes requests to the client. */
  private async callWithRounds(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    const controller = new AbortController();
    const key = idKey(request.id);
    this.calls.set(key, controller);
    const onClientAbort = (): void => controller.abort();
    options.signal?.addEventListener('abort', onClientAbort, { once: true });
    try {
      let params: Record<string, unknown> = { ...request.params, _meta: this.metaFor(request) };
      for (let round = 1; ; round++) {
        const callOptions = {
          forwardPath: this.forwardPath,
          owner: this.owner,
          signal: controller.signal,
          onMessage: (m: JsonRpcNotification) => options.onMessage(m),
          ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
        };
        const response = await this.upstream.call({ jsonrpc: '2.0', id: request.id, method: request.method, params }, callOptions);
        if (!('result' in response) || response.result['resultType'] !== 'input_required') return toLegacyResponse(response);
        if (round >= MAX_ROUNDS) {
          return errorResponse(request.id, ErrorCode.InternalError, `Upstream '${this.upstream.config.name}' asked for input more than ${MAX_ROUNDS} times`);
        }
        const answers = await this.askClient(response.result['inputRequests'], options, controller.signal);
        if ('error' in answers) return errorResponse(request.id, answers.error.code, answers.error.message);
        params = { ...params, inputResponses: answers.inputResponses };
        if (response.result['requestState'] !== undefined) params['requestState'] = response.result['requestState'];
        else delete params['requestState'];
      }
    } catch (err) {
      if (controller.signal.aborted && !(err instanceof UpstreamError && err.kind === 'cancelled')) {
        throw new UpstreamError('cancelled', this.upstream.config.name, 'Request cancelled by the client');
      }
      throw err;
    } finally {
      this.calls.delete(key);
      options.signal?.removeEventListener('abort', onClientAbort);
    }
  }

  /** The request's `_meta`: the client's own keys, then the session's envelope. */
  private metaFor(request: JsonRpcRequest): Record<string, unknown> {
    const meta: Record<string, unknown> = { ...objectOf(request.params?.['_meta']), ...this.envelope };
    if (this.logLevel !== undefined) meta[META.logLevel] = this.logLevel;
    return meta;
  }

  /**
   * Sends each input request to the client as a real request of this call (on its response
   * stream when it has one) and collects the answers. An error answer ends the call with it.
   */
  private async askClient(
    inputRequests: unknown,
    options: RequestOptions,
    signal: AbortSignal,
  ): Promise<{ inputResponses: Record<string, unknown> } | { error: { code: number; message: string } }> {
    const entries = Object.entries(objectOf(inputRequests) ?? {});
    const inputResponses: Record<string, unknown> = {};
    try {
      await Promise.all(
        entries.map(async ([key, value]) => {
          const asked = objectOf(value);
          const method = asked?.['method'];
          if (typeof method !== 'string')
            throw { code: ErrorCode.InternalError, message: `Upstream '${this.upstream.config.name}' sent an input request without a method` };
          const params = objectOf(asked?.['params']);
          inputResponses[key] = await this.ask(method, params, options, signal);
        }),
      );
    } catch (err) {
      if (err instanceof UpstreamError) throw err;
      const error = objectOf(err);
      return {
        error: {
          code: typeof error?.['code'] === 'number' ? error['code'] : ErrorCode.InternalError,
          message: typeof error?.['message'] === 'string' ? error['message'] : 'The client refused the input request',
        },
      };
    }
    return { inputResponses };
  }

  private ask(method: string, params: Record<string, unknown> | undefined, options: RequestOptions, signal: AbortSignal): Promise<Record<string, unknown>> {
    const id: JsonRpcId = `gateway-input-${++this.inputIds}`;
    return new Promise((resolve, reject) => {
      const key = String(id);
      const onAbort = (): void => {
        this.inputs.delete(key);
        reject(new UpstreamError('cancelled', this.upstream.config.name, 'Request cancelled by the client'));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      this.inputs.set(key, {
        resolve: (result) => {
          signal.removeEventListener('abort', onAbort);
          resolve(result);
        },
        reject: (error) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      });
      const message: JsonRpcRequest = params === undefined ? { jsonrpc: '2.0', id, method } : { jsonrpc: '2.0', id, method, params };
      options.onMessage(message);
    });
  }

  /**
   * (Re)opens the listen stream for what the client wants: list changes the server announces
   * while its GET stream is open, and updates of the resources it subscribed to.
   */
  private relisten(): void {
    this.listen?.abort();
    this.listen = undefined;
    const notifications = this.filter();
    if (this.closed || Object.keys(notifications).length === 0) return;
    const controller = new AbortController();
    this.listen = controller;
    const request: JsonRpcRequest = {
      jsonrpc: '2.0',
      id: `gateway-listen-${++this.listenIds}`,
      method: 'subscriptions/listen',
      params: { notifications, _meta: { ...this.envelope } },
    };
    const onMessage = (message: JsonRpcNotification): void => {
      if (message.method === 'notifications/subscriptions/acknowledged') {
        this.listenRetryMs = LISTEN_RETRY_MS;
        return;
      }
      const params = message.params;
      const meta = objectOf(params?.['_meta']);
      if (meta && META.subscriptionId in meta) {
        const rest = { ...meta };
        delete rest[META.subscriptionId];
        const stripped: Record<string, unknown> = { ...params };
        if (Object.keys(rest).length > 0) stripped['_meta'] = rest;
        else delete stripped['_meta'];
        this.handlers.onMessage({ jsonrpc: '2.0', method: message.method, params: stripped });
        return;
      }
      this.handlers.onMessage(message);
    };
    // A listen has no deadline: it lasts until it is closed.
    this.upstream
      .call(request, { forwardPath: this.forwardPath, owner: this.owner, signal: controller.signal, timeoutMs: 0, onMessage })
      .catch((err: unknown) => this.log.debug({ err: errorMessage(err) }, 'listen stream ended'))
      .finally(() => {
        if (this.listen !== controller || controller.signal.aborted || this.closed) return;
        // The server ended it: open it again after a while, at a slower pace each time.
        this.listen = undefined;
        const wait = this.listenRetryMs;
        this.listenRetryMs = Math.min(this.listenRetryMs * 2, LISTEN_RETRY_MAX_MS);
        setTimeout(() => {
          if (!this.listen && !this.closed) this.relisten();
        }, wait).unref();
      });
  }

  private filter(): Record<string, unknown> {
    const capabilities = objectOf(this.verdict.discover?.['capabilities']) ?? {};
    const announces = (name: string, flag: string): boolean => objectOf(capabilities[name])?.[flag] === true;
    const filter: Record<string, unknown> = {};
    if (this.listenWanted) {
      if (announces('tools', 'listChanged')) filter['toolsListChanged'] = true;
      if (announces('prompts', 'listChanged')) filter['promptsListChanged'] = true;
      if (announces('resources', 'listChanged')) filter['resourcesListChanged'] = true;
    }
    if (this.subscribed.size > 0) filter['resourceSubscriptions'] = [...this.subscribed];
    return filter;
  }
}
