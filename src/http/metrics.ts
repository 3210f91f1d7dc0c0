/**
 * GET /metrics: the Prometheus text exposition of the app's own registry. Unauthenticated unless
 * the app passes a protect hook (`[auth] protect_metrics`); it exposes server and tool names,
 * counts and timings, never identities, urls or credentials.
 */
import type { FastifyInstance, onRequestAsyncHookHandler } from 'fastify';
import type { Metrics } from '../observability/metrics.js';

export function registerMetricsRoute(app: FastifyInstance, metrics: Metrics, protect?: onRequestAsyncHookHandler): void {
  app.get('/metrics', { ...(protect ? { onRequest: protect } : {}) }, async (_request, reply) => {
    const text = await metrics.text();
    void reply.header('content-type', metrics.contentType).header('cache-control', 'no-store');
    return text;
  });
}
