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
  apiKeySchema,
  auditS3Schema,
  auditSchema,
  clientCertSchema,
  configFileSchema,
  jwtSchema,
  SERVER_NAME_PATTERN,
  serverConfigSchema,
  serverDefault,
  HTTP_ONLY_FIELDS,
  STDIO_ONLY_FIELDS,
  upstreamFieldsSchema,
  LEGACY_SHA256_PATTERN,
  normaliseFingerprint,
  type AuditConfig,
  type AuthConfig,
  type RateLimitConfig,
  type ToolIntegrityConfig,
  type GatewayConfig,
  telemetrySchema,
  type TelemetryConfig,
  type ConfigFile,
  type VirtualServerConfig,
  virtualServerSchema,
  type ServerConfig,
  type ServerSettings,
  type Transport,
  type UpstreamFields,
} from './schema.js';

/** The environment variable that may add servers: a JSON object `{ "name": { path_prefix, transport, ... } }`. */
export const ADDITIONAL_SERVERS_VARIABLE = 'MCP_GUARD_ADDITIONAL_SERVERS';

/** The prefix of the variables that override `[audit.s3]`: MCP_GUARD_AUDIT_S3_BUCKET for `bucket`, and so on for every key. */
export const AUDIT_S3_VARIABLE_PREFIX = 'MCP_GUARD_AUDIT_S3_';

/** Options of parseConfig. */
export interface ParseConfigOptions {
  /** Where `${VAR}` and MCP_GUARD_ADDITIONAL_SERVERS are read; process.env when absent. */
  env?: Environment;
  /** The file name to show in a TOML syntax error. */
  source?: string;
}

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
  let limits: { rate_limit?: RateLimitConfig; audit?: AuditConfig; tool_integrity?: ToolIntegrityConfig } = {};
  let telemetryTable: TelemetryTable | undefined;
  let virtualEntries: Array<{ index: number; entry: VirtualServerEntry }> = [];
  let tree: unknown;
  if (document !== undefined) {
    const interpolated = interpolateTree(document, env);
    for (const problem of interpolated.problems) issues.addCovering(problem.path, problem.message);
    interpolated.value = applyAuditS3Environment(interpolated.value, env, issues);
    tree = interpolated.value;
    const parsed = configFileSchema.safeParse(interpolated.value, { error: describeIssue('TOML') });
    if (parsed.success) {
      server = parsed.data.server;
      auth = parsed.data.auth;
      limits = {
        ...(parsed.data.rate_limit ? { rate_limit: parsed.data.rate_limit } : {}),
        ...(parsed.data.audit ? { audit: parsed.data.audit } : {}),
        ...(parsed.data.tool_integrity ? { tool_integrity: parsed.data.tool_integrity } : {}),
      };
      telemetryTable = parsed.data.telemetry;
      file = viewOf(parsed.data.upstream);
      virtualEntries = (parsed.data.virtual_servers ?? []).map((entry, index) => ({ index, entry }));
    } else {
      addZodIssues(issues, [], parsed.error);
      file = salvage(interpolated.value);
      virtualEntries = salvageVirtualServers(interpolated.value);
    }
  }

  const additional = readAdditionalServers(env, issues);
  const resolved = file ? resolveServers(file, additional, issues) : undefined;
  const virtual_servers = resolved ? resolveVirtualServers(virtualEntries, resolved.servers, issues) : [];
  // What [auth] may name: servers and virtual servers.
  const names = resolved?.names && new Set([...resolved.names, ...virtualEntries.map((v) => v.entry.name)]);
  // These read the document itself (its valid fields), so that a schema error anywhere else does
  // not hide them until the next run.
  checkAuth(tree, names, issues, resolved?.warnings ?? []);
  checkClientCerts(tree, names, issues);
  checkKeyRateLimits(tree, issues);
  checkAudit(tree, issues);
  checkAuditS3(tree, issues, resolved?.warnings ?? []);
  const telemetry = resolveTelemetry(telemetryTable, env, issues);
  if (issues.all.length > 0 || !resolved || !server) throw new ConfigError(issues.all);
  const { single, servers, warnings } = resolved;
  if (server.session_keys !== undefined && server.redis_url === undefined && limits.rate_limit?.redis_url === undefined) {
    warnings.push(
      'server.session_keys without a Redis (server.redis_url or rate_limit.redis_url): a client\'s answer to a sampling or elicitation request, and its DELETE, reach only the replica it is sent to (docs/operations.md, "Sessions any replica can serve")',
    );
  }
  // Whoever can reach the port could then name any client address: allowed (a network policy may
  // guarantee that only the load balancer can), but said.
  if (server.trusted_proxies.some((entry) => /\/0$/.test(entry))) {
    warnings.push(
      'server.trusted_proxies trusts every address (a /0 network): any client that reaches the port directly can choose its own client address (limits, audit); list the load balancers instead',
    );
  }
  return { server, single, servers, virtual_servers, warnings, ...(auth ? { auth } : {}), ...limits, ...(telemetry ? { telemetry } : {}) };
}

type TelemetryTable = NonNullable<ConfigFile['telemetry']>;

/** An environment variable's value; an empty one counts as unset, as shells and container runtimes often leave it. */
function variable(env: Environment, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

/** A base OTLP/HTTP URL with the traces path appended (the specification's rule for OTEL_EXPORTER_OTLP_ENDPOINT). */
function tracesUrlOf(base: string): string {
  return `${base.endsWith('/') ? base : `${base}/`}v1/traces`;
}

/**
 * `[telemetry]` resolved with the standard OpenTelemetry variables (docs/telemetry.md): a key the
 * table sets wins over its variable, a variable fills a key the table leaves out (the OpenTelemetry
 * rule: the environment gives defaults, explicit configuration overrides them). On only with an
 * endpoint; off with `enabled = false` or OTEL_SDK_DISABLED=true. A variable with a bad value is
 * reported under its own name, never with its value.
 */
function resolveTelemetry(table: TelemetryTable | undefined, env: Environment, issues: IssueList): TelemetryConfig | undefined {
  if (table?.enabled === false || variable(env, 'OTEL_SDK_DISABLED')?.toLowerCase() === 'true') return undefined;
  const urlSchema = telemetrySchema.shape.otlp_endpoint.unwrap();
  const fromEnv = (name: string): string | undefined => {
    const value = variable(env, name);
    if (value === undefined) return undefined;
    const checked = urlSchema.safeParse(value);
    if (checked.success) return value;
    issues.add([], checked.error.issues[0]?.message ?? 'expected an absolute http:// or https:// URL', name);
    return undefined;
  };
  let traces_url: string | undefined;
  if (table?.otlp_endpoint !== undefined) traces_url = tracesUrlOf(table.otlp_endpoint);
  else {
    // The traces endpoint is used as it is; the general one is a base (the OTLP exporter specification).
    const specific = fromEnv('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT');
    const base = specific === undefined ? fromEnv('OTEL_EXPORTER_OTLP_ENDPOINT') : undefined;
    traces_url = specific ?? (base === undefined ? undefined : tracesUrlOf(base));
  }
  let sample_ratio = table?.sample_ratio;
  const ratioText = sample_ratio === undefined ? variable(env, 'OTEL_TRACES_SAMPLER_ARG') : undefined;
  if (ratioText !== undefined) {
    const ratio = /^(\d+(\.\d*)?|\.\d+)$/.test(ratioText) ? Number(ratioText) : NaN;
    if (ratio >= 0 && ratio <= 1) sample_ratio = ratio;
    else issues.add([], 'expected a number from 0 to 1', 'OTEL_TRACES_SAMPLER_ARG');
  }
  if (traces_url === undefined) return undefined;
  return {
    traces_url,
    service_name: table?.service_name ?? variable(env, 'OTEL_SERVICE_NAME') ?? 'mcp-guard',
    sample_ratio: sample_ratio ?? 1,
    headers: table?.headers ?? {},
  };
}

type VirtualServerEntry = NonNullable<ConfigFile['virtual_servers']>[number];

/**
 * `[[virtual_servers]]`: names and prefixes unique among servers and virtual servers (one
 * namespace in URLs), members that are configured servers (not other virtual servers), `"*"`
 * alone, no member twice.
 */
/** The `[[virtual_servers]]` entries that are valid on their own, when something else in the file is not. */
function salvageVirtualServers(document: unknown): Array<{ index: number; entry: VirtualServerEntry }> {
  const list = isTable(document) ? document['virtual_servers'] : undefined;
  if (!Array.isArray(list)) return [];
  return list.flatMap((value, index) => {
    const parsed = virtualServerSchema.safeParse(value);
    return parsed.success ? [{ index, entry: parsed.data }] : [];
  });
}

function resolveVirtualServers(
  entries: Array<{ index: number; entry: VirtualServerEntry }>,
  servers: ServerConfig[],
  issues: IssueList,
): VirtualServerConfig[] {
  const byName = new Map(servers.map((server) => [server.name, server]));
  const prefixes = new Map(servers.map((server) => [server.path_prefix, server.name]));
  const virtualNames = new Map<string, number>();
  const resolved: VirtualServerConfig[] = [];
  for (const { index, entry } of entries) {
    const base: KeyPath = ['virtual_servers', index];
    const before = issues.all.length;
    const sameVirtual = virtualNames.get(entry.name);
    if (byName.has(entry.name))
      issues.add([...base, 'name'], `a server named ${JSON.stringify(entry.name)} is already configured (servers and virtual servers share one namespace)`);
    else if (sameVirtual !== undefined) issues.add([...base, 'name'], `same name ${JSON.stringify(entry.name)} as virtual_servers[${sameVirtual}]`);
    else virtualNames.set(entry.name, index);
    if (entry.path_prefix !== undefined) {
      const taken = prefixes.get(entry.path_prefix);
      if (taken !== undefined)
        issues.add(
          [...base, 'path_prefix'],
          `same path_prefix ${JSON.stringify(entry.path_prefix)} as ${JSON.stringify(taken)} (compared without a trailing "/")`,
        );
      else prefixes.set(entry.path_prefix, entry.name);
    }
    const all = entry.servers.includes('*');
    if (all && entry.servers.length > 1) issues.add([...base, 'servers'], '"*" stands for every configured server: list nothing else with it');
    const members = all ? servers.map((server) => server.name) : entry.servers;
    const seen = new Set<string>();
    entry.servers.forEach((name, i) => {
      if (name === '*') return;
      if (seen.has(name)) issues.add([...base, 'servers', i], `${JSON.stringify(name)} is listed twice`);
      seen.add(name);
      if (entries.some((other) => other.entry.name === name)) issues.add([...base, 'servers', i], `"${name}" is a virtual server: members must be servers`);
      else if (!byName.has(name)) issues.add([...base, 'servers', i], `no server named "${name}" is configured`);
    });
    // `a` and `a__b` with separator `__`: `a__b__x` would name `b__x` of one and `x` of the other.
    for (const shorter of members) {
      // Also `a` and `a_` with `__`: `a___x` is `_x` of one and `x` of the other.
      const longer = members.find((name) => name !== shorter && (name + entry.separator).startsWith(shorter + entry.separator));
      if (longer !== undefined) {
        issues.add(
          [...base, 'servers'],
          `"${shorter}" and "${longer}" cannot both be members with separator ${JSON.stringify(entry.separator)}: their tool names could be the same; choose another separator`,
        );
        break;
      }
    }
    if (issues.all.length > before) continue;
    resolved.push({
      transport: 'virtual',
      name: entry.name,
      ...(entry.path_prefix !== undefined ? { path_prefix: entry.path_prefix } : {}),
      servers: members,
      separator: entry.separator,
      timeout_ms: Math.max(...members.map((name) => byName.get(name)!.timeout_ms)),
    });
  }
  return resolved;
}

/** Collects issues in the order found, once each. */
class IssueList {
  readonly all: ConfigIssue[] = [];
  private readonly seen = new Set<string>();
  private readonly covered: string[] = [];

  add(path: KeyPath, message: string, formatted = formatKeyPath(path)): void {
    const under = (prefix: string) => formatted === prefix || formatted.startsWith(`${prefix}.`) || formatted.startsWith(`${prefix}[`);
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

  /**
   * Adds unless that key already has a problem: a later stage would only restate it about a value
   * the schema refused (and left out), e.g. "required" after "expected a non-empty string".
   */
  addIfNew(path: KeyPath, message: string): void {
    const formatted = formatKeyPath(path);
    if (this.all.some((issue) => issue.path === formatted)) return;
    this.add(path, message, formatted);
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

/**
 * A table of the document: its valid fields and the keys it sets to an invalid value, or not a
 * table at all. What did not validate is already reported.
 */
type Piece<T> = { ok: true; value: T; invalid: ReadonlySet<string> } | { ok: false };

const NONE: ReadonlySet<string> = new Set();

interface FileView {
  /** undefined: no [upstream] fields at all (servers aside). */
  upstream: Piece<UpstreamFields> | undefined;
  servers: Piece<UpstreamFields>[];
}

/**
 * The fields of a table that are valid on their own, each parsed by its own schema: what the
 * checks after the schema can still rely on when another field (already reported) is not valid.
 */
function validFields<S extends Record<string, z.ZodType>>(shape: S, value: unknown): { [K in keyof S]?: z.output<S[K]> } {
  const fields: Record<string, unknown> = {};
  if (isTable(value)) {
    for (const [key, schema] of Object.entries(shape)) {
      if (value[key] === undefined) continue;
      const parsed = schema.safeParse(value[key]);
      if (parsed.success) fields[key] = parsed.data;
    }
  }
  return fields as { [K in keyof S]?: z.output<S[K]> };
}

/** The valid server fields of a table, and the (known) keys whose values are not. */
function serverPiece(value: unknown): Piece<UpstreamFields> {
  if (!isTable(value)) return { ok: false };
  const fields = validFields(upstreamFieldsSchema.shape, value);
  const invalid = Object.keys(upstreamFieldsSchema.shape).filter((key) => value[key] !== undefined && !(key in fields));
  return { ok: true, value: fields, invalid: new Set(invalid) };
}

function viewOf(upstream: z.output<typeof configFileSchema>['upstream']): FileView {
  if (!upstream) return { upstream: undefined, servers: [] };
  const { servers = [], ...fields } = upstream;
  return {
    upstream: Object.keys(fields).length > 0 ? { ok: true, value: fields, invalid: NONE } : undefined,
    servers: servers.map((value) => ({ ok: true, value, invalid: NONE })),
  };
}

/**
 * When the file as a whole did not validate, the fields that did are still checked against each
 * other (unique names and prefixes, transports, a missing command or url), so that a second run
 * does not find new problems.
 */
function salvage(document: unknown): FileView {
  const upstream = isTable(document) ? document['upstream'] : undefined;
  if (upstream === undefined) return { upstream: undefined, servers: [] };
  if (!isTable(upstream)) return { upstream: { ok: false }, servers: [] };
  const { servers, ...fields } = upstream;
  // Unknown keys and invalid values are already reported; leaving them out lets the rest of the
  // entry be checked (an entry without a valid name or path_prefix included).
  return {
    upstream: Object.keys(fields).length > 0 ? serverPiece(fields) : undefined,
    servers: Array.isArray(servers)
      ? servers.map(serverPiece)
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
  entry: Piece<UpstreamFields>;
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
    issues.add([ADDITIONAL_SERVERS_VARIABLE], 'expected a JSON object of servers by name: {"name": {"path_prefix": "/x", "transport": "http", ...}}');
    return [];
  }
  return Object.entries(json).map(([name, value]) => {
    const base = [ADDITIONAL_SERVERS_VARIABLE, name];
    if (!SERVER_NAME_PATTERN.test(name)) issues.add(base, 'not a valid server name: 1 to 64 letters, digits, "-" or "_"');
    const interpolated = interpolateTree(value, env, base);
    for (const problem of interpolated.problems) issues.addCovering(problem.path, problem.message);
    const parsed = additionalServerSchema.safeParse(interpolated.value, { error: describeIssue('JSON') });
    if (parsed.success) return { name, base, entry: { ok: true, value: parsed.data, invalid: NONE } };
    addZodIssues(issues, base, parsed.error);
    // As in salvage(): the valid fields of the entry can still be checked (its name is its key).
    const piece = serverPiece(interpolated.value);
    return { name, base, entry: piece.ok ? { ...piece, value: { ...piece.value, name: undefined } } : piece };
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
  /** undefined when the entry has no valid name (already reported). */
  name?: string | undefined;
  /** undefined when the entry has no valid path_prefix (already reported). */
  path_prefix?: string | undefined;
}

/** A server about to be resolved: where its keys are, and what it inherits. */
interface Candidate extends Identity {
  /** The (valid) fields set on the server itself. */
  entry: UpstreamFields;
  /** The keys the server sets to an invalid value (already reported). */
  invalid: ReadonlySet<string>;
  /** The (valid) [upstream] defaults it inherits; none for [upstream] itself. */
  defaults: UpstreamFields;
  /**
   * Whether every field of the entry and of its defaults was valid: otherwise an ordered pair
   * could be compared with a default in place of the value meant, and blame the wrong key.
   */
  whole: boolean;
}

function resolveServers(
  file: FileView,
  additional: AdditionalServer[],
  issues: IssueList,
): { single: boolean; servers: ServerConfig[]; warnings: string[]; names: ReadonlySet<string> | undefined } {
  const warnings: string[] = [];
  const upstream = file.upstream;
  const upstreamFields = upstream?.ok ? upstream.value : undefined;
  const upstreamWhole = upstream === undefined || (upstream.ok && upstream.invalid.size === 0);
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
    invalid: upstream?.ok ? upstream.invalid : NONE,
    defaults: {},
    whole: upstreamWhole,
  });

  if (single) {
    if (!upstream) issues.add(['upstream'], 'at least one upstream server is required');
    else if (upstreamFields) candidates.push(upstreamAsServer(upstreamFields));
  } else {
    const defaults = upstreamFields ?? {};
    const ignored = SERVER_ONLY_FIELDS.filter((field) => upstreamFields?.[field] !== undefined);
    const listed = `[upstream] ${ignored.join(', ')} ${ignored.length === 1 ? 'is' : 'are'} ignored`;
    if (file.servers.length > 0) {
      if (ignored.length > 0) warnings.push(`${listed} because [[upstream.servers]] is set`);
    } else if (upstreamFields && definesServer(upstreamFields)) {
      // Like the primary connection of the S3/Trino seeds: [upstream] is a server of its own,
      // and its settings are also the defaults of the additional servers.
      candidates.push(upstreamAsServer(upstreamFields));
    } else if (ignored.length > 0) {
      warnings.push(`${listed}: [upstream] sets no transport, command or url, so it only provides defaults for ${ADDITIONAL_SERVERS_VARIABLE}`);
    }
    if (upstreamFields && upstreamWhole) checkOrderedPairs(['upstream'], upstreamFields, upstreamFields, issues);
    file.servers.forEach((piece, index) => {
      if (!piece.ok) return;
      const { name, path_prefix } = piece.value;
      const whole = piece.invalid.size === 0 && upstreamWhole;
      const { invalid } = piece;
      candidates.push({ base: ['upstream', 'servers', index], origin: 'file', name, path_prefix, entry: piece.value, invalid, defaults, whole });
    });
    for (const { name, base, entry } of additional) {
      if (!entry.ok) invalidAdditional.push({ base, origin: 'env', name });
      else {
        const whole = entry.invalid.size === 0 && upstreamWhole;
        const { invalid } = entry;
        candidates.push({ base, origin: 'env', name, path_prefix: entry.value.path_prefix, entry: entry.value, invalid, defaults, whole });
      }
    }
  }

  const identities = [...candidates, ...invalidAdditional];
  checkUnique(identities, issues);
  const servers: ServerConfig[] = [];
  for (const candidate of candidates) {
    const server = resolveServer(candidate, issues);
    if (server) servers.push(server);
  }
  // The names of every configured server, valid or not (what [auth] may refer to); unknown when
  // some server's name is (an entry that is not a table, or has no valid name).
  const unnamed = upstream?.ok === false || file.servers.some((piece) => !piece.ok) || identities.some((identity) => identity.name === undefined);
  const names = unnamed ? undefined : new Set(identities.map((identity) => identity.name as string));
  return { single, servers, warnings, names };
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
    const sameName = candidate.name === undefined ? undefined : byName.get(candidate.name);
    if (candidate.name === undefined) {
      // No valid name: reported by the schema.
    } else if (!sameName) byName.set(candidate.name, candidate);
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
  const { entry, base, invalid } = candidate;
  if (entry.transport) return entry.transport;
  // A command or url with an invalid value (already reported) still says which transport is meant.
  const command = entry.command !== undefined || invalid.has('command');
  const url = entry.url !== undefined || invalid.has('url');
  if (command && !url) return 'stdio';
  if (url && !command) return 'http';
  issues.addIfNew(
    [...base, 'transport'],
    !command ? 'required: "stdio" (with command), "http" or "sse" (with url)' : 'required when both command and url are set',
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
  if (stdio && entry.command === undefined) issues.addIfNew([...base, 'command'], 'required for transport "stdio"');
  if (!stdio && entry.url === undefined) issues.addIfNew([...base, 'url'], `required for transport "${transport}"`);
  // HTTP+SSE exists only in the legacy era. An "era" inherited from [upstream] is a default meant
  // for the servers that can have it, like the fields of the other transport.
  if (transport === 'sse' && entry.era === 'modern') issues.add([...base, 'era'], 'transport "sse" is legacy only: expected "auto" or "legacy"');

  // Tables (env, headers) are inherited or replaced whole, never merged: a server that sets its
  // own headers sends exactly those, so no credential meant for other servers leaks to it.
  const defaults = candidate.defaults;
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
    require_approval: inherit('require_approval'),
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
    // Only reachable with a field already reported (a missing command, url, name or path_prefix).
    if (issues.all.length === 0) throw new Error(`config: ${describeCandidate(candidate)} did not resolve`);
    return undefined;
  }
  if (candidate.whole) checkOrderedPairs(base, entry, resolved.data, issues);
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
  restart_backoff_ms: serverDefault('restart_backoff_ms'),
  restart_backoff_max_ms: serverDefault('restart_backoff_max_ms'),
  circuit_open_ms: serverDefault('circuit_open_ms'),
  circuit_open_max_ms: serverDefault('circuit_open_max_ms'),
};

/** The valid fields of each entry of an array of tables (an entry that is not a table: none). */
function entriesOf<S extends Record<string, z.ZodType>>(shape: S, list: unknown): { [K in keyof S]?: z.output<S[K]> }[] {
  return Array.isArray(list) ? list.map((entry) => validFields(shape, entry)) : [];
}

/**
 * What [auth] must satisfy beyond its schema: something to authenticate with, ids, prefixes and
 * hashes that identify one key each, and server lists that name configured servers (`names`;
 * undefined when some server's name is unknown). Read from the document's valid fields, so that
 * it runs whatever else is wrong.
 */
function checkAuth(document: unknown, names: ReadonlySet<string> | undefined, issues: IssueList, warnings: string[]): void {
  const auth = isTable(document) ? document['auth'] : undefined;
  if (!isTable(auth)) return;
  const none = (list: unknown) => list === undefined || (Array.isArray(list) && list.length === 0);
  if (none(auth['api_keys']) && auth['jwt'] === undefined && none(auth['client_certs'])) {
    issues.add(['auth'], 'configure [[auth.api_keys]], [auth.jwt] or [[auth.client_certs]] (or remove [auth] to run without authentication)');
  }
  const keys = entriesOf(apiKeySchema.shape, auth['api_keys']);
  const checkServers = (path: KeyPath, list: string[] | undefined) =>
    list?.forEach((name, i) => {
      if (names && !names.has(name)) issues.add([...path, i], `no server named "${name}" is configured`);
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
    if (key.key_hash !== undefined && LEGACY_SHA256_PATTERN.test(key.key_hash)) legacy.push(key.id ?? `[${i}]`);
  });
  if (legacy.length > 0) {
    warnings.push(
      `auth.api_keys ${legacy.join(', ')}: unsalted SHA-256 key_hash is deprecated; re-hash with \`mcp-guard hash-key\` (argon2id) or issue new keys with \`mcp-guard keygen\``,
    );
  }
  const jwt = validFields(jwtSchema.shape, auth['jwt']);
  if (jwt.jwks_url?.startsWith('http://')) {
    warnings.push('auth.jwt.jwks_url uses http://: the signing keys can be replaced in transit; use https:// outside a trusted network');
  }
}

/**
 * `[[auth.client_certs]]`: only meaningful when the listener verifies client certificates; each
 * entry names one certificate (ids unique across client_certs and api_keys, so that an id in an
 * audit line is one identity), and its servers are configured.
 */
function checkClientCerts(document: unknown, names: ReadonlySet<string> | undefined, issues: IssueList): void {
  const auth = isTable(document) ? document['auth'] : undefined;
  const certs = isTable(auth) ? entriesOf(clientCertSchema.shape, auth['client_certs']) : [];
  if (!isTable(document) || !isTable(auth) || certs.length === 0) return;
  const section = document['server'];
  const tls = isTable(section) ? section['tls'] : undefined;
  // A [server] or [server.tls] that is not a table is reported by the schema: whether it would
  // verify client certificates is unknown.
  const known = (section === undefined || isTable(section)) && (tls === undefined || isTable(tls));
  if (known && (!isTable(tls) || tls['client_ca_path'] === undefined)) {
    const why = tls === undefined ? 'there is no [server.tls]' : '[server.tls] has no client_ca_path';
    issues.add(['auth', 'client_certs'], `needs [server.tls] client_ca_path: client certificates are only verified then (${why})`);
  }
  const keyIds = new Map<string, number>();
  entriesOf(apiKeySchema.shape, auth['api_keys']).forEach((key, i) => {
    if (key.id !== undefined && !keyIds.has(key.id)) keyIds.set(key.id, i);
  });
  const ids = new Map<string, number>();
  const subjects = new Map<string, number>();
  const fingerprints = new Map<string, number>();
  certs.forEach((cert, i) => {
    const at = (field: string) => ['auth', 'client_certs', i, field];
    const key = cert.id === undefined ? undefined : keyIds.get(cert.id);
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
      if (names && !names.has(name)) issues.add([...at('servers'), j], `no server named "${name}" is configured`);
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

/**
 * An enabled audit log must write somewhere: an audit section that records nothing is a mistake.
 * Read from the document's valid fields; not decided when one of the keys it depends on is invalid.
 */
function checkAudit(document: unknown, issues: IssueList): void {
  const section = isTable(document) ? document['audit'] : undefined;
  if (!isTable(section)) return;
  const audit = validFields(auditSchema.shape, section);
  const decisive = ['enabled', 'stdout', 'file', 'export_url'] as const;
  if (decisive.some((key) => section[key] !== undefined && audit[key] === undefined)) return;
  if ((audit.enabled ?? true) && !audit.stdout && audit.file === undefined && audit.export_url === undefined) {
    issues.add(['audit'], 'configure at least one sink: stdout = true, file or export_url (or enabled = false)');
  }
}

/** The `[audit.s3]` keys that take true or false, and those that take a whole number: how a variable's text is read. */
const S3_BOOLEAN_KEYS: ReadonlySet<string> = new Set(['force_path_style']);
const S3_INTEGER_KEYS: ReadonlySet<string> = new Set([
  'part_size_bytes',
  'concurrency',
  'connect_timeout_ms',
  'request_timeout_ms',
  'retry_backoff_ms',
  'retry_backoff_max_ms',
]);

/** A variable's text as the value of its key: "true"/"false", decimal digits, or the text itself. */
function variableValue(key: string, raw: string): { value: unknown } | { problem: string } {
  if (S3_BOOLEAN_KEYS.has(key)) {
    if (raw === 'true' || raw === 'false') return { value: raw === 'true' };
    return { problem: 'expected true or false' };
  }
  if (S3_INTEGER_KEYS.has(key)) {
    if (!/^[0-9]{1,16}$/.test(raw)) return { problem: 'expected a whole number (decimal digits only)' };
    return { value: Number(raw) };
  }
  return { value: raw };
}

/**
 * MCP_GUARD_AUDIT_S3_<KEY> (the key in upper case: BUCKET, REGION, ENDPOINT, FORCE_PATH_STYLE,
 * PART_SIZE_BYTES...) replaces that key of `[audit.s3]`, after `${VAR}` interpolation and before
 * validation; a variable set to "" counts as unset. A variable that is set makes `[audit.s3]`
 * exist (an `[audit]` table must). Each value is checked on its own and reported at the
 * variable's name; an invalid one replaces nothing. Variables of no key are reported too: a typo
 * must not leave the file's value in force unnoticed.
 */
function applyAuditS3Environment(document: unknown, env: Environment, issues: IssueList): unknown {
  const keys = Object.keys(auditS3Schema.shape);
  const set = Object.entries(env).filter(
    (entry): entry is [string, string] => entry[0].startsWith(AUDIT_S3_VARIABLE_PREFIX) && entry[1] !== undefined && entry[1] !== '',
  );
  if (set.length === 0) return document;
  const overrides: Record<string, unknown> = {};
  for (const [name, raw] of set) {
    const key = name.slice(AUDIT_S3_VARIABLE_PREFIX.length).toLowerCase();
    if (!keys.includes(key)) {
      issues.add([name], `not a key of [audit.s3]: expected one of ${keys.map((k) => AUDIT_S3_VARIABLE_PREFIX + k.toUpperCase()).join(', ')}`);
      continue;
    }
    const converted = variableValue(key, raw);
    if ('problem' in converted) {
      issues.add([name], converted.problem);
      continue;
    }
    const parsed = (auditS3Schema.shape as Record<string, z.ZodType>)[key]!.safeParse(converted.value, { error: describeIssue('JSON') });
    if (!parsed.success) {
      for (const issue of parsed.error.issues) issues.add([name], issue.message);
      continue;
    }
    overrides[key] = converted.value;
  }
  if (!isTable(document)) return document;
  const audit = document['audit'];
  if (audit === undefined) {
    issues.add([set[0]![0]], 'needs an [audit] table with a file: the archive uploads the rotated audit files');
    return document;
  }
  // Not a table: the schema reports it.
  if (!isTable(audit)) return document;
  const table = audit['s3'];
  if (table !== undefined && !isTable(table)) return document;
  return { ...document, audit: { ...audit, s3: { ...(table ?? {}), ...overrides } } };
}

/**
 * `[audit.s3]` uploads the files the file sink rotates: it needs `file`. kms_key_id belongs to
 * aws:kms, and the longest backoff must not be below the first. max_backups does not apply (a
 * rotated file is deleted once uploaded, never before): setting both earns a warning.
 */
function checkAuditS3(document: unknown, issues: IssueList, warnings: string[]): void {
  const audit = isTable(document) ? document['audit'] : undefined;
  if (!isTable(audit) || !isTable(audit['s3'])) return;
  const section = audit['s3'];
  const s3 = validFields(auditS3Schema.shape, section);
  if (audit['file'] === undefined)
    issues.add(['audit', 's3'], 'needs [audit] file: the archive uploads the rotated audit files, and without a file nothing is rotated');
  // kms_key_id with an invalid server_side_encryption: already reported, and which was meant is unknown.
  const encryption = section['server_side_encryption'];
  if (s3.kms_key_id !== undefined && (encryption === undefined || s3.server_side_encryption === 'AES256'))
    issues.add(['audit', 's3', 'kms_key_id'], 'only used with server_side_encryption = "aws:kms"');
  const first = s3.retry_backoff_ms ?? 1_000;
  const max = s3.retry_backoff_max_ms ?? 300_000;
  const whole = !['retry_backoff_ms', 'retry_backoff_max_ms'].some((key) => section[key] !== undefined && s3[key as keyof typeof s3] === undefined);
  if (whole && max < first) {
    if (section['retry_backoff_max_ms'] !== undefined) issues.add(['audit', 's3', 'retry_backoff_max_ms'], `must be at least retry_backoff_ms (${first})`);
    else issues.add(['audit', 's3', 'retry_backoff_ms'], `must be at most retry_backoff_max_ms (${max})`);
  }
  if (audit['max_backups'] !== undefined)
    warnings.push('audit.max_backups is not applied with [audit.s3]: a rotated file is deleted once the store has it, never before');
}
