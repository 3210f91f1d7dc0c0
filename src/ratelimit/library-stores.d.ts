/**
 * Types for the two stores @fastify/rate-limit ships (it types only the plugin). They are plain
 * CommonJS constructors: `module.exports = LocalStore` / `module.exports = RedisStore`.
 */
declare module '@fastify/rate-limit/store/LocalStore.js' {
  import type { FastifyRateLimitStore } from '@fastify/rate-limit';

  /** A fixed window per key, in an LRU of `cache` keys. */
  export default class LocalStore implements Pick<FastifyRateLimitStore, 'incr'> {
    constructor(continueExceeding: boolean, exponentialBackoff: boolean, cache?: number);
    incr: FastifyRateLimitStore['incr'];
  }
}

declare module '@fastify/rate-limit/store/RedisStore.js' {
  import type { FastifyRateLimitStore } from '@fastify/rate-limit';
  import type { Redis } from 'ioredis';

  /** A fixed window per key in Redis: INCR, and PEXPIRE on the first request, in one Lua script. */
  export default class RedisStore implements Pick<FastifyRateLimitStore, 'incr'> {
    constructor(continueExceeding: boolean, exponentialBackoff: boolean, redis: Redis, key?: string);
    incr: FastifyRateLimitStore['incr'];
  }
}
