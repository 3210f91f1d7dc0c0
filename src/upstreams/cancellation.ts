/**
 * Cancelling one request in flight. The transports take a `CancelSignal`: what they use of an
 * AbortSignal (`aborted`, `reason`, one 'abort' listener added and removed), which an AbortSignal
 * is as well. The gateway makes a `Cancellation` for each request of a client session (the client
 * may send notifications/cancelled for it, or close the session): an AbortController there,
 * with its EventTarget and listener bookkeeping, was the largest single cost of a stdio request
 * in profiles (about 8% of the gateway's CPU at 10 clients). The HTTP transports stop each
 * exchange with one too (src/upstreams/exchange.ts listens to it), and it costs less than an
 * AbortController or an EventEmitter.
 */
export interface CancelSignal {
  readonly aborted: boolean;
  readonly reason?: unknown;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

type Listener = () => void;

/** An AbortController and its signal in one object, for one request; listeners run once, in order. */
export class Cancellation implements CancelSignal {
  aborted = false;
  reason: unknown = undefined;
  /** Nearly always one listener (the transport's); an array only when there are more. */
  private listeners: Listener | Listener[] | undefined;

  get signal(): CancelSignal {
    return this;
  }

  abort(reason?: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const listeners = this.listeners;
    this.listeners = undefined;
    if (typeof listeners === 'function') listeners();
    else if (listeners) for (const listener of listeners) listener();
  }

  /** Every listener is called once, at the abort (`once` is how it behaves anyway). */
  addEventListener(_type: 'abort', listener: Listener): void {
    if (this.aborted) return;
    const listeners = this.listeners;
    if (listeners === undefined) this.listeners = listener;
    else if (typeof listeners === 'function') this.listeners = [listeners, listener];
    else listeners.push(listener);
  }

  removeEventListener(_type: 'abort', listener: Listener): void {
    const listeners = this.listeners;
    if (listeners === listener) this.listeners = undefined;
    else if (Array.isArray(listeners)) {
      const at = listeners.indexOf(listener);
      if (at !== -1) listeners.splice(at, 1);
    }
  }
}
