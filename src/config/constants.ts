/**
 * The configuration's constants and patterns that the running gateway needs too: kept apart from
 * schema.ts so that the running gateway never loads zod. `mcp-guard serve` validates its config in
 * a short-lived child process (load-isolated.ts); zod and the schemas live only there, and this
 * module is what the two sides share.
 */

/** The longest delay setTimeout honours; a larger one fires at once, which would turn a deadline into an instant failure. */
export const MAX_TIMER_MS = 2_147_483_647;

/** What a server name may look like: it appears in URLs (`/mcp/:server_name`), logs and metric labels. */
export const SERVER_NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Paths the gateway serves itself. A prefix equal to one of them or below it would shadow the
 * endpoint; `/mcp` is here because `/mcp` and `/mcp/:server_name` are the by-name endpoints.
 */
export const RESERVED_PATHS = ['/health', '/live', '/ready', '/metrics', '/routes', '/.well-known', '/mcp'] as const;

/**
 * Header names the transports manage themselves. Hop-by-hop and framing headers would corrupt
 * the connection; the MCP session headers belong to the session the gateway holds upstream.
 */
export const GATEWAY_MANAGED_HEADERS = [
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'proxy-connection',
  'upgrade',
  'te',
  'trailer',
  'mcp-session-id',
  'mcp-protocol-version',
  // The 2026-07-28 request headers mirror each request's body (specification, streamable HTTP).
  'mcp-method',
  'mcp-name',
  // W3C Trace Context: the forwarded request's own (its `_meta` mirrored: src/protocol/trace-context.ts).
  'traceparent',
  'tracestate',
] as const;

/** What an identity id may look like: it appears in logs, audit lines and metric labels. */
export const IDENTITY_ID_PATTERN = /^[A-Za-z0-9._@:+-]{1,128}$/;

/** The lookup hint of a key made by `mcp-guard keygen`: the key's first 12 characters, not secret. */
export const KEY_PREFIX_PATTERN = /^mcp_[a-z0-9]{8}$/;

/** An argon2id hash in PHC form, as `mcp-guard hash-key` prints it. */
export const ARGON2ID_PHC_PATTERN = /^\$argon2id\$v=19\$[mtp]=\d+(?:,[mtp]=\d+){2}\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/;

/** The earlier gateway's hashes: unsalted SHA-256, base64. Accepted for migration, with a warning. */
export const LEGACY_SHA256_PATTERN = /^[A-Za-z0-9+/]{43}=?$/;

/** Asymmetric JWS algorithms jose verifies; the only ones allowed with a JWKS (never HS*, never none). */
export const ASYMMETRIC_JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;

/** Shared-secret JWS algorithms, for mode = "simple". */
export const HMAC_JWT_ALGORITHMS = ['HS256', 'HS384', 'HS512'] as const;

/** A SHA-256 certificate fingerprint: 64 hex digits, with or without ":" between the bytes (as `openssl x509 -fingerprint -sha256` prints it). */
export const FINGERPRINT_SHA256_PATTERN = /^(?:[0-9A-Fa-f]{64}|[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31})$/;

/** A fingerprint in the one form the gateway compares: 64 uppercase hex digits, no separators. */
export function normaliseFingerprint(value: string): string {
  return value.replace(/:/g, '').toUpperCase();
}
