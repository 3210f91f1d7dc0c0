/**
 * Liveness, readiness and the route table. Unauthenticated by default: they expose server names,
 * prefixes, transports, eras and health, never urls, commands or credentials. `[auth] protect_routes`
 * puts /routes behind authentication, and then it lists only the servers the caller may reach.
 */
import type { FastifyInstance, onRequestAsyncHookHandler } from 'fastify';
import { mayReach } from '../auth/identity.js';
import type { Gateway } from '../mcp/gateway.js';
import { identityOf } from './auth.js';
import { viewFor } from '../virtual/view.js';

export interface Lifecycle {
  /** Every upstream has been started once. */
  started: boolean;
  /**
   * SIGTERM/SIGINT received, and `[server] shutdown_delay_ms` running: readiness is down so that
   * load balancers take this replica out, while every request is still served (with
   * `Connection: close`, so kept-alive clients move on).
   */
  draining: boolean;
  /** The graceful stop has begun: new requests get 503, readiness stays down. */
  stopping: boolean;
}

function serverHealth(gateway: Gateway) {
  return gateway.allUpstreams().map((u) => {
    const s = u.status();
    return {
      name: u.config.name,
      path_prefix: u.config.path_prefix,
      transport: u.config.transport,
      // The server's MCP era once known (probed, or configured): "legacy" or "modern".
      ...(u.verdict !== undefined ? { era: u.verdict.era } : {}),
      healthy: s.healthy,
      state: s.state,
      // 'open': requests fail fast without reaching the server; absent when it has no circuit breaker.
      ...(s.circuit !== undefined ? { circuit: s.circuit } : {}),
      ...(s.lastError !== undefined ? { error: s.lastError } : {}),
      restarts: s.restarts,
      // stdio with isolation "identity" or "session": how many children run now.
      ...(s.children !== undefined ? { children: s.children } : {}),
    };
  });
}

export function registerHealthRoutes(app: FastifyInstance, gateway: Gateway, lifecycle: Lifecycle, protectRoutes?: onRequestAsyncHookHandler): void {
  app.get('/health', async () => ({ status: 'ok' }));
  app.get('/live', async () => ({ status: 'ok' }));
  app.get('/ready', async (_request, reply) => {
    const servers = serverHealth(gateway);
    const leaving = lifecycle.draining || lifecycle.stopping;
    const ready = lifecycle.started && !leaving && servers.some((s) => s.healthy);
    const reason = leaving ? 'shutting down' : !lifecycle.started ? 'upstreams are starting' : ready ? undefined : 'no upstream is healthy';
    void reply.code(ready ? 200 : 503);
    return { status: ready ? 'ready' : 'not_ready', ...(reason ? { reason } : {}), servers };
  });
  app.get('/routes', { ...(protectRoutes ? { onRequest: protectRoutes } : {}) }, async (request) => {
    const identity = identityOf(request);
    const servers = serverHealth(gateway);
    const healthy = new Map(servers.map((s) => [s.name, s.healthy]));
    // A virtual server, with the members this caller may reach (src/virtual/view.ts): healthy while one of them is.
    const virtual = gateway.config.virtual_servers.flatMap((config) => {
      const view = viewFor(config, identity.servers);
      if (!view) return [];
      return [
        {
          name: view.name,
          ...(view.path_prefix !== undefined ? { path_prefix: view.path_prefix } : {}),
          transport: 'virtual',
          servers: view.servers,
          separator: view.separator,
          healthy: view.servers.some((member) => healthy.get(member) === true),
        },
      ];
    });
    return { routes: [...servers.filter((s) => mayReach(identity, s.name)), ...virtual] };
  });
}
