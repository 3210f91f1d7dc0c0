/**
 * The rate limits of the MCP endpoints, on @fastify/rate-limit: per client address before
 * authentication, per identity right after it, and per tool on each tools/call once the body is
 * decoded (pipeline.ts says where each runs, docs/rate-limits.md what each counts).
 *
 * How the plugin is used, and why:
 * - It is registered with `global: false`: only the MCP routes are limited, never /health,
 *   /ready, /metrics, /routes or /.well-known.
 * - The identity limit is the plugin's own hook, `app.rateLimit()`: keyGenerator = the identity,
 *   `max` and `timeWindow` as functions (a key's `rate_limit` override), draft-spec RateLimit-*
 *   headers and Retry-After, errorResponseBuilder and onExceeding/onExceeded for the decision.
 * - The address and tool limits are `app.createRateLimit()` checkers, called from hooks of our
 *   own. A second `app.rateLimit()` hook cannot be used: every hook of one registration marks
 *   the request with the same "already limited" symbol, so the identity hook would silently skip
 *   every request the address hook had counted. Tool limits need the decoded body and count once
 *   per tools/call of a batch, which no route hook can express.
 * - The store is the plugin's own (LRU or Redis Lua script) behind a small adapter (store.ts).
 *   `skipOnError` stays false: a store failure reaches us as a StoreError and `on_store_error`
 *   decides, with a counter and a log line at most every 10 s, instead of a silent pass.
 */
import type { FastifyInstance, FastifyRequest, onRequestAsyncHookHandler } from 'fastify';
import type { Redis } from 'ioredis';
import { ownerKey, type Identity } from '../auth/identity.js';
import type { RateLimitConfig } from '../config/schema.js';
import { identityOf } from '../http/auth.js';
import { GatewayError, sendError } from '../http/errors.js';
import type { JsonRpcId } from '../jsonrpc/messages.js';
import { RateLimitedWarning, type Logger } from '../observability/logger.js';
import type { RateLimitScope } from '../observability/metrics.js';
import { planLimits, windowSeconds, type IdentityRateLimit, type Limit, type LimitPlan } from './limits.js';
import { rateLimitPlugin } from '../optional.js';
import { createRedisClient, StoreError, storeClass } from './store.js';

/** Which limit decided (the same values as the metrics' scope label). */
export type LimitScope = RateLimitScope;

/** More about one decision, for the audit log. */
export interface DecisionDetail {
  /** tool: the tool called. */
  tool?: string;
  /** tool: the `tool_pattern` of the limit that decided. */
  pattern?: string;
  /** The store failed and `on_store_error` decided. */
  storeError?: boolean;
}

/**
 * Called once per limit checked: per request for the address and identity limits, per tools/call
 * and matching tool limit. `identity` is undefined for the address limit (it runs before
 * authentication). A listener must not throw; if it does, the error is logged and ignored.
 */
export type DecisionListener = (scope: LimitScope, allowed: boolean, request: FastifyRequest, identity: Identity | undefined, detail: DecisionDetail) => void;

/** Called on every failed store call (each also counts in `stats.storeErrors`). */
export type StoreErrorListener = (error: StoreError, scope: LimitScope) => void;

export interface RateLimiterStats {
  /** Store calls that failed (Redis unreachable or too slow), since start. */
  storeErrors: number;
}

/** A refusal: the error to answer with and the headers that go with it. */
export interface LimitRefusal {
  error: GatewayError;
  headers: Record<string, string>;
}

/** Retry-After of a 503 when the store fails and `on_store_error = "deny"`. */
const STORE_RETRY_AFTER_S = 1;

type Checker = ReturnType<FastifyInstance['createRateLimit']>;
type LibraryHook = ReturnType<FastifyInstance['rateLimit']>;

/** What the identity hook's errorResponseBuilder throws; never leaves this module. */
class LimitExceeded extends Error {
  constructor(readonly refusal: LimitRefusal) {
    super(refusal.error.message);
  }
}

/** The part of an identity's counter keys that names it; anonymous callers are told apart by address. */
function identityPart(request: FastifyRequest): string {
  const identity = identityOf(request);
  return identity.provider === 'anonymous' ? `anonymous:${addressPart(request.ip)}` : ownerKey(identity);
}

/**
 * A client address as the plugin's own key generator writes it: an IPv6 address by its /64
 * (normalizeIP), an IPv4 one as it is. Node gives IPv4 addresses in their one dotted form, and
 * the plugin's IPv6 test (a long regular expression) was a visible cost on every request.
 */
function addressPart(ip: string): string {
  return ip.includes(':') ? rateLimitPlugin().normalizeIP(ip) : ip;
}

export class RateLimiter {
  readonly plan: LimitPlan;
  readonly stats: RateLimiterStats = { storeErrors: 0 };
  /** Set by whoever records decisions (audit log, metrics). */
  onDecision: DecisionListener | undefined;
  /** Set by whoever counts store failures (metrics). */
  onStoreError: StoreErrorListener | undefined;

  private readonly redis: Redis | undefined;
  private app: FastifyInstance | undefined;
  private identityCheck: LibraryHook | undefined;
  private addressCheck: Checker | undefined;
  private toolChecks: Checker[] = [];
  private storeFailing = false;
  /** At most one warning about the store per 10 s; the next one says how many were left out. */
  private readonly storeWarning: RateLimitedWarning;

  constructor(
    private readonly config: RateLimitConfig,
    apiKeys: readonly IdentityRateLimit[] | undefined,
    private readonly log: Logger,
  ) {
    this.plan = planLimits(config, apiKeys);
    this.storeWarning = new RateLimitedWarning(log);
    if (config.store === 'redis') {
      this.redis = createRedisClient(config);
      // Without a listener ioredis prints every reconnection failure to the console.
      this.redis.on('error', (error: Error) => this.warnStore('rate limit store connection failed', error));
    }
  }

  /** Registers the plugin and, once it is loaded, the limiters; connects to Redis when the app starts. */
  register(app: FastifyInstance): void {
    this.app = app;
    void app.register(rateLimitPlugin(), { global: false, enableDraftSpec: true, skipOnError: false, store: storeClass(this.redis) });
    app.after((error) => {
      if (error) throw error;
      this.createLimiters(app);
    });
    app.addHook('onReady', async () => {
      this.log.info({ limits: this.summary(), store: this.config.store, onStoreError: this.config.on_store_error }, 'rate limits enabled');
      if (this.redis) await this.connect(this.redis);
    });
    app.addHook('onClose', async () => {
      this.redis?.disconnect();
    });
  }

  /** Stage 0a (before authentication): the client address's limit. */
  readonly addressHook: onRequestAsyncHookHandler = async (request, reply) => {
    const refusal = await this.check('address', this.ready(this.addressCheck), request, undefined, {}, null);
    if (refusal) sendError(reply, refusal.error, refusal.headers);
  };

  /** Stage 0c (right after authentication): the identity's limit. Skipped when authentication refused. */
  readonly identityHook: onRequestAsyncHookHandler = async (request, reply) => {
    if (reply.sent) return;
    const hook = this.ready(this.identityCheck);
    try {
      await hook.call(this.ready(this.app), request, reply);
    } catch (error) {
      if (error instanceof LimitExceeded) {
        sendError(reply, error.refusal.error, error.refusal.headers);
        return;
      }
      if (!(error instanceof StoreError)) throw error;
      const refusal = this.storeFailed('identity', error, request, identityOf(request), {}, null);
      if (refusal) sendError(reply, refusal.error, refusal.headers);
      return;
    }
    this.storeAnswered();
  };

  /**
   * Stage 5b: the tool limits of one tools/call (each request of a batch is checked on its own).
   * Every limit whose pattern matches counts the call, in config order, up to the first refusal.
   */
  async checkToolCall(request: FastifyRequest, identity: Identity, tool: string, id: JsonRpcId): Promise<LimitRefusal | undefined> {
    for (const [index, limit] of this.plan.tools.entries()) {
      if (!limit.matches.allows(tool)) continue;
      const refusal = await this.check('tool', this.ready(this.toolChecks[index]), request, identity, { tool, pattern: limit.pattern }, id);
      if (refusal) return refusal;
    }
    return undefined;
  }

  /** The identity limit that applies to a request: its API key's or client certificate's own `rate_limit`, or the default. */
  identityLimit(identity: Identity): Limit {
    const own = identity.provider === 'api_key' || identity.provider === 'client_cert' ? this.plan.keyOverrides.get(identity.id) : undefined;
    return own ?? this.plan.identity;
  }

  private createLimiters(app: FastifyInstance): void {
    const limitOf = (request: FastifyRequest) => this.identityLimit(identityOf(request));
    this.identityCheck = app.rateLimit({
      keyGenerator: (request) => `identity:${identityPart(request)}`,
      max: (request) => limitOf(request).max,
      timeWindow: (request) => limitOf(request).windowMs,
      errorResponseBuilder: (request, context) => new LimitExceeded(this.exceeded(limitOf(request), context.ttl, null)),
      onExceeding: (request) => this.decide('identity', true, request, identityOf(request), {}),
      onExceeded: (request) => this.decide('identity', false, request, identityOf(request), {}),
    });
    const { address, tools } = this.plan;
    this.addressCheck = app.createRateLimit({
      keyGenerator: (request) => `address:${addressPart(request.ip)}`,
      max: address.max,
      timeWindow: address.windowMs,
    });
    this.toolChecks = tools.map((limit) =>
      app.createRateLimit({
        keyGenerator: (request) => `tool:${limit.pattern}:${identityPart(request)}`,
        max: limit.max,
        timeWindow: limit.windowMs,
      }),
    );
  }

  /** One checker call: allowed (undefined) or the refusal, with the store failure policy applied. */
  private async check(
    scope: LimitScope,
    checker: Checker,
    request: FastifyRequest,
    identity: Identity | undefined,
    detail: DecisionDetail,
    id: JsonRpcId | null,
  ): Promise<LimitRefusal | undefined> {
    let result;
    try {
      result = await checker(request);
    } catch (error) {
      if (error instanceof StoreError) return this.storeFailed(scope, error, request, identity, detail, id);
      throw error;
    }
    this.storeAnswered();
    // No allowList is configured, so every request is counted.
    if (result.isAllowed) return undefined;
    this.decide(scope, !result.isExceeded, request, identity, detail);
    if (!result.isExceeded) return undefined;
    const what = detail.tool === undefined ? '' : ` for tool ${JSON.stringify(detail.tool)}`;
    return this.exceeded({ max: result.max, windowMs: result.timeWindow }, result.ttl, id, what);
  }

  private exceeded(limit: Limit, ttlMs: number, id: JsonRpcId | null, what = ''): LimitRefusal {
    // The plugin's own rounding (ttlInSeconds), so that the body and Retry-After agree.
    const retryAfter = Math.ceil(ttlMs / 1000);
    const requests = `${limit.max} request${limit.max === 1 ? '' : 's'}`;
    return {
      error: new GatewayError('rate_limited', `Too Many Requests: rate limit of ${requests} per ${windowSeconds(limit.windowMs)} s exceeded${what}; retry in ${retryAfter} s`, id),
      headers: {
        'ratelimit-limit': String(limit.max),
        'ratelimit-remaining': '0',
        'ratelimit-reset': String(retryAfter),
        'retry-after': String(retryAfter),
      },
    };
  }

  /** A failed store call: counted, reported, logged (rate-limited), then `on_store_error` decides. */
  private storeFailed(
    scope: LimitScope,
    error: StoreError,
    request: FastifyRequest,
    identity: Identity | undefined,
    detail: DecisionDetail,
    id: JsonRpcId | null,
  ): LimitRefusal | undefined {
    this.stats.storeErrors++;
    this.storeFailing = true;
    this.notify(() => this.onStoreError?.(error, scope));
    const allow = this.config.on_store_error === 'allow';
    this.warnStore(`rate limit store failed: requests are ${allow ? 'allowed' : 'refused (503)'} until it answers again`, error);
    this.decide(scope, allow, request, identity, { ...detail, storeError: true });
    if (allow) return undefined;
    return {
      error: new GatewayError('rate_limit_unavailable', `Service Unavailable: the rate limit cannot be checked right now; retry in ${STORE_RETRY_AFTER_S} s`, id),
      headers: { 'retry-after': String(STORE_RETRY_AFTER_S) },
    };
  }

  private storeAnswered(): void {
    if (!this.storeFailing) return;
    this.storeFailing = false;
    this.log.info('rate limit store is answering again');
  }

  /** A warning about the store; connection and command failures share one throttle. */
  private warnStore(message: string, error: Error): void {
    this.storeWarning.warn('store', { err: error.message, store: this.config.store, onStoreError: this.config.on_store_error }, message);
  }

  private decide(scope: LimitScope, allowed: boolean, request: FastifyRequest, identity: Identity | undefined, detail: DecisionDetail): void {
    if (!allowed) request.log.debug({ scope, ...detail }, 'rate limited');
    this.notify(() => this.onDecision?.(scope, allowed, request, identity, detail));
  }

  /** A listener's failure is its own problem, never the request's. */
  private notify(call: () => void): void {
    try {
      call();
    } catch (error) {
      this.log.error({ err: error }, 'rate limit listener failed');
    }
  }

  /**
   * Connects when the app starts, waiting at most the connect timeout: an unreachable Redis must
   * not keep the gateway from starting; until it answers, `on_store_error` applies.
   */
  private async connect(redis: Redis): Promise<void> {
    const timeoutMs = Math.max(1_000, this.config.redis_timeout_ms);
    let timer: NodeJS.Timeout | undefined;
    const connecting = redis.connect();
    // On failure ioredis keeps reconnecting in the background (retryStrategy); nobody waits for this.
    connecting.catch(() => undefined);
    try {
      await Promise.race([
        connecting,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`not connected within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
      this.log.info('rate limit store connected');
    } catch (error) {
      // Once per start, so never throttled (ioredis may already have reported the refused connection).
      this.log.warn(
        { err: (error as Error).message, store: this.config.store, onStoreError: this.config.on_store_error },
        `rate limit store not reachable at start-up: on_store_error = "${this.config.on_store_error}" applies until it is`,
      );
    } finally {
      clearTimeout(timer);
    }
  }

  private summary(): Record<string, string> {
    const describe = ({ max, windowMs }: Limit) => `${max} per ${windowSeconds(windowMs)} s`;
    const summary: Record<string, string> = { address: describe(this.plan.address), identity: describe(this.plan.identity) };
    for (const [id, limit] of this.plan.keyOverrides) summary[`key ${id}`] = describe(limit);
    for (const limit of this.plan.tools) summary[`tool ${limit.pattern}`] = describe(limit);
    return summary;
  }

  private ready<T>(value: T | undefined): T {
    if (value === undefined) throw new Error('rate limiter used before the app is ready');
    return value;
  }
}
