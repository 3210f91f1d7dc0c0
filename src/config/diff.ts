/**
 * What changed between the running config and a reloaded one (docs/operations.md, "Reload"): the
 * reload applies exactly this, and what did not change never notices. Names and key ids only:
 * a diff is logged and audited, and never carries a secret.
 */
import { isDeepStrictEqual } from 'node:util';
import type { GatewayConfig } from './schema.js';

/** Added, removed and changed entries of a list keyed by name or id; the rest are unchanged. */
export interface Changes {
  added: string[];
  removed: string[];
  changed: string[];
}

export interface ConfigDiff {
  servers: Changes;
  virtualServers: Changes;
  /** API keys and client certificates, by id. */
  keys: Changes;
  /** Anything in `[auth]` besides the keys (JWT settings, failure limits). */
  jwt: boolean;
  rateLimit: boolean;
  audit: boolean;
  /** `[tool_integrity]` (the pin file itself is read again on every reload, changed or not). */
  toolIntegrity: boolean;
  /**
   * Keys that changed but only take effect on a restart: the whole `[server]` table (the listener,
   * its limits and TLS, the Host and Origin checks, metrics on or off, the session store's sizes),
   * `[auth]` appearing or going, rate limits switched on, and what protects the gateway's own routes (`protect_routes`,
   * `protect_metrics`, the OAuth `resource`), and `[telemetry]`. Reported, never silently ignored.
   */
  restartRequired: string[];
}

function changes<T>(before: readonly T[], after: readonly T[], keyOf: (entry: T) => string): Changes {
  const old = new Map(before.map((entry) => [keyOf(entry), entry]));
  const next = new Map(after.map((entry) => [keyOf(entry), entry]));
  const result: Changes = { added: [], removed: [], changed: [] };
  for (const [key, entry] of next) {
    const was = old.get(key);
    if (was === undefined) result.added.push(key);
    else if (!isDeepStrictEqual(was, entry)) result.changed.push(key);
  }
  for (const key of old.keys()) if (!next.has(key)) result.removed.push(key);
  return result;
}

/** Whether a config enforces rate limits (`[rate_limit]` present and enabled). */
function limited(config: GatewayConfig): boolean {
  return config.rate_limit?.enabled === true;
}

export function diffConfig(before: GatewayConfig, after: GatewayConfig): ConfigDiff {
  const keysOf = (config: GatewayConfig) => [
    ...(config.auth?.api_keys ?? []).map((key) => ({ id: `api_key:${key.id}`, key })),
    ...(config.auth?.client_certs ?? []).map((cert) => ({ id: `client_cert:${cert.id}`, key: cert })),
  ];
  const restartRequired = Object.keys({ ...before.server, ...after.server })
    .filter((key) => !isDeepStrictEqual(before.server[key as keyof typeof before.server], after.server[key as keyof typeof after.server]))
    .map((key) => `server.${key}`);
  // What decides which routes exist and how they are protected is fixed when the routes are made.
  if ((before.auth === undefined) !== (after.auth === undefined)) restartRequired.push('auth');
  for (const key of ['protect_routes', 'protect_metrics', 'resource'] as const) {
    if (before.auth && after.auth && !isDeepStrictEqual(before.auth[key], after.auth[key])) restartRequired.push(`auth.${key}`);
  }
  // The tracer and its exporter are made at start-up (src/observability/tracing/).
  if (!isDeepStrictEqual(before.telemetry, after.telemetry)) restartRequired.push('telemetry');
  // Rate limits switched on: the hooks that run them are only installed at start-up (src/app/routes.ts).
  const limitsSwitchedOn = !limited(before) && limited(after);
  if (limitsSwitchedOn) restartRequired.push('rate_limit.enabled');
  return {
    servers: changes(before.servers, after.servers, (server) => server.name),
    virtualServers: changes(before.virtual_servers, after.virtual_servers, (server) => server.name),
    keys: changes(keysOf(before), keysOf(after), (entry) => entry.id),
    jwt: !isDeepStrictEqual({ ...before.auth, api_keys: undefined, client_certs: undefined }, { ...after.auth, api_keys: undefined, client_certs: undefined }),
    rateLimit: !limitsSwitchedOn && !isDeepStrictEqual(before.rate_limit, after.rate_limit),
    audit: !isDeepStrictEqual(before.audit, after.audit),
    toolIntegrity: !isDeepStrictEqual(before.tool_integrity, after.tool_integrity),
    restartRequired,
  };
}

/** Whether a list has any entry added, removed or changed. */
export function anyChange(c: Changes): boolean {
  return c.added.length + c.removed.length + c.changed.length > 0;
}

/** Whether anything that applies without a restart changed. */
export function appliesAnything(diff: ConfigDiff): boolean {
  return anyChange(diff.servers) || anyChange(diff.virtualServers) || anyChange(diff.keys) || diff.jwt || diff.rateLimit || diff.audit || diff.toolIntegrity;
}
