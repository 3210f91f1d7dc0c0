/**
 * Writes Server-Sent Events to a client: one `message` event per JSON-RPC message, and comment
 * lines as keep-alives so that idle streams survive proxies and load balancers.
 */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { FastifyReply } from 'fastify';
import type { JsonRpcMessage } from '../jsonrpc/messages.js';

const KEEPALIVE_MS = 25_000;
/**
 * A client that stops reading while its upstream keeps talking would make the gateway buffer
 * without end: past this many unsent bytes the stream is ended (the client reconnects), or, for
 * the answer to a POST (`overflow: 'skip'`), what precedes the responses is not sent on it.
 */
export const MAX_BUFFERED_BYTES = 8 * 1024 * 1024;

export const SSE_HEADERS = {
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache, no-transform',
  connection: 'keep-alive',
  // nginx and similar proxies buffer responses unless told not to.
  'x-accel-buffering': 'no',
} as const;

/** A member of a KeepaliveTicker: linked through its own two fields, so joining allocates nothing. */
export interface Ticking {
  tickPrev: Ticking | undefined;
  tickNext: Ticking | undefined;
  /** Called once per period while the member is in the ticker. */
  tick(): void;
}

/**
 * One interval for the keep-alives of every open stream, walking them, instead of a setInterval
 * per stream: a Timeout, its closure and its context cost about 200 B per stream, and a gateway
 * holds a GET stream open per session (the `memory` bench: 1,000 sessions, 1,000 idle streams).
 * The members form a doubly-linked list through their own fields rather than a Set: POST answers
 * stream too, one per request, and a long-lived Set that gains and loses an entry per request
 * keeps those requests alive past the young-generation GC (src/upstreams/id-table.ts says why).
 *
 * The interval runs only while there are members (unref'd: it never holds the process open). On
 * the shared clock a member's first tick comes at most one period after it joins (sooner for all
 * but the first), then one per period: a stream is never silent for longer than before.
 */
export class KeepaliveTicker {
  private head: Ticking | undefined;
  private count = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly periodMs: number) {}

  /** Members in the ticker. */
  get size(): number {
    return this.count;
  }

  add(member: Ticking): void {
    if (this.has(member)) return;
    member.tickPrev = undefined;
    member.tickNext = this.head;
    if (this.head) this.head.tickPrev = member;
    this.head = member;
    this.count++;
    if (!this.timer) {
      this.timer = setInterval(() => this.tickAll(), this.periodMs);
      this.timer.unref();
    }
  }

  remove(member: Ticking): void {
    if (!this.has(member)) return;
    if (member.tickPrev) member.tickPrev.tickNext = member.tickNext;
    else this.head = member.tickNext;
    if (member.tickNext) member.tickNext.tickPrev = member.tickPrev;
    member.tickPrev = undefined;
    member.tickNext = undefined;
    this.count--;
    if (this.count === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private has(member: Ticking): boolean {
    return member.tickPrev !== undefined || this.head === member;
  }

  private tickAll(): void {
    for (let member = this.head; member;) {
      // Read before the tick: a member that leaves during its own tick must not end the walk.
      const next = member.tickNext;
      member.tick();
      member = next;
    }
  }
}

/** The keep-alives of every SseWriter of the process. */
const keepalives = new KeepaliveTicker(KEEPALIVE_MS);

export interface SseOptions {
  keepalive: boolean;
  /**
   * Past MAX_BUFFERED_BYTES unsent: 'end' the stream (the default: a GET stream, which the client
   * reopens), or 'skip' the message (a POST's answer: ending it would lose the response, which a
   * flood of notifications from the upstream must not cost the client). write(m, true) always writes.
   */
  overflow?: 'end' | 'skip';
}

export class SseWriter implements Ticking {
  /** Links in the keep-alive ticker (KeepaliveTicker), while this stream is in it. */
  tickPrev: Ticking | undefined;
  tickNext: Ticking | undefined;
  private ended = false;
  /** overflow: 'skip' (SseOptions). */
  private readonly skipOverflow: boolean;
  /**
   * What runs when the response closes, after stop(): onClose's listeners, chained. One 'close'
   * listener of our own on the response rather than a res.once per caller: each once() costs a
   * wrapper state, a bound function and its property array (about 250 B per stream).
   */
  private closeListener: (() => void) | undefined;

  /**
   * Takes a reply over from Fastify and starts its stream. The headers set on the reply so far (the
   * security headers, the request id, rate-limit headers) go first, since Fastify no longer
   * writes them; the stream's own (SSE_HEADERS, then `headers`) win over them.
   */
  static of(reply: FastifyReply, headers: Record<string, string>, options: SseOptions): SseWriter {
    const inherited = reply.getHeaders() as OutgoingHttpHeaders;
    reply.hijack();
    return new SseWriter(reply.raw, headers, options, inherited);
  }

  constructor(
    private readonly res: ServerResponse,
    headers: Record<string, string>,
    options: SseOptions,
    inherited: OutgoingHttpHeaders = {},
  ) {
    this.skipOverflow = options.overflow === 'skip';
    res.writeHead(200, { ...inherited, ...SSE_HEADERS, ...headers });
    res.flushHeaders();
    if (options.keepalive) keepalives.add(this);
    // `on`, not `once`: a response emits 'close' once, and once() wraps the listener (see above).
    res.on('close', () => this.closed());
  }

  /** False once the client has gone. */
  get open(): boolean {
    return !this.ended && !this.res.destroyed && this.res.writable;
  }

  /**
   * Sends one message; false when the stream cannot carry it (closed, backed up; `always`: sent
   * even when backed up, for a response, which is never more than one per request). Never throws: it
   * runs in the upstream's read loop (a stdio child's stdout reader), where a throw would end the
   * gateway. Upstream input is depth-bounded before it gets here (src/upstreams/inbound.ts); a
   * message JSON.stringify still cannot write is not sent.
   */
  write(message: JsonRpcMessage, always = false, id?: string): boolean {
    if (!this.open) return false;
    if (!always && this.res.writableLength > MAX_BUFFERED_BYTES) {
      if (this.skipOverflow) return false;
      this.res.destroy();
      this.stop();
      return false;
    }
    let data: string;
    try {
      data = JSON.stringify(message);
    } catch {
      return false;
    }
    this.res.write(id === undefined ? `event: message\ndata: ${data}\n\n` : `id: ${id}\nevent: message\ndata: ${data}\n\n`);
    return true;
  }

  end(): void {
    if (this.ended) return;
    this.stop();
    this.res.end();
  }

  /** Runs once when the client disconnects or the stream ends. */
  onClose(listener: () => void): void {
    const before = this.closeListener;
    this.closeListener = before
      ? () => {
          before();
          listener();
        }
      : listener;
  }

  /** The keep-alive comment (KeepaliveTicker). */
  tick(): void {
    this.res.write(': keepalive\n\n');
  }

  private closed(): void {
    this.stop();
    const listener = this.closeListener;
    this.closeListener = undefined;
    listener?.();
  }

  private stop(): void {
    this.ended = true;
    keepalives.remove(this);
  }
}
