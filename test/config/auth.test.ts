/**
 * [auth]: what a valid section gives the gateway, and every way a security setting can be wrong
 * being refused at its key path (a typo must never leave the gateway open).
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { configErrors } from '../helpers/config.js';

const SERVERS =
  '[[upstream.servers]]\nname = "fs"\npath_prefix = "/fs"\ncommand = "node"\n[[upstream.servers]]\nname = "web"\npath_prefix = "/web"\nurl = "http://127.0.0.1:9/mcp"\n';
const HASH = '$argon2id$v=19$m=65536,p=4,t=3$U2T/xu0/ijRPasifnWFRLQ$LuqUxd0bHsdJrOeJQHER9v0bjc4E73eeCjOvK/Q18iI';
const HASH2 = '$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$LuqUxd0bHsdJrOeJQHER9v0bjc4E73eeCjOvK/Q18iI';
const LEGACY = 'n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=';
const SECRET = 'a-shared-secret-of-at-least-32-bytes!!';

function parse(toml: string, env: Record<string, string> = {}) {
  return parseConfig(`${SERVERS}${toml}`, { env });
}

const errorsOf = (toml: string): string[] => configErrors(`${SERVERS}${toml}`);

describe('[[auth.api_keys]]', () => {
  it('takes id, key_hash, key_prefix, allowed_tools and servers', () => {
    const config = parse(
      `[[auth.api_keys]]\nid = "ci-bot"\nkey_prefix = "mcp_ab12cd34"\nkey_hash = "${HASH}"\nallowed_tools = ["read_*", "list_directory"]\nservers = ["fs"]\n`,
    );
    expect(config.auth).toEqual({
      api_keys: [{ id: 'ci-bot', key_prefix: 'mcp_ab12cd34', key_hash: HASH, allowed_tools: ['read_*', 'list_directory'], servers: ['fs'] }],
      protect_routes: false,
      protect_metrics: false,
      max_failures_per_minute: 30,
    });
    expect(config.warnings).toEqual([]);
  });

  it('reads key_hash from the environment', () => {
    const config = parse('[[auth.api_keys]]\nid = "a"\nkey_hash = "${KEY_HASH}"\n', { KEY_HASH: HASH });
    expect(config.auth?.api_keys?.[0]?.key_hash).toBe(HASH);
  });

  it("accepts the earlier gateway's base64 SHA-256 hashes with a warning to re-hash", () => {
    const config = parse(`[[auth.api_keys]]\nid = "old"\nkey_hash = "${LEGACY}"\n`);
    expect(config.warnings).toEqual([expect.stringMatching(/auth\.api_keys old: unsalted SHA-256 key_hash is deprecated; re-hash with `mcp-guard hash-key`/)]);
  });

  it('refuses what is not a hash, without echoing it', () => {
    const errors = errorsOf('[[auth.api_keys]]\nid = "a"\nkey_hash = "plaintext-key-oops"\n');
    expect(errors).toEqual([expect.stringMatching(/^auth\.api_keys\[0\]\.key_hash: expected an argon2id hash/)]);
    expect(errors.join()).not.toContain('plaintext-key-oops');
    expect(errorsOf('[[auth.api_keys]]\nid = "a"\nkey_hash = "$argon2i$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"\n')).toHaveLength(1);
  });

  const CLASHING_KEYS = `
[[auth.api_keys]]
id = "a"
key_prefix = "mcp_ab12cd34"
key_hash = "${HASH}"
servers = ["fs", "nope"]
[[auth.api_keys]]
id = "a"
key_prefix = "mcp_ab12cd34"
key_hash = "${HASH}"
`;

  it('refuses duplicate ids, prefixes and hashes, and servers that are not configured', () => {
    expect(errorsOf(CLASHING_KEYS)).toEqual([
      'auth.api_keys[1].id: same id "a" as auth.api_keys[0]',
      'auth.api_keys[1].key_prefix: same key_prefix "mcp_ab12cd34" as auth.api_keys[0]',
      'auth.api_keys[1].key_hash: same key_hash as auth.api_keys[0]',
      'auth.api_keys[0].servers[1]: no server named "nope" is configured',
    ]);
  });

  it('refuses bad ids and prefixes, and a per-key rate_limit without [rate_limit] (it would not be enforced); the valid entries are still cross-checked in the same run', () => {
    expect(errorsOf(`${CLASHING_KEYS}[[auth.api_keys]]\nid = "bad id"\nkey_prefix = "MCP_1"\nkey_hash = "${HASH2}"\nrate_limit = 10\n`)).toEqual([
      'auth.api_keys[2].id: must be 1 to 128 letters, digits or ._@:+-',
      'auth.api_keys[2].key_prefix: expected "mcp_" and 8 lowercase letters or digits, as printed by `mcp-guard keygen`',
      'auth.api_keys[1].id: same id "a" as auth.api_keys[0]',
      'auth.api_keys[1].key_prefix: same key_prefix "mcp_ab12cd34" as auth.api_keys[0]',
      'auth.api_keys[1].key_hash: same key_hash as auth.api_keys[0]',
      'auth.api_keys[0].servers[1]: no server named "nope" is configured',
      'auth.api_keys[2].rate_limit: needs [rate_limit] to be enforced (there is no [rate_limit] section)',
    ]);
  });

  it('refuses unknown keys in an entry (a misspelt allowed_tools must not allow every tool)', () => {
    expect(errorsOf(`[[auth.api_keys]]\nid = "a"\nkey_hash = "${HASH}"\nallowed_tool = ["x"]\n`)).toEqual(['auth.api_keys[0].allowed_tool: unknown key']);
  });
});

describe('[auth.jwt]', () => {
  it('jwks: the seed guide block, with defaults for everything else', () => {
    const config = parse(
      '[auth.jwt]\nmode = "jwks"\njwks_url = "https://auth.internal/.well-known/jwks.json"\nissuer = "https://auth.internal/"\naudience = "mcp-guard"\n',
    );
    expect(config.auth?.jwt).toEqual({
      mode: 'jwks',
      jwks_url: 'https://auth.internal/.well-known/jwks.json',
      issuer: 'https://auth.internal/',
      audience: 'mcp-guard',
      cache_duration_secs: 600,
      user_id_claim: 'sub',
      scopes_claim: 'scope',
      leeway_secs: 30,
    });
    expect(config.warnings).toEqual([]);
  });

  it('simple: an HS256 secret from the environment', () => {
    const config = parse('[auth.jwt]\nmode = "simple"\nsecret = "${JWT_SECRET}"\nalgorithms = ["HS256", "HS512"]\n', { JWT_SECRET: SECRET });
    expect(config.auth?.jwt).toMatchObject({ mode: 'simple', secret: SECRET, algorithms: ['HS256', 'HS512'] });
  });

  it('warns about an http:// JWKS URL', () => {
    const config = parse('[auth.jwt]\nmode = "jwks"\njwks_url = "http://127.0.0.1:8080/jwks.json"\n');
    expect(config.warnings).toEqual([expect.stringMatching(/jwks_url uses http:\/\//)]);
  });

  it('refuses alg none, HMAC with a JWKS (algorithm confusion) and public-key algorithms with a secret', () => {
    expect(errorsOf('[auth.jwt]\nmode = "jwks"\njwks_url = "https://a/jwks"\nalgorithms = ["RS256", "none", "HS256"]\n')).toEqual([
      'auth.jwt.algorithms[1]: expected a JWS algorithm such as "RS256", "ES256" or "HS256" ("none" is never accepted)',
    ]);
    expect(errorsOf('[auth.jwt]\nmode = "jwks"\njwks_url = "https://a/jwks"\nalgorithms = ["RS256", "HS256"]\n')).toEqual([
      'auth.jwt.algorithms[1]: HMAC algorithms cannot be used with a JWKS',
    ]);
    expect(errorsOf(`[auth.jwt]\nmode = "simple"\nsecret = "${SECRET}"\nalgorithms = ["RS256"]\n`)).toEqual([
      'auth.jwt.algorithms[0]: mode "simple" verifies HS256, HS384 or HS512 only',
    ]);
  });

  it('refuses a missing or short secret, a missing jwks_url, fields of the other mode, and no mode', () => {
    expect(errorsOf('[auth.jwt]\nmode = "simple"\n')).toEqual(['auth.jwt.secret: required for mode "simple"']);
    expect(errorsOf('[auth.jwt]\nmode = "simple"\nsecret = "short"\n')).toEqual(['auth.jwt.secret: must be at least 32 bytes (256 bits) long']);
    expect(errorsOf(`[auth.jwt]\nmode = "jwks"\nsecret = "${SECRET}"\n`)).toEqual([
      'auth.jwt.jwks_url: required for mode "jwks"',
      'auth.jwt.secret: not used by mode "jwks"',
    ]);
    expect(errorsOf('[auth.jwt]\njwks_url = "https://a/jwks"\n')).toEqual(['auth.jwt.mode: required']);
  });

  it('takes scope_tool_mapping, servers_claim, authorization_servers and leeway', () => {
    const config = parse(`
[auth.jwt]
mode = "jwks"
jwks_url = "https://a/jwks"
servers_claim = "mcp_servers"
leeway_secs = 0
authorization_servers = ["https://auth.example.com"]
[auth.jwt.scope_tool_mapping]
"read" = ["read_file", "list_*"]
"admin" = ["*"]
`);
    expect(config.auth?.jwt).toMatchObject({
      servers_claim: 'mcp_servers',
      leeway_secs: 0,
      authorization_servers: ['https://auth.example.com'],
      scope_tool_mapping: { read: ['read_file', 'list_*'], admin: ['*'] },
    });
  });
});

describe('[auth]', () => {
  it('refuses an [auth] with nothing to authenticate with (it would look protected and not be)', () => {
    expect(errorsOf('[auth]\nprotect_routes = true\n')).toEqual([
      'auth: configure [[auth.api_keys]], [auth.jwt] or [[auth.client_certs]] (or remove [auth] to run without authentication)',
    ]);
  });

  it('takes protect_routes, resource and max_failures_per_minute', () => {
    const config = parse(
      `[auth]\nprotect_routes = true\nresource = "https://mcp.example.com"\nmax_failures_per_minute = 5\n[[auth.api_keys]]\nid = "a"\nkey_hash = "${HASH}"\n`,
    );
    expect(config.auth).toMatchObject({ protect_routes: true, resource: 'https://mcp.example.com', max_failures_per_minute: 5 });
  });

  it('refuses unknown keys', () => {
    expect(errorsOf(`[auth]\nenabled = true\n[[auth.api_keys]]\nid = "a"\nkey_hash = "${HASH}"\n`)).toEqual(['auth.enabled: unknown key']);
  });
});
