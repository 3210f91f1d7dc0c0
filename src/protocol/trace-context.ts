/**
 * W3C Trace Context as MCP carries it: the `traceparent` and `tracestate` keys of a request's
 * `params._meta` (SEP-414: unprefixed, unlike other `_meta` keys) and the HTTP headers of the same
 * names. Pure functions with no OpenTelemetry code, so that every layer may read them: the
 * transports mirror a forwarded request's `_meta` context into their HTTP headers
 * (src/upstreams/http/), the tracing (src/observability/tracing/) reads and writes `_meta`.
 */
import type { JsonRpcMessage, JsonRpcRequest } from '../jsonrpc/messages.js';

/** The `_meta` keys (and HTTP header names) of the W3C Trace Context. */
export const TRACEPARENT = 'traceparent';
export const TRACESTATE = 'tracestate';

/**
 * A version-00 traceparent: version, trace id, parent id, flags, lower-case hex (W3C Trace
 * Context, section 3.2). An all-zero trace or parent id is invalid and checked apart.
 */
const TRACEPARENT_FORMAT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_SPAN_ID = '0'.repeat(16);
/** tracestate: at most 512 characters (section 3.3.1.5) of printable ASCII (no control character can reach a header). */
const TRACESTATE_FORMAT = /^[\x20-\x7e]{1,512}$/;

/** A trace context as it travels: the two W3C values, both strings. */
export interface TraceCarrier {
  traceparent: string;
  tracestate?: string;
}

/** True for a traceparent a peer may be given: version 00, non-zero ids. */
export function isValidTraceparent(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  const match = TRACEPARENT_FORMAT.exec(value);
  return match !== null && match[1] !== ZERO_TRACE_ID && match[2] !== ZERO_SPAN_ID;
}

/** True for a tracestate that may go into a header. */
export function isSendableTracestate(value: unknown): value is string {
  return typeof value === 'string' && TRACESTATE_FORMAT.test(value);
}

/**
 * The trace context in a message's `params._meta`, when its traceparent is valid (anything else in
 * a client's `_meta` is ignored, never an error); tracestate only with a valid traceparent.
 */
export function metaTraceContext(message: JsonRpcMessage): TraceCarrier | undefined {
  if (!('method' in message)) return undefined;
  const meta = message.params?.['_meta'];
  if (typeof meta !== 'object' || meta === null) return undefined;
  const traceparent = (meta as Record<string, unknown>)[TRACEPARENT];
  if (!isValidTraceparent(traceparent)) return undefined;
  const tracestate = (meta as Record<string, unknown>)[TRACESTATE];
  return isSendableTracestate(tracestate) ? { traceparent, tracestate } : { traceparent };
}

/**
 * The HTTP headers that carry the same context as a forwarded message's `_meta` (the headers a
 * tracing-aware HTTP server reads first). Undefined when it carries none: the usual case with
 * telemetry off, one property read per message.
 */
export function traceHeaders(message: JsonRpcMessage): Record<string, string> | undefined {
  const context = metaTraceContext(message);
  if (context === undefined) return undefined;
  return context.tracestate === undefined ? { traceparent: context.traceparent } : { traceparent: context.traceparent, tracestate: context.tracestate };
}

/**
 * The request with `carrier` as its `_meta` trace context: a new request, params and `_meta`
 * (never the caller's objects, which the audit log and the caches still read). Every other
 * `_meta` key of the client's stays as it is (a progress token, `baggage`, its own keys); its
 * `traceparent` is replaced (the upstream's parent is the gateway's span, in the same trace) and
 * its `tracestate` by the one the gateway's span carries on.
 */
export function withTraceContext(request: JsonRpcRequest, carrier: TraceCarrier): JsonRpcRequest {
  const params = request.params ?? {};
  const old = params['_meta'];
  const meta: Record<string, unknown> = typeof old === 'object' && old !== null && !Array.isArray(old) ? { ...(old as Record<string, unknown>) } : {};
  meta[TRACEPARENT] = carrier.traceparent;
  if (carrier.tracestate !== undefined) meta[TRACESTATE] = carrier.tracestate;
  else delete meta[TRACESTATE];
  return { ...request, params: { ...params, _meta: meta } };
}
