/**
 * The cache of modern servers' cacheable results (src/eras/cache.ts), with an injected clock: what
 * the specification allows a shared gateway to keep, for how long, and for whom.
 */
import { describe, expect, it } from 'vitest';
import { ResultCache } from '../../src/eras/cache.js';
import type { JsonRpcRequest, JsonRpcResponse } from '../../src/jsonrpc/messages.js';

function clock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

const list = (id: number, extra: Record<string, unknown> = {}): JsonRpcRequest => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/list',
  params: { _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientInfo': { name: `client-${id}` } }, ...extra },
});
const answer = (result: Record<string, unknown>): JsonRpcResponse => ({
  jsonrpc: '2.0',
  id: 1,
  result: { resultType: 'complete', tools: [{ name: 'a' }], ...result },
});

describe('ResultCache', () => {
  it("serves a public result to every caller within its TTL, with the TTL left and the caller's id", () => {
    const t = clock();
    const cache = new ResultCache(t.now);
    const alice = cache.keys('srv', '', list(1), 'alice')!;
    expect(cache.get(alice, 1)).toBeUndefined();
    cache.put(alice, answer({ ttlMs: 10_000, cacheScope: 'public' }));
    t.advance(4_000);
    // Another identity, another client info in _meta: the same public entry.
    const bob = cache.keys('srv', '', list(7), 'bob')!;
    expect(cache.get(bob, 7)).toEqual({
      jsonrpc: '2.0',
      id: 7,
      result: { resultType: 'complete', tools: [{ name: 'a' }], ttlMs: 6_000, cacheScope: 'public' },
    });
    t.advance(6_000);
    expect(cache.get(bob, 8)).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it('keeps a private result for its own identity only', () => {
    const cache = new ResultCache(clock().now);
    const alice = cache.keys('srv', '', list(1), 'alice')!;
    cache.put(alice, answer({ ttlMs: 10_000, cacheScope: 'private' }));
    expect(cache.get(alice, 2)).toBeDefined();
    expect(cache.get(cache.keys('srv', '', list(3), 'bob')!, 3)).toBeUndefined();
  });

  it('tells servers, paths, methods and parameters apart', () => {
    const cache = new ResultCache(clock().now);
    cache.put(cache.keys('srv', '', list(1), 'a')!, answer({ ttlMs: 10_000, cacheScope: 'public' }));
    expect(cache.get(cache.keys('other', '', list(1), 'a')!, 1)).toBeUndefined();
    expect(cache.get(cache.keys('srv', '/v2', list(1), 'a')!, 1)).toBeUndefined();
    expect(cache.get(cache.keys('srv', '', list(1, { cursor: 'page-2' }), 'a')!, 1)).toBeUndefined();
  });

  it('never keeps errors, input_required, zero or missing TTLs, or results without a scope', () => {
    const cache = new ResultCache(clock().now);
    const keys = cache.keys('srv', '', list(1), 'a')!;
    cache.put(keys, { jsonrpc: '2.0', id: 1, error: { code: -32603, message: 'no' } });
    cache.put(keys, answer({ resultType: 'input_required', ttlMs: 10_000, cacheScope: 'public' }));
    cache.put(keys, answer({ ttlMs: 0, cacheScope: 'public' }));
    cache.put(keys, answer({ cacheScope: 'public' }));
    cache.put(keys, answer({ ttlMs: 10_000 }));
    expect(cache.size).toBe(0);
  });

  it('never serves calls, prompts/get, or requests carrying input responses', () => {
    const cache = new ResultCache(clock().now);
    expect(cache.keys('srv', '', { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'x' } }, 'a')).toBeUndefined();
    expect(cache.keys('srv', '', { jsonrpc: '2.0', id: 1, method: 'prompts/get', params: { name: 'x' } }, 'a')).toBeUndefined();
    expect(cache.keys('srv', '', { jsonrpc: '2.0', id: 1, method: 'resources/read', params: { uri: 'x', requestState: 's' } }, 'a')).toBeUndefined();
    expect(cache.keys('srv', '', { jsonrpc: '2.0', id: 1, method: 'resources/read', params: { uri: 'x' } }, 'a')).toBeDefined();
  });

  it('holds at most 1,000 entries, the oldest going first', () => {
    const cache = new ResultCache(clock().now);
    for (let i = 0; i < 1_001; i++) cache.put(cache.keys('srv', '', list(1, { cursor: String(i) }), 'a')!, answer({ ttlMs: 10_000, cacheScope: 'public' }));
    expect(cache.size).toBe(1_000);
    expect(cache.get(cache.keys('srv', '', list(1, { cursor: '0' }), 'a')!, 1)).toBeUndefined();
    expect(cache.get(cache.keys('srv', '', list(1, { cursor: '1000' }), 'a')!, 1)).toBeDefined();
  });
});
