/**
 * DNS rebinding protection: the Host and Origin of every request are checked before anything
 * else runs (authentication, rate limits, body parsing), on every route.
 *
 * The attack: a page on evil.example makes its own name resolve to 127.0.0.1 (or to the
 * gateway's LAN address). The browser then treats the gateway as evil.example, same origin, and
 * the page can call tools and read the answers. Its requests give it away: their Host is
 * evil.example, and their Origin (sent by browsers with every POST and DELETE, and with every
 * cross-origin request) is http://evil.example. So:
 *
 * - Host must be one of `[server] allowed_hosts`. Default on a loopback listener: localhost,
 *   127.0.0.1, [::1] (and the listen address), on any port: the port says nothing about who
 *   sent a request, and port forwards (docker -p, ssh -L) change it. Default on any other
 *   address: not checked (the gateway cannot know the names clients use; a warning says so).
 *   On /health, /live, /ready and /metrics a Host that rebinding cannot produce (none, an IP
 *   address, `localhost`) is accepted as well: probes and scrapers address the process by IP.
 * - Origin, when present, must be one of `[server.cors] allowed_origins` (with CORS enabled).
 *   Default: http(s) pages on the loopback names, any port, on a loopback listener; none on any
 *   other. Requests without Origin (curl, SDK clients, servers) are not browsers and pass.
 *
 * A Host that is not a syntactically valid host[:port] is a 400 whatever the settings (RFC 9112
 * section 3.2): the gateway echoes the Host in OAuth metadata and WWW-Authenticate.
 *
 * Refusals are 403 with a JSON-RPC error body, as the MCP specification asks for a bad Origin
 * ("Security Warning" of the streamable HTTP transport). A bad Host is a 403 too, not a 421:
 * 421 (Misdirected Request) invites a client to retry on another connection, which would be
 * refused the same way; 403 is final, is what the SDKs send, and what conformance suites expect.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ServerSettings } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import { GatewayError, sendError } from './errors.js';
import {
  cannotBeRebound,
  hostMatches,
  isLoopbackAddress,
  loopbackHostPatterns,
  loopbackOriginPatterns,
  originMatches,
  parseHost,
  parseHostPattern,
  parseOrigin,
  parseOriginPattern,
  type HostValue,
  type OriginPattern,
} from './origin-match.js';

/** Routes that monitoring polls by IP: they also accept a Host rebinding cannot produce. */
const PROBE_PATHS = /^\/(health|live|ready|metrics)(\?|$)/;

/**
 * A configured allow-list as the policy holds it: undefined (everything) when it contains "*",
 * else its parsed entries; `fallback` when the list is not configured at all.
 */
function configured<T>(entries: ReadonlyArray<T | '*' | undefined> | undefined, fallback: readonly T[] | undefined): readonly T[] | undefined {
  if (entries === undefined) return fallback;
  if (entries.includes('*')) return undefined;
  return entries.filter((entry): entry is T => entry !== undefined && entry !== '*');
}

/** Which Hosts and Origins the gateway accepts; derived once from `[server]`. */
export class AccessPolicy {
  private constructor(
    /** undefined: every Host. */
    readonly hosts: readonly HostValue[] | undefined,
    /** undefined: every Origin ("*"). */
    readonly origins: readonly OriginPattern[] | undefined,
    /** Said once at start-up: where the settings leave a gap. */
    readonly warnings: readonly string[],
  ) {}

  static of(server: ServerSettings): AccessPolicy {
    const loopback = isLoopbackAddress(server.host);
    const hostEntries = server.allowed_hosts?.map(parseHostPattern);
    const hosts = configured(hostEntries, loopback ? loopbackHostPatterns(server.host) : undefined);
    const cors = server.cors?.enabled ? server.cors : undefined;
    const originEntries = cors?.allowed_origins?.map(parseOriginPattern);
    const origins = configured(originEntries, loopback ? loopbackOriginPatterns(server.host) : []);
    const warnings: string[] = [];
    if (server.allowed_hosts === undefined && !loopback) {
      warnings.push(
        // Like every start-up warning, no value: the host may have come from the environment.
        '[server] host is not a loopback address and allowed_hosts is not set: the Host header is not checked, ' +
          'so DNS rebinding is stopped by the Origin check alone; set server.allowed_hosts to the names clients use (["*"] silences this)',
      );
    }
    if (cors && origins?.length === 0) {
      warnings.push(
        '[server.cors] is enabled but allows no origin: set server.cors.allowed_origins (the default allows loopback pages only on a loopback host)',
      );
    }
    return new AccessPolicy(hosts, origins, warnings);
  }

  /** True when a request may carry this Origin header. */
  originAllowed(value: string): boolean {
    if (this.origins === undefined) return true;
    const origin = parseOrigin(value);
    return origin !== undefined && originMatches(this.origins, origin);
  }

  /** True when a request to this url may carry this (valid, or absent) Host. */
  hostAllowed(host: HostValue | undefined, url: string): boolean {
    if (this.hosts === undefined) return true;
    if (host !== undefined && hostMatches(this.hosts, host)) return true;
    return PROBE_PATHS.test(url) && cannotBeRebound(host);
  }
}

/**
 * Adds the onRequest hook that refuses a bad Host or Origin, ahead of every route's own hooks.
 * Returns the policy, which CORS shares.
 */
export function registerOriginChecks(
  app: FastifyInstance,
  server: ServerSettings,
  log: Logger,
  /** Each refusal, for the audit log and metrics. */
  onRefused: (request: FastifyRequest, reason: string) => void = () => undefined,
): AccessPolicy {
  const policy = AccessPolicy.of(server);
  for (const warning of policy.warnings) log.warn(warning);
  // Callback-style: an async hook costs a promise per request.
  app.addHook('onRequest', (request, reply, done) => {
    const hostHeader = request.headers.host;
    const host = hostHeader === undefined ? undefined : parseHost(hostHeader);
    if (hostHeader !== undefined && host === undefined) {
      request.log.info({ url: request.url.split('?')[0] }, 'request refused: invalid Host header');
      onRefused(request, 'invalid Host header');
      sendError(reply, new GatewayError('invalid_request', 'Bad Request: invalid Host header'));
      return;
    }
    if (!policy.hostAllowed(host, request.url)) {
      request.log.info({ host: hostHeader, url: request.url.split('?')[0] }, 'request refused: Host not allowed (server.allowed_hosts)');
      onRefused(request, 'Host not allowed');
      sendError(reply, new GatewayError('origin_forbidden', 'Forbidden: Host not allowed'));
      return;
    }
    const origin = request.headers.origin;
    if (origin !== undefined && !policy.originAllowed(origin)) {
      request.log.info({ origin, url: request.url.split('?')[0] }, 'request refused: Origin not allowed (server.cors.allowed_origins)');
      onRefused(request, 'Origin not allowed');
      sendError(reply, new GatewayError('origin_forbidden', 'Forbidden: Origin not allowed'));
      return;
    }
    done();
  });
  return policy;
}
