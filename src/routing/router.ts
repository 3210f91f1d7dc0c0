/**
 * Which server a request is for: by exact name (`/mcp/:server_name`) or by the longest path prefix
 * that matches on whole segments (`/api` matches `/api` and `/api/x`, never `/apix`, a bug of the
 * earlier gateway). Lookups cost one Map probe per path segment, whatever the number of servers.
 */
import type { RouteConfig } from '../config/schema.js';

export interface PrefixMatch {
  server: RouteConfig;
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
  private readonly byNameMap = new Map<string, RouteConfig>();
  private readonly byPrefix = new Map<string, RouteConfig>();

  /** Servers and virtual servers (one namespace of names, one of prefixes; a virtual server's prefix is optional). */
  constructor(readonly servers: readonly RouteConfig[]) {
    for (const server of servers) {
      this.byNameMap.set(server.name, server);
      if (server.path_prefix !== undefined) this.byPrefix.set(server.path_prefix, server);
    }
  }

  names(): string[] {
    return this.servers.map((s) => s.name);
  }

  byName(name: string): RouteConfig | undefined {
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
export function forwardPathFor(server: RouteConfig, path: string, query: string): string {
  // A virtual server's members are reached by name: nothing is appended to their urls.
  if (server.transport === 'virtual') return '';
  if (server.transport === 'stdio' || !server.strip_prefix) return path + query;
  const rest = server.path_prefix === '/' ? path : path.slice(server.path_prefix.length);
  return (rest === '/' ? '' : rest) + query;
}
