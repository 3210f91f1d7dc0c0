/**
 * Packages that only some configurations use, loaded when first needed rather than at start: a
 * gateway without rate limits, Redis, API keys or pretty logs pays neither their memory nor
 * their start-up time. Each is CommonJS, so require() loads it synchronously where it is needed;
 * the types come from `import type`, which loads nothing.
 */
import { createRequire } from 'node:module';

const requireModule = createRequire(import.meta.url);
const loaded = new Map<string, unknown>();

/** The module, required on the first call; later calls cost a Map lookup (some run per request). */
function load(id: string): unknown {
  let module = loaded.get(id);
  if (module === undefined) {
    module = requireModule(id);
    loaded.set(id, module);
  }
  return module;
}

/** ioredis: the shared rate limit store (`store = "redis"`). */
export function ioredis(): typeof import('ioredis') {
  return load('ioredis') as typeof import('ioredis');
}

/** @fastify/rate-limit: `[rate_limit]`. */
export function rateLimitPlugin(): typeof import('@fastify/rate-limit') {
  return load('@fastify/rate-limit') as typeof import('@fastify/rate-limit');
}

/** The plugin's own stores: an LRU in this process, or a Lua script on Redis. */
export function rateLimitStores(): {
  LocalStore: typeof import('@fastify/rate-limit/store/LocalStore.js').default;
  RedisStore: typeof import('@fastify/rate-limit/store/RedisStore.js').default;
} {
  return {
    LocalStore: load('@fastify/rate-limit/store/LocalStore.js') as typeof import('@fastify/rate-limit/store/LocalStore.js').default,
    RedisStore: load('@fastify/rate-limit/store/RedisStore.js') as typeof import('@fastify/rate-limit/store/RedisStore.js').default,
  };
}

/** argon2: checking an API key the first time it is seen, and `keygen` / `hash-key`. */
export function argon2(): typeof import('argon2') {
  return load('argon2') as typeof import('argon2');
}

/** pino-pretty: MCP_GUARD_LOG_FORMAT=pretty. */
export function pinoPretty(): typeof import('pino-pretty') {
  return load('pino-pretty') as typeof import('pino-pretty');
}

type CompilersFactory = NonNullable<NonNullable<import('fastify').FastifyServerOptions['schemaController']>['compilersFactory']>;

/**
 * Fastify's schema compilers (ajv and fast-json-stringify, about 140 files), loaded the first
 * time a route with a schema is registered. No route of the gateway declares one, so they never
 * load; Fastify itself would load both at start. Resolved from Fastify's own location, as its
 * dependencies.
 */
export const lazySchemaCompilers = {
  buildValidator: lazyFactory('@fastify/ajv-compiler'),
  buildSerializer: lazyFactory('@fastify/fast-json-stringify-compiler'),
} as unknown as CompilersFactory;

type Factory = (...args: unknown[]) => unknown;

/** A compiler factory that requires `id` (a Fastify dependency exporting a factory of factories) on its first call. */
function lazyFactory(id: string): Factory {
  let factory: Factory | undefined;
  return (...args) => {
    factory ??= (createRequire(requireModule.resolve('fastify'))(id) as () => Factory)();
    return factory(...args);
  };
}
