/**
 * The gateway's one abortable wait: `ms`, or less when `signal` aborts first; it never rejects.
 * For backoffs and retries (an SSE stream's reconnection, a GET stream's resumption, the audit
 * export's retries): a wait that is cut short means the work it was waiting for is over.
 *
 * `signal` is anything with AbortSignal's abort event (an AbortSignal, or the Cancellation of
 * src/upstreams/cancellation.ts). `unref` (the default): the timer does not keep the process
 * alive; a wait a request is blocked on passes `unref: false`.
 */
export interface AbortLike {
  readonly aborted: boolean;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

export function delay(ms: number, options: { signal?: AbortLike | undefined; unref?: boolean } = {}): Promise<void> {
  const { signal, unref = true } = options;
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    if (unref) timer.unref();
    signal?.addEventListener('abort', done, { once: true });
  });
}
