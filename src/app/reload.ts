/**
 * Reloading the config of a running gateway (SIGHUP, or a change of the file with
 * `[server] watch_config = true`; docs/operations.md "Reload"): validate, then swap.
 *
 *   1. load     the file is read and validated again, `${VAR}`s and MCP_GUARD_ADDITIONAL_SERVERS
 *               from the environment as it is now (in a short-lived child, as at start-up). An
 *               invalid config changes nothing: its errors are logged with their key paths,
 *               counted and audited, and the running config stays.
 *   2. build    what the new config needs that can fail (the audit log's file) is made before
 *               anything is swapped; a failure there also leaves everything as it was.
 *   3. swap     the router, authentication, rate limits and audit log serve the next request;
 *               the gateway applies the server changes as a diff (src/mcp/gateway.ts reconfigure):
 *               unchanged servers notice nothing, changed and removed ones drain.
 *   4. report   `mcp_guard_config_reloads_total{result}` and a `config_reloaded` audit event with
 *               what changed (names and key ids only) and what waits for a restart.
 *
 * One reload at a time: a trigger during a reload runs one more reload after it (the file may
 * have changed again), never two at once.
 */
import { Authenticator } from '../auth/authenticator.js';
import { anyChange, appliesAnything, diffConfig, type ConfigDiff } from '../config/diff.js';
import { ConfigError } from '../config/errors.js';
import type { GatewayConfig } from '../config/schema.js';
import { errorMessage } from '../error-message.js';
import { authenticationHook } from '../http/auth.js';
import { AuditLog } from '../observability/audit/log.js';
import type { RateLimiter } from '../ratelimit/limiter.js';
import { createLimiter, routerOf, type ServiceOptions, type Services } from './services.js';

export type ReloadResult =
  { result: 'applied'; diff: ConfigDiff; drained: Promise<void> } | { result: 'unchanged'; diff: ConfigDiff } | { result: 'invalid'; reason: string };

export class Reloader {
  private running: Promise<ReloadResult> | undefined;
  private again = false;

  constructor(
    private readonly services: Services,
    /** Loads and validates the config file as it is now; rejects with a ConfigError. */
    private readonly load: () => Promise<GatewayConfig>,
    private readonly options: Pick<ServiceOptions, 'auth' | 'auditStdout'> = {},
  ) {}

  /** Reloads now, or once more after the reload under way. */
  reload(trigger: string): Promise<ReloadResult> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    const run = async (): Promise<ReloadResult> => {
      let result: ReloadResult;
      do {
        this.again = false;
        result = await this.once(trigger);
      } while (this.again);
      return result;
    };
    this.running = run().finally(() => (this.running = undefined));
    return this.running;
  }

  private async once(trigger: string): Promise<ReloadResult> {
    const { services } = this;
    const log = services.log;
    let next: GatewayConfig;
    try {
      next = await this.load();
    } catch (err) {
      const reason = err instanceof ConfigError ? err.issues.map((i) => `${i.path}: ${i.message}`).join('; ') : errorMessage(err);
      log.error({ trigger, reason }, 'config reload refused: the running config stays');
      services.recorder.reloaded('invalid', { reason });
      return { result: 'invalid', reason };
    }
    // The pin file is read again on every reload, whatever else changed (`mcp-guard pin --approve`
    // then a reload restores a tool); one that cannot be used refuses the reload.
    try {
      await services.integrity.configure(next.tool_integrity);
    } catch (err) {
      const reason = `tool_integrity: ${errorMessage(err)}`;
      log.error({ trigger, reason }, 'config reload refused: the running config stays');
      services.recorder.reloaded('invalid', { reason });
      return { result: 'invalid', reason };
    }
    const diff = diffConfig(services.config, next);
    if (diff.restartRequired.length > 0) {
      log.warn({ keys: diff.restartRequired }, 'config reload: these keys changed and take effect only after a restart');
    }
    if (!appliesAnything(diff)) {
      // The file may differ in what only a restart applies: keep the config the gateway runs with.
      log.info({ trigger, restartRequired: diff.restartRequired }, 'config reloaded: nothing to apply');
      services.recorder.reloaded('unchanged', { changes: describe(diff) });
      return { result: 'unchanged', diff };
    }
    // What can fail is made before anything is swapped.
    let audit: AuditLog | undefined;
    if (diff.audit) {
      try {
        audit = AuditLog.create(next.audit, {
          log,
          archiveStats: services.archiveStats,
          ...(this.options.auditStdout ? { stdout: this.options.auditStdout } : {}),
        });
      } catch (err) {
        const reason = `audit: ${errorMessage(err)}`;
        log.error({ trigger, reason }, 'config reload refused: the running config stays');
        services.recorder.reloaded('invalid', { reason });
        return { result: 'invalid', reason };
      }
    }
    // Keys the restart-only parts of the config must keep: the listener's and the routes' own.
    next = { ...next, server: services.config.server };
    // So does tracing: the running tracer stays as it is.
    next = { ...next, telemetry: services.config.telemetry };
    // Rate limits switched on wait for a restart too (src/config/diff.ts): the running ones (none) stay.
    if (diff.restartRequired.includes('rate_limit.enabled')) next = { ...next, rate_limit: services.config.rate_limit };
    const oldAudit = services.audit;
    const oldLimiter = services.limiter;
    let limiter: RateLimiter | undefined = oldLimiter;
    if (diff.rateLimit || anyChange(diff.keys)) {
      limiter = createLimiter(next, services.recorder, log);
      await limiter?.open().catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'the reloaded rate limit store is not reachable yet'));
    }
    if (diff.jwt || anyChange(diff.keys)) {
      services.authenticator = new Authenticator(next.auth, this.options.auth);
      services.authenticate = authenticationHook(services.authenticator, next.auth, services.recorder);
    }
    services.limiter = limiter;
    services.router = routerOf(next);
    services.approvals.configure(next);
    if (audit) {
      services.audit = audit;
      services.recorder.audit = audit;
    }
    services.metrics?.knowServers([...next.servers, ...next.virtual_servers].map((s) => s.name));
    services.config = next;
    const drained = services.gateway.reconfigure(next, diff, next.server.shutdown_grace_ms);
    // Requests that took the old limiter finish with it; its store connection goes after them.
    if (limiter !== oldLimiter) void drained.finally(() => oldLimiter?.close());
    if (audit) void oldAudit.close();
    const changes = describe(diff);
    log.info({ trigger, ...changes }, 'config reloaded');
    services.recorder.reloaded('applied', { changes });
    return { result: 'applied', diff, drained };
  }
}

/** The diff as the log and the audit line show it: names and ids, only what changed. */
function describe(diff: ConfigDiff): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const put = (name: string, changes: ConfigDiff['keys']) => {
    const entries = Object.entries(changes).filter(([, list]) => list.length > 0);
    if (entries.length > 0) out[name] = Object.fromEntries(entries);
  };
  put('servers', diff.servers);
  put('virtual_servers', diff.virtualServers);
  put('keys', diff.keys);
  if (diff.jwt) out['auth'] = 'changed';
  if (diff.rateLimit) out['rate_limit'] = 'changed';
  if (diff.audit) out['audit'] = 'changed';
  if (diff.toolIntegrity) out['tool_integrity'] = 'changed';
  if (diff.restartRequired.length > 0) out['restart_required'] = diff.restartRequired;
  return out;
}
