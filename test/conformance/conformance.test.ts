/**
 * The official MCP conformance suite (@modelcontextprotocol/conformance 0.1.13, every server
 * scenario: suite "all") against the fixture that implements what its scenarios ask for
 * (everything-fixture.mjs): once directly over streamable HTTP, then through a real gateway
 * (`mcp-guard serve`) with the fixture behind it over stdio, streamable HTTP and legacy SSE.
 *
 * What must hold:
 * - directly, the runner's own baseline check passes with expected-failures.yml: the file lists
 *   exactly the scenarios that fail (or warn) against the fixture, each with its reason;
 * - through the gateway, on every transport, no scenario does worse than directly
 *   (pass > warn > fail), and dns-rebinding-protection passes: the gateway refuses a foreign
 *   Host/Origin with 403 although the fixture itself does not.
 *
 * Each run is one runner process for the whole suite, bounded in time; the runner writes
 * `<dir>/server-<scenario>-<timestamp>/checks.json` per scenario, which is what is judged here.
 * The table of results is printed (docs/conformance.md shows the latest).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NOT_RUN, RANK, readResults, resultsTable, runToEnd, type Run, type ScenarioResult } from './runner.js';
import { cleanupTempDirs, CliProcess, ensureBuilt, leftovers, marker, NODE, q, ROOT, tempDir, waitFor, writeConfig } from '../helpers/cli.js';

const CONFORMANCE = join(ROOT, 'node_modules', '@modelcontextprotocol', 'conformance', 'dist', 'index.js');
const FIXTURE = join(ROOT, 'test', 'conformance', 'everything-fixture.mjs');
const EXPECTED_FAILURES = join(ROOT, 'test', 'conformance', 'expected-failures.yml');

/** One run of the whole suite: a few seconds here; the bound is for a runner that hangs. */
const RUN_TIMEOUT_MS = 120_000;

const TRANSPORTS = ['stdio', 'http', 'sse'] as const;
type Transport = (typeof TRANSPORTS)[number];
type Target = 'direct' | Transport;
const TARGETS: readonly Target[] = ['direct', ...TRANSPORTS];

const m = marker('conformance');
const children: ChildProcess[] = [];
let gateway: CliProcess | undefined;
let scenarios: string[] = [];
const runs = new Map<Target, Run>();

/** Runs a node script to completion; SIGKILLs it (by pid) past timeoutMs. */
function runNode(args: string[], timeoutMs: number): Promise<{ code: number | null; output: string }> {
  return runToEnd(NODE, args, timeoutMs, children);
}

/** The server scenarios this runner knows, from `conformance list --server`. */
async function listScenarios(): Promise<string[]> {
  const { code, output } = await runNode([CONFORMANCE, 'list', '--server'], 30_000);
  if (code !== 0) throw new Error(`conformance list failed:\n${output}`);
  return [...output.matchAll(/^\s+- (\S+)$/gm)].map((match) => match[1]!);
}

/** Starts the fixture over HTTP (streamable or legacy SSE) and resolves with its URL. */
async function startFixture(mode: 'http' | 'sse'): Promise<string> {
  const child = spawn(NODE, [FIXTURE, mode, '0', m], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  let url: string | undefined;
  await waitFor(
    () => {
      if (child.exitCode !== null) throw new Error(`the ${mode} fixture exited (${child.exitCode}):\n${stderr}`);
      url = /listening on (\S+)/.exec(stderr)?.[1];
      return url !== undefined;
    },
    15_000,
    `the ${mode} fixture to listen`,
  );
  return url!;
}

/** Runs every scenario against `url`, then reads each scenario's checks.json. */
async function runSuite(target: Target, url: string, root: string, baseline?: string): Promise<Run> {
  const dir = join(root, target);
  mkdirSync(dir, { recursive: true });
  const args = [CONFORMANCE, 'server', '--url', url, '--suite', 'all', '-o', dir];
  if (baseline) args.push('--expected-failures', baseline);
  const { code, output } = await runNode(args, RUN_TIMEOUT_MS);
  return { exitCode: code, output, results: readResults(dir) };
}

/** A scenario without checks.json (the runner could not run it) counts as failed. */
function resultOf(target: Target, scenario: string): ScenarioResult {
  return runs.get(target)?.results.get(scenario) ?? NOT_RUN;
}

/**
 * expected-failures.yml: `server:` and one `- scenario` per line, each right after the comment
 * lines that give its reason. Returns each scenario with its reason (the comment, joined).
 */
function readExpectedFailures(): Array<{ scenario: string; reason: string }> {
  const entries: Array<{ scenario: string; reason: string }> = [];
  let comment: string[] = [];
  let inServer = false;
  for (const raw of readFileSync(EXPECTED_FAILURES, 'utf8').split('\n')) {
    const line = raw.trimEnd();
    if (line.trim() === '') {
      comment = [];
    } else if (line.trimStart().startsWith('#')) {
      comment.push(line.trimStart().replace(/^#\s?/, ''));
    } else if (line === 'server:') {
      inServer = true;
      comment = [];
    } else {
      const item = /^\s+- ([a-z0-9-]+)$/.exec(line);
      if (!inServer || !item) throw new Error(`expected-failures.yml: unexpected line ${JSON.stringify(raw)}`);
      entries.push({ scenario: item[1]!, reason: comment.join(' ') });
      comment = [];
    }
  }
  return entries;
}

function table(): string {
  return resultsTable(scenarios, TARGETS, (target, scenario) => resultOf(target as Target, scenario));
}

beforeAll(
  async () => {
    const started = performance.now();
    await ensureBuilt();
    scenarios = await listScenarios();
    const [httpUrl, sseUrl] = await Promise.all([startFixture('http'), startFixture('sse')]);
    const out = join(tempDir(), m);

    // Directly, with the baseline: the runner fails on an unlisted failure and on a listed pass.
    runs.set('direct', await runSuite('direct', httpUrl, out, EXPECTED_FAILURES));

    const config = writeConfig(
      `[[upstream.servers]]
name = "stdio"
path_prefix = "/stdio"
transport = "stdio"
command = ${q(NODE)}
args = [${q(FIXTURE)}, "stdio", ${q(m)}]

[[upstream.servers]]
name = "http"
path_prefix = "/http"
transport = "http"
url = ${q(httpUrl)}

[[upstream.servers]]
name = "sse"
path_prefix = "/sse"
transport = "sse"
url = ${q(sseUrl)}
`,
      `${m}.toml`,
    );
    gateway = new CliProcess(['serve', '-c', config, '--host', '127.0.0.1', '--port', '0']);
    const base = await gateway.address();
    // /ready answers 200 as soon as one server is healthy: wait for all three.
    await waitFor(
      async () => {
        const res = await fetch(`${base}/ready`);
        const body = (await res.json()) as { servers?: Array<{ healthy: boolean }> };
        return res.status === 200 && body.servers?.length === TRANSPORTS.length && body.servers.every((s) => s.healthy);
      },
      20_000,
      'every upstream of the gateway to be healthy',
    );
    for (const transport of TRANSPORTS) runs.set(transport, await runSuite(transport, `${base}/mcp/${transport}`, out));

    console.log(
      `MCP conformance ${scenarios.length} scenarios (suite "all") in ${((performance.now() - started) / 1000).toFixed(1)} s; ` +
        `direct = the fixture over streamable HTTP; stdio/http/sse = through mcp-guard to the fixture over that transport\n\n${table()}`,
    );
  },
  4 * RUN_TIMEOUT_MS + 60_000,
);

afterAll(async () => {
  // The gateway ends its stdio child itself; then the fixtures; then whatever carries the marker.
  if (gateway?.running) {
    gateway.signal('SIGTERM');
    await gateway.waitExit(20_000).catch(() => gateway?.kill());
  }
  await Promise.all(
    children.map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
      await exited;
      clearTimeout(timer);
    }),
  );
  const left = await leftovers(m, 3_000);
  cleanupTempDirs();
  expect(left.map((p) => p.args)).toEqual([]);
}, 30_000);

describe('MCP conformance suite (@modelcontextprotocol/conformance 0.1.13)', () => {
  it('runs every server scenario against each target', () => {
    expect(scenarios.length).toBeGreaterThanOrEqual(30);
    for (const target of TARGETS) {
      const missing = scenarios.filter((s) => !runs.get(target)?.results.has(s));
      expect(missing, `${target}: scenarios without checks.json\n${runs.get(target)?.output ?? ''}`).toEqual([]);
    }
  });

  it('directly: exactly the scenarios in expected-failures.yml fail, each listed with its reason', () => {
    const expected = readExpectedFailures();
    for (const { scenario, reason } of expected) {
      expect(scenarios, 'a scenario the runner knows').toContain(scenario);
      expect(reason.length, `the reason ${scenario} is listed`).toBeGreaterThan(20);
    }
    const failing = scenarios.filter((s) => resultOf('direct', s).verdict !== 'pass');
    expect(expected.map((e) => e.scenario).sort()).toEqual(failing.sort());
    // The runner's own baseline check agrees: no unexpected failure, no stale entry.
    expect(runs.get('direct')?.exitCode, runs.get('direct')?.output).toBe(0);
  });

  describe.each(TRANSPORTS)('through the gateway, to the fixture over %s', (transport) => {
    it('does no worse than the fixture directly on any scenario', () => {
      const worse = scenarios
        .filter((s) => RANK[resultOf(transport, s).verdict] < RANK[resultOf('direct', s).verdict])
        .map(
          (s) =>
            `${s}: ${resultOf('direct', s).verdict} directly, ${resultOf(transport, s).verdict} through the gateway (${resultOf(transport, s).problems.join('; ')})`,
        );
      expect(worse).toEqual([]);
    });

    it('passes dns-rebinding-protection: a foreign Host/Origin gets 403 although the fixture accepts it', () => {
      const result = resultOf(transport, 'dns-rebinding-protection');
      expect(result.problems).toEqual([]);
      expect(result.verdict).toBe('pass');
      const status = (id: string): unknown => result.checks.find((c) => c.id === id)?.details?.['statusCode'];
      expect(status('localhost-host-rebinding-rejected')).toBe(403);
      expect(status('localhost-host-valid-accepted')).toBe(200);
    });
  });
});
