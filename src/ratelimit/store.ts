/**
 * Where the counters live: @fastify/rate-limit's own stores (an LRU in this process, or a Lua
 * script on a Redis every replica shares), behind CounterStore, which limiter.ts counts through.
 * It keeps one readable Redis namespace (`mcp-guard:ratelimit:<key>`, the key saying which limit
 * it counts), tags store failures as StoreError, so that the limiter tells "Redis is down" apart
 * from a bug, and hands out a copy of each count (see incr).
 */
import type { FastifyRateLimitStore } from '@fastify/rate-limit';
import type { Redis } from 'ioredis';
import type { RateLimitConfig } from '../config/schema.js';
import { ioredis, rateLimitStores } from '../optional.js';
import { errorMessage } from '../error-message.js';

/** Prefix of every counter in Redis. */
export const REDIS_NAMESPACE = 'mcp-guard:ratelimit:';

/** Keys each in-memory limit remembers (least recently used out: an evicted key starts a new window). */
export const MEMORY_KEYS_PER_LIMIT = 10_000;

/** The store could not count (Redis unreachable, timed out, refused the command). */
export class StoreError extends Error {
  override readonly name = 'StoreError';
  constructor(override readonly cause: unknown) {
    super(errorMessage(cause));
  }
}

/** One count of a key: how many requests its window has seen, and ms until the window ends. */
export interface Count {
  current: number;
  ttl: number;
}

/**
 * The counter of one limit: one of the plugin's stores. In memory each limit gets its own LRU (a
 * flood of addresses cannot evict identity counters); on Redis they share the client and the
 * namespace, and their keys differ by prefix.
 */
export class CounterStore {
  private readonly inner: Pick<FastifyRateLimitStore, 'incr'>;

  constructor(redis: Redis | undefined) {
    const { LocalStore, RedisStore } = rateLimitStores();
    this.inner = redis ? new RedisStore(false, false, redis, REDIS_NAMESPACE) : new LocalStore(false, false, MEMORY_KEYS_PER_LIMIT);
  }

  /**
   * Counts one request for `key` in a window of `windowMs` and calls back with the count, or a
   * StoreError: synchronously for the in-memory store, when Redis answers for the shared one.
   */
  incr(key: string, windowMs: number, max: number, callback: (result: Count | StoreError) => void): void {
    let answered = false;
    try {
      this.inner.incr(
        key,
        (error, result) => {
          answered = true;
          // A copy: LocalStore hands out its live counter object, which the next incr of the same
          // key changes before the limiter reads it when calls overlap (the tools/calls of a batch).
          if (error || !result) callback(new StoreError(error));
          else callback({ current: result.current, ttl: result.ttl });
        },
        windowMs,
        max,
      );
    } catch (error) {
      // The in-memory store calls back synchronously: what the callback threw is not the store's.
      if (answered) throw error;
      // ioredis throws synchronously for some argument problems; the limiter sees one kind of failure.
      callback(new StoreError(error));
    }
  }
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
