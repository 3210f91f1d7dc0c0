/**
 * The gateway's waits, in one place: `delay` (an abortable pause) and `settleWithin` (a race of
 * work against a timer).
 *
 * `delay`: the gateway's one abortable wait: `ms`, or less when `signal` aborts first; it never rejects.
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

/**
 * Settles as `work` does, or as `late()` says when `work` has not settled within `ms` (`late`
 * gives the value, or throws the error, to settle with; `work`'s own later value goes to
 * `abandoned`, its later failure nowhere). The timer is cleared as soon as `work` settles: a
 * timers/promises delay that loses a Promise.race stays armed for its whole time and holds its
 * promise and the race's; every session's notifications/initialized once left one for 2 s, long
 * enough to be promoted to the old generation as garbage (about 700 B per session in the
 * `memory` bench, until the next full GC).
 */
export function settleWithin<T>(work: Promise<T>, ms: number, late: () => T, abandoned?: (value: T) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let over = false;
    const timer = setTimeout(() => {
      over = true;
      try {
        resolve(late());
      } catch (error) {
        reject(error);
      }
    }, ms);
    work.then(
      (value) => {
        clearTimeout(timer);
        if (!over) resolve(value);
        else abandoned?.(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        if (!over) reject(error);
      },
    );
  });
}
