/**
 * What both conformance suites share (conformance.test.ts with runner 0.1.13 on this Node,
 * next.test.ts with 0.2.x on Node 22): running the runner as a bounded child process, and reading
 * the `<dir>/server-<scenario>-<timestamp>/checks.json` it writes per scenario into verdicts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../helpers/cli.js';

/** A scenario's outcome as the runner's baseline sees it: any FAILURE fails, any WARNING warns. */
export type Verdict = 'pass' | 'warn' | 'fail';
export const RANK: Record<Verdict, number> = { pass: 2, warn: 1, fail: 0 };

export interface Check {
  id: string;
  status: 'SUCCESS' | 'FAILURE' | 'WARNING' | 'INFO' | 'SKIPPED' | string;
  errorMessage?: string;
  details?: Record<string, unknown>;
}

export interface ScenarioResult {
  verdict: Verdict;
  /** The checks that failed or warned, as `id: STATUS message`. */
  problems: string[];
  checks: Check[];
}

export interface Run {
  exitCode: number | null;
  output: string;
  results: Map<string, ScenarioResult>;
}

/** A scenario the runner did not complete (no checks.json) counts as failed. */
export const NOT_RUN: ScenarioResult = { verdict: 'fail', problems: ['no checks.json: the runner did not complete the scenario'], checks: [] };

/**
 * Runs `node args` to completion with the given Node binary; SIGKILLs it (by pid) past
 * timeoutMs. The child is pushed on `children` so that the suite's afterAll ends it whatever happens.
 */
export function runToEnd(node: string, args: string[], timeoutMs: number, children: ChildProcess[]): Promise<{ code: number | null; output: string }> {
  const child = spawn(node, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (output += c.toString('utf8')));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${args.slice(0, 2).join(' ')} did not finish within ${timeoutMs} ms:\n${output}`));
    }, timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** Each scenario's verdict from the checks.json files the runner wrote under `dir`. */
export function readResults(dir: string): Map<string, ScenarioResult> {
  const results = new Map<string, ScenarioResult>();
  for (const entry of readdirSync(dir)) {
    const name = /^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$/.exec(entry)?.[1];
    const file = join(dir, entry, 'checks.json');
    if (name === undefined || !existsSync(file)) continue;
    const checks = JSON.parse(readFileSync(file, 'utf8')) as Check[];
    const bad = checks.filter((c) => c.status === 'FAILURE' || c.status === 'WARNING');
    const verdict: Verdict = bad.some((c) => c.status === 'FAILURE') ? 'fail' : bad.length > 0 ? 'warn' : 'pass';
    results.set(name, { verdict, problems: bad.map((c) => `${c.id}: ${c.status}${c.errorMessage ? ` ${c.errorMessage}` : ''}`), checks });
  }
  return results;
}

/** The results as a markdown table (scenario by target), then each failure and warning: printed by both suites. */
export function resultsTable(scenarios: readonly string[], targets: readonly string[], resultOf: (target: string, scenario: string) => ScenarioResult): string {
  const cell = (r: ScenarioResult): string => (r.verdict === 'pass' ? 'pass' : r.verdict === 'warn' ? 'warn' : '**FAIL**');
  const lines = [
    `| scenario | ${targets.join(' | ')} |`,
    `|---|${targets.map(() => '---').join('|')}|`,
    ...scenarios.map((s) => `| ${s} | ${targets.map((t) => cell(resultOf(t, s))).join(' | ')} |`),
  ];
  const notes = scenarios.flatMap((s) => targets.flatMap((t) => resultOf(t, s).problems.map((p) => `- ${t} / ${s}: ${p}`)));
  return [...lines, '', ...(notes.length > 0 ? ['Failures and warnings:', ...notes] : ['No failure, no warning.'])].join('\n');
}
