import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/errors.js';
import { parseConfig } from '../../src/config/load.js';
import { fieldsOf } from '../helpers/servers.js';

const FILE = `
[upstream]
timeout_ms = 1234
headers = { Authorization = "Bearer shared" }
env = { LOG = "debug" }

[[upstream.servers]]
name = "filesystem"
path_prefix = "/fs"
command = "npx"
args = ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]
`;

function withServers(json: unknown, env: Record<string, string> = {}) {
  return { ...env, MCP_GUARD_ADDITIONAL_SERVERS: typeof json === 'string' ? json : JSON.stringify(json) };
}

function errorOf(toml: string, env: Record<string, string>): ConfigError {
  try {
    parseConfig(toml, { env });
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

function errorsOf(toml: string, env: Record<string, string>): string[] {
  return errorOf(toml, env).issues.map((issue) => `${issue.path}: ${issue.message}`);
}

describe('MCP_GUARD_ADDITIONAL_SERVERS', () => {
  it('adds servers after the file ones, in JSON key order, inheriting [upstream] defaults', () => {
    const config = parseConfig(FILE, {
      env: withServers(
        {
          staging: { path_prefix: '/staging/', transport: 'http', url: 'https://staging.example/mcp' },
          memory: { path_prefix: '/memory', command: 'npx', args: ['-y', '@modelcontextprotocol/server-memory'], env: { ONLY: 'this' } },
          private: { path_prefix: '/private', transport: 'sse', url: 'https://p.example/sse', headers: { 'X-Key': '${PRIVATE_KEY}' }, timeout_ms: 5 },
        },
        { PRIVATE_KEY: 'k' },
      ),
    });
    expect(config.single).toBe(false);
    expect(config.servers.map((s) => s.name)).toEqual(['filesystem', 'staging', 'memory', 'private']);
    expect(config.servers[1]).toMatchObject({
      path_prefix: '/staging',
      transport: 'http',
      url: 'https://staging.example/mcp',
      headers: { Authorization: 'Bearer shared' },
      timeout_ms: 1234,
    });
    expect(config.servers[2]).toMatchObject({ transport: 'stdio', env: { ONLY: 'this' }, timeout_ms: 1234 });
    expect(config.servers[3]).toMatchObject({ headers: { 'X-Key': 'k' }, timeout_ms: 5 });
  });

  it('is ignored when unset or blank', () => {
    for (const value of [undefined, '', '  \n']) {
      const env: Record<string, string | undefined> = { MCP_GUARD_ADDITIONAL_SERVERS: value };
      expect(parseConfig(FILE, { env }).servers).toHaveLength(1);
    }
  });

  it('may be an empty object: a single [upstream] stays single', () => {
    const config = parseConfig('[upstream]\ncommand = "x"\n', { env: withServers({}) });
    expect(config.single).toBe(true);
  });

  it('must be valid JSON, and the error does not quote the text (it may hold secrets)', () => {
    const secret = 'tok_ABCDEF123';
    for (const json of [`{"a": ${secret}}`, `{"a": {"headers": {"X": "${secret}"}`, `{"a": 1,} ${secret}`, `{}${secret}`]) {
      const error = errorOf(FILE, withServers(json));
      expect(error.issues).toHaveLength(1);
      expect(error.issues[0]?.path).toBe('MCP_GUARD_ADDITIONAL_SERVERS');
      expect(error.issues[0]?.message).toMatch(/^not valid JSON \(.+\)$/);
      expect(error.message).not.toContain(secret);
      expect(error.message).not.toContain('tok_');
    }
    expect(errorsOf(FILE, withServers('{"a": 1,}'))).toEqual([
      'MCP_GUARD_ADDITIONAL_SERVERS: not valid JSON (expected double-quoted property name at character 9)',
    ]);
  });

  it('must be an object of servers by name', () => {
    for (const json of ['[]', '"x"', '5', 'null']) {
      expect(errorsOf(FILE, withServers(json))).toEqual([
        'MCP_GUARD_ADDITIONAL_SERVERS: expected a JSON object of servers by name: {"name": {"path_prefix": "/x", "transport": "http", ...}}',
      ]);
    }
  });

  it('reports problems in an entry at MCP_GUARD_ADDITIONAL_SERVERS.<name>.<field>', () => {
    expect(
      errorsOf(
        FILE,
        withServers({
          staging: { transport: 'http', url: 'not a url', strip_prefx: true, timeout_ms: '5' },
          bad: 'x',
          stdio: { path_prefix: '/s', transport: 'stdio', url: 'http://x' },
        }),
      ),
    ).toEqual([
      'MCP_GUARD_ADDITIONAL_SERVERS.staging.path_prefix: required',
      'MCP_GUARD_ADDITIONAL_SERVERS.staging.url: expected an absolute http:// or https:// URL',
      'MCP_GUARD_ADDITIONAL_SERVERS.staging.timeout_ms: expected a whole number of milliseconds from 1 to 2147483647',
      'MCP_GUARD_ADDITIONAL_SERVERS.staging.strip_prefx: unknown key',
      'MCP_GUARD_ADDITIONAL_SERVERS.bad: expected an object, got a string',
      'MCP_GUARD_ADDITIONAL_SERVERS.stdio.url: not used by transport "stdio"',
      'MCP_GUARD_ADDITIONAL_SERVERS.stdio.command: required for transport "stdio"',
    ]);
  });

  it('refuses a name field inside an entry: the key is the name', () => {
    expect(errorsOf(FILE, withServers({ a: { name: 'b', path_prefix: '/a', url: 'http://a' } }))).toEqual([
      'MCP_GUARD_ADDITIONAL_SERVERS.a.name: not allowed here: the key of the entry is its name',
    ]);
  });

  it('checks the key as a server name', () => {
    expect(errorsOf(FILE, withServers({ 'bad.name': { path_prefix: '/a', url: 'http://a' } }))).toEqual([
      'MCP_GUARD_ADDITIONAL_SERVERS."bad.name": not a valid server name: 1 to 64 letters, digits, "-" or "_"',
    ]);
  });

  it('refuses a name that the file already has, even when the entry is otherwise broken', () => {
    expect(errorsOf(FILE, withServers({ filesystem: { path_prefix: '/other', url: 'http://a' } }))).toEqual([
      'MCP_GUARD_ADDITIONAL_SERVERS.filesystem: a server named "filesystem" is already configured',
    ]);
    expect(errorsOf(FILE, withServers({ filesystem: { url: 5 } }))).toEqual([
      'MCP_GUARD_ADDITIONAL_SERVERS.filesystem.path_prefix: required',
      'MCP_GUARD_ADDITIONAL_SERVERS.filesystem.url: expected an absolute http:// or https:// URL',
      'MCP_GUARD_ADDITIONAL_SERVERS.filesystem: a server named "filesystem" is already configured',
    ]);
  });

  it('refuses a prefix that the file already has', () => {
    expect(errorsOf(FILE, withServers({ other: { path_prefix: '/fs/', url: 'http://a' } }))).toEqual([
      'MCP_GUARD_ADDITIONAL_SERVERS.other.path_prefix: same path_prefix "/fs" as upstream.servers[0] (compared without a trailing "/")',
    ]);
  });

  it('interpolates ${VAR} inside entries and reports unset ones at their path', () => {
    expect(errorsOf(FILE, withServers({ gh: { path_prefix: '/gh', url: 'https://gh', headers: { Authorization: 'Bearer ${GH_TOKEN}' } } }))).toEqual([
      'MCP_GUARD_ADDITIONAL_SERVERS.gh.headers.Authorization: environment variable GH_TOKEN is not set',
    ]);
  });

  describe('with a file that has no [[upstream.servers]]', () => {
    it('keeps a [upstream] with a transport as a server of its own ("default" at "/"), whose settings the others inherit', () => {
      const config = parseConfig('[upstream]\ntransport = "http"\nurl = "http://primary"\nheaders = { A = "1" }\n', {
        env: withServers({ extra: { path_prefix: '/extra', transport: 'http', url: 'http://extra' } }),
      });
      expect(config.single).toBe(false);
      expect(config.warnings).toEqual([]);
      expect(config.servers.map(fieldsOf).map((s) => [s.name, s.path_prefix, s.url, s.headers])).toEqual([
        ['default', '/', 'http://primary', { A: '1' }],
        ['extra', '/extra', 'http://extra', { A: '1' }],
      ]);
    });

    it('treats a [upstream] without transport, command or url as defaults only, with a warning for its server fields', () => {
      const config = parseConfig('[upstream]\nname = "x"\nargs = ["a"]\ntimeout_ms = 7\n', {
        env: withServers({ extra: { path_prefix: '/extra', url: 'http://extra' } }),
      });
      expect(config.servers.map((s) => [s.name, s.timeout_ms])).toEqual([['extra', 7]]);
      expect(config.warnings).toEqual([
        '[upstream] args, name are ignored: [upstream] sets no transport, command or url, so it only provides defaults for MCP_GUARD_ADDITIONAL_SERVERS',
      ]);
    });

    it('needs no file [upstream] at all', () => {
      const config = parseConfig('', { env: withServers({ only: { path_prefix: '/', url: 'http://only' } }) });
      expect(config.servers.map((s) => s.name)).toEqual(['only']);
      expect(config.single).toBe(false);
    });

    it('refuses an additional server named like the [upstream] server, or on its prefix', () => {
      expect(
        errorsOf('[upstream]\ncommand = "x"\n', withServers({ default: { path_prefix: '/d', url: 'http://d' }, root: { path_prefix: '/', url: 'http://r' } })),
      ).toEqual([
        'MCP_GUARD_ADDITIONAL_SERVERS.default: a server named "default" is already configured',
        'MCP_GUARD_ADDITIONAL_SERVERS.root.path_prefix: same path_prefix "/" as [upstream] (compared without a trailing "/")',
      ]);
    });
  });
});

describe('MCP_GUARD_ADDITIONAL_SERVERS keys', () => {
  it('refuses a "__proto__" key rather than letting it vanish', () => {
    const json = '{"a": {"path_prefix": "/a", "url": "http://a", "headers": {"__proto__": "x"}}}';
    expect(errorsOf(FILE, withServers(json))).toEqual(['MCP_GUARD_ADDITIONAL_SERVERS.a.headers.__proto__: this key is not allowed']);
  });
});
