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
  | 'cancelled';

export class UpstreamError extends Error {
  override readonly name = 'UpstreamError';
  constructor(
    readonly kind: UpstreamErrorKind,
    /** The server's configured name. */
    readonly server: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function connectFailed(server: string, detail: string, cause?: unknown): UpstreamError {
  return new UpstreamError('connect', server, `Failed to connect to '${server}': ${detail}`, { cause });
}
