/**
 * Matches replies to requests on a connection that several clients share.
 *
 * Every request gets a fresh numeric id on the wire, and its progress token (when it has one) is
 * replaced by that same number. Replies and progress notifications are matched back by it, and the
 * client's own id and token are restored. Two clients that both send `{"id":1}` through one stdio
 * child therefore never receive each other's replies (the earlier gateway's bug, and supergateway
 * #18). The correlator also owns each request's deadline and its cancellation.
 */
import { type JsonRpcId, type JsonRpcNotification, type JsonRpcRequest, type JsonRpcResponse } from '../jsonrpc/messages.js';
import { UpstreamError } from './errors.js';
import { IdTable } from './id-table.js';
import type { RequestOptions, ServerMessage } from './upstream.js';

/** A request on its way: what the transport writes, and what the core waits for. */
export interface Outgoing {
  /** The request as it goes on the wire: gateway id, gateway progress token. */
  wire: JsonRpcRequest;
  response: Promise<JsonRpcResponse>;
}

/** What a transport can learn about a request in flight (used to route server-to-client requests). */
export interface InFlight<Owner> {
  readonly wireId: number;
  /** The id the request came with (restored on its response). */
  readonly clientId: JsonRpcId;
  readonly method: string;
  readonly owner: Owner;
  readonly startedAt: number;
  readonly onMessage: (message: ServerMessage) => void;
  /** The request's own client capabilities (RequestOptions.capabilities), when it has them. */
  readonly capabilities: Record<string, unknown> | undefined;
}

interface Pending<Owner> extends InFlight<Owner> {
  readonly clientToken: string | number | undefined;
  readonly resolve: (r: JsonRpcResponse) => void;
  readonly reject: (e: UpstreamError) => void;
  timer: NodeJS.Timeout | undefined;
  cleanup: (() => void) | undefined;
}

export class Correlator<Owner = undefined> {
  /** By wire id; not a Map: see id-table.ts. */
  private readonly pending: IdTable<Pending<Owner>>;

  constructor(
    private readonly server: string,
    /** Writes `notifications/cancelled` for a wire id; called on timeout and on abort. */
    private readonly sendCancel: (wireId: number, reason: string) => void,
    /** The first wire id (IdTable). */
    firstId = 1,
  ) {
    this.pending = new IdTable<Pending<Owner>>(undefined, firstId);
  }

  get size(): number {
    return this.pending.size;
  }

  /** The requests in flight, oldest first. */
  inFlight(): Array<InFlight<Owner>> {
    return this.pending.ordered();
  }

  /**
   * Registers a request and returns its wire form. The caller writes `wire`; if writing fails it
   * calls fail(wire.id, error).
   */
  begin(request: JsonRpcRequest, options: RequestOptions, timeoutMs: number, owner: Owner): Outgoing {
    const wireId = this.pending.claim();
    const params = request.params;
    const meta = params?.['_meta'] as Record<string, unknown> | undefined;
    const clientToken = meta?.['progressToken'] as string | number | undefined;
    let wireParams = params;
    if (clientToken !== undefined && meta) {
      wireParams = { ...params, _meta: { ...meta, progressToken: wireId } };
    }
    const wire: JsonRpcRequest = { jsonrpc: '2.0', id: wireId, method: request.method };
    if (wireParams !== undefined) wire.params = wireParams;

    const response = new Promise<JsonRpcResponse>((resolve, reject) => {
      const entry: Pending<Owner> = {
        wireId,
        method: request.method,
        owner,
        startedAt: Date.now(),
        onMessage: options.onMessage,
        capabilities: options.capabilities,
        clientId: request.id,
        clientToken,
        resolve,
        reject,
        timer: undefined,
        cleanup: undefined,
      };
      if (timeoutMs > 0) {
        entry.timer = setTimeout(() => {
          this.settle(wireId, new UpstreamError('timeout', this.server, `Upstream '${this.server}' did not answer within ${timeoutMs} ms`));
          this.sendCancel(wireId, 'timeout');
        }, timeoutMs);
      }
      const signal = options.signal;
      if (signal) {
        const onAbort = (): void => {
          if (this.pending.get(wireId) === undefined) return;
          this.settle(wireId, new UpstreamError('cancelled', this.server, 'Request cancelled by the client'));
          this.sendCancel(wireId, 'cancelled by the client');
        };
        if (signal.aborted) queueMicrotask(onAbort);
        else {
          signal.addEventListener('abort', onAbort, { once: true });
          entry.cleanup = () => signal.removeEventListener('abort', onAbort);
        }
      }
      this.pending.set(wireId, entry);
    });
    return { wire, response };
  }

  /** Delivers a reply from upstream. False when no request in flight has its id. */
  resolve(message: JsonRpcResponse): boolean {
    const entry = this.pending.get(message.id);
    if (!entry) return false;
    this.drop(entry);
    message.id = entry.clientId;
    entry.resolve(message);
    return true;
  }

  /**
   * Routes a notification that belongs to a request in flight (progress, by its token) to that
   * request, with the client's token restored. False when it belongs to none.
   */
  routeNotification(message: JsonRpcNotification): boolean {
    if (message.method !== 'notifications/progress') return false;
    const token = message.params?.['progressToken'];
    if (typeof token !== 'number') return false;
    const entry = this.pending.get(token);
    if (!entry || entry.clientToken === undefined) return false;
    entry.timer?.refresh();
    message.params = { ...message.params, progressToken: entry.clientToken };
    entry.onMessage(message);
    return true;
  }

  /** The request in flight with this wire id, if any. */
  get(wireId: unknown): InFlight<Owner> | undefined {
    return this.pending.get(wireId);
  }

  /**
   * Ends a request's deadline: it runs until it is answered or cancelled (a 2026-07-28
   * `subscriptions/listen` once its stream has started).
   */
  endDeadline(wireId: number): void {
    const entry = this.pending.get(wireId);
    if (entry?.timer) clearTimeout(entry.timer);
    if (entry) entry.timer = undefined;
  }

  /** Fails one request (a write that did not go through). */
  fail(wireId: number, error: UpstreamError): void {
    this.settle(wireId, error);
  }

  /** Fails every request in flight, or those of one owner. */
  failAll(error: UpstreamError, owner?: Owner): void {
    for (const entry of this.pending.ordered()) {
      if (owner === undefined || entry.owner === owner) this.settle(entry.wireId, error);
    }
  }

  private settle(wireId: number, error: UpstreamError): void {
    const entry = this.pending.get(wireId);
    if (!entry) return;
    this.drop(entry);
    entry.reject(error);
  }

  private drop(entry: Pending<Owner>): void {
    this.pending.delete(entry.wireId);
    if (entry.timer) clearTimeout(entry.timer);
    entry.cleanup?.();
  }
}

/** The `notifications/cancelled` a transport writes for a wire id. */
export function cancelNotification(wireId: number, reason: string): JsonRpcNotification {
  return { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: wireId, reason } };
}
