/**
 * The request a piece of code is working for, without passing it down every call: the MCP
 * handlers run inside `withRequest(...)`, and every log line written meanwhile (by the pipeline,
 * the gateway, an upstream) carries that request's id, the same id as its `x-request-id` header
 * and its audit lines.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

export interface RequestContext {
  /** Fastify's request id (from a valid incoming `x-request-id`, else a UUID). */
  reqId: string;
}

const storage = new AsyncLocalStorage<RequestContext>();

/** Runs `fn` as work for the request `reqId`. */
export function withRequest<T>(reqId: string, fn: () => T): T {
  return storage.run({ reqId }, fn);
}

/** The request the current code works for, if any. */
export function currentRequest(): RequestContext | undefined {
  return storage.getStore();
}
