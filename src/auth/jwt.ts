/**
 * Bearer JWT verification for `[auth.jwt]`: a shared HMAC secret (mode "simple") or the public keys
 * an identity provider publishes as a JWKS (mode "jwks"). jose does the cryptography, the key
 * cache and the claim checks; this file decides what is accepted and turns every refusal into one
 * stable reason the gateway can log and count.
 */
// Types only: jose itself is imported by the first JwtVerifier (a gateway without [auth.jwt]
// does not load it: about 3 MB of a process's private memory).
import type { JWTPayload, JWTVerifyGetKey, JWTVerifyOptions, JWTVerifyResult } from 'jose';
import { ASYMMETRIC_JWT_ALGORITHMS } from '../config/constants.js';
import type { JwtConfig } from '../config/schema.js';

/**
 * Tokens longer than this are refused before they are parsed or any key is fetched. Real access
 * tokens are a few KB; the limit bounds the base64 and JSON work an unauthenticated caller can ask for.
 */
export const MAX_TOKEN_BYTES = 16 * 1024;

/** The longest user id taken from a token; it names the caller in logs, audit lines and metrics. */
const MAX_SUBJECT_LENGTH = 256;

/** Extra time, past jose's own fetch timeout, before verify() gives up waiting for keys. */
const DEADLINE_MARGIN_MS = 250;

/** What the gateway needs of a verified token. */
export interface JwtIdentityClaims {
  /** The value of `user_id_claim`: a string, or a finite number as a string. */
  subject: string;
  /** `scopes_claim`: a space-separated string or an array of strings; absent = []. */
  scopes: string[];
  /**
   * `servers_claim`, parsed like scopes, when one is configured: an absent claim is [] (the token
   * reaches no server). undefined when no servers_claim is configured (every server).
   */
  servers: string[] | undefined;
  /** `exp` in milliseconds since the epoch: until when the token is valid. */
  expiresAt: number;
}

/** Why a token was refused. Stable: these are logged and counted. */
export type JwtFailure =
  | 'too_large'
  | 'malformed'
  | 'expired'
  | 'not_yet_valid'
  | 'bad_signature'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'algorithm_not_allowed'
  | 'unknown_key'
  | 'keys_unavailable'
  | 'missing_claim'
  | 'invalid_claims';

/**
 * The outcome of one verification. `detail` is for the operator's log (jose's message, or the
 * claim at fault); it never contains the token.
 */
export type JwtResult = { ok: true; claims: JwtIdentityClaims } | { ok: false; reason: JwtFailure; detail?: string };

/** Tuning for the JWKS fetches; the defaults suit production, tests shorten them. */
export interface JwtVerifierOptions {
  /** How long one JWKS fetch may take, in milliseconds. Default 5000. */
  jwksTimeoutMs?: number;
  /**
   * After a successful fetch, how long a token naming an unknown `kid` waits before it may trigger
   * another fetch, in milliseconds (jose's cooldownDuration). Default 30 000. This is what stops a
   * stream of tokens with made-up kids from turning into a stream of requests to the provider.
   */
  cooldownMs?: number;
}

/** Thrown inside the key resolver so verify() can tell a key-set outage from a bad token. */
class KeysUnavailable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeysUnavailable';
  }
}

/**
 * Verifies bearer JWTs against one `[auth.jwt]` configuration.
 *
 * What is accepted, beyond a good signature from an allowed algorithm:
 * - `exp` is required: a token that never expires is refused (`missing_claim`, detail "exp"),
 *   because a leaked one would be valid forever and the gateway has no revocation list.
 * - `exp`, `nbf` and `iat` are checked with `leeway_secs` of clock skew; an `iat` further in the
 *   future than that is refused (`invalid_claims`): the issuer's clock or the token is wrong.
 * - `iss` and `aud` must match when configured (one of the configured audiences is enough).
 * - `alg: none` is never accepted, and HS* never with a JWKS: the allow-list goes to jose, which
 *   checks it before looking for a key, so a public key can never be used as an HMAC secret.
 *
 * In mode "jwks" the key set is fetched on first use, kept for `cache_duration_secs`, and fetched
 * again early when a token names a `kid` the cached set lacks (at most once per cooldown).
 */
type Jose = typeof import('jose');
let jose: Promise<Jose> | undefined;

/** jose, imported once, when the first verifier is made. */
function loadJose(): Promise<Jose> {
  return (jose ??= import('jose'));
}

export class JwtVerifier {
  readonly #config: JwtConfig;
  /** jwtVerify bound to the key (a secret, or the JWKS resolver) and the checks. */
  readonly #verifySignature: (token: string) => Promise<JWTVerifyResult>;
  /** Bounds a verification that waits on the network; undefined in mode "simple". */
  readonly #deadlineMs: number | undefined;

  /** Throws only on a configuration the schema would have refused. */
  constructor(config: JwtConfig, options: JwtVerifierOptions = {}) {
    this.#config = config;
    const timeoutMs = options.jwksTimeoutMs ?? 5_000;
    const cooldownMs = options.cooldownMs ?? 30_000;
    if (!Number.isInteger(timeoutMs) || timeoutMs < 0) throw new TypeError('jwksTimeoutMs must be a non-negative integer');
    if (!Number.isFinite(cooldownMs) || cooldownMs < 0) throw new TypeError('cooldownMs must be a non-negative number');

    const checks: JWTVerifyOptions = {
      algorithms: config.algorithms ?? (config.mode === 'simple' ? ['HS256'] : [...ASYMMETRIC_JWT_ALGORITHMS]),
      requiredClaims: ['exp'],
      clockTolerance: config.leeway_secs,
      ...(config.issuer !== undefined && { issuer: config.issuer }),
      ...(config.audience !== undefined && { audience: config.audience }),
    };
    const loading = loadJose();
    // Errors of a failed import surface on verify(), as a refusal; never unhandled here.
    loading.catch(() => undefined);
    if (config.mode === 'simple') {
      if (config.secret === undefined) throw new TypeError('auth.jwt.secret is required for mode "simple"');
      const secret = new TextEncoder().encode(config.secret);
      this.#verifySignature = async (token) => (await loading).jwtVerify(token, secret, checks);
      this.#deadlineMs = undefined;
    } else {
      if (config.jwks_url === undefined) throw new TypeError('auth.jwt.jwks_url is required for mode "jwks"');
      const jwksUrl = new URL(config.jwks_url);
      // Once: the resolver owns the key cache, and a resolver per request would refetch every time.
      const resolver = loading.then(({ createRemoteJWKSet, errors }) => {
        const jwks = createRemoteJWKSet(jwksUrl, {
          cacheMaxAge: config.cache_duration_secs * 1000,
          cooldownDuration: cooldownMs,
          timeoutDuration: timeoutMs,
        });
        const getKey: JWTVerifyGetKey = async (header, token) => {
          try {
            return await jwks(header, token);
          } catch (error) {
            if (error instanceof errors.JWKSNoMatchingKey || error instanceof errors.JWKSMultipleMatchingKeys) throw error;
            // Everything else the resolver throws is about getting keys, never about the token:
            // a timeout, a refused connection, a non-200 answer, a body that is not a key set.
            throw new KeysUnavailable(describeFetchError(error));
          }
        };
        return getKey;
      });
      resolver.catch(() => undefined);
      this.#verifySignature = async (token) => (await loading).jwtVerify(token, await resolver, checks);
      // jose may fetch twice for one token (a stale cache, then an unknown kid); one bound covers both.
      this.#deadlineMs = timeoutMs + DEADLINE_MARGIN_MS;
    }
  }

  /** Cheap shape test: three base64url segments separated by dots (the last may be empty, as in unsigned tokens). */
  static looksLikeJwt(token: string): boolean {
    return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token);
  }

  /** Verifies one token. Never throws; waits on a JWKS fetch at most jwksTimeoutMs and a little. */
  async verify(token: string): Promise<JwtResult> {
    // Length first: a UTF-16 length over the limit means more UTF-8 bytes still, without counting them.
    if (token.length > MAX_TOKEN_BYTES || Buffer.byteLength(token, 'utf8') > MAX_TOKEN_BYTES) {
      return { ok: false, reason: 'too_large', detail: `token longer than ${MAX_TOKEN_BYTES} bytes` };
    }
    let payload: JWTPayload;
    try {
      payload = (await this.#withDeadline(this.#verifySignature(token))).payload;
    } catch (error) {
      return refusal(error, token, await loadJose().catch(() => undefined));
    }
    return this.#claims(payload);
  }

  async #withDeadline<T>(work: Promise<T>): Promise<T> {
    if (this.#deadlineMs === undefined) return work;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new KeysUnavailable(`no JSON Web Key Set within ${this.#deadlineMs} ms`)), this.#deadlineMs);
    });
    try {
      return await Promise.race([work, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  #claims(payload: JWTPayload): JwtResult {
    const config = this.#config;
    const now = Math.floor(Date.now() / 1000);
    // jose checks iat's type but not its time unless maxTokenAge is set.
    if (typeof payload.iat === 'number' && payload.iat > now + config.leeway_secs) {
      return { ok: false, reason: 'invalid_claims', detail: '"iat" is in the future' };
    }

    // Object.hasOwn: a claim named "constructor" or "__proto__" must not find Object.prototype.
    if (!Object.hasOwn(payload, config.user_id_claim)) {
      return { ok: false, reason: 'missing_claim', detail: config.user_id_claim };
    }
    const subject = subjectOf(payload[config.user_id_claim]);
    if (subject === undefined) {
      return {
        ok: false,
        reason: 'invalid_claims',
        detail: `"${config.user_id_claim}" must be a non-empty string of at most ${MAX_SUBJECT_LENGTH} characters without control characters`,
      };
    }

    const scopes = listClaim(payload, config.scopes_claim);
    if (scopes === undefined) {
      return { ok: false, reason: 'invalid_claims', detail: `"${config.scopes_claim}" must be a space-separated string or an array of strings` };
    }
    let servers: string[] | undefined;
    if (config.servers_claim !== undefined) {
      servers = listClaim(payload, config.servers_claim);
      if (servers === undefined) {
        return { ok: false, reason: 'invalid_claims', detail: `"${config.servers_claim}" must be a space-separated string or an array of strings` };
      }
    }
    // exp is a required claim and jose has checked that it is a number in the future.
    return { ok: true, claims: { subject, scopes, servers, expiresAt: (payload.exp as number) * 1000 } };
  }
}

/** The user id, or undefined when the claim's value cannot name a user. */
function subjectOf(value: unknown): string | undefined {
  const subject = typeof value === 'string' ? value : typeof value === 'number' && Number.isFinite(value) ? String(value) : undefined;
  if (subject === undefined || subject.length === 0 || subject.length > MAX_SUBJECT_LENGTH) return undefined;
  // The id is written to logs and audit lines; control characters would let a token forge lines.
  if (/\p{Cc}/u.test(subject)) return undefined;
  return subject;
}

/** A scope-like claim as a list (absent = []), or undefined when it has the wrong type. */
function listClaim(payload: JWTPayload, claim: string): string[] | undefined {
  if (!Object.hasOwn(payload, claim)) return [];
  const value = payload[claim];
  let items: string[];
  // RFC 6749 §3.3 and RFC 8693 §4.2: scope is a space-delimited string; many providers send an array.
  if (typeof value === 'string') items = value.split(' ');
  else if (Array.isArray(value) && value.every((item): item is string => typeof item === 'string')) items = value;
  else return undefined;
  return [...new Set(items.filter((item) => item !== ''))];
}

/** Maps what jwtVerify threw to a reason; anything unrecognised is a malformed token. */
function refusal(error: unknown, token: string, jose: Jose | undefined): JwtResult & { ok: false } {
  const fail = (reason: JwtFailure, detail?: string): JwtResult & { ok: false } =>
    detail === undefined ? { ok: false, reason } : { ok: false, reason, detail: safeDetail(detail, token) };

  if (error instanceof KeysUnavailable) return fail('keys_unavailable', error.message);
  if (jose === undefined || !(error instanceof jose.errors.JOSEError)) {
    // jose throws TypeError for keys it will not use (an RSA modulus under 2048 bits, for one).
    return fail('malformed', error instanceof Error ? error.message : undefined);
  }
  switch (error.code) {
    case 'ERR_JWT_EXPIRED':
      return fail('expired', error.message);
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED': {
      const { claim, reason } = error as InstanceType<Jose['errors']['JWTClaimValidationFailed']>;
      switch (claim) {
        case 'exp':
          return reason === 'missing' ? fail('missing_claim', 'exp') : fail('invalid_claims', error.message);
        case 'iss':
          return fail('wrong_issuer', error.message);
        case 'aud':
          return fail('wrong_audience', error.message);
        case 'nbf':
          return reason === 'check_failed' ? fail('not_yet_valid', error.message) : fail('invalid_claims', error.message);
        default:
          return fail('invalid_claims', error.message);
      }
    }
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return fail('algorithm_not_allowed', error.message);
    case 'ERR_JWKS_NO_MATCHING_KEY':
      return fail('unknown_key', error.message);
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return fail('unknown_key', 'more than one published key matches the token; it names no kid');
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return fail('bad_signature', error.message);
    case 'ERR_JWKS_TIMEOUT':
    case 'ERR_JWKS_INVALID':
      return fail('keys_unavailable', error.message);
    default:
      // ERR_JWS_INVALID, ERR_JWT_INVALID, ERR_JOSE_NOT_SUPPORTED and the rest: not a token we can read.
      return fail('malformed', error.message);
  }
}

/** jose's message for a failed fetch, with the network cause (ECONNREFUSED...) when there is one. */
function describeFetchError(error: unknown): string {
  if (!(error instanceof Error)) return 'JSON Web Key Set fetch failed';
  const cause = error.cause as { code?: unknown } | undefined;
  const code = typeof cause?.code === 'string' ? ` (${cause.code})` : '';
  // jose's timeout message is a bare "request timed out": say which request.
  return error.message.includes('JSON Web Key Set') ? `${error.message}${code}` : `JSON Web Key Set: ${error.message}${code}`;
}

/** Keeps details short and free of the token: jose's messages never quote it, but be sure. */
function safeDetail(detail: string, token: string): string {
  const short = detail.length > 200 ? `${detail.slice(0, 200)}...` : detail;
  const leaks = token.split('.').some((segment) => segment.length >= 8 && short.includes(segment));
  return leaks ? 'details withheld: they quoted the token' : short;
}
