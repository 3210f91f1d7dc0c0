/**
 * Resolved server configs in tests. ServerConfig is a union by transport (src/config/schema.ts),
 * so code reads a transport's fields only after narrowing on `transport`; these helpers narrow,
 * failing the test when the loader resolved another transport than the test expects.
 */
import type { HttpServerConfig, ServerConfig, StdioServerConfig } from '../../src/config/schema.js';

export function httpServer(server: ServerConfig | undefined): HttpServerConfig {
  if (server === undefined || server.transport === 'stdio') throw new Error(`expected an http or sse server, got ${JSON.stringify(server)}`);
  return server;
}

export function stdioServer(server: ServerConfig | undefined): StdioServerConfig {
  if (server === undefined || server.transport !== 'stdio') throw new Error(`expected a stdio server, got ${JSON.stringify(server)}`);
  return server;
}

/**
 * A resolved server read as one record whatever its transport, the other transport's fields
 * absent: for assertions on what the loader resolved for a list of servers of both kinds.
 */
export function fieldsOf(server: ServerConfig | undefined): Partial<StdioServerConfig> & Partial<HttpServerConfig> {
  return (server ?? {}) as Partial<StdioServerConfig> & Partial<HttpServerConfig>;
}
