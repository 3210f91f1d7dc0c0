/**
 * Generators of client input for the fuzz tests: JSON-RPC bodies (valid and broken in every way a
 * client can break them), header values, paths and server names. Weighted so that most inputs
 * get past authentication and parsing and reach the deeper stages, while every kind of garbage
 * still comes up often.
 */
import fc from 'fast-check';

/** MCP methods the gateway treats specially, and a few it just forwards. */
const METHODS = [
  'initialize',
  'ping',
  'tools/list',
  'tools/call',
  'resources/list',
  'resources/read',
  'resources/subscribe',
  'resources/unsubscribe',
  'prompts/get',
  'completion/complete',
  'logging/setLevel',
  'notifications/initialized',
  'notifications/cancelled',
  'notifications/progress',
  'notifications/roots/list_changed',
] as const;

/** Unicode text of every kind: astral characters, lone surrogates, controls, NUL. */
const anyText = (maxLength = 24) => fc.oneof(fc.string({ maxLength }), fc.string({ unit: 'binary', maxLength }), fc.string({ unit: 'grapheme', maxLength }));

/** Strings over what an HTTP header value may carry (HTAB, printable ASCII, obs-text bytes read as latin1). */
export const headerText = (maxLength = 40) =>
  fc.string({
    unit: fc.oneof(fc.integer({ min: 0x20, max: 0x7e }), fc.constant(0x09), fc.integer({ min: 0x80, max: 0xff })).map((c) => String.fromCharCode(c)),
    maxLength,
  });

/** JSON-RPC ids: valid ones most of the time, then every wrong type and size. */
export const id = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: -1_000, max: 1_000_000 }) },
  { weight: 3, arbitrary: fc.string({ maxLength: 40 }) },
  {
    weight: 2,
    arbitrary: fc.constantFrom<unknown>(
      null,
      true,
      0,
      -0,
      1.5,
      2 ** 53 - 1,
      2 ** 53,
      2 ** 64,
      -(2 ** 63),
      1e308,
      Number.MAX_VALUE,
      Number.MIN_VALUE,
      '',
      'x'.repeat(256),
      'x'.repeat(257),
      'y'.repeat(4_000),
      [],
      [1],
      {},
      { id: 1 },
    ),
  },
  { weight: 1, arbitrary: anyText(300) },
);

/** Method names: the protocol's, unknown ones, empty, too long, not strings. */
export const method = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom<unknown>(...METHODS) },
  { weight: 2, arbitrary: anyText(40) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>('', 'm'.repeat(256), 'm'.repeat(257), 'n'.repeat(5_000), null, 42, true, [], {}, ['tools/list']) },
);

/** JSON values nested up to `depth` levels (objects and arrays), with awkward leaves. */
function nested(depth: number): fc.Arbitrary<unknown> {
  const leaf = fc.oneof(
    fc.constantFrom<unknown>(null, true, false, 0, -0, 1e308, -1e-308, '', '__proto__', 'constructor'),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    anyText(16),
  );
  if (depth <= 0) return leaf;
  const inner = nested(depth - 1);
  return fc.oneof(
    { weight: 2, arbitrary: leaf },
    { weight: 1, arbitrary: fc.array(inner, { maxLength: 3 }) },
    {
      weight: 1,
      arbitrary: fc.dictionary(fc.oneof(anyText(8), fc.constantFrom('__proto__', 'constructor', 'toString', '_meta', 'name')), inner, { maxKeys: 3 }),
    },
  );
}

/** A value nested exactly `depth` levels deep, as objects or arrays. */
function deep(depth: number, leaf: unknown = 1): unknown {
  let value: unknown = leaf;
  for (let i = 0; i < depth; i++) value = i % 2 === 0 ? { a: value } : [value];
  return value;
}

/** params: tools/call shapes, progress tokens, nesting around the depth limit, wrong types. */
export const params = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  {
    weight: 4,
    arbitrary: fc.record(
      {
        name: fc.oneof(fc.constantFrom<unknown>('echo', 'admin_reset', 'unknown', '', 'e'.repeat(300)), anyText(20), nested(1)),
        arguments: fc.oneof(nested(3), fc.constant({ message: 'hi' })),
        _meta: fc.oneof(fc.record({ progressToken: fc.oneof(fc.integer(), fc.string({ maxLength: 10 }), nested(1)) }, { requiredKeys: [] }), nested(1)),
        cursor: nested(0),
        uri: nested(0),
        requestId: fc.oneof(fc.integer(), fc.string({ maxLength: 10 }), nested(1)),
        protocolVersion: fc.oneof(fc.constantFrom('2025-06-18', '2024-11-05', '1999-01-01'), anyText(12)),
        capabilities: nested(2),
        clientInfo: nested(2),
      },
      { requiredKeys: [] },
    ),
  },
  { weight: 2, arbitrary: fc.integer({ min: 8, max: 16 }).map((d) => ({ name: 'echo', arguments: deep(d) })) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(null, [], [1, 2], 'params', 7, true) },
  { weight: 1, arbitrary: nested(4) },
);

/** A member that is present with a value, or absent. */
type Member = { present: false } | { present: true; value: unknown };
const member = (value: fc.Arbitrary<unknown>, presentWeight: number, absentWeight = 1): fc.Arbitrary<Member> =>
  fc.oneof(
    { weight: presentWeight, arbitrary: value.map((v): Member => ({ present: true, value: v })) },
    { weight: absentWeight, arbitrary: fc.constant<Member>({ present: false }) },
  );

/** One JSON-RPC message as a client might write it: mostly well-formed, with any member wrong or extra. */
export const message: fc.Arbitrary<unknown> = fc
  .record({
    jsonrpc: member(
      fc.oneof({ weight: 12, arbitrary: fc.constant<unknown>('2.0') }, { weight: 1, arbitrary: fc.constantFrom<unknown>('1.0', 2, 2.0, '2.00', null, '') }),
      20,
    ),
    id: member(id, 3),
    method: member(method, 8),
    params: member(params, 3),
    result: member(nested(2), 1, 10),
    error: member(
      fc.oneof(
        fc.record(
          {
            code: fc.oneof(fc.integer(), fc.constantFrom<unknown>(1.5, -32601.5, '1', null, 2 ** 60)),
            message: fc.oneof(anyText(10), fc.constant<unknown>(5)),
            data: nested(1),
          },
          { requiredKeys: ['code', 'message'] },
        ),
        nested(1),
      ),
      1,
      10,
    ),
    extra: member(fc.dictionary(fc.oneof(anyText(6), fc.constantFrom('__proto__', 'extra', 'jsonrpc2')), nested(1), { minKeys: 1, maxKeys: 2 }), 1, 6),
  })
  .map((m) => {
    const out: Record<string, unknown> = {};
    if (m.extra.present) Object.assign(out, m.extra.value);
    for (const key of ['jsonrpc', 'id', 'method', 'params', 'result', 'error'] as const) {
      const v = m[key];
      if (v.present) out[key] = v.value;
    }
    return out;
  });

/** A valid request of the kind the gateway forwards. */
export const validRequest = fc
  .record({
    id: fc.oneof(fc.integer({ min: 0, max: 1e9 }), fc.string({ minLength: 1, maxLength: 20 })),
    call: fc.constantFrom(
      { method: 'tools/call', params: { name: 'echo', arguments: { message: 'hi' } } },
      { method: 'tools/call', params: { name: 'admin_reset', arguments: {} } },
      { method: 'tools/list' },
      { method: 'ping' },
    ),
  })
  .map(({ id, call }) => ({ jsonrpc: '2.0', id, ...call }));

/** Valid JSON cut short, or with a byte changed. */
const brokenJson = fc
  .tuple(message, fc.nat(), fc.constantFrom('', '}', ']', ',', '"', '\\', '\u0000', '\ud800', 'tru', '1e999', 'NaN'))
  .map(([m, at, insert]) => {
    const text = JSON.stringify(m);
    const cut = at % (text.length + 1);
    return text.slice(0, cut) + insert + text.slice(cut + (insert === '' ? 0 : 1));
  });

/** Nesting around the depth limit (12), as raw text: objects, arrays, and brackets inside strings. */
const deepText = fc.oneof(
  fc.integer({ min: 0, max: 40 }).map((d) => '['.repeat(d) + ']'.repeat(d)),
  fc.integer({ min: 0, max: 40 }).map((d) => `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":${'{"a":'.repeat(d)}1${'}'.repeat(d)}}`),
  fc.integer({ min: 1, max: 200_000 }).map((d) => '['.repeat(d)),
  fc.integer({ min: 13, max: 2_000 }).map((d) => JSON.stringify(deep(d))),
  // Deep enough to overflow JSON.stringify (which forwards a request) if it ever got that far.
  fc
    .integer({ min: 5_000, max: 10_000 })
    .map((d) => `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":${'['.repeat(d)}${']'.repeat(d)}}}`),
  fc.integer({ min: 0, max: 40 }).map((d) => `{"jsonrpc":"2.0","id":"${'['.repeat(d)}\\"{{","method":"ping"}`),
);

/** Raw bytes (as a Buffer): random, or JSON with invalid UTF-8 inside. */
export const bytesBody = fc.oneof(
  fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
  fc.tuple(validRequest, fc.uint8Array({ minLength: 1, maxLength: 4 })).map(([m, junk]) => {
    const text = JSON.stringify({ ...m, method: 'tools/call', params: { name: 'echo', arguments: { message: 'MARK' } } });
    const [before, after] = text.split('MARK') as [string, string];
    return Buffer.concat([Buffer.from(before), Buffer.from(junk.map((b) => b | 0x80)), Buffer.from(after)]);
  }),
  fc.constantFrom(
    Buffer.from([0xef, 0xbb, 0xbf, ...Buffer.from('{"jsonrpc":"2.0","id":1,"method":"ping"}')]),
    Buffer.from([0xff, 0xfe, 0x7b, 0x00]),
    Buffer.from([0xc0, 0x80]),
  ),
);

/** A POST body as text. */
export const textBody: fc.Arbitrary<string> = fc.oneof(
  { weight: 10, arbitrary: message.map((m) => JSON.stringify(m)) },
  { weight: 10, arbitrary: validRequest.map((m) => JSON.stringify(m)) },
  { weight: 4, arbitrary: fc.array(fc.oneof(message, validRequest, nested(1)), { maxLength: 12 }).map((b) => JSON.stringify(b)) },
  { weight: 2, arbitrary: brokenJson },
  { weight: 2, arbitrary: deepText },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)) },
  { weight: 1, arbitrary: anyText(64) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '',
      ' ',
      '\n\t ',
      'null',
      '{}',
      '[]',
      '[[]]',
      '[{}]',
      '"2.0"',
      '{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}',
      '{"jsonrpc":"2.0","id":1e999,"method":"ping"}',
      '{"jsonrpc":"2.0","id":12345678901234567890,"method":"ping"}',
      '{"jsonrpc":"2.0","id":-0,"method":"ping"}',
      '{"__proto__":{"method":"ping"},"jsonrpc":"2.0","id":1}',
      '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"__proto__":{"name":"admin_reset"},"name":"echo"}}',
      '{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}',
      '{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"x"}}',
      '{"jsonrpc":"2.0","id":1,"error":{"code":1.5,"message":"x"}}',
      '{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1},"extra":1}',
      `[${Array(9).fill('{"jsonrpc":"2.0","method":"notifications/progress"}').join(',')}]`,
      `[${Array(500).fill('{"jsonrpc":"2.0","id":1,"method":"ping"}').join(',')}]`,
      `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"m":"${'x'.repeat(70_000)}"}}}`,
    ),
  },
);

/** A body: text (sent as UTF-8) most of the time, raw bytes otherwise. */
export const body: fc.Arbitrary<string | Buffer> = fc.oneof({ weight: 12, arbitrary: textBody }, { weight: 1, arbitrary: bytesBody });

/** Content-Type values: accepted ones, refused ones, malformed ones, absent. */
export const contentType = fc.oneof(
  {
    weight: 16,
    arbitrary: fc.constantFrom<string | undefined>('application/json', 'application/json; charset=utf-8', 'application/x-www-form-urlencoded', 'text/plain'),
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom<string | undefined>(
      undefined,
      '',
      'APPLICATION/JSON',
      'application/json;;;',
      'application/json; charset=latin1',
      'application/jsonx',
      'multipart/form-data; boundary=x',
      'text/event-stream',
      '*/*',
      ';',
      'application/json'.padEnd(4_000, ' '),
    ),
  },
  { weight: 1, arbitrary: headerText(60) },
);

/** Accept values. */
export const accept = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom<string | undefined>(undefined, 'application/json, text/event-stream', 'application/json', '*/*') },
  {
    weight: 2,
    arbitrary: fc.constantFrom<string | undefined>('text/event-stream', '', 'text/html', 'application/*', 'text/event-stream;q=0, application/json;q=0'),
  },
  { weight: 1, arbitrary: headerText(60) },
);

/** MCP-Protocol-Version values. */
export const protocolVersion = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom<string | undefined>(undefined, undefined, '2025-06-18', '2025-03-26', '2024-11-05') },
  { weight: 1, arbitrary: fc.constantFrom<string | undefined>('', '1999-01-01', '2025-06-18, 2025-03-26', '2025-06-18 ') },
  { weight: 1, arbitrary: headerText(30) },
);

/** X-Request-Id values: kept when they look like an id, replaced otherwise. */
export const requestId = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom<string | undefined>(undefined, 'abc-123', 'a'.repeat(128)) },
  { weight: 1, arbitrary: fc.constantFrom<string | undefined>('', 'a'.repeat(129), '../../etc', '<script>', 'id with spaces') },
  { weight: 1, arbitrary: headerText(200) },
);

/** Which session id a request carries; resolved to a real id by the test. */
export type SessionChoice = 'none' | 'own' | 'other-server' | 'other-identity' | 'garbage';
export const sessionChoice = fc.oneof(
  { weight: 6, arbitrary: fc.constant<SessionChoice>('none') },
  { weight: 3, arbitrary: fc.constant<SessionChoice>('own') },
  { weight: 1, arbitrary: fc.constantFrom<SessionChoice>('other-server', 'other-identity', 'garbage') },
);

/** Which credentials a request carries; resolved by the test. */
export type AuthChoice = 'key' | 'jwt' | 'web-only' | 'none' | 'garbage';
export const authChoice = fc.oneof(
  { weight: 12, arbitrary: fc.constant<AuthChoice>('key') },
  { weight: 2, arbitrary: fc.constantFrom<AuthChoice>('jwt', 'web-only') },
  { weight: 1, arbitrary: fc.constantFrom<AuthChoice>('none', 'garbage') },
);

/** Garbage in an Authorization header. */
export const garbageAuthorization = fc.oneof(
  fc.constantFrom(
    'Bearer',
    'Bearer ',
    'Basic dXNlcjpwYXNz',
    'bearer mcp_',
    'Bearer mcp_fuzzkey1_wrong',
    'Bearer a.b.c',
    'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.',
    `Bearer ${'x'.repeat(8_000)}`,
  ),
  headerText(80).map((t) => `Bearer ${t}`),
  headerText(80),
);

/** A path segment: plain, percent-encoded, dot segments, unicode (encoded), very long. */
export const segment = fc.oneof(
  { weight: 4, arbitrary: fc.stringMatching(/^[A-Za-z0-9_-]{1,12}$/) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      '.',
      '..',
      '%2e',
      '%2E%2e',
      '.%2e',
      '%2f',
      '%5C',
      '%00',
      '%',
      '%zz',
      '%c3%28',
      '%ff',
      '%e2%82',
      ';',
      '..;',
      '~',
      '@',
      ':',
      'web',
      'local',
      'mcp',
      'health',
      '.well-known',
    ),
  },
  { weight: 1, arbitrary: anyText(8).map((t) => encodeURIComponent(t.replace(/[\ud800-\udfff]/g, 'x'))) },
  { weight: 1, arbitrary: fc.integer({ min: 60, max: 3_000 }).map((n) => 's'.repeat(n)) },
);

/** A path to an MCP endpoint or near one, with an optional query. */
export const path = fc
  .tuple(
    fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom('/mcp/web', '/mcp/local', '/web', '/local', '/web/x', '/local/a/b') },
      {
        weight: 3,
        arbitrary: fc
          .tuple(fc.constantFrom('/mcp/', '/web/', '/local/', '/'), fc.array(segment, { minLength: 1, maxLength: 4 }))
          .map(([base, segs]) => base + segs.join('/')),
      },
      {
        weight: 1,
        arbitrary: fc.constantFrom(
          '/mcp',
          '/mcp/',
          '/web/',
          '//web',
          '/WEB',
          '/mcp/web/',
          '/mcp/web/extra',
          '/health/x',
          '/routes/',
          '/.well-known/x',
          '/webx',
          '',
        ),
      },
    ),
    fc.oneof({ weight: 5, arbitrary: fc.constant('') }, { weight: 1, arbitrary: fc.constantFrom('?', '?a=1', '?a=%zz', '?x=1&x=2', '?#', '?%00') }),
  )
  .map(([p, q]) => p + q);

/** HTTP methods, the MCP ones most often. */
export const httpMethod = fc.oneof(
  { weight: 12, arbitrary: fc.constant('POST') },
  { weight: 2, arbitrary: fc.constantFrom('GET', 'DELETE') },
  { weight: 1, arbitrary: fc.constantFrom('PUT', 'PATCH', 'OPTIONS', 'HEAD') },
);
