/**
 * Which server a request is for: by exact name (`/mcp/:server_name`) or by the longest path prefix
 * that matches on whole segments (`/api` matches `/api` and `/api/x`, never `/apix`, a bug of the
 * earlier gateway). Lookups cost one Map probe per path segment, whatever the number of servers.
 */
import type { ServerConfig } from '../config/schema.js';

export interface PrefixMatch {
  server: ServerConfig;
  /** Path and query to append to the server's url (http/sse); '' = the url unchanged. */
  forwardPath: string;
}

/** Why a path cannot be routed at all (before any server is considered). */
export class UnsafePathError extends Error {
  override readonly name = 'UnsafePathError';
}

/**
 * `.` and `..` segments, plain or percent-encoded, would let a request climb out of its prefix.
 * Encoded twice too (`%252e`): the gateway forwards the path as written, as a proxy must, and an
 * upstream (or something behind it) that decodes twice would otherwise see a `..`.
 */
const DOT_SEGMENT = /(^|\/)(\.|%2e|%252e){1,2}(\/|$)/i;
/** Slashes and backslashes hidden from the router by encoding, once or twice. */
const ENCODED_SLASH = /%2f|%5c|%252f|%255c|\\/i;

export class Router {
  private readonly byNameMap = new Map<string, ServerConfig>();
  private readonly byPrefix = new Map<string, ServerConfig>();

  constructor(readonly servers: readonly ServerConfig[]) {
    for (const server of servers) {
      this.byNameMap.set(server.name, server);
      this.byPrefix.set(server.path_prefix, server);
    }
  }

  names(): string[] {
    return this.servers.map((s) => s.name);
  }

  byName(name: string): ServerConfig | undefined {
    return this.byNameMap.get(name);
  }

  /**
   * Longest-prefix match of a raw request URL (path and query, as received). Throws
   * UnsafePathError for dot segments or encoded slashes.
   */
  match(rawUrl: string): PrefixMatch | undefined {
    const q = rawUrl.indexOf('?');
    const path = q === -1 ? rawUrl : rawUrl.slice(0, q);
    const query = q === -1 ? '' : rawUrl.slice(q);
    if (DOT_SEGMENT.test(path) || ENCODED_SLASH.test(path)) {
      throw new UnsafePathError('the path contains "." or ".." segments or an encoded slash');
    }
    let candidate = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
    for (;;) {
      const server = this.byPrefix.get(candidate === '' ? '/' : candidate);
      if (server) {
        return { server, forwardPath: forwardPathFor(server, path, query) };
      }
      if (candidate === '' || candidate === '/') return undefined;
      candidate = candidate.slice(0, candidate.lastIndexOf('/'));
    }
  }
}

/**
 * The seed guide's path transformation: the full path by default, without the matched prefix
 * when strip_prefix is set; the query is kept either way.
 */
export function forwardPathFor(server: ServerConfig, path: string, query: string): string {
  if (server.transport === 'stdio' || !server.strip_prefix) return path + query;
  const rest = server.path_prefix === '/' ? path : path.slice(server.path_prefix.length);
  return (rest === '/' ? '' : rest) + query;
}
