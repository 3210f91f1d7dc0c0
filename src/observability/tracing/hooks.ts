/**
 * Stage 0 with telemetry on: the hooks that run before an MCP request is read (rate limits,
 * authentication) note when they ran, and the request's spans get them as children
 * (sdk.ts start()). With telemetry off the hooks are the plain ones.
 */
import type { FastifyReply, FastifyRequest, onRequestAsyncHookHandler, onRequestHookHandler } from 'fastify';
import type { StageTiming } from './tracing.js';

type AnyHook = onRequestHookHandler | onRequestAsyncHookHandler;

/**
 * A stage 0 hook that also notes when it ran (request.tracing), for the spans made later. Only
 * installed with telemetry on: off, the hooks are the plain ones.
 */
export function timedHook(name: StageTiming['name'], hook: AnyHook): onRequestHookHandler {
  return function (this: unknown, request: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) {
    const start = performance.now();
    const tracing = (request.tracing ??= { stages: [] });
    const finish = (err?: Error): void => {
      tracing.stages.push({ name, start, end: performance.now() });
      done(err);
    };
    // A callback-style hook calls done itself; an async one ignores it and returns its promise.
    const result: unknown = (hook as onRequestHookHandler).call(this as never, request, reply, finish);
    if (result instanceof Promise) result.then(() => finish(), finish);
  };
}
