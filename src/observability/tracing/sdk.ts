/**
 * The tracing with the official OpenTelemetry JS SDK: a BasicTracerProvider whose spans go through
 * a BatchSpanProcessor to the OTLP/HTTP exporter (JSON), sampled ParentBased(TraceIdRatioBased),
 * with W3C Trace Context in and out. Loaded only with telemetry on (tracing.ts loadTracing).
 *
 * No context manager is registered and no global is set: every span is given its parent
 * explicitly (AsyncLocalStorage's promise hooks would cost every request, traced or not, and the
 * gateway's process-wide OpenTelemetry state stays its user's).
 *
 * Attribute names: the OpenTelemetry semantic conventions for MCP (gen-ai/mcp.md: spans
 * `{mcp.method.name} {target}`, the target a tool or prompt name, never a resource URI by default,
 * to keep span names low-cardinality), plus the gateway's own under `mcp_guard.`.
 */
import { createHash } from 'node:crypto';
import { BUILT_IN_REDACTIONS } from '../audit/redaction.js';
import {
  defaultTextMapGetter,
  defaultTextMapSetter,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import { ExportResultCode, W3CTraceContextPropagator, type ExportResult } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  type ReadableSpan,
  type SpanExporter,
} from '@opentelemetry/sdk-trace-base';
import type { RouteConfig, TelemetryConfig } from '../../config/schema.js';
import type { JsonRpcRequest } from '../../jsonrpc/messages.js';
import { META } from '../../protocol/modern.js';
import { metaTraceContext, TRACEPARENT, withTraceContext, type TraceCarrier } from '../../protocol/trace-context.js';
import { GATEWAY_NAME, GATEWAY_VERSION } from '../../version.js';
import { RateLimitedWarning, type Logger } from '../logger.js';
import type { Ending, RequestFacts, RequestSpan, TraceIds, Tracing } from './tracing.js';

/** A span name's target (a tool or prompt name the client chose) is cut to this many characters. */
const MAX_TARGET = 128;
/** Longest attribute value; a longer one (a URI, a session id a client made up) is cut by the SDK. */
const MAX_ATTRIBUTE = 1_024;

/** What the spans of one MCP request have in common: its method and what it names. */
interface Subject {
  name: string;
  attributes: Attributes;
}

/** The span name and the attributes naming what the request is about (both of its spans carry them). */
function subjectOf(message: JsonRpcRequest): Subject {
  const method = message.method;
  const attributes: Attributes = { 'mcp.method.name': method };
  // Conditionally required: not for a null id (conventions: jsonrpc.request.id).
  if (message.id !== null) attributes['jsonrpc.request.id'] = String(message.id);
  const params = message.params;
  let target: string | undefined;
  const name = params?.['name'];
  const uri = params?.['uri'];
  if (method === 'tools/call' && typeof name === 'string') {
    attributes['gen_ai.tool.name'] = name;
    attributes['gen_ai.operation.name'] = 'execute_tool';
    target = name;
  } else if (method === 'prompts/get' && typeof name === 'string') {
    attributes['gen_ai.prompt.name'] = name;
    target = name;
  } else if ((method === 'resources/read' || method === 'resources/subscribe' || method === 'resources/unsubscribe') && typeof uri === 'string') {
    // Redacted and bounded like a status message: a URI can carry a token (a signed URL).
    attributes['mcp.resource.uri'] = redactedText(uri);
  }
  return { name: target === undefined ? method : `${method} ${target.slice(0, MAX_TARGET)}`, attributes };
}

/** The MCP protocol version of a request: its header, an initialize's own, or a 2026-07-28 request's `_meta`. */
function protocolVersionOf(facts: RequestFacts): string | undefined {
  const header = facts.request.headers['mcp-protocol-version'];
  if (typeof header === 'string') return header;
  const params = facts.message.params;
  if (facts.message.method === 'initialize' && typeof params?.['protocolVersion'] === 'string') return params['protocolVersion'];
  const meta = params?.['_meta'];
  const modern = typeof meta === 'object' && meta !== null ? (meta as Record<string, unknown>)[META.protocolVersion] : undefined;
  return typeof modern === 'string' ? modern : undefined;
}

/** Where a route's upstream is, for the CLIENT span (`network.transport`, `server.address`, `server.port`). */
const peers = new WeakMap<RouteConfig, Attributes>();

function peerOf(route: RouteConfig): Attributes {
  let peer = peers.get(route);
  if (peer !== undefined) return peer;
  peer = { 'mcp_guard.server': route.name };
  if (route.transport === 'stdio') peer['network.transport'] = 'pipe';
  else if (route.transport !== 'virtual') {
    const url = new URL(route.url);
    peer['network.transport'] = 'tcp';
    peer['server.address'] = url.hostname.replace(/^\[|\]$/g, '');
    peer['server.port'] = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
  }
  peers.set(route, peer);
  return peer;
}

/** Ends a span with how its request ended (conventions: error.type, status ERROR with the JSON-RPC message). */
/** Longest status message a span carries (the SDK's own attribute limit). */
const MAX_STATUS_MESSAGE = 1_024;

/** A message as a span may carry it: credentials masked (the audit log's built-in rules), cut to MAX_STATUS_MESSAGE. */
function redactedText(message: string): string {
  let text = message.length > MAX_STATUS_MESSAGE * 4 ? message.slice(0, MAX_STATUS_MESSAGE * 4) : message;
  for (const rule of BUILT_IN_REDACTIONS) text = text.replace(rule.pattern, rule.replacement);
  return text.length > MAX_STATUS_MESSAGE ? `${text.slice(0, MAX_STATUS_MESSAGE)}...` : text;
}

/** The first 16 bytes of the session id's SHA-256, hex. */
function sessionDigest(sessionId: string): string {
  return createHash('sha256').update(sessionId).digest('hex').slice(0, 32);
}

function endWith(span: Span, ending: Ending): void {
  const response = ending.response;
  if ('error' in response) {
    const code = String(response.error.code);
    span.setAttribute('error.type', code);
    span.setAttribute('rpc.response.status_code', code);
    if (ending.error !== undefined) span.setAttribute('mcp_guard.error.kind', ending.error);
    // Bounded and redacted as audit lines are: the message can echo what a client sent (a 1 MB
    // tool name in a refusal) or an upstream's text with a token in it, and the SDK bounds attributes only.
    span.setStatus({ code: SpanStatusCode.ERROR, message: redactedText(response.error.message) });
  } else if (response.result['isError'] === true) {
    span.setAttribute('error.type', 'tool_error');
    span.setStatus({ code: SpanStatusCode.ERROR });
  }
  span.end();
}

/**
 * The exporter, whose failures (a collector that is down or refuses) are logged, at most one
 * warning per kind every 10 s: the SDK itself only tells its diag logger, which is silent.
 */
class WarningExporter implements SpanExporter {
  private readonly warning: RateLimitedWarning;

  constructor(
    private readonly inner: SpanExporter,
    log: Logger,
  ) {
    this.warning = new RateLimitedWarning(log);
  }

  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    this.inner.export(spans, (result) => {
      if (result.code !== ExportResultCode.SUCCESS) {
        this.warning.warn('export', { spans: spans.length, err: result.error?.message }, 'telemetry: spans could not be exported (dropped)');
      }
      done(result);
    });
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve();
  }
}

export class SdkTracing implements Tracing {
  private readonly provider: BasicTracerProvider;
  private readonly tracer: Tracer;
  private readonly propagator = new W3CTraceContextPropagator();

  constructor(config: TelemetryConfig, log: Logger) {
    const exporter = new OTLPTraceExporter({ url: config.traces_url, headers: config.headers });
    this.provider = new BasicTracerProvider({
      resource: defaultResource().merge(resourceFromAttributes({ 'service.name': config.service_name, 'service.version': GATEWAY_VERSION })),
      sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(config.sample_ratio) }),
      // The OTEL_BSP_* variables (delay, queue and batch sizes) apply.
      spanProcessors: [new BatchSpanProcessor(new WarningExporter(exporter, log))],
      spanLimits: { attributeValueLengthLimit: MAX_ATTRIBUTE },
    });
    this.tracer = this.provider.getTracer(GATEWAY_NAME, GATEWAY_VERSION);
  }

  /** A remote parent from a carrier (invalid or hostile values give none: a new root). */
  private extract(carrier: Record<string, unknown>): Context | undefined {
    const extracted = this.propagator.extract(ROOT_CONTEXT, carrier, defaultTextMapGetter);
    return trace.getSpanContext(extracted) ? extracted : undefined;
  }

  start(facts: RequestFacts): RequestSpan {
    const { request, message, route, identity } = facts;
    const subject = subjectOf(message);
    // The request's own context is its parent (the conventions: the MCP span's parent is the one
    // in `_meta`, per message); the HTTP request's, when it differs, is a link.
    const meta = metaTraceContext(message);
    const fromMeta = meta && this.extract(meta as unknown as Record<string, unknown>);
    const fromHeaders = request.headers[TRACEPARENT] === undefined ? undefined : this.extract(request.headers);
    const parent = fromMeta ?? fromHeaders ?? ROOT_CONTEXT;
    const links: Link[] = [];
    const linked = fromMeta && fromHeaders && trace.getSpanContext(fromHeaders);
    if (linked && linked.spanId !== trace.getSpanContext(fromMeta)!.spanId) links.push({ context: linked });

    const attributes: Attributes = {
      ...subject.attributes,
      'network.transport': 'tcp',
      'network.protocol.name': 'http',
      'network.protocol.version': request.raw.httpVersion,
      'client.address': request.clientIp,
      'mcp_guard.server': route.name,
      'mcp_guard.identity': identity.id,
      'mcp_guard.identity.provider': identity.provider,
      'mcp_guard.request_id': request.id,
    };
    const sessionId = request.headers['mcp-session-id'];
    // A digest, not the id: without authentication a session id is all it takes to use a session,
    // and whoever reads traces must not get that; the digest still ties a session's spans together.
    if (typeof sessionId === 'string') attributes['mcp.session.id'] = sessionDigest(sessionId);
    const version = protocolVersionOf(facts);
    if (version !== undefined) attributes['mcp.protocol.version'] = version;

    const span = this.tracer.startSpan(
      subject.name,
      { kind: SpanKind.SERVER, attributes, links, ...(request.receivedAt ? { startTime: request.receivedAt } : {}) },
      parent,
    );
    const context = trace.setSpan(ROOT_CONTEXT, span);
    for (const stage of request.tracing?.stages ?? []) {
      this.tracer.startSpan(`mcp_guard.${stage.name}`, { kind: SpanKind.INTERNAL, startTime: stage.start }, context).end(stage.end);
    }
    const { traceId, spanId } = span.spanContext();
    const ids: TraceIds = { trace_id: traceId, span_id: spanId };
    return {
      ids,
      limit: (check) => {
        const child = this.tracer.startSpan('mcp_guard.rate_limit', { kind: SpanKind.INTERNAL, attributes: { 'mcp_guard.rate_limit.scope': 'tool' } }, context);
        return check.finally(() => child.end());
      },
      forward: async (forwarded, send) => {
        const client = this.tracer.startSpan(subject.name, { kind: SpanKind.CLIENT, attributes: { ...subject.attributes, ...peerOf(route) } }, context);
        const carrier: Partial<TraceCarrier> = {};
        this.propagator.inject(trace.setSpan(ROOT_CONTEXT, client), carrier, defaultTextMapSetter);
        const sent = carrier.traceparent === undefined ? forwarded : withTraceContext(forwarded, carrier as TraceCarrier);
        try {
          const ending = await send(sent);
          if (ending.cached) client.setAttribute('mcp_guard.cache.hit', true);
          endWith(client, ending);
          return ending;
        } catch (err) {
          client.setAttribute('error.type', err instanceof Error ? err.name : '_OTHER');
          client.setStatus({ code: SpanStatusCode.ERROR });
          client.end();
          throw err;
        }
      },
      end: (ending) => endWith(span, ending),
    };
  }

  flush(): Promise<void> {
    // A failed export is the exporter's warning (WarningExporter), never the caller's error.
    return this.provider.forceFlush().catch(() => undefined);
  }

  async shutdown(deadlineMs = 5_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, deadlineMs);
      timer.unref();
    });
    await Promise.race([this.provider.shutdown().catch(() => undefined), deadline]);
    clearTimeout(timer);
  }
}
