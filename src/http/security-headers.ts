/**
 * Headers on every response the gateway's routes give (MCP answers and streams, health, routes,
 * metrics, OAuth metadata, errors, 404s). The gateway serves JSON and event streams only, never
 * a page, so the set is the one for an API:
 *
 * - `X-Content-Type-Options: nosniff`: a browser never reads a JSON answer as HTML or script.
 * - `Cache-Control: no-store`: answers hold tool results, session ids and identities; no shared
 *   or browser cache keeps them. (A route that says otherwise wins: SSE streams send
 *   `no-cache, no-transform`, which proxies need in order not to buffer or compress a stream.)
 * - `Referrer-Policy: no-referrer`.
 * - `X-Frame-Options: DENY` and `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'`:
 *   if a response is ever opened as a document, it loads nothing and cannot be framed.
 * - `Cross-Origin-Resource-Policy: same-origin`: another site cannot embed a response with
 *   `<script>` or `<img>` (no-cors loads); CORS requests, which it does not apply to, are
 *   governed by `[server.cors]`.
 *
 * Not sent: `Strict-Transport-Security` (the gateway speaks plain HTTP; HSTS belongs to the
 * TLS-terminating proxy, and browsers ignore it over HTTP), `X-XSS-Protection` (obsolete).
 * Neither Fastify nor Node add `X-Powered-By` or `Server`, so nothing names the software.
 *
 * Set on the Fastify reply by the app's first onRequest hook (src/app.ts), so every answer carries
 * them; a streamed answer, which Fastify hands over (SseWriter.of), takes them along. Not with
 * `res.setHeader`: a header set on the raw response sends Node's writeHead down its slow path,
 * which validates and copies every header once more. What Node's HTTP parser refuses before any
 * route runs is written to the socket by renderClientError (src/http/errors.ts), with the same
 * headers.
 */
import type { FastifyReply } from 'fastify';

export const SECURITY_HEADERS: ReadonlyArray<readonly [string, string]> = [
  ['x-content-type-options', 'nosniff'],
  ['cache-control', 'no-store'],
  ['referrer-policy', 'no-referrer'],
  ['x-frame-options', 'DENY'],
  ['content-security-policy', "default-src 'none'; frame-ancestors 'none'"],
  ['cross-origin-resource-policy', 'same-origin'],
];

export function setSecurityHeaders(reply: FastifyReply): void {
  for (const [name, value] of SECURITY_HEADERS) reply.header(name, value);
}
