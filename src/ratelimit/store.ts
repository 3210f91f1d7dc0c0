/**
 * Where the counters live: @fastify/rate-limit's own stores (an LRU in this process, or a Lua
 * script on a Redis every replica shares), behind a small adapter that limiter.ts counts through.
 *
 * Why an adapter rather than the plugin's `redis` option: the plugin's own child stores embed the
 * route in their Redis keys (`fastify-rate-limit-undefinedundefined-<key>` for a limiter without
 * one). The adapter keeps one readable namespace
 * (`mcp-guard:ratelimit:<key>`, the key saying which limit it counts), tags store failures as
 * StoreError, so that the limiter tells "Redis is down" apart from a bug, and hands out a copy
 * of each count (see incr).
 */
import type { FastifyRateLimitStore, FastifyRateLimitStoreCtor } from '@fastify/rate-limit';
import type { Redis } from 'ioredis';
import type { RateLimitConfig } from '../config/schema.js';
import { ioredis, rateLimitStores } from '../optional.js';

/** Prefix of every counter in Redis. */
export const REDIS_NAMESPACE = 'mcp-guard:ratelimit:';

/** Keys each in-memory limit remembers (least recently used out: an evicted key starts a new window). */
export const MEMORY_KEYS_PER_LIMIT = 10_000;

/** The store could not count (Redis unreachable, timed out, refused the command). */
export class StoreError extends Error {
  override readonly name = 'StoreError';
  constructor(override readonly cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause));
  }
}

/** A store of the plugin: `incr` per request. */
type Store = Pick<FastifyRateLimitStore, 'incr'>;

/**
 * The store class limiter.ts makes one of per limit, with the plugin's store interface. In
 * memory each limit gets its own LRU (a flood of addresses cannot evict identity counters); on
 * Redis they share the client and the namespace, and their keys differ by prefix.
 */
export function storeClass(redis: Redis | undefined): FastifyRateLimitStoreCtor {
  const { LocalStore, RedisStore } = rateLimitStores();
  const open = (): Store =>
    redis ? new RedisStore(false, false, redis, REDIS_NAMESPACE) : new LocalStore(false, false, MEMORY_KEYS_PER_LIMIT);

  return class GuardStore implements FastifyRateLimitStore {
    private readonly inner = open();

    incr(key: string, callback: Parameters<FastifyRateLimitStore['incr']>[1], timeWindow: number, max: number): void {
      let answered = false;
      try {
        this.inner.incr(
          key,
          (error, result) => {
            answered = true;
            // A copy: LocalStore hands out its live counter object, which the next incr of the same
            // key changes before the limiter reads it when calls overlap (the tools/calls of a batch).
            if (error || !result) callback(new StoreError(error));
            else callback(null, { current: result.current, ttl: result.ttl });
          },
          timeWindow,
          max,
        );
      } catch (error) {
        // The in-memory store calls back synchronously: what the callback threw is not the store's.
        if (answered) throw error;
        // ioredis throws synchronously for some argument problems; the limiter sees one kind of failure.
        callback(new StoreError(error));
      }
    }

    child(): FastifyRateLimitStore {
      return new GuardStore();
    }
  };
}

/**
 * The Redis client of the shared store, tuned so that a request never waits on Redis for long:
 * no offline queue (while disconnected a command fails at once instead of queueing), each
 * command bounded by `redis_timeout_ms`, at most one resend after a reconnect, and reconnection
 * in the background (every 100 ms growing to 1 s) for as long as the gateway runs, so that Redis
 * coming back needs no restart. It connects when the app starts (lazyConnect), not when built.
 */
export function createRedisClient(config: RateLimitConfig): Redis {
  if (config.redis_url === undefined) throw new Error('rate limit: store "redis" needs redis_url');
  const { Redis } = ioredis();
  return new Redis(config.redis_url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    commandTimeout: config.redis_timeout_ms,
    connectTimeout: Math.max(1_000, config.redis_timeout_ms),
    maxRetriesPerRequest: 1,
    retryStrategy: (attempt) => Math.min(attempt * 100, 1_000),
    connectionName: 'mcp-guard-ratelimit',
  });
}
