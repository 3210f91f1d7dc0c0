/**
 * The era seam of the pipeline: how the requests of one POST are forwarded, given the client's
 * era and the server's. The pipeline (src/pipeline.ts) runs the same stages for every request and
 * asks this file for one `Forwarding`; everything that differs between the eras is here or below
 * it (src/eras/).
 *
 *   client   server   forwarding
 *   legacy   either   the session's upstream session as it is (a modern server is reached
 *                     through a legacy-shaped session: src/eras/modern-server.ts)
 *   modern   legacy   translated: the request without its envelope on the identity's own upstream
 *                     session, server requests turned into input rounds, the answer in the modern
 *                     shape; `server/discover` answered from what the server said at initialize
 *   modern   modern   direct: the request as it is, its answer as it is, cacheable results cached
 */
import type { FastifyReply } from 'fastify';
import { ownerKey } from '../auth/identity.js';
import type { JsonRpcMessage, JsonRpcRequest } from '../jsonrpc/messages.js';
import { discoverResult, toModernResult, type ModernContext } from './codec.js';
import type { Gateway } from '../mcp/gateway.js';
import { bindingOf } from './input-rounds.js';
import { answered, type Outcome, type PostResponse } from '../mcp/post-response.js';
import type { DownstreamSession } from '../mcp/sessions.js';
import type { LineLogger } from '../observability/logger.js';
import type { Identity } from '../auth/identity.js';
import type { RouteConfig } from '../config/schema.js';
import type { UpstreamSession } from '../upstreams/upstream.js';

/** How the requests of one POST reach their server. */
export interface Forwarding {
  /** Sends one request (authorized and within its limits) and gives its outcome; never throws. */
  forward(request: JsonRpcRequest): Promise<Outcome>;
  /** The gateway's own answer to a request that is not forwarded at all; undefined for the others. */
  local?(request: JsonRpcRequest): Outcome | undefined;
}

/** What every forwarding needs to know of the request it serves. */
export interface ForwardingContext {
  gateway: Gateway;
  server: RouteConfig;
  forwardPath: string;
  identity: Identity;
  post: PostResponse;
  reply: FastifyReply;
  log: LineLogger;
}

/** A legacy client's requests, on its session's upstream session or the identity's shared one. */
export function legacyForwarding({ gateway, post, log }: ForwardingContext, upstream: UpstreamSession, session: DownstreamSession | undefined): Forwarding {
  return { forward: (r) => gateway.forward(r, upstream, session, post, log) };
}

/**
 * A modern request to a legacy server: its answer in the modern shape, its server requests as
 * input rounds (src/eras/input-rounds.ts), and its cancellation when the client closes the
 * response (2026-07-28 has no notifications/cancelled on HTTP).
 */
export function translatedForwarding(context: ForwardingContext, upstream: UpstreamSession, modern: ModernContext): Forwarding {
  const { gateway, post, identity, server, reply, log } = context;
  const init = upstream.initializeResult;
  const initResult = 'result' in init ? init.result : {};
  const serverInfo = initResult['serverInfo'];
  const signal = clientGone(reply);
  return {
    local: (r) => (r.method === 'server/discover' ? answered({ jsonrpc: '2.0', id: r.id, result: discoverResult(initResult) }) : undefined),
    async forward(r) {
      const bind = () => bindingOf(ownerKey(identity), server.name, r);
      const outcome = await gateway.forwardModern(r, upstream, post, signal, modern.clientCapabilities, bind, log);
      const response = outcome.response;
      if (!('result' in response)) return outcome;
      return { ...outcome, response: { ...response, result: toModernResult(r.method, response.result, serverInfo) } };
    },
  };
}

/**
 * A modern request to a modern server: it goes as it is, its answer comes back as it is (input
 * rounds, listen streams and caching hints are the client's and the server's business).
 * Cacheable results are served within their TTL, shared only when the server marked them public.
 */
export function directForwarding(
  { gateway, server, forwardPath, identity, post, reply, log }: ForwardingContext,
  headers: Record<string, string> | undefined,
  onCacheLookup: (hit: boolean) => void,
): Forwarding {
  const owner = ownerKey(identity);
  return {
    async forward(r) {
      const keys = gateway.cache.keys(server.name, forwardPath, r, owner);
      const hit = keys && gateway.cache.get(keys, r.id);
      if (keys) onCacheLookup(hit !== undefined);
      if (hit) return { ...answered(hit), cached: true };
      const outcome = await gateway.call(r, server, forwardPath, post, clientGone(reply), headers, owner, log);
      if (keys) gateway.cache.put(keys, outcome.response);
      return outcome;
    },
  };
}

/**
 * What a modern request may receive before its answer: progress, and log lines only when it
 * asked for them (`_meta` logLevel; a 2026-07-28 server sends none otherwise).
 */
export function modernRelay(modern: ModernContext): (message: JsonRpcMessage) => boolean {
  return (message) => modern.logLevel !== undefined || !('method' in message) || message.method !== 'notifications/message';
}

/** Aborts when the client closes its response before the answer: a 2026-07-28 cancellation. */
function clientGone(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  const res = reply.raw;
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  return controller.signal;
}
