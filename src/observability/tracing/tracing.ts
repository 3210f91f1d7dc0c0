/**
 * Traces (docs/telemetry.md): what the pipeline sees of the tracing, and nothing of the
 * OpenTelemetry SDK. With `[telemetry]` off there is no Tracing at all: the pipeline's only cost
 * is a null check, and the SDK is never loaded (test/cli/footprint.test.ts holds that). With it
 * on, loadTracing() (load.ts) imports the SDK-backed implementation (sdk.ts) once, at start-up;
 * hooks.ts times stage 0.
 *
 *   SERVER span  one per MCP request (each request of a JSON-RPC batch), `{mcp.method.name} {target}`,
 *                from the HTTP request's arrival to its outcome, with the OpenTelemetry MCP
 *                semantic conventions' attributes; its parent is the request's
 *                `params._meta.traceparent` (SEP-414), else the HTTP `traceparent` header
 *     ├─ mcp_guard.authenticate   stage 0b (timed by its hook, before the body is read)
 *     ├─ mcp_guard.rate_limit     stage 0a/0c and, when a tool limit applies, stage 6
 *     └─ CLIENT span              the exchange with the upstream; its context is what the
 *                                 upstream receives in `params._meta` (and HTTP headers)
 */
import type { FastifyRequest } from 'fastify';
import type { Identity } from '../../auth/identity.js';
import type { RouteConfig } from '../../config/schema.js';
import type { JsonRpcRequest, JsonRpcResponse } from '../../jsonrpc/messages.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** What tracing knows of this HTTP request; null with telemetry off. */
    tracing: RequestTracing | null;
  }
}

/** A stage that ran before the request's MCP messages were read (stage 0), and when. */
export interface StageTiming {
  name: 'authenticate' | 'rate_limit';
  /** performance.now() at its start and end. */
  start: number;
  end: number;
}

/** The trace of a request, as its audit lines carry it (W3C hex ids). */
export interface TraceIds {
  trace_id: string;
  span_id: string;
}

export interface RequestTracing {
  /** Stage 0's timings, made children of each MCP request's span. */
  stages: StageTiming[];
  /** The span of the POST's one MCP request, for its audit lines; absent in a batch (each request has its own). */
  ids?: TraceIds;
}

/** What the SERVER span of one MCP request is started from. */
export interface RequestFacts {
  request: FastifyRequest;
  message: JsonRpcRequest;
  /** The server or virtual server the URL names. */
  route: RouteConfig;
  identity: Identity;
}

/** How one request ended: an Outcome (src/mcp/post-response.ts) fits. */
export interface Ending {
  response: JsonRpcResponse;
  /** The gateway's error kind (src/http/errors.ts), when the gateway refused or failed it. */
  error?: string | undefined;
  /** Answered from the gateway's cache (src/eras/cache.ts): the upstream was not asked. */
  cached?: boolean | undefined;
}

/** The SERVER span of one MCP request. */
export interface RequestSpan {
  readonly ids: TraceIds;
  /** A tool limit check (stage 6), as a child span. */
  limit<T>(check: Promise<T>): Promise<T>;
  /**
   * The upstream exchange, as a CLIENT child span: `send` gets the request with this span's
   * context in its `params._meta` (a copy: `request` is never changed).
   */
  forward<T extends Ending>(request: JsonRpcRequest, send: (request: JsonRpcRequest) => Promise<T>): Promise<T>;
  /** Ends the span with the request's outcome (`error.type` and an ERROR status on a failure). */
  end(ending: Ending): void;
}

export interface Tracing {
  /** Starts the SERVER span of one MCP request; its stage 0 children are made from `request.tracing`. */
  start(facts: RequestFacts): RequestSpan;
  /** Exports what has ended so far (tests); never rejects: a failed export is logged. */
  flush(): Promise<void>;
  /** Exports what is left and stops: at most `deadlineMs`, so that a collector that is down cannot hold the gateway's stop. */
  shutdown(deadlineMs?: number): Promise<void>;
}
