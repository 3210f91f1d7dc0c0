/**
 * Generators of what a hostile upstream writes (test/fuzz/upstream.test.ts): JSON-RPC messages
 * with every member wrong in turn, nesting on both sides of MAX_UPSTREAM_DEPTH, huge strings,
 * duplicate and unknown ids, server requests, notifications with odd params, batches, invalid
 * UTF-8, partial lines and plain garbage.
 *
 * Messages are built as text with the placeholders of test/fixtures/hostile-upstream.mjs, expanded
 * by the upstream: `"__WIRE__"` (the call's id on the wire: an early or duplicate answer, or its
 * progress token), `__DEEP:n__` (n nested arrays) and `__PAD:n__` (n letters), so that a message
 * of megabytes costs a few bytes to generate and to carry through the gateway to the upstream.
 */
import fc from 'fast-check';
import { MAX_UPSTREAM_DEPTH } from '../../src/upstreams/inbound.js';
import { MAX_LINE_BYTES } from '../../src/upstreams/stdio/line-reader.js';

/** One thing the upstream writes: bytes (base64), and for stdio whether a newline follows. */
export interface Item {
  b64: string;
  nl: boolean;
}

/** What the upstream does for one tools/call (hostile-upstream.mjs, tool `emit`). */
export interface Script {
  items: Item[];
  answer: 'result' | 'none' | 'deep';
  after: Item[];
  /** HTTP only: the answer as one JSON body, as an SSE stream, or on the session's GET stream. */
  http: 'json' | 'sse' | 'get';
}

const str = (s: string): string => JSON.stringify(s);

/** Unicode text of every kind: astral characters, lone surrogates, controls, NUL. */
const anyText = (maxLength = 24) => fc.oneof(fc.string({ maxLength }), fc.string({ unit: 'binary', maxLength }), fc.string({ unit: 'grapheme', maxLength }));

/** Depths around the limit (the message's own levels included), and far beyond it. */
const depth = fc.oneof(
  {
    weight: 40,
    arbitrary: fc.constantFrom(1, 8, 64, MAX_UPSTREAM_DEPTH - 3, MAX_UPSTREAM_DEPTH - 2, MAX_UPSTREAM_DEPTH - 1, MAX_UPSTREAM_DEPTH, MAX_UPSTREAM_DEPTH + 1),
  },
  { weight: 20, arbitrary: fc.constantFrom(1_000, 5_000, 20_000) },
  { weight: 1, arbitrary: fc.constantFrom(200_000, 1_000_000) },
);
const deepValue = depth.map((n) => `__DEEP:${n}__`);

/** Huge strings: mostly a few KB to a few MB; rarely more than a stdout line or an SSE event may hold. */
const hugeString = fc
  .oneof(
    { weight: 300, arbitrary: fc.constant(1_000) },
    { weight: 100, arbitrary: fc.constant(65_536) },
    { weight: 15, arbitrary: fc.constant(1_000_000) },
    { weight: 3, arbitrary: fc.constant(4_000_000) },
    { weight: 1, arbitrary: fc.constant(MAX_LINE_BYTES + 1_000) },
  )
  .map((n) => `"__PAD:${n}__"`);

/** Any JSON value, as text. */
const jsonText = fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v) ?? 'null');

/** Ids: the call's own (answered early, twice, or as a progress token), unknown ones, every wrong type. */
const idValue = fc.oneof(
  { weight: 5, arbitrary: fc.constant('"__WIRE__"') },
  { weight: 3, arbitrary: fc.integer({ min: -5, max: 2_000_000 }).map(String) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      'null',
      'true',
      '"x"',
      '""',
      '1.5',
      '-0',
      '1e400',
      '[1]',
      '{}',
      '{"a":1}',
      '"__WIRE__ "',
      '9007199254740993',
      `"${'i'.repeat(5_000)}"`,
    ),
  },
  { weight: 1, arbitrary: anyText(40).map(str) },
  { weight: 1, arbitrary: deepValue },
);

/** Methods a server sends, unknown ones, and wrong types. */
const methodValue = fc.oneof(
  {
    weight: 8,
    arbitrary: fc
      .constantFrom(
        'notifications/progress',
        'notifications/message',
        'notifications/cancelled',
        'notifications/resources/updated',
        'notifications/resources/list_changed',
        'notifications/tools/list_changed',
        'notifications/prompts/list_changed',
        'sampling/createMessage',
        'elicitation/create',
        'roots/list',
        'ping',
        'tasks/get',
        'unknown/method',
      )
      .map(str),
  },
  { weight: 2, arbitrary: anyText(40).map(str) },
  { weight: 1, arbitrary: fc.constantFrom('null', '42', '[]', '{}', '""', `"${'m'.repeat(5_000)}"`) },
);

/** params (and results): what MCP expects, its members wrong, nesting, huge strings, wrong types. */
const paramsValue = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('{}', 'null', '[]', '"s"', '7', 'true') },
  {
    weight: 4,
    arbitrary: fc
      .record(
        {
          progressToken: idValue,
          progress: fc.oneof(fc.constantFrom('1', '0.5', '-1', '"1"', 'null', '1e308'), deepValue),
          total: fc.constantFrom('10', '"x"', '[]'),
          requestId: idValue,
          reason: fc.oneof(anyText(20).map(str), hugeString),
          level: fc.constantFrom('"info"', '"error"', '"nonsense"', '7'),
          logger: anyText(10).map(str),
          data: fc.oneof(jsonText, deepValue, hugeString),
          uri: fc.oneof(fc.constantFrom('"file:///x"', '"demo://resource/1"', '7', 'null'), anyText(20).map(str)),
          messages: fc.constantFrom('[]', '[{"role":"user","content":{"type":"text","text":"hi"}}]', '"x"', '__DEEP:300__'),
          maxTokens: fc.constantFrom('10', '"x"'),
          message: anyText(20).map(str),
          requestedSchema: fc.constantFrom('{"type":"object","properties":{}}', '[]', '__DEEP:5000__'),
          content: fc.constantFrom('[]', '[{"type":"text","text":"x"}]', '"x"', 'null', '[{"type":"image","data":"__PAD:100000__"}]'),
          tools: fc.constantFrom('[]', '[{"name":"echo","inputSchema":{"type":"object"}}]', '[null,1,"x"]', '{}'),
          _meta: fc.oneof(
            fc.constantFrom('{}', '[]', 'null', '{"progressToken":"__WIRE__"}', '{"io.modelcontextprotocol/subscriptionId":"__WIRE__"}'),
            deepValue,
          ),
          task: fc.constantFrom('{"taskId":"t1","status":"working"}', '[]'),
        },
        { requiredKeys: [] },
      )
      .map(
        (members) =>
          `{${Object.entries(members)
            .map(([k, v]) => `${str(k)}:${v}`)
            .join(',')}}`,
      ),
  },
  { weight: 2, arbitrary: deepValue },
  { weight: 1, arbitrary: hugeString },
  { weight: 1, arbitrary: jsonText },
);

/** The members of a message, in an order (the id first or last: both ways libraries write them). */
function object(members: Array<[string, string | undefined]>, reversed: boolean): string {
  const present = members.filter((m): m is [string, string] => m[1] !== undefined).map(([k, v]) => `${str(k)}:${v}`);
  return `{${(reversed ? present.reverse() : present).join(',')}}`;
}

const jsonrpc = fc.oneof(
  { weight: 12, arbitrary: fc.constant<string | undefined>('"2.0"') },
  { weight: 1, arbitrary: fc.constantFrom<string | undefined>(undefined, '"1.0"', '2', 'null') },
);
const maybe = <T>(a: fc.Arbitrary<T>, weight = 3) =>
  fc.oneof({ weight, arbitrary: a.map((v): T | undefined => v) }, { weight: 1, arbitrary: fc.constant<T | undefined>(undefined) });

const notification = fc.tuple(jsonrpc, methodValue, maybe(paramsValue), fc.boolean()).map(([j, m, p, r]) =>
  object(
    [
      ['jsonrpc', j],
      ['method', m],
      ['params', p],
    ],
    r,
  ),
);

const serverRequest = fc.tuple(jsonrpc, idValue, methodValue, maybe(paramsValue), fc.boolean()).map(([j, id, m, p, r]) =>
  object(
    [
      ['jsonrpc', j],
      ['id', id],
      ['method', m],
      ['params', p],
    ],
    r,
  ),
);

const errorValue = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('{"code":-32000,"message":"failed"}', '{"code":-32601,"message":"nope","data":{"x":1}}') },
  { weight: 1, arbitrary: fc.constantFrom('{}', '"boom"', 'null', '{"code":"x","message":1}', '{"code":1.5,"message":"m"}', '{"code":1e400,"message":"m"}') },
  { weight: 1, arbitrary: fc.tuple(deepValue, hugeString).map(([d, h]) => `{"code":-1,"message":${h},"data":${d}}`) },
);

const response = fc
  .tuple(
    jsonrpc,
    idValue,
    fc.oneof({ weight: 3, arbitrary: paramsValue.map((r) => ['result', r] as const) }, { weight: 1, arbitrary: errorValue.map((e) => ['error', e] as const) }),
    fc.boolean(),
    fc.boolean(),
  )
  .map(([j, id, [kind, value], r, both]) =>
    object([['jsonrpc', j], ['id', id], [kind, value], ...(both ? [[kind === 'result' ? 'error' : 'result', '{}'] as [string, string]] : [])], r),
  );

/** Text that is no JSON-RPC message at all, or broken on the way. */
const garbage = fc.oneof(
  fc.constantFrom(
    '',
    ' ',
    'not json',
    '{',
    '[',
    '[]',
    '{}',
    'null',
    '"str"',
    '42',
    '{"jsonrpc":"2.0"',
    '\ufeff{"jsonrpc":"2.0","method":"ping"}',
    '{"jsonrpc":"2.0","method":"x"}\r',
    '\u0000\u0000',
    '[[[[[[',
  ),
  anyText(60),
  fc.tuple(notification, fc.nat()).map(([m, n]) => m.slice(0, n % (m.length + 1))),
  fc.array(fc.oneof(notification, response), { minLength: 1, maxLength: 3 }).map((ms) => `[${ms.join(',')}]`),
  fc.tuple(deepValue, deepValue).map(([a, b]) => `[${a},${b}]`),
);

/** Byte sequences that are not UTF-8, spliced into a message or alone. */
const invalidUtf8 = fc.constantFrom([0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82], [0x80, 0x80, 0x80]);

/** One message as bytes: mostly UTF-8 text; sometimes with bytes that are not UTF-8 in it. */
const messageBytes = fc
  .tuple(
    fc.oneof(
      { weight: 5, arbitrary: notification },
      { weight: 3, arbitrary: response },
      { weight: 2, arbitrary: serverRequest },
      { weight: 2, arbitrary: garbage },
    ),
    fc.oneof({ weight: 15, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.tuple(invalidUtf8, fc.nat()) }),
  )
  .map(([text, broken]) => {
    const bytes = Buffer.from(text, 'utf8');
    if (!broken) return bytes;
    const [bad, at] = broken;
    const cut = at % (bytes.length + 1);
    return Buffer.concat([bytes.subarray(0, cut), Buffer.from(bad), bytes.subarray(cut)]);
  });

/** An item: a message, and (stdio) whether a newline ends it; a partial line joins the next one. */
export const item: fc.Arbitrary<Item> = fc
  .tuple(messageBytes, fc.oneof({ weight: 200, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }))
  .map(([bytes, nl]) => ({ b64: bytes.toString('base64'), nl }));

export const script: fc.Arbitrary<Script> = fc.record({
  items: fc.array(item, { maxLength: 10 }),
  answer: fc.oneof(
    { weight: 95, arbitrary: fc.constant('result' as const) },
    { weight: 4, arbitrary: fc.constant('deep' as const) },
    { weight: 1, arbitrary: fc.constant('none' as const) },
  ),
  after: fc.array(item, { maxLength: 4 }),
  http: fc.constantFrom('sse', 'sse', 'sse', 'json', 'json', 'get'),
});

/** One client call of the fuzzing: where it goes, how it asks, and what the upstream does. */
export interface Call {
  server: 'stdio' | 'http';
  session: boolean;
  sse: boolean;
  progress: boolean;
  script: Script;
}

export const call: fc.Arbitrary<Call> = fc.record({
  server: fc.constantFrom('stdio' as const, 'http' as const),
  session: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  sse: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  progress: fc.boolean(),
  script,
});

/** The messages a call makes the upstream write (the answer not counted). */
export function messagesOf(c: Call): number {
  return c.script.items.length + c.script.after.length;
}
