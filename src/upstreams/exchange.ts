/**
 * One HTTP exchange with an upstream, on undici's `dispatch` with a handler of our own.
 *
 * undici's `request()` wraps every response body in a Readable stream (its `BodyReadable`) and
 * every exchange in an AsyncResource; reading a small JSON answer then goes through the stream's
 * buffering, its end-of-stream bookkeeping and an async iterator. Nearly every answer the gateway
 * forwards is a few hundred bytes that arrive with their headers, so `ResponseBody` keeps the
 * chunks in an array, hands them over whole when the reader asks (`text()`), and offers an async
 * iterator, with backpressure, for the bodies that are streams (SSE).
 *
 * What it keeps of `request()`'s contract: the promise resolves at the response headers (1xx are
 * skipped) and rejects with undici's error for a failure before them; a failure after them
 * reaches the body's reader; the signal aborts the exchange at any point (the promise rejects
 * with the signal's reason, or the reader gets it); leaving an iteration early destroys the body.
 */
import type { Dispatcher } from 'undici';
import type { CancelSignal } from './cancellation.js';

/** Bytes queued for a reader that does not keep up before undici stops reading the socket (like a stream's highWaterMark). */
const HIGH_WATER_BYTES = 64 * 1024;

/** The reason a body destroyed without one fails with. */
const DESTROYED = new Error('the response body was destroyed');

/** What `text()` throws when the body is larger than the limit it was given. */
export class BodyTooLarge extends Error {
  constructor(readonly limit: number) {
    super(`the response body is over ${limit} bytes`);
  }
}

export interface ExchangeResponse {
  readonly statusCode: number;
  /** Lower-case names; repeated headers as arrays (undici's parsed form). */
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: ResponseBody;
}

export interface ExchangeOptions {
  origin: string;
  /** Path and query. */
  path: string;
  method: 'GET' | 'POST' | 'DELETE';
  headers: Record<string, string>;
  body: string | null;
  signal: CancelSignal;
}

type Controller = Dispatcher.DispatchController;

/**
 * A response body as it arrives. One reader at a time: `text()`, `dump()` or one iteration.
 */
export class ResponseBody implements AsyncIterable<Buffer> {
  private chunks: Buffer[] = [];
  private queued = 0;
  private ended = false;
  private failure: unknown = undefined;
  /** While reading whole (text): never pause, the limit bounds it instead. */
  private collecting = false;
  /** Wakes the reader waiting for more. */
  private wake: (() => void) | undefined;

  constructor(private readonly controller: Controller) {}

  /** True once the whole body has arrived, or it has failed. */
  private get settled(): boolean {
    return this.ended || this.failure !== undefined;
  }

  /** @internal From the handler. */
  push(chunk: Buffer): void {
    if (this.settled) return;
    this.chunks.push(chunk);
    this.queued += chunk.length;
    if (!this.collecting && this.queued >= HIGH_WATER_BYTES && !this.controller.paused) this.controller.pause();
    this.notify();
  }

  /** @internal From the handler. */
  end(): void {
    if (this.settled) return;
    this.ended = true;
    this.notify();
  }

  /** @internal From the handler, or destroy(). */
  fail(error: unknown): void {
    if (this.settled) return;
    this.failure = error;
    this.notify();
  }

  /** Stops the exchange; a reader gets `reason`. Nothing happens once the body has arrived whole. */
  destroy(reason: unknown = DESTROYED): void {
    if (this.settled) return;
    this.fail(reason);
    this.chunks = [];
    this.queued = 0;
    this.controller.abort(reason as Error);
  }

  /**
   * The whole body as UTF-8 text. Over `limit` bytes, the body is destroyed and the promise
   * rejects with BodyTooLarge; a failure half way rejects with its error.
   */
  async text(limit = Infinity): Promise<string> {
    this.collecting = true;
    if (this.controller.paused) this.controller.resume();
    for (;;) {
      if (this.queued > limit) {
        const tooLarge = new BodyTooLarge(limit);
        this.destroy(tooLarge);
        throw tooLarge;
      }
      if (this.ended) break;
      if (this.failure !== undefined) throw this.failure;
      await this.next();
    }
    const chunks = this.chunks;
    this.chunks = [];
    const text = chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks, this.queued).toString('utf8');
    this.queued = 0;
    return text;
  }

  /** Reads and drops up to `limit` bytes so that the connection can be reused; more destroys the body. */
  async dump(limit = 64 * 1024): Promise<void> {
    let bytes = 0;
    for await (const chunk of this) {
      bytes += chunk.length;
      if (bytes > limit) {
        this.destroy();
        return;
      }
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return {
      next: async (): Promise<IteratorResult<Buffer>> => {
        for (;;) {
          const chunk = this.chunks.shift();
          if (chunk !== undefined) {
            this.queued -= chunk.length;
            if (this.controller.paused && this.queued < HIGH_WATER_BYTES) this.controller.resume();
            return { value: chunk, done: false };
          }
          if (this.failure !== undefined) throw this.failure;
          if (this.ended) return { value: undefined, done: true };
          await this.next();
        }
      },
      // Leaving a for-await early (break, return, throw) lets go of the rest.
      return: (): Promise<IteratorResult<Buffer>> => {
        this.destroy();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  private next(): Promise<void> {
    return new Promise((resolve) => (this.wake = resolve));
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

/** undici's handler for one exchange: settles the promise at the headers, then feeds the body. */
class ExchangeHandler implements Dispatcher.DispatchHandler {
  private controller: Controller | undefined;
  private body: ResponseBody | undefined;
  private done = false;

  constructor(
    private readonly signal: CancelSignal,
    private readonly resolve: (response: ExchangeResponse) => void,
    private readonly reject: (error: unknown) => void,
  ) {
    // exchange() does not make a handler for a signal that has aborted already.
    signal.addEventListener('abort', this.onAbort, { once: true });
  }

  /** Runs when the signal aborts, whatever state the exchange is in. */
  private readonly onAbort = (): void => {
    const reason = this.signal.reason;
    if (this.body) {
      this.body.destroy(reason);
      return;
    }
    // Before the headers: the caller hears of it now, not when undici gets round to the request.
    this.settle();
    this.reject(reason);
    this.controller?.abort(reason as Error);
  };

  onRequestStart(controller: Controller): void {
    this.controller = controller;
    // Aborted while the request waited for a connection: onAbort has rejected already.
    if (this.done) controller.abort(this.signal.reason as Error);
  }

  onResponseStart(controller: Controller, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    if (statusCode < 200) return;
    if (this.done) {
      // Aborted while undici was sending it.
      controller.abort(this.signal.reason as Error);
      return;
    }
    // No callback from the body back to this handler: a closure made here per exchange was
    // pretenured by V8 once many survived a scavenge, and from the old generation it kept every
    // exchange it pointed to alive through the next scavenges too (2.6 KB promoted per request).
    // The handler settles itself below; a destroyed body reaches it as onResponseError.
    const body = new ResponseBody(controller);
    this.body = body;
    this.resolve({ statusCode, headers, body });
  }

  onResponseData(_controller: Controller, chunk: Buffer): void {
    this.body?.push(chunk);
  }

  onResponseEnd(): void {
    if (!this.body) {
      this.fail(new Error('the upstream ended the exchange without a response'));
      return;
    }
    this.body.end();
    this.settle();
  }

  /** A failure, or the end of a body destroyed by its reader or by the signal (controller.abort). */
  onResponseError(_controller: Controller, error: Error): void {
    if (!this.body) {
      this.fail(error);
      return;
    }
    this.body.fail(error);
    this.settle();
  }

  private fail(error: unknown): void {
    if (this.done) return;
    this.settle();
    this.reject(error);
  }

  /** The exchange is over for the caller: no more abort listener. */
  private settle(): void {
    this.done = true;
    this.signal.removeEventListener('abort', this.onAbort);
  }
}

/**
 * Sends one request through `dispatcher` and resolves at its response headers. An aborted signal
 * rejects with its reason (before the headers) or fails the body's reader with it (after).
 */
export function exchange(dispatcher: Dispatcher, options: ExchangeOptions): Promise<ExchangeResponse> {
  return new Promise((resolve, reject) => {
    if (options.signal.aborted) {
      reject(options.signal.reason);
      return;
    }
    const handler = new ExchangeHandler(options.signal, resolve, reject);
    dispatcher.dispatch({ origin: options.origin, path: options.path, method: options.method, headers: options.headers, body: options.body }, handler);
  });
}
