/**
 * Where an HTTP upstream's requests go: the configured url with the client's forwarded path (prefix
 * routing), kept inside that url; and how a url may appear in a log line.
 */
import { UpstreamError } from '../errors.js';

/**
 * The upstream url with the forwarded path (and query) appended. When both carry a query, the
 * configured parameters win: an operator may pin one (an API key, a tenant) that a client must
 * not be able to override.
 */
export function targetUrl(configured: string, forwardPath: string, server: string): URL {
  const url = new URL(configured);
  if (forwardPath === '') return url;
  const queryAt = forwardPath.indexOf('?');
  const path = queryAt === -1 ? forwardPath : forwardPath.slice(0, queryAt);
  const query = queryAt === -1 ? '' : forwardPath.slice(queryAt + 1);
  const base = url.pathname.replace(/\/+$/, '');
  if (path !== '' && path !== '/') {
    url.pathname = base + (path.startsWith('/') ? path : `/${path}`);
    // The URL parser resolves dot segments (also %2e%2e): never leave the configured path.
    if (url.pathname !== base && !url.pathname.startsWith(`${base}/`)) {
      throw new UpstreamError('protocol', server, `The forwarded path leaves the url of upstream '${server}'`);
    }
  }
  for (const [key, value] of new URLSearchParams(query)) {
    if (!url.searchParams.has(key)) url.searchParams.append(key, value);
  }
  return url;
}

/** A url as it may appear in logs: no credentials, no query (which may hold a key). */
export function loggableUrl(url: URL): string {
  return `${url.origin}${url.pathname}`;
}
