/**
 * The answer to one POST: plain JSON when nothing but the responses has to be sent, switching to
 * an SSE stream the moment the upstream sends something else first (progress, a log line, a
 * sampling request), provided the client accepts `text/event-stream`. A plain `curl -X POST` gets
 * JSON; the SDK client gets a stream exactly when one is needed.
 */
import type { FastifyReply } from 'fastify';
import { httpError, statusOf, type GatewayError, type GatewayErrorKind } from '../http/errors.js';
import { ErrorCode, errorResponse, type JsonRpcId, type JsonRpcMessage, type JsonRpcResponse } from '../jsonrpc/messages.js';
import { postStreamPrefix } from './resume.js';
import { SseWriter } from './sse-writer.js';

/** What the client's Accept header allows. */
export interface Acceptable {
  json: boolean;
  sse: boolean;
}

export function parseAccept(header: string | undefined): Acceptable {
  if (!header) return { json: true, sse: false };
  const accept = header.toLowerCase();
  const sse = accept.includes('text/event-stream');
  const json = accept.includes('application/json') || accept.includes('*/*') || accept.includes('application/*');
  // A client that lists neither gets JSON: lenient, as plain HTTP tools often send odd Accept values.
  return { json: json || !sse, sse };
}

/**
 * One request's result: its response and, when the gateway (or a 2026-07-28 server, in the
 * specification's own error codes) refused it, the kind of that error. The HTTP status is not
 * decided here: src/http/errors.ts maps the kind to it, in one place, when the response is
 * written and this is its only answer.
 */
export interface Outcome {
  response: JsonRpcResponse;
  /** Why it failed, when the status of a lone answer is not 200; absent for an answer. */
  error?: GatewayErrorKind;
  /** The client cancelled it: no response is sent, on a stream or as JSON (MCP cancellation). */
  cancelled: boolean;
  /** Served from the gateway's cache (src/eras/cache.ts): no upstream request was made. */
  cached?: boolean;
  /** Headers of the error (`Retry-After`), sent like `status` only when it is the only answer. */
  headers?: Record<string, string>;
}

/** The internal error that stands for a response that cannot be written (the request's own id). */
function internalError(response: JsonRpcResponse): JsonRpcResponse {
  return errorResponse(response.id, ErrorCode.InternalError, 'Internal error');
}

/** A request answered (by the upstream, or by the gateway on its behalf): 200 when it is alone. */
export function answered(response: JsonRpcResponse): Outcome {
  return { response, cancelled: false };
}

/** A request answered with an error instead of by the upstream. */
export function errorOutcome(error: GatewayError): Outcome {
  const { body, headers } = httpError(error);
  const outcome: Outcome = { response: body, error: error.kind, cancelled: error.kind === 'cancelled' };
  if (headers) outcome.headers = headers;
  return outcome;
}

export class PostResponse {
  private sse: SseWriter | undefined;
  /** With event ids (resumable): the request the ids name (src/mcp/resume.ts), their prefix once a stream needs it, and the last one's number. */
  private eventsOf: JsonRpcId | undefined;
  private eventIds: string | undefined;
  private events = 0;

  constructor(
    private readonly reply: FastifyReply,
    private readonly accept: Acceptable,
    private readonly headers: Record<string, string>,
    /** Which messages before the responses this client may receive; all when absent. */
    private readonly admits?: (message: JsonRpcMessage) => boolean,
  ) {}

  /**
   * Its SSE events carry ids naming request `id`, so that a client whose stream breaks can ask
   * after them (src/mcp/resume.ts). The prefix is made only when an event is written: most
   * answers are plain JSON and need none.
   */
  withEventIds(id: JsonRpcId): this {
    this.eventsOf = id;
    return this;
  }

  private nextId(): string | undefined {
    if (this.eventsOf === undefined) return undefined;
    this.eventIds ??= postStreamPrefix(this.eventsOf);
    return `${this.eventIds}${++this.events}`;
  }

  /** True once the response has become an SSE stream (its status and headers are sent). */
  get streaming(): boolean {
    return this.sse !== undefined;
  }

  /** Sends a message that precedes the responses. False when this response cannot carry it. */
  push(message: JsonRpcMessage): boolean {
    if (!this.accept.sse) return false;
    // Not for this client: taken as delivered, so that it goes nowhere else either.
    if (this.admits && !this.admits(message)) return true;
    return this.stream().write(message, false, this.nextId());
  }

  finish(outcomes: Outcome[], batch: boolean): void {
    if (this.sse || !this.accept.json) {
      const sse = this.stream();
      // A response the stream cannot write (SseWriter.write) still gets an answer with its id.
      for (const o of outcomes) {
        if (!o.cancelled && !sse.write(o.response, true, this.nextId()) && sse.open) sse.write(internalError(o.response), true, this.nextId());
      }
      sse.end();
      return;
    }
    // A request its client cancelled gets no response (MCP cancellation: the receiver should not
    // send one; a client that did get one would find no request it is waiting for). Nothing left
    // to answer: 202 with no body, as for a POST of notifications only.
    const answered = outcomes.filter((o) => !o.cancelled);
    if (answered.length === 0) {
      void this.reply.code(202).headers(this.headers).send();
      return;
    }
    outcomes = answered;
    const only = outcomes.length === 1 && !batch ? outcomes[0] : undefined;
    const body = batch ? outcomes.map((o) => o.response) : outcomes[0]?.response;
    let text: string;
    let status = only?.error === undefined ? 200 : statusOf(only.error);
    try {
      text = JSON.stringify(body);
    } catch {
      // Upstream input is depth-bounded before it gets here (src/upstreams/inbound.ts); should a
      // response still not be writable, each request gets an internal error with its own id.
      text = JSON.stringify(batch ? outcomes.map((o) => internalError(o.response)) : outcomes[0] && internalError(outcomes[0].response));
      status = 500;
    }
    void this.reply
      .code(status)
      .headers(only?.headers ? { ...this.headers, ...only.headers } : this.headers)
      .type('application/json')
      .send(text);
  }

  private stream(): SseWriter {
    // A flood before the responses skips what does not fit rather than cutting the answer.
    this.sse ??= SseWriter.of(this.reply, this.headers, { keepalive: true, overflow: 'skip' });
    return this.sse;
  }
}
