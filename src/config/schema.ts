/**
 * The config file's schema: the one source of both the TypeScript types of the configuration and
 * its validation. load.ts parses TOML, replaces `${VAR}` references, runs these schemas and
 * resolves [upstream] inheritance; everything else in the gateway only sees the resolved
 * `GatewayConfig` at the bottom of this file.
 *
 * Every message set here is written for the person editing the file: it never contains the value
 * that was checked, because that value may have come from a secret in the environment.
 */
import { z } from 'zod';
import { parseProxyEntry } from '../http/client-address.js';
import { parseHostPattern, parseOriginPattern } from '../http/origin-match.js';
import {
  MAX_TIMER_MS,
  SERVER_NAME_PATTERN,
  RESERVED_PATHS,
  GATEWAY_MANAGED_HEADERS,
  IDENTITY_ID_PATTERN,
  KEY_PREFIX_PATTERN,
  ARGON2ID_PHC_PATTERN,
  LEGACY_SHA256_PATTERN,
  ASYMMETRIC_JWT_ALGORITHMS,
  HMAC_JWT_ALGORITHMS,
  FINGERPRINT_SHA256_PATTERN,
} from './constants.js';

// Re-exported for load.ts and the tests, which see the configuration whole.
export * from './constants.js';

/** An error option that says "required" for a missing key and `text` for any other failure. */
function problem(text: string): (issue: { input?: unknown }) => string {
  return (issue) => (issue.input === undefined ? 'required' : text);
}

/** An integer within [min, max], with one message for every way a value can miss that. */
function integer(min: number, max: number, unit?: 'milliseconds' | 'bytes') {
  const what = unit ? `a whole number of ${unit}` : 'an integer';
  const range = max >= Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`;
  const error = problem(`expected ${what} ${range}`);
  return z.int({ error }).min(min, { error }).max(max, { error });
}

const milliseconds = (min: number) => integer(min, MAX_TIMER_MS, 'milliseconds');

/** A non-empty string without NUL, which no OS accepts in a command, argument or path. */
function text() {
  const error = problem('expected a non-empty string');
  return z
    .string({ error })
    .min(1, { error })
    .refine((value) => !value.includes('\0'), { error: 'must not contain a NUL character' });
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** HTTP headers sent to one upstream: its credentials, so validated before anything connects. */
const headerTableSchema = z
  .record(z.string(), z.string({ error: problem('expected a string') }), {
    error: problem('expected a table of header names to strings'),
  })
  .superRefine((headers, ctx) => {
    const seen = new Set<string>();
    for (const [name, value] of Object.entries(headers)) {
      const lower = name.toLowerCase();
      if (!HEADER_NAME.test(name)) {
        ctx.addIssue({ code: 'custom', path: [name], message: 'not a valid HTTP header name' });
      } else if ((GATEWAY_MANAGED_HEADERS as readonly string[]).includes(lower)) {
        ctx.addIssue({ code: 'custom', path: [name], message: 'is set by the gateway itself and cannot be configured' });
      } else if (seen.has(lower)) {
        // Header names are case-insensitive; which of two spellings would be sent is not obvious.
        ctx.addIssue({ code: 'custom', path: [name], message: 'set twice (header names are case-insensitive)' });
      }
      seen.add(lower);
      if (/[\r\n\0]/.test(value)) {
        ctx.addIssue({ code: 'custom', path: [name], message: 'must not contain CR, LF or NUL (header injection)' });
      }
    }
  });

/** Environment variables given to a stdio child. */
const envTableSchema = z
  .record(z.string(), z.string({ error: problem('expected a string') }), {
    error: problem('expected a table of variable names to strings'),
  })
  .superRefine((env, ctx) => {
    for (const [name, value] of Object.entries(env)) {
      if (name === '' || name.includes('=') || name.includes('\0')) {
        ctx.addIssue({ code: 'custom', path: [name], message: 'not a valid environment variable name' });
      }
      if (value.includes('\0')) {
        ctx.addIssue({ code: 'custom', path: [name], message: 'must not contain a NUL character' });
      }
    }
  });

/** The transports an upstream can speak. */
export const transportSchema = z.enum(['stdio', 'http', 'sse'], {
  error: problem('expected "stdio", "http" or "sse"'),
});

/** An upstream's transport. */
export type Transport = z.output<typeof transportSchema>;

/**
 * Which era of MCP the gateway speaks to an upstream (docs/eras.md): found out by probing with
 * `server/discover` ("auto"), or fixed, with no probe. sse servers are legacy whatever it says.
 */
export const eraSettingSchema = z.enum(['auto', 'legacy', 'modern'], {
  error: problem('expected "auto", "legacy" or "modern"'),
});

/** A server's `era` setting. */
export type EraSetting = z.output<typeof eraSettingSchema>;

const SEGMENT = /^[A-Za-z0-9._~!$&'()*+,;=:@%-]+$/;
const UNRESERVED = /^[A-Za-z0-9._~-]$/;

/**
 * Checks a path prefix and returns its normal form (no trailing '/', except for "/" itself), or
 * why it is refused. Exported for tests and for anyone who needs to compare prefixes the same way.
 */
export function normalisePathPrefix(raw: string): { prefix: string } | { error: string } {
  if (!raw.startsWith('/')) return { error: 'must start with "/"' };
  if (raw.includes('//')) return { error: 'must not contain an empty segment ("//")' };
  const prefix = raw.length > 1 && raw.endsWith('/') ? raw.slice(0, -1) : raw;
  if (prefix === '/') return { prefix };
  for (const segment of prefix.slice(1).split('/')) {
    if (segment === '.' || segment === '..') return { error: 'must not contain "." or ".." segments' };
    if (!SEGMENT.test(segment)) {
      return { error: `may only contain letters, digits and -._~!$&'()*+,;=:@% between the "/"` };
    }
    const escapes = segment.split('%').slice(1);
    for (const escape of escapes) {
      if (!/^[0-9A-Fa-f]{2}/.test(escape)) return { error: 'has a "%" that does not start a %XX escape' };
      const char = String.fromCharCode(Number.parseInt(escape.slice(0, 2), 16));
      // The router matches raw paths: an escaped letter, dot or slash would be a second spelling
      // of a path that the router and the upstream could disagree about.
      if (UNRESERVED.test(char) || char === '/' || char === '\\' || char < ' ' || char === '\x7f') {
        return { error: 'must not percent-encode letters, digits, "-._~", "/", "\\" or control characters' };
      }
    }
  }
  for (const reserved of RESERVED_PATHS) {
    if (prefix === reserved || prefix.startsWith(`${reserved}/`)) {
      const why = reserved === '/mcp' ? 'the by-name endpoints /mcp and /mcp/:server_name' : "the gateway's own endpoint";
      return { error: `"${reserved}" and the paths below it are reserved for ${why}` };
    }
  }
  return { prefix };
}

/** A path prefix, checked and normalised (see normalisePathPrefix). */
const pathPrefixSchema = z.string({ error: problem('expected a string starting with "/"') }).transform((raw, ctx) => {
  const result = normalisePathPrefix(raw);
  if ('error' in result) {
    ctx.issues.push({ code: 'custom', message: result.error, input: raw });
    return z.NEVER;
  }
  return result.prefix;
});

/** True for an absolute http: or https: URL without user name or password. */
function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '';
  } catch {
    return false;
  }
}

const urlSchema = z
  .string({ error: problem('expected an absolute http:// or https:// URL') })
  .refine(isHttpUrl, { error: 'expected an absolute http:// or https:// URL' })
  // fetch refuses URLs with credentials, and URLs end up in logs: credentials belong in headers.
  .refine((value) => !isHttpUrl(value) || (new URL(value).username === '' && new URL(value).password === ''), {
    error: 'must not contain a user name or password; put credentials in headers',
  });

/**
 * The fields of one upstream server, each in its plainest form. The file's entries (all optional,
 * see below) and the resolved ServerConfig (defaults filled in) are both built from this shape.
 */
const serverFields = {
  /** Unique name: `/mcp/<name>` reaches it; also used in logs, audit and metrics. 1-64 of [A-Za-z0-9_-]. */
  name: z
    .string({ error: problem('expected a string') })
    .regex(SERVER_NAME_PATTERN, {
      error: 'must be 1 to 64 letters, digits, "-" or "_"',
    })
    .describe(
      'Unique name: `POST /mcp/<name>` reaches the server; used in logs and metrics. 1-64 of `A-Z a-z 0-9 - _`. Default for a single [upstream]: "default".',
    ),
  /** Requests under this path (whole segments) go to this server. Starts with '/'; stored without trailing '/'. */
  path_prefix: pathPrefixSchema.describe('Requests under this path (whole segments) go to this server. Default for a single [upstream]: "/".'),
  /** How the gateway talks to the server: a child process over stdio, streamable HTTP, or legacy SSE. */
  transport: transportSchema.describe('Child process over stdio, streamable HTTP, or legacy SSE. Inferred when absent: stdio with `command`, http with `url`.'),
  /**
   * The server's MCP era: "auto" probes it (`server/discover`) and remembers the answer for a day;
   * "legacy" (initialize, sessions) and "modern" (2026-07-28, stateless) skip the probe. An sse
   * server is always legacy: "modern" is an error there.
   */
  era: eraSettingSchema.describe(
    'Which era of MCP the server speaks: "auto" asks it (`server/discover`) and remembers the answer for a day; "legacy" (initialize, sessions) and "modern" (2026-07-28, stateless) skip the question. sse is always legacy.',
  ),
  /** stdio: the program to start. */
  command: text().describe('stdio (required): the program to start.'),
  /** stdio: its arguments. */
  args: z
    .array(
      z.string({ error: problem('expected a string') }).refine((value) => !value.includes('\0'), {
        error: 'must not contain a NUL character',
      }),
      { error: problem('expected an array of strings') },
    )
    .describe('stdio: its arguments.'),
  /** stdio: the child's environment variables (the child does not inherit the gateway's environment wholesale). */
  env: envTableSchema.describe("stdio: the child's environment variables."),
  /** stdio: the child's working directory, passed to the OS as written. */
  cwd: text().describe("stdio: the child's working directory, passed to the OS as written."),
  /**
   * stdio: relay MCP roots between clients and the child (declare the roots capability to it).
   * Off by default: the child is shared, so the roots one client announces become every
   * client's (server-filesystem replaces its allowed directories with them).
   */
  relay_roots: z
    .boolean({ error: problem('expected true or false') })
    .describe(
      "stdio: relay MCP roots between clients and the child. Off by default: with a child shared by several clients, the roots one client announces would become every client's.",
    ),
  /**
   * stdio: who shares a child. "identity" (default): one child per identity, started on its
   * first request, so no caller sees another's tasks, logs or server requests; "session": one
   * child per client session (servers that keep per-connection state, such as a browser);
   * "shared": one child for everyone.
   */
  isolation: z
    .enum(['identity', 'session', 'shared'], { error: problem('expected "identity", "session" or "shared"') })
    .describe('stdio: who shares a child process: one per identity, one per client session, or one for everybody.'),
  /** stdio, isolation "identity" or "session": a child with no session and no call for this long ends, in ms. */
  child_idle_ms: milliseconds(1).describe(
    'stdio, with isolation "identity" or "session": a child with no session and no request in flight for this long ends, in ms.',
  ),
  /** stdio, isolation "identity" or "session": children at most; beyond, requests get 503 with Retry-After. */
  max_children: integer(1, 100_000).describe('stdio, with isolation "identity" or "session": the most children of this server at once.'),
  /** http / sse: the server's endpoint. */
  url: urlSchema.describe('http, sse (required): absolute `http://` or `https://` URL of the server.'),
  /** http / sse: headers sent with every request to this server (its credentials); never the client's. */
  headers: headerTableSchema.describe('http, sse: headers sent with every request to this server (its credentials).'),
  /** http / sse: drop the matched prefix from the path appended to `url`. */
  strip_prefix: z.boolean({ error: problem('expected true or false') }).describe('http, sse: drop the matched prefix from the path appended to `url`.'),
  /** Tools of this server whose calls a person must approve first (an elicitation to the client; docs/tool-integrity.md). */
  require_approval: z
    .array(text(), { error: problem('expected an array of tool names or globs') })
    .describe('Tools (names or globs with `*` and `?`) whose every call a person must approve first, through an elicitation to the client.'),
  /** Deadline of one request to this server, in ms. */
  timeout_ms: milliseconds(1).describe('Deadline of one request to the server, and the longest a client waits for a server that does not answer, in ms.'),
  /** Deadline for spawning and initializing a stdio child, or connecting an SSE stream, in ms. */
  startup_timeout_ms: milliseconds(1).describe(
    'Deadline to spawn and initialize a stdio child, or connect an SSE stream, in ms; a client never waits for it longer than `timeout_ms`.',
  ),
  /** First delay before restarting a failed stdio child, in ms; doubled per consecutive failure. */
  restart_backoff_ms: milliseconds(1).describe('First delay before restarting a failed stdio child, in ms; doubled per consecutive failure.'),
  /** The longest restart delay, in ms. */
  restart_backoff_max_ms: milliseconds(1).describe('Longest restart delay, in ms (at least `restart_backoff_ms`).'),
  /** Consecutive quick failures after which the server is reported as crash_loop. */
  max_restarts: integer(0, Number.MAX_SAFE_INTEGER).describe('Consecutive quick failures after which the server is reported as `crash_loop`.'),
  /**
   * Consecutive failed requests (connection refused or lost, timeout, HTTP 5xx, an answer that is
   * not MCP; for stdio: timeouts) after which the server's circuit opens: requests then fail at
   * once with 503 instead of waiting for a server that is down. 0 = no circuit breaker.
   */
  circuit_failure_threshold: integer(0, Number.MAX_SAFE_INTEGER).describe(
    "Consecutive failed requests after which the server's circuit opens and requests fail fast with 503; 0 = no circuit breaker.",
  ),
  /** How long an open circuit refuses requests before one trial request is let through, in ms. */
  circuit_open_ms: milliseconds(1).describe('How long an open circuit refuses requests before one trial request goes through, in ms.'),
  /** The longest open period, in ms: each failed trial doubles the period up to this. */
  circuit_open_max_ms: milliseconds(1).describe('Longest open period, in ms: each failed trial doubles it up to this (at least `circuit_open_ms`).'),
};

/**
 * Every server field, all optional: the shape of `[upstream]` (the single server, or the defaults
 * of the others) before resolution.
 */
export const upstreamFieldsSchema = z.strictObject(serverFields).partial();

/** One `[[upstream.servers]]` entry: name and path_prefix are required there. */
export const serverEntrySchema = upstreamFieldsSchema.extend({
  name: serverFields.name,
  path_prefix: serverFields.path_prefix,
});

/** One entry of MCP_GUARD_ADDITIONAL_SERVERS: its key is its name, so a `name` field is refused. */
export const additionalServerSchema = upstreamFieldsSchema.extend({
  /** Not allowed: the JSON key is the name. */
  name: z.never({ error: 'not allowed here: the key of the entry is its name' }).optional(),
  path_prefix: serverFields.path_prefix,
});

/** `[upstream]`: the single server, or the defaults inherited by `[[upstream.servers]]`. */
export const upstreamSchema = upstreamFieldsSchema.extend({
  /** The servers behind the gateway, routed by name and path prefix. */
  servers: z
    .array(serverEntrySchema, {
      error: problem('expected an array of tables: write each server as [[upstream.servers]]'),
    })
    .optional()
    .describe('The servers behind the gateway, one [[upstream.servers]] table each; the keys of [upstream] are their defaults.'),
});

/** The listener and its limits; every field has a default. */
export const serverSettingsSchema = z.strictObject({
  /** Interface to listen on. */
  host: text().default('127.0.0.1').describe('Interface to listen on.'),
  /** TCP port to listen on; 0 picks a free one. */
  port: integer(0, 65_535).default(3000).describe('TCP port; 0 picks a free one.'),
  /** Largest request body accepted, in bytes; larger requests get 413. */
  max_request_size: integer(1, Number.MAX_SAFE_INTEGER, 'bytes').default(1_048_576).describe('Largest request body in bytes (413 above it).'),
  /** Reload the config when its file changes (besides SIGHUP). */
  watch_config: z
    .boolean({ error: problem('expected true or false') })
    .default(false)
    .describe('Reload the config when its file changes, as SIGHUP does (docs/operations.md, "Reload").'),
  /** On SIGTERM/SIGINT, how long in-flight requests may take to finish, in ms. */
  shutdown_grace_ms: milliseconds(0).default(10_000).describe('On SIGTERM/SIGINT, how long in-flight requests may take to finish, in ms.'),
  /**
   * On SIGTERM/SIGINT, how long the gateway goes on serving with /ready at 503 before it stops
   * accepting, in ms: the time a load balancer's health check needs to take it out. Answers in
   * that time carry `Connection: close`. 0: stop accepting at once.
   */
  shutdown_delay_ms: milliseconds(0)
    .default(0)
    .describe(
      'On SIGTERM/SIGINT, how long to go on serving (with /ready at 503 and `Connection: close` on every answer) before the graceful stop, in ms: time for the load balancer to take this replica out. 0: stop at once.',
    ),
  /** A client session without requests for this long is closed, in ms. */
  session_idle_timeout_ms: milliseconds(1).default(1_800_000).describe('A client session without requests for this long is closed, in ms.'),
  /** Most client sessions open at once; further `initialize` requests are refused. */
  max_sessions: integer(1, Number.MAX_SAFE_INTEGER).default(10_000).describe('Most client sessions open at once (then 503 with `Retry-After`).'),
  /**
   * Most client sessions one identity may have open at once; its further `initialize` requests
   * get 429. Absent: a tenth of max_sessions (at least 1). Not applied to the anonymous identity
   * (no authentication: every client is that one identity, and max_sessions bounds them).
   */
  max_sessions_per_identity: integer(1, Number.MAX_SAFE_INTEGER)
    .optional()
    .describe(
      'Most client sessions one identity may have open at once (then 429 with `Retry-After`); not applied without authentication. Default: a tenth of `max_sessions`.',
    ),
  /**
   * A session whose client sends nothing after its `initialize` (not even
   * `notifications/initialized`) for this long is closed, with its upstream session, in ms.
   */
  session_handshake_timeout_ms: milliseconds(1)
    .default(30_000)
    .describe(
      'A session whose client sends nothing after its `initialize` (not even `notifications/initialized`) is closed after this, with its upstream session, in ms.',
    ),
  /** Collect Prometheus metrics and serve GET /metrics. */
  metrics: z
    .boolean({ error: problem('expected true or false') })
    .default(true)
    .describe('Collect Prometheus metrics and serve `GET /metrics` (false: no route, nothing counted).'),
  /**
   * Most messages in one JSON-RPC batch; a longer batch is refused (400, -32600). Each message
   * may cost an upstream request, so an unbounded batch would let one small POST fan out into
   * thousands of them.
   */
  max_batch_length: integer(1, Number.MAX_SAFE_INTEGER).default(100).describe('Most messages in one JSON-RPC batch (400 above it).'),
  /**
   * Deepest nesting of arrays and objects in a request body; deeper is refused (400, -32600)
   * before the body is parsed. At most 1000: past a few thousand levels JSON.stringify (which
   * forwards a request) overflows the stack.
   */
  max_json_depth: integer(1, 1000).default(64).describe('Deepest nesting of arrays and objects in a body (400 above it).'),
  /** Time a client has to send the request line and headers, in ms (slowloris: then 408 and the connection closes). */
  headers_timeout_ms: milliseconds(1).default(10_000).describe('Time a client has to send the request line and headers, in ms (408 after it).'),
  /** Time a client has to send the whole request, body included, in ms (then 408). Responses and streams are not limited by it. */
  request_timeout_ms: milliseconds(1).default(30_000).describe('Time a client has to send the whole request, body included, in ms (408 after it).'),
  /** An idle keep-alive connection is closed after this, in ms; above the usual 60 s idle timeout of load balancers. */
  keep_alive_timeout_ms: milliseconds(1).default(72_000).describe('An idle keep-alive connection is closed after this, in ms.'),
  /** Most client connections open at once; further connections are closed as they arrive. */
  max_connections: integer(1, Number.MAX_SAFE_INTEGER).default(20_000).describe('Most client connections open at once.'),
});

/** The resolved `[server]` settings, with the Host and browser-origin keys of serverSchema (below). */
export type ServerSettings = z.output<typeof serverSchema>;

/** A tool name pattern: `*` matches any run of characters, `?` one character. */
const toolGlobSchema = text();

/** A list of server names; that each names a configured server is checked after resolution. */
const serverListSchema = z.array(z.string({ error: problem('expected a string') }).regex(SERVER_NAME_PATTERN, { error: 'not a valid server name' }), {
  error: problem('expected an array of server names'),
});

/** One `[[auth.api_keys]]` entry. */
export const apiKeySchema = z.strictObject({
  /** The identity's id in logs, audit lines and metrics. Unique. */
  id: z
    .string({ error: problem('expected a string') })
    .regex(IDENTITY_ID_PATTERN, {
      error: 'must be 1 to 128 letters, digits or ._@:+-',
    })
    .describe('The identity in logs, audit and metrics: 1-128 of `A-Z a-z 0-9 . _ @ : + -`, unique.'),
  /** argon2id PHC string (`mcp-guard hash-key`), or the earlier gateway's base64 SHA-256 (deprecated). */
  key_hash: z
    .string({ error: problem('expected a string') })
    .refine((v) => ARGON2ID_PHC_PATTERN.test(v) || LEGACY_SHA256_PATTERN.test(v), {
      error: 'expected an argon2id hash ($argon2id$v=19$...) as printed by `mcp-guard hash-key`, or a base64 SHA-256 hash',
    })
    .describe("The key's hash: an argon2id PHC string (`mcp-guard hash-key`), or a base64 SHA-256 (deprecated)."),
  /**
   * The key's first 12 characters (`mcp_` and 8 more), printed by `mcp-guard keygen`. Not secret:
   * it lets the gateway find the one hash to check instead of trying every key's.
   */
  key_prefix: z
    .string({ error: problem('expected a string') })
    .regex(KEY_PREFIX_PATTERN, {
      error: 'expected "mcp_" and 8 lowercase letters or digits, as printed by `mcp-guard keygen`',
    })
    .optional()
    .describe('Lookup hint printed by `mcp-guard keygen`: `mcp_` and 8 of `a-z 0-9`. Not secret.'),
  /** Tool name globs this identity may list and call; absent or empty = every tool. */
  allowed_tools: z
    .array(toolGlobSchema, { error: problem('expected an array of tool names or globs') })
    .optional()
    .describe('Tools this key may list and call (names or globs with `*` and `?`); absent: every tool.'),
  /** The only upstream servers this identity may reach; absent = all. */
  servers: serverListSchema.optional().describe('The only servers this key may reach; each must be configured. Absent: every server.'),
  /** Tools whose every call by this key a person must approve first (an elicitation to the client). */
  require_approval: z
    .array(toolGlobSchema, { error: problem('expected an array of tool names or globs') })
    .optional()
    .describe(
      'Tools (names or globs, `"server:glob"` for one server) whose every call by this key a person must approve first, through an elicitation to the client.',
    ),
  /**
   * This key's own requests per second, instead of `[rate_limit] requests_per_second` (same
   * window; docs/rate-limits.md). Needs an enabled `[rate_limit]`. Bounded like every other rate.
   */
  rate_limit: z
    .number({ error: problem('expected a number of requests per second') })
    .positive({ error: 'must be above 0' })
    .max(1_000_000, { error: 'must be at most 1000000' })
    .optional()
    .describe("This key's requests per second, instead of [rate_limit] requests_per_second (needs [rate_limit])."),
});

/** One `[[auth.api_keys]]` entry as validated. */
export type ApiKeyConfig = z.output<typeof apiKeySchema>;

/**
 * One `[[auth.client_certs]]` entry: a client certificate (verified against
 * `[server.tls] client_ca_path`) that is an identity, with the policy of an API key. It names the
 * certificate by exactly one of subject_cn or fingerprint_sha256.
 */
export const clientCertSchema = z
  .strictObject({
    /** The identity's id in logs, audit lines and metrics. Unique among client_certs and api_keys. */
    id: apiKeySchema.shape.id.describe('The identity in logs, audit and metrics: 1-128 of `A-Z a-z 0-9 . _ @ : + -`, unique among client_certs and api_keys.'),
    /** The certificate's subject common name (CN), compared exactly. */
    subject_cn: text().optional().describe("The certificate's subject CN, compared exactly. Set this or fingerprint_sha256."),
    /** The SHA-256 fingerprint of the certificate (DER), hex, ":" separators optional, any case. */
    fingerprint_sha256: z
      .string({ error: problem('expected a string') })
      .regex(FINGERPRINT_SHA256_PATTERN, { error: 'expected 64 hex digits, optionally as 32 ":"-separated pairs' })
      .optional()
      .describe("The certificate's SHA-256 fingerprint: 64 hex digits, `:` separators optional. Set this or subject_cn."),
    allowed_tools: apiKeySchema.shape.allowed_tools.describe('Tools this certificate may list and call (names or globs with `*` and `?`); absent: every tool.'),
    servers: apiKeySchema.shape.servers.describe('The only servers it may reach; each must be configured. Absent: every server.'),
    rate_limit: apiKeySchema.shape.rate_limit.describe('Its requests per second, instead of [rate_limit] requests_per_second (needs [rate_limit]).'),
  })
  .superRefine((entry, ctx) => {
    if (entry.subject_cn === undefined && entry.fingerprint_sha256 === undefined) {
      ctx.addIssue({ code: 'custom', path: [], message: 'set subject_cn or fingerprint_sha256 (the certificate this identity is)' });
    } else if (entry.subject_cn !== undefined && entry.fingerprint_sha256 !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['fingerprint_sha256'], message: 'set subject_cn or fingerprint_sha256, not both' });
    }
  });

/** One `[[auth.client_certs]]` entry as validated. */
export type ClientCertConfig = z.output<typeof clientCertSchema>;

/** `[auth.jwt]`: bearer JWTs, verified with a shared secret or a JWKS. */
export const jwtSchema = z
  .strictObject({
    /** "simple": HMAC with `secret`; "jwks": the public keys published at `jwks_url`. */
    mode: z
      .enum(['simple', 'jwks'], { error: problem('expected "simple" or "jwks"') })
      .describe('"simple": an HMAC secret; "jwks": the public keys published at `jwks_url`.'),
    /** simple: the shared secret (put it in the environment: `secret = "${JWT_SECRET}"`). At least 32 bytes. */
    secret: z
      .string({ error: problem('expected a string') })
      .optional()
      .describe('simple (required): the HMAC secret, at least 32 bytes. Put it in the environment: `secret = "${JWT_SECRET}"`.'),
    /** jwks: where the key set is published. https, or http with a warning. */
    jwks_url: urlSchema.optional().describe('jwks (required): where the key set is published.'),
    /** Accepted `alg` values; default HS256 (simple) or every asymmetric algorithm (jwks). */
    algorithms: z
      .array(
        z.enum([...HMAC_JWT_ALGORITHMS, ...ASYMMETRIC_JWT_ALGORITHMS], {
          error: problem('expected a JWS algorithm such as "RS256", "ES256" or "HS256" ("none" is never accepted)'),
        }),
        {
          error: problem('expected an array of algorithm names'),
        },
      )
      .min(1, { error: 'must list at least one algorithm' })
      .optional()
      .describe('Accepted `alg` values. Default: ["HS256"] (simple) or every asymmetric algorithm (jwks).'),
    /** jwks: how long a fetched key set is used before it is fetched again, in seconds. */
    cache_duration_secs: integer(1, 86_400).default(600).describe('jwks: how long a fetched key set is used, in seconds.'),
    /** Required `iss`. */
    issuer: text().optional().describe('Required `iss`.'),
    /** Required `aud` (one of them, when a list). */
    audience: z
      .union([text(), z.array(text()).min(1)], { error: problem('expected a string or an array of strings') })
      .optional()
      .describe('Required `aud` (one of them, when a list).'),
    /** The claim that names the user (the identity id). */
    user_id_claim: text().default('sub').describe('The claim that names the user (the identity id).'),
    /** The claim with the scopes: a space-separated string or an array of strings. */
    scopes_claim: text().default('scope').describe('The claim with the scopes: a space-separated string or an array of strings.'),
    /**
     * The claim listing the upstream servers the token may reach (array or space-separated). When
     * set, a token without it reaches no server; when unset, tokens reach every server.
     */
    servers_claim: text().optional().describe('The claim listing the servers a token may reach; when set, a token without it reaches no server.'),
    /** Clock skew tolerated on exp, nbf and iat, in seconds. */
    leeway_secs: integer(0, 3_600).default(30).describe('Clock skew allowed on `exp`, `nbf`, `iat`, in seconds.'),
    /** Tools whose every call by a JWT identity a person must approve first (an elicitation to the client). */
    require_approval: z
      .array(toolGlobSchema, { error: problem('expected an array of tool names or globs') })
      .optional()
      .describe(
        'Tools (names or globs, `"server:glob"` for one server) whose every call by a JWT identity a person must approve first, through an elicitation to the client.',
      ),
    /** Scope -> tools (names or globs); "*" = every tool. No mapping = every tool for every token. */
    scope_tool_mapping: z
      .record(z.string(), z.array(toolGlobSchema, { error: problem('expected an array of tool names or globs') }), {
        error: problem('expected a table of scopes to arrays of tools'),
      })
      .optional()
      .describe('Scope -> tools (names or globs, "*" = all). No mapping: every tool for every token.'),
    /** Published in /.well-known/oauth-protected-resource: where clients get tokens. */
    authorization_servers: z
      .array(urlSchema, { error: problem('expected an array of URLs') })
      .optional()
      .describe('Published in the protected resource metadata (/.well-known/oauth-protected-resource): where clients get tokens.'),
  })
  .superRefine((jwt, ctx) => {
    const hmac = (alg: string) => (HMAC_JWT_ALGORITHMS as readonly string[]).includes(alg);
    if (jwt.mode === 'simple') {
      if (jwt.secret === undefined) ctx.addIssue({ code: 'custom', path: ['secret'], message: 'required for mode "simple"' });
      else if (Buffer.byteLength(jwt.secret) < 32) {
        ctx.addIssue({ code: 'custom', path: ['secret'], message: 'must be at least 32 bytes (256 bits) long' });
      }
      if (jwt.jwks_url !== undefined) ctx.addIssue({ code: 'custom', path: ['jwks_url'], message: 'not used by mode "simple"' });
      jwt.algorithms?.forEach((alg, i) => {
        if (!hmac(alg)) ctx.addIssue({ code: 'custom', path: ['algorithms', i], message: 'mode "simple" verifies HS256, HS384 or HS512 only' });
      });
    } else {
      if (jwt.jwks_url === undefined) ctx.addIssue({ code: 'custom', path: ['jwks_url'], message: 'required for mode "jwks"' });
      if (jwt.secret !== undefined) ctx.addIssue({ code: 'custom', path: ['secret'], message: 'not used by mode "jwks"' });
      jwt.algorithms?.forEach((alg, i) => {
        // A public key used as an HMAC secret is the classic algorithm-confusion attack.
        if (hmac(alg)) ctx.addIssue({ code: 'custom', path: ['algorithms', i], message: 'HMAC algorithms cannot be used with a JWKS' });
      });
    }
  });

/** `[auth.jwt]` as validated. */
export type JwtConfig = z.output<typeof jwtSchema>;

/** `[auth]`: who may call the gateway: API keys, JWTs and client certificates. */
export const authSchema = z.strictObject({
  /** API keys (`Authorization: Bearer mcp_...`). */
  api_keys: z
    .array(apiKeySchema, { error: problem('expected an array of tables: write each key as [[auth.api_keys]]') })
    .optional()
    .describe('API keys (`Authorization: Bearer mcp_...`), one [[auth.api_keys]] table each.'),
  /** JWT bearer tokens. */
  jwt: jwtSchema.optional().describe('Bearer JWTs, verified with a shared secret or a JWKS.'),
  /** Client certificates that are identities (needs `[server.tls] client_ca_path`). */
  client_certs: z
    .array(clientCertSchema, { error: problem('expected an array of tables: write each as [[auth.client_certs]]') })
    .optional()
    .describe('Client certificates that are identities, one [[auth.client_certs]] table each (needs [server.tls] client_ca_path).'),
  /** Require credentials for GET /routes too (it lists every server). */
  protect_routes: z
    .boolean({ error: problem('expected true or false') })
    .default(false)
    .describe('`/routes` needs credentials too.'),
  /** Require credentials for GET /metrics too (server and tool names, traffic figures). */
  protect_metrics: z
    .boolean({ error: problem('expected true or false') })
    .default(false)
    .describe('`/metrics` needs credentials too.'),
  /**
   * This gateway's resource identifier for OAuth (RFC 9728 `resource`), e.g. "https://mcp.example.com".
   * Default: the scheme and Host of the request.
   */
  resource: urlSchema.optional().describe("This gateway's OAuth resource identifier (RFC 9728 `resource`). Default: the scheme and Host of the request."),
  /** Failed authentications one client address may make per minute before it is refused for a while. */
  max_failures_per_minute: integer(1, 1_000_000).default(30).describe('Failed authentications per client address per minute before it gets 429.'),
});

/** `[auth]` as validated. */
export type AuthConfig = z.output<typeof authSchema>;

/** A rate in requests per second: a positive number (fractions allowed, e.g. 0.5). */
const rate = () =>
  z
    .number({ error: problem('expected a number of requests per second') })
    .positive({ error: 'must be above 0' })
    .max(1_000_000, { error: 'must be at most 1000000' });

/** One `[[rate_limit.tool_limits]]` entry: a stricter limit on calls of some tools, per identity. */
export const toolLimitSchema = z.strictObject({
  /** Tool name or glob (`*`, `?`). */
  tool_pattern: text().describe('Tool name or glob (`*`, `?`), as in allowed_tools.'),
  requests_per_second: rate().describe('Calls per second of matching tools, per identity.'),
  burst_size: integer(1, 1_000_000).describe('Calls one identity may make at once before the rate applies.'),
});

/** `[rate_limit]`: per identity, per client address before authentication, and per tool. */
export const rateLimitSchema = z
  .strictObject({
    /** false keeps the section but switches limiting off. */
    enabled: z
      .boolean({ error: problem('expected true or false') })
      .default(true)
      .describe('false: no limiter at all (and no RateLimit headers).'),
    /** Sustained requests per second of one identity. */
    requests_per_second: rate().default(10).describe('Sustained requests per second of one identity.'),
    /** Requests one identity may make at once before the rate applies. */
    burst_size: integer(1, 1_000_000).default(20).describe('Requests one identity may make at once before the rate applies.'),
    /** Before authentication: requests per second from one client address (all of its identities together). */
    per_address_requests_per_second: rate().default(100).describe('Before authentication: requests per second from one client address.'),
    per_address_burst_size: integer(1, 1_000_000).default(200).describe('Before authentication: requests one client address may make at once.'),
    /** Where counters live: this process, or a Redis shared by every replica. */
    store: z
      .enum(['memory', 'redis'], { error: problem('expected "memory" or "redis"') })
      .default('memory')
      .describe('Where counters live: this process ("memory"), or a Redis shared by every replica ("redis").'),
    /** redis: where (redis://[user:password@]host:port[/db]; rediss:// for TLS). */
    redis_url: z
      .string({ error: problem('expected a redis:// URL') })
      .regex(/^rediss?:\/\/[^\s]+$/, { error: 'expected a redis:// or rediss:// URL' })
      .optional()
      .describe('redis (required): `redis://[user:password@]host:port[/db]`; `rediss://` for TLS.'),
    /** redis: how long one Redis command may take before the store counts as failed, in ms. */
    redis_timeout_ms: milliseconds(1).default(250).describe('redis: how long one Redis command may take before the store counts as failed, in ms.'),
    /** When the store fails: let the request through ("allow") or refuse it with 503 ("deny"). */
    on_store_error: z
      .enum(['allow', 'deny'], { error: problem('expected "allow" or "deny"') })
      .default('allow')
      .describe('When the store fails: let the request through ("allow") or answer 503 ("deny").'),
    /** Stricter limits on tools/call of some tools. */
    tool_limits: z
      .array(toolLimitSchema, { error: problem('expected an array of tables: write each as [[rate_limit.tool_limits]]') })
      .optional()
      .describe('Stricter limits on tools/call of some tools, one [[rate_limit.tool_limits]] table each.'),
  })
  .superRefine((limits, ctx) => {
    if (limits.store === 'redis' && limits.redis_url === undefined)
      ctx.addIssue({ code: 'custom', path: ['redis_url'], message: 'required for store "redis"' });
    if (limits.store === 'memory' && limits.redis_url !== undefined)
      ctx.addIssue({ code: 'custom', path: ['redis_url'], message: 'not used by store "memory"' });
  });

/** `[rate_limit]` as validated. */
export type RateLimitConfig = z.output<typeof rateLimitSchema>;

/** One `[[audit.redaction_rules]]` entry: every match of `pattern` in an audit line is replaced. */
export const redactionRuleSchema = z.strictObject({
  name: text().describe("The rule's name, in error messages."),
  /** A JavaScript regular expression (applied with the g flag). */
  pattern: z
    .string({ error: problem('expected a regular expression') })
    .refine(
      (source) => {
        try {
          new RegExp(source, 'g');
          return source.length > 0;
        } catch {
          return false;
        }
      },
      { error: 'not a valid regular expression' },
    )
    // A pattern that matches "" would put the replacement between every two characters of a line.
    .refine(
      (source) => {
        try {
          return source.length === 0 || !new RegExp(source).test('');
        } catch {
          return true;
        }
      },
      { error: 'must not match the empty string' },
    )
    .describe('A JavaScript regular expression (applied with the g flag); every match in an audit line is replaced.'),
  replacement: z
    .string({ error: problem('expected a string') })
    .default('[REDACTED]')
    .describe('What a match becomes; `$&` and `$1` refer to the match.'),
});

/** The server-side encryption an archived object asks for (S3's `x-amz-server-side-encryption`). */
export const S3_SERVER_SIDE_ENCRYPTIONS = ['AES256', 'aws:kms'] as const;

/** S3's bucket naming rules (3-63 of lower-case letters, digits, '.', '-'; a letter or digit at each end). */
const S3_BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** Whether `text` has a control character (C0 or DEL), which an object key must not hold. */
function hasControlCharacter(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x20 || code === 0x7f) return true;
  }
  return false;
}

/**
 * `[audit.s3]`: every rotated audit file uploaded to S3 or an S3-compatible store, then deleted
 * locally (src/observability/audit/s3-archive.ts, docs/audit.md "Archive to S3"). Credentials are
 * never configured here: they come from the standard AWS chain (environment, profile, IMDS).
 * MCP_GUARD_AUDIT_S3_<KEY> overrides each key (src/config/load.ts).
 */
export const auditS3Schema = z.strictObject({
  bucket: z
    .string({ error: problem('expected a bucket name') })
    .regex(S3_BUCKET, { error: 'expected a bucket name: 3 to 63 lower-case letters, digits, "." or "-", starting and ending with a letter or digit' })
    .describe('(required) The bucket rotated audit files are uploaded to.'),
  region: z
    .string({ error: problem('expected a region name') })
    .regex(/^[a-z0-9-]{1,64}$/, { error: 'expected a region name such as "us-east-1"' })
    .optional()
    .describe('The bucket\'s region. Default: AWS_REGION, else AWS_DEFAULT_REGION, else "us-east-1".'),
  endpoint: z
    .string({ error: problem('expected an absolute http:// or https:// URL') })
    .refine(isHttpUrl, { error: 'expected an absolute http:// or https:// URL' })
    // URLs end up in logs; S3 credentials come from the AWS chain only.
    .refine((value) => !isHttpUrl(value) || (new URL(value).username === '' && new URL(value).password === ''), {
      error: 'must not contain a user name or password: credentials come from the AWS environment (AWS_ACCESS_KEY_ID..., a profile, instance metadata)',
    })
    .optional()
    .describe('Another S3-compatible store (MinIO, Ceph, R2, LocalStack...): its http:// or https:// URL. Default: AWS S3.'),
  force_path_style: z
    .boolean({ error: problem('expected true or false') })
    .default(false)
    .describe('Address the bucket in the path (`endpoint/bucket/key`) rather than as a host name; most S3-compatible stores need it.'),
  prefix: z
    .string({ error: problem('expected a string') })
    .max(512, { error: 'must be at most 512 characters' })
    .refine((value) => !hasControlCharacter(value), { error: 'must not contain control characters' })
    .refine((value) => !value.startsWith('/'), { error: 'must not start with "/"' })
    .default('')
    .describe('Start of every object key; a "/" is added when it does not end with one.'),
  instance: z
    .string({ error: problem('expected a string') })
    .regex(/^[A-Za-z0-9._-]{1,128}$/, { error: 'expected 1 to 128 letters, digits, ".", "_" or "-"' })
    .optional()
    .describe("This gateway's part of the object key, which keeps replicas apart. Default: the host name."),
  server_side_encryption: z
    .enum(S3_SERVER_SIDE_ENCRYPTIONS, { error: problem('expected "AES256" or "aws:kms"') })
    .optional()
    .describe('Server-side encryption to ask for: "AES256" (keys managed by S3) or "aws:kms". Absent: the bucket\'s default.'),
  kms_key_id: text().optional().describe('aws:kms only: the KMS key (id, ARN or alias). Absent: the AWS-managed key of S3.'),
  part_size_bytes: integer(5_242_880, 5_368_709_120, 'bytes')
    .default(5_242_880)
    .describe('A file larger than this goes up in parts of this size (multipart upload), in bytes; 5 MiB to 5 GiB.'),
  concurrency: integer(1, 64).default(4).describe('Parts of one file uploaded at once. Memory: up to concurrency × part_size_bytes during an upload.'),
  connect_timeout_ms: milliseconds(1).default(5_000).describe('Deadline to open a connection to the store, in ms.'),
  request_timeout_ms: milliseconds(1).default(30_000).describe('Longest a request may wait for the store without any data moving, in ms.'),
  retry_backoff_ms: milliseconds(1)
    .default(1_000)
    .describe('First delay before trying again after a failed upload, in ms; doubled per consecutive failure, with jitter.'),
  retry_backoff_max_ms: milliseconds(1).default(300_000).describe('Longest delay between two attempts while the store fails, in ms.'),
});

/** `[audit.s3]` as validated. */
export type AuditS3Config = z.output<typeof auditS3Schema>;

/** `[audit]`: one JSON line per security event, to stdout, a rotated file and/or an HTTP collector. */
export const auditSchema = z.strictObject({
  enabled: z
    .boolean({ error: problem('expected true or false') })
    .default(true)
    .describe('false keeps the table but records nothing.'),
  /** Write audit lines to stdout (the operational log goes to stderr). */
  stdout: z
    .boolean({ error: problem('expected true or false') })
    .default(false)
    .describe('Write lines to stdout (the operational log goes to stderr).'),
  /** Append audit lines to this file. */
  file: text().optional().describe('Append lines to this file (relative to the working directory).'),
  /** Rotate the file when it reaches this size, in bytes. */
  rotate_max_bytes: integer(1_024, Number.MAX_SAFE_INTEGER, 'bytes')
    .default(104_857_600)
    .describe('Rotate before a line would take the file past this size, in bytes.'),
  /** Rotate the file when its first line is this old, in seconds (0 = never by age). */
  rotate_max_age_secs: integer(0, 31_536_000).default(86_400).describe("Rotate once the file's first event is this old, in seconds; 0 = never."),
  /** Rotated files kept; older ones are deleted. */
  max_backups: integer(0, 10_000).default(10).describe('Rotated files kept; the oldest beyond this are deleted.'),
  /** gzip rotated files. */
  compress_rotated: z
    .boolean({ error: problem('expected true or false') })
    .default(true)
    .describe('gzip rotated files.'),
  /** POST batches of audit events (a JSON array) to this URL. */
  export_url: urlSchema.optional().describe('POST batches of events (a JSON array) to this URL.'),
  /** Headers of the export POSTs (the collector's credentials). */
  export_headers: headerTableSchema.optional().describe("Headers of each POST (the collector's credentials)."),
  /** Events per POST at most. */
  export_batch_size: integer(1, 10_000).default(100).describe('Most events in one POST.'),
  /** How long an event may wait for its batch, in ms. */
  export_flush_interval_ms: milliseconds(10).default(1_000).describe('Longest time an event waits for its batch, in ms.'),
  /** Retries of a failed POST (with exponential backoff) before its batch is dropped and counted. */
  export_max_retries: integer(0, 100).default(5).describe('Retries of a failed POST before its batch is dropped.'),
  /** Deadline of one POST, in ms. */
  export_timeout_ms: milliseconds(1).default(5_000).describe('Deadline of one POST, response body included, in ms.'),
  /** Events waiting to be written or sent, at most; beyond it new events are dropped and counted. */
  queue_size: integer(1, 10_000_000).default(10_000).describe('The most events waiting at each stage; beyond it new events are dropped and counted.'),
  /** Record tool call arguments (after redaction). Off by default: arguments often hold personal data. */
  include_arguments: z
    .boolean({ error: problem('expected true or false') })
    .default(false)
    .describe('Write tool call arguments, after redaction. Off by default: arguments often hold personal data.'),
  redaction_rules: z
    .array(redactionRuleSchema, { error: problem('expected an array of tables: write each as [[audit.redaction_rules]]') })
    .optional()
    .describe('Your own redaction rules, one [[audit.redaction_rules]] table each, applied after the built-in ones.'),
  /** Upload every rotated file to S3 or an S3-compatible store, then delete it locally. */
  s3: auditS3Schema
    .optional()
    .describe('Upload every rotated audit file to S3 or an S3-compatible store, and delete it locally once the store has it. Needs `file`.'),
});

/** `[audit]` as validated. */
export type AuditConfig = z.output<typeof auditSchema>;

/** A sample ratio: the share of new traces recorded, from 0 to 1. */
const sampleRatioSchema = z
  .number({ error: problem('expected a number from 0 to 1') })
  .min(0, { error: 'expected a number from 0 to 1' })
  .max(1, { error: 'expected a number from 0 to 1' });

/**
 * `[telemetry]`: traces over OTLP/HTTP (docs/telemetry.md). On when an endpoint is configured here
 * or by `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; what the table sets
 * wins over the `OTEL_*` variables (src/config/load.ts resolveTelemetry).
 */
export const telemetrySchema = z.strictObject({
  enabled: z
    .boolean({ error: problem('expected true or false') })
    .default(true)
    .describe('false turns tracing off, whatever the OTEL_* variables say.'),
  /** The collector's OTLP/HTTP base URL; `/v1/traces` is appended. */
  otlp_endpoint: urlSchema
    .optional()
    .describe(
      'The OTLP/HTTP base URL of the collector (e.g. http://127.0.0.1:4318); /v1/traces is appended. Else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT.',
    ),
  /** `service.name` of every span. */
  service_name: text().optional().describe('The service.name of the spans. Else OTEL_SERVICE_NAME, else "mcp-guard".'),
  /** The share of new traces recorded; a client's sampled flag decides for its own traces. */
  sample_ratio: sampleRatioSchema
    .optional()
    .describe("The share of new traces recorded, 0 to 1; a traced client's own decision is followed. Else OTEL_TRACES_SAMPLER_ARG, else 1."),
  /** Headers of every export (the collector's credentials). */
  headers: headerTableSchema.optional().describe("Headers of every export request (the collector's credentials); OTEL_EXPORTER_OTLP_HEADERS adds to them."),
});

/** Tracing as the gateway runs it: present only when on, every value resolved from the table and the environment. */
export const resolvedTelemetrySchema = z.object({
  /** Where spans are POSTed (OTLP/HTTP JSON), `/v1/traces` included. */
  traces_url: z.string(),
  service_name: z.string(),
  sample_ratio: z.number(),
  headers: z.record(z.string(), z.string()),
});

/** Tracing as the gateway runs it (src/observability/tracing/). */
export type TelemetryConfig = z.output<typeof resolvedTelemetrySchema>;

/**
 * `[server] allowed_hosts` and `[server.cors] allowed_origins`: a list of entries, "*" alone, never
 * empty (a list that refuses everything is a mistake, not a setting).
 */
function allowList(what: 'host' | 'origin', valid: (entry: string) => boolean) {
  const expected =
    what === 'host'
      ? 'expected a host name or address with an optional ":port", e.g. "mcp.example.com", "10.0.0.5:3000" or "[::1]"'
      : 'expected an origin (scheme://host with an optional ":port" or ":*", no path), e.g. "https://app.example.com" or "http://localhost:*"';
  return z
    .array(z.string({ error: problem(expected) }).refine(valid, { error: expected }), { error: problem(`expected an array of ${what}s`) })
    .min(1, { error: `must not be empty; ["*"] accepts every ${what}` })
    .refine((list) => list.length === 1 || !list.includes('*'), { error: `"*" accepts every ${what}: it cannot be combined with other entries` });
}

/** Response or request header names (CORS lists). */
const headerNamesSchema = z.array(z.string({ error: problem('expected a header name') }).regex(HEADER_NAME, { error: 'not a valid HTTP header name' }), {
  error: problem('expected an array of header names'),
});

/** `[server.cors]`: which browser pages may call the gateway, and what they may send and read (src/http/cors.ts). */
export const corsSchema = z
  .strictObject({
    /** false keeps the section but switches CORS off: no CORS headers, and the default Origin check. */
    enabled: z
      .boolean({ error: problem('expected true or false') })
      .default(true)
      .describe('Send CORS headers and answer preflights (true once [server.cors] is present). false ignores the whole section, allowed_origins included.'),
    /**
     * Origins whose pages may call the gateway: they pass the Origin check and get CORS headers.
     * Default: http(s) pages on localhost, 127.0.0.1 and [::1], any port, on a loopback host; none
     * otherwise. "*": every origin.
     */
    allowed_origins: allowList('origin', (entry) => parseOriginPattern(entry) !== undefined)
      .optional()
      .describe(
        'Pages allowed to call the gateway: they pass the `Origin` check and get CORS headers; any other Origin gets 403. ["*"]: every origin. Default on a loopback host: http(s) pages on localhost, 127.0.0.1, [::1], any port.',
      ),
    /** Request headers allowed besides the ones MCP needs (Authorization, Content-Type, Mcp-Session-Id, ...). */
    allowed_headers: headerNamesSchema
      .default(() => [])
      .describe('Request headers allowed besides Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID (always allowed).'),
    /** Response headers exposed besides the ones MCP clients need (Mcp-Session-Id, WWW-Authenticate, ...). */
    exposed_headers: headerNamesSchema
      .default(() => [])
      .describe('Response headers exposed besides Mcp-Session-Id, WWW-Authenticate, X-Request-Id, Retry-After and the RateLimit-* headers (always exposed).'),
    /** How long a browser may cache a preflight answer, in seconds (Access-Control-Max-Age). */
    max_age_secs: integer(0, 86_400).default(600).describe('How long a browser may reuse a preflight answer, in seconds (`Access-Control-Max-Age`).'),
    /**
     * Let pages send cookies and other browser-held credentials (Access-Control-Allow-Credentials).
     * Not needed for bearer tokens, which a client sets itself in Authorization.
     */
    allow_credentials: z
      .boolean({ error: problem('expected true or false') })
      .default(false)
      .describe('`Access-Control-Allow-Credentials: true`: pages may send cookies and other credentials the browser holds. Bearer tokens do not need it.'),
  })
  .superRefine((cors, ctx) => {
    if (cors.allow_credentials && cors.allowed_origins?.includes('*')) {
      // Credentials for every origin would let any site act as the signed-in user.
      ctx.addIssue({ code: 'custom', path: ['allow_credentials'], message: 'cannot be true with allowed_origins = ["*"]: list the origins' });
    }
  });

/** `[server.cors]` as validated. */
export type CorsSettings = z.output<typeof corsSchema>;

/** TLS protocol versions the listener may be limited to (the lowest it accepts). */
export const TLS_MIN_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;

/**
 * `[server.tls]`: HTTPS on the gateway's own port (and only HTTPS), and optionally client
 * certificates (mTLS). The files are read and checked at start-up and by `mcp-guard validate`
 * (src/http/tls.ts), not here: parsing a config stays free of file access.
 */
export const tlsSchema = z
  .strictObject({
    /** The server certificate (PEM), optionally followed by its intermediate certificates. */
    cert_path: text().describe('The server certificate in PEM, optionally followed by its intermediate CA certificates (the chain clients are sent).'),
    /** Its private key (PEM; PKCS#8, PKCS#1 or SEC1, optionally encrypted). */
    key_path: text().describe('Its private key in PEM; must match the first certificate of `cert_path`.'),
    /** The passphrase of an encrypted key; put it in the environment: `key_passphrase = "${TLS_KEY_PASSPHRASE}"`. */
    key_passphrase: text().optional().describe('Passphrase of an encrypted key; put it in the environment: `key_passphrase = "${TLS_KEY_PASSPHRASE}"`.'),
    /** The oldest protocol version accepted. */
    min_version: z
      .enum(TLS_MIN_VERSIONS, { error: problem('expected "TLSv1.2" or "TLSv1.3"') })
      .default('TLSv1.2')
      .describe('Oldest protocol version accepted; older handshakes fail.'),
    /** CA certificates (PEM bundle) that client certificates must chain to; turns on client certificate verification. */
    client_ca_path: text()
      .optional()
      .describe('PEM bundle of the CA certificates client certificates must chain to. Setting it turns on client certificate verification.'),
    /**
     * With client_ca_path: "require" (default) = no connection without a valid client certificate;
     * "optional" = a certificate, if presented, must be valid, otherwise the request goes on to
     * bearer authentication.
     */
    client_auth: z
      .enum(['require', 'optional'], { error: problem('expected "require" or "optional"') })
      .optional()
      .describe(
        'With client_ca_path: "require" (default) = no connection without a valid client certificate; "optional" = a client without one goes on to bearer authentication.',
      ),
  })
  .superRefine((tls, ctx) => {
    if (tls.client_auth !== undefined && tls.client_ca_path === undefined) {
      ctx.addIssue({ code: 'custom', path: ['client_auth'], message: 'needs client_ca_path (the CAs client certificates are verified against)' });
    }
  });

/** `[server.tls]` as validated. */
export type TlsSettings = z.output<typeof tlsSchema>;

const TRUSTED_PROXY_EXPECTED = 'expected an IP address or a CIDR network, e.g. "10.0.0.0/8", "127.0.0.1", "::1" or "fd00::/8"';

/** `[server]`: the listener, its limits, and which Hosts and browser origins may use it (src/http/origin.ts). */
/** A `session_keys` entry: `kid:secret`. */
export const SESSION_KEY_PATTERN = /^[A-Za-z0-9_-]{1,32}:.{32,}$/s;

export const serverSchema = serverSettingsSchema.extend({
  /**
   * Host header values accepted (DNS rebinding protection): names or addresses, with a port to
   * accept only that port. Default: localhost, 127.0.0.1 and [::1] on a loopback host; not
   * checked otherwise. "*": every Host.
   */
  allowed_hosts: allowList('host', (entry) => parseHostPattern(entry) !== undefined)
    .optional()
    .describe(
      '`Host` header values served (DNS rebinding protection); others get 403. ["*"]: every Host. Default on a loopback host: localhost, 127.0.0.1, [::1], any port; otherwise not checked.',
    ),
  /**
   * Proxies (addresses or CIDR networks, IPv4 and IPv6) whose forwarding header is believed: the
   * client address of a request from one of them is read from `client_address_header`, from the
   * right, through trusted hops only (src/http/client-address.ts). Empty: the socket's peer.
   */
  trusted_proxies: z
    .array(
      z.string({ error: problem(TRUSTED_PROXY_EXPECTED) }).refine((entry) => parseProxyEntry(entry) !== undefined, { error: TRUSTED_PROXY_EXPECTED }),
      {
        error: problem('expected an array of addresses or CIDR networks'),
      },
    )
    .default(() => [])
    .describe(
      'Load balancers and proxies whose `client_address_header` is believed, as addresses or CIDR networks ("10.0.0.0/8", "127.0.0.1", "fd00::/8"). The client address (per-address limit, audit `client_ip`, logs) is the first hop from the right that is not one of them. Empty (default): the connection\'s peer.',
    ),
  /** The one forwarding header read from a trusted proxy; the other is ignored (a proxy passes it on as the client wrote it). */
  client_address_header: z
    .enum(['x-forwarded-for', 'forwarded'], { error: problem('expected "x-forwarded-for" or "forwarded"') })
    .default('x-forwarded-for')
    .describe(
      'The header the trusted proxies set: "x-forwarded-for" (default; haproxy `option forwardfor`, nginx `$proxy_add_x_forwarded_for`) or "forwarded" (RFC 7239 `for=`). Only this one is read.',
    ),
  /** CORS, and the origins browsers may call from. */
  cors: corsSchema.optional().describe('CORS: which browser pages may call the gateway, and what they may send and read.'),
  /** Native TLS (HTTPS only on the port) and client certificates (src/http/tls.ts). */
  tls: tlsSchema.optional().describe('HTTPS on the port (and only HTTPS), and client certificates (mTLS).'),
  /**
   * Sealed sessions (src/replicas/seal.ts): `kid:secret` entries; the first seals new session
   * ids, the others still open ids sealed before a rotation. Every replica behind one load
   * balancer has the same list. Absent: sessions live in the process that opened them.
   */
  session_keys: z
    .array(
      z
        .string({ error: problem('expected "kid:secret"') })
        .regex(SESSION_KEY_PATTERN, { error: 'expected "kid:secret": a key id of 1-32 of A-Z a-z 0-9 _ -, a colon, then a secret of at least 32 characters' }),
      { error: problem('expected an array of "kid:secret" strings') },
    )
    .min(1, { error: 'name at least one key, or leave session_keys out' })
    .refine((keys) => new Set(keys.map((k) => k.slice(0, k.indexOf(':')))).size === keys.length, { error: 'each key id may appear once' })
    .optional()
    .describe(
      'Sealed sessions any replica can serve: `"kid:secret"` entries (secret: 32+ characters, e.g. `"k1:${SESSION_KEY_1}"`); the first seals new sessions, the rest still open older ones. Same list on every replica.',
    ),
  /** How long a sealed session id is accepted after its initialize, in ms. */
  session_ttl_ms: milliseconds(1)
    .default(86_400_000)
    .describe('With session_keys: how long a sealed session id is accepted after its `initialize`, in ms (then 404: the client initializes again).'),
  /** Redis for messages between replicas, when [rate_limit] has none. */
  redis_url: z
    .string({ error: problem('expected a redis:// URL') })
    .regex(/^rediss?:\/\/[^\s]+$/, { error: 'expected a redis:// or rediss:// URL' })
    .optional()
    .describe(
      'With session_keys: the Redis that carries messages between replicas (answers to server requests); default: `[rate_limit] redis_url`. `redis://[user:password@]host:port[/db]`.',
    ),
});

/**
 * What may join a virtual server's tool and prompt names: `<server><separator><name>`. No letter
 * or digit, so that a member's name and the tool's own name cannot run into each other.
 */
export const VIRTUAL_SEPARATOR_PATTERN = /^[_.\-/]{1,8}$/;

/** One `[[virtual_servers]]` entry: one MCP endpoint that merges several servers. */
export const virtualServerSchema = z.strictObject({
  name: serverFields.name.describe('Unique among servers and virtual servers: `POST /mcp/<name>` reaches it. 1-64 of `A-Z a-z 0-9 - _`.'),
  path_prefix: pathPrefixSchema.optional().describe('Requests under this path (whole segments) reach the virtual server too. Optional.'),
  servers: z
    .array(z.string({ error: problem('expected a string') }).regex(/^(\*|[A-Za-z0-9_-]{1,64})$/, { error: 'not a server name or "*"' }), {
      error: problem('expected an array of server names'),
    })
    .min(1, { error: 'name at least one server, or "*" for every configured server' })
    .describe('Its members: names of configured servers, or ["*"] for every configured server.'),
  separator: z
    .string({ error: problem('expected a string') })
    .regex(VIRTUAL_SEPARATOR_PATTERN, { error: 'must be 1 to 8 of "_", ".", "-" or "/"' })
    .default('__')
    .describe("Joins a member's name and its tool or prompt name: `<server><separator><name>`."),
});

/** `[tool_integrity]`: pinned tool and prompt definitions (docs/tool-integrity.md). */
export const toolIntegritySchema = z.strictObject({
  /** "off": nothing is checked; "warn": a definition unlike its pin is audited and counted; "block": it is also hidden and refused. */
  mode: z
    .enum(['off', 'warn', 'block'], { error: problem('expected "off", "warn" or "block"') })
    .default('off')
    .describe(
      '"off" (default): no check; "warn": a tool or prompt unlike its pin (or unpinned) is audited and counted; "block": it is also left out of lists and its calls are refused.',
    ),
  /** The pin file `mcp-guard pin` writes (relative to the working directory). */
  pin_file: text()
    .default('mcp-guard.pins.json')
    .describe('The pin file written by `mcp-guard pin` (relative to the working directory); read at start and on every reload.'),
  /** A tool or prompt never pinned is pinned as it is first listed (and written to pin_file). */
  trust_on_first_use: z
    .boolean({ error: problem('expected true or false') })
    .default(false)
    .describe('true: a tool or prompt with no pin is pinned as it is first listed (written to pin_file); a later change is still caught.'),
});

/** `[tool_integrity]` as validated. */
export type ToolIntegrityConfig = z.output<typeof toolIntegritySchema>;

/** The whole config file, after `${VAR}` interpolation. */
export const configFileSchema = z.strictObject({
  /** The listener. */
  server: serverSchema.prefault({}).describe('The listener, its limits, and which Hosts and browser origins may use it.'),
  /** The upstream server(s). */
  upstream: upstreamSchema.optional().describe('The upstream server: alone, or the defaults of the [[upstream.servers]] behind the gateway.'),
  /** API keys and JWT. */
  auth: authSchema.optional().describe('Who may call the gateway: API keys, JWTs and client certificates. Absent: nobody needs credentials.'),
  /** Rate limits. */
  rate_limit: rateLimitSchema.optional().describe('Rate limits per client address, per identity and per tool. Absent: none.'),
  /** The audit log. */
  audit: auditSchema.optional().describe('The audit log: one JSON line per security event, to stdout, a rotated file and/or an HTTP collector. Absent: none.'),
  /** Traces (OpenTelemetry, OTLP/HTTP). */
  telemetry: telemetrySchema
    .optional()
    .describe('Traces over OTLP/HTTP: one span per MCP request. On when an endpoint is set here or in OTEL_EXPORTER_OTLP_ENDPOINT.'),
  /** One endpoint for several servers. */
  virtual_servers: z
    .array(virtualServerSchema, { error: problem('expected an array of tables ([[virtual_servers]])') })
    .optional()
    .describe('One MCP endpoint that merges several servers: their tools and prompts namespaced, their resources and lists complete.'),
  /** Pinned tool and prompt definitions. */
  tool_integrity: toolIntegritySchema
    .optional()
    .describe('Pinned tool and prompt definitions: a tool whose definition changed after review is audited, or hidden and refused. Absent: off.'),
});

/** The config file as validated, before inheritance is resolved. */
export type ConfigFile = z.output<typeof configFileSchema>;
/** `[upstream]` fields as validated (all optional). */
export type UpstreamFields = z.output<typeof upstreamFieldsSchema>;

/**
 * One resolved upstream server: the server's own fields over the inherited [upstream] defaults
 * over the defaults below. A union by transport: a stdio server has a command and the fields of
 * its child, an http or sse server a url and the fields of its connection, and neither has the
 * other's (the loader reports one set on a server of the other transport). Code that reads a
 * transport's fields narrows on `transport` first, so it cannot read a field that is not there.
 */
const commonServerConfig = {
  name: serverFields.name,
  path_prefix: serverFields.path_prefix,
  era: serverFields.era.default('auto'),
  timeout_ms: serverFields.timeout_ms.default(60_000),
  startup_timeout_ms: serverFields.startup_timeout_ms.default(60_000),
  restart_backoff_ms: serverFields.restart_backoff_ms.default(500),
  restart_backoff_max_ms: serverFields.restart_backoff_max_ms.default(30_000),
  max_restarts: serverFields.max_restarts.default(5),
  circuit_failure_threshold: serverFields.circuit_failure_threshold.default(5),
  circuit_open_ms: serverFields.circuit_open_ms.default(30_000),
  circuit_open_max_ms: serverFields.circuit_open_max_ms.default(120_000),
  require_approval: serverFields.require_approval.optional(),
};

/** A server the gateway starts as a child process and speaks to over its stdin and stdout. */
export const stdioServerConfigSchema = z.strictObject({
  ...commonServerConfig,
  transport: z.literal('stdio'),
  command: serverFields.command,
  args: serverFields.args.default(() => []),
  env: serverFields.env.default(() => ({})),
  cwd: serverFields.cwd.optional(),
  relay_roots: serverFields.relay_roots.default(false),
  isolation: serverFields.isolation.default('identity'),
  child_idle_ms: serverFields.child_idle_ms.default(300_000),
  max_children: serverFields.max_children.default(32),
});

/** A server the gateway reaches at a URL: streamable HTTP (`http`) or legacy HTTP+SSE (`sse`). */
export const httpServerConfigSchema = z.strictObject({
  ...commonServerConfig,
  transport: z.enum(['http', 'sse']),
  url: serverFields.url,
  headers: serverFields.headers.default(() => ({})),
  strip_prefix: serverFields.strip_prefix.default(false),
});

export const serverConfigSchema = z.discriminatedUnion('transport', [stdioServerConfigSchema, httpServerConfigSchema]);

/** One resolved upstream server, of either transport. */
export type ServerConfig = z.output<typeof serverConfigSchema>;
/** One resolved stdio server. */
export type StdioServerConfig = z.output<typeof stdioServerConfigSchema>;
/** One resolved http or sse server. */
export type HttpServerConfig = z.output<typeof httpServerConfigSchema>;

/** The fields only a stdio server has, and those only an http or sse server has: from the schemas, never listed by hand. */
export const STDIO_ONLY_FIELDS = Object.keys(stdioServerConfigSchema.shape).filter(
  (key) => !(key in commonServerConfig) && key !== 'transport',
) as (keyof StdioServerConfig)[];
export const HTTP_ONLY_FIELDS = Object.keys(httpServerConfigSchema.shape).filter(
  (key) => !(key in commonServerConfig) && key !== 'transport',
) as (keyof HttpServerConfig)[];

/** The built-in default of a field every server has. */
export function serverDefault<K extends keyof typeof commonServerConfig>(field: K): z.output<(typeof commonServerConfig)[K]> {
  return commonServerConfig[field].parse(undefined) as z.output<(typeof commonServerConfig)[K]>;
}

/** The resolved configuration the gateway runs with. */
export const gatewayConfigSchema = z.object({
  /** The listener, its limits, and which Hosts and browser origins may use it. */
  server: serverSchema,
  /** True when there is no [[upstream.servers]] and no additional server: [upstream] is the only server. */
  single: z.boolean(),
  /** In file order, then MCP_GUARD_ADDITIONAL_SERVERS in JSON key order. */
  servers: z.array(serverConfigSchema),
  /** Who may call the gateway; undefined = nobody needs credentials. */
  auth: authSchema.optional(),
  /** Rate limits; undefined = none. */
  rate_limit: rateLimitSchema.optional(),
  /** The audit log; undefined = none. */
  audit: auditSchema.optional(),
  /** Traces; undefined = off (no endpoint, or `enabled = false`). */
  telemetry: resolvedTelemetrySchema.optional(),
  /** `[tool_integrity]`; undefined = off. */
  tool_integrity: toolIntegritySchema.optional(),
  /** `[[virtual_servers]]`, members resolved (`"*"` expanded, in the order of `servers`). */
  virtual_servers: z.array(
    z.object({
      transport: z.literal('virtual'),
      name: z.string(),
      path_prefix: z.string().optional(),
      servers: z.array(z.string()),
      separator: z.string(),
      /** The longest of its members' timeout_ms: how long opening its session may take. */
      timeout_ms: z.number(),
    }),
  ),
  /** Notes to log at start-up; never contain secret values. */
  warnings: z.array(z.string()),
});

/** The resolved configuration the gateway runs with. */
export type GatewayConfig = z.output<typeof gatewayConfigSchema>;

/** One resolved `[[virtual_servers]]` entry. */
export type VirtualServerConfig = GatewayConfig['virtual_servers'][number];

/** What a URL can name: a server, or a virtual server that merges several. */
export type RouteConfig = ServerConfig | VirtualServerConfig;
