/**
 * How `[rate_limit]` maps onto a fixed-window limiter (what @fastify/rate-limit counts): pure
 * functions from rates and bursts to "at most `max` requests per window of `windowMs`", built
 * once when the app is built. docs/rate-limits.md states the same mapping for operators.
 */
import type { ApiKeyConfig, ClientCertConfig, RateLimitConfig } from '../config/schema.js';

/** An `[[auth.api_keys]]` or `[[auth.client_certs]]` entry: its `id` and own `rate_limit` count here. */
export type IdentityRateLimit = ApiKeyConfig | ClientCertConfig;
import { ToolPolicy } from '../policy/tools.js';

/** At most `max` requests per `windowMs`, per key; a key's window starts with its first request. */
export interface Limit {
  readonly max: number;
  readonly windowMs: number;
}

/** The shortest window a store can keep (both stores count in whole milliseconds). */
const MIN_WINDOW_MS = 1;

/** Guards ceil() against binary fractions: 0.1 rps x 30 s is 3.0000000000000004, not 4 requests. */
const EPSILON = 1e-9;

/**
 * A rate and a burst as a fixed window: window = burst / rate seconds, max = burst. A client may
 * send `burst` requests at once, then waits for the window to end; over time that averages
 * `rate` per second. A window shorter than 1 ms (a rate above 1000 x burst) is 1 ms, with max
 * raised so that the rate still holds.
 */
export function fixedWindow(requestsPerSecond: number, burst: number): Limit {
  const exactMs = (burst / requestsPerSecond) * 1000;
  if (exactMs >= MIN_WINDOW_MS) return { max: burst, windowMs: Math.round(exactMs) };
  return { max: Math.ceil(requestsPerSecond / 1000 - EPSILON), windowMs: MIN_WINDOW_MS };
}

/**
 * A per-key `rate_limit` (requests per second) in the identity limit's window: max =
 * ceil(rate x window). When that is below one request per window, the window grows to
 * 1 / rate seconds with max 1 instead, so that a very low rate is not rounded up to 1 per window.
 */
export function overrideWindow(base: Limit, requestsPerSecond: number): Limit {
  const perWindow = (requestsPerSecond * base.windowMs) / 1000;
  if (perWindow >= 1 - EPSILON) return { max: Math.ceil(perWindow - EPSILON), windowMs: base.windowMs };
  return { max: 1, windowMs: Math.round(1000 / requestsPerSecond) };
}

/** One `[[rate_limit.tool_limits]]` entry, compiled. */
export interface ToolLimit extends Limit {
  /** As written in the config; also part of the counter's key. */
  readonly pattern: string;
  /** The same glob matching as allowed_tools. */
  readonly matches: ToolPolicy;
}

/** Everything the limiter enforces, from the config. */
export interface LimitPlan {
  /** Before authentication, per client address. */
  readonly address: Limit;
  /** After authentication, per identity. */
  readonly identity: Limit;
  /** API key or client certificate id (unique across both) -> its own limit (`rate_limit = N` on the entry). */
  readonly keyOverrides: ReadonlyMap<string, Limit>;
  /** In config order; a tools/call counts against every entry whose pattern matches its tool. */
  readonly tools: readonly ToolLimit[];
}

export function planLimits(config: RateLimitConfig, apiKeys: readonly IdentityRateLimit[] = []): LimitPlan {
  const identity = fixedWindow(config.requests_per_second, config.burst_size);
  const keyOverrides = new Map<string, Limit>();
  for (const key of apiKeys) {
    if (key.rate_limit !== undefined) keyOverrides.set(key.id, overrideWindow(identity, key.rate_limit));
  }
  return {
    address: fixedWindow(config.per_address_requests_per_second, config.per_address_burst_size),
    identity,
    keyOverrides,
    tools: (config.tool_limits ?? []).map((entry) => ({
      ...fixedWindow(entry.requests_per_second, entry.burst_size),
      pattern: entry.tool_pattern,
      matches: ToolPolicy.fromPatterns([entry.tool_pattern]),
    })),
  };
}

/** A window as the error message and the docs say it: "1.5", "30", "0.429" (seconds). */
export function windowSeconds(windowMs: number): string {
  return String(Number((windowMs / 1000).toFixed(3)));
}
