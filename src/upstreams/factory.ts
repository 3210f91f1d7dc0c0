import type { ServerConfig } from '../config/schema.js';
import { CircuitBreakerUpstream } from './circuit-breaker.js';
import { SseUpstream } from './http/sse.js';
import { IsolatedStdioUpstream } from './stdio/pool.js';
import { StdioUpstream } from './stdio/upstream.js';
import { StreamableHttpUpstream } from './http/streamable-http.js';
import type { Upstream, UpstreamDeps } from './upstream.js';

/**
 * The Upstream for a server's transport, behind a circuit breaker unless
 * `circuit_failure_threshold = 0` (then nothing wraps the transport at all).
 */
export function createUpstream(config: ServerConfig, deps: UpstreamDeps): Upstream {
  const upstream = createTransport(config, deps);
  return config.circuit_failure_threshold > 0 ? new CircuitBreakerUpstream(upstream, deps) : upstream;
}

function createTransport(config: ServerConfig, deps: UpstreamDeps): Upstream {
  switch (config.transport) {
    case 'stdio':
      return config.isolation === 'shared' ? new StdioUpstream(config, deps) : new IsolatedStdioUpstream(config, deps);
    case 'http':
      return new StreamableHttpUpstream(config, deps);
    case 'sse':
      return new SseUpstream(config, deps);
  }
}
