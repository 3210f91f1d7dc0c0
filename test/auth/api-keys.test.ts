/**
 * ApiKeyVerifier with real argon2: a known key costs no argon2 after its first check, a key is
 * found through its prefix (one argon2 among 1,000 keys), legacy SHA-256 hashes cost none, and bad
 * tokens can neither queue unbounded argon2 work nor slow down the known keys.
 */
import { createHash, randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import * as argon2 from 'argon2';
import { beforeAll, describe, expect, it } from 'vitest';
import { ApiKeyVerifier, type ApiKeyResult } from '../../src/auth/api-keys.js';
import { generateApiKey, hashApiKey, isWellFormedToken, keyPrefixOf, legacyHash } from '../../src/auth/key-format.js';
import { apiKeySchema, ARGON2ID_PHC_PATTERN, KEY_PREFIX_PATTERN, LEGACY_SHA256_PATTERN, type ApiKeyConfig } from '../../src/config/schema.js';

/** A cheap argon2id hash (1 MiB, 1 pass): for the many keys tests only need to exist. */
async function cheapHash(key: string): Promise<string> {
  return argon2.hash(key, { type: argon2.argon2id, memoryCost: 1024, timeCost: 1, parallelism: 1 });
}

/** A config entry, validated by the config schema so that the verifier only sees what a config can hold. */
function entry(fields: { id: string; key_hash: string; key_prefix?: string; allowed_tools?: string[] }): ApiKeyConfig {
  return apiKeySchema.parse(fields);
}

/** A generated key with its config entry. */
async function newKey(id: string, hash: (key: string) => Promise<string> = cheapHash) {
  const { key, prefix } = generateApiKey();
  return { key, config: entry({ id, key_prefix: prefix, key_hash: await hash(key) }) };
}

/** Another token with the same (known) prefix: the shape of a guess at a key whose prefix leaked. */
function sameprefixGuess(key: string): string {
  return `${keyPrefixOf(key)}_${randomBytes(32).toString('base64url')}`;
}

function expectOk(result: ApiKeyResult, id: string, cached: boolean): void {
  expect(result).toMatchObject({ ok: true, cached });
  if (result.ok) expect(result.key.id).toBe(id);
}

describe('key format', () => {
  it('generated keys: mcp_ + 8 [a-z0-9] + _ + 43 base64url; the prefix is the first 12 characters', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 500; i++) {
      const { key, prefix } = generateApiKey();
      expect(key).toMatch(/^mcp_[a-z0-9]{8}_[A-Za-z0-9_-]{43}$/);
      expect(prefix).toBe(key.slice(0, 12));
      expect(prefix).toMatch(KEY_PREFIX_PATTERN);
      expect(keyPrefixOf(key)).toBe(prefix);
      expect(isWellFormedToken(key)).toBe(true);
      seen.add(key);
    }
    expect(seen.size).toBe(500);
  });

  it('keyPrefixOf: undefined for anything not shaped like a generated key', () => {
    const { key } = generateApiKey();
    for (const token of ['', 'mcp_', 'hello', key.slice(0, -1), `${key}x`, key.toUpperCase(), `x${key}`, 'mcp_ABCDEFGH_' + 'a'.repeat(43)]) {
      expect(keyPrefixOf(token), token).toBeUndefined();
    }
  });

  it('hashApiKey: argon2id with the argon2 defaults, in the form the config schema accepts', async () => {
    const { key } = generateApiKey();
    const hash = await hashApiKey(key);
    expect(hash).toMatch(ARGON2ID_PHC_PATTERN);
    expect(hash).toMatch(/^\$argon2id\$v=19\$m=65536,p=4,t=3\$/);
    expect(await argon2.verify(hash, key)).toBe(true);
    expect(await argon2.verify(hash, `${key}x`)).toBe(false);
    expect(await hashApiKey(key)).not.toBe(hash); // salted
  });

  it('legacyHash: base64 SHA-256, the earlier gateway format', () => {
    expect(legacyHash('abc')).toBe('ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=');
    expect(legacyHash('abc')).toMatch(LEGACY_SHA256_PATTERN);
  });
});

describe('ApiKeyVerifier', () => {
  let real: { key: string; config: ApiKeyConfig };
  beforeAll(async () => {
    real = await newKey('real', hashApiKey);
  });

  it('accepts the right key; refuses a wrong one with the same prefix (mismatch) or another prefix (unknown_prefix)', async () => {
    const verifier = new ApiKeyVerifier([real.config]);
    expect(await verifier.verify(sameprefixGuess(real.key))).toEqual({ ok: false, reason: 'mismatch' });
    expect(verifier.stats.argon2Verifications).toBe(1);
    expectOk(await verifier.verify(real.key), 'real', false);
    expect(verifier.stats.argon2Verifications).toBe(2);
    // Once the key is proved, its token is known: another token with its prefix is not it, for free.
    expect(await verifier.verify(sameprefixGuess(real.key))).toEqual({ ok: false, reason: 'mismatch' });
    expect(await verifier.verify(generateApiKey().key)).toEqual({ ok: false, reason: 'unknown_prefix' });
    expect(await verifier.verify('not-a-generated-key')).toEqual({ ok: false, reason: 'unknown_prefix' });
    expect(verifier.stats.argon2Verifications).toBe(2);
  });

  it('a known-good key costs no argon2 after its first verification', async () => {
    const verifier = new ApiKeyVerifier([real.config]);
    expect(verifier.isCached(real.key)).toBe(false);
    expectOk(await verifier.verify(real.key), 'real', false);
    expect(verifier.stats.argon2Verifications).toBe(1);
    expect(verifier.isCached(real.key)).toBe(true);
    for (let i = 0; i < 100; i++) expectOk(await verifier.verify(real.key), 'real', true);
    expect(verifier.stats).toMatchObject({ argon2Verifications: 1, maxConcurrent: 1, cacheSize: 1, hashesInFlight: 0 });
  });

  it('a refused token is remembered (bounded): the same wrong key again costs no argon2, and is never a success', async () => {
    const verifier = new ApiKeyVerifier([real.config], { refusedCacheSize: 2 });
    const [a, b, c] = [sameprefixGuess(real.key), sameprefixGuess(real.key), sameprefixGuess(real.key)];
    for (let i = 0; i < 3; i++) expect(await verifier.verify(a)).toEqual({ ok: false, reason: 'mismatch' });
    expect(verifier.stats).toMatchObject({ argon2Verifications: 1, cacheSize: 0 });
    expect(verifier.isCached(a)).toBe(false);
    // At most refusedCacheSize of them: c evicts the least recently used (a), which costs argon2 again.
    for (const guess of [b, c, a]) expect(await verifier.verify(guess)).toEqual({ ok: false, reason: 'mismatch' });
    expect(verifier.stats.argon2Verifications).toBe(4);
    const forgetful = new ApiKeyVerifier([real.config], { refusedCacheSize: 0 });
    for (let i = 0; i < 2; i++) await forgetful.verify(a);
    expect(forgetful.stats.argon2Verifications).toBe(2);
  });

  it('1,000 configured keys: first use costs exactly one argon2, an unknown prefix none', async () => {
    const fillers = await Promise.all(Array.from({ length: 999 }, (_, i) => newKey(`filler-${i}`)));
    const keys = [...fillers.slice(0, 500).map((f) => f.config), real.config, ...fillers.slice(500).map((f) => f.config)];
    const verifier = new ApiKeyVerifier(keys);
    expectOk(await verifier.verify(real.key), 'real', false);
    expect(verifier.stats.argon2Verifications).toBe(1);
    expectOk(await verifier.verify(fillers[998]!.key), 'filler-998', false);
    expect(verifier.stats.argon2Verifications).toBe(2);
    for (let i = 0; i < 50; i++) expect(await verifier.verify(generateApiKey().key)).toEqual({ ok: false, reason: 'unknown_prefix' });
    expect(await verifier.verify('some-other-token')).toEqual({ ok: false, reason: 'unknown_prefix' });
    expect(verifier.stats.argon2Verifications).toBe(2);
  }, 60_000);

  it('legacy SHA-256 hashes (with or without base64 padding) are accepted without argon2, for any token shape', async () => {
    const old = 'sk-legacy-key-0123456789';
    const generated = generateApiKey().key;
    const verifier = new ApiKeyVerifier([
      real.config,
      entry({ id: 'old', key_hash: legacyHash(old) }),
      entry({ id: 'old-unpadded', key_hash: legacyHash(generated).replace(/=$/, '') }),
    ]);
    expectOk(await verifier.verify(old), 'old', false);
    expectOk(await verifier.verify(generated), 'old-unpadded', false);
    expect(await verifier.verify('sk-legacy-key-0123456788')).toEqual({ ok: false, reason: 'unknown_prefix' });
    expect(verifier.stats.argon2Verifications).toBe(0);
    expectOk(await verifier.verify(old), 'old', true);
  });

  it('keys without key_prefix are found by trying each in turn; tokens with a known prefix never try them', async () => {
    const handmade = ['first-hand-made-key', 'second-hand-made-key', 'third-hand-made-key'];
    const keygenKeyWithoutPrefix = generateApiKey().key;
    const unprefixed = await Promise.all(
      [...handmade, keygenKeyWithoutPrefix].map(async (key, i) => entry({ id: `hand-${i}`, key_hash: await cheapHash(key) })),
    );
    const verifier = new ApiKeyVerifier([real.config, ...unprefixed]);

    expectOk(await verifier.verify('third-hand-made-key'), 'hand-2', false);
    expect(verifier.stats.argon2Verifications).toBe(3);
    // A generated key whose prefix was not configured: its prefix is unknown, so the fallbacks are
    // tried, less hand-2 (proved: its token is known, and it is not this one).
    expectOk(await verifier.verify(keygenKeyWithoutPrefix), 'hand-3', false);
    expect(verifier.stats.argon2Verifications).toBe(6);
    expect(await verifier.verify('no-such-key')).toEqual({ ok: false, reason: 'mismatch' });
    expect(verifier.stats.argon2Verifications).toBe(8);
    // The known prefix leads to its own key only, even when the secret is wrong.
    expect(await verifier.verify(sameprefixGuess(real.key))).toEqual({ ok: false, reason: 'mismatch' });
    expect(verifier.stats.argon2Verifications).toBe(9);
  });

  it('a cached success expires after cacheTtlMs: then the token is known as the one that proved its key (cached: false, no argon2)', async () => {
    let now = 1_000_000;
    const verifier = new ApiKeyVerifier([real.config], { cacheTtlMs: 60_000, now: () => now });
    expectOk(await verifier.verify(real.key), 'real', false);
    now += 59_999;
    expectOk(await verifier.verify(real.key), 'real', true);
    expect(verifier.stats.argon2Verifications).toBe(1);
    now += 1;
    // Not cached (so one auth_success audit line again), and cached again from here.
    expectOk(await verifier.verify(real.key), 'real', false);
    expectOk(await verifier.verify(real.key), 'real', true);
    now += 60_000;
    expect(verifier.known(real.key)).toMatchObject({ key: { id: 'real' }, cached: false });
    expect(verifier.stats.argon2Verifications).toBe(1);
  });

  it('the cache holds at most cacheSize entries, dropping the least recently used', async () => {
    const [a, b, c] = await Promise.all([newKey('a'), newKey('b'), newKey('c')]);
    // A hit moves its entry at most once per second (src/lru.ts): a clock a second apart per step.
    let clock = 0;
    const verifier = new ApiKeyVerifier([a!.config, b!.config, c!.config], { cacheSize: 2, now: () => (clock += 1_000) });
    for (const k of [a!, b!]) await verifier.verify(k.key);
    expectOk(await verifier.verify(a!.key), 'a', true); // a is now the most recently used
    expectOk(await verifier.verify(c!.key), 'c', false); // evicts b
    expect(verifier.stats).toMatchObject({ argon2Verifications: 3, cacheSize: 2 });
    expectOk(await verifier.verify(a!.key), 'a', true);
    expectOk(await verifier.verify(c!.key), 'c', true);
    // b was evicted: not cached, known as proved (no argon2), cached again, which evicts a.
    expectOk(await verifier.verify(b!.key), 'b', false);
    expect(verifier.stats).toMatchObject({ argon2Verifications: 3, cacheSize: 2 });
    expectOk(await verifier.verify(a!.key), 'a', false);
    expect(verifier.stats.argon2Verifications).toBe(3);
  });

  it('a hit within a second of the last one that moved it does not move it again', async () => {
    const [a, b, c] = await Promise.all([newKey('a'), newKey('b'), newKey('c')]);
    let clock = 0;
    const verifier = new ApiKeyVerifier([a!.config, b!.config, c!.config], { cacheSize: 2, now: () => clock });
    for (const k of [a!, b!]) await verifier.verify(k.key);
    clock = 999;
    expectOk(await verifier.verify(a!.key), 'a', true); // not moved: a is still the oldest
    expectOk(await verifier.verify(c!.key), 'c', false); // evicts a
    clock = 1_000;
    expectOk(await verifier.verify(b!.key), 'b', true); // moved now: c is the oldest
    expectOk(await verifier.verify(a!.key), 'a', false); // evicts c
    expectOk(await verifier.verify(b!.key), 'b', true);
    expectOk(await verifier.verify(c!.key), 'c', false);
    expect(verifier.stats.argon2Verifications).toBe(3);
  });

  it('the cache is keyed by the SHA-256 of the token, never the token', async () => {
    const verifier = new ApiKeyVerifier([real.config]);
    await verifier.verify(real.key);
    // Everything the verifier holds, however deep: the digest is there (so the cache is visible), the token is not.
    const dump = inspect(verifier, { depth: Infinity, showHidden: true, maxArrayLength: null, maxStringLength: null, breakLength: Infinity });
    expect(dump).toContain(createHash('sha256').update(real.key).digest('hex'));
    expect(dump).not.toContain(real.key);
    expect(dump).not.toContain(real.key.slice(13)); // the secret part alone
  });

  it('a flood of wrong keys with a known prefix: at most maxConcurrentHashes at once, the overflow is busy, a cached key is not held up', async () => {
    const other = await newKey('other');
    const verifier = new ApiKeyVerifier([real.config, other.config], { maxConcurrentHashes: 2, maxQueuedHashes: 5 });
    expectOk(await verifier.verify(real.key), 'real', false);
    const order: string[] = [];
    const track = (label: string, p: Promise<ApiKeyResult>) =>
      p.then((r) => {
        order.push(r.ok ? label : `${label}:${r.reason}`);
        return r;
      });
    // Guesses at the key not yet proved (a proved key's guesses cost nothing at all).
    const flood = Array.from({ length: 20 }, (_, i) => track(`guess-${i}`, verifier.verify(sameprefixGuess(other.key))));
    const valid = track('valid', verifier.verify(real.key));
    const results = await Promise.all(flood);
    expectOk(await valid, 'real', true);

    const reasons = results.map((r) => (r.ok ? 'ok' : r.reason));
    // 2 running + 5 waiting; the other 13 are refused at once instead of queueing.
    expect(reasons.filter((r) => r === 'busy')).toHaveLength(13);
    expect(reasons.filter((r) => r === 'mismatch')).toHaveLength(7);
    expect(verifier.stats.maxConcurrent).toBeLessThanOrEqual(2);
    expect(verifier.stats).toMatchObject({ argon2Verifications: 1 + 7, maxInFlight: 7, hashCapacity: 7, hashesInFlight: 0 });
    // The cached key, asked after the whole flood, is answered before any of the flood's argon2 finishes.
    const firstMismatch = order.findIndex((l) => l.endsWith(':mismatch'));
    expect(order.indexOf('valid')).toBeGreaterThanOrEqual(0);
    expect(order.indexOf('valid')).toBeLessThan(firstMismatch);
    // Once the flood is over, the semaphore is free again.
    expect(await verifier.verify(sameprefixGuess(other.key))).toEqual({ ok: false, reason: 'mismatch' });
    expect(verifier.stats.argon2Verifications).toBe(1 + 7 + 1);
  });

  describe('finding 9: what an unknown key may cost with keys without key_prefix', () => {
    const handmade = ['alpha-hand-made-key', 'beta-hand-made-key', 'gamma-hand-made-key', 'delta-hand-made-key'];
    let unprefixed: ApiKeyConfig[];
    beforeAll(async () => {
      unprefixed = await Promise.all(handmade.map(async (key, i) => entry({ id: `hand-${i}`, key_hash: await cheapHash(key) })));
    });

    it('one argon2 per key not yet proved, none once every key is proved', async () => {
      const verifier = new ApiKeyVerifier(unprefixed);
      const cost = async (token: string) => {
        const before = verifier.stats.argon2Verifications;
        await verifier.verify(token);
        return verifier.stats.argon2Verifications - before;
      };
      expect(await cost('unknown-1')).toBe(4);
      expectOk(await verifier.verify(handmade[2]!), 'hand-2', false);
      expect(await cost('unknown-2')).toBe(3);
      for (const key of handmade) await verifier.verify(key);
      expect(await cost('unknown-3')).toBe(0);
      expect(await verifier.verify('unknown-4')).toEqual({ ok: false, reason: 'mismatch' });
      // The proved keys are served without argon2, whatever their cache says.
      for (let i = 0; i < handmade.length; i++) expectOk(await verifier.verify(handmade[i]!), `hand-${i}`, true);
      expect(await cost(handmade[0]!)).toBe(0);
    });

    it('the capacity counts verifications, not requests: a token whose verifications do not fit is busy at once, and the work in flight never exceeds it', async () => {
      const verifier = new ApiKeyVerifier(unprefixed, { maxConcurrentHashes: 1, maxQueuedHashes: 5 });
      // 6 verifications of room, 4 per unknown token: the first is admitted, the next ones do not fit.
      const results = await Promise.all(Array.from({ length: 5 }, (_, i) => verifier.verify(`unknown-${i}`)));
      expect(results.map((r) => (r.ok ? 'ok' : r.reason))).toEqual(['mismatch', 'busy', 'busy', 'busy', 'busy']);
      expect(verifier.stats).toMatchObject({ argon2Verifications: 4, maxInFlight: 4, hashCapacity: 6, hashesInFlight: 0, maxConcurrent: 1 });
      // A token that needs more than the whole capacity is still served when nothing else runs.
      const tight = new ApiKeyVerifier(unprefixed, { maxConcurrentHashes: 1, maxQueuedHashes: 1 });
      expectOk(await tight.verify(handmade[3]!), 'hand-3', false);
      expect(tight.stats).toMatchObject({ argon2Verifications: 4, hashesInFlight: 0 });
    });

    it('admit is asked once, just before argon2 work, and can refuse it', async () => {
      const verifier = new ApiKeyVerifier(unprefixed);
      let asked = 0;
      expect(await verifier.verify('unknown-x', () => (asked++, false))).toEqual({ ok: false, reason: 'not_admitted' });
      expect(verifier.stats.argon2Verifications).toBe(0);
      expectOk(await verifier.verify(handmade[0]!, () => (asked++, true)), 'hand-0', false);
      // A proved key asks nothing.
      expectOk(await verifier.verify(handmade[0]!, () => (asked++, false)), 'hand-0', true);
      expect(asked).toBe(2);
    });
  });

  it('concurrent verifications of one token share one check (one argon2)', async () => {
    const verifier = new ApiKeyVerifier([real.config]);
    const guess = sameprefixGuess(real.key);
    const failures = await Promise.all(Array.from({ length: 10 }, () => verifier.verify(guess)));
    for (const r of failures) expect(r).toEqual({ ok: false, reason: 'mismatch' });
    expect(verifier.stats.argon2Verifications).toBe(1);
    const results = await Promise.all(Array.from({ length: 10 }, () => verifier.verify(real.key)));
    for (const r of results) expect(r).toMatchObject({ ok: true, key: { id: 'real' } });
    expect(verifier.stats.argon2Verifications).toBe(2);
  });

  it('malformed tokens are refused without any work', async () => {
    const verifier = new ApiKeyVerifier([real.config, entry({ id: 'hand', key_hash: await cheapHash('hand-made') })]);
    const malformed = ['', 'a'.repeat(513), `${real.key} `, 'with space', 'tab\there', 'line\n', 'nul\0', 'caf\u00e9', '\u{1F511}', '\x7f'];
    for (const token of malformed) expect(await verifier.verify(token), JSON.stringify(token)).toEqual({ ok: false, reason: 'malformed' });
    expect(await verifier.verify(undefined as unknown as string)).toEqual({ ok: false, reason: 'malformed' });
    expect(verifier.stats.argon2Verifications).toBe(0);
    // 512 visible characters is still a token (tried against the prefix-less key).
    expect(await verifier.verify('a'.repeat(512))).toEqual({ ok: false, reason: 'mismatch' });
    expect(verifier.stats.argon2Verifications).toBe(1);
  });

  it('a hash argon2 cannot use is a mismatch, not a throw', async () => {
    const { key, prefix } = generateApiKey();
    const corrupt = entry({ id: 'corrupt', key_prefix: prefix, key_hash: '$argon2id$v=19$m=65536,t=3,p=4$AAAA$BBBB' });
    const verifier = new ApiKeyVerifier([corrupt]);
    expect(await verifier.verify(key)).toEqual({ ok: false, reason: 'mismatch' });
    expect(verifier.stats.argon2Verifications).toBe(1);
    // Not remembered as refused: argon2 could not check, so the next attempt checks again.
    expect(await verifier.verify(key)).toEqual({ ok: false, reason: 'mismatch' });
    expect(verifier.stats.argon2Verifications).toBe(2);
  });

  it('refuses bad options and two keys with the same prefix', () => {
    expect(() => new ApiKeyVerifier([], { maxConcurrentHashes: 0 })).toThrow(RangeError);
    expect(() => new ApiKeyVerifier([], { maxQueuedHashes: -1 })).toThrow(RangeError);
    expect(() => new ApiKeyVerifier([], { refusedCacheSize: -1 })).toThrow(RangeError);
    expect(() => new ApiKeyVerifier([], { cacheSize: 1.5 })).toThrow(RangeError);
    expect(() => new ApiKeyVerifier([real.config, { ...real.config, id: 'twin' }])).toThrow(/key_prefix/);
  });
});
