/**
 * Least-recently-used order in a Map, which keeps insertion order: the caches of verified
 * credentials (src/auth/) and the active identities of the metrics keep their oldest entry first
 * and evict from there.
 *
 * Moving an entry to the recent end is a delete and a set. Done on every hit, that is a delete and
 * a set per request on a Map that lives as long as the process; V8 rebuilds such a Map's hash
 * table every few dozen of them, and the tables it drops are old-generation garbage (see
 * docs/performance.md, item 8). So an entry moves at most once per TOUCH_MS: the order is exact
 * to within that, which no eviction or expiry here needs finer.
 */
export const TOUCH_MS = 1_000;

/** What an LRU Map holds: anything that remembers when it last moved. */
export interface Touched {
  touched: number;
}

/**
 * Marks `entry` (the value of `key`) as just used: moved to the recent end unless it moved less
 * than TOUCH_MS ago. True when it moved.
 */
export function touch<K, E extends Touched>(map: Map<K, E>, key: K, entry: E, now: number): boolean {
  if (now - entry.touched < TOUCH_MS) return false;
  entry.touched = now;
  map.delete(key);
  map.set(key, entry);
  return true;
}

/** Puts `entry` at the recent end (replacing any entry of `key`), then evicts the oldest down to `capacity`. */
export function insert<K, E extends Touched>(map: Map<K, E>, key: K, entry: E, capacity: number): void {
  map.delete(key);
  map.set(key, entry);
  for (const oldest of map.keys()) {
    if (map.size <= capacity) break;
    map.delete(oldest);
  }
}
