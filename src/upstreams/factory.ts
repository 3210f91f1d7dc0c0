import type { ServerConfig } from '../config/schema.js';
import { SseUpstream } from './sse.js';
import { StdioUpstream } from './stdio.js';
import { StreamableHttpUpstream } from './streamable-http.js';
import type { Upstream, UpstreamDeps } from './upstream.js';

/** The Upstream for a server's transport. */
export function createUpstream(config: ServerConfig, deps: UpstreamDeps): Upstream {
  switch (config.transport) {
    case 'stdio':
      return new StdioUpstream(config, deps);
    case 'http':
      return new StreamableHttpUpstream(config, deps);
    case 'sse':
      return new SseUpstream(config, deps);
  }
}
