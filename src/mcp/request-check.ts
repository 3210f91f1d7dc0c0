/**
 * Stage 3b of the pipeline: a client message is well-formed MCP before anything forwards it.
 *
 * - A method the protocol defines as a client request (tools/call, resources/read, ...) sent
 *   without an id, as a notification, is refused: it would skip authorization (which answers
 *   requests) and the audit log, and a naive server might still run it.
 * - The params of every known client request and notification are checked against the protocol's
 *   schema. A malformed request is answered -32602 here, never forwarded: an SDK server drops a
 *   message it cannot parse without answering, so forwarding it cost the client a timeout and
 *   the server a circuit failure.
 * - A method the protocol does not define passes unchecked: servers may have extensions.
 *
 * The schemas are the official SDK's, as JSON Schema generated from its zod schemas at build time
 * (request-schemas.generated.ts, scripts/gen-request-schemas.mjs): the running gateway loads no
 * zod (docs/performance.md). The small validator below understands the keywords zod emits for
 * them and refuses to compile any other, so that an SDK upgrade cannot silently loosen a check.
 * Each method's validator is compiled on its first use, into closures: a check costs a few
 * property reads, and builds strings only for the message of a failure.
 */
import { GatewayError } from '../http/errors.js';
import { isObject, type JsonRpcMessage } from '../jsonrpc/messages.js';
import { MODERN_METHODS } from '../protocol/modern.js';
import { LEGACY, MODERN } from './request-schemas.generated.js';
import type { JsonSchema, MethodSchema, SchemaTable } from './schema-table.js';

/** Which SDK's schemas apply: the v1 SDK's for legacy requests, the v2 SDK's for 2026-07-28 ones. */
export type SchemaEra = 'legacy' | 'modern';

/** A message refused, the error to answer it with, and what the audit line says. */
export interface Refusal {
  error: GatewayError;
  method: string;
  /** `invalid params` or `request sent as a notification`. */
  reason: string;
}

/** Where a value failed and why; the path is built on the way back up, only for failures. */
interface Problem {
  path: string;
  what: string;
}

type Check = (value: unknown) => Problem | undefined;

/** Keywords that describe and never constrain. */
const ANNOTATIONS = new Set(['description', 'title', 'default', 'examples', 'deprecated', '$comment']);

/** Long keys a client chose are cut in messages and audit lines. */
const MAX_KEY_IN_MESSAGE = 40;

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

function member(key: string): string {
  if (key.length > MAX_KEY_IN_MESSAGE) return `[${JSON.stringify(`${key.slice(0, MAX_KEY_IN_MESSAGE)}…`)}]`;
  return IDENTIFIER.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`;
}

function within(prefix: string, problem: Problem): Problem {
  return { path: prefix + problem.path, what: problem.what };
}

const TYPE_TESTS: Record<string, (v: unknown) => boolean> = {
  object: isObject,
  array: Array.isArray,
  string: (v) => typeof v === 'string',
  number: (v) => typeof v === 'number' && Number.isFinite(v),
  integer: (v) => Number.isInteger(v),
  boolean: (v) => typeof v === 'boolean',
  null: (v) => v === null,
};

const ARTICLE: Record<string, string> = { object: 'an object', array: 'an array', integer: 'an integer' };

function typeNames(types: readonly string[]): string {
  return types.map((t) => ARTICLE[t] ?? `a ${t}`).join(' or ');
}

/** Compiles JSON Schema into a Check. Throws on a keyword it does not know: a check must never be silently weaker than its schema. */
class Compiler {
  private readonly refs = new Map<string, Check>();

  constructor(private readonly defs: Record<string, JsonSchema>) {}

  compile(schema: JsonSchema): Check {
    const checks: Check[] = [];
    let properties: Record<string, Check> | undefined;
    let additional: Check | false | undefined;
    for (const [keyword, value] of Object.entries(schema)) {
      switch (keyword) {
        case 'type':
          checks.push(this.type(value));
          break;
        case 'properties':
          properties = {};
          for (const [key, sub] of Object.entries(value as Record<string, JsonSchema>)) properties[key] = this.compile(sub);
          break;
        case 'additionalProperties':
          additional = value === false ? false : this.isEmpty(value) ? undefined : this.compile(value as JsonSchema);
          break;
        case 'required':
          checks.push(this.required(value as string[]));
          break;
        case 'propertyNames':
          // JSON's keys are strings: `{ type: "string" }` (what a zod record emits) holds already.
          if (!(isObject(value) && value['type'] === 'string' && Object.keys(value).length === 1))
            checks.push(this.propertyNames(this.compile(value as JsonSchema)));
          break;
        case 'items':
          checks.push(this.items(this.compile(value as JsonSchema)));
          break;
        case 'anyOf':
          checks.push(this.anyOf((value as JsonSchema[]).map((s) => this.compile(s))));
          break;
        case 'allOf': {
          const all = (value as JsonSchema[]).map((s) => this.compile(s));
          checks.push((v) => {
            for (const check of all) {
              const problem = check(v);
              if (problem) return problem;
            }
            return undefined;
          });
          break;
        }
        case 'enum':
          checks.push(this.enumeration(value as unknown[]));
          break;
        case 'const':
          checks.push((v) => (v === value ? undefined : { path: '', what: `must be ${JSON.stringify(value)}` }));
          break;
        case 'minimum':
          checks.push((v) => (typeof v !== 'number' || v >= (value as number) ? undefined : { path: '', what: `must be at least ${String(value)}` }));
          break;
        case 'maximum':
          checks.push((v) => (typeof v !== 'number' || v <= (value as number) ? undefined : { path: '', what: `must be at most ${String(value)}` }));
          break;
        case '$ref':
          checks.push(this.ref(value as string));
          break;
        default:
          if (!ANNOTATIONS.has(keyword)) throw new Error(`request-check: unsupported JSON Schema keyword "${keyword}"`);
      }
    }
    if (properties !== undefined || additional !== undefined) checks.push(this.members(properties ?? {}, additional));
    if (checks.length === 0) return () => undefined;
    if (checks.length === 1) return checks[0]!;
    return (v) => {
      for (const check of checks) {
        const problem = check(v);
        if (problem) return problem;
      }
      return undefined;
    };
  }

  private isEmpty(value: unknown): boolean {
    return value === true || (isObject(value) && Object.keys(value).length === 0);
  }

  private type(value: unknown): Check {
    const types = Array.isArray(value) ? (value as string[]) : [value as string];
    const tests = types.map((t) => {
      const test = TYPE_TESTS[t];
      if (!test) throw new Error(`request-check: unsupported type "${t}"`);
      return test;
    });
    const what = `must be ${typeNames(types)}`;
    if (tests.length === 1) {
      const test = tests[0]!;
      return (v) => (test(v) ? undefined : { path: '', what });
    }
    return (v) => (tests.some((test) => test(v)) ? undefined : { path: '', what });
  }

  private required(keys: readonly string[]): Check {
    return (v) => {
      if (!isObject(v)) return undefined;
      for (const key of keys) if (!Object.hasOwn(v, key)) return { path: member(key), what: 'is required' };
      return undefined;
    };
  }

  /** Declared members by their own check; the others by `additional` (none: anything goes). */
  private members(properties: Record<string, Check>, additional: Check | false | undefined): Check {
    const declared = Object.entries(properties);
    if (additional === undefined) {
      // Only the declared members need a look: read each by name (own members only: a key that
      // Object.prototype has, such as "constructor", is read through hasOwn).
      const plain = declared.filter(([key]) => !(key in Object.prototype));
      const inherited = declared.filter(([key]) => key in Object.prototype);
      return (v) => {
        if (!isObject(v)) return undefined;
        for (const [key, check] of plain) {
          const value = v[key];
          if (value === undefined) continue;
          const problem = check(value);
          if (problem) return within(member(key), problem);
        }
        for (const [key, check] of inherited) {
          if (!Object.hasOwn(v, key)) continue;
          const problem = check(v[key]);
          if (problem) return within(member(key), problem);
        }
        return undefined;
      };
    }
    const byName = new Map(declared);
    return (v) => {
      if (!isObject(v)) return undefined;
      for (const key in v) {
        if (!Object.hasOwn(v, key)) continue;
        const check = byName.get(key) ?? additional;
        if (check === false) return { path: member(key), what: 'is not allowed' };
        const problem = check(v[key]);
        if (problem) return within(member(key), problem);
      }
      return undefined;
    };
  }

  private propertyNames(check: Check): Check {
    return (v) => {
      if (!isObject(v)) return undefined;
      for (const key of Object.keys(v)) {
        const problem = check(key);
        if (problem) return { path: member(key), what: `has a name that ${problem.what}` };
      }
      return undefined;
    };
  }

  private items(check: Check): Check {
    return (v) => {
      if (!Array.isArray(v)) return undefined;
      for (let i = 0; i < v.length; i++) {
        const problem = check(v[i]);
        if (problem) return within(`[${i}]`, problem);
      }
      return undefined;
    };
  }

  private anyOf(branches: Check[]): Check {
    return (v) => {
      for (const branch of branches) if (!branch(v)) return undefined;
      const problems = branches.map((branch) => branch(v)!);
      // Every branch refused the value itself by its type: say which types would do.
      if (problems.every((p) => p.path === '' && p.what.startsWith('must be '))) {
        return { path: '', what: `must be ${problems.map((p) => p.what.slice(8)).join(' or ')}` };
      }
      return { path: '', what: `matches none of its ${branches.length} allowed forms` };
    };
  }

  private enumeration(values: readonly unknown[]): Check {
    const allowed = new Set(values);
    const what = `must be one of ${values.map((x) => JSON.stringify(x)).join(', ')}`;
    return (v) => (allowed.has(v) ? undefined : { path: '', what });
  }

  /** `#/$defs/<name>`, compiled once; a def that refers to itself sees its own check through the placeholder. */
  private ref(target: string): Check {
    const name = /^#\/\$defs\/(.+)$/.exec(target)?.[1];
    const schema = name === undefined ? undefined : this.defs[name];
    if (name === undefined || schema === undefined) throw new Error(`request-check: unresolvable $ref "${target}"`);
    const known = this.refs.get(name);
    if (known) return known;
    let compiled: Check | undefined;
    const placeholder: Check = (v) => compiled!(v);
    this.refs.set(name, placeholder);
    compiled = this.compile(schema);
    this.refs.set(name, compiled);
    return compiled;
  }
}

/**
 * A schema's check, for tests: the problem with `value` as `where` and what, or undefined. Throws
 * on a keyword the validator does not know.
 */
export function compileSchema(schema: JsonSchema, defs: Record<string, JsonSchema> = {}): (value: unknown) => string | undefined {
  const check = new Compiler(defs).compile(schema);
  return (value) => {
    const problem = check(value);
    return problem && `${problem.path || '(value)'} ${problem.what}`;
  };
}

/** One era's checks, compiled lazily by method. */
class EraChecks {
  private readonly compiler: Compiler;
  private readonly requests: Map<string, MethodSchema>;
  private readonly notifications: Map<string, MethodSchema>;
  private readonly compiled = new Map<MethodSchema, Check>();

  /** `only`: the requests of the era, when the SDK's table also has the other era's. */
  constructor(table: SchemaTable, only?: ReadonlySet<string>) {
    this.compiler = new Compiler(table.defs);
    // Maps, not the objects: a client's method name must never reach Object.prototype.
    this.requests = new Map(Object.entries(table.requests).filter(([method]) => only === undefined || only.has(method)));
    this.notifications = new Map(Object.entries(table.notifications));
  }

  requestMethods(): Iterable<string> {
    return this.requests.keys();
  }

  /** The problem with a message's params, or undefined (well-formed, or a method the protocol does not define). */
  problem(method: string, isRequest: boolean, params: unknown): Problem | undefined {
    const entry = (isRequest ? this.requests : this.notifications).get(method);
    if (entry === undefined) return undefined;
    if (params === undefined) return entry.optional ? undefined : { path: '', what: 'is required' };
    let check = this.compiled.get(entry);
    if (check === undefined) {
      check = this.compiler.compile(entry.schema);
      this.compiled.set(entry, check);
    }
    return check(params);
  }
}

let eras: { legacy: EraChecks; modern: EraChecks; requestOnly: ReadonlySet<string> } | undefined;

function checks() {
  if (eras === undefined) {
    const legacy = new EraChecks(LEGACY);
    // The v2 SDK's requests include the legacy ones it still serves (initialize, ping, ...): a
    // 2026-07-28 request of those is a method the era does not have, answered -32601 later.
    const modern = new EraChecks(MODERN, MODERN_METHODS);
    eras = { legacy, modern, requestOnly: new Set([...legacy.requestMethods(), ...modern.requestMethods()]) };
  }
  return eras;
}

/** True for a method the protocol defines as a client request, in either era. */
export function isRequestMethod(method: string): boolean {
  return checks().requestOnly.has(method);
}

/** Where in the body a refused message is: nothing for a single message. */
function element(batch: boolean, index: number): string {
  return batch ? `batch element ${index}: ` : '';
}

/**
 * The first message of a POST body that must not be forwarded, or undefined when all may go.
 * A batch is refused whole (decided like the envelope checks of stage 3: nothing of a body with
 * a malformed element reaches the server), and the message says which element.
 */
export function checkMessages(messages: readonly JsonRpcMessage[], era: SchemaEra, batch: boolean): Refusal | undefined {
  const all = checks();
  const { requestOnly } = all;
  const table = all[era];
  for (let i = 0; i < messages.length; i++) {
    const message = messages[i]!;
    if (!('method' in message)) continue;
    const isRequest = 'id' in message;
    if (!isRequest && requestOnly.has(message.method)) {
      return {
        method: message.method,
        reason: 'request sent as a notification',
        error: new GatewayError(
          'invalid_request',
          `Invalid Request: ${element(batch, i)}${message.method} is a request and needs an id; it was not forwarded`,
          null,
        ),
      };
    }
    const problem = table.problem(message.method, isRequest, message.params);
    if (problem) {
      return {
        method: message.method,
        reason: 'invalid params',
        error: new GatewayError(
          'invalid_params',
          `Invalid params: ${element(batch, i)}${message.method}: params${problem.path} ${problem.what}`,
          isRequest ? message.id : null,
        ),
      };
    }
  }
  return undefined;
}
