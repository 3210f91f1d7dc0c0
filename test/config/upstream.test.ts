import { describe, expect, expectTypeOf, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { configErrors as errorsOf } from '../helpers/config.js';
import type {
  TelemetryConfig,
  AuditConfig,
  ToolIntegrityConfig,
  AuthConfig,
  CorsSettings,
  GatewayConfig,
  RateLimitConfig,
  ServerConfig,
  VirtualServerConfig,
  ServerSettings,
  TlsSettings,
  Transport,
  StdioServerConfig,
  HttpServerConfig,
} from '../../src/config/schema.js';
import { fieldsOf } from '../helpers/servers.js';

function parse(toml: string) {
  return parseConfig(toml, { env: {} });
}

const SERVER_DEFAULTS = {
  era: 'auto',
  timeout_ms: 60_000,
  startup_timeout_ms: 60_000,
  restart_backoff_ms: 500,
  restart_backoff_max_ms: 30_000,
  max_restarts: 5,
  circuit_failure_threshold: 5,
  circuit_open_ms: 30_000,
  circuit_open_max_ms: 120_000,
};
/** The defaults of a stdio server's own fields; an http or sse server has none of them. */
const STDIO_DEFAULTS = { relay_roots: false, isolation: 'identity', child_idle_ms: 300_000, max_children: 32 };

describe('exported types', () => {
  it('match the contract other modules are written against', () => {
    expectTypeOf<Transport>().toEqualTypeOf<'stdio' | 'http' | 'sse'>();
    // A union by transport: each server has its own transport's fields and none of the other's.
    expectTypeOf<StdioServerConfig>().toEqualTypeOf<{
      name: string;
      path_prefix: string;
      era: 'auto' | 'legacy' | 'modern';
      timeout_ms: number;
      startup_timeout_ms: number;
      restart_backoff_ms: number;
      restart_backoff_max_ms: number;
      max_restarts: number;
      circuit_failure_threshold: number;
      circuit_open_ms: number;
      circuit_open_max_ms: number;
      require_approval?: string[];
      transport: 'stdio';
      command: string;
      args: string[];
      env: Record<string, string>;
      cwd?: string;
      relay_roots: boolean;
      isolation: 'identity' | 'session' | 'shared';
      child_idle_ms: number;
      max_children: number;
    }>();
    expectTypeOf<HttpServerConfig>().toEqualTypeOf<{
      name: string;
      path_prefix: string;
      era: 'auto' | 'legacy' | 'modern';
      timeout_ms: number;
      startup_timeout_ms: number;
      restart_backoff_ms: number;
      restart_backoff_max_ms: number;
      max_restarts: number;
      circuit_failure_threshold: number;
      circuit_open_ms: number;
      circuit_open_max_ms: number;
      require_approval?: string[];
      transport: 'http' | 'sse';
      url: string;
      headers: Record<string, string>;
      strip_prefix: boolean;
    }>();
    expectTypeOf<ServerConfig>().toEqualTypeOf<StdioServerConfig | HttpServerConfig>();
    expectTypeOf<ServerSettings>().toEqualTypeOf<{
      host: string;
      port: number;
      max_request_size: number;
      watch_config: boolean;
      shutdown_grace_ms: number;
      shutdown_delay_ms: number;
      session_idle_timeout_ms: number;
      max_sessions: number;
      max_sessions_per_identity?: number | undefined;
      session_handshake_timeout_ms: number;
      metrics: boolean;
      max_batch_length: number;
      max_json_depth: number;
      headers_timeout_ms: number;
      request_timeout_ms: number;
      keep_alive_timeout_ms: number;
      max_connections: number;
      allowed_hosts?: string[] | undefined;
      trusted_proxies: string[];
      client_address_header: 'x-forwarded-for' | 'forwarded';
      cors?: CorsSettings | undefined;
      tls?: TlsSettings | undefined;
      session_keys?: string[] | undefined;
      session_ttl_ms: number;
      redis_url?: string | undefined;
    }>();
    expectTypeOf<GatewayConfig>().toEqualTypeOf<{
      server: ServerSettings;
      single: boolean;
      servers: ServerConfig[];
      virtual_servers: VirtualServerConfig[];
      auth?: AuthConfig | undefined;
      rate_limit?: RateLimitConfig | undefined;
      audit?: AuditConfig | undefined;
      telemetry?: TelemetryConfig | undefined;
      tool_integrity?: ToolIntegrityConfig | undefined;
      warnings: string[];
    }>();
  });
});

describe('a single [upstream]', () => {
  it('is the only server, named "default" at "/", with every default filled in', () => {
    const config = parse('[upstream]\ntransport = "stdio"\ncommand = "echo"\n');
    expect(config.single).toBe(true);
    expect(config.warnings).toEqual([]);
    expect(config.servers).toEqual([
      {
        name: 'default',
        path_prefix: '/',
        transport: 'stdio',
        command: 'echo',
        args: [],
        env: {},
        ...STDIO_DEFAULTS,
        ...SERVER_DEFAULTS,
      },
    ]);
  });

  it('takes its own name, prefix and every field', () => {
    const config = parse(`
[upstream]
name = "main"
path_prefix = "/main/"
transport = "http"
url = "https://example.com/mcp"
headers = { Authorization = "Bearer x" }
strip_prefix = true
era = "modern"
timeout_ms = 1000
startup_timeout_ms = 2000
restart_backoff_ms = 100
restart_backoff_max_ms = 200
max_restarts = 0
`);
    expect(config.servers).toEqual([
      {
        name: 'main',
        path_prefix: '/main',
        transport: 'http',
        era: 'modern',
        url: 'https://example.com/mcp',
        headers: { Authorization: 'Bearer x' },
        strip_prefix: true,
        timeout_ms: 1000,
        startup_timeout_ms: 2000,
        restart_backoff_ms: 100,
        restart_backoff_max_ms: 200,
        max_restarts: 0,
        circuit_failure_threshold: 5,
        circuit_open_ms: 30_000,
        circuit_open_max_ms: 120_000,
      },
    ]);
  });

  it('needs a transport (or a command or url to infer it from)', () => {
    expect(errorsOf('[upstream]\nenv = { A = "1" }\n')).toEqual(['upstream.transport: required: "stdio" (with command), "http" or "sse" (with url)']);
    expect(parse('[upstream]\ncommand = "echo"\n').servers[0]?.transport).toBe('stdio');
    expect(parse('[upstream]\nurl = "http://localhost:9000/mcp"\n').servers[0]?.transport).toBe('http');
  });

  it('needs at least one upstream', () => {
    const expected = ['upstream: at least one upstream server is required'];
    expect(errorsOf('')).toEqual(expected);
    expect(errorsOf('[server]\nport = 1\n')).toEqual(expected);
    expect(errorsOf('[upstream]\n')).toEqual(expected);
    expect(errorsOf('[upstream]\nservers = []\n')).toEqual(expected);
  });
});

describe('[[upstream.servers]]', () => {
  it('need no [upstream] and keep file order', () => {
    const config = parse(`
[[upstream.servers]]
name = "b"
path_prefix = "/b"
transport = "sse"
url = "http://localhost:1/sse"

[[upstream.servers]]
name = "a"
path_prefix = "/a"
transport = "stdio"
command = "node"
args = ["server.js", ""]
cwd = "/srv"
env = { DEBUG = "1" }
`);
    expect(config.single).toBe(false);
    expect(config.warnings).toEqual([]);
    expect(config.servers).toEqual([
      {
        name: 'b',
        path_prefix: '/b',
        transport: 'sse',
        url: 'http://localhost:1/sse',
        headers: {},
        strip_prefix: false,
        ...SERVER_DEFAULTS,
      },
      {
        name: 'a',
        path_prefix: '/a',
        transport: 'stdio',
        command: 'node',
        args: ['server.js', ''],
        cwd: '/srv',
        env: { DEBUG: '1' },
        ...STDIO_DEFAULTS,
        ...SERVER_DEFAULTS,
      },
    ]);
  });

  it('require name and path_prefix', () => {
    expect(errorsOf('[[upstream.servers]]\ntransport = "stdio"\ncommand = "x"\n')).toEqual([
      'upstream.servers[0].name: required',
      'upstream.servers[0].path_prefix: required',
    ]);
  });

  it('refuse unknown keys in [upstream] and in entries, each at its own path', () => {
    expect(
      errorsOf(`
[upstream]
comand = "x"

[[upstream.servers]]
name = "a"
path_prefix = "/a"
url = "http://a"

[[upstream.servers]]
name = "b"
path_prefix = "/b"
url = "http://b"
strip_prefx = true
timeout = 5
`),
    ).toEqual(['upstream.servers[1].strip_prefx: unknown key', 'upstream.servers[1].timeout: unknown key', 'upstream.comand: unknown key']);
  });

  it('must be an array of tables', () => {
    expect(errorsOf('[upstream.servers]\nname = "a"\n')).toEqual(['upstream.servers: expected an array of tables: write each server as [[upstream.servers]]']);
  });

  it('warn about the [upstream] fields that are ignored, naming only those present', () => {
    const config = parse(`
[upstream]
transport = "stdio"
command = "echo"
args = ["x"]
name = "primary"
path_prefix = "/p"
timeout_ms = 5

[[upstream.servers]]
name = "a"
path_prefix = "/a"
url = "http://a"
`);
    expect(config.warnings).toEqual(['[upstream] transport, command, args, name, path_prefix are ignored because [[upstream.servers]] is set']);
    expect(config.servers.map((s) => s.name)).toEqual(['a']);
    expect(config.servers[0]?.timeout_ms).toBe(5);
    expect(parse('[upstream]\nurl = "http://x"\n[[upstream.servers]]\nname = "a"\npath_prefix = "/a"\nurl = "http://a"\n').warnings).toEqual([
      '[upstream] url is ignored because [[upstream.servers]] is set',
    ]);
  });
});

describe('inheritance from [upstream]', () => {
  const file = (servers: string) => `
[upstream]
env = { LOG = "debug", TOKEN = "t" }
cwd = "/work"
headers = { Authorization = "Bearer shared", X-Team = "core" }
strip_prefix = true
timeout_ms = 1000
startup_timeout_ms = 2000
restart_backoff_ms = 100
restart_backoff_max_ms = 800
max_restarts = 2
${servers}`;

  it('gives every server the defaults that apply to its transport', () => {
    const config = parse(
      file(`
[[upstream.servers]]
name = "child"
path_prefix = "/child"
command = "node"

[[upstream.servers]]
name = "remote"
path_prefix = "/remote"
url = "https://remote.example/mcp"
`),
    );
    const common = {
      era: 'auto',
      timeout_ms: 1000,
      startup_timeout_ms: 2000,
      restart_backoff_ms: 100,
      restart_backoff_max_ms: 800,
      max_restarts: 2,
      circuit_failure_threshold: 5,
      circuit_open_ms: 30_000,
      circuit_open_max_ms: 120_000,
    };
    expect(config.servers).toEqual([
      {
        name: 'child',
        path_prefix: '/child',
        transport: 'stdio',
        command: 'node',
        args: [],
        env: { LOG: 'debug', TOKEN: 't' },
        cwd: '/work',
        ...STDIO_DEFAULTS,
        ...common,
      },
      {
        name: 'remote',
        path_prefix: '/remote',
        transport: 'http',
        url: 'https://remote.example/mcp',
        headers: { Authorization: 'Bearer shared', 'X-Team': 'core' },
        strip_prefix: true,
        ...common,
      },
    ]);
  });

  it('replaces a table whole when a server sets its own: headers and env are never merged', () => {
    const config = parse(
      file(`
[[upstream.servers]]
name = "child"
path_prefix = "/child"
command = "node"
env = { ONLY = "mine" }

[[upstream.servers]]
name = "remote"
path_prefix = "/remote"
url = "https://remote.example/mcp"
headers = { X-Api-Key = "other" }
`),
    );
    expect(fieldsOf(config.servers[0]).env).toEqual({ ONLY: 'mine' });
    expect(fieldsOf(config.servers[1]).headers).toEqual({ 'X-Api-Key': 'other' });
  });

  it('lets an empty table switch an inherited table off', () => {
    const config = parse(file('[[upstream.servers]]\nname = "r"\npath_prefix = "/r"\nurl = "http://r"\nheaders = {}\n'));
    expect(fieldsOf(config.servers[0]).headers).toEqual({});
  });

  it('lets a server override each scalar default', () => {
    const config = parse(
      file(`
[[upstream.servers]]
name = "remote"
path_prefix = "/remote"
url = "https://remote.example/mcp"
strip_prefix = false
timeout_ms = 9
startup_timeout_ms = 8
restart_backoff_ms = 7
restart_backoff_max_ms = 70
max_restarts = 6
`),
    );
    expect(config.servers[0]).toMatchObject({
      strip_prefix: false,
      timeout_ms: 9,
      startup_timeout_ms: 8,
      restart_backoff_ms: 7,
      restart_backoff_max_ms: 70,
      max_restarts: 6,
    });
  });
});

describe('transport-specific fields', () => {
  it('require command for stdio and url for http and sse', () => {
    expect(
      errorsOf(`
[[upstream.servers]]
name = "a"
path_prefix = "/a"
transport = "stdio"

[[upstream.servers]]
name = "b"
path_prefix = "/b"
transport = "http"

[[upstream.servers]]
name = "c"
path_prefix = "/c"
transport = "sse"
`),
    ).toEqual([
      'upstream.servers[0].command: required for transport "stdio"',
      'upstream.servers[1].url: required for transport "http"',
      'upstream.servers[2].url: required for transport "sse"',
    ]);
  });

  it('refuse fields of the other transport set on the server itself', () => {
    expect(
      errorsOf(`
[[upstream.servers]]
name = "a"
path_prefix = "/a"
transport = "stdio"
command = "x"
url = "http://x"
headers = { A = "b" }
strip_prefix = true

[[upstream.servers]]
name = "b"
path_prefix = "/b"
transport = "sse"
url = "http://x"
command = "x"
args = ["y"]
env = { A = "b" }
cwd = "/tmp"
relay_roots = true
`),
    ).toEqual([
      'upstream.servers[0].url: not used by transport "stdio"',
      'upstream.servers[0].headers: not used by transport "stdio"',
      'upstream.servers[0].strip_prefix: not used by transport "stdio"',
      'upstream.servers[1].command: not used by transport "sse"',
      'upstream.servers[1].args: not used by transport "sse"',
      'upstream.servers[1].env: not used by transport "sse"',
      'upstream.servers[1].cwd: not used by transport "sse"',
      'upstream.servers[1].relay_roots: not used by transport "sse"',
    ]);
  });

  it('refuse fields of the other transport on a single [upstream] too', () => {
    expect(errorsOf('[upstream]\ntransport = "stdio"\ncommand = "x"\nurl = "http://x"\n')).toEqual(['upstream.url: not used by transport "stdio"']);
  });

  it('infer the transport from command or url, and ask for it when both are set', () => {
    expect(errorsOf('[[upstream.servers]]\nname = "a"\npath_prefix = "/a"\ncommand = "x"\nurl = "http://x"\n')).toEqual([
      'upstream.servers[0].transport: required when both command and url are set',
    ]);
  });

  it('refuse an unknown transport', () => {
    expect(errorsOf('[upstream]\ntransport = "websocket"\nurl = "http://x"\n')).toEqual(['upstream.transport: expected "stdio", "http" or "sse"']);
  });

  it('accept only absolute http(s) URLs without credentials', () => {
    const server = (url: string) => `[upstream]\ntransport = "http"\nurl = "${url}"\n`;
    for (const url of ['ftp://example.com', '/relative', 'example.com/mcp', 'http://', 'file:///etc/passwd', '']) {
      expect(errorsOf(server(url))).toEqual(['upstream.url: expected an absolute http:// or https:// URL']);
    }
    expect(errorsOf(server('https://user:pass@example.com/mcp'))).toEqual([
      'upstream.url: must not contain a user name or password; put credentials in headers',
    ]);
    expect(fieldsOf(parse(server('http://[::1]:8080/mcp?x=1')).servers[0]).url).toBe('http://[::1]:8080/mcp?x=1');
  });

  it('check header names and values', () => {
    expect(
      errorsOf(`
[upstream]
url = "http://x"
headers = { "Bad Name" = "v", Host = "evil", X-A = "line\\r\\nInjected: yes", x-dup = "1", X-Dup = "2" }
`),
    ).toEqual([
      'upstream.headers."Bad Name": not a valid HTTP header name',
      'upstream.headers.Host: is set by the gateway itself and cannot be configured',
      'upstream.headers.X-A: must not contain CR, LF or NUL (header injection)',
      'upstream.headers.X-Dup: set twice (header names are case-insensitive)',
    ]);
  });

  it('check env, args, command and cwd', () => {
    expect(
      errorsOf(`
[upstream]
command = ""
cwd = 5
args = ["ok", 1]
env = { "A=B" = "x", C = 2 }
`),
    ).toEqual([
      'upstream.command: expected a non-empty string',
      'upstream.args[1]: expected a string',
      'upstream.env.C: expected a string',
      'upstream.cwd: expected a non-empty string',
    ]);
    expect(errorsOf('[upstream]\ncommand = "x"\nenv = { "A=B" = "x" }\n')).toEqual(['upstream.env."A=B": not a valid environment variable name']);
    expect(errorsOf('[upstream]\ncommand = "x"\nargs = "-y"\n')).toEqual(['upstream.args: expected an array of strings']);
  });
});

describe('timeouts and restarts', () => {
  it('must be positive integers (max_restarts may be 0)', () => {
    expect(
      errorsOf(`
[upstream]
command = "x"
timeout_ms = 0
startup_timeout_ms = -5
restart_backoff_ms = 1.5
restart_backoff_max_ms = "30000"
max_restarts = -1
`),
    ).toEqual([
      'upstream.timeout_ms: expected a whole number of milliseconds from 1 to 2147483647',
      'upstream.startup_timeout_ms: expected a whole number of milliseconds from 1 to 2147483647',
      'upstream.restart_backoff_ms: expected a whole number of milliseconds from 1 to 2147483647',
      'upstream.restart_backoff_max_ms: expected a whole number of milliseconds from 1 to 2147483647',
      'upstream.max_restarts: expected an integer of at least 0',
    ]);
  });

  it('restart_backoff_max_ms may not be below restart_backoff_ms, blamed on the key the entry sets', () => {
    expect(errorsOf('[upstream]\ncommand = "x"\nrestart_backoff_ms = 40000\n')).toEqual([
      'upstream.restart_backoff_ms: must be at most restart_backoff_max_ms (30000)',
    ]);
    expect(errorsOf('[upstream]\ncommand = "x"\nrestart_backoff_max_ms = 100\n')).toEqual([
      'upstream.restart_backoff_max_ms: must be at least restart_backoff_ms (500)',
    ]);
    expect(
      errorsOf(`
[upstream]
restart_backoff_max_ms = 1000

[[upstream.servers]]
name = "a"
path_prefix = "/a"
command = "x"
restart_backoff_ms = 2000

[[upstream.servers]]
name = "b"
path_prefix = "/b"
command = "x"
`),
    ).toEqual(['upstream.servers[0].restart_backoff_ms: must be at most restart_backoff_max_ms (1000)']);
    expect(
      errorsOf(`
[upstream]
restart_backoff_ms = 1000
restart_backoff_max_ms = 100

[[upstream.servers]]
name = "a"
path_prefix = "/a"
command = "x"
`),
    ).toEqual(['upstream.restart_backoff_max_ms: must be at least restart_backoff_ms (1000)']);
  });
});

describe('server names', () => {
  const named = (...names: string[]) =>
    names.map((name, i) => `[[upstream.servers]]\nname = ${JSON.stringify(name)}\npath_prefix = "/s${i}"\ncommand = "x"\n`).join('\n');

  it('allow letters, digits, "-" and "_", 1 to 64 of them', () => {
    expect(parse(named('a', 'A-b_9', 'x'.repeat(64))).servers).toHaveLength(3);
    expect(errorsOf(named('', 'a b', 'a.b', 'x'.repeat(65), 'é'))).toEqual(
      [0, 1, 2, 3, 4].map((i) => `upstream.servers[${i}].name: must be 1 to 64 letters, digits, "-" or "_"`),
    );
  });

  it('finding 11: must be unique, and the message names the duplicated name', () => {
    expect(errorsOf(named('a', 'b', 'a', 'a'))).toEqual([
      'upstream.servers[2].name: same name "a" as upstream.servers[0]',
      'upstream.servers[3].name: same name "a" as upstream.servers[0]',
    ]);
  });
});

describe('stdio isolation settings', () => {
  it('are inherited from [upstream] by stdio servers, and each server may set its own', () => {
    const config = parse(`
[upstream]
isolation = "session"
child_idle_ms = 1000
max_children = 4

[[upstream.servers]]
name = "a"
path_prefix = "/a"
command = "node"

[[upstream.servers]]
name = "b"
path_prefix = "/b"
command = "node"
isolation = "shared"
`);
    expect(config.servers.map(fieldsOf).map((s) => [s.name, s.isolation, s.child_idle_ms, s.max_children])).toEqual([
      ['a', 'session', 1000, 4],
      ['b', 'shared', 1000, 4],
    ]);
  });

  it('refuses an unknown mode, a zero max_children, and isolation on an http server, each at its key', () => {
    expect(
      errorsOf(`
[[upstream.servers]]
name = "a"
path_prefix = "/a"
command = "node"
isolation = "per-user"
max_children = 0

[[upstream.servers]]
name = "b"
path_prefix = "/b"
url = "http://127.0.0.1:1/mcp"
isolation = "identity"
`),
    ).toEqual([
      'upstream.servers[0].isolation: expected "identity", "session" or "shared"',
      'upstream.servers[0].max_children: expected an integer from 1 to 100000',
      'upstream.servers[1].isolation: not used by transport "http"',
    ]);
  });
});
