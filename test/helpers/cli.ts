/**
 * Runs the built command line (`node dist/main.js ...`) as a real process, the way a user does.
 *
 * dist/ is rebuilt (tsc) when it is missing or older than a file under src/, once per test run:
 * a lock directory keeps the test files that run in parallel from building at the same time.
 *
 * Every process a test starts carries a unique marker string in its arguments, so that the test
 * can find what is left of its process tree with `ps` and end exactly those processes (by pid).
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { promisify } from 'node:util';
import { parseConfig } from '../../src/config/load.js';
import { NODE } from './gateway.js';
import { secret, secretsOfConfig, snapshotFiles, watchFile, watchLog } from './secret-scan.js';
import { afterAll, afterEach, beforeAll } from 'vitest';

export { NODE, q, waitFor } from './gateway.js';

export const ROOT = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');
export const MAIN = join(ROOT, 'dist', 'main.js');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

function isStale(): boolean {
  try {
    const built = statSync(MAIN).mtimeMs;
    return Math.max(newestSource(join(ROOT, 'src')), statSync(join(ROOT, 'tsconfig.json')).mtimeMs) > built;
  } catch {
    return true;
  }
}

/** Builds dist/ with tsc when it is missing or stale. Safe to call from test files running in parallel. */
export async function ensureBuilt(): Promise<void> {
  if (!isStale()) return;
  const lock = join(tmpdir(), `mcp-guard-cli-build-${createHash('sha256').update(ROOT).digest('hex').slice(0, 12)}.lock`);
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // A lock older than two minutes was left by a run that died.
      if (Date.now() - statSync(lock, { throwIfNoEntry: false })!.mtimeMs > 120_000) rmSync(lock, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`waited too long for ${lock}`);
      await sleep(200);
    }
  }
  try {
    if (!isStale()) return;
    try {
      await promisify(execFile)(NODE, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json')], { cwd: ROOT });
    } catch (err) {
      const { stdout = '', stderr = '' } = err as { stdout?: string; stderr?: string };
      throw new Error(`building dist/ with tsc failed:\n${stdout}${stderr}`);
    }
    // dist/main.js is the build's timestamp, even if tsc left an unchanged file alone.
    const now = new Date();
    utimesSync(MAIN, now, now);
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

/** A marker unique to this test run, to put in the arguments of every process a test starts. */
export function marker(label: string): string {
  return `mcpguard-clitest-${label}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** A fresh directory under the system temp dir; removed by cleanupTempDirs(). */
const tempDirs: string[] = [];
export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mcp-guard-cli-'));
  tempDirs.push(dir);
  return dir;
}
export function cleanupTempDirs(): void {
  snapshotFiles(); // the secrets scan keeps what the audit files held
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** Writes a config file into a fresh temp dir and returns its path. */
export function writeConfig(toml: string, name = 'mcp-guard.toml', dir = tempDir()): string {
  const path = join(dir, name);
  writeFileSync(path, toml);
  return path;
}

/** The environment the CLI runs with: this process's, without the variables that would change its config. */
export function cliEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env['MCP_GUARD_CONFIG'];
  delete env['MCP_GUARD_ADDITIONAL_SERVERS'];
  delete env['MCP_GUARD_LOG_LEVEL'];
  delete env['NODE_OPTIONS'];
  for (const [key, value] of Object.entries(extra)) {
    if (value === undefined) delete env[key];
    else env[key] = value;
  }
  return env;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

/** Runs `node dist/main.js ...args` to completion; kills it (by pid) if it outlives timeoutMs. */
export function runCli(
  args: string[],
  options: { cwd?: string; env?: Record<string, string | undefined>; timeoutMs?: number; input?: string } = {},
): Promise<CliResult> {
  const started = performance.now();
  const child = spawn(NODE, [MAIN, ...args], { cwd: options.cwd ?? ROOT, env: cliEnv(options.env), stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  child.stdin.end(options.input ?? '');
  const timeoutMs = options.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`mcp-guard ${args.join(' ')} did not exit within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      // The secrets scan: keys this test made or hashed must not reach any gateway's log.
      if (args[0] === 'keygen') for (const line of stdout.split('\n')) if (line.startsWith('mcp_')) secret(line.trim(), 'key printed by keygen');
      if (args[0] === 'hash-key') secret(args[1] ?? (options.input ?? '').split('\n')[0]!, 'key given to hash-key');
      resolve({ code, signal, stdout, stderr, durationMs: Math.round(performance.now() - started) });
    });
  });
}

export interface PsRow {
  pid: number;
  ppid: number;
  pgid: number;
  args: string;
}

/** Processes whose command line contains `text` (never ps itself). */
export function processesWith(text: string): PsRow[] {
  const out = execFileSync('ps', ['-eo', 'pid=,ppid=,pgid=,args='], { encoding: 'utf8' });
  const rows: PsRow[] = [];
  for (const line of out.split('\n')) {
    const m = /^\s*(\d+)\s+(\d+)\s+(\d+)\s+(.*)$/.exec(line);
    if (!m || !m[4]!.includes(text)) continue;
    rows.push({ pid: Number(m[1]), ppid: Number(m[2]), pgid: Number(m[3]), args: m[4]! });
  }
  return rows.filter((r) => r.pid !== process.pid);
}

/**
 * Waits (briefly: a SIGKILLed process needs a moment to disappear) until no process carries the
 * marker, and returns what is left. Leftovers are the test's own processes (they carry its unique
 * marker): they are ended by pid so that a failed test does not leak them into the next one.
 */
export async function leftovers(text: string, waitMs = 1_000): Promise<PsRow[]> {
  const deadline = Date.now() + waitMs;
  let rows = processesWith(text);
  while (rows.length > 0 && Date.now() < deadline) {
    await sleep(50);
    rows = processesWith(text);
  }
  for (const row of rows) {
    try {
      process.kill(row.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  return rows;
}

/**
 * The secrets scan (secret-scan.ts) of a long-running command: its stdout and stderr, and for
 * `-c FILE`, the credentials in that config and its audit file.
 */
function watchConfigAndLogs(args: string[], cwd: string, env: NodeJS.ProcessEnv, output: () => string): void {
  watchLog(`mcp-guard ${args[0] ?? ''} output`, output);
  const at = args.findIndex((a) => a === '-c' || a === '--config');
  const file = at === -1 ? undefined : args[at + 1];
  if (file === undefined) return;
  try {
    const config = parseConfig(readFileSync(resolvePath(cwd, file), 'utf8'), { env });
    secretsOfConfig(config, `config ${file}`);
    if (config.audit?.file !== undefined) watchFile(resolvePath(cwd, config.audit.file), `audit file of ${file}`);
  } catch {
    // An invalid config (a test of the refusal): nothing to watch but the output.
  }
}

/** A long-running `mcp-guard serve` (or any long-running command) with its log captured line by line. */
export class CliProcess {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null; at: number } | undefined;

  constructor(args: string[], options: { cwd?: string; env?: Record<string, string | undefined> } = {}) {
    this.child = spawn(NODE, [MAIN, ...args], { cwd: options.cwd ?? ROOT, env: cliEnv(options.env), stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (c: Buffer) => (this.stdout += c.toString('utf8')));
    this.child.stderr!.on('data', (c: Buffer) => (this.stderr += c.toString('utf8')));
    watchConfigAndLogs(args, options.cwd ?? ROOT, cliEnv(options.env), () => this.stdout + this.stderr);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        snapshotFiles();
        this.exitInfo = { code, signal, at: performance.now() };
        resolve(this.exitInfo);
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  /** The pino JSON lines written to stderr so far (other lines skipped). */
  logLines(): Array<Record<string, unknown>> {
    const lines: Array<Record<string, unknown>> = [];
    for (const line of this.stderr.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // a partial line
      }
    }
    return lines;
  }

  /** Waits for a log line with this msg; fails early if the process exits. */
  async waitForLog(msg: string, timeoutMs = 15_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = this.logLines().find((l) => l['msg'] === msg);
      if (line) return line;
      if (!this.running) throw new Error(`mcp-guard exited (${JSON.stringify(this.exitInfo)}) before logging '${msg}':\n${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`mcp-guard did not log '${msg}' within ${timeoutMs} ms:\n${this.stderr}`);
      await sleep(25);
    }
  }

  /** The base URL from the "mcp-guard listening" log line (the real port when --port 0). */
  async address(timeoutMs = 15_000): Promise<string> {
    const line = await this.waitForLog('mcp-guard listening', timeoutMs);
    const address = line['address'];
    if (typeof address !== 'string') throw new Error(`no address in ${JSON.stringify(line)}`);
    return address;
  }

  signal(signal: NodeJS.Signals): number {
    this.child.kill(signal);
    return performance.now();
  }

  /** Waits for the exit; SIGKILLs the process (by pid) if it takes longer than timeoutMs. */
  async waitExit(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
    const result = await Promise.race([this.exited, timedOut]);
    clearTimeout(timer);
    if (result === 'timeout') {
      this.child.kill('SIGKILL');
      throw new Error(`mcp-guard did not exit within ${timeoutMs} ms:\n${this.stderr}`);
    }
    return result;
  }

  /** For afterEach: ends the process if a failed test left it running. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }
}

/**
 * The process bookkeeping of a test file that runs `mcp-guard serve`: the build first; after each
 * test, its gateways (pushed to `running`) ended by pid and nothing of its markers (from `mark`)
 * left running; the temp dirs removed at the end. Call once, at the top level of the file.
 */
export function trackProcesses(): { running: CliProcess[]; mark(label: string): string } {
  const running: CliProcess[] = [];
  const markers: string[] = [];
  beforeAll(async () => {
    await ensureBuilt();
  }, 120_000);
  afterEach(async () => {
    // A failed test must not leave its gateway or its children behind (each ended by pid).
    await Promise.all(running.splice(0).map((p) => p.kill()));
    for (const m of markers.splice(0)) await leftovers(m, 0);
  });
  afterAll(() => cleanupTempDirs());
  return {
    running,
    mark(label: string): string {
      const m = marker(label);
      markers.push(m);
      return m;
    },
  };
}
