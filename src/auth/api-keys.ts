/**
 * Checks a bearer token against the configured `[[auth.api_keys]]` without paying argon2 on every
 * request (the earlier gateway's mistake), and without letting bad tokens buy unbounded argon2 work.
 *
 * In order, for one token:
 * 1. malformed (empty, over-long, not visible ASCII): refused, nothing computed;
 * 2. SHA-256 of the token -> the cache of recent successes: a hit costs no argon2; then the
 *    tokens that proved a key since start (one per key at most): a hit costs no argon2 either;
 * 3. the same token already being checked: wait for that check instead of starting another;
 * 4. a token refused before (a bounded LRU of their digests): refused again, no argon2;
 * 5. legacy (unsalted SHA-256) entries: compared in constant time, no argon2;
 * 6. the key whose `key_prefix` the token carries, or else the keys without a prefix, less the
 *    keys already proved (their token is known, and it is not this one), checked with argon2.
 *
 * So an unknown token costs at most one argon2 per configured key not yet proved since start,
 * and none once they all have been. That work is bounded as a whole: at most
 * maxConcurrentHashes run and maxQueuedHashes wait (counted in verifications, not requests);
 * a token whose verifications do not fit is answered 'busy' at once, so the work left when a
 * flood stops is at most that capacity. Known tokens (steps 2-4) never wait for it.
 *
 * The key list is fixed for the verifier's life: a new config means a new verifier (and cache).
 */
import { hash, timingSafeEqual } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { LEGACY_SHA256_PATTERN } from '../config/constants.js';
import type { ApiKeyConfig } from '../config/schema.js';
import { argon2 } from '../optional.js';
import { isWellFormedToken, keyPrefixOf } from './key-format.js';
import { insert, touch, type Touched } from '../lru.js';

/** Tuning of an ApiKeyVerifier; the defaults suit a gateway with a handful of CPU cores. */
export interface ApiKeyVerifierOptions {
  /**
   * argon2 verifications running at once. Each takes 64 MiB and runs its 4 lanes on 4 threads (the
   * `hash-key` parameters), so one fills 4 cores: more at once only take CPU from the event loop,
   * known keys included. Default: one per 4 cores (availableParallelism), at least 1.
   */
  maxConcurrentHashes?: number;
  /**
   * argon2 verifications waiting for a slot (a token without a key_prefix may need one per key);
   * a token whose verifications would go beyond is answered 'busy' at once. Default 3 x
   * maxConcurrentHashes: the work left when a flood stops is 4 verifications' time at most.
   */
  maxQueuedHashes?: number;
  /** Successful verifications remembered (least recently used dropped first). Default 10,000. */
  cacheSize?: number;
  /** Refused tokens remembered by digest (least recently used dropped first), so a repeated one costs no argon2. Default 10,000. */
  refusedCacheSize?: number;
  /** How long a success is remembered from its argon2 check, in ms. Default 300,000 (5 minutes). */
  cacheTtlMs?: number;
  /** The clock, in ms; for tests. Default Date.now. */
  now?: () => number;
}

/**
 * Why a token was refused:
 * - malformed: not a token at all (empty, longer than 512, not visible ASCII); nothing computed;
 * - unknown_prefix: no configured key could be the one (no key carries the token's prefix, there
 *   is no prefix-less argon2 key to try, and no legacy hash matched); no argon2 computed;
 * - mismatch: the candidate key(s) were checked and none matched (or the token was refused
 *   before, or every candidate key has been proved with another token);
 * - busy: too many argon2 checks already running and waiting; try again later;
 * - not_admitted: the caller's `admit` refused the argon2 work (its failure budget is taken).
 */
export type ApiKeyFailure = 'malformed' | 'unknown_prefix' | 'mismatch' | 'busy' | 'not_admitted';

/** The outcome of ApiKeyVerifier.verify. `cached`: answered from the cache, without hashing. */
export type ApiKeyResult = { ok: true; key: ApiKeyConfig; cached: boolean } | { ok: false; reason: ApiKeyFailure };

/** Counters for tests and metrics. */
export interface ApiKeyVerifierStats {
  /** argon2 verifications started since the verifier was made. */
  argon2Verifications: number;
  /** The most argon2 verifications ever running at the same time. */
  maxConcurrent: number;
  /** Entries in the success cache now (expired ones included until they are dropped). */
  cacheSize: number;
  /** argon2 verifications admitted and not finished now: running and waiting. */
  hashesInFlight: number;
  /** The most argon2 verifications ever admitted at the same time (at most the capacity, unless one token needs more). */
  maxInFlight: number;
  /** The capacity: maxConcurrentHashes + maxQueuedHashes. */
  hashCapacity: number;
}

interface CacheEntry extends Touched {
  key: ApiKeyConfig;
  expiresAt: number;
}

/** A counting semaphore, first come first served. Its waiting line is bounded by the admission in front of it. */
class Semaphore {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  /** Resolves when a permit is held. */
  acquire(): Promise<void> {
    if (this.active < this.limit) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release(): void {
    const next = this.waiting.shift();
    // The permit passes straight to the next in line, so `active` stays the same.
    if (next) next();
    else this.active--;
  }
}

function checkOption(name: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) throw new RangeError(`ApiKeyVerifier: ${name} must be an integer of at least ${min}, got ${value}`);
  return value;
}

/** Verifies API keys against their configured hashes; see the file comment for the order of checks. */
export class ApiKeyVerifier {
  /** Legacy entries with their decoded SHA-256 (32 bytes), compared with the token's digest. */
  private readonly legacy: Array<{ key: ApiKeyConfig; digest: Buffer }> = [];
  /** argon2 entries by key_prefix: a token carrying the prefix is checked against that hash only. */
  private readonly byPrefix = new Map<string, ApiKeyConfig>();
  /**
   * argon2 entries without key_prefix (hashes made by hand with `mcp-guard hash-key`): any token
   * without a known prefix has to be tried against each in turn, ~100 ms apiece. That is why
   * `mcp-guard keygen` prints a key_prefix with every key.
   */
  private readonly unprefixed: ApiKeyConfig[] = [];
  /**
   * Recent successes by the hex SHA-256 of the token, least recently used first (a Map keeps
   * insertion order). Never the token itself: a memory dump must not hand out working keys.
   */
  private readonly cache = new Map<string, CacheEntry>();
  /** Checks under way by token digest, so that a burst of one new key costs one argon2. */
  private readonly inflight = new Map<string, Promise<ApiKeyResult>>();
  /**
   * The digest of the token that proved each argon2 key, for the verifier's life (one per key at
   * most: no other token can match that hash). A proved token is known without argon2 after its
   * cache entry expires, and no other token is tried against a proved key.
   */
  private readonly proved = new Map<string, ApiKeyConfig>();
  private readonly provedKeys = new Set<ApiKeyConfig>();
  /**
   * Digests of tokens refused after every candidate was checked, least recently used first: the
   * key list is fixed, so such a token can never succeed (a client retrying a stale key).
   */
  private readonly refused = new Map<string, Touched>();
  private readonly refusedCacheSize: number;
  private readonly semaphore: Semaphore;
  /** argon2 verifications running and waiting (maxConcurrentHashes + maxQueuedHashes): the admission bound. */
  private readonly hashCapacity: number;
  private readonly cacheSize: number;
  private readonly cacheTtlMs: number;
  private readonly now: () => number;
  private argon2Verifications = 0;
  private running = 0;
  private maxRunning = 0;
  /** argon2 verifications admitted and not finished (running or waiting for the semaphore). */
  private admitted = 0;
  private maxAdmitted = 0;

  /** Throws (RangeError, Error) on bad options or two argon2 keys with the same key_prefix. */
  constructor(keys: readonly ApiKeyConfig[], options: ApiKeyVerifierOptions = {}) {
    const concurrent = checkOption('maxConcurrentHashes', options.maxConcurrentHashes ?? Math.max(1, Math.floor(availableParallelism() / 4)), 1);
    this.semaphore = new Semaphore(concurrent);
    this.hashCapacity = concurrent + checkOption('maxQueuedHashes', options.maxQueuedHashes ?? 3 * concurrent, 0);
    this.refusedCacheSize = checkOption('refusedCacheSize', options.refusedCacheSize ?? 10_000, 0);
    this.cacheSize = checkOption('cacheSize', options.cacheSize ?? 10_000, 0);
    this.cacheTtlMs = checkOption('cacheTtlMs', options.cacheTtlMs ?? 300_000, 0);
    this.now = options.now ?? Date.now;
    for (const key of keys) {
      if (LEGACY_SHA256_PATTERN.test(key.key_hash)) {
        // Compared for every token whatever its prefix: the comparison costs nothing.
        this.legacy.push({ key, digest: Buffer.from(key.key_hash, 'base64') });
      } else if (key.key_prefix !== undefined) {
        if (this.byPrefix.has(key.key_prefix)) throw new Error(`ApiKeyVerifier: two keys have key_prefix ${key.key_prefix}`);
        this.byPrefix.set(key.key_prefix, key);
      } else {
        this.unprefixed.push(key);
      }
    }
  }

  /** Counters: argon2 work done, its peak concurrency, the cache's current size and the hashing work in flight. */
  get stats(): ApiKeyVerifierStats {
    return {
      argon2Verifications: this.argon2Verifications,
      maxConcurrent: this.maxRunning,
      cacheSize: this.cache.size,
      hashesInFlight: this.admitted,
      maxInFlight: this.maxAdmitted,
      hashCapacity: this.hashCapacity,
    };
  }

  /**
   * The key this token has already proved, at the cost of one SHA-256 and no argon2: from the cache
   * (`cached: true`), or else from the tokens proved since start (`cached: false`: its cache entry
   * had expired; it is cached again). undefined for any other token. Lets a caller serve known
   * keys before, and regardless of, throttling meant for guessers. Never throws.
   */
  known(token: string): { key: ApiKeyConfig; cached: boolean } | undefined {
    if (typeof token !== 'string' || !isWellFormedToken(token)) return undefined;
    return this.knownById(sha256Hex(token));
  }

  /** Whether verify(token) would be answered without argon2 because the token has proved its key. Never throws. */
  isCached(token: string): boolean {
    return this.known(token) !== undefined;
  }

  /**
   * Which configured key this token is, or why it is none. `admit`, when given, is asked once,
   * just before argon2 work would start for this token (not for cached, coalesced or free
   * answers): false refuses the work ('not_admitted'). Never throws.
   */
  async verify(token: string, admit?: () => boolean): Promise<ApiKeyResult> {
    try {
      if (typeof token !== 'string' || !isWellFormedToken(token)) return { ok: false, reason: 'malformed' };
      const id = sha256Hex(token);
      const known = this.knownById(id);
      if (known) return { ok: true, key: known.key, cached: known.cached };
      const pending = this.inflight.get(id);
      if (pending) return await pending;
      const refused = this.refused.get(id);
      if (refused) {
        touch(this.refused, id, refused, this.now());
        return { ok: false, reason: 'mismatch' };
      }
      const check = this.lookup(token, id, admit)
        .catch((): ApiKeyResult => ({ ok: false, reason: 'mismatch' }))
        .finally(() => this.inflight.delete(id));
      this.inflight.set(id, check);
      return await check;
    } catch {
      // Fail closed: an unexpected error refuses the token.
      return { ok: false, reason: 'mismatch' };
    }
  }

  private knownById(id: string): { key: ApiKeyConfig; cached: boolean } | undefined {
    const hit = this.cached(id);
    if (hit) return { key: hit, cached: true };
    const key = this.proved.get(id);
    if (key === undefined) return undefined;
    this.remember(id, key);
    return { key, cached: false };
  }

  private cached(id: string): ApiKeyConfig | undefined {
    const entry = this.cache.get(id);
    if (!entry) return undefined;
    const now = this.now();
    if (entry.expiresAt <= now) {
      this.cache.delete(id);
      return undefined;
    }
    // Now the most recently used (to within a second: src/lru.ts). Its expiry does not move.
    touch(this.cache, id, entry, now);
    return entry.key;
  }

  private remember(id: string, key: ApiKeyConfig): void {
    if (this.cacheSize === 0 || this.cacheTtlMs === 0) return;
    const now = this.now();
    insert(this.cache, id, { key, expiresAt: now + this.cacheTtlMs, touched: now }, this.cacheSize);
  }

  private async lookup(token: string, id: string, admit: (() => boolean) | undefined): Promise<ApiKeyResult> {
    const digest = Buffer.from(id, 'hex');
    let legacyMatch: ApiKeyConfig | undefined;
    for (const entry of this.legacy) {
      // Every entry is compared (no early exit): equal-length buffers, constant time each.
      if (entry.digest.length === digest.length && timingSafeEqual(entry.digest, digest)) legacyMatch ??= entry.key;
    }
    if (legacyMatch) {
      this.remember(id, legacyMatch);
      return { ok: true, key: legacyMatch, cached: false };
    }

    const prefix = keyPrefixOf(token);
    const owner = prefix === undefined ? undefined : this.byPrefix.get(prefix);
    const pool = owner ? [owner] : this.unprefixed;
    if (pool.length === 0) return { ok: false, reason: 'unknown_prefix' };
    // A proved key's token is known and is not this one (knownById would have found it).
    const candidates = this.provedKeys.size === 0 ? pool : pool.filter((key) => !this.provedKeys.has(key));
    // Refused for free: not worth a place among the refused tokens.
    if (candidates.length === 0) return { ok: false, reason: 'mismatch' };

    if (admit && !admit()) return { ok: false, reason: 'not_admitted' };
    // Admission: the verifications admitted (running and waiting) stay within the capacity, so a
    // flood queues no more work than that. A token that needs more than the whole capacity (many
    // keys without key_prefix) is still admitted when nothing else is.
    const cost = candidates.length;
    if (this.admitted > 0 && this.admitted + cost > this.hashCapacity) return { ok: false, reason: 'busy' };
    this.admitted += cost;
    this.maxAdmitted = Math.max(this.maxAdmitted, this.admitted);
    let left = cost;
    let failed = false;
    try {
      for (const key of candidates) {
        // One slot per verification: a token with several candidates queues again after each, so
        // that a token with one candidate is not held behind all of another's.
        await this.semaphore.acquire();
        let matched: boolean | 'error';
        try {
          matched = await this.argon2Matches(key.key_hash, token);
        } finally {
          this.semaphore.release();
          this.admitted--;
          left--;
        }
        if (matched === 'error') failed = true;
        else if (matched) {
          this.remember(id, key);
          this.proved.set(id, key);
          this.provedKeys.add(key);
          return { ok: true, key, cached: false };
        }
      }
      // A refusal is remembered only when every candidate was really checked: an argon2 error
      // (out of memory, say) must not turn a valid key away for good.
      return failed ? { ok: false, reason: 'mismatch' } : this.refuse(id);
    } finally {
      this.admitted -= left;
    }
  }

  /** A token no configured key can match: remembered (bounded), refused. */
  private refuse(id: string): ApiKeyResult {
    if (this.refusedCacheSize > 0) insert(this.refused, id, { touched: this.now() }, this.refusedCacheSize);
    return { ok: false, reason: 'mismatch' };
  }

  /** true, false, or 'error' when argon2 could not check (a hash it cannot parse, no memory). */
  private async argon2Matches(hash: string, token: string): Promise<boolean | 'error'> {
    this.argon2Verifications++;
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    try {
      // argon2.verify compares with timingSafeEqual; it throws on a hash it cannot parse.
      return await argon2().verify(hash, token);
    } catch {
      return 'error';
    } finally {
      this.running--;
    }
  }
}

/**
 * The SHA-256 of a token, hex: the cache key of a verified key. crypto.hash, one call with no Hash
 * object, is about three times cheaper than createHash for a key-sized input; it runs on every
 * authenticated request.
 */
function sha256Hex(token: string): string {
  return hash('sha256', token, 'hex');
}
