/**
 * Prometheus metrics on the app's own prom-client Registry (never the global one): one Metrics per
 * app, created when the app is built.
 *
 * The earlier gateway's families keep their names and label names so its dashboards still work:
 * on mcp_guard_requests_total and mcp_guard_request_duration_seconds `method` is the HTTP method, as
 * it was there; those two gain a `server` label, which keeps every earlier selector and `sum by`
 * working. The per-server and per-tool families are new. Every label value is bounded:
 *   - method: on requests to the gateway, the HTTP method (POST, GET, DELETE, else "other"); on
 *     upstream requests, the MCP spec's client request and notification names (else "other");
 *   - status: an HTTP status code (100-599, else "other");
 *   - server: a configured server name (options.servers), else "other"; on requests to the gateway
 *     also "none" for a request routed to no server (refused before routing, unknown server);
 *   - tool: a name the server itself listed in a tools/list result (learnTools), at most
 *     maxToolsPerServer per server, anything else "__other__".
 * docs/metrics.md lists every family.
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { AuthProvider } from '../auth/identity.js';
import type { ServerConfig } from '../config/schema.js';
import type { UpstreamStatus } from '../upstreams/upstream.js';
import { HotCounter, HotHistogram } from './hot-metrics.js';
import { insert, touch, type Touched } from '../lru.js';

/**
 * Client-to-server request and notification methods of the MCP spec (2025-11-25, and the two
 * requests 2026-07-28 adds), the only values the `method` label of
 * mcp_guard_upstream_requests_total takes besides "other". A test compares this with the SDK's
 * ClientRequestSchema and ClientNotificationSchema.
 */
export const MCP_METHODS: readonly string[] = [
  'initialize',
  'ping',
  // 2026-07-28
  'server/discover',
  'subscriptions/listen',
  'tools/list',
  'tools/call',
  'resources/list',
  'resources/templates/list',
  'resources/read',
  'resources/subscribe',
  'resources/unsubscribe',
  'prompts/list',
  'prompts/get',
  'completion/complete',
  'logging/setLevel',
  'tasks/get',
  'tasks/result',
  'tasks/list',
  'tasks/cancel',
  'notifications/initialized',
  'notifications/cancelled',
  'notifications/progress',
  'notifications/roots/list_changed',
  'notifications/tasks/status',
];

/**
 * HTTP methods of the MCP endpoints (Streamable HTTP): POST carries JSON-RPC messages, GET opens the
 * SSE stream, DELETE ends a session. The only values the `method` label of mcp_guard_requests_total
 * and mcp_guard_request_duration_seconds takes besides "other".
 */
export const HTTP_METHODS: readonly string[] = ['POST', 'GET', 'DELETE'];

const JSON_RPC_METHODS = new Set<string>(MCP_METHODS);
const REQUEST_METHODS = new Set<string>(HTTP_METHODS);

/** The label value of a method, status, scope or server outside the known set. */
export const OTHER = 'other';
export const OTHER_TOOL = '__other__';
/** The `server` label of a request to the gateway that was routed to no server. */
export const NO_SERVER = 'none';

/** Seconds: 0.5 ms (an answer from the gateway itself) to 30 s (a slow tool); +Inf holds long streams. */
export const DURATION_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** A tool name longer than this never becomes a label value. */
const MAX_TOOL_NAME_LENGTH = 128;

export type AuthProviderLabel = AuthProvider;
export type AuthResult = 'success' | 'failure' | 'throttled' | 'unavailable';
export type RateLimitScope = 'address' | 'identity' | 'tool';
export type UpstreamOutcome = 'ok' | 'error' | 'timeout';
export type ToolCallOutcome = 'ok' | 'error' | 'denied' | 'rate_limited';

/** What the audit log reports (AuditLog.stats fits): cumulative counts since start, never decreasing. */
export interface AuditStats {
  /** Events the audit log refused: its queue was full, or it was closed. */
  dropped: number;
  /** Events the HTTP export lost: its queue was full or a batch ran out of retries. */
  exportDropped: number;
  /** Lines a local sink (stdout, file) failed to write. */
  writeFailures?: number;
}

/** What the audit archive reports (ArchiveStats fits): cumulative counts since start, and the files waiting now. */
export interface ArchiveView {
  uploaded: number;
  failed: number;
  bytes: number;
  pending: number;
}

/** The part of Gateway that metrics read at scrape time (a Gateway is one). */
export interface GatewayView {
  allUpstreams(): ReadonlyArray<{
    readonly config: Pick<ServerConfig, 'name' | 'transport'>;
    status(): Pick<UpstreamStatus, 'healthy' | 'restarts' | 'circuit'>;
  }>;
  readonly sessions: { readonly size: number };
}

export interface MetricsOptions {
  /**
   * The configured server names (`[[upstream.servers]]` name): the only `server` label values
   * besides "other" (any other name) and, on requests to the gateway, "none". Default none
   * configured, so every server counts as "other".
   */
  servers?: readonly string[];
  /** process_* and nodejs_* metrics from prom-client. Default true. */
  defaultMetrics?: boolean;
  /** Distinct tool label values per server (learnTools); the rest count as "__other__". Default 100. */
  maxToolsPerServer?: number;
  /** The window of mcp_guard_active_identities. Default 300 (5 minutes). */
  identityWindowSeconds?: number;
  /** Identities remembered for that window; beyond it the oldest are forgotten. Default 10,000. */
  maxIdentities?: number;
  /** Clock in ms since epoch (tests). Default Date.now. */
  now?: () => number;
}

/** A status code as a label value: "200", ..., or "other" for anything that is not one. */
export function statusLabel(status: number): string {
  return Number.isInteger(status) && status >= 100 && status <= 599 ? String(status) : OTHER;
}

/** A JSON-RPC method as a label value: a known MCP client method, else "other". */
export function methodLabel(method: string): string {
  return JSON_RPC_METHODS.has(method) ? method : OTHER;
}

/** An HTTP method as a label value: POST, GET or DELETE (exactly, as Node reports it), else "other". */
export function httpMethodLabel(method: string): string {
  return REQUEST_METHODS.has(method) ? method : OTHER;
}

export class Metrics {
  readonly registry = new Registry();

  private readonly maxToolsPerServer: number;
  private readonly identityWindowMs: number;
  private readonly maxIdentities: number;
  private readonly now: () => number;
  /** The configured server names: the `server` label values besides "other" and "none". */
  private readonly servers: ReadonlySet<string>;

  /** Tool label values per server, from the server's own tools/list results. */
  private readonly tools = new Map<string, Set<string>>();
  /** Identity id -> when last seen (ms, to within a second: src/lru.ts), oldest first. */
  private readonly identities = new Map<string, Touched>();
  private auditStats: (() => AuditStats) | undefined;
  private archiveStats: (() => ArchiveView) | undefined;
  private gateway: GatewayView | undefined;

  // The families counted on the request path are hot-metrics.ts cells, read at scrape time.
  private readonly requests: HotCounter<'method' | 'status' | 'server'>;
  private readonly requestDuration: HotHistogram;
  private readonly authTotal: HotCounter<'provider' | 'result'>;
  private readonly rateLimitTotal: HotCounter<'allowed'>;
  private readonly rateLimited: Counter<'scope'>;
  private readonly rateLimitStoreErrors: Counter;
  private readonly membersOmitted: Counter<'virtual_server' | 'server'>;
  private readonly configReloads: Counter<'result'>;
  private readonly toolIntegrity: Counter<'server' | 'result'>;
  private readonly toolApprovals: Counter<'server' | 'result'>;
  private readonly upstreamRequests: HotCounter<'server' | 'method' | 'outcome'>;
  private readonly upstreamLatency: HotHistogram;
  private readonly toolCalls: HotCounter<'server' | 'tool' | 'outcome'>;
  private readonly cacheLookups: HotCounter<'server' | 'result'>;

  constructor(options: MetricsOptions = {}) {
    this.maxToolsPerServer = options.maxToolsPerServer ?? 100;
    this.identityWindowMs = (options.identityWindowSeconds ?? 300) * 1000;
    this.maxIdentities = options.maxIdentities ?? 10_000;
    this.now = options.now ?? Date.now;
    this.servers = new Set(options.servers ?? []);
    const registers = [this.registry];

    this.requests = new HotCounter({
      name: 'mcp_guard_requests_total',
      help: 'HTTP requests to the MCP endpoints, by HTTP method, HTTP status and the server routed to ("none" when routed to none).',
      labelNames: ['method', 'status', 'server'],
      registers,
    });
    this.requestDuration = new HotHistogram({
      name: 'mcp_guard_request_duration_seconds',
      help: 'Time from receiving an MCP request to its answer, by HTTP method and server. Long-lived SSE streams (GET) land in +Inf.',
      labelNames: ['method', 'server'],
      buckets: [...DURATION_BUCKETS],
      registers,
    });
    this.authTotal = new HotCounter({
      name: 'mcp_guard_auth_total',
      help: 'Authentication attempts by provider and result.',
      labelNames: ['provider', 'result'],
      registers,
    });
    this.rateLimitTotal = new HotCounter({
      name: 'mcp_guard_rate_limit_total',
      help: 'Rate limit checks: allowed="true" or "false". Each limit a request is checked against (address, identity, tool) counts once.',
      labelNames: ['allowed'],
      registers,
    });
    this.rateLimited = new Counter({
      name: 'mcp_guard_rate_limited_total',
      help: 'Requests refused by a rate limit, by the limit that refused them.',
      labelNames: ['scope'],
      registers,
    });
    this.rateLimitStoreErrors = new Counter({
      name: 'mcp_guard_rate_limit_store_errors_total',
      help: 'Failures of the rate limit store (e.g. Redis unreachable).',
      registers,
    });
    this.membersOmitted = new Counter({
      name: 'mcp_guard_virtual_member_omitted_total',
      help: 'Members of a virtual server left out of an answer or a session (down, failed or timed out), by virtual server and member.',
      labelNames: ['virtual_server', 'server'],
      registers,
    });
    this.toolIntegrity = new Counter({
      name: 'mcp_guard_tool_integrity_total',
      help: 'Tool integrity, by server and result: changed, unpinned, trusted (a definition seen, once each), refused (a call refused in block mode).',
      labelNames: ['server', 'result'],
      registers,
    });
    this.toolApprovals = new Counter({
      name: 'mcp_guard_tool_approvals_total',
      help: "Calls that needed a person's approval (require_approval), by server and result: accepted, declined, cancelled, unavailable (the client cannot be asked), timeout.",
      labelNames: ['server', 'result'],
      registers,
    });
    this.configReloads = new Counter({
      name: 'mcp_guard_config_reloads_total',
      help: 'Reloads of the config (SIGHUP or watch_config), by result: applied, unchanged, invalid (the running config stayed).',
      labelNames: ['result'],
      registers,
    });
    this.upstreamRequests = new HotCounter({
      name: 'mcp_guard_upstream_requests_total',
      help: 'Requests forwarded to upstream servers, by server, JSON-RPC method and outcome.',
      labelNames: ['server', 'method', 'outcome'],
      registers,
    });
    this.upstreamLatency = new HotHistogram({
      name: 'mcp_guard_upstream_latency_seconds',
      help: 'Time an upstream server took to answer a forwarded request, by server.',
      labelNames: ['server'],
      buckets: [...DURATION_BUCKETS],
      registers,
    });
    this.toolCalls = new HotCounter({
      name: 'mcp_guard_tool_calls_total',
      help: 'tools/call requests by server, tool (names the server listed, else "__other__") and outcome.',
      labelNames: ['server', 'tool', 'outcome'],
      registers,
    });

    this.cacheLookups = new HotCounter({
      name: 'mcp_guard_cache_lookups_total',
      help: 'Cacheable requests to 2026-07-28 servers (tools/list, resources/read, ...) by server and result: "hit" (answered from the gateway\'s cache) or "miss" (forwarded).',
      labelNames: ['server', 'result'],
      registers,
    });

    const identities = this.identities;
    const activeIdentities = (): number => {
      this.forgetIdentities(this.now());
      return identities.size;
    };
    new Gauge({
      name: 'mcp_guard_active_identities',
      help: `Distinct identities (API key ids, JWT subjects, anonymous) seen in the last ${this.identityWindowMs / 1000} s (sliding window).`,
      registers,
      collect() {
        this.set(activeIdentities());
      },
    });

    // A failing callback must not fail the whole scrape: the counts then stay where they were.
    const audit = (): AuditStats | undefined => {
      try {
        return this.auditStats ? this.auditStats() : { dropped: 0, exportDropped: 0, writeFailures: 0 };
      } catch {
        return undefined;
      }
    };
    const auditTotals = new FollowedTotals();
    new Counter({
      name: 'mcp_guard_audit_dropped_total',
      help: 'Audit events lost, by stage: "queue" (the audit queue was full or closed), "write" (a stdout/file sink failed to write a line), "export" (the HTTP export gave up).',
      labelNames: ['stage'],
      registers,
      collect() {
        const stats = audit();
        if (!stats) return;
        auditTotals.follow(this, { stage: 'queue' }, stats.dropped);
        auditTotals.follow(this, { stage: 'write' }, stats.writeFailures ?? 0);
        auditTotals.follow(this, { stage: 'export' }, stats.exportDropped);
      },
    });

    // Without [audit.s3] the families are there, at 0, like the audit drops.
    const archive = (): ArchiveView | undefined => {
      try {
        return this.archiveStats ? this.archiveStats() : { uploaded: 0, failed: 0, bytes: 0, pending: 0 };
      } catch {
        return undefined;
      }
    };
    const archiveTotals = new FollowedTotals();
    new Counter({
      name: 'mcp_guard_audit_archive_uploads_total',
      help: 'Uploads of rotated audit files to [audit.s3], by result: "ok" (the store confirmed it; the local file was then deleted) or "error" (the attempt failed; the file stays and is tried again).',
      labelNames: ['result'],
      registers,
      collect() {
        const stats = archive();
        if (!stats) return;
        archiveTotals.follow(this, { result: 'ok' }, stats.uploaded);
        archiveTotals.follow(this, { result: 'error' }, stats.failed);
      },
    });
    const archiveBytes = new FollowedTotals();
    new Counter({
      name: 'mcp_guard_audit_archive_uploaded_bytes_total',
      help: 'Bytes of the rotated audit files [audit.s3] uploaded (as stored: gzipped when compress_rotated).',
      registers,
      collect() {
        const stats = archive();
        if (stats) archiveBytes.follow(this, {}, stats.bytes);
      },
    });
    new Gauge({
      name: 'mcp_guard_audit_archive_pending_files',
      help: 'Rotated audit files waiting to be uploaded to [audit.s3] (the one being uploaded included); grows while the store is down.',
      registers,
      collect() {
        this.set(archive()?.pending ?? 0);
      },
    });

    const view = (): GatewayView | undefined => this.gateway;
    const restartTotals = new FollowedTotals();
    new Gauge({
      name: 'mcp_guard_upstream_up',
      help: 'Whether a request sent to the upstream server now can be expected to reach it (1) or not (0).',
      labelNames: ['server', 'transport'],
      registers,
      collect() {
        this.reset();
        for (const upstream of view()?.allUpstreams() ?? []) {
          this.set({ server: upstream.config.name, transport: upstream.config.transport }, upstream.status().healthy ? 1 : 0);
        }
      },
    });
    new Gauge({
      name: 'mcp_guard_upstream_circuit_open',
      help: "Whether the upstream server's circuit breaker has tripped (1: open or half-open, requests fail fast until a trial request succeeds) or not (0). Servers without a circuit breaker have no series.",
      labelNames: ['server'],
      registers,
      collect() {
        this.reset();
        for (const upstream of view()?.allUpstreams() ?? []) {
          const circuit = upstream.status().circuit;
          if (circuit !== undefined) this.set({ server: upstream.config.name }, circuit === 'closed' ? 0 : 1);
        }
      },
    });
    new Counter({
      name: 'mcp_guard_upstream_restarts_total',
      help: "Restarts of an upstream server's process (stdio) since the gateway started.",
      labelNames: ['server'],
      registers,
      collect() {
        for (const upstream of view()?.allUpstreams() ?? []) {
          restartTotals.follow(this, { server: upstream.config.name }, upstream.status().restarts);
        }
      },
    });
    new Gauge({
      name: 'mcp_guard_active_sessions',
      help: 'Open downstream MCP sessions.',
      registers,
      collect() {
        this.set(view()?.sessions.size ?? 0);
      },
    });

    // Series that exist from the start, so that rates and ratios have no gaps.
    this.rateLimitTotal.cell('true');
    this.rateLimitTotal.cell('false');
    for (const scope of ['address', 'identity', 'tool'] as const) this.rateLimited.inc({ scope }, 0);

    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /**
   * One answered request on an MCP endpoint: its HTTP method, HTTP status, duration, and the
   * configured server it was routed to (undefined when it was routed to none: refused before
   * routing, or an unknown server; that counts as "none").
   */
  request(httpMethod: string, status: number, seconds: number, server?: string): void {
    const method = httpMethodLabel(httpMethod);
    const serverLabel = server === undefined ? NO_SERVER : this.serverLabel(server);
    this.requests.cell(method, statusLabel(status), serverLabel).value++;
    if (validDuration(seconds)) this.requestDuration.cell(method, serverLabel).observe(seconds);
  }

  auth(provider: AuthProviderLabel, result: AuthResult): void {
    this.authTotal.cell(provider, result).value++;
  }

  /**
   * One rate limit check (call it for each limit checked: address, identity, tool):
   * mcp_guard_rate_limit_total{allowed} keeps the earlier gateway's name and single label; a
   * refusal also counts in mcp_guard_rate_limited_total{scope} (the limit that refused; "other"
   * when not given).
   */
  rateLimit(allowed: boolean, scope?: RateLimitScope): void {
    this.rateLimitTotal.cell(allowed ? 'true' : 'false').value++;
    if (!allowed) this.rateLimited.inc({ scope: scope ?? OTHER });
  }

  rateLimitStoreError(): void {
    this.rateLimitStoreErrors.inc();
  }

  /** A reload of the config, by its result. */
  configReload(result: 'applied' | 'unchanged' | 'invalid'): void {
    this.configReloads.inc({ result });
  }

  /** The servers a reload configured: label values from now on (the old ones stay for the series already counted). */
  knowServers(names: readonly string[]): void {
    for (const name of names) (this.servers as Set<string>).add(name);
  }

  /** Tool integrity: a definition seen unlike its pin, unpinned or trusted on first use (once each), or a call refused. */
  toolIntegrityEvent(server: string, result: 'changed' | 'unpinned' | 'trusted' | 'refused'): void {
    this.toolIntegrity.inc({ server: this.serverLabel(server), result });
  }

  /** A decision on a call that needed a person's approval. */
  toolApproval(server: string, result: 'accepted' | 'declined' | 'cancelled' | 'unavailable' | 'timeout'): void {
    this.toolApprovals.inc({ server: this.serverLabel(server), result });
  }

  /** A member of a virtual server left out of an answer or a session. */
  memberOmitted(virtualServer: string, server: string): void {
    this.membersOmitted.inc({ virtual_server: this.serverLabel(virtualServer), server: this.serverLabel(server) });
  }

  /** One request forwarded to a server: its JSON-RPC method, how long the server took, the outcome. */
  upstreamRequest(server: string, method: string, seconds: number, outcome: UpstreamOutcome): void {
    const label = this.serverLabel(server);
    this.upstreamRequests.cell(label, methodLabel(method), outcome).value++;
    if (validDuration(seconds)) this.upstreamLatency.cell(label).observe(seconds);
  }

  /** A cacheable request looked up in the gateway's cache of modern results. */
  cacheLookup(server: string, hit: boolean): void {
    this.cacheLookups.cell(this.serverLabel(server), hit ? 'hit' : 'miss').value++;
  }

  /**
   * One tools/call: a tool the server never listed counts as "__other__"; a server not configured
   * counts as "other", and its tools all as "__other__".
   */
  toolCall(server: string, tool: string, outcome: ToolCallOutcome): void {
    const label = this.serverLabel(server);
    const known = this.servers.has(server) && (this.tools.get(server)?.has(tool) ?? false);
    this.toolCalls.cell(label, known ? tool : OTHER_TOOL, outcome).value++;
  }

  /**
   * Tool names from a server's own tools/list result become label values, up to maxToolsPerServer
   * per server (first listed, first kept; a later page or list_changed adds to them). Names from a
   * server that is not configured are ignored.
   */
  learnTools(server: string, names: readonly string[]): void {
    if (!this.servers.has(server)) return;
    let known = this.tools.get(server);
    if (!known) {
      known = new Set();
      this.tools.set(server, known);
    }
    for (const name of names) {
      if (known.size >= this.maxToolsPerServer) return;
      if (typeof name === 'string' && name.length > 0 && name.length <= MAX_TOOL_NAME_LENGTH && name !== OTHER_TOOL) known.add(name);
    }
  }

  /** An authenticated request from this identity (its id, never a credential). */
  identitySeen(id: string): void {
    const now = this.now();
    const seen = this.identities.get(id);
    if (seen === undefined) insert(this.identities, id, { touched: now }, this.maxIdentities);
    // Seen within the last second: nothing moved, nothing to forget (src/lru.ts).
    else if (!touch(this.identities, id, seen, now)) return;
    this.forgetIdentities(now);
  }

  /** The audit log's drop counters, read at scrape time. */
  setAuditStats(read: () => AuditStats): void {
    this.auditStats = read;
  }

  /** The audit archive's counts, read at scrape time. */
  setArchiveStats(read: () => ArchiveView): void {
    this.archiveStats = read;
  }

  /** Upstream health, restarts and open sessions, read from the gateway at scrape time. */
  bindGateway(gateway: GatewayView): void {
    this.gateway = gateway;
  }

  /** The exposition in Prometheus text format. */
  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** A server name as a label value: a configured name, else "other". */
  private serverLabel(server: string): string {
    return this.servers.has(server) ? server : OTHER;
  }

  /** Drops identities last seen before the window (oldest first, so it stops at the first recent one). */
  private forgetIdentities(now: number): void {
    const cutoff = now - this.identityWindowMs;
    for (const [id, seen] of this.identities) {
      if (seen.touched >= cutoff) break;
      this.identities.delete(id);
    }
  }
}

/** prom-client throws on NaN; a bad clock reading must not fail the request it measures. */
function validDuration(seconds: number): boolean {
  return Number.isFinite(seconds) && seconds >= 0;
}

/**
 * A counter that follows a cumulative total kept elsewhere (audit drops, upstream restarts): at each
 * scrape it grows by what the total grew since the last one. A total that went down is ignored.
 */
class FollowedTotals {
  private readonly last = new Map<string, number>();

  follow<T extends string>(counter: Counter<T>, labels: Record<T, string>, total: number): void {
    const key = JSON.stringify(labels);
    const previous = this.last.get(key);
    if (previous === undefined) {
      counter.inc(labels, Math.max(0, total));
      this.last.set(key, Math.max(0, total));
    } else if (total > previous) {
      counter.inc(labels, total - previous);
      this.last.set(key, total);
    }
  }
}
