import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, formatKeyPath } from '../../src/config/errors.js';
import { loadConfig, parseConfig } from '../../src/config/load.js';
import { fieldsOf } from '../helpers/servers.js';

const dir = mkdtempSync(join(tmpdir(), 'mcp-guard-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function errorOf(run: () => unknown): ConfigError {
  try {
    run();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

async function rejectionOf(promise: Promise<unknown>): Promise<ConfigError> {
  const error: unknown = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  if (error instanceof ConfigError) return error;
  throw new Error(`expected a ConfigError, got ${String(error)}`);
}

describe('ConfigError', () => {
  it('lists every issue as "path: message" lines', () => {
    const error = new ConfigError([
      { path: 'a.b', message: 'one' },
      { path: 'c[0]', message: 'two' },
    ]);
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe('ConfigError');
    expect(error.message).toBe('a.b: one\nc[0]: two');
  });

  it('formats key paths the way TOML writes them', () => {
    expect(formatKeyPath(['upstream', 'servers', 2, 'url'])).toBe('upstream.servers[2].url');
    expect(formatKeyPath(['upstream', 'headers', 'X-Api-Key'])).toBe('upstream.headers.X-Api-Key');
    expect(formatKeyPath(['upstream', 'env', 'a.b'])).toBe('upstream.env."a.b"');
    expect(formatKeyPath(['MCP_GUARD_ADDITIONAL_SERVERS', 'staging', 'url'])).toBe('MCP_GUARD_ADDITIONAL_SERVERS.staging.url');
  });
});

describe('parseConfig', () => {
  it('reports every problem at once, across sections, servers and the environment', () => {
    const error = errorOf(() =>
      parseConfig(
        `
[server]
port = -1

[upstream]
timeout_ms = 0

[[upstream.servers]]
name = "a"
path_prefix = "/a"
transport = "stdio"

[[upstream.servers]]
name = "b"
path_prefix = "/health"
url = "http://b"

[[upstream.servers]]
name = "a"
path_prefix = "/c"
transport = "http"
strip_prefx = true
`,
        { env: { MCP_GUARD_ADDITIONAL_SERVERS: '{"x": {"path_prefix": "/x"}}' } },
      ),
    );
    expect(error.issues.map((issue) => `${issue.path}: ${issue.message}`)).toEqual([
      'server.port: expected an integer from 0 to 65535',
      'upstream.timeout_ms: expected a whole number of milliseconds from 1 to 2147483647',
      'upstream.servers[1].path_prefix: "/health" and the paths below it are reserved for the gateway\'s own endpoint',
      'upstream.servers[2].strip_prefx: unknown key',
      'upstream.servers[2].name: same name "a" as upstream.servers[0]',
      'upstream.servers[0].command: required for transport "stdio"',
      'upstream.servers[2].url: required for transport "http"',
      'MCP_GUARD_ADDITIONAL_SERVERS.x.transport: required: "stdio" (with command), "http" or "sse" (with url)',
    ]);
  });

  describe('a problem found by the schema hides none found after it (one run lists them all)', () => {
    const HASH = '$argon2id$v=19$m=65536,p=4,t=3$U2T/xu0/ijRPasifnWFRLQ$LuqUxd0bHsdJrOeJQHER9v0bjc4E73eeCjOvK/Q18iI';
    const problems = (text: string, env: Record<string, string> = {}) =>
      errorOf(() => parseConfig(text, { env })).issues.map((issue) => `${issue.path}: ${issue.message}`);

    it('a missing command, an empty [auth], a duplicate key id, an [audit] without a sink, beside schema errors elsewhere', () => {
      expect(
        problems(`
[server]
port = "3000"
bogus = 1

[upstream]
transport = "stdio"
timeout_ms = 0

[auth]

[audit]
enabled = true
`),
      ).toEqual([
        'server.port: expected an integer from 0 to 65535',
        'server.bogus: unknown key',
        'upstream.timeout_ms: expected a whole number of milliseconds from 1 to 2147483647',
        'upstream.command: required for transport "stdio"',
        'auth: configure [[auth.api_keys]], [auth.jwt] or [[auth.client_certs]] (or remove [auth] to run without authentication)',
        'audit: configure at least one sink: stdout = true, file or export_url (or enabled = false)',
      ]);
    });

    it('servers with an invalid name, path_prefix or value are still resolved; keys and client certificates still cross-checked', () => {
      expect(
        problems(`
[[upstream.servers]]
name = "a b"
path_prefix = "/a"
transport = "stdio"

[[upstream.servers]]
name = "b"
path_prefix = "b"
transport = "http"
timeout_ms = "60s"

[[upstream.servers]]
name = "c"
path_prefix = "/c"
url = "http://127.0.0.1:1/mcp"
restart_backoff_max_ms = -1
restart_backoff_ms = 60000

[[auth.api_keys]]
id = "k"
key_hash = "${HASH}"
servers = ["b", "nope"]

[[auth.api_keys]]
id = "k"
key_hash = "not a hash"

[[auth.client_certs]]
id = "k"
subject_cn = "client"
`),
      ).toEqual([
        'upstream.servers[0].name: must be 1 to 64 letters, digits, "-" or "_"',
        'upstream.servers[1].path_prefix: must start with "/"',
        'upstream.servers[1].timeout_ms: expected a whole number of milliseconds from 1 to 2147483647',
        'upstream.servers[2].restart_backoff_max_ms: expected a whole number of milliseconds from 1 to 2147483647',
        'auth.api_keys[1].key_hash: expected an argon2id hash ($argon2id$v=19$...) as printed by `mcp-guard hash-key`, or a base64 SHA-256 hash',
        'upstream.servers[0].command: required for transport "stdio"',
        'upstream.servers[1].url: required for transport "http"',
        'auth.api_keys[1].id: same id "k" as auth.api_keys[0]',
        'auth.client_certs: needs [server.tls] client_ca_path: client certificates are only verified then (there is no [server.tls])',
        'auth.client_certs[0].id: same id "k" as auth.api_keys[0]',
      ]);
    });

    it('names what auth refers to only when every server name is known', () => {
      // "b" is configured (its entry is broken), "nope" is not.
      expect(
        problems(`
[[upstream.servers]]
name = "b"
path_prefix = "/b"
transport = "stdio"

[[auth.api_keys]]
id = "k"
key_hash = "${HASH}"
servers = ["b", "nope"]
`),
      ).toEqual(['upstream.servers[0].command: required for transport "stdio"', 'auth.api_keys[0].servers[1]: no server named "nope" is configured']);
    });

    it('a value the schema refused is reported once, not again as missing', () => {
      expect(problems('[upstream]\ncommand = ""\n')).toEqual(['upstream.command: expected a non-empty string']);
      expect(problems('[upstream]\ntransport = "htp"\n')).toEqual(['upstream.transport: expected "stdio", "http" or "sse"']);
      expect(problems('[upstream]\ntransport = "http"\nurl = "ftp://x"\n[audit]\nfile = 5\n')).toEqual([
        'upstream.url: expected an absolute http:// or https:// URL',
        'audit.file: expected a non-empty string',
      ]);
    });

    it('the same in MCP_GUARD_ADDITIONAL_SERVERS', () => {
      expect(
        problems('[upstream]\ntimeout_ms = 5\n', { MCP_GUARD_ADDITIONAL_SERVERS: '{"x": {"path_prefix": "x", "transport": "sse", "timeout_ms": -1}}' }),
      ).toEqual([
        'MCP_GUARD_ADDITIONAL_SERVERS.x.path_prefix: must start with "/"',
        'MCP_GUARD_ADDITIONAL_SERVERS.x.timeout_ms: expected a whole number of milliseconds from 1 to 2147483647',
        'MCP_GUARD_ADDITIONAL_SERVERS.x.url: required for transport "sse"',
      ]);
    });
  });

  it('names the line and column of a TOML syntax error, without quoting the line', () => {
    const text = '[server]\nport = 3000\n\n[upstream]\ncommand = "echo\nargs = []\n';
    const error = errorOf(() => parseConfig(text, { env: {}, source: 'mcp-guard.toml' }));
    expect(error.issues).toHaveLength(1);
    expect(error.issues[0]?.path).toBe('(file)');
    expect(error.message).toMatch(/^\(file\): mcp-guard\.toml:5:\d+: not valid TOML: \S.*$/);
    expect(error.message).not.toContain('echo');
  });

  it('names line and column without a source name too', () => {
    const error = errorOf(() => parseConfig('[upstream]\ncommand = = "x"\n', { env: {} }));
    expect(error.message).toMatch(/^\(file\): line 2, column \d+: not valid TOML: /);
  });

  it('reports a redefined table as a syntax error', () => {
    const error = errorOf(() => parseConfig('[server]\nport = 1\n[server]\nport = 2\n', { env: {}, source: 'x.toml' }));
    expect(error.message).toMatch(/^\(file\): x\.toml:3:\d+: not valid TOML: /);
  });

  it('still checks MCP_GUARD_ADDITIONAL_SERVERS when the file is not TOML', () => {
    const error = errorOf(() => parseConfig('[', { env: { MCP_GUARD_ADDITIONAL_SERVERS: '[1]' } }));
    expect(error.issues.map((issue) => issue.path)).toEqual(['(file)', 'MCP_GUARD_ADDITIONAL_SERVERS']);
  });

  it('accepts a UTF-8 byte order mark', () => {
    expect(parseConfig('\uFEFF[upstream]\ncommand = "x"\n', { env: {} }).servers).toHaveLength(1);
  });
});

describe('loadConfig', () => {
  it('reads and resolves a file', async () => {
    const path = join(dir, 'ok.toml');
    writeFileSync(path, '[server]\nport = 4000\n[upstream]\ncommand = "${CMD}"\n');
    const config = await loadConfig(path, { CMD: 'node' });
    expect(config.server.port).toBe(4000);
    expect(fieldsOf(config.servers[0]).command).toBe('node');
  });

  it('reports a missing file at (file), naming it', async () => {
    const path = join(dir, 'missing.toml');
    const error = await rejectionOf(loadConfig(path, {}));
    expect(error.issues).toEqual([{ path: '(file)', message: `config file not found: ${path}` }]);
  });

  it('reports a directory at (file), naming it', async () => {
    const error = await rejectionOf(loadConfig(dir, {}));
    expect(error.issues).toEqual([{ path: '(file)', message: `config file ${dir} is a directory` }]);
  });

  it('names the file in a syntax error', async () => {
    const path = join(dir, 'broken.toml');
    writeFileSync(path, '[upstream\n');
    const error = await rejectionOf(loadConfig(path, {}));
    expect(error.message).toContain(`${path}:1:`);
  });
});
