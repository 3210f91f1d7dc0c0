/**
 * buildApp(config): the Fastify instance with every route wired. It never listens by itself;
 * src/main.ts does, and tests listen on port 0.
 */
import { randomUUID } from 'node:crypto';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type onRequestAsyncHookHandler,
  type onRequestHookHandler,
} from 'fastify';
import { Authenticator, type AuthenticatorOptions } from './auth/authenticator.js';
import { mayReach } from './auth/identity.js';
import type { GatewayConfig, ServerConfig } from './config/schema.js';
import { authenticationHook, identityOf, registerProtectedResourceMetadata } from './http/auth.js';
import { GatewayError, renderClientError, renderFrameworkError, sendError } from './http/errors.js';
import { applyListenerLimits } from './http/listener.js';
import { loadTls, watchTls } from './http/tls.js';
import { registerHealthRoutes, type Lifecycle } from './http/health.js';
import { registerMetricsRoute } from './http/metrics.js';
import { registerCors } from './http/cors.js';
import { lingerForBody } from './http/linger.js';
import { registerOriginChecks } from './http/origin.js';
import { setSecurityHeaders } from './http/security-headers.js';
import { Gateway, type UpstreamFactory } from './mcp/gateway.js';
import { AuditLog } from './observability/audit/log.js';
import { LazyChildLogger, type Logger } from './observability/logger.js';
import { Metrics } from './observability/metrics.js';
import { lazySchemaCompilers } from './optional.js';
import { Recorder } from './observability/recorder.js';
import { handleDelete, handleGet, handlePost, type Context, type Target } from './pipeline.js';
import { RateLimiter } from './ratelimit/limiter.js';
import { Router, UnsafePathError } from './routing/router.js';
import { createUpstream } from './upstreams/factory.js';

export interface App {
  app: FastifyInstance;
  gateway: Gateway;
  lifecycle: Lifecycle;
  /**
   * The rate limits; undefined without `[rate_limit]` or with `enabled = false`. Its
   * `onDecision` / `onStoreError` listeners and `stats` are for the audit log and metrics.
   */
  limiter: RateLimiter | undefined;
  /** The audit log and the metrics, fed together (src/observability/recorder.ts). */
  recorder: Recorder;
  /** Who is calling: its `stats` show the argon2 work in flight (API keys). */
  authenticator: Authenticator;
  /** Starts every upstream; readiness follows. */
  start(): Promise<void>;
  /** Graceful stop: refuse new requests, let those in flight finish within the grace period, end upstreams. */
  stop(): Promise<void>;
}

export interface AppOptions {
  logger: Logger;
  /** Replaces how upstreams are created (tests use real ones; this is for wrapping them). */
  createUpstream?: UpstreamFactory;
  /** Tuning of the verifiers (tests shorten the JWKS cooldown). */
  auth?: AuthenticatorOptions;
  /** Where `[audit] stdout = true` writes (tests capture it); default process.stdout. */
  auditStdout?: NodeJS.WritableStream;
}

/** Paths the gateway owns even when a server's prefix is "/". */
const RESERVED = /^\/(health|live|ready|metrics|routes|\.well-known)(\/|$|\?)/;
const ALL_METHODS = ['GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'OPTIONS'] as const;
/**
 * The longest path and query a prefix route forwards (characters). An upstream's HTTP parser limits
 * its request line and headers together (Node: 16 KB), so a longer target would be refused there
 * with a 431 the client would see as a 502; it is a 414 here instead, before any upstream.
 */
export const MAX_FORWARDED_TARGET = 8_192;

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

/** A stage 0 hook: callback-style (the rate limits) or async (authentication). */
type Stage0Hook = onRequestHookHandler | onRequestAsyncHookHandler;

/**
 * Throws when the audit log cannot be opened (its file's directory is missing): nothing is
 * started then.
 */
export function buildApp(config: GatewayConfig, options: AppOptions): App {
  const log = options.logger;
  // [server.tls]: the certificate and key are read and checked first (a ConfigError naming the key otherwise).
  const tls = config.server.tls ? loadTls(config.server.tls) : undefined;
  for (const warning of tls?.warnings ?? []) log.warn(warning);
  const metrics = config.server.metrics ? new Metrics({ servers: config.servers.map((s) => s.name) }) : undefined;
  const audit = AuditLog.create(config.audit, { log, ...(options.auditStdout ? { stdout: options.auditStdout } : {}) });
  const recorder = new Recorder(audit, metrics);
  const upstreamDeps = {
    logger: log,
    onRestart: (server: string) => recorder.lifecycle('upstream_restart', { server }),
    onContained: (server: string, method: string, reason: string) => recorder.withheld(server, method, reason),
    // Read when an isolated stdio server must end a child: the gateway exists by then.
    ownerHasTasks: (server: string, owner: string): boolean => gateway.tasks.holds(server, owner),
  };
  const gateway: Gateway = new Gateway(config, options.createUpstream ?? ((server) => createUpstream(server, upstreamDeps)), log);
  const router = new Router(config.servers);
  const authenticator = new Authenticator(config.auth, options.auth);
  const authenticate = authenticationHook(authenticator, config.auth, recorder);
  const limiter = config.rate_limit?.enabled ? new RateLimiter(config.rate_limit, [...(config.auth?.api_keys ?? []), ...(config.auth?.client_certs ?? [])], log) : undefined;
  if (limiter) {
    limiter.onDecision = (scope, allowed, request, identity, detail) => {
      if (allowed) recorder.rateAllowed(scope);
      else recorder.rateLimited(request, scope, identity, request.mcpServer ?? undefined, detail?.tool);
    };
    limiter.onStoreError = () => metrics?.rateLimitStoreError();
  }
  metrics?.bindGateway(gateway);
  metrics?.setAuditStats(() => audit.stats);
  const lifecycle: Lifecycle = { started: false, stopping: false };
  let inflight = 0;
  let drained: (() => void) | undefined;

  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    // Per-request log lines stay off the hot path; the audit log (a later stage) records each call.
    logController: new LogController({ disableRequestLogging: true }),
    // request.log is made when a request first logs, not for every request.
    childLoggerFactory: (logger, bindings, options) => new LazyChildLogger(logger as Logger, bindings, options),
    bodyLimit: config.server.max_request_size,
    // ajv and fast-json-stringify load only if a route ever declares a schema (none does).
    schemaController: { compilersFactory: lazySchemaCompilers },
    // Always the gateway's own id (the audit line's request_id): a client may neither choose nor
    // collide it. Its own x-request-id is kept apart, as client_request_id (src/observability/recorder.ts).
    genReqId: () => randomUUID(),
    // While closing, the first hook below answers 503 itself: with a JSON-RPC body and the
    // security headers, which Fastify's own closing answer lacks.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    // What the HTTP parser refuses (slow, oversized or malformed requests) gets a JSON-RPC error too.
    clientErrorHandler: renderClientError,
    // What the router refuses before any hook (a path it cannot decode, `/ev/%u002e`) too.
    frameworkErrors: renderFrameworkError,
    // With [server.tls] the port serves HTTPS only (src/http/tls.ts). The https server has the
    // same API as the http one this instance is typed with.
    ...(tls ? { https: tls.options } : {}),
  }) as unknown as FastifyInstance;
  if (tls) watchTls(app.server, tls.clientAuth, log);
  // Timeouts for slow clients and the connection cap of [server].
  applyListenerLimits(app.server, config.server);

  // Bodies are decoded by the pipeline, which answers malformed JSON with a JSON-RPC parse error.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_request, body, done) => done(null, body));

  app.decorateRequest('identity', null);
  app.decorateRequest('mcpServer', null);
  app.decorateRequest('receivedAt', 0);
  app.decorateRequest('mcpEndpoint', false);
  limiter?.register(app);
  // Callback-style: an async hook costs a promise per request.
  app.addHook('onRequest', (request, reply, done) => {
    request.receivedAt = performance.now();
    // First, so that every answer carries them, the shutdown 503 below included.
    setSecurityHeaders(reply);
    void reply.header('x-request-id', request.id);
    // In flight for graceful shutdown from its first hook to the end of its answer: a request whose
    // body (or authentication) is still under way when SIGTERM comes is waited for too. GETs are
    // not: an event stream would hold the shutdown for the whole grace period.
    const counted = request.method !== 'GET';
    if (counted) inflight++;
    // One listener per request for both: the end of an MCP exchange is recorded (see observe).
    reply.raw.once('close', () => {
      if (request.mcpEndpoint) recorder.answered(request, reply.raw.statusCode);
      if (counted && --inflight === 0) drained?.();
    });
    // Read while the connection is surely open (Node keeps the address once read): a client can be
    // gone before the later hooks run, e.g. when bytes after its request fail to parse.
    void request.ip;
    // Shutting down: a request that still arrives on a kept-alive connection gets 503, and Fastify
    // closes the connection after it (it sets `Connection: close` while closing). /ready answers
    // for itself ("shutting down"), for the load balancer that polls it.
    if (lifecycle.stopping && request.routeOptions.url !== '/ready') {
      sendError(reply, new GatewayError('shutting_down', 'Service Unavailable: the gateway is shutting down'));
      return;
    }
    done();
  });
  // Before every route's own hooks: Host/Origin (403), then CORS (src/http/).
  registerCors(
    app,
    config.server.cors,
    registerOriginChecks(app, config.server, log, (request, reason) => recorder.refused(request, reason)),
  );

  app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, request, reply) => {
    const status = error.statusCode ?? 500;
    if (status >= 500) request.log.error({ err: error }, 'request failed');
    const kind = status === 413 ? 'payload_too_large' : status === 415 ? 'unsupported_media_type' : status < 500 ? 'invalid_request' : 'internal';
    const message = status === 413 ? `Payload Too Large: the body exceeds ${config.server.max_request_size} bytes` : status < 500 ? `Bad Request: ${error.message}` : 'Internal error';
    // Answered before the body was read: the client is still sending, and must be able to read it.
    if (status === 413) lingerForBody(request, reply);
    sendError(reply, new GatewayError(kind, message));
  });

  registerHealthRoutes(app, gateway, lifecycle, config.auth?.protect_routes ? authenticate : undefined);
  if (metrics) registerMetricsRoute(app, metrics, config.auth?.protect_metrics ? authenticate : undefined);
  if (config.auth) registerProtectedResourceMetadata(app, config.auth);

  const notFound = (request: FastifyRequest, reply: FastifyReply, error: string): void => {
    // Only the servers this caller may reach: a restricted identity does not learn the others, and
    // a caller that has not proved an identity (the gateway's own paths skip authentication) learns none.
    if (authenticator.required && request.identity === null) {
      void reply.code(404).send({ error });
      return;
    }
    const identity = identityOf(request);
    void reply.code(404).send({ error, available: router.names().filter((name) => mayReach(identity, name)) });
  };

  /** Runs an MCP handler for a target (counted as in flight by the first onRequest hook). */
  const serve = (target: Target, request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    request.mcpServer = target.server.name;
    return dispatch({ gateway, target, identity: identityOf(request), limiter, recorder, request }, reply);
  };
  const dispatch = async (context: Context, reply: FastifyReply): Promise<void> => {
    switch (context.request.method) {
      case 'POST':
        await handlePost(context, reply);
        return;
      case 'GET':
        handleGet(context, reply);
        return;
      case 'DELETE':
        await handleDelete(context, reply);
        return;
      default:
        // JSON-RPC-shaped like every other refusal of an MCP endpoint (src/http/errors.ts).
        sendError(reply, new GatewayError('method_not_allowed', `Method Not Allowed: ${context.request.method}; an MCP endpoint takes POST, GET and DELETE`), { allow: 'GET, POST, DELETE' });
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
  const stage0 = [limiter?.addressHook, authenticator.required ? authenticate : undefined, limiter?.identityHook].filter(
    (hook): hook is Stage0Hook => hook !== undefined,
  );
  const onRequest = [observe, ...stage0];
  app.route({
    method: [...ALL_METHODS],
    url: '/mcp/:server_name',
    onRequest,
    handler: async (request, reply) => {
      const name = (request.params as { server_name: string }).server_name;
      const server = router.byName(name);
      if (!server) return notFound(request, reply, `Server not found: ${name}`);
      // By name, the upstream url is used as it is: no path is appended.
      return serve({ server, forwardPath: '' }, request, reply);
    },
  });

  const defaultServer: ServerConfig | undefined = config.single ? config.servers[0] : config.servers.find((s) => s.path_prefix === '/');
  app.route({
    method: [...ALL_METHODS],
    url: '/mcp',
    onRequest,
    handler: async (request, reply) => {
      if (!defaultServer) return notFound(request, reply, 'No default server: use /mcp/:server_name');
      return serve({ server: defaultServer, forwardPath: '' }, request, reply);
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
        match = router.match(request.url);
      } catch (err) {
        if (!(err instanceof UnsafePathError)) throw err;
        sendError(reply, new GatewayError('invalid_request', `Bad Request: ${err.message}`));
        return;
      }
      if (!match) return notFound(request, reply, `No route for path: ${request.url.split('?')[0]}`);
      return serve(match, request, reply);
    },
  });

  return {
    app,
    gateway,
    lifecycle,
    limiter,
    recorder,
    authenticator,
    async start() {
      recorder.lifecycle('gateway_start');
      await gateway.start();
      lifecycle.started = true;
    },
    async stop() {
      lifecycle.stopping = true;
      // Listen streams are POSTs that never end on their own: they must not hold the grace period.
      gateway.endListens();
      const closing = app.close();
      if (inflight > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, config.server.shutdown_grace_ms);
          timer.unref();
          drained = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      await gateway.close();
      app.server.closeAllConnections();
      await closing;
      recorder.lifecycle('gateway_stop');
      await audit.close();
    },
  };
}
