/** The Authenticator's own decisions: header parsing, which verifier a token goes to, throttling. */
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { SignJWT } from 'jose';
import { describe, expect, it, vi } from 'vitest';
import { Authenticator, bearerToken } from '../../src/auth/authenticator.js';
import { FailureLimiter } from '../../src/auth/failure-limiter.js';
import { JwtVerifier } from '../../src/auth/jwt.js';
import { generateApiKey, legacyHash } from '../../src/auth/key-format.js';
import { authSchema } from '../../src/config/schema.js';

/** The argon2 module object the verifier loads (src/optional.ts requires it too), so its calls can be counted. */
const argon2 = createRequire(import.meta.url)('argon2') as typeof import('argon2');

describe('bearerToken', () => {
  it('takes "Bearer <token>" with any case of the scheme, and nothing else', () => {
    expect(bearerToken('Bearer abc')).toBe('abc');
    expect(bearerToken('bearer abc')).toBe('abc');
    expect(bearerToken('BEARER   abc ')).toBe('abc');
    expect(bearerToken('Basic dXNlcjpwYXNz')).toBeUndefined();
    expect(bearerToken('Bearer')).toBeUndefined();
    expect(bearerToken('Bearer a b')).toBeUndefined();
    expect(bearerToken('abc')).toBeUndefined();
    expect(bearerToken(undefined)).toBeUndefined();
  });
});

describe('FailureLimiter', () => {
  it('blocks an address after N failures until its one-minute window ends', () => {
    let now = 1_000_000;
    const limiter = new FailureLimiter(3, () => now);
    for (let i = 0; i < 3; i++) {
      expect(limiter.blockedFor('10.0.0.1')).toBe(0);
      limiter.fail('10.0.0.1');
    }
    expect(limiter.blockedFor('10.0.0.1')).toBe(60);
    expect(limiter.blockedFor('10.0.0.2')).toBe(0);
    now += 45_000;
    expect(limiter.blockedFor('10.0.0.1')).toBe(15);
    now += 15_000;
    expect(limiter.blockedFor('10.0.0.1')).toBe(0);
  });

  it('keeps a bounded table: a spray from many addresses cannot grow memory without end', () => {
    const limiter = new FailureLimiter(1);
    for (let i = 0; i < 60_000; i++) limiter.fail(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`);
    expect(limiter.size).toBe(50_000);
  });
});

describe('Authenticator', () => {
  const { key } = generateApiKey();
  const legacyKey = 'mcp_old_style_key';
  const config = authSchema.parse({
    api_keys: [{ id: 'legacy', key_hash: legacyHash(legacyKey), allowed_tools: ['read_*'], servers: ['fs'] }],
    jwt: { mode: 'simple', secret: 'x'.repeat(32) },
    max_failures_per_minute: 2,
  });

  it('without [auth], everyone is anonymous and may use everything', async () => {
    const outcome = await new Authenticator(undefined).authenticate(undefined, '127.0.0.1');
    expect(outcome).toMatchObject({ ok: true, identity: { id: 'anonymous', provider: 'anonymous', servers: undefined } });
  });

  it('an API key becomes its identity, with its tools and servers', async () => {
    const outcome = await new Authenticator(config).authenticate(`Bearer ${legacyKey}`, '127.0.0.1');
    if (!outcome.ok) throw new Error(outcome.reason);
    expect(outcome.identity).toMatchObject({ id: 'legacy', provider: 'api_key' });
    expect(outcome.identity.tools.allows('read_file')).toBe(true);
    expect(outcome.identity.tools.allows('write_file')).toBe(false);
    expect([...(outcome.identity.servers ?? [])]).toEqual(['fs']);
  });

  it('mcp_ tokens go to the API keys, JWT-shaped ones to the JWT verifier', async () => {
    const auth = new Authenticator(config);
    expect(await auth.authenticate(`Bearer ${key}`, '10.0.0.1')).toMatchObject({ ok: false, provider: 'api_key', reason: 'api key: unknown prefix' });
    expect(await auth.authenticate('Bearer aaa.bbb.ccc', '10.0.0.2')).toMatchObject({ ok: false, provider: 'jwt' });
  });

  it('no credentials: refused without counting as a failure; a non-Bearer header is a sent credential', async () => {
    const auth = new Authenticator(config);
    for (let i = 0; i < 5; i++) {
      expect(await auth.authenticate(undefined, '10.0.0.3')).toEqual({ ok: false, kind: 'unauthenticated', reason: 'no credentials', credentialSent: false });
    }
    expect(await auth.authenticate('Basic eDp5', '10.0.0.3')).toMatchObject({ kind: 'unauthenticated', credentialSent: true });
  });

  it('throttles an address after max_failures_per_minute failures, except for a key it has already proved', async () => {
    const auth = new Authenticator(config);
    expect((await auth.authenticate(`Bearer ${legacyKey}`, '10.0.0.4')).ok).toBe(true);
    await auth.authenticate('Bearer mcp_wrong_1', '10.0.0.4');
    await auth.authenticate('Bearer mcp_wrong_2', '10.0.0.4');
    expect(await auth.authenticate('Bearer mcp_wrong_3', '10.0.0.4')).toMatchObject({ ok: false, kind: 'throttled', retryAfter: 60 });
    expect(await auth.authenticate('Bearer mcp_wrong_4', '10.0.0.4')).toMatchObject({ kind: 'throttled' });
    // The key this address already proved is checked by digest alone, so it is still served.
    expect((await auth.authenticate(`Bearer ${legacyKey}`, '10.0.0.4')).ok).toBe(true);
    // A throttled address gets nothing verified, right or wrong: an unproved key waits too.
    expect(await auth.authenticate('Bearer aaa.bbb.ccc', '10.0.0.4')).toMatchObject({ kind: 'throttled' });
    // The address next door is not affected.
    expect((await auth.authenticate(`Bearer ${legacyKey}`, '10.0.0.5')).ok).toBe(true);
  });

  it('finding 8: 90 concurrent wrong keys from one address start no more argon2 verifications than max_failures_per_minute', async () => {
    const { key: real, prefix } = generateApiKey();
    const cheap = await argon2.hash(real, { type: argon2.argon2id, memoryCost: 1024, timeCost: 1, parallelism: 1 });
    const auth = new Authenticator(authSchema.parse({ api_keys: [{ id: 'real', key_prefix: prefix, key_hash: cheap }], max_failures_per_minute: 30 }), {
      // Room for all of them in the hashing queue: only the failure budget may stop them.
      apiKeys: { maxConcurrentHashes: 2, maxQueuedHashes: 200 },
    });
    const guess = () => `${prefix}_${randomBytes(32).toString('base64url')}`;
    const verify = vi.spyOn(argon2, 'verify');
    try {
      const outcomes = await Promise.all(Array.from({ length: 90 }, () => auth.authenticate(`Bearer ${guess()}`, '10.0.1.1')));
      const kinds = outcomes.map((o) => (o.ok ? 'ok' : o.kind));
      expect(verify).toHaveBeenCalledTimes(30);
      expect(kinds.filter((k) => k === 'unauthenticated')).toHaveLength(30);
      expect(kinds.filter((k) => k === 'throttled')).toHaveLength(60);
      for (const o of outcomes) if (!o.ok && o.kind === 'throttled') expect(o.retryAfter).toBeGreaterThanOrEqual(1);
      // The budget is spent: the address is throttled, its next guess costs nothing, and another address is not affected.
      expect(await auth.authenticate(`Bearer ${guess()}`, '10.0.1.1')).toMatchObject({ kind: 'throttled', retryAfter: 60 });
      expect((await auth.authenticate(`Bearer ${real}`, '10.0.1.2')).ok).toBe(true);
      expect(verify).toHaveBeenCalledTimes(31);
    } finally {
      verify.mockRestore();
    }
  });

  it('finding 8: a JWT the gateway has already proved is served to an address throttled for failures, like a proved API key', async () => {
    const secret = 'z'.repeat(32);
    const auth = new Authenticator(authSchema.parse({ jwt: { mode: 'simple', secret }, max_failures_per_minute: 2 }));
    const sign = (sub: string) => new SignJWT({ sub }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(new TextEncoder().encode(secret));
    const proved = await sign('alice');
    expect((await auth.authenticate(`Bearer ${proved}`, '10.0.2.1')).ok).toBe(true);
    for (let i = 0; i < 2; i++) await auth.authenticate('Bearer aaa.bbb.ccc', '10.0.2.1');
    expect(await auth.authenticate('Bearer aaa.bbb.ccc', '10.0.2.1')).toMatchObject({ kind: 'throttled' });
    expect(await auth.authenticate(`Bearer ${proved}`, '10.0.2.1')).toMatchObject({ ok: true, identity: { id: 'alice' }, verified: false });
    // A token the gateway has not proved yet is not verified from the throttled address.
    expect(await auth.authenticate(`Bearer ${await sign('bob')}`, '10.0.2.1')).toMatchObject({ kind: 'throttled' });
  });

  it('concurrent requests with one new JWT share one verification', async () => {
    const secret = 'w'.repeat(32);
    const auth = new Authenticator(authSchema.parse({ jwt: { mode: 'simple', secret } }));
    const verify = vi.spyOn(JwtVerifier.prototype, 'verify');
    try {
      const token = await new SignJWT({ sub: 'u' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(new TextEncoder().encode(secret));
      const outcomes = await Promise.all(Array.from({ length: 10 }, () => auth.authenticate(`Bearer ${token}`, '10.0.3.1')));
      for (const o of outcomes) expect(o).toMatchObject({ ok: true, identity: { id: 'u' } });
      expect(verify).toHaveBeenCalledTimes(1);
    } finally {
      verify.mockRestore();
    }
  });

  it('an unreachable JWKS refuses tokens without blaming the caller (no throttling for it)', async () => {
    const auth = new Authenticator(authSchema.parse({ jwt: { mode: 'jwks', jwks_url: 'http://127.0.0.1:1/jwks.json' }, max_failures_per_minute: 1 }), {
      jwt: { jwksTimeoutMs: 500 },
    });
    for (let i = 0; i < 3; i++) {
      expect(await auth.authenticate('Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln', '10.0.0.6')).toMatchObject({
        ok: false,
        kind: 'unauthenticated',
        reason: expect.stringMatching(/^jwt: keys unavailable/),
      });
    }
  });

  it('a verified JWT is trusted for a minute, never past its exp, then checked again', async () => {
    let now = Date.now();
    const secret = 'y'.repeat(32);
    const auth = new Authenticator(authSchema.parse({ jwt: { mode: 'simple', secret } }), { now: () => now });
    const verify = vi.spyOn(JwtVerifier.prototype, 'verify');
    try {
      const sign = (exp: number) =>
        new SignJWT({ sub: 'u' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime(exp).sign(new TextEncoder().encode(secret));
      const longLived = await sign(Math.floor(now / 1000) + 3600);
      for (let i = 0; i < 5; i++) expect((await auth.authenticate(`Bearer ${longLived}`, '10.0.0.7')).ok).toBe(true);
      expect(verify).toHaveBeenCalledTimes(1);
      now += 61_000;
      expect((await auth.authenticate(`Bearer ${longLived}`, '10.0.0.7')).ok).toBe(true);
      expect(verify).toHaveBeenCalledTimes(2);

      const shortLived = await sign(Math.floor(now / 1000) + 10);
      await auth.authenticate(`Bearer ${shortLived}`, '10.0.0.7');
      now += 11_000;
      await auth.authenticate(`Bearer ${shortLived}`, '10.0.0.7');
      expect(verify).toHaveBeenCalledTimes(4);
    } finally {
      verify.mockRestore();
    }
  });
});
