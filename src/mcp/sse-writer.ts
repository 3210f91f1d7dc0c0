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
 * without end: past this many unsent bytes the stream is ended (the client reconnects).
 */
export const MAX_BUFFERED_BYTES = 8 * 1024 * 1024;

export const SSE_HEADERS = {
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache, no-transform',
  connection: 'keep-alive',
  // nginx and similar proxies buffer responses unless told not to.
  'x-accel-buffering': 'no',
} as const;

export class SseWriter {
  private keepalive: NodeJS.Timeout | undefined;
  private ended = false;

  /**
   * Takes a reply over from Fastify and starts its stream. The headers set on the reply so far (the
   * security headers, the request id, rate-limit headers) go first, since Fastify no longer
   * writes them; the stream's own (SSE_HEADERS, then `headers`) win over them.
   */
  static of(reply: FastifyReply, headers: Record<string, string>, options: { keepalive: boolean }): SseWriter {
    const inherited = reply.getHeaders() as OutgoingHttpHeaders;
    reply.hijack();
    return new SseWriter(reply.raw, headers, options, inherited);
  }

  constructor(
    private readonly res: ServerResponse,
    headers: Record<string, string>,
    options: { keepalive: boolean },
    inherited: OutgoingHttpHeaders = {},
  ) {
    res.writeHead(200, { ...inherited, ...SSE_HEADERS, ...headers });
    res.flushHeaders();
    if (options.keepalive) {
      this.keepalive = setInterval(() => this.res.write(': keepalive\n\n'), KEEPALIVE_MS);
      this.keepalive.unref();
    }
    res.once('close', () => this.stop());
  }

  /** False once the client has gone. */
  get open(): boolean {
    return !this.ended && !this.res.destroyed && this.res.writable;
  }

  write(message: JsonRpcMessage): boolean {
    if (!this.open) return false;
    if (this.res.writableLength > MAX_BUFFERED_BYTES) {
      this.res.destroy();
      this.stop();
      return false;
    }
    this.res.write(`event: message\ndata: ${JSON.stringify(message)}\n\n`);
    return true;
  }

  end(): void {
    if (this.ended) return;
    this.stop();
    this.res.end();
  }

  /** Runs once when the client disconnects or the stream ends. */
  onClose(listener: () => void): void {
    this.res.once('close', listener);
  }

  private stop(): void {
    this.ended = true;
    if (this.keepalive) clearInterval(this.keepalive);
  }
}
