/**
 * The upstream side of tool integrity: every message a server sends, on every transport and in
 * both eras (session messages, messages of a request in flight, a 2026-07-28 listen stream), is
 * shown to `seen` before it goes on. A decorator, like the circuit breaker: the transports do not
 * know about it. Tool integrity needs to see `notifications/tools/list_changed` and
 * `notifications/prompts/list_changed` whichever session or client they are meant for: after one,
 * the gateway no longer knows the server's current definitions, and checks them again before the
 * next call (src/integrity/guard.ts).
 */
import type { JsonRpcNotification, JsonRpcRequest, JsonRpcResponse } from '../jsonrpc/messages.js';
import { UpstreamError } from '../upstreams/errors.js';
import type {
  CallOptions,
  CloseOptions,
  EraVerdict,
  ResumeState,
  OpenSessionOptions,
  RequestOptions,
  ServerMessage,
  Upstream,
  UpstreamSession,
  UpstreamStatus,
} from '../upstreams/upstream.js';

export type MessageWatcher = (server: string, message: ServerMessage) => void;

/** Whether anything watches now (`[tool_integrity]` not off): while not, a request passes with no wrapper of its own. */
export type Watching = () => boolean;

/** `upstream`, every message it delivers shown to `seen` first. */
export function watchMessages(upstream: Upstream, seen: MessageWatcher, watching: Watching = () => true): Upstream {
  return new WatchedUpstream(upstream, seen, watching);
}

class WatchedUpstream implements Upstream {
  constructor(
    private readonly inner: Upstream,
    private readonly seen: MessageWatcher,
    private readonly watching: Watching,
  ) {}

  get config() {
    return this.inner.config;
  }

  get verdict(): EraVerdict | undefined {
    return this.inner.verdict;
  }

  verdictFor(forwardPath: string): EraVerdict | undefined {
    return this.inner.verdictFor ? this.inner.verdictFor(forwardPath) : this.inner.verdict;
  }

  start(): Promise<void> {
    return this.inner.start();
  }

  status(): UpstreamStatus {
    return this.inner.status();
  }

  era(options?: { forwardPath?: string; refresh?: boolean }): Promise<EraVerdict> {
    return this.inner.era(options);
  }

  async openSession(options: OpenSessionOptions): Promise<UpstreamSession> {
    const session = await this.inner.openSession(this.watched(options));
    return new WatchedSession(session, this.inner.config.name, this.seen, this.watching);
  }

  /** A sealed session another replica opened (src/replicas/seal.ts), watched as one opened here. */
  async resumeSession(state: Extract<ResumeState, { kind: 'http' }>, options: OpenSessionOptions): Promise<UpstreamSession> {
    if (!this.inner.resumeSession) throw new UpstreamError('protocol', this.inner.config.name, 'This session cannot be taken up here');
    const session = await this.inner.resumeSession(state, this.watched(options));
    return new WatchedSession(session, this.inner.config.name, this.seen, this.watching);
  }

  private watched(options: OpenSessionOptions): OpenSessionOptions {
    const name = this.inner.config.name;
    const handlers = options.handlers;
    return {
      ...options,
      handlers: {
        onMessage: (m) => {
          this.seen(name, m);
          handlers.onMessage(m);
        },
        onClose: (reason) => handlers.onClose(reason),
      },
    };
  }

  call(request: JsonRpcRequest, options: CallOptions): Promise<JsonRpcResponse> {
    if (!this.watching()) return this.inner.call(request, options);
    const name = this.inner.config.name;
    const onMessage = options.onMessage;
    return this.inner.call(request, {
      ...options,
      onMessage: (m) => {
        this.seen(name, m);
        onMessage(m);
      },
    });
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

class WatchedSession implements UpstreamSession {
  constructor(
    private readonly inner: UpstreamSession,
    private readonly server: string,
    private readonly seen: MessageWatcher,
    private readonly watching: Watching,
  ) {}

  get initializeResult(): JsonRpcResponse {
    return this.inner.initializeResult;
  }

  request(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    if (!this.watching()) return this.inner.request(request, options);
    const onMessage = options.onMessage;
    return this.inner.request(request, {
      ...options,
      onMessage: (m) => {
        this.seen(this.server, m);
        onMessage(m);
      },
    });
  }

  send(message: JsonRpcNotification | JsonRpcResponse): Promise<void> {
    return this.inner.send(message);
  }

  openEventStream(): Promise<void> {
    return this.inner.openEventStream();
  }

  closeEventStream(): void {
    this.inner.closeEventStream();
  }

  close(options?: CloseOptions): Promise<void> {
    return this.inner.close(options);
  }

  resumeState(): ResumeState | undefined {
    return this.inner.resumeState?.();
  }
}
