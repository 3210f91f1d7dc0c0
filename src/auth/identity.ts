/**
 * Who is calling: the result of authentication, and everything policy needs to know about the
 * caller. Built once per API key at start-up, and per token for JWTs.
 */
import { ToolPolicy } from '../policy/tools.js';

export type AuthProvider = 'api_key' | 'jwt' | 'client_cert' | 'anonymous';

export interface Identity {
  /** The key's or client certificate's `id`, or the JWT's user claim; what logs, audit lines and metrics name. */
  readonly id: string;
  readonly provider: AuthProvider;
  /** The tools this identity may list and call. */
  readonly tools: ToolPolicy;
  /** The only servers it may reach; undefined = every server. */
  readonly servers: ReadonlySet<string> | undefined;
  /** JWT scopes (empty for API keys). */
  readonly scopes: readonly string[];
  /**
   * The tools whose calls by this identity a person must approve first (`require_approval` of
   * its key or of `[auth.jwt]`); undefined = none.
   */
  readonly approval?: ToolPolicy | undefined;
}

/** `require_approval` as a policy: undefined when absent or empty (never "every tool", as an empty allowed_tools is). */
export function approvalPolicy(patterns: readonly string[] | undefined): ToolPolicy | undefined {
  return patterns === undefined || patterns.length === 0 ? undefined : ToolPolicy.fromPatterns(patterns);
}

/** The caller when no authentication is configured: may use everything. */
export const ANONYMOUS: Identity = Object.freeze({
  id: 'anonymous',
  provider: 'anonymous',
  tools: ToolPolicy.ALL,
  servers: undefined,
  scopes: [],
});

/** True when the identity may reach the server at all. */
export function mayReach(identity: Identity, server: string): boolean {
  return identity.servers === undefined || identity.servers.has(server);
}

/** A key that tells two identities apart, for binding sessions to the identity that opened them. */
export function ownerKey(identity: Identity): string {
  return `${identity.provider}:${identity.id}`;
}
