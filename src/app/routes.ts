/**
 * The routes: the gateway's own (health, metrics, OAuth metadata) and the MCP endpoints, with
 * stage 0 (the onRequest hooks) and stage 1 (resolving the target server) of the pipeline. The
 * stages after that are src/pipeline.ts.
 *
 *   /mcp/:server_name   a server by name; its url is used as it is
 *   /mcp                the default server (the only one, or the one with path_prefix "/")
 *   /*                  a server by path prefix; the rest of the path and the query are forwarded
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestAsyncHookHandler, onRequestHookHandler } from 'fastify';
import { mayReach } from '../auth/identity.js';
import type { RouteConfig } from '../config/schema.js';
import { identityOf, registerProtectedResourceMetadata } from '../http/auth.js';
import { GatewayError, sendError, sendNotFound } from '../http/errors.js';
import { registerHealthRoutes, type Lifecycle } from '../http/health.js';
import { registerMetricsRoute } from '../http/metrics.js';
import { handleDelete, handleGet, handlePost, type Context, type Target } from '../pipeline.js';
import { timedHook } from '../observability/tracing/hooks.js';
import type { StageTiming } from '../observability/tracing/tracing.js';
import { UnsafePathError } from '../routing/router.js';
import type { Services } from './services.js';

/** Paths the gateway owns even when a server's prefix is "/". */
const RESERVED = /^\/(health|live|ready|metrics|routes|\.well-known)(\/|$|\?)/;
const ALL_METHODS = ['GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'OPTIONS'] as const;
/**
 * The longest path and query a prefix route forwards (characters). An upstream's HTTP parser limits
 * its request line and headers together (Node: 16 KB), so a longer target would be refused there
 * with a 431 the client would see as a 502; it is a 414 here instead, before any upstream.
 */
export const MAX_FORWARDED_TARGET = 8_192;

/** Stands in for a limiter a reload removed (`enabled = false`): lets everything through. */
const NO_LIMITS = {
  addressHook: ((_request, _reply, done) => done()) as onRequestHookHandler,
  identityHook: ((_request, _reply, done) => done()) as onRequestHookHandler,
};

/** A stage 0 hook: callback-style (the rate limits) or async (authentication). */
type Stage0Hook = onRequestHookHandler | onRequestAsyncHookHandler;

/** The gateway's own paths under the catch-all (an unknown /health/x) answer 404 without credentials. */
function unlessReserved(hook: Stage0Hook): onRequestHookHandler {
  return function (request, reply, done) {
    if (RESERVED.test(request.url)) {
      done();
      return;
    }
    // A callback-style hook calls done itself; an async one ignores it and returns its promise.
    const result: unknown = (hook as onRequestHookHandler).call(this, request, reply, done);
    if (result instanceof Promise) result.then(() => done(), done);
  };
}

export function registerRoutes(app: FastifyInstance, services: Services, lifecycle: Lifecycle): void {
  // What a reload replaces (src/app/reload.ts: router, authenticator, limiter, config) is read from
  // `services` when a request comes; what it never replaces is taken once.
  const { config, gateway, metrics, authenticate, authenticator, limiter, recorder } = services;
  registerHealthRoutes(app, gateway, lifecycle, config.auth?.protect_routes ? authenticate : undefined);
  if (metrics) registerMetricsRoute(app, metrics, config.auth?.protect_metrics ? authenticate : undefined);
  if (config.auth) registerProtectedResourceMetadata(app, config.auth);

  const notFound = (request: FastifyRequest, reply: FastifyReply, error: string): void => {
    // Only the servers this caller may reach: a restricted identity does not learn the others, and
    // a caller that has not proved an identity (the gateway's own paths skip authentication) learns none.
    if (authenticator.required && request.identity === null) return sendNotFound(reply, error);
    const identity = identityOf(request);
    sendNotFound(
      reply,
      error,
      services.router.names().filter((name) => mayReach(identity, name)),
    );
  };

  /** Runs an MCP handler for a target (counted as in flight by the first onRequest hook). */
  // Not async: it hands on the handler's own promise (one more async frame is one more promise and microtask per request).
  const serve = (target: Target, request: FastifyRequest, reply: FastifyReply): Promise<void> | undefined => {
    request.mcpServer = target.server.name;
    const context: Context = {
      gateway,
      target,
      identity: identityOf(request),
      limiter: services.limiter,
      recorder,
      request,
      tracing: services.tracing,
      integrity: services.integrity,
      approvals: services.approvals,
    };
    switch (request.method) {
      case 'POST':
        return handlePost(context, reply);
      case 'GET':
        return handleGet(context, reply);
      case 'DELETE':
        return handleDelete(context, reply);
      default:
        sendError(reply, new GatewayError('method_not_allowed', `Method Not Allowed: ${request.method}; an MCP endpoint takes POST, GET and DELETE`), {
          allow: 'GET, POST, DELETE',
        });
        return undefined;
    }
  };

  /**
   * Marks an MCP exchange, so that it is counted once it has ended (by the first hook's close
   * listener), streams and early refusals included. Callback-style, like every hook that need not
   * wait: an async one costs a promise per request.
   */
  const observe: onRequestHookHandler = (request, _reply, done) => {
    request.mcpEndpoint = true;
    done();
  };
  const observeUnlessReserved: onRequestHookHandler = (request, _reply, done) => {
    if (!RESERVED.test(request.url)) request.mcpEndpoint = true;
    done();
  };

  // Every method reaches the MCP endpoints, so that the wrong one is a 405 rather than a 404.
  // Every MCP route runs pipeline stage 0 first, before the body is read: the address limit,
  // authentication, then the identity's limit.
  // Each hook runs the limiter or authenticator of the moment (a reload may replace them); those a
  // config does not have at start-up cost nothing (turning them on or off needs a restart:
  // src/config/diff.ts).
  const addressLimit: onRequestHookHandler = function (request, reply, done) {
    (services.limiter ?? NO_LIMITS).addressHook.call(this, request, reply, done);
  };
  const identityLimit: onRequestHookHandler = function (request, reply, done) {
    (services.limiter ?? NO_LIMITS).identityHook.call(this, request, reply, done);
  };
  const authenticateNow: onRequestAsyncHookHandler = function (this: FastifyInstance, request, reply) {
    return services.authenticate.call(this, request, reply);
  };
  // With telemetry on, each also notes when it ran, for the request's spans (src/observability/tracing/).
  const timed = (name: StageTiming['name'], hook: Stage0Hook): Stage0Hook => (config.telemetry ? timedHook(name, hook) : hook);
  const stage0 = [
    limiter ? timed('rate_limit', addressLimit) : undefined,
    authenticator.required ? timed('authenticate', authenticateNow) : undefined,
    limiter ? timed('rate_limit', identityLimit) : undefined,
  ].filter((hook): hook is Stage0Hook => hook !== undefined);
  const onRequest = [observe, ...stage0];
  app.route({
    method: [...ALL_METHODS],
    url: '/mcp/:server_name',
    onRequest,
    handler: async (request, reply) => {
      const name = (request.params as { server_name: string }).server_name;
      const server = services.router.byName(name);
      if (!server) return notFound(request, reply, `Server not found: ${name}`);
      // By name, the upstream url is used as it is: no path is appended.
      return serve({ server, forwardPath: '' }, request, reply);
    },
  });

  const defaultServer = (): RouteConfig | undefined => {
    const now = services.config;
    return now.single ? now.servers[0] : (now.servers.find((s) => s.path_prefix === '/') ?? now.virtual_servers.find((v) => v.path_prefix === '/'));
  };
  app.route({
    method: [...ALL_METHODS],
    url: '/mcp',
    onRequest,
    handler: async (request, reply) => {
      const server = defaultServer();
      if (!server) return notFound(request, reply, 'No default server: use /mcp/:server_name');
      return serve({ server, forwardPath: '' }, request, reply);
    },
  });

  app.route({
    method: [...ALL_METHODS],
    url: '/*',
    onRequest: [observeUnlessReserved, ...stage0.map(unlessReserved)],
    handler: async (request, reply) => {
      if (RESERVED.test(request.url)) return notFound(request, reply, `Not found: ${request.url.split('?')[0]}`);
      if (request.url.length > MAX_FORWARDED_TARGET) {
        sendError(reply, new GatewayError('uri_too_long', `URI Too Long: the path and query exceed ${MAX_FORWARDED_TARGET} characters`));
        return;
      }
      let match;
      try {
        match = services.router.match(request.url);
      } catch (err) {
        if (!(err instanceof UnsafePathError)) throw err;
        sendError(reply, new GatewayError('invalid_request', `Bad Request: ${err.message}`));
        return;
      }
      if (!match) return notFound(request, reply, `No route for path: ${request.url.split('?')[0]}`);
      return serve(match, request, reply);
    },
  });
}
