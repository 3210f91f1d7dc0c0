/**
 * Authentication at the HTTP boundary: the onRequest hook that runs before a protected route
 * reads its body, the 401/429/503 answers, and the OAuth protected resource metadata (RFC 9728)
 * that tells a client where to get a token.
 *
 * Every refusal looks the same to the client whatever failed (no credentials, unknown key,
 * expired token, wrong audience): the reason goes to the log line with the request id.
 */
import type { FastifyInstance, FastifyRequest, onRequestAsyncHookHandler } from 'fastify';
import type { AuthOutcome, Authenticator } from '../auth/authenticator.js';
import { ANONYMOUS, type Identity } from '../auth/identity.js';
import type { AuthConfig } from '../config/schema.js';
import type { Recorder } from '../observability/recorder.js';
import { GatewayError, sendError } from './errors.js';
import { verifiedPeer } from './tls.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the authentication hook on protected routes; null elsewhere. */
    identity: Identity | null;
  }
}

export const PROTECTED_RESOURCE_PATH = '/.well-known/oauth-protected-resource';

/** The identity of a request on a protected route (ANONYMOUS when no auth is configured). */
export function identityOf(request: FastifyRequest): Identity {
  return request.identity ?? ANONYMOUS;
}

/** This gateway as an OAuth resource: `[auth] resource`, else the scheme and Host the client used. */
function resourceBase(config: AuthConfig | undefined, request: FastifyRequest): string {
  if (config?.resource) return config.resource.replace(/\/$/, '');
  return `${request.protocol}://${request.host}`;
}

function challenge(config: AuthConfig | undefined, request: FastifyRequest, outcome: Extract<AuthOutcome, { ok: false }>): string {
  const parts = ['Bearer realm="mcp-guard"'];
  // RFC 6750 section 3.1: no error code when the request carried no credentials at all.
  if (outcome.credentialSent) parts.push('error="invalid_token"');
  parts.push(`resource_metadata="${resourceBase(config, request)}${PROTECTED_RESOURCE_PATH}"`);
  return parts.join(', ');
}

/** The answer to a refused authentication: the same body for every cause of the same kind. */
function refusalOf(
  config: AuthConfig | undefined,
  request: FastifyRequest,
  outcome: Extract<AuthOutcome, { ok: false }>,
): [GatewayError, Record<string, string>] {
  switch (outcome.kind) {
    case 'unauthenticated':
      return [new GatewayError('unauthenticated', 'Unauthorized: missing or invalid credentials'), { 'www-authenticate': challenge(config, request, outcome) }];
    case 'throttled':
      return [
        new GatewayError('auth_throttled', 'Too Many Requests: too many failed authentication attempts; try again later'),
        { 'retry-after': String(outcome.retryAfter ?? 60) },
      ];
    case 'busy':
      return [
        new GatewayError('auth_unavailable', 'Service Unavailable: authentication is busy; try again shortly'),
        { 'retry-after': String(outcome.retryAfter ?? 1) },
      ];
  }
}

/**
 * The hook that authenticates a protected route. It runs at onRequest, before the body is read:
 * an unauthenticated client costs no body parsing.
 */
export function authenticationHook(authenticator: Authenticator, config: AuthConfig | undefined, recorder: Recorder): onRequestAsyncHookHandler {
  return async (request, reply) => {
    // The client certificate that verified at the handshake, if any (src/http/tls.ts).
    const peer = verifiedPeer(request.raw.socket);
    const outcome = await authenticator.authenticate(request.headers.authorization, request.clientIp, peer);
    if (outcome.ok) {
      request.identity = outcome.identity;
      let verified = outcome.verified;
      // A certificate is checked once per connection: one auth_success audit line per connection.
      if (peer && outcome.identity.provider === 'client_cert') {
        verified = !peer.audited;
        peer.audited = true;
      }
      recorder.authenticated(request, outcome.identity, verified);
      return;
    }
    request.log.info(
      { reason: outcome.reason, provider: outcome.provider, clientIp: request.clientIp, url: request.url.split('?')[0] },
      'authentication failed',
    );
    const [error, headers] = refusalOf(config, request, outcome);
    recorder.authFailed(request, outcome, sendError(reply, error, headers));
  };
}

/**
 * GET /.well-known/oauth-protected-resource (and the path-suffixed form RFC 9728 section 3.1
 * derives for a resource with a path, e.g. .../oauth-protected-resource/mcp/files).
 */
export function registerProtectedResourceMetadata(app: FastifyInstance, config: AuthConfig): void {
  const scopes = config.jwt?.scope_tool_mapping ? Object.keys(config.jwt.scope_tool_mapping) : undefined;
  const handler = async (request: FastifyRequest) => {
    const suffix = request.url.split('?')[0]!.slice(PROTECTED_RESOURCE_PATH.length);
    return {
      resource: `${resourceBase(config, request)}${suffix}`,
      ...(config.jwt?.authorization_servers ? { authorization_servers: config.jwt.authorization_servers } : {}),
      ...(scopes && scopes.length > 0 ? { scopes_supported: scopes } : {}),
      bearer_methods_supported: ['header'],
      resource_name: 'MCP Guard',
    };
  };
  app.get(PROTECTED_RESOURCE_PATH, handler);
  app.get(`${PROTECTED_RESOURCE_PATH}/*`, handler);
}
