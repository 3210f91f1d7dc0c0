/**
 * The record stage: one place where what happened to a request becomes audit lines and metric
 * series, so that the two never disagree. The pipeline and the auth hook call it with facts
 * (who, which server, which tool, how it ended); it decides which audit event and which series.
 * Every call is O(1) and never throws: the audit log only queues, metrics only count.
 */
import type { FastifyRequest } from 'fastify';
import type { AuthOutcome } from '../auth/authenticator.js';
import { ownerKey, type Identity } from '../auth/identity.js';
import { ErrorCode, type JsonRpcErrorObject, type JsonRpcRequest, type JsonRpcResponse } from '../jsonrpc/messages.js';
import type { AuditEvent, AuditLog } from './audit/log.js';
import type { Metrics, RateLimitScope, ToolCallOutcome, UpstreamOutcome } from './metrics.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** performance.now() when the request arrived (set by the app's first onRequest hook). */
    receivedAt: number;
    /** The server an MCP request was routed to, once it is known. */
    mcpServer: string | null;
    /** The request reached an MCP endpoint: its answer is recorded when it ends. */
    mcpEndpoint: boolean;
    /**
     * The client's address (set by the app's first onRequest hook): the socket's peer, or behind
     * `[server] trusted_proxies` the address they forwarded. Every use of the client address
     * reads this, never `request.ip`.
     */
    clientIp: string;
  }
}

/** Milliseconds since the request arrived. */
export function elapsedMs(request: FastifyRequest): number {
  return request.receivedAt ? performance.now() - request.receivedAt : 0;
}

/** An `x-request-id` the client may send: kept for correlation only, never as the request's own id. */
const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * The client's `x-request-id`, when it is up to 128 safe characters (anything else is left out):
 * the audit line's `client_request_id`. `request_id` is always the gateway's own id, so a client
 * can neither choose nor collide it.
 */
export function clientRequestId(request: FastifyRequest): string | undefined {
  const value = request.headers['x-request-id'];
  return typeof value === 'string' && CLIENT_REQUEST_ID.test(value) ? value : undefined;
}

/**
 * The head of an event about one server's request: base(), the event, who, and the server (with
 * the virtual server it was reached through, when it was).
 */
function aboutServer(request: FastifyRequest, event_type: AuditEvent['event_type'], identity: Identity, server: string) {
  return {
    ...base(request),
    event_type,
    identity_id: identity.id,
    provider: identity.provider,
    server,
    ...(request.mcpServer != null && request.mcpServer !== server ? { virtual_server: request.mcpServer } : {}),
  };
}

/** What every event of one request shares: with telemetry on, the trace of its span once there is one. */
function base(request: FastifyRequest): Pick<AuditEvent, 'request_id' | 'client_request_id' | 'client_ip' | 'duration_ms' | 'trace_id' | 'span_id'> {
  const shared: Pick<AuditEvent, 'request_id' | 'client_request_id' | 'client_ip' | 'duration_ms' | 'trace_id' | 'span_id'> = {
    request_id: request.id,
    client_request_id: clientRequestId(request),
    client_ip: request.clientIp,
    duration_ms: elapsedMs(request),
  };
  const ids = request.tracing?.ids;
  if (ids) {
    shared.trace_id = ids.trace_id;
    shared.span_id = ids.span_id;
  }
  return shared;
}

/** Upstream failures worth an `upstream_error` event (not the client's own cancellation). */
const UPSTREAM_FAILURE_CODES = new Set<number>([ErrorCode.UpstreamError, ErrorCode.UpstreamTimeout]);

export class Recorder {
  constructor(
    /** Replaced when a reload changes `[audit]` (src/app/reload.ts). */
    public audit: AuditLog,
    /** undefined with `[server] metrics = false`. */
    readonly metrics: Metrics | undefined,
  ) {}

  /** Authentication passed. The audit line only when the credential was checked afresh (not from cache). */
  authenticated(request: FastifyRequest, identity: Identity, verified: boolean): void {
    this.metrics?.auth(identity.provider, 'success');
    this.metrics?.identitySeen(ownerKey(identity));
    if (verified && identity.provider !== 'anonymous') {
      this.audit.record({ ...base(request), event_type: 'auth_success', identity_id: identity.id, provider: identity.provider, success: true });
    }
  }

  /** Authentication refused: the reason goes here, never to the client. */
  authFailed(request: FastifyRequest, outcome: Extract<AuthOutcome, { ok: false }>, error: JsonRpcErrorObject): void {
    const result = outcome.kind === 'throttled' ? 'throttled' : outcome.kind === 'busy' ? 'unavailable' : 'failure';
    this.metrics?.auth(outcome.provider ?? 'anonymous', result);
    this.audit.record({
      ...base(request),
      event_type: 'auth_failure',
      identity_id: null,
      success: false,
      reason: outcome.reason,
      ...(outcome.provider ? { provider: outcome.provider } : {}),
      error: { code: error.code, message: error.message },
    });
  }

  /** A rate limit refused the request (or one tools/call of it). */
  rateLimited(request: FastifyRequest, scope: RateLimitScope, identity?: Identity, server?: string, tool?: string): void {
    this.metrics?.rateLimit(false, scope);
    if (tool !== undefined && server !== undefined) this.metrics?.toolCall(server, tool, 'rate_limited');
    this.audit.record({
      ...base(request),
      event_type: 'rate_limited',
      identity_id: identity?.id ?? null,
      ...(identity ? { provider: identity.provider } : {}),
      ...(server !== undefined ? { server } : {}),
      ...(tool !== undefined ? { method: 'tools/call', tool } : {}),
      success: false,
      reason: `${scope} limit`,
    });
  }

  /**
   * An initialize refused for want of a session slot: the identity's quota (`session quota`) or
   * the gateway's `max_sessions`.
   */
  sessionRefused(request: FastifyRequest, identity: Identity, server: string, reason: 'session quota' | 'max_sessions'): void {
    this.audit.record({
      ...base(request),
      event_type: 'rate_limited',
      identity_id: identity.id,
      provider: identity.provider,
      server,
      method: 'initialize',
      success: false,
      reason,
    });
  }

  /** A rate limit let the request through. */
  rateAllowed(scope: RateLimitScope): void {
    this.metrics?.rateLimit(true, scope);
  }

  /** The identity may not use this server, or this tool. */
  denied(request: FastifyRequest, identity: Identity, server: string, reason: string, tool?: string): void {
    if (tool !== undefined) this.metrics?.toolCall(server, tool, 'denied');
    this.audit.record({
      ...aboutServer(request, 'authz_denied', identity, server),
      ...(tool !== undefined ? { method: 'tools/call', tool } : {}),
      success: false,
      reason,
    });
  }

  /**
   * A message of an authenticated identity refused before any upstream saw it (src/mcp/request-check.ts):
   * params the protocol's schema refuses (`invalid params`), or a request-only method sent as a
   * notification (`request sent as a notification`), which would otherwise leave no trace at all.
   */
  malformed(request: FastifyRequest, identity: Identity, server: string, method: string, reason: string, error: JsonRpcErrorObject): void {
    this.audit.record({
      ...base(request),
      event_type: 'request_refused',
      identity_id: identity.id,
      provider: identity.provider,
      server,
      method,
      success: false,
      reason,
      error: { code: error.code, message: error.message },
    });
  }

  /**
   * One request answered by (or on behalf of) the upstream: upstream latency and outcome, and for
   * tools/call the tool_call event; an upstream failure also an upstream_error event.
   */
  forwarded(
    request: FastifyRequest,
    identity: Identity,
    server: string,
    call: JsonRpcRequest,
    tool: string | undefined,
    response: JsonRpcResponse,
    seconds: number,
  ): void {
    const method = call.method;
    const error = 'error' in response ? response.error : undefined;
    const failed = error !== undefined && UPSTREAM_FAILURE_CODES.has(error.code);
    const outcome: UpstreamOutcome = error?.code === ErrorCode.UpstreamTimeout ? 'timeout' : failed ? 'error' : 'ok';
    this.metrics?.upstreamRequest(server, method, seconds, outcome);
    if (method === 'tools/list' && 'result' in response && Array.isArray(response.result['tools'])) {
      this.metrics?.learnTools(
        server,
        (response.result['tools'] as Array<{ name?: unknown }>).map((t) => (typeof t?.name === 'string' ? t.name : '')),
      );
    }
    if (tool === undefined && !failed) return;
    // Built once, field by field: this runs for every tools/call, where object spreads show up
    // in profiles.
    const event: AuditEvent = {
      event_type: 'tool_call',
      identity_id: identity.id,
      provider: identity.provider,
      server,
      method,
      success: true,
      duration_ms: seconds * 1000,
      request_id: request.id,
      client_request_id: clientRequestId(request),
      client_ip: request.clientIp,
    };
    if (error) event.error = { code: error.code, message: error.message };
    const ids = request.tracing?.ids;
    if (ids) {
      event.trace_id = ids.trace_id;
      event.span_id = ids.span_id;
    }
    // Through a virtual server: `server` is its member (src/pipeline.ts toolOf), the route says which virtual server.
    if (request.mcpServer != null && request.mcpServer !== server) event.virtual_server = request.mcpServer;
    if (tool !== undefined) {
      const toolOutcome: ToolCallOutcome = error !== undefined || isToolError(response) ? 'error' : 'ok';
      this.metrics?.toolCall(server, tool, toolOutcome);
      event.tool = tool;
      event.success = toolOutcome === 'ok';
      if (this.audit.includeArguments && call.params?.['arguments'] !== undefined) event.arguments = call.params['arguments'];
      this.audit.record(event);
    }
    if (failed) this.audit.record({ ...event, event_type: 'upstream_error', success: false });
  }

  /**
   * Refused before authentication: a Host or Origin the gateway does not serve (DNS rebinding
   * protection). Counted in mcp_guard_requests_total (server "none") like any other refusal.
   */
  refused(request: FastifyRequest, reason: string): void {
    request.mcpEndpoint = true;
    this.audit.record({ ...base(request), event_type: 'request_refused', identity_id: null, success: false, reason });
  }

  /** A cacheable request to a 2026-07-28 server was answered from the cache (hit) or forwarded (miss). */
  cacheLookup(server: string, hit: boolean): void {
    this.metrics?.cacheLookup(server, hit);
  }

  /** One HTTP exchange on an MCP endpoint has ended (any status, streams included). */
  answered(request: FastifyRequest, status: number): void {
    this.metrics?.request(request.method, status, elapsedMs(request) / 1000, request.mcpServer ?? undefined);
  }

  /**
   * A server message that no client got: a shared stdio child sent a log line or a request that
   * cannot be attributed to one identity (src/upstreams/stdio/server-messages.ts, deliverAttributed).
   */
  withheld(server: string, method: string, reason: string): void {
    this.audit.record({ event_type: 'upstream_message_withheld', success: false, server, method, reason });
  }

  /**
   * Tool integrity (src/integrity/guard.ts): a tool's or prompt's definition seen unlike its pin,
   * with no pin, or pinned on first use. Once per server, item and definition.
   */
  toolDefinition(event: {
    server: string;
    kind: 'tool' | 'prompt';
    name: string;
    result: 'changed' | 'unpinned' | 'trusted';
    fields: string[];
    oldHash?: string;
    newHash: string;
    mode: string;
  }): void {
    this.metrics?.toolIntegrityEvent(event.server, event.result);
    this.audit.record({
      event_type: 'tool_definition_changed',
      success: event.result === 'trusted',
      server: event.server,
      ...(event.kind === 'tool' ? { tool: event.name } : {}),
      reason: event.result,
      definition: {
        kind: event.kind,
        name: event.name,
        result: event.result,
        fields: event.fields,
        ...(event.oldHash !== undefined ? { old_sha256: event.oldHash } : {}),
        new_sha256: event.newHash,
        mode: event.mode,
      },
    });
  }

  /** Tool integrity refused a tools/call or prompts/get (block mode): never forwarded. */
  integrityRefused(request: FastifyRequest, identity: Identity, server: string, method: string, name: string, refusal: string): void {
    this.metrics?.toolIntegrityEvent(server, 'refused');
    if (method === 'tools/call') this.metrics?.toolCall(server, name, 'denied');
    this.audit.record({
      ...aboutServer(request, 'authz_denied', identity, server),
      method,
      ...(method === 'tools/call' ? { tool: name } : {}),
      success: false,
      reason: `tool integrity: ${refusal}`,
    });
  }

  /** A decision on a call that needs a person's approval (src/integrity/approval.ts): accepted, or why not. */
  approval(
    request: FastifyRequest,
    identity: Identity,
    server: string,
    tool: string,
    decision: 'accepted' | 'declined' | 'cancelled' | 'unavailable' | 'timeout',
  ): void {
    this.metrics?.toolApproval(server, decision);
    this.audit.record({
      ...aboutServer(request, 'tool_approval', identity, server),
      method: 'tools/call',
      tool,
      success: decision === 'accepted',
      reason: decision,
    });
  }

  /** Lifecycle events. */
  /**
   * A reload of the config: `applied` (with what changed), `unchanged`, or `invalid` (the running
   * config stays; `reason` says why, with key paths, never a value).
   */
  reloaded(result: 'applied' | 'unchanged' | 'invalid', details: { changes?: Record<string, unknown>; reason?: string }): void {
    this.metrics?.configReload(result);
    this.audit.record({
      event_type: 'config_reloaded',
      success: result !== 'invalid',
      reason: details.reason ?? result,
      ...(details.changes ? { changes: details.changes } : {}),
    });
  }

  lifecycle(event_type: 'gateway_start' | 'gateway_stop' | 'upstream_restart', details: { server?: string; reason?: string; success?: boolean } = {}): void {
    this.audit.record({
      event_type,
      success: details.success ?? true,
      ...(details.server ? { server: details.server } : {}),
      ...(details.reason ? { reason: details.reason } : {}),
    });
  }
}

/** A tools/call result that reports a tool error (`isError: true`) rather than a protocol error. */
function isToolError(response: JsonRpcResponse): boolean {
  return 'result' in response && response.result['isError'] === true;
}
