/**
 * The one boundary where gateway errors become HTTP: each kind maps to exactly one status and one
 * JSON-RPC code in a single exhaustive switch. Internal failures never reach a client with their
 * cause; the cause goes to the log.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { maxHeaderSize, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { ErrorCode, errorResponse, type JsonRpcErrorObject, type JsonRpcErrorResponse, type JsonRpcId } from '../jsonrpc/messages.js';
import type { UpstreamError, UpstreamErrorKind } from '../upstreams/errors.js';
import { SECURITY_HEADERS, setSecurityHeaders } from './security-headers.js';

/** The security headers as raw header lines, for answers written to the socket before any route. */
const SECURITY_HEADER_LINES = SECURITY_HEADERS.map(([name, value]) => `${name}: ${value}\r\n`).join('');

export type GatewayErrorKind =
  | 'parse_error'
  | 'invalid_request'
  | 'unsupported_media_type'
  | 'not_acceptable'
  | 'payload_too_large'
  | 'request_timeout'
  | 'headers_too_large'
  | 'uri_too_long'
  | 'session_required'
  | 'session_not_found'
  | 'unsupported_protocol_version'
  /** 2026-07-28: an `Mcp-Method`, `Mcp-Name` or `MCP-Protocol-Version` header unlike the body. */
  | 'header_mismatch'
  /** 2026-07-28: a malformed `_meta` envelope. */
  | 'invalid_params'
  /** 2026-07-28: a method the server does not implement (404, so that it is told from a session error). */
  | 'method_not_found'
  /** 2026-07-28: the request needs a client capability its `_meta` does not declare (a server's answer). */
  | 'missing_client_capability'
  | 'stream_conflict'
  /** An HTTP method an MCP endpoint does not take (it takes POST, GET and DELETE). */
  | 'method_not_allowed'
  | 'too_many_sessions'
  /** One identity has `max_sessions_per_identity` sessions open. */
  | 'session_quota'
  | 'shutting_down'
  | 'unauthenticated'
  | 'auth_throttled'
  | 'auth_unavailable'
  | 'server_forbidden'
  | 'origin_forbidden'
  | 'tool_forbidden'
  | 'rate_limited'
  | 'rate_limit_unavailable'
  | 'internal'
  | UpstreamErrorKind;

/** An error a request handler throws or returns; rendered by httpError(). */
export class GatewayError extends Error {
  override readonly name = 'GatewayError';
  /** Seconds the client should wait before trying again: sent as `Retry-After` when set. */
  retryAfterSecs: number | undefined;
  constructor(
    readonly kind: GatewayErrorKind,
    message: string,
    readonly id: JsonRpcId | null = null,
    /** The JSON-RPC error's `data`, where the specification defines one (-32022's versions). */
    readonly data?: unknown,
  ) {
    super(message);
  }

  static fromUpstream(error: UpstreamError, id: JsonRpcId | null): GatewayError {
    const gatewayError = new GatewayError(error.kind, error.message, id);
    // Whole seconds (RFC 9110 delay-seconds), rounded up so that a client waiting that long is not early.
    if (error.retryAfterMs !== undefined) gatewayError.retryAfterSecs = Math.max(1, Math.ceil(error.retryAfterMs / 1000));
    return gatewayError;
  }
}

export interface HttpError {
  status: number;
  body: JsonRpcErrorResponse;
  /** Headers that belong to this error (`Retry-After`), when it has any. */
  headers?: Record<string, string>;
}

function statusAndCode(kind: GatewayErrorKind): { status: number; code: number } {
  switch (kind) {
    case 'parse_error':
      return { status: 400, code: ErrorCode.ParseError };
    case 'invalid_request':
      return { status: 400, code: ErrorCode.InvalidRequest };
    case 'unsupported_media_type':
      return { status: 415, code: ErrorCode.InvalidRequest };
    case 'not_acceptable':
      return { status: 406, code: ErrorCode.InvalidRequest };
    case 'payload_too_large':
      return { status: 413, code: ErrorCode.InvalidRequest };
    case 'request_timeout':
      // The client did not send its headers or its whole request in time (a slow client).
      return { status: 408, code: ErrorCode.InvalidRequest };
    case 'headers_too_large':
      return { status: 431, code: ErrorCode.InvalidRequest };
    case 'uri_too_long':
      return { status: 414, code: ErrorCode.InvalidRequest };
    case 'session_required':
      return { status: 400, code: ErrorCode.InvalidRequest };
    case 'session_not_found':
    case 'session_expired':
      // 404 tells a client to start a new session (streamable HTTP, "Session Management").
      return { status: 404, code: ErrorCode.SessionNotFound };
    case 'unsupported_protocol_version':
      return { status: 400, code: ErrorCode.UnsupportedProtocolVersion };
    case 'header_mismatch':
      return { status: 400, code: ErrorCode.HeaderMismatch };
    case 'invalid_params':
      return { status: 400, code: ErrorCode.InvalidParams };
    case 'method_not_found':
      return { status: 404, code: ErrorCode.MethodNotFound };
    case 'missing_client_capability':
      return { status: 400, code: ErrorCode.MissingRequiredClientCapability };
    case 'stream_conflict':
      return { status: 409, code: ErrorCode.InvalidRequest };
    case 'method_not_allowed':
      return { status: 405, code: ErrorCode.InvalidRequest };
    case 'too_many_sessions':
    case 'shutting_down':
      return { status: 503, code: ErrorCode.UpstreamError };
    case 'session_quota':
      // The identity's own quota, not the gateway's capacity: 429, like its rate limit.
      return { status: 429, code: ErrorCode.RateLimited };
    case 'unauthenticated':
      return { status: 401, code: ErrorCode.Unauthorized };
    case 'auth_throttled':
      return { status: 429, code: ErrorCode.Unauthorized };
    case 'auth_unavailable':
      return { status: 503, code: ErrorCode.Unauthorized };
    case 'server_forbidden':
      return { status: 403, code: ErrorCode.Forbidden };
    case 'origin_forbidden':
      // A Host or Origin the gateway does not serve (DNS rebinding protection, src/http/origin.ts).
      return { status: 403, code: ErrorCode.Forbidden };
    case 'tool_forbidden':
      // 200: the refusal is the answer to one JSON-RPC request (maybe one of a batch), and a
      // client shows it like any other error instead of failing the whole HTTP exchange.
      return { status: 200, code: ErrorCode.Forbidden };
    case 'rate_limited':
      // 429 when it is the only answer; inside a batch the element carries the error and the
      // exchange stays 200, like tool_forbidden.
      return { status: 429, code: ErrorCode.RateLimited };
    case 'rate_limit_unavailable':
      // The store failed and on_store_error = "deny".
      return { status: 503, code: ErrorCode.RateLimited };
    case 'internal':
      return { status: 500, code: ErrorCode.InternalError };
    case 'connect':
    case 'closed':
    case 'protocol':
      return { status: 502, code: ErrorCode.UpstreamError };
    case 'unavailable':
    case 'circuit_open':
      // circuit_open: refused without trying, after consecutive failures (src/upstreams/circuit-breaker.ts).
      return { status: 503, code: ErrorCode.UpstreamError };
    case 'timeout':
      return { status: 504, code: ErrorCode.UpstreamTimeout };
    case 'cancelled':
      return { status: 200, code: ErrorCode.RequestCancelled };
  }
}

/** The HTTP status of an answer that failed with `kind`, when it is the only answer of its response. */
export function statusOf(kind: GatewayErrorKind): number {
  return statusAndCode(kind).status;
}

export function httpError(error: GatewayError): HttpError {
  const { status, code } = statusAndCode(error.kind);
  const message = error.kind === 'internal' ? 'Internal error' : error.message;
  const rendered: HttpError = { status, body: errorResponse(error.id, code, message, error.data) };
  if (error.retryAfterSecs !== undefined) rendered.headers = { 'retry-after': String(error.retryAfterSecs) };
  return rendered;
}

/**
 * Answers a request with an error: its status, the given headers and its JSON-RPC body. Returns
 * the error object sent, for the audit line that records it.
 */
export function sendError(reply: FastifyReply, error: GatewayError, headers: Record<string, string> = {}): JsonRpcErrorObject {
  const { status, body, headers: own } = httpError(error);
  void reply
    .code(status)
    .headers(own ? { ...headers, ...own } : headers)
    .type('application/json')
    .send(JSON.stringify(body));
  return body.error;
}

/**
 * The one refusal that is not JSON-RPC-shaped: an unknown server, path or default route is a 404
 * with the body the seed guide documents, `{"error":"Server not found: NAME","available":[...]}`
 * (clients and scripts read `available`; it lists only the servers the caller may reach, and is
 * left out for a caller that has not proved an identity).
 */
export function sendNotFound(reply: FastifyReply, error: string, available?: readonly string[]): void {
  void reply.code(404).send(available === undefined ? { error } : { error, available });
}

/**
 * What Fastify itself throws from a route (its body parser: over `max_request_size`, an
 * unsupported content type, a malformed body) as the gateway's error. A 5xx is a bug: the
 * caller logs its cause, the client sees "Internal error".
 */
export function frameworkErrorOf(error: Error & { statusCode?: number }, maxRequestSize: number): GatewayError {
  const status = error.statusCode ?? 500;
  if (status === 413) return new GatewayError('payload_too_large', `Payload Too Large: the body exceeds ${maxRequestSize} bytes`);
  if (status === 415) return new GatewayError('unsupported_media_type', `Bad Request: ${error.message}`);
  if (status < 500) return new GatewayError('invalid_request', `Bad Request: ${error.message}`);
  return new GatewayError('internal', 'Internal error');
}

/**
 * What the HTTP parser refuses before any route runs (Fastify's clientErrorHandler): a request
 * not received in time (the `[server]` timeouts), headers over Node's limit (16 KB unless
 * --max-http-header-size says otherwise), bytes that are not HTTP. Answered with the same
 * JSON-RPC error body as every other refusal, then the connection is closed: after such an error
 * the rest of the stream cannot be trusted to be in step.
 */
export function renderClientError(error: Error & { code?: string }, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  // A response already under way on this connection must not be followed by a second status line.
  const inProgress = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true;
  if (socket.writable && !inProgress) {
    const { status, body } = httpError(clientError(error.code));
    const text = JSON.stringify(body);
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n` +
        `${SECURITY_HEADER_LINES}Connection: close\r\n\r\n${text}`,
    );
  }
  socket.destroy();
}

/**
 * What Fastify's router refuses before any route or hook runs (its `frameworkErrors`): a path it
 * cannot decode (`/ev/%u002e`), a route parameter over its length limit. The same JSON-RPC error
 * body as every other refusal, with the headers the first hook would have set.
 */
export function renderFrameworkError(error: Error & { code?: string }, request: FastifyRequest, reply: FastifyReply): void {
  setSecurityHeaders(reply);
  void reply.header('x-request-id', request.id);
  switch (error.code) {
    case 'FST_ERR_BAD_URL':
      sendError(reply, new GatewayError('invalid_request', 'Bad Request: the path is not a valid URL (a malformed percent-escape)'));
      return;
    case 'FST_ERR_MAX_PARAM_LENGTH':
      sendError(reply, new GatewayError('uri_too_long', 'URI Too Long: a path segment is too long'));
      return;
    default:
      request.log.error({ err: error }, 'request failed');
      sendError(reply, new GatewayError('internal', 'Internal error'));
  }
}

/** The GatewayError for an error code of Node's HTTP parser or server. */
function clientError(code: string | undefined): GatewayError {
  switch (code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new GatewayError('request_timeout', 'Request Timeout: the request was not received in time');
    case 'HPE_HEADER_OVERFLOW':
      return new GatewayError('headers_too_large', `Request Header Fields Too Large: the request line and headers exceed ${maxHeaderSize} bytes`);
    default:
      return new GatewayError('invalid_request', 'Bad Request: malformed HTTP request');
  }
}
