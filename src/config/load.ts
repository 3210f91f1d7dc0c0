/**
 * From TOML text (and the environment) to the resolved GatewayConfig, in this order:
 * parse TOML -> replace `${VAR}` in every string -> validate against the schema -> read
 * MCP_GUARD_ADDITIONAL_SERVERS the same way -> resolve [upstream] (single server, or defaults
 * inherited by the others) -> check what spans servers (unique names and prefixes).
 * Every step keeps going after a problem where it can, so that one run reports them all.
 */
import { readFile } from 'node:fs/promises';
import { parse, TomlError } from 'smol-toml';
import type { z } from 'zod';
import { ConfigError, formatKeyPath, type ConfigIssue, type KeyPath } from './errors.js';
import { interpolateTree, type Environment } from './env.js';
import {
  additionalServerSchema,
  configFileSchema,
  SERVER_NAME_PATTERN,
  serverConfigSchema,
  serverEntrySchema,
  upstreamFieldsSchema,
  LEGACY_SHA256_PATTERN,
  normaliseFingerprint,
  type AuditConfig,
  type AuthConfig,
  type RateLimitConfig,
  type GatewayConfig,
  type ServerConfig,
  type ServerSettings,
  type Transport,
  type UpstreamFields,
} from './schema.js';

/** The environment variable that may add servers: a JSON object `{ "name": { path_prefix, transport, ... } }`. */
export const ADDITIONAL_SERVERS_VARIABLE = 'MCP_GUARD_ADDITIONAL_SERVERS';

/** Options of parseConfig. */
export interface ParseConfigOptions {
  /** Where `${VAR}` and MCP_GUARD_ADDITIONAL_SERVERS are read; process.env when absent. */
  env?: Environment;
  /** The file name to show in a TOML syntax error. */
  source?: string;
}

/** Fields that only configure a stdio child: an error on an http/sse server. */
const STDIO_ONLY_FIELDS = ['command', 'args', 'env', 'cwd', 'relay_roots', 'isolation', 'child_idle_ms', 'max_children'] as const;
/** Fields that only configure an http/sse connection: an error on a stdio server. */
const HTTP_ONLY_FIELDS = ['url', 'headers', 'strip_prefix'] as const;
/** [upstream] fields that describe one server rather than defaults: ignored when [upstream] is not a server. */
const SERVER_ONLY_FIELDS = ['transport', 'command', 'args', 'url', 'name', 'path_prefix'] as const;

/**
 * Reads and validates a config file. A missing or unreadable file is a ConfigError at `(file)`,
 * like every other problem with it.
 */
export async function loadConfig(path: string, env?: Environment): Promise<GatewayConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new ConfigError([{ path: '(file)', message: describeReadError(path, error) }]);
  }
  return parseConfig(text, { env, source: path });
}

/**
 * Validates config text and resolves it. Pure apart from reading `options.env` (default
 * process.env). Throws a ConfigError listing every problem found.
 */
export function parseConfig(text: string, options: ParseConfigOptions = {}): GatewayConfig {
  const env = options.env ?? process.env;
  const issues = new IssueList();

  let document: unknown;
  try {
    // A UTF-8 BOM is what some Windows editors write first; TOML itself does not allow it.
    document = parse(text.replace(/^\uFEFF/, ''));
  } catch (error) {
    if (!(error instanceof TomlError)) throw error;
    issues.add([], describeTomlError(error, options.source), '(file)');
  }

  let file: FileView | undefined;
  let server: ServerSettings | undefined;
  let auth: AuthConfig | undefined;
  let limits: { rate_limit?: RateLimitConfig; audit?: AuditConfig } = {};
  let tree: unknown;
  if (document !== undefined) {
    const interpolated = interpolateTree(document, env);
    tree = interpolated.value;
    for (const problem of interpolated.problems) issues.addCovering(problem.path, problem.message);
    const parsed = configFileSchema.safeParse(interpolated.value, { error: describeIssue('TOML') });
    if (parsed.success) {
      server = parsed.data.server;
      auth = parsed.data.auth;
      limits = {
        ...(parsed.data.rate_limit ? { rate_limit: parsed.data.rate_limit } : {}),
        ...(parsed.data.audit ? { audit: parsed.data.audit } : {}),
      };
      file = viewOf(parsed.data.upstream);
    } else {
      addZodIssues(issues, [], parsed.error);
      file = salvage(interpolated.value);
    }
  }

  const additional = readAdditionalServers(env, issues);
  const resolved = file ? resolveServers(file, additional, issues) : undefined;
  if (auth && resolved) checkAuth(auth, resolved.servers, issues, resolved.warnings);
  if (auth && resolved && server) checkClientCerts(auth, server, resolved.servers, issues);
  checkKeyRateLimits(tree, issues);
  if (limits.audit) checkAudit(limits.audit, issues);
  if (issues.all.length > 0 || !resolved || !server) throw new ConfigError(issues.all);
  return { server, ...resolved, ...(auth ? { auth } : {}), ...limits };
}

/** Collects issues in the order found, once each. */
class IssueList {
  readonly all: ConfigIssue[] = [];
  private readonly seen = new Set<string>();
  private readonly covered: string[] = [];

  add(path: KeyPath, message: string, formatted = formatKeyPath(path)): void {
    const under = (prefix: string) =>
      formatted === prefix || formatted.startsWith(`${prefix}.`) || formatted.startsWith(`${prefix}[`);
    if (this.covered.some(under)) return;
    this.record(formatted, message);
  }

  /**
   * Reports an interpolation problem. Anything else found at or below that path would be about
   * the unreplaced `${...}` text, not about what the user meant, so it is left out.
   */
  addCovering(path: KeyPath, message: string): void {
    const formatted = formatKeyPath(path);
    this.record(formatted, message);
    this.covered.push(formatted);
  }

  private record(path: string, message: string): void {
    const key = `${path}\n${message}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.all.push({ path, message });
  }
}

/** zod messages for whatever the schema does not word itself, in the words of the document's format. */
function describeIssue(format: 'TOML' | 'JSON'): z.core.$ZodErrorMap {
  return (issue) => {
    switch (issue.code) {
      case 'invalid_type':
        if (issue.input === undefined) return 'required';
        return `expected ${describeExpected(issue.expected, format)}, got ${describeValueType(issue.input, format)}`;
      case 'invalid_value':
        return `expected ${issue.values.map((value) => JSON.stringify(value)).join(' or ')}`;
      case 'too_small':
        return `must be at least ${issue.minimum}`;
      case 'too_big':
        return `must be at most ${issue.maximum}`;
      case 'unrecognized_keys':
        return 'unknown key';
      default:
        return 'invalid value';
    }
  };
}

function describeExpected(expected: string, format: 'TOML' | 'JSON'): string {
  switch (expected) {
    case 'object':
      return format === 'TOML' ? 'a table' : 'an object';
    case 'array':
      return 'an array';
    case 'int':
      return 'an integer';
    case 'boolean':
      return 'true or false';
    default:
      return `a ${expected}`;
  }
}

/** The type of a value, never the value itself (it may be a secret). */
function describeValueType(value: unknown, format: 'TOML' | 'JSON'): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Date) return 'a date-time';
  if (typeof value === 'object') return format === 'TOML' ? 'a table' : 'an object';
  if (typeof value === 'number') {
    if (format === 'JSON') return 'a number';
    return Number.isInteger(value) ? 'an integer' : 'a float';
  }
  if (typeof value === 'boolean') return 'a boolean';
  return `a ${typeof value}`;
}

function addZodIssues(issues: IssueList, base: KeyPath, error: z.ZodError): void {
  for (const issue of error.issues) {
    const path = [...base, ...issue.path.filter((key): key is string | number => typeof key !== 'symbol')];
    if (issue.code === 'unrecognized_keys') {
      // One issue per key, at the key itself, so the path points at the typo.
      for (const key of issue.keys) issues.add([...path, key], 'unknown key');
    } else {
      issues.add(path, issue.message);
    }
  }
}

function describeTomlError(error: TomlError, source: string | undefined): string {
  // The first line only: the rest is a code frame that could show a secret written in the file.
  const reason = (error.message.split('\n')[0] ?? '').replace(/^Invalid TOML document: /, '');
  const where = source ? `${source}:${error.line}:${error.column}` : `line ${error.line}, column ${error.column}`;
  return `${where}: not valid TOML: ${reason}`;
}

function describeReadError(path: string, error: unknown): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
      return `config file not found: ${path}`;
    case 'EACCES':
    case 'EPERM':
      return `cannot read config file ${path}: permission denied`;
    case 'EISDIR':
      return `config file ${path} is a directory`;
    default:
      return `cannot read config file ${path}${code ? ` (${code})` : ''}`;
  }
}

/** A part of the document that either validated or did not (its issues are already reported). */
type Piece<T> = { ok: true; value: T } | { ok: false };

interface FileView {
  /** undefined: no [upstream] fields at all (servers aside). */
  upstream: Piece<UpstreamFields> | undefined;
  servers: Piece<z.output<typeof serverEntrySchema>>[];
}

function viewOf(upstream: z.output<typeof configFileSchema>['upstream']): FileView {
  if (!upstream) return { upstream: undefined, servers: [] };
  const { servers = [], ...fields } = upstream;
  return {
    upstream: Object.keys(fields).length > 0 ? { ok: true, value: fields } : undefined,
    servers: servers.map((value) => ({ ok: true, value })),
  };
}

/**
 * When the file as a whole did not validate, the parts that did are still checked against each
 * other (unique names and prefixes, transports), so that a second run does not find new problems.
 */
function salvage(document: unknown): FileView {
  const upstream = isTable(document) ? document['upstream'] : undefined;
  if (upstream === undefined) return { upstream: undefined, servers: [] };
  if (!isTable(upstream)) return { upstream: { ok: false }, servers: [] };
  const { servers, ...fields } = upstream;
  const piece = <T>(result: z.ZodSafeParseResult<T>): Piece<T> =>
    result.success ? { ok: true, value: result.data } : { ok: false };
  // Unknown keys are already reported; dropping them lets the rest of the entry be checked.
  const entrySchema = serverEntrySchema.strip();
  const fieldsSchema = upstreamFieldsSchema.strip();
  return {
    upstream: Object.keys(fields).length > 0 ? piece(fieldsSchema.safeParse(fields)) : undefined,
    servers: Array.isArray(servers)
      ? servers.map((entry) => piece(entrySchema.safeParse(entry)))
      : // A malformed `servers` still means the user meant several servers: not single mode.
        servers === undefined
        ? []
        : [{ ok: false }],
  };
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

interface AdditionalServer {
  name: string;
  base: KeyPath;
  entry: Piece<z.output<typeof additionalServerSchema>>;
}

function readAdditionalServers(env: Environment, issues: IssueList): AdditionalServer[] {
  const raw = env[ADDITIONAL_SERVERS_VARIABLE];
  if (raw === undefined || raw.trim() === '') return [];
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (error) {
    issues.add([ADDITIONAL_SERVERS_VARIABLE], `not valid JSON (${describeJsonError(error)})`);
    return [];
  }
  if (!isTable(json)) {
    issues.add(
      [ADDITIONAL_SERVERS_VARIABLE],
      'expected a JSON object of servers by name: {"name": {"path_prefix": "/x", "transport": "http", ...}}',
    );
    return [];
  }
  return Object.entries(json).map(([name, value]) => {
    const base = [ADDITIONAL_SERVERS_VARIABLE, name];
    if (!SERVER_NAME_PATTERN.test(name)) issues.add(base, 'not a valid server name: 1 to 64 letters, digits, "-" or "_"');
    const interpolated = interpolateTree(value, env, base);
    for (const problem of interpolated.problems) issues.addCovering(problem.path, problem.message);
    const parsed = additionalServerSchema.safeParse(interpolated.value, { error: describeIssue('JSON') });
    if (parsed.success) return { name, base, entry: { ok: true, value: parsed.data } };
    addZodIssues(issues, base, parsed.error);
    // As in salvage(): with unknown keys dropped, the rest of the entry can still be checked.
    const stripped = additionalServerSchema.strip().safeParse(interpolated.value);
    return { name, base, entry: stripped.success ? { ok: true, value: stripped.data } : { ok: false } };
  });
}

/**
 * JSON.parse messages quote the text around the error, which may be a secret: only the kind of
 * error and its position are kept.
 */
function describeJsonError(error: unknown): string {
  const message = error instanceof Error ? error.message : '';
  if (/end of JSON input/i.test(message)) return 'unexpected end of input';
  const match = /^([^"]*?) (in|after) JSON at position (\d+)/.exec(message);
  if (!match) return 'unexpected character';
  const [, what = '', where, position] = match;
  const detail = where === 'after' ? `${what} after the JSON value` : what;
  return `${detail.charAt(0).toLowerCase()}${detail.slice(1)} at character ${Number(position) + 1}`;
}

/** What makes a server unique: its name and its prefix. */
interface Identity {
  /** The key path of its table: `upstream`, `upstream.servers[1]`, `MCP_GUARD_ADDITIONAL_SERVERS.x`. */
  base: KeyPath;
  origin: 'upstream' | 'file' | 'env';
  name: string;
  /** undefined when the entry is invalid: its name (a JSON key) is still known. */
  path_prefix?: string | undefined;
}

/** A server about to be resolved: where its keys are, and what it inherits. */
interface Candidate extends Identity {
  path_prefix: string;
  /** The fields set on the server itself. */
  entry: UpstreamFields;
  /** The [upstream] defaults it inherits (none for [upstream] itself); undefined when [upstream] is invalid. */
  defaults: UpstreamFields | undefined;
}

function resolveServers(
  file: FileView,
  additional: AdditionalServer[],
  issues: IssueList,
): { single: boolean; servers: ServerConfig[]; warnings: string[] } {
  const warnings: string[] = [];
  const upstream = file.upstream;
  const upstreamFields = upstream?.ok ? upstream.value : undefined;
  const single = file.servers.length === 0 && additional.length === 0;
  const candidates: Candidate[] = [];
  // Additional entries that did not validate still have a name, which must not clash.
  const invalidAdditional: Identity[] = [];
  const upstreamAsServer = (fields: UpstreamFields): Candidate => ({
    base: ['upstream'],
    origin: 'upstream',
    name: fields.name ?? 'default',
    path_prefix: fields.path_prefix ?? '/',
    entry: fields,
    defaults: {},
  });

  if (single) {
    if (!upstream) issues.add(['upstream'], 'at least one upstream server is required');
    else if (upstreamFields) candidates.push(upstreamAsServer(upstreamFields));
  } else {
    const defaults = upstream === undefined ? {} : upstreamFields;
    const ignored = SERVER_ONLY_FIELDS.filter((field) => upstreamFields?.[field] !== undefined);
    const listed = `[upstream] ${ignored.join(', ')} ${ignored.length === 1 ? 'is' : 'are'} ignored`;
    if (file.servers.length > 0) {
      if (ignored.length > 0) warnings.push(`${listed} because [[upstream.servers]] is set`);
    } else if (upstreamFields && definesServer(upstreamFields)) {
      // Like the primary connection of the S3/Trino seeds: [upstream] is a server of its own,
      // and its settings are also the defaults of the additional servers.
      candidates.push(upstreamAsServer(upstreamFields));
    } else if (ignored.length > 0) {
      warnings.push(
        `${listed}: [upstream] sets no transport, command or url, so it only provides defaults for ${ADDITIONAL_SERVERS_VARIABLE}`,
      );
    }
    if (upstreamFields) checkOrderedPairs(['upstream'], upstreamFields, upstreamFields, issues);
    file.servers.forEach((piece, index) => {
      if (!piece.ok) return;
      const { name, path_prefix } = piece.value;
      candidates.push({ base: ['upstream', 'servers', index], origin: 'file', name, path_prefix, entry: piece.value, defaults });
    });
    for (const { name, base, entry } of additional) {
      if (!entry.ok) invalidAdditional.push({ base, origin: 'env', name });
      else candidates.push({ base, origin: 'env', name, path_prefix: entry.value.path_prefix, entry: entry.value, defaults });
    }
  }

  checkUnique([...candidates, ...invalidAdditional], issues);
  const servers: ServerConfig[] = [];
  for (const candidate of candidates) {
    const server = resolveServer(candidate, issues);
    if (server) servers.push(server);
  }
  return { single, servers, warnings };
}

function definesServer(fields: UpstreamFields): boolean {
  return fields.transport !== undefined || fields.command !== undefined || fields.url !== undefined;
}

function describeCandidate(candidate: Identity): string {
  return candidate.origin === 'upstream' ? '[upstream]' : formatKeyPath(candidate.base);
}

/** Names and prefixes identify servers in URLs; prefixes are compared in their normal form. */
function checkUnique(identities: Identity[], issues: IssueList): void {
  const byName = new Map<string, Identity>();
  const byPrefix = new Map<string, Identity>();
  for (const candidate of identities) {
    const sameName = byName.get(candidate.name);
    if (!sameName) byName.set(candidate.name, candidate);
    else if (candidate.origin === 'env') issues.add(candidate.base, `a server named ${JSON.stringify(candidate.name)} is already configured`);
    else issues.add([...candidate.base, 'name'], `same name ${JSON.stringify(candidate.name)} as ${describeCandidate(sameName)}`);

    if (candidate.path_prefix === undefined) continue;
    const samePrefix = byPrefix.get(candidate.path_prefix);
    if (!samePrefix) byPrefix.set(candidate.path_prefix, candidate);
    else {
      issues.add(
        [...candidate.base, 'path_prefix'],
        `same path_prefix ${JSON.stringify(candidate.path_prefix)} as ${describeCandidate(samePrefix)} (compared without a trailing "/")`,
      );
    }
  }
}

/** Infers a missing transport from the one field that gives it away, as the seed guide's examples expect. */
function transportOf(candidate: Candidate, issues: IssueList): Transport | undefined {
  const { entry, base } = candidate;
  if (entry.transport) return entry.transport;
  if (entry.command !== undefined && entry.url === undefined) return 'stdio';
  if (entry.url !== undefined && entry.command === undefined) return 'http';
  issues.add(
    [...base, 'transport'],
    entry.command === undefined
      ? 'required: "stdio" (with command), "http" or "sse" (with url)'
      : 'required when both command and url are set',
  );
  return undefined;
}

function resolveServer(candidate: Candidate, issues: IssueList): ServerConfig | undefined {
  const { entry, base } = candidate;
  const transport = transportOf(candidate, issues);
  if (!transport) return undefined;
  const stdio = transport === 'stdio';

  // Set on the server itself, a field of the other transport is a mistake; inherited from
  // [upstream], it is a default meant for servers of that other transport.
  for (const field of stdio ? HTTP_ONLY_FIELDS : STDIO_ONLY_FIELDS) {
    if (entry[field] !== undefined) issues.add([...base, field], `not used by transport "${transport}"`);
  }
  if (stdio && entry.command === undefined) issues.add([...base, 'command'], 'required for transport "stdio"');
  if (!stdio && entry.url === undefined) issues.add([...base, 'url'], `required for transport "${transport}"`);
  // HTTP+SSE exists only in the legacy era. An "era" inherited from [upstream] is a default meant
  // for the servers that can have it, like the fields of the other transport.
  if (transport === 'sse' && entry.era === 'modern') issues.add([...base, 'era'], 'transport "sse" is legacy only: expected "auto" or "legacy"');

  // Tables (env, headers) are inherited or replaced whole, never merged: a server that sets its
  // own headers sends exactly those, so no credential meant for other servers leaks to it.
  const defaults = candidate.defaults ?? {};
  const inherit = <K extends keyof UpstreamFields>(field: K): UpstreamFields[K] => entry[field] ?? defaults[field];
  const era = inherit('era');
  const fields = {
    name: candidate.name,
    path_prefix: candidate.path_prefix,
    transport,
    era: transport === 'sse' && era === 'modern' ? undefined : era,
    timeout_ms: inherit('timeout_ms'),
    startup_timeout_ms: inherit('startup_timeout_ms'),
    restart_backoff_ms: inherit('restart_backoff_ms'),
    restart_backoff_max_ms: inherit('restart_backoff_max_ms'),
    max_restarts: inherit('max_restarts'),
    circuit_failure_threshold: inherit('circuit_failure_threshold'),
    circuit_open_ms: inherit('circuit_open_ms'),
    circuit_open_max_ms: inherit('circuit_open_max_ms'),
    ...(stdio
      ? {
          command: entry.command,
          args: entry.args,
          env: inherit('env'),
          cwd: inherit('cwd'),
          relay_roots: inherit('relay_roots'),
          isolation: inherit('isolation'),
          child_idle_ms: inherit('child_idle_ms'),
          max_children: inherit('max_children'),
        }
      : { url: entry.url, headers: inherit('headers'), strip_prefix: inherit('strip_prefix') }),
  };
  const defined = Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined));
  const resolved = serverConfigSchema.safeParse(defined);
  if (!resolved.success) {
    // Only reachable with a field already reported (a missing command or url).
    if (issues.all.length === 0) throw new Error(`config: ${describeCandidate(candidate)} did not resolve`);
    return undefined;
  }
  // With [upstream] invalid, its defaults are unknown and a comparison could blame the wrong key.
  if (candidate.defaults) checkOrderedPairs(base, entry, resolved.data, issues);
  return resolved.data;
}

/** A first value and the maximum it grows to: the maximum must not be below it. */
const ORDERED_PAIRS = [
  { first: 'restart_backoff_ms', max: 'restart_backoff_max_ms' },
  { first: 'circuit_open_ms', max: 'circuit_open_max_ms' },
] as const;

type OrderedField = (typeof ORDERED_PAIRS)[number]['first' | 'max'];

/**
 * restart_backoff_max_ms must not be below restart_backoff_ms, nor circuit_open_max_ms below
 * circuit_open_ms. Reported at the key the entry sets (the maximum first), since that is the one
 * to change; entries that set neither are covered by the check of [upstream].
 */
function checkOrderedPairs(base: KeyPath, entry: UpstreamFields, effective: Partial<Record<OrderedField, number | undefined>>, issues: IssueList): void {
  for (const pair of ORDERED_PAIRS) {
    const first = effective[pair.first] ?? BUILTIN_DEFAULTS[pair.first];
    const max = effective[pair.max] ?? BUILTIN_DEFAULTS[pair.max];
    if (max >= first) continue;
    if (entry[pair.max] !== undefined) issues.add([...base, pair.max], `must be at least ${pair.first} (${first})`);
    else if (entry[pair.first] !== undefined) issues.add([...base, pair.first], `must be at most ${pair.max} (${max})`);
  }
}

/** The schema's defaults of those fields, read from the schema so that they are written down once. */
const BUILTIN_DEFAULTS: Record<OrderedField, number> = {
  restart_backoff_ms: serverConfigSchema.shape.restart_backoff_ms.parse(undefined),
  restart_backoff_max_ms: serverConfigSchema.shape.restart_backoff_max_ms.parse(undefined),
  circuit_open_ms: serverConfigSchema.shape.circuit_open_ms.parse(undefined),
  circuit_open_max_ms: serverConfigSchema.shape.circuit_open_max_ms.parse(undefined),
};

/**
 * What [auth] must satisfy beyond its schema: something to authenticate with, ids, prefixes and
 * hashes that identify one key each, and server lists that name configured servers.
 */
function checkAuth(auth: AuthConfig, servers: ServerConfig[], issues: IssueList, warnings: string[]): void {
  const keys = auth.api_keys ?? [];
  if (keys.length === 0 && !auth.jwt && (auth.client_certs ?? []).length === 0) {
    issues.add(['auth'], 'configure [[auth.api_keys]], [auth.jwt] or [[auth.client_certs]] (or remove [auth] to run without authentication)');
  }
  const names = new Set(servers.map((s) => s.name));
  const checkServers = (path: KeyPath, list: string[] | undefined) =>
    list?.forEach((name, i) => {
      if (!names.has(name)) issues.add([...path, i], `no server named "${name}" is configured`);
    });
  // The duplicated value is named, except a key_hash: an unsalted legacy hash of a weak key is
  // as good as the key, and validate's output ends up in CI logs.
  const unique = (field: 'id' | 'key_prefix' | 'key_hash', what: string, named: boolean) => {
    const seen = new Map<string, number>();
    keys.forEach((key, i) => {
      const value = key[field];
      if (value === undefined) return;
      const first = seen.get(value);
      if (first === undefined) seen.set(value, i);
      else issues.add(['auth', 'api_keys', i, field], `same ${what}${named ? ` ${JSON.stringify(value)}` : ''} as auth.api_keys[${first}]`);
    });
  };
  unique('id', 'id', true);
  unique('key_prefix', 'key_prefix', true);
  unique('key_hash', 'key_hash', false);
  const legacy: string[] = [];
  keys.forEach((key, i) => {
    checkServers(['auth', 'api_keys', i, 'servers'], key.servers);
    if (LEGACY_SHA256_PATTERN.test(key.key_hash)) legacy.push(key.id);
  });
  if (legacy.length > 0) {
    warnings.push(
      `auth.api_keys ${legacy.join(', ')}: unsalted SHA-256 key_hash is deprecated; re-hash with \`mcp-guard hash-key\` (argon2id) or issue new keys with \`mcp-guard keygen\``,
    );
  }
  const jwt = auth.jwt;
  if (jwt?.jwks_url?.startsWith('http://')) {
    warnings.push('auth.jwt.jwks_url uses http://: the signing keys can be replaced in transit; use https:// outside a trusted network');
  }
}

/**
 * `[[auth.client_certs]]`: only meaningful when the listener verifies client certificates; each
 * entry names one certificate (ids unique across client_certs and api_keys, so that an id in an
 * audit line is one identity), and its servers are configured.
 */
function checkClientCerts(auth: AuthConfig, server: ServerSettings, servers: ServerConfig[], issues: IssueList): void {
  const certs = auth.client_certs ?? [];
  if (certs.length === 0) return;
  if (server.tls?.client_ca_path === undefined) {
    const why = server.tls === undefined ? 'there is no [server.tls]' : '[server.tls] has no client_ca_path';
    issues.add(['auth', 'client_certs'], `needs [server.tls] client_ca_path: client certificates are only verified then (${why})`);
  }
  const keyIds = new Map((auth.api_keys ?? []).map((key, i) => [key.id, i]));
  const ids = new Map<string, number>();
  const subjects = new Map<string, number>();
  const fingerprints = new Map<string, number>();
  const names = new Set(servers.map((s) => s.name));
  certs.forEach((cert, i) => {
    const at = (field: string) => ['auth', 'client_certs', i, field];
    const key = keyIds.get(cert.id);
    if (key !== undefined) issues.add(at('id'), `same id ${JSON.stringify(cert.id)} as auth.api_keys[${key}]`);
    const same = (seen: Map<string, number>, value: string | undefined, field: string, what: string) => {
      if (value === undefined) return;
      const first = seen.get(value);
      if (first === undefined) seen.set(value, i);
      else issues.add(at(field), `same ${what} ${JSON.stringify(value)} as auth.client_certs[${first}]`);
    };
    same(ids, cert.id, 'id', 'id');
    same(subjects, cert.subject_cn, 'subject_cn', 'subject_cn');
    same(fingerprints, cert.fingerprint_sha256 === undefined ? undefined : normaliseFingerprint(cert.fingerprint_sha256), 'fingerprint_sha256', 'fingerprint');
    cert.servers?.forEach((name, j) => {
      if (!names.has(name)) issues.add([...at('servers'), j], `no server named "${name}" is configured`);
    });
  });
}

/**
 * A key's `rate_limit` is enforced by the `[rate_limit]` limiter: without it (or with it switched
 * off) the setting would be silently ignored, which for a security limit is worse than failing.
 * Read from the document itself, so that it is reported in the same run as any other problem
 * of the file; a malformed section or entry is reported by the schema instead.
 */
function checkKeyRateLimits(document: unknown, issues: IssueList): void {
  if (!isTable(document)) return;
  const section = document['rate_limit'];
  if (section !== undefined && (!isTable(section) || section['enabled'] !== false)) return;
  const auth = document['auth'];
  const why = section === undefined ? 'there is no [rate_limit] section' : '[rate_limit] has enabled = false';
  for (const list of ['api_keys', 'client_certs']) {
    const keys = isTable(auth) && Array.isArray(auth[list]) ? (auth[list] as unknown[]) : [];
    keys.forEach((key, i) => {
      if (isTable(key) && key['rate_limit'] !== undefined) issues.add(['auth', list, i, 'rate_limit'], `needs [rate_limit] to be enforced (${why})`);
    });
  }
}

/** An enabled audit log must write somewhere: an audit section that records nothing is a mistake. */
function checkAudit(audit: AuditConfig, issues: IssueList): void {
  if (audit.enabled && !audit.stdout && audit.file === undefined && audit.export_url === undefined) {
    issues.add(['audit'], 'configure at least one sink: stdout = true, file or export_url (or enabled = false)');
  }
}
