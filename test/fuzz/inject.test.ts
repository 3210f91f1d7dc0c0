/**
 * Property-based fuzzing of the MCP endpoints, the bulk of the inputs: generated JSON-RPC bodies
 * (valid, broken, deep, long, batched, not JSON, not UTF-8), header values and paths, sent to a
 * real gateway whose upstreams are real processes (strict-upstream.mjs: streamable HTTP and
 * stdio) that check every message they receive.
 *
 * Transport: Fastify's app.inject(), which runs everything of the gateway (hooks,
 * authentication, rate limits, routing, the pipeline, the real upstream traffic) except Node's
 * HTTP parser, so that tens of thousands of inputs fit in minutes. What inject cannot express (raw
 * bytes in the request line and header values, oversized headers, broken framing, keep-alive)
 * is fuzzed over real HTTP in wire.test.ts.
 *
 * Properties, for every input: no 5xx (the upstreams stay healthy, so any 5xx is the gateway's
 * fault), no error-level log line (internal errors are logged as such), an answer that is empty,
 * JSON or an SSE stream of JSON with no stack trace or internal path in it, and nothing but valid
 * JSON-RPC 2.0 messages reaching an upstream.
 *
 * Inputs: FUZZ_RUNS (all fuzz properties together; `npm run fuzz` sets 100,000), else a small
 * default. FUZZ_SEED replays a run.
 */
import fc from 'fast-check';
import type { InjectOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as arb from './arbitraries.js';
import {
  expectCleanAnswer,
  expectNoInternalErrors,
  expectNothingMalformedUpstream,
  expectStillServing,
  report,
  runsFor,
  SEED,
  startFuzzGateway,
  timeoutFor,
  violations,
  withDeadline,
  type FuzzGateway,
  type PropertyName,
} from './harness.js';
import { describeSent, requestFields, requestHeaders, type RequestInput } from './inputs.js';

let gw: FuzzGateway;

beforeAll(async () => {
  gw = await startFuzzGateway();
});

afterAll(async () => {
  await gw?.stop();
});

/** The inject request of an input, and everything the client sent (to tell an echo from a leak). */
function toRequest(input: RequestInput): { options: InjectOptions; sent: string } {
  const headers = requestHeaders(gw, input);
  const withBody = input.method !== 'GET' && input.method !== 'HEAD';
  const options: InjectOptions = {
    method: input.method as InjectOptions['method'],
    url: input.path || '/',
    headers,
    ...(withBody ? { payload: input.body } : {}),
  };
  return { options, sent: describeSent(input, headers) };
}

/** Runs one property: `runsFor(name)` inputs, each answered cleanly and forwarding nothing malformed. */
async function fuzz(name: PropertyName, inputs: fc.Arbitrary<RequestInput>): Promise<void> {
  const runs = runsFor(name);
  const started = performance.now();
  let count = 0;
  const statuses = new Map<number, number>();
  await fc.assert(
    fc.asyncProperty(inputs, async (input) => {
      count++;
      const { options, sent } = toRequest(input);
      const res = await withDeadline(gw.app.app.inject(options), options);
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
      expectCleanAnswer({ status: res.statusCode, contentType: res.headers['content-type'] as string | undefined, body: res.body }, sent);
      expectNoInternalErrors(gw);
      // The HTTP upstream has checked a message before it answers, so before the gateway does.
      expect(violations(gw)).toEqual([]);
    }),
    { numRuns: runs, ...(SEED === undefined ? {} : { seed: SEED }) },
  );
  await expectNothingMalformedUpstream(gw);
  expect(count).toBe(runs);
  report(name, count, started, statuses);
}

describe('fuzzing the MCP endpoints (inject)', () => {
  it(
    'POST bodies to the streamable HTTP server: never a 5xx, always a clean answer, nothing malformed upstream',
    async () => {
      await fuzz(
        'inject-bodies-http',
        fc.record({ ...requestFields, method: fc.constant('POST'), path: fc.constantFrom('/mcp/web', '/web', '/web/deeper/path') }),
      );
    },
    timeoutFor('inject-bodies-http'),
  );

  it(
    "POST bodies to the stdio server: never a 5xx, always a clean answer, nothing malformed on the child's stdin",
    async () => {
      await fuzz(
        'inject-bodies-stdio',
        fc.record({ ...requestFields, method: fc.constant('POST'), path: fc.constantFrom('/mcp/local', '/local', '/local/x') }),
      );
    },
    timeoutFor('inject-bodies-stdio'),
  );

  it(
    'any method, path and server name: never a 5xx, always a clean answer',
    async () => {
      await fuzz('inject-requests', fc.record({ ...requestFields, method: arb.httpMethod, path: arb.path }));
    },
    timeoutFor('inject-requests'),
  );

  it('the gateway still serves both servers afterwards', async () => {
    await expectStillServing(gw);
    expectNoInternalErrors(gw);
  });
});
