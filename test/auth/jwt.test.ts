import { createHmac } from 'node:crypto';
import { CompactSign, exportSPKI, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JwtVerifier, MAX_TOKEN_BYTES, type JwtResult } from '../../src/auth/jwt.js';
import { jwtSchema } from '../../src/config/schema.js';
import { JwksServer, type TestKey } from '../helpers/jwks-server.js';

const SECRET = 'a-shared-secret-of-at-least-32-bytes!!';
const AUDIENCE = 'mcp-guard';

const b64url = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
const epoch = () => Math.floor(Date.now() / 1000);

function refused(result: JwtResult, reason: string): void {
  expect(result).toMatchObject({ ok: false, reason });
}

function accepted(result: JwtResult) {
  if (!result.ok) throw new Error(`expected ok, got ${result.reason}: ${result.detail ?? ''}`);
  return result.claims;
}

function simpleVerifier(extra: Record<string, unknown> = {}) {
  return new JwtVerifier(jwtSchema.parse({ mode: 'simple', secret: SECRET, ...extra }));
}

function hs(claims: Record<string, unknown>, secret = SECRET, alg = 'HS256') {
  return new SignJWT(claims).setProtectedHeader({ alg }).setIssuedAt().setExpirationTime('5m').sign(new TextEncoder().encode(secret));
}

describe('JwtVerifier, mode "jwks", against a real JWKS server', () => {
  let server: JwksServer;
  let rsa: TestKey;
  let ec: TestKey;

  const jwks = (extra: Record<string, unknown> = {}, options: { jwksTimeoutMs?: number; cooldownMs?: number } = {}) =>
    new JwtVerifier(jwtSchema.parse({ mode: 'jwks', jwks_url: server.url, issuer: server.issuer, audience: AUDIENCE, ...extra }), options);
  const sign = (claims: Record<string, unknown>, options: Parameters<JwksServer['sign']>[1] = {}) =>
    server.sign({ sub: 'alice', ...claims }, { kid: rsa.kid, issuer: server.issuer, audience: AUDIENCE, ...options });

  beforeAll(async () => {
    server = await JwksServer.start();
    rsa = await server.addKey('RS256', 'rsa-1');
    ec = await server.addKey('ES256', 'ec-1');
  });
  afterAll(async () => {
    await server.stop();
  });

  it('accepts an RS256 token over an http:// JWKS URL, with subject and scopes', async () => {
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/\.well-known\/jwks\.json$/);
    const claims = accepted(await jwks().verify(await sign({ scope: 'read write' })));
    expect(claims).toEqual({ subject: 'alice', scopes: ['read', 'write'], servers: undefined, expiresAt: expect.any(Number) });
    // exp in ms: the signing helper's default lifetime is five minutes.
    expect(Math.abs(claims.expiresAt - (Date.now() + 300_000))).toBeLessThan(5_000);
  });

  it('accepts an ES256 token', async () => {
    const claims = accepted(await jwks().verify(await sign({ scope: 'admin' }, { kid: ec.kid })));
    expect(claims).toMatchObject({ subject: 'alice', scopes: ['admin'] });
  });

  it('accepts PS256 and EdDSA keys too', async () => {
    const ps = await server.addKey('PS256');
    const ed = await server.addKey('EdDSA');
    const verifier = jwks();
    accepted(await verifier.verify(await sign({}, { kid: ps.kid })));
    accepted(await verifier.verify(await sign({}, { kid: ed.kid })));
    server.removeKey(ps.kid);
    server.removeKey(ed.kid);
  });

  it('selects the key by kid among published keys of the same type', async () => {
    const second = await server.addKey('RS256', 'rsa-2');
    try {
      const verifier = jwks();
      accepted(await verifier.verify(await sign({}, { kid: rsa.kid })));
      accepted(await verifier.verify(await sign({}, { kid: second.kid })));
      // Without a kid two RS256 keys match: jose will not guess.
      refused(await verifier.verify(await sign({}, { kid: second.kid, omitKid: true })), 'unknown_key');
    } finally {
      server.removeKey(second.kid);
    }
  });

  it('selects by alg when the token names no kid and one key fits', async () => {
    accepted(await jwks().verify(await sign({}, { kid: ec.kid, omitKid: true })));
  });

  it('fetches the key set once, then again only for an unknown kid (rotation)', async () => {
    const verifier = jwks({}, { cooldownMs: 0 });
    const before = server.fetches;
    accepted(await verifier.verify(await sign({})));
    expect(server.fetches).toBe(before + 1);
    accepted(await verifier.verify(await sign({}, { kid: ec.kid })));
    expect(server.fetches).toBe(before + 1);

    const rotated = await server.addKey('RS256', 'rsa-rotated');
    try {
      accepted(await verifier.verify(await sign({}, { kid: rotated.kid })));
      expect(server.fetches).toBe(before + 2);
      accepted(await verifier.verify(await sign({}, { kid: rotated.kid })));
      accepted(await verifier.verify(await sign({})));
      expect(server.fetches).toBe(before + 2);
    } finally {
      server.removeKey(rotated.kid);
    }
  });

  it('does not refetch for an unknown kid during the cooldown', async () => {
    const verifier = jwks({}, { cooldownMs: 60_000 });
    accepted(await verifier.verify(await sign({})));
    const after = server.fetches;
    const late = await server.addKey('RS256', 'rsa-late');
    try {
      refused(await verifier.verify(await sign({}, { kid: late.kid })), 'unknown_key');
      expect(server.fetches).toBe(after);
    } finally {
      server.removeKey(late.kid);
    }
  });

  it('refuses a token signed by an unpublished key: unknown_key for a new kid, bad_signature for a published kid', async () => {
    const verifier = jwks({}, { cooldownMs: 0 });
    const stranger = await server.createUnpublishedKey('RS256', 'not-published');
    refused(await verifier.verify(await sign({}, { key: stranger })), 'unknown_key');
    // Same kid as the real key: jose finds the published key, and its signature check fails.
    const impostor = await server.createUnpublishedKey('RS256', rsa.kid);
    refused(await verifier.verify(await sign({}, { key: impostor })), 'bad_signature');
  });

  it('refuses an expired token', async () => {
    refused(await jwks().verify(await sign({}, { expiresIn: '10m ago', issuedAt: epoch() - 3600 })), 'expired');
  });

  it('refuses a token whose nbf is in the future', async () => {
    refused(await jwks().verify(await sign({}, { notBefore: '10m' })), 'not_yet_valid');
  });

  it('honours leeway_secs on exp', async () => {
    const token = await sign({}, { expiresIn: epoch() - 10, issuedAt: epoch() - 60 });
    accepted(await jwks({ leeway_secs: 30 }).verify(token));
    refused(await jwks({ leeway_secs: 0 }).verify(token), 'expired');
  });

  it('refuses a token issued in the future beyond the leeway', async () => {
    refused(await jwks({ leeway_secs: 30 }).verify(await sign({}, { issuedAt: epoch() + 600 })), 'invalid_claims');
    accepted(await jwks({ leeway_secs: 30 }).verify(await sign({}, { issuedAt: epoch() + 10 })));
  });

  it('refuses a wrong audience, and accepts one of several configured audiences', async () => {
    refused(await jwks().verify(await sign({}, { audience: 'someone-else' })), 'wrong_audience');
    refused(await jwks().verify(await server.sign({ sub: 'alice' }, { kid: rsa.kid, issuer: server.issuer })), 'wrong_audience');
    accepted(await jwks({ audience: ['other', AUDIENCE] }).verify(await sign({})));
    accepted(await jwks().verify(await sign({}, { audience: ['x', AUDIENCE] })));
  });

  it('refuses a wrong issuer', async () => {
    refused(await jwks().verify(await sign({}, { issuer: 'https://evil.example' })), 'wrong_issuer');
  });

  it('refuses a token without exp', async () => {
    expect(await jwks().verify(await sign({}, { expiresIn: null }))).toMatchObject({ ok: false, reason: 'missing_claim', detail: 'exp' });
  });

  it('refuses alg "none" without fetching keys', async () => {
    const verifier = jwks();
    const before = server.fetches;
    const payload = { sub: 'alice', iss: server.issuer, aud: AUDIENCE, exp: epoch() + 300 };
    const unsigned = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(payload)}.`;
    expect(JwtVerifier.looksLikeJwt(unsigned)).toBe(true);
    refused(await verifier.verify(unsigned), 'algorithm_not_allowed');
    refused(await verifier.verify(`${b64url({ alg: 'none' })}.${b64url(payload)}.c2ln`), 'algorithm_not_allowed');
    refused(await verifier.verify(`${b64url({ alg: 'NONE' })}.${b64url(payload)}.`), 'algorithm_not_allowed');
    expect(server.fetches).toBe(before);
  });

  it('refuses algorithm confusion: HS256 keyed with the published RSA public key', async () => {
    const verifier = jwks();
    const pem = await exportSPKI(rsa.publicKey);
    const header = b64url({ alg: 'HS256', typ: 'JWT', kid: rsa.kid });
    const body = b64url({ sub: 'mallory', iss: server.issuer, aud: AUDIENCE, exp: epoch() + 300 });
    for (const secret of [pem, Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64')]) {
      const signature = createHmac('sha256', secret).update(`${header}.${body}`).digest('base64url');
      refused(await verifier.verify(`${header}.${body}.${signature}`), 'algorithm_not_allowed');
    }
  });

  it('refuses an algorithm outside a configured allow-list', async () => {
    refused(await jwks({ algorithms: ['ES256'] }).verify(await sign({})), 'algorithm_not_allowed');
  });

  it(`refuses a token over ${MAX_TOKEN_BYTES} bytes as too_large without fetching keys`, async () => {
    const verifier = jwks();
    const before = server.fetches;
    const big = await sign({ padding: 'x'.repeat(MAX_TOKEN_BYTES) });
    refused(await verifier.verify(big), 'too_large');
    refused(await verifier.verify('é'.repeat(MAX_TOKEN_BYTES / 2 + 1)), 'too_large');
    expect(server.fetches).toBe(before);
  });

  it('refuses garbage as malformed', async () => {
    const verifier = jwks();
    for (const garbage of ['', 'abc', 'a.b', 'a.b.c', '...', 'a.b.c.d', '日本.語.字', 'Basic dXNlcjpwYXNz']) {
      const result = await verifier.verify(garbage);
      expect(result, garbage).toMatchObject({ ok: false, reason: 'malformed' });
    }
    // jose checks the signature before it decodes the payload: an unreadable payload under a forged signature is a bad signature.
    refused(await verifier.verify(`${b64url({ alg: 'RS256', kid: rsa.kid })}.!!!.c2ln`), 'bad_signature');
    // Correctly signed, but the payload is not a JSON object.
    const notObject = await new CompactSign(new TextEncoder().encode('[1,2]')).setProtectedHeader({ alg: 'RS256', kid: rsa.kid }).sign(rsa.privateKey);
    refused(await verifier.verify(notObject), 'malformed');
  });

  it('never echoes the token in detail', async () => {
    const token = await sign({}, { audience: 'someone-else' });
    const result = await jwks().verify(token);
    expect(result.ok).toBe(false);
    for (const segment of token.split('.')) expect(JSON.stringify(result)).not.toContain(segment);
  });

  it('looksLikeJwt tells JWTs from other bearer strings', async () => {
    expect(JwtVerifier.looksLikeJwt(await sign({}))).toBe(true);
    for (const other of ['', 'mcp_abcdefgh_secret', 'a.b', 'a..c', 'a.b.c.d', 'a b.c.d', 'a.b.c\n']) expect(JwtVerifier.looksLikeJwt(other), other).toBe(false);
  });

  describe('claims', () => {
    it('reads scopes as a space-separated string or an array, absent = []', async () => {
      const verifier = jwks();
      expect(accepted(await verifier.verify(await sign({ scope: ' read  write read ' }))).scopes).toEqual(['read', 'write']);
      expect(accepted(await verifier.verify(await sign({ scope: ['read', 'admin'] }))).scopes).toEqual(['read', 'admin']);
      expect(accepted(await verifier.verify(await sign({}))).scopes).toEqual([]);
      expect(accepted(await jwks({ scopes_claim: 'scp' }).verify(await sign({ scp: ['x'] }))).scopes).toEqual(['x']);
    });

    it('refuses wrong-typed scopes', async () => {
      const verifier = jwks();
      for (const scope of [42, ['read', 7], { read: true }, null, true]) {
        refused(await verifier.verify(await sign({ scope })), 'invalid_claims');
      }
    });

    it('reads servers_claim: unset = undefined, absent = [], present = the list', async () => {
      expect(accepted(await jwks().verify(await sign({ servers: ['fs'] }))).servers).toBeUndefined();
      const verifier = jwks({ servers_claim: 'servers' });
      expect(accepted(await verifier.verify(await sign({}))).servers).toEqual([]);
      expect(accepted(await verifier.verify(await sign({ servers: ['fs', 'git'] }))).servers).toEqual(['fs', 'git']);
      expect(accepted(await verifier.verify(await sign({ servers: 'fs git' }))).servers).toEqual(['fs', 'git']);
      refused(await verifier.verify(await sign({ servers: { fs: true } })), 'invalid_claims');
    });

    it('takes the subject from user_id_claim: a string or a finite number', async () => {
      expect(accepted(await jwks().verify(await sign({ sub: 42 }))).subject).toBe('42');
      expect(accepted(await jwks({ user_id_claim: 'email' }).verify(await sign({ email: 'bob@example.com' }))).subject).toBe('bob@example.com');
    });

    it('refuses an absent subject as missing_claim and a bad one as invalid_claims', async () => {
      const verifier = jwks();
      expect(await verifier.verify(await server.sign({}, { kid: rsa.kid, issuer: server.issuer, audience: AUDIENCE }))).toMatchObject({
        ok: false,
        reason: 'missing_claim',
        detail: 'sub',
      });
      // Inherited properties are not claims.
      refused(await jwks({ user_id_claim: 'constructor' }).verify(await sign({})), 'missing_claim');
      for (const sub of ['', 'x'.repeat(257), 'alice\nINFO forged log line', 'a\u0000b', { id: 1 }, ['alice'], null, true]) {
        refused(await verifier.verify(await sign({ sub })), 'invalid_claims');
      }
      expect(accepted(await verifier.verify(await sign({ sub: 'x'.repeat(256) }))).subject).toHaveLength(256);
    });
  });

  describe('outages', () => {
    it('keeps using cached keys while the server fails', async () => {
      const verifier = jwks();
      accepted(await verifier.verify(await sign({})));
      server.setFailure('error');
      try {
        accepted(await verifier.verify(await sign({})));
      } finally {
        server.setFailure(null);
      }
    });

    it('answers keys_unavailable when the server returns 500', async () => {
      server.setFailure('error');
      try {
        refused(await jwks({}, { jwksTimeoutMs: 500 }).verify(await sign({})), 'keys_unavailable');
      } finally {
        server.setFailure(null);
      }
    });

    it('answers keys_unavailable when the server returns something that is not a key set', async () => {
      server.setFailure('garbage');
      try {
        refused(await jwks({}, { jwksTimeoutMs: 500 }).verify(await sign({})), 'keys_unavailable');
      } finally {
        server.setFailure(null);
      }
    });

    it('answers keys_unavailable, within a bounded time, when the server hangs', async () => {
      server.setFailure('hang');
      try {
        const started = Date.now();
        const result = await jwks({}, { jwksTimeoutMs: 500 }).verify(await sign({}));
        refused(result, 'keys_unavailable');
        // The bound is the behaviour, loosely: jwksTimeoutMs (500) with ten times it of slack; the point is that it returns at all.
        expect(Date.now() - started).toBeLessThan(500 * 10);
      } finally {
        server.setFailure(null);
      }
    });

    it('answers keys_unavailable for a JWKS URL that is 404 or refuses connections', async () => {
      const token = await sign({});
      const notFound = new JwtVerifier(jwtSchema.parse({ mode: 'jwks', jwks_url: `${server.issuer}/missing.json`, issuer: server.issuer, audience: AUDIENCE }));
      refused(await notFound.verify(token), 'keys_unavailable');

      const gone = await JwksServer.start();
      const url = gone.url;
      await gone.stop();
      const refusedConnection = new JwtVerifier(jwtSchema.parse({ mode: 'jwks', jwks_url: url, issuer: server.issuer, audience: AUDIENCE }), {
        jwksTimeoutMs: 500,
      });
      const result = await refusedConnection.verify(token);
      refused(result, 'keys_unavailable');
      expect(result.ok === false && result.detail).toMatch(/ECONNREFUSED|fetch failed/);
    });
  });
});

describe('JwtVerifier, mode "simple"', () => {
  it('accepts an HS256 token signed with the secret', async () => {
    const claims = accepted(await simpleVerifier().verify(await hs({ sub: 'carol', scope: 'read' })));
    expect(claims).toEqual({ subject: 'carol', scopes: ['read'], servers: undefined, expiresAt: expect.any(Number) });
  });

  it('refuses an HS256 token signed with another secret', async () => {
    refused(await simpleVerifier().verify(await hs({ sub: 'carol' }, 'another-secret-that-is-32-bytes-long!')), 'bad_signature');
  });

  it('refuses HS384 unless configured', async () => {
    const token = await hs({ sub: 'carol' }, SECRET, 'HS384');
    refused(await simpleVerifier().verify(token), 'algorithm_not_allowed');
    accepted(await simpleVerifier({ algorithms: ['HS384'] }).verify(token));
  });

  it('refuses an RS256 token', async () => {
    const server = await JwksServer.start();
    try {
      const key = await server.addKey('RS256');
      refused(await simpleVerifier().verify(await server.sign({ sub: 'carol' }, { kid: key.kid })), 'algorithm_not_allowed');
    } finally {
      await server.stop();
    }
  });

  it('applies issuer, audience and exp the same way', async () => {
    const verifier = simpleVerifier({ issuer: 'https://idp.example', audience: AUDIENCE });
    const secret = new TextEncoder().encode(SECRET);
    const base = () => new SignJWT({ sub: 'carol' }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt();
    accepted(await verifier.verify(await base().setIssuer('https://idp.example').setAudience(AUDIENCE).setExpirationTime('1m').sign(secret)));
    refused(await verifier.verify(await base().setIssuer('https://other.example').setAudience(AUDIENCE).setExpirationTime('1m').sign(secret)), 'wrong_issuer');
    refused(await verifier.verify(await base().setIssuer('https://idp.example').setAudience(AUDIENCE).sign(secret)), 'missing_claim');
  });
});
