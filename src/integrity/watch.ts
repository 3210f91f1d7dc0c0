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
import type {
  CallOptions,
  EraVerdict,
  OpenSessionOptions,
  RequestOptions,
  ServerMessage,
  Upstream,
  UpstreamSession,
  UpstreamStatus,
} from '../upstreams/upstream.js';

export type MessageWatcher = (server: string, message: ServerMessage) => void;

/** `upstream`, every message it delivers shown to `seen` first. */
export function watchMessages(upstream: Upstream, seen: MessageWatcher): Upstream {
  return new WatchedUpstream(upstream, seen);
}

class WatchedUpstream implements Upstream {
  constructor(
    private readonly inner: Upstream,
    private readonly seen: MessageWatcher,
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
    const name = this.inner.config.name;
    const handlers = options.handlers;
    const session = await this.inner.openSession({
      ...options,
      handlers: {
        onMessage: (m) => {
          this.seen(name, m);
          handlers.onMessage(m);
        },
        onClose: (reason) => handlers.onClose(reason),
      },
    });
    return new WatchedSession(session, name, this.seen);
  }

  call(request: JsonRpcRequest, options: CallOptions): Promise<JsonRpcResponse> {
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
  ) {}

  get initializeResult(): JsonRpcResponse {
    return this.inner.initializeResult;
  }

  request(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
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

  close(): Promise<void> {
    return this.inner.close();
  }
}
