/**
 * Authentication: from an `Authorization: Bearer ...` header to an Identity, or to a refusal that
 * says why (for the log and audit line only; the client always sees the same 401).
 *
 * API keys (`mcp_...`) go to the ApiKeyVerifier, JWT-shaped tokens to the JwtVerifier. Both
 * verifiers are built once, with the identities of the configured keys.
 *
 * A request without an Authorization header, on a connection whose client certificate verified
 * against `[server.tls] client_ca_path`, is the `[[auth.client_certs]]` identity that certificate
 * matches (by fingerprint first, then by subject CN). When an Authorization header is present, it
 * alone decides: the certificate is never a fallback for a bad token.
 */
import { hash } from 'node:crypto';
import { normaliseFingerprint } from '../config/constants.js';
import type { AuthConfig } from '../config/schema.js';
import { ToolPolicy } from '../policy/tools.js';
import { ApiKeyVerifier, type ApiKeyVerifierOptions, type ApiKeyVerifierStats } from './api-keys.js';
import { FailureLimiter } from './failure-limiter.js';
import { ANONYMOUS, approvalPolicy, type AuthProvider, type Identity } from './identity.js';
import { JwtVerifier, type JwtIdentityClaims, type JwtResult, type JwtVerifierOptions } from './jwt.js';
import { insert, touch } from '../lru.js';

export type AuthOutcome =
  | {
      ok: true;
      identity: Identity;
      /** The credential was checked just now (not answered from a cache): worth an audit line. */
      verified: boolean;
    }
  | {
      ok: false;
      /** unauthenticated: 401; throttled: too many failures from this address (429); busy: no verification capacity (503). */
      kind: 'unauthenticated' | 'throttled' | 'busy';
      /** Why, for the operator: never contains the credential. */
      reason: string;
      /** Which verifier refused it, when one was reached. */
      provider?: AuthProvider;
      /** Seconds after which trying again makes sense (throttled, busy). */
      retryAfter?: number;
      /** True when a credential was sent (RFC 6750: error="invalid_token" only then). */
      credentialSent: boolean;
    };

/** A client certificate that verified at the TLS handshake (src/http/tls.ts verifiedPeer). */
export interface PeerCertificate {
  /** The subject's CN, when it has exactly one. */
  readonly subjectCn: string | undefined;
  /** SHA-256 fingerprint, 64 uppercase hex digits. */
  readonly fingerprint: string;
}

export interface AuthenticatorOptions {
  apiKeys?: ApiKeyVerifierOptions;
  jwt?: JwtVerifierOptions;
  now?: () => number;
}

/** A JWT verification's outcome: the identity, or why not. */
type JwtOutcome = { ok: true; identity: Identity } | Extract<JwtResult, { ok: false }>;

/** Distinct scope sets remembered with their compiled tool policy. */
const MAX_CACHED_SCOPE_SETS = 1_000;
/** Verified JWTs remembered (by digest), so that a client reusing its token pays one signature check per minute. */
const MAX_CACHED_TOKENS = 10_000;
/** How long a verified JWT is trusted without checking it again (never beyond its exp). */
const TOKEN_CACHE_MS = 60_000;

export class Authenticator {
  /** False when [auth] is not configured: every caller is ANONYMOUS. */
  readonly required: boolean;
  private readonly apiKeys: ApiKeyVerifier | undefined;
  private readonly jwt: JwtVerifier | undefined;
  private readonly keyIdentities = new Map<string, Identity>();
  /** `[[auth.client_certs]]` identities by normalised fingerprint, and by subject CN. */
  private readonly certsByFingerprint = new Map<string, Identity>();
  private readonly certsBySubject = new Map<string, Identity>();
  private readonly scopePolicies = new Map<string, ToolPolicy>();
  /** `[auth.jwt] require_approval`, compiled once. */
  private readonly jwtApproval: ToolPolicy | undefined;
  /** Verified JWTs by SHA-256 of the token (never the token), least recently used first. */
  private readonly verifiedTokens = new Map<string, { identity: Identity; until: number; touched: number }>();
  /** JWT verifications under way by digest, so that concurrent requests with one new token share one. */
  private readonly pendingTokens = new Map<string, Promise<JwtOutcome>>();
  private readonly failures: FailureLimiter;
  private readonly now: () => number;

  constructor(
    private readonly config: AuthConfig | undefined,
    options: AuthenticatorOptions = {},
  ) {
    this.required = config !== undefined;
    this.jwtApproval = approvalPolicy(config?.jwt?.require_approval);
    const keys = config?.api_keys ?? [];
    if (keys.length > 0) {
      this.apiKeys = new ApiKeyVerifier(keys, options.apiKeys);
      for (const key of keys) {
        this.keyIdentities.set(key.id, {
          id: key.id,
          provider: 'api_key',
          tools: ToolPolicy.fromPatterns(key.allowed_tools),
          servers: key.servers ? new Set(key.servers) : undefined,
          scopes: [],
          approval: approvalPolicy(key.require_approval),
        });
      }
    }
    for (const cert of config?.client_certs ?? []) {
      const identity: Identity = {
        id: cert.id,
        provider: 'client_cert',
        tools: ToolPolicy.fromPatterns(cert.allowed_tools),
        servers: cert.servers ? new Set(cert.servers) : undefined,
        scopes: [],
      };
      if (cert.fingerprint_sha256 !== undefined) this.certsByFingerprint.set(normaliseFingerprint(cert.fingerprint_sha256), identity);
      if (cert.subject_cn !== undefined) this.certsBySubject.set(cert.subject_cn, identity);
    }
    if (config?.jwt) this.jwt = new JwtVerifier(config.jwt, options.jwt);
    this.now = options.now ?? Date.now;
    this.failures = new FailureLimiter(config?.max_failures_per_minute ?? 30, this.now);
  }

  /**
   * The identity behind an Authorization header, or else behind the connection's verified client
   * certificate, from a client address. Never throws.
   */
  async authenticate(authorization: string | undefined, address: string, peer?: PeerCertificate): Promise<AuthOutcome> {
    if (!this.required) return { ok: true, identity: ANONYMOUS, verified: false };
    if (authorization === undefined && peer !== undefined) return this.certificateOutcome(peer);
    const token = bearerToken(authorization);
    if (token === undefined) {
      const reason = authorization === undefined ? 'no credentials' : 'Authorization is not a Bearer token';
      return { ok: false, kind: 'unauthenticated', reason, credentialSent: authorization !== undefined };
    }
    if (this.apiKeys === undefined && this.jwt === undefined) {
      return { ok: false, kind: 'unauthenticated', reason: 'bearer token, but neither [[auth.api_keys]] nor [auth.jwt] is configured', credentialSent: true };
    }
    const useJwt = this.jwt !== undefined && (this.apiKeys === undefined || (!token.startsWith('mcp_') && JwtVerifier.looksLikeJwt(token)));
    const provider: AuthProvider = useJwt ? 'jwt' : 'api_key';

    // A credential this gateway has already proved (an API key by its digest, a JWT from the
    // verified-token cache) is served first, without any verification: even an address throttled
    // for failures (a NAT shared with a key guesser) can still use it.
    if (provider === 'api_key' && this.apiKeys) {
      const known = this.apiKeys.known(token);
      if (known) return { ok: true, identity: this.keyIdentities.get(known.key.id) as Identity, verified: !known.cached };
      const blocked = this.failures.blockedFor(address);
      if (blocked > 0) return this.throttled(provider, blocked);
      // The failure budget is reserved before argon2 starts, and released once it is done.
      let reserved = false;
      const result = await this.apiKeys.verify(token, () => (reserved = this.failures.reserve(address)));
      if (reserved) this.failures.release(address);
      if (result.ok) return { ok: true, identity: this.keyIdentities.get(result.key.id) as Identity, verified: !result.cached };
      if (result.reason === 'busy') {
        return { ok: false, kind: 'busy', reason: 'too many key verifications in progress', provider, retryAfter: 1, credentialSent: true };
      }
      if (result.reason === 'not_admitted') return this.throttled(provider, Math.max(1, this.failures.blockedFor(address)));
      this.failures.fail(address);
      return { ok: false, kind: 'unauthenticated', reason: `api key: ${result.reason.replace(/_/g, ' ')}`, provider, credentialSent: true };
    }
    const digest = hash('sha256', token, 'base64');
    const known = this.verifiedTokens.get(digest);
    const now = this.now();
    if (known && known.until > now) {
      touch(this.verifiedTokens, digest, known, now);
      return { ok: true, identity: known.identity, verified: false };
    }
    const blocked = this.failures.blockedFor(address);
    if (blocked > 0) return this.throttled(provider, blocked);
    // One verification per token at a time (a burst of one new token costs one), reserved
    // against the failure budget of the address that started it.
    let pending = this.pendingTokens.get(digest);
    if (!pending) {
      if (!this.failures.reserve(address)) return this.throttled(provider, Math.max(1, this.failures.blockedFor(address)));
      pending = this.verifyJwt(token, digest).finally(() => {
        this.pendingTokens.delete(digest);
        this.failures.release(address);
      });
      this.pendingTokens.set(digest, pending);
    }
    const result = await pending;
    if (result.ok) return { ok: true, identity: result.identity, verified: true };
    // The key set being unreachable is the gateway's problem, not the caller's fault.
    if (result.reason !== 'keys_unavailable') this.failures.fail(address);
    const detail = result.detail ? ` (${result.detail})` : '';
    return { ok: false, kind: 'unauthenticated', reason: `jwt: ${result.reason.replace(/_/g, ' ')}${detail}`, provider, credentialSent: true };
  }

  /** The API key verifier's argon2 work (started in all, admitted now and at most at once) and its capacity; undefined without API keys. */
  get stats(): ApiKeyVerifierStats | undefined {
    return this.apiKeys?.stats;
  }

  private throttled(provider: AuthProvider, retryAfter: number): AuthOutcome {
    return { ok: false, kind: 'throttled', reason: 'too many failed attempts from this address', provider, retryAfter, credentialSent: true };
  }

  /** Verifies a JWT and, when it passes, remembers its identity. Never rejects. */
  private async verifyJwt(token: string, digest: string): Promise<JwtOutcome> {
    try {
      const result = await (this.jwt as JwtVerifier).verify(token);
      if (!result.ok) return result;
      const identity = this.jwtIdentity(result.claims);
      this.rememberToken(digest, identity, Math.min(result.claims.expiresAt, this.now() + TOKEN_CACHE_MS));
      return { ok: true, identity };
    } catch {
      return { ok: false, reason: 'malformed' };
    }
  }

  /**
   * A verified client certificate is an identity when an entry names it. Not subject to the
   * failure limit: the certificate was issued by a trusted CA, so it cannot be guessed.
   */
  private certificateOutcome(peer: PeerCertificate): AuthOutcome {
    const identity = this.certsByFingerprint.get(peer.fingerprint) ?? (peer.subjectCn === undefined ? undefined : this.certsBySubject.get(peer.subjectCn));
    if (identity) return { ok: true, identity, verified: true };
    const subject = peer.subjectCn === undefined ? 'no single subject CN' : `subject CN ${JSON.stringify(peer.subjectCn.slice(0, 128))}`;
    return {
      ok: false,
      kind: 'unauthenticated',
      reason: `client certificate matches no [[auth.client_certs]] entry (${subject}, SHA-256 fingerprint ${peer.fingerprint})`,
      provider: 'client_cert',
      credentialSent: false,
    };
  }

  /**
   * A verified token is trusted for a minute at most, and never past its exp: a key removed from
   * the JWKS stops admitting its tokens within that minute.
   */
  private rememberToken(digest: string, identity: Identity, until: number): void {
    insert(this.verifiedTokens, digest, { identity, until, touched: this.now() }, MAX_CACHED_TOKENS);
  }

  private jwtIdentity(claims: JwtIdentityClaims): Identity {
    return {
      id: claims.subject,
      provider: 'jwt',
      tools: this.policyForScopes(claims.scopes),
      servers: claims.servers ? new Set(claims.servers) : undefined,
      scopes: claims.scopes,
      approval: this.jwtApproval,
    };
  }

  private policyForScopes(scopes: readonly string[]): ToolPolicy {
    const mapping = this.config?.jwt?.scope_tool_mapping;
    if (mapping === undefined) return ToolPolicy.ALL;
    const key = scopes.join(' ');
    let policy = this.scopePolicies.get(key);
    if (!policy) {
      policy = ToolPolicy.fromScopes(scopes, mapping);
      if (this.scopePolicies.size >= MAX_CACHED_SCOPE_SETS) this.scopePolicies.clear();
      this.scopePolicies.set(key, policy);
    }
    return policy;
  }
}

/** The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 7235), or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const match = /^Bearer[ ]+([^\s]+)[ ]*$/i.exec(header);
  return match?.[1];
}
