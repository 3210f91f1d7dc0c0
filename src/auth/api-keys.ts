/**
 * Checks a bearer token against the configured `[[auth.api_keys]]` without paying argon2 on every
 * request (the earlier gateway's mistake), and without letting bad tokens buy unbounded argon2 work.
 *
 * In order, for one token:
 * 1. malformed (empty, over-long, not visible ASCII): refused, nothing computed;
 * 2. SHA-256 of the token -> the cache of recent successes: a hit costs no argon2;
 * 3. the same token already being checked: wait for that check instead of starting another;
 * 4. legacy (unsalted SHA-256) entries: compared in constant time, no argon2;
 * 5. the key whose `key_prefix` the token carries, or else the keys without a prefix, checked with
 *    argon2 under a small semaphore; when its waiting line is full the answer is 'busy' at once.
 *
 * The key list is fixed for the verifier's life: a new config means a new verifier (and cache).
 */
import { hash, timingSafeEqual } from 'node:crypto';
import { LEGACY_SHA256_PATTERN } from '../config/constants.js';
import type { ApiKeyConfig } from '../config/schema.js';
import { argon2 } from '../optional.js';
import { isWellFormedToken, keyPrefixOf } from './key-format.js';
import { insert, touch, type Touched } from '../lru.js';

/** Tuning of an ApiKeyVerifier; the defaults suit a gateway with a handful of CPU cores. */
export interface ApiKeyVerifierOptions {
  /** argon2 verifications running at once (each takes ~64 MiB and ~100 ms of a core). Default 2. */
  maxConcurrentHashes?: number;
  /** Verifications waiting for the semaphore; beyond this they fail at once with 'busy'. Default 64. */
  maxQueuedHashes?: number;
  /** Successful verifications remembered (least recently used dropped first). Default 10,000. */
  cacheSize?: number;
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
 * - mismatch: the candidate key(s) were checked and none matched;
 * - busy: too many argon2 checks already running and waiting; try again later.
 */
export type ApiKeyFailure = 'malformed' | 'unknown_prefix' | 'mismatch' | 'busy';

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
}

interface CacheEntry extends Touched {
  key: ApiKeyConfig;
  expiresAt: number;
}

/** A counting semaphore with a bounded waiting line. */
class Semaphore {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    private readonly limit: number,
    private readonly maxWaiting: number,
  ) {}

  /** Resolves when a permit is held; undefined (no permit, no waiting) when the line is full. */
  acquire(): Promise<void> | undefined {
    if (this.active < this.limit) {
      this.active++;
      return Promise.resolve();
    }
    if (this.waiting.length >= this.maxWaiting) return undefined;
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
  private readonly semaphore: Semaphore;
  private readonly cacheSize: number;
  private readonly cacheTtlMs: number;
  private readonly now: () => number;
  private argon2Verifications = 0;
  private running = 0;
  private maxRunning = 0;

  /** Throws (RangeError, Error) on bad options or two argon2 keys with the same key_prefix. */
  constructor(keys: readonly ApiKeyConfig[], options: ApiKeyVerifierOptions = {}) {
    this.semaphore = new Semaphore(checkOption('maxConcurrentHashes', options.maxConcurrentHashes ?? 2, 1), checkOption('maxQueuedHashes', options.maxQueuedHashes ?? 64, 0));
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

  /** Counters: argon2 work done, its peak concurrency, and the cache's current size. */
  get stats(): ApiKeyVerifierStats {
    return { argon2Verifications: this.argon2Verifications, maxConcurrent: this.maxRunning, cacheSize: this.cache.size };
  }

  /**
   * Whether verify(token) would be answered from the cache now (a known-good key), at the cost of
   * one SHA-256. Lets a caller exempt known keys from throttling meant for guessers. Never throws.
   */
  isCached(token: string): boolean {
    if (typeof token !== 'string' || !isWellFormedToken(token)) return false;
    const entry = this.cache.get(sha256Hex(token));
    return entry !== undefined && entry.expiresAt > this.now();
  }

  /** Which configured key this token is, or why it is none. Never throws. */
  async verify(token: string): Promise<ApiKeyResult> {
    try {
      if (typeof token !== 'string' || !isWellFormedToken(token)) return { ok: false, reason: 'malformed' };
      const id = sha256Hex(token);
      const hit = this.cached(id);
      if (hit) return { ok: true, key: hit, cached: true };
      const digest = Buffer.from(id, 'hex');
      const pending = this.inflight.get(id);
      if (pending) return await pending;
      const check = this.lookup(token, digest)
        .then(
          (result) => {
            if (result.ok) this.remember(id, result.key);
            return result;
          },
          (): ApiKeyResult => ({ ok: false, reason: 'mismatch' }),
        )
        .finally(() => this.inflight.delete(id));
      this.inflight.set(id, check);
      return await check;
    } catch {
      // Fail closed: an unexpected error refuses the token.
      return { ok: false, reason: 'mismatch' };
    }
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

  private async lookup(token: string, digest: Buffer): Promise<ApiKeyResult> {
    let legacyMatch: ApiKeyConfig | undefined;
    for (const entry of this.legacy) {
      // Every entry is compared (no early exit): equal-length buffers, constant time each.
      if (entry.digest.length === digest.length && timingSafeEqual(entry.digest, digest)) legacyMatch ??= entry.key;
    }
    if (legacyMatch) return { ok: true, key: legacyMatch, cached: false };

    const prefix = keyPrefixOf(token);
    const owner = prefix === undefined ? undefined : this.byPrefix.get(prefix);
    const candidates = owner ? [owner] : this.unprefixed;
    if (candidates.length === 0) return { ok: false, reason: 'unknown_prefix' };

    const permit = this.semaphore.acquire();
    if (!permit) return { ok: false, reason: 'busy' };
    await permit;
    try {
      // One permit covers every candidate of this token: a request is never refused half-way.
      for (const key of candidates) {
        if (await this.argon2Matches(key.key_hash, token)) return { ok: true, key, cached: false };
      }
      return { ok: false, reason: 'mismatch' };
    } finally {
      this.semaphore.release();
    }
  }

  private async argon2Matches(hash: string, token: string): Promise<boolean> {
    this.argon2Verifications++;
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    try {
      // argon2.verify compares with timingSafeEqual; it throws on a hash it cannot parse.
      return await argon2().verify(hash, token);
    } catch {
      return false;
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
