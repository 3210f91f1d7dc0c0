/**
 * The constants of the 2026-07-28 era that every layer reads: its `_meta` keys and its methods.
 * The rules that use them live in src/eras/codec.ts (downstream) and src/upstreams/era.ts (the probe).
 */

/** The per-request `_meta` keys of the modern era. */
export const META = {
  protocolVersion: 'io.modelcontextprotocol/protocolVersion',
  clientCapabilities: 'io.modelcontextprotocol/clientCapabilities',
  clientInfo: 'io.modelcontextprotocol/clientInfo',
  logLevel: 'io.modelcontextprotocol/logLevel',
  serverInfo: 'io.modelcontextprotocol/serverInfo',
  subscriptionId: 'io.modelcontextprotocol/subscriptionId',
} as const;

/**
 * The client requests of the modern era (2026-07-28 schema, without the tasks extension).
 * A legacy-only method (`initialize`, `ping`, `logging/setLevel`, `resources/subscribe`) sent
 * the modern way is a "Method not found" (404), as from any modern server.
 */
export const MODERN_METHODS: ReadonlySet<string> = new Set([
  'server/discover',
  'subscriptions/listen',
  'tools/list',
  'tools/call',
  'prompts/list',
  'prompts/get',
  'resources/list',
  'resources/templates/list',
  'resources/read',
  'completion/complete',
]);

/** Methods whose results carry the caching hints `ttlMs` and `cacheScope` (specification, caching). */
export const CACHEABLE_METHODS: ReadonlySet<string> = new Set([
  'server/discover',
  'tools/list',
  'prompts/list',
  'resources/list',
  'resources/templates/list',
  'resources/read',
]);

/** Methods that may answer `resultType: "input_required"` (specification, MRTR). */
export const INPUT_REQUIRED_METHODS: ReadonlySet<string> = new Set(['tools/call', 'prompts/get', 'resources/read']);
