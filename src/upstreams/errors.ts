/**
 * Local errors of the upstream layer. They never go on the wire as they are: src/http/errors.ts
 * maps each kind to one HTTP status and one JSON-RPC error, in one place.
 */
export type UpstreamErrorKind =
  /** Could not connect (refused, DNS, TLS, spawn failure). */
  | 'connect'
  /** The server is not running right now (restarting, crash loop, shutting down). */
  | 'unavailable'
  /** No answer within the deadline. */
  | 'timeout'
  /** The connection or process ended while the request was in flight. */
  | 'closed'
  /** The upstream answered with something that is not MCP (HTTP 5xx, bad JSON, unexpected type). */
  | 'protocol'
  /** The upstream no longer knows the session (HTTP 404 on Mcp-Session-Id). */
  | 'session_expired'
  /** The client cancelled the request. */
  | 'cancelled'
  /**
   * Refused without reaching the server: its circuit is open after consecutive failures
   * (circuit-breaker.ts). Carries retryAfterMs.
   */
  | 'circuit_open';

export class UpstreamError extends Error {
  override readonly name = 'UpstreamError';
  /** When known, how long until the server may be tried again, in ms (an HTTP `Retry-After` for the client). */
  readonly retryAfterMs: number | undefined;
  constructor(
    readonly kind: UpstreamErrorKind,
    /** The server's configured name. */
    readonly server: string,
    message: string,
    options?: { cause?: unknown; retryAfterMs?: number },
  ) {
    super(message, options);
    this.retryAfterMs = options?.retryAfterMs;
  }
}

export function connectFailed(server: string, detail: string, cause?: unknown): UpstreamError {
  return new UpstreamError('connect', server, `Failed to connect to '${server}': ${detail}`, { cause });
}
