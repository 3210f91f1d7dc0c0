/**
 * Validates a Prometheus text exposition with the real parser: `promtool check metrics` reads it on
 * stdin, exits non-zero on a format error and prints lint problems ("name: problem") on stdout.
 * promtool must be installed (Debian: `apt-get install prometheus`; .ci/run installs it): a missing
 * promtool fails the test instead of skipping it.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface PromtoolResult {
  /** promtool's exit code: 0 = parsed and no lint problem, 3 = lint problems only, else a format error. */
  code: number;
  /** What promtool printed (stdout and stderr). */
  output: string;
  /** Lint problems, one per line ("metric_name: problem"), minus the ones allowed. */
  problems: string[];
}

let checked = false;

function requirePromtool(): void {
  if (checked) return;
  const probe = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    throw new Error('promtool is not installed (Debian: apt-get install prometheus); metrics tests need it to validate the exposition');
  }
  checked = true;
}

/** Runs `promtool check metrics` on `text`. `allow` lists lint problems that are intended. */
export async function promtoolCheck(text: string, allow: RegExp[] = []): Promise<PromtoolResult> {
  const { code, output } = await run(['check', 'metrics'], text);
  const problems = output
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.length > 0 && !allow.some((re) => re.test(line)));
  return { code, output, problems };
}

/**
 * Fails unless promtool parses `text` and finds no lint problem other than the allowed ones.
 * Returns the result for further checks.
 */
export async function expectValidExposition(text: string, allow: RegExp[] = []): Promise<PromtoolResult> {
  const result = await promtoolCheck(text, allow);
  // Exit code 3 is "lint problems only": acceptable when each of them is allowed.
  const parsed = result.code === 0 || result.code === 3;
  if (!parsed || result.problems.length > 0) {
    throw new Error(`promtool check metrics failed (exit ${result.code}):\n${result.output}\n--- exposition ---\n${text}`);
  }
  return result;
}

/** Runs promtool with `args`; resolves with its exit code and everything it printed. */
async function run(args: string[], stdin = ''): Promise<{ code: number; output: string }> {
  requirePromtool();
  const child = spawn('promtool', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  const exited = new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve(code ?? -1));
  });
  child.stdin.end(stdin);
  return { code: await exited, output };
}

/** Fails unless `promtool check config` accepts the Prometheus config file at `path`. */
export async function expectValidPrometheusConfig(path: string): Promise<void> {
  const result = await run(['check', 'config', '--syntax-only', path]);
  if (result.code !== 0) throw new Error(`promtool check config ${path} failed (exit ${result.code}):\n${result.output}`);
}

/**
 * Fails unless every expression parses as PromQL: they go through `promtool check rules` as
 * recording rules in a temporary file.
 */
export async function expectValidPromQL(expressions: string[]): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'mcp-guard-promql-'));
  try {
    const file = join(dir, 'rules.yml');
    const rules = expressions.map((expr, i) => `      - record: check:expr_${i}\n        expr: ${JSON.stringify(expr)}`).join('\n');
    writeFileSync(file, `groups:\n  - name: check\n    rules:\n${rules}\n`);
    const result = await run(['check', 'rules', file]);
    if (result.code !== 0)
      throw new Error(`promtool check rules failed (exit ${result.code}):\n${result.output}\n--- expressions ---\n${expressions.join('\n')}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
