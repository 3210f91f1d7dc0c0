/**
 * The listener's own limits against slow and greedy clients, from `[server]`: how long a client
 * may take to send its headers and its whole request, how long an idle keep-alive connection
 * stays open, and how many connections may be open at once. Node enforces them before Fastify
 * sees anything; a client over a time limit gets 408 (src/http/errors.ts renderClientError) and
 * its connection is closed. Responses are not timed: a long tool call or an SSE stream goes on
 * for as long as it needs to.
 */
import type { Server } from 'node:http';
import type { ServerSettings } from '../config/schema.js';

/** How often Node looks for requests over their time limits, at most (Node's own default is 30 s). */
const MAX_CHECK_INTERVAL_MS = 1_000;

/**
 * Applies the limits to the server, before it listens (the check interval is read when it starts
 * listening). The check runs often enough that a slow client is closed within half its timeout of
 * the deadline, not up to 30 s after it.
 */
export function applyListenerLimits(server: Server, settings: ServerSettings): void {
  server.headersTimeout = settings.headers_timeout_ms;
  server.requestTimeout = settings.request_timeout_ms;
  server.keepAliveTimeout = settings.keep_alive_timeout_ms;
  server.maxConnections = settings.max_connections;
  const shortest = Math.min(settings.headers_timeout_ms, settings.request_timeout_ms);
  // A createServer option that Node also reads from the server when it starts listening.
  (server as Server & { connectionsCheckingInterval: number }).connectionsCheckingInterval = Math.max(
    1,
    Math.min(MAX_CHECK_INTERVAL_MS, Math.floor(shortest / 2)),
  );
}
