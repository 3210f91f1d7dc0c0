/**
 * The rate limits of the MCP endpoints: per client address before authentication, per identity
 * right after it, and per tool on each tools/call once the body is decoded (pipeline.ts says
 * where each runs, docs/rate-limits.md what each counts).
 *
 * What is @fastify/rate-limit's, and what is ours:
 * - The counting is the plugin's: its stores (an LRU in this process, or its Lua script on a
 *   Redis every replica shares; store.ts adapts them) and its key normalisation (an IPv6 client by
 *   its /64). Same fixed windows, same counts, same Redis keys as its own hooks would keep.
 * - The hooks are ours, and call the store directly. The plugin's route hook and its
 *   `createRateLimit()` checkers go through an async function with an await per step (key,
 *   max, window, a Promise around the store's callback), about 15 us per request for the two
 *   limits every request meets (docs/performance.md). Here an in-memory count is a synchronous
 *   callback: the hooks are callback-style and await nothing; a Redis count waits for its reply.
 * - What the client sees is what the plugin's draft-spec mode sends: RateLimit-Limit,
 *   RateLimit-Remaining and RateLimit-Reset (seconds) on every answer the identity limit let
 *   through, and on a refusal Retry-After as well, with a JSON-RPC error (429).
 * - A store failure reaches us as a StoreError and `on_store_error` decides, with a counter and
 *   a log line at most every 10 s, instead of a silent pass.
 */
import type { FastifyInstance, FastifyRequest, onRequestHookHandler } from 'fastify';
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
import { CounterStore, createRedisClient, StoreError, type Count } from './store.js';

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

/** The part of an identity's counter keys that names it; anonymous callers are told apart by address. */
function identityPart(request: FastifyRequest): string {
  const identity = identityOf(request);
  return identity.provider === 'anonymous' ? `anonymous:${addressPart(request.clientIp)}` : ownerKey(identity);
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
  /** One store per limit: in memory each has its own LRU, so a flood of addresses cannot evict identity counters. */
  private readonly addressStore: CounterStore;
  private readonly identityStore: CounterStore;
  private readonly toolStores: CounterStore[];
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
    this.addressStore = new CounterStore(this.redis);
    this.identityStore = new CounterStore(this.redis);
    this.toolStores = this.plan.tools.map(() => new CounterStore(this.redis));
  }

  /** Connects to Redis when the app starts, and lets go of it when the app closes. */
  register(app: FastifyInstance): void {
    app.addHook('onReady', () => this.open());
    app.addHook('onClose', async () => this.close());
  }

  /** Connects the store (Redis). At start-up, and for the limiter a reload makes (src/app/reload.ts). */
  async open(): Promise<void> {
    this.log.info({ limits: this.summary(), store: this.config.store, onStoreError: this.config.on_store_error }, 'rate limits enabled');
    if (this.redis) await this.connect(this.redis);
  }

  /** Lets go of the store. */
  close(): void {
    this.redis?.disconnect();
  }

  /** Stage 0a (before authentication): the client address's limit. */
  readonly addressHook: onRequestHookHandler = (request, reply, done) => {
    const key = `address:${addressPart(request.clientIp)}`;
    this.check('address', this.addressStore, key, this.plan.address, request, undefined, {}, null, (refusal) => {
      if (refusal) sendError(reply, refusal.error, refusal.headers);
      else done();
    });
  };

  /**
   * Stage 0c (right after authentication): the identity's limit, whose state every answer it
   * lets through carries in RateLimit-* headers. Fastify skips it when authentication refused (a
   * hook does not run once the reply is sent).
   */
  readonly identityHook: onRequestHookHandler = (request, reply, done) => {
    const identity = identityOf(request);
    const limit = this.identityLimit(identity);
    this.check('identity', this.identityStore, `identity:${identityPart(request)}`, limit, request, identity, {}, null, (refusal, count) => {
      if (refusal) {
        sendError(reply, refusal.error, refusal.headers);
        return;
      }
      if (count) {
        void reply.header('ratelimit-limit', limit.max);
        void reply.header('ratelimit-remaining', Math.max(0, limit.max - count.current));
        void reply.header('ratelimit-reset', Math.ceil(count.ttl / 1000));
      }
      done();
    });
  };

  /**
   * Stage 5b: the tool limits of one tools/call (each request of a batch is checked on its own).
   * Every limit whose pattern matches counts the call, in config order, up to the first refusal.
   * Undefined, not a promise, when no tool limit matches the tool (the usual case).
   */
  checkToolCall(request: FastifyRequest, identity: Identity, tool: string, id: JsonRpcId, server?: string): Promise<LimitRefusal | undefined> | undefined {
    const first = this.plan.tools.findIndex((limit) => limit.matches.allows(tool, server));
    if (first === -1) return undefined;
    return new Promise((resolve) => {
      const next = (index: number): void => {
        const limit = this.plan.tools[index];
        if (limit === undefined) return resolve(undefined);
        if (!limit.matches.allows(tool, server)) return next(index + 1);
        const key = `tool:${limit.pattern}:${identityPart(request)}`;
        this.check('tool', this.toolStores[index]!, key, limit, request, identity, { tool, pattern: limit.pattern }, id, (refusal) => {
          if (refusal) resolve(refusal);
          else next(index + 1);
        });
      };
      next(first);
    });
  }

  /** The identity limit that applies to a request: its API key's or client certificate's own `rate_limit`, or the default. */
  identityLimit(identity: Identity): Limit {
    const own = identity.provider === 'api_key' || identity.provider === 'client_cert' ? this.plan.keyOverrides.get(identity.id) : undefined;
    return own ?? this.plan.identity;
  }

  /**
   * Counts one request against `limit` and calls `verdict`: synchronously for the in-memory
   * store, when Redis answers for the shared one. A store failure is `on_store_error`'s to decide.
   */
  private check(
    scope: LimitScope,
    store: CounterStore,
    key: string,
    limit: Limit,
    request: FastifyRequest,
    identity: Identity | undefined,
    detail: DecisionDetail,
    id: JsonRpcId | null,
    verdict: (refusal: LimitRefusal | undefined, count?: Count) => void,
  ): void {
    store.incr(key, limit.windowMs, limit.max, (count) => {
      if (count instanceof StoreError) {
        verdict(this.storeFailed(scope, count, request, identity, detail, id));
        return;
      }
      this.storeAnswered();
      const allowed = count.current <= limit.max;
      this.decide(scope, allowed, request, identity, detail);
      if (allowed) verdict(undefined, count);
      else verdict(this.exceeded(limit, count.ttl, id, detail.tool === undefined ? '' : ` for tool ${JSON.stringify(detail.tool)}`));
    });
  }

  private exceeded(limit: Limit, ttlMs: number, id: JsonRpcId | null, what = ''): LimitRefusal {
    // The plugin's own rounding (ttlInSeconds), so that the body and Retry-After agree.
    const retryAfter = Math.ceil(ttlMs / 1000);
    const requests = `${limit.max} request${limit.max === 1 ? '' : 's'}`;
    return {
      error: new GatewayError(
        'rate_limited',
        `Too Many Requests: rate limit of ${requests} per ${windowSeconds(limit.windowMs)} s exceeded${what}; retry in ${retryAfter} s`,
        id,
      ),
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
      error: new GatewayError(
        'rate_limit_unavailable',
        `Service Unavailable: the rate limit cannot be checked right now; retry in ${STORE_RETRY_AFTER_S} s`,
        id,
      ),
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
}
