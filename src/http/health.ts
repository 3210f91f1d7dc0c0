/**
 * Liveness, readiness and the route table. All unauthenticated: they expose server names,
 * prefixes, transports and health, never urls, commands or credentials.
 */
import type { FastifyInstance } from 'fastify';
import type { Gateway } from '../mcp/gateway.js';

export interface Lifecycle {
  /** Every upstream has been started once. */
  started: boolean;
  /** SIGTERM/SIGINT received: readiness goes down so load balancers stop sending traffic. */
  stopping: boolean;
}

function serverHealth(gateway: Gateway) {
  return gateway.allUpstreams().map((u) => {
    const s = u.status();
    return {
      name: u.config.name,
      path_prefix: u.config.path_prefix,
      transport: u.config.transport,
      healthy: s.healthy,
      state: s.state,
      ...(s.lastError !== undefined ? { error: s.lastError } : {}),
      restarts: s.restarts,
    };
  });
}

export function registerHealthRoutes(app: FastifyInstance, gateway: Gateway, lifecycle: Lifecycle): void {
  app.get('/health', async () => ({ status: 'ok' }));
  app.get('/live', async () => ({ status: 'ok' }));
  app.get('/ready', async (_request, reply) => {
    const servers = serverHealth(gateway);
    const ready = lifecycle.started && !lifecycle.stopping && servers.some((s) => s.healthy);
    const reason = lifecycle.stopping
      ? 'shutting down'
      : !lifecycle.started
        ? 'upstreams are starting'
        : ready
          ? undefined
          : 'no upstream is healthy';
    void reply.code(ready ? 200 : 503);
    return { status: ready ? 'ready' : 'not_ready', ...(reason ? { reason } : {}), servers };
  });
  app.get('/routes', async () => ({ routes: serverHealth(gateway) }));
}
