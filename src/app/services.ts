/**
 * The gateway's services, made once from the config: the audit log and metrics (fed together by
 * the recorder), the upstreams and sessions (the Gateway), the router, authentication and the
 * rate limits. Nothing here knows HTTP routes; src/app/routes.ts wires them to requests.
 */
import type { onRequestAsyncHookHandler } from 'fastify';
import { Authenticator, type AuthenticatorOptions } from '../auth/authenticator.js';
import type { GatewayConfig } from '../config/schema.js';
import { authenticationHook } from '../http/auth.js';
import { loadTls, type TlsMaterial } from '../http/tls.js';
import { Gateway, type UpstreamFactory } from '../mcp/gateway.js';
import { continueHeld } from '../eras/forwarding.js';
import { ToolIntegrity } from '../integrity/guard.js';
import { watchMessages } from '../integrity/watch.js';
import { Approvals } from '../integrity/approval.js';
import { AuditLog } from '../observability/audit/log.js';
import { emptyArchiveStats, type ArchiveStats } from '../observability/audit/s3-archive.js';
import type { Logger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import { Recorder } from '../observability/recorder.js';
import { loadTracing } from '../observability/tracing/load.js';
import type { Tracing } from '../observability/tracing/tracing.js';
import { RateLimiter } from '../ratelimit/limiter.js';
import { Router } from '../routing/router.js';
import { createUpstream } from '../upstreams/factory.js';
import { errorMessage } from '../error-message.js';

export interface ServiceOptions {
  logger: Logger;
  /** Replaces how upstreams are created (tests use real ones; this is for wrapping them). */
  createUpstream?: UpstreamFactory;
  /** Tuning of the verifiers (tests shorten the JWKS cooldown). */
  auth?: AuthenticatorOptions;
  /** Where `[audit] stdout = true` writes (tests capture it); default process.stdout. */
  auditStdout?: NodeJS.WritableStream;
}

/**
 * What the config makes. A reload (src/app/reload.ts) replaces `config`, `router`, `audit`,
 * `authenticator`, `authenticate` and `limiter` in place: whatever serves a request reads them
 * from here when the request comes, never keeps its own copy. `log`, `tls`, `metrics`,
 * `recorder` and `gateway` live as long as the process (the gateway and the recorder take the
 * new config themselves).
 */
export interface Services {
  config: GatewayConfig;
  log: Logger;
  /** `[server.tls]`: the certificate and key, read and checked; undefined for plain HTTP. */
  tls: TlsMaterial | undefined;
  metrics: Metrics | undefined;
  audit: AuditLog;
  /** What `[audit.s3]` uploaded and has waiting: one object for the life of the process, which every audit log of a reload adds to. */
  archiveStats: ArchiveStats;
  recorder: Recorder;
  gateway: Gateway;
  router: Router;
  authenticator: Authenticator;
  /** Stage 0b as an onRequest hook (src/http/auth.ts). */
  authenticate: onRequestAsyncHookHandler;
  /** Undefined without `[rate_limit]` or with `enabled = false`. */
  limiter: RateLimiter | undefined;
  /**
   * Traces: undefined with telemetry off, and until the SDK has loaded (`tracingLoaded`) with it
   * on; the pipeline's one check is whether it is there.
   */
  tracing: Tracing | undefined;
  /** Settles once the tracing is there (or could not be made: logged, and tracing stays off). */
  tracingLoaded: Promise<void>;
  /** `[tool_integrity]` (src/integrity/): lives as long as the process; a reload configures it again and rereads the pin file. */
  integrity: ToolIntegrity;
  /** `require_approval` (src/integrity/approval.ts): its questions in flight live as long as the process; a reload configures the servers' lists again. */
  approvals: Approvals;
}

/**
 * Throws when the audit log cannot be opened (its file's directory is missing) or the TLS files
 * are unusable (a ConfigError naming the key): nothing is started then.
 */
export function createServices(config: GatewayConfig, options: ServiceOptions): Services {
  const log = options.logger;
  const tls = config.server.tls ? loadTls(config.server.tls) : undefined;
  for (const warning of tls?.warnings ?? []) log.warn(warning);
  const metrics = config.server.metrics ? new Metrics({ servers: [...config.servers, ...config.virtual_servers].map((s) => s.name) }) : undefined;
  const archiveStats = emptyArchiveStats();
  const audit = AuditLog.create(config.audit, { log, archiveStats, ...(options.auditStdout ? { stdout: options.auditStdout } : {}) });
  const recorder = new Recorder(audit, metrics);
  // The pins are read now, before anything is served (a PinFileError stops the start).
  const integrity = new ToolIntegrity({ definition: (event) => recorder.toolDefinition(event) }, log);
  integrity.configureSync(config.tool_integrity);
  const approvals = new Approvals();
  approvals.configure(config);
  const upstreamDeps = {
    logger: log,
    onRestart: (server: string) => recorder.lifecycle('upstream_restart', { server }),
    onContained: (server: string, method: string, reason: string) => recorder.withheld(server, method, reason),
    // Read when an isolated stdio server must end a child: the gateway exists by then.
    ownerHasTasks: (server: string, owner: string): boolean => gateway.tasks.holds(server, owner),
  };
  const create: UpstreamFactory = options.createUpstream ?? ((server) => createUpstream(server, upstreamDeps));
  // Every server message passes tool integrity first: a list_changed makes its verdicts stale.
  const seen = (server: string, message: Parameters<ToolIntegrity['seen']>[1]) => integrity.seen(server, message);
  const gateway: Gateway = new Gateway(config, (server) => watchMessages(create(server), seen, () => integrity.active), log, {
    memberOmitted: (virtualServer, server) => metrics?.memberOmitted(virtualServer, server),
  });
  // A 2026-07-28 round whose retry reached another replica is continued here when this one holds it.
  gateway.roundHandler = (requestState, request, binding) => continueHeld(gateway, requestState, request, binding);
  const authenticator = new Authenticator(config.auth, options.auth);
  const limiter = createLimiter(config, recorder, log);
  metrics?.bindGateway(gateway);
  metrics?.setAuditStats(() => audit.stats);
  metrics?.setArchiveStats(() => archiveStats);
  const services: Services = {
    config,
    log,
    tls,
    metrics,
    audit,
    archiveStats,
    recorder,
    gateway,
    router: routerOf(config),
    authenticator,
    authenticate: authenticationHook(authenticator, config.auth, recorder),
    limiter,
    tracing: undefined,
    tracingLoaded: Promise.resolve(),
    integrity,
    approvals,
  };
  // The SDK is imported only with telemetry on, while the rest starts (src/observability/tracing/).
  if (config.telemetry) {
    services.tracingLoaded = loadTracing(config.telemetry, log).then(
      (tracing) => {
        services.tracing = tracing;
      },
      (err: unknown) => log.error({ err: errorMessage(err) }, 'telemetry: the OpenTelemetry SDK could not be loaded; tracing is off'),
    );
  }
  return services;
}

/** The routes of a config: its servers and virtual servers. */
export function routerOf(config: GatewayConfig): Router {
  return new Router([...config.servers, ...config.virtual_servers]);
}

/** The rate limits of a config, their decisions recorded; undefined without `[rate_limit]` or with `enabled = false`. */
export function createLimiter(config: GatewayConfig, recorder: Recorder, log: Logger): RateLimiter | undefined {
  if (!config.rate_limit?.enabled) return undefined;
  const limiter = new RateLimiter(config.rate_limit, [...(config.auth?.api_keys ?? []), ...(config.auth?.client_certs ?? [])], log);
  limiter.onDecision = (scope, allowed, request, identity, detail) => {
    if (allowed) recorder.rateAllowed(scope);
    else recorder.rateLimited(request, scope, identity, request.mcpServer ?? undefined, detail?.tool);
  };
  limiter.onStoreError = () => recorder.metrics?.rateLimitStoreError();
  return limiter;
}
