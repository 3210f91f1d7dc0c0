/**
 * CORS as `[server.cors]` says, for browser-based MCP clients (an inspector, a web app). Off by
 * default: then no Access-Control-* header is ever sent and a preflight is not answered as
 * allowed (it reaches the route like any OPTIONS: 405 on an MCP endpoint, 401 when credentials
 * are required), so a browser refuses to send anything but simple requests, whose answers it
 * does not let the page read.
 *
 * On, for an Origin the access policy allows (src/http/origin.ts; others were refused with 403
 * before this hook runs):
 * - a preflight (OPTIONS with Access-Control-Request-Method) is answered here with 204, before
 *   authentication and rate limits: browsers never send credentials with a preflight;
 * - every other response, on every route, carries Access-Control-Allow-Origin with that origin
 *   (`*` when allowed_origins is ["*"], which config validation refuses with credentials), the
 *   exposed headers, and Access-Control-Allow-Credentials when allow_credentials is set.
 * Every response carries `Vary: Origin`, since the answer depends on it.
 *
 * The headers are set on the raw response at onRequest, so that they reach streamed (SSE)
 * answers too, which are written to the socket directly; an error or a 401 carries them as well,
 * so a browser client can read why it was refused (and WWW-Authenticate, for OAuth discovery).
 *
 * Not @fastify/cors: it answers preflights from an `OPTIONS *` route, which collides with the
 * gateway's catch-all route (every method reaches an MCP endpoint, so a wrong one is a 405),
 * and sets its headers on the Fastify reply, where a hijacked SSE response never sees them.
 */
import type { FastifyInstance } from 'fastify';
import type { CorsSettings } from '../config/schema.js';
import type { AccessPolicy } from './origin.js';

/** What an MCP endpoint answers to; the gateway's other routes take GET only. */
const METHODS = 'GET, POST, DELETE';

/** Request headers a browser MCP client sends (streamable HTTP, and bearer authentication). */
export const CORS_REQUEST_HEADERS = ['Authorization', 'Content-Type', 'Accept', 'Mcp-Session-Id', 'MCP-Protocol-Version', 'Last-Event-ID'] as const;

/** Response headers a browser MCP client must read: its session, the auth challenge, and why to wait. */
export const CORS_EXPOSED_HEADERS = [
  'Mcp-Session-Id',
  'WWW-Authenticate',
  'X-Request-Id',
  'Retry-After',
  'RateLimit-Limit',
  'RateLimit-Remaining',
  'RateLimit-Reset',
] as const;

/** The built-in names followed by the configured ones, each once (names compared without case). */
function headerList(builtIn: readonly string[], configured: readonly string[]): string {
  const seen = new Set<string>();
  const names: string[] = [];
  for (const name of [...builtIn, ...configured]) {
    if (seen.has(name.toLowerCase())) continue;
    seen.add(name.toLowerCase());
    names.push(name);
  }
  return names.join(', ');
}

export function registerCors(app: FastifyInstance, cors: CorsSettings | undefined, policy: AccessPolicy): void {
  if (!cors?.enabled) return;
  const anyOrigin = policy.origins === undefined;
  const allowHeaders = headerList(CORS_REQUEST_HEADERS, cors.allowed_headers);
  const exposeHeaders = headerList(CORS_EXPOSED_HEADERS, cors.exposed_headers);
  const maxAge = String(cors.max_age_secs);
  app.addHook('onRequest', (request, reply, done) => {
    const res = reply.raw;
    res.setHeader('vary', 'Origin');
    const origin = request.headers.origin;
    if (origin === undefined || !policy.originAllowed(origin)) {
      done();
      return;
    }
    res.setHeader('access-control-allow-origin', anyOrigin && !cors.allow_credentials ? '*' : origin);
    if (cors.allow_credentials) res.setHeader('access-control-allow-credentials', 'true');
    if (request.method === 'OPTIONS' && request.headers['access-control-request-method'] !== undefined) {
      void reply
        .code(204)
        .headers({ 'access-control-allow-methods': METHODS, 'access-control-allow-headers': allowHeaders, 'access-control-max-age': maxAge })
        .send();
      return;
    }
    res.setHeader('access-control-expose-headers', exposeHeaders);
    done();
  });
}
