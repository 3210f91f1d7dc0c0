/**
 * The params check (src/mcp/request-check.ts) is the official SDK's, not a second copy: the
 * generated schemas are what the generator derives from the installed SDKs today, and on tens of
 * thousands of generated params the checker accepts exactly what the SDK's own zod schemas accept.
 */
import { readFileSync } from 'node:fs';
import * as core from '@modelcontextprotocol/core';
import * as sdk from '@modelcontextprotocol/sdk/types.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkMessages, compileSchema, isRequestMethod, type SchemaEra } from '../../src/mcp/request-check.js';
import type { JsonSchema, SchemaTable } from '../../src/mcp/schema-table.js';
import { MODERN_METHODS } from '../../src/protocol/modern.js';
import { LEGACY, MODERN } from '../../src/mcp/request-schemas.generated.js';
import { generate } from '../../scripts/gen-request-schemas.mjs';
import { httpError } from '../../src/http/errors.js';
import type { JsonRpcMessage } from '../../src/jsonrpc/messages.js';

type ZodLike = { safeParse(value: unknown): { success: boolean } };
type UnionLike = { options: Array<{ shape: { method: { value: string }; params: ZodLike } }> };

function zodParams(union: unknown): Map<string, ZodLike> {
  return new Map((union as UnionLike).options.map((o) => [o.shape.method.value, o.shape.params]));
}

const ERAS: Array<{ era: SchemaEra; table: SchemaTable; requests: Map<string, ZodLike>; notifications: Map<string, ZodLike> }> = [
  { era: 'legacy', table: LEGACY, requests: zodParams(sdk.ClientRequestSchema), notifications: zodParams(sdk.ClientNotificationSchema) },
  { era: 'modern', table: MODERN, requests: zodParams(core.ClientRequestSchema), notifications: zodParams(core.ClientNotificationSchema) },
];

/** A deterministic PRNG (mulberry32): the same samples on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const STRINGS = ['', 'x', 'ref/prompt', 'ref/resource', 'light', 'dark', 'debug', 'error', 'working', 'completed', '2025-06-18', 'file:///a'];
const NUMBERS = [0, 1, -1, 2.5, 9007199254740991, -9007199254740991, 9007199254740992, 1e300];

/**
 * Values drawn from a JSON Schema (mostly valid, so that deep members are reached), then mutated:
 * a member replaced by an arbitrary JSON value, a required one removed, an unknown one added.
 */
class Sampler {
  constructor(
    private readonly defs: Record<string, JsonSchema>,
    private readonly random: () => number,
    private readonly noise: unknown[],
  ) {}

  private pick<T>(values: readonly T[]): T {
    return values[Math.floor(this.random() * values.length)]!;
  }

  private any(): unknown {
    return this.pick(this.noise);
  }

  valid(schema: JsonSchema, depth = 0): unknown {
    if (depth > 8) return {};
    if (typeof schema['$ref'] === 'string') return this.valid(this.defs[(schema['$ref'] as string).slice('#/$defs/'.length)]!, depth + 1);
    if ('const' in schema) return schema['const'];
    if (Array.isArray(schema['enum'])) return this.pick(schema['enum'] as unknown[]);
    if (Array.isArray(schema['anyOf'])) return this.valid(this.pick(schema['anyOf'] as JsonSchema[]), depth + 1);
    if (Array.isArray(schema['allOf'])) {
      const parts = (schema['allOf'] as JsonSchema[]).map((s) => this.valid(s, depth + 1));
      return parts.every((p) => typeof p === 'object' && p !== null && !Array.isArray(p)) ? Object.assign({}, ...parts) : parts[0];
    }
    const types = schema['type'] === undefined ? undefined : ([] as string[]).concat(schema['type'] as string | string[]);
    const type = types ? this.pick(types) : undefined;
    switch (type) {
      case 'object': {
        const out: Record<string, unknown> = {};
        const required = new Set((schema['required'] as string[] | undefined) ?? []);
        for (const [key, sub] of Object.entries((schema['properties'] as Record<string, JsonSchema> | undefined) ?? {})) {
          if (required.has(key) || this.random() < 0.6) out[key] = this.valid(sub, depth + 1);
        }
        const extra = schema['additionalProperties'];
        if (extra !== undefined && extra !== false && this.random() < 0.4)
          out[this.pick(['k', 'other', '_meta2'])] = this.valid(extra === true ? {} : (extra as JsonSchema), depth + 1);
        return out;
      }
      case 'array': {
        const items = (schema['items'] as JsonSchema | undefined) ?? {};
        return Array.from({ length: Math.floor(this.random() * 3) }, () => this.valid(items, depth + 1));
      }
      case 'string':
        return this.pick(STRINGS);
      case 'integer':
        return this.pick([0, 1, -1, 42, 9007199254740991]);
      case 'number':
        return this.pick(NUMBERS);
      case 'boolean':
        return this.random() < 0.5;
      case 'null':
        return null;
      default:
        return this.any();
    }
  }

  /** A copy of `value` with, at each node, a small chance of being broken. */
  mutate(value: unknown, rate: number): unknown {
    if (this.random() < rate) return this.any();
    if (Array.isArray(value)) return value.map((v) => this.mutate(v, rate));
    if (typeof value !== 'object' || value === null) return value;
    const out: Record<string, unknown> = {};
    for (const [key, v] of Object.entries(value)) {
      if (this.random() < rate) continue;
      out[key] = this.mutate(v, rate);
    }
    if (this.random() < rate) out[this.pick(['name', 'uri', 'extra', 'progressToken', 'cursor'])] = this.any();
    return out;
  }
}

function message(method: string, request: boolean, params: unknown): JsonRpcMessage {
  const m: Record<string, unknown> = { jsonrpc: '2.0', method };
  if (request) m['id'] = 1;
  if (params !== undefined) m['params'] = params;
  return m as unknown as JsonRpcMessage;
}

describe('request-schemas.generated.ts', () => {
  it('is what the generator derives from the installed SDKs now (regenerate with `npm run schemas`)', async () => {
    const committed = readFileSync(new URL('../../src/mcp/request-schemas.generated.ts', import.meta.url), 'utf8');
    expect(committed).toBe(await generate());
  });

  it('covers every client request and notification of both SDKs', () => {
    for (const { table, requests, notifications } of ERAS) {
      expect(Object.keys(table.requests).sort()).toEqual([...requests.keys()].sort());
      expect(Object.keys(table.notifications).sort()).toEqual([...notifications.keys()].sort());
    }
    for (const method of ['tools/call', 'tools/list', 'resources/read', 'initialize', 'ping', 'tasks/get', 'server/discover', 'subscriptions/listen']) {
      expect(isRequestMethod(method), method).toBe(true);
    }
    for (const method of ['notifications/cancelled', 'notifications/initialized', 'x/custom', '__proto__', 'constructor']) {
      expect(isRequestMethod(method), method).toBe(false);
    }
    // Every method of the 2026-07-28 era (the gateway's own list) has the v2 SDK's schema.
    for (const method of MODERN_METHODS) expect(Object.keys(MODERN.requests), method).toContain(method);
  });

  it("checks a 2026-07-28 request only for the era's own methods: the legacy ones are answered -32601 later", () => {
    expect(checkMessages([message('initialize', true, { _meta: {} })], 'modern', false)).toBeUndefined();
    expect(checkMessages([message('initialize', true, { _meta: {} })], 'legacy', false)?.error.kind).toBe('invalid_params');
    expect(checkMessages([message('subscriptions/listen', true, { _meta: {} })], 'modern', false)?.error.message).toBe(
      'Invalid params: subscriptions/listen: params.notifications is required',
    );
  });
});

describe('the params check agrees with the SDK', () => {
  const noise = fc.sample(fc.jsonValue({ maxDepth: 2 }), { seed: 16, numRuns: 400 });
  noise.push([], {}, null, '', 0, -1, 1.5, true, [{}], { _meta: [] }, { _meta: { progressToken: 1.5 } });

  for (const { era, table, requests, notifications } of ERAS) {
    it(`${era}: the same verdict as the SDK's zod schemas on every generated sample, valid and not`, () => {
      const sampler = new Sampler(table.defs, prng(era === 'legacy' ? 5 : 6), noise);
      let compared = 0;
      for (const [kind, zods, entries] of [
        ['request', requests, table.requests],
        ['notification', notifications, table.notifications],
      ] as const) {
        for (const [method, entry] of Object.entries(entries)) {
          // A 2026-07-28 request is checked only for the methods the era has (below).
          if (era === 'modern' && kind === 'request' && !MODERN_METHODS.has(method)) continue;
          const zod = zods.get(method)!;
          const verdicts = { accepted: 0, refused: 0 };
          const samples: unknown[] = [undefined, ...noise.filter((n) => typeof n === 'object' && n !== null && !Array.isArray(n))];
          for (let i = 0; i < 1500; i++) {
            const valid = sampler.valid(entry.schema);
            samples.push(valid, sampler.mutate(valid, 0.05), sampler.mutate(valid, 0.25));
          }
          for (const params of samples) {
            const ours = checkMessages([message(method, kind === 'request', params)], era, false) === undefined;
            const theirs = zod.safeParse(params).success;
            if (ours !== theirs)
              expect.fail(
                `${era} ${method} ${JSON.stringify(params)}: the SDK ${theirs ? 'accepts' : 'refuses'} it, the gateway ${ours ? 'accepts' : 'refuses'} it`,
              );
            verdicts[ours ? 'accepted' : 'refused']++;
            compared++;
          }
          // The samples reach both sides of every method's schema.
          expect(verdicts.accepted, `${method} accepted`).toBeGreaterThan(100);
          expect(verdicts.refused, `${method} refused`).toBeGreaterThan(10);
        }
      }
      expect(compared).toBeGreaterThan(50_000);
    });
  }
});

describe('the answers', () => {
  const refusal = (messages: JsonRpcMessage[], batch = false, era: SchemaEra = 'legacy') => {
    const r = checkMessages(messages, era, batch);
    return r && { ...httpError(r.error), reason: r.reason, method: r.method };
  };

  it('finding 5: tools/list with params._meta = [] is answered -32602 with its id, saying where', () => {
    expect(refusal([message('tools/list', true, { _meta: [] })])).toMatchObject({
      status: 400,
      body: { jsonrpc: '2.0', id: 1, error: { code: -32602, message: 'Invalid params: tools/list: params._meta must be an object' } },
      reason: 'invalid params',
    });
  });

  it('names what is wrong, briefly: a missing member, a wrong type deep down, params left out', () => {
    const text = (m: JsonRpcMessage) => refusal([m])?.body.error.message;
    expect(text(message('tools/call', true, { arguments: {} }))).toBe('Invalid params: tools/call: params.name is required');
    expect(text(message('tools/call', true, { name: 'echo', arguments: ['a'] }))).toBe('Invalid params: tools/call: params.arguments must be an object');
    expect(text(message('tools/call', true, undefined))).toBe('Invalid params: tools/call: params is required');
    expect(text(message('tools/list', true, { _meta: { progressToken: 1.5 } }))).toBe(
      'Invalid params: tools/list: params._meta.progressToken must be a string or an integer',
    );
    expect(text(message('completion/complete', true, { ref: { type: 'ref/x' }, argument: { name: 'a', value: 'b' } }))).toBe(
      'Invalid params: completion/complete: params.ref matches none of its 2 allowed forms',
    );
    expect(text(message('logging/setLevel', true, { level: 'loud' }))).toMatch(/^Invalid params: logging\/setLevel: params\.level must be one of "debug", /);
    expect(text(message('notifications/cancelled', false, { requestId: {} }))).toBe(
      'Invalid params: notifications/cancelled: params.requestId must be a string or an integer',
    );
    expect(text(message('tools/list', true, { _meta: { 'io.modelcontextprotocol/related-task': { taskId: 1 } } }))).toBe(
      'Invalid params: tools/list: params._meta["io.modelcontextprotocol/related-task"].taskId must be a string',
    );
  });

  it('passes what it does not know: unknown methods, unknown members, methods named like Object.prototype', () => {
    expect(refusal([message('x/custom', true, { _meta: [] })])).toBeUndefined();
    expect(refusal([message('tools/call', true, { name: 'echo', arguments: {}, vendor: [1] })])).toBeUndefined();
    expect(refusal([message('__proto__', true, { a: 1 }), message('constructor', false, {})])).toBeUndefined();
    expect(refusal([message('tools/list', true, undefined), message('notifications/initialized', false, undefined)])).toBeUndefined();
  });

  it('finding 6: a request-only method sent as a notification is refused, -32600 with id null', () => {
    expect(refusal([message('tools/call', false, { name: 'echo', arguments: {} })])).toMatchObject({
      status: 400,
      body: { id: null, error: { code: -32600, message: 'Invalid Request: tools/call is a request and needs an id; it was not forwarded' } },
      reason: 'request sent as a notification',
      method: 'tools/call',
    });
    expect(refusal([message('server/discover', false, undefined)], false, 'modern')?.reason).toBe('request sent as a notification');
  });

  it('refuses a batch whole, naming the element', () => {
    const batch = [message('tools/list', true, undefined), message('tools/call', false, { name: 'echo' })];
    expect(refusal(batch, true)?.body.error.message).toBe('Invalid Request: batch element 1: tools/call is a request and needs an id; it was not forwarded');
    const params = [message('tools/list', true, undefined), { jsonrpc: '2.0', id: 'b', method: 'resources/read', params: { uri: 7 } } as JsonRpcMessage];
    expect(refusal(params, true)?.body).toMatchObject({
      id: 'b',
      error: { code: -32602, message: 'Invalid params: batch element 1: resources/read: params.uri must be a string' },
    });
  });

  it('cuts long member names a client chose', () => {
    const key = 'k'.repeat(500);
    const text = refusal([message('tools/call', true, { name: 'echo', _meta: { progressToken: 1, [key]: 1 }, arguments: 'x' })])?.body.error.message;
    expect(text).toBe('Invalid params: tools/call: params.arguments must be an object');
    const check = compileSchema({ type: 'object', additionalProperties: { type: 'string' } });
    expect(check({ [key]: 1 })).toBe(`["${'k'.repeat(40)}…"] must be a string`);
  });

  it('refuses to compile a keyword it does not know, rather than ignore a constraint', () => {
    expect(() => compileSchema({ type: 'string', pattern: '^a' })).toThrow(/unsupported JSON Schema keyword "pattern"/);
    expect(() => compileSchema({ oneOf: [{ type: 'string' }] })).toThrow(/unsupported JSON Schema keyword "oneOf"/);
    expect(() => compileSchema({ $ref: '#/$defs/missing' })).toThrow(/unresolvable \$ref/);
  });
});
