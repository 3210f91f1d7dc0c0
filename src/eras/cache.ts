/**
 * The gateway's cache of modern servers' cacheable results (2026-07-28, "caching").
 *
 * A modern server marks the results of `server/discover`, `tools/list`, `prompts/list`,
 * `resources/list`, `resources/templates/list` and `resources/read` with `ttlMs` (how long they
 * stay fresh) and `cacheScope`: `public` results hold nothing user-specific and "any client,
 * shared gateway, or caching proxy MAY store and serve" them; `private` ones "MUST NOT be shared
 * across authorization contexts". The gateway keeps both within their TTL:
 *
 * - public results under a key of server, path, method and parameters, shared by every caller;
 * - private results under the same key plus the caller's identity, so never shared;
 * - never: error answers, `input_required` results, requests carrying `inputResponses` or
 *   `requestState`, results without a positive TTL, methods outside the list above.
 *
 * A served copy tells the client how much of its freshness is left (`ttlMs` minus its age), as an
 * HTTP cache's `Age` does. The cache holds at most MAX_ENTRIES results (the oldest go first) and
 * a TTL is capped at MAX_TTL_MS (the official client's own cap). A list-changed notification the
 * gateway does not see cannot invalidate an entry: a server that changes a list sooner than its
 * TTL says should give a shorter TTL.
 */
import type { JsonRpcRequest, JsonRpcResponse, JsonRpcResult } from '../jsonrpc/messages.js';
import { CACHEABLE_METHODS } from '../protocol/modern.js';

const MAX_ENTRIES = 1_000;
const MAX_TTL_MS = 86_400_000;

interface Entry {
  result: Record<string, unknown>;
  storedAt: number;
  expiresAt: number;
}

export class ResultCache {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly now: () => number = Date.now) {}

  get size(): number {
    return this.entries.size;
  }

  /**
   * The cache key of a request, for the caller `owner` on `server` + `path`; undefined when the
   * request is never served from the cache. The private and public keys differ by the owner.
   */
  keys(server: string, path: string, request: JsonRpcRequest, owner: string): { shared: string; own: string } | undefined {
    if (!CACHEABLE_METHODS.has(request.method)) return undefined;
    const params: Record<string, unknown> = { ...request.params };
    if ('inputResponses' in params || 'requestState' in params) return undefined;
    delete params['_meta'];
    const base = `${server}\u0000${path}\u0000${request.method}\u0000${JSON.stringify(params)}`;
    return { shared: base, own: `${base}\u0000${owner}` };
  }

  /** A fresh copy for this request (its id, the TTL left), or undefined. */
  get(keys: { shared: string; own: string }, id: JsonRpcRequest['id']): JsonRpcResult | undefined {
    const entry = this.fresh(keys.own) ?? this.fresh(keys.shared);
    if (!entry) return undefined;
    const left = Math.max(0, entry.expiresAt - this.now());
    return { jsonrpc: '2.0', id, result: { ...entry.result, ttlMs: left } };
  }

  /** Keeps a result when the server allows it. */
  put(keys: { shared: string; own: string }, response: JsonRpcResponse): void {
    if (!('result' in response)) return;
    const result = response.result;
    const ttl = result['ttlMs'];
    const scope = result['cacheScope'];
    if (result['resultType'] !== 'complete' || typeof ttl !== 'number' || !(ttl > 0)) return;
    if (scope !== 'public' && scope !== 'private') return;
    const key = scope === 'public' ? keys.shared : keys.own;
    const now = this.now();
    this.entries.delete(key);
    if (this.entries.size >= MAX_ENTRIES) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(key, { result, storedAt: now, expiresAt: now + Math.min(ttl, MAX_TTL_MS) });
  }

  clear(): void {
    this.entries.clear();
  }

  private fresh(key: string): Entry | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (this.now() < entry.expiresAt) return entry;
    this.entries.delete(key);
    return undefined;
  }
}
