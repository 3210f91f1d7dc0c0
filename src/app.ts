/**
 * buildApp(config): the Fastify instance with every route wired, from three parts:
 *   src/app/services.ts   what the config makes (audit, metrics, upstreams, auth, limits)
 *   src/app/routes.ts     the routes, and stages 0 and 1 of the pipeline (src/pipeline.ts)
 *   src/app/lifecycle.ts  start, and the graceful stop
 * and, here, the HTTP server itself: its limits, and the hooks every request runs first. It never
 * listens by itself; src/main.ts does, and tests listen on port 0.
 */
import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Authenticator } from './auth/authenticator.js';
import type { GatewayConfig } from './config/schema.js';
import { frameworkErrorOf, GatewayError, renderClientError, renderFrameworkError, sendError } from './http/errors.js';
import { applyListenerLimits } from './http/listener.js';
import { watchTls } from './http/tls.js';
import type { Lifecycle } from './http/health.js';
import { registerCors } from './http/cors.js';
import { lingerForBody } from './http/linger.js';
import { registerOriginChecks } from './http/origin.js';
import { setSecurityHeaders } from './http/security-headers.js';
import type { Gateway } from './mcp/gateway.js';
import { LazyChildLogger, type Logger } from './observability/logger.js';
import { lazySchemaCompilers } from './optional.js';
import type { Recorder } from './observability/recorder.js';
import type { RateLimiter } from './ratelimit/limiter.js';
import { InFlight, lifecycleOf } from './app/lifecycle.js';
import { TrustedProxies } from './http/client-address.js';
import { registerRoutes } from './app/routes.js';
import { createServices, type ServiceOptions, type Services } from './app/services.js';

export interface App {
  app: FastifyInstance;
  /** What the config made; a reload (src/app/reload.ts) replaces parts of it in place. */
  services: Services;
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
  /**
   * Graceful stop: first `shutdown_delay_ms` of serving with readiness down, then refuse new
   * requests, let those in flight finish within the grace period, end upstreams.
   */
  stop(): Promise<void>;
  /** Cuts a running shutdown delay short (a second signal); false when none is running. */
  endDelay(): boolean;
}

export type AppOptions = ServiceOptions;

/**
 * Throws when the audit log cannot be opened (its file's directory is missing): nothing is
 * started then.
 */
export function buildApp(config: GatewayConfig, options: AppOptions): App {
  const services = createServices(config, options);
  const lifecycle: Lifecycle = { started: false, draining: false, stopping: false };
  const inflight = new InFlight();
  const app = createServer(services, lifecycle, inflight);
  registerRoutes(app, services, lifecycle);
  const running = lifecycleOf(app, services, lifecycle, inflight);
  const { gateway, limiter, recorder, authenticator } = services;
  return { app, services, gateway, lifecycle, limiter, recorder, authenticator, start: running.start, stop: running.stop, endDelay: running.endDelay };
}

/** The Fastify instance, its server's limits, and what runs before every route. */
function createServer(services: Services, lifecycle: Lifecycle, inflight: InFlight): FastifyInstance {
  const { config, log, tls, recorder, limiter } = services;
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
  app.decorateRequest('clientIp', '');
  // Made once; none at all (the socket's peer, nothing parsed) without [server] trusted_proxies.
  const proxies = config.server.trusted_proxies.length > 0 ? new TrustedProxies(config.server.trusted_proxies, config.server.client_address_header) : undefined;
  app.decorateRequest('tracing', null);
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
    if (counted) inflight.enter();
    // One listener per request for both: the end of an MCP exchange is recorded (see observe).
    reply.raw.once('close', () => {
      if (request.mcpEndpoint) recorder.answered(request, reply.raw.statusCode);
      if (counted) inflight.leave();
    });
    // Read while the connection is surely open (Node keeps the address once read): a client can be
    // gone before the later hooks run, e.g. when bytes after its request fail to parse. Worked out
    // once, here, for everything that names the client (limits, audit, logs): through
    // [server] trusted_proxies only (src/http/client-address.ts).
    const peer = request.raw.socket.remoteAddress ?? '';
    request.clientIp = proxies ? proxies.clientAddress(peer, request.headers) : peer;
    // The shutdown delay: served as ever, but kept-alive clients (a load balancer's pooled
    // connections too) are told to open their next connection elsewhere.
    if (lifecycle.draining) void reply.header('connection', 'close');
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

  app.setErrorHandler((error: Error & { statusCode?: number }, request, reply) => {
    const refusal = frameworkErrorOf(error, config.server.max_request_size);
    if (refusal.kind === 'internal') request.log.error({ err: error }, 'request failed');
    // Answered before the body was read: the client is still sending, and must be able to read it.
    if (refusal.kind === 'payload_too_large') lingerForBody(request, reply);
    sendError(reply, refusal);
  });
  return app;
}
