/**
 * `mcp-guard --help`, `--version` and usage errors, run as a real process: help and version on
 * stdout with exit 0; anything the command line does not understand is exit 2 with a usage line on
 * stderr, before any config is read.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupTempDirs, ensureBuilt, ROOT, runCli, tempDir, writeConfig } from '../helpers/cli.js';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
let emptyDir: string;

beforeAll(async () => {
  await ensureBuilt();
  // A cwd without mcp-guard.toml: a usage error must not depend on (or read) a config file.
  emptyDir = tempDir();
}, 120_000);

afterAll(() => cleanupTempDirs());

function expectUsageError(result: { code: number | null; stdout: string; stderr: string }, why: RegExp): void {
  expect(result.code, result.stderr).toBe(2);
  expect(result.stdout).toBe('');
  expect(result.stderr).toMatch(why);
  expect(result.stderr).toMatch(/^Usage: mcp-guard <command> \[options\]$/m);
}

describe('help and version', () => {
  it.each([['--help'], ['-h'], ['serve', '--help'], ['check-upstream', '-h']])('%s prints the usage on stdout, exit 0', async (...args) => {
    const r = await runCli(args, { cwd: emptyDir });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^Usage: mcp-guard <command> \[options\]/);
    for (const word of ['serve', 'check-upstream', 'validate', '--config', '--port', '--timeout', '--json', '--version']) {
      expect(r.stdout).toContain(word);
    }
  });

  it.each([['--version'], ['-V']])('%s prints the package.json version, exit 0', async (flag) => {
    const r = await runCli([flag], { cwd: emptyDir });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(`mcp-guard ${VERSION}`);
    expect(r.stderr).toBe('');
  });
});

describe('usage errors: exit 2 and a usage line on stderr', () => {
  it('no command', async () => {
    expectUsageError(await runCli([], { cwd: emptyDir }), /no command/);
  });

  it('an unknown command', async () => {
    expectUsageError(await runCli(['frobnicate'], { cwd: emptyDir }), /unknown command 'frobnicate'/);
  });

  it('an unknown flag, alone or after a command', async () => {
    expectUsageError(await runCli(['--frobnicate'], { cwd: emptyDir }), /Unknown option '--frobnicate'/);
    expectUsageError(await runCli(['validate', '--frobnicate'], { cwd: emptyDir }), /frobnicate/);
    expectUsageError(await runCli(['serve', '-x'], { cwd: emptyDir }), /Unknown option '-x'/);
  });

  it('a flag of another command', async () => {
    expectUsageError(await runCli(['validate', '--json'], { cwd: emptyDir }), /--json does not apply to 'validate'/);
    expectUsageError(await runCli(['validate', '--port', '3000'], { cwd: emptyDir }), /--port does not apply to 'validate'/);
    expectUsageError(await runCli(['serve', '--timeout', '5'], { cwd: emptyDir }), /--timeout does not apply to 'serve'/);
    expectUsageError(await runCli(['check-upstream', '--host', '0.0.0.0'], { cwd: emptyDir }), /--host does not apply to 'check-upstream'/);
  });

  it('a flag without its value, and an extra argument', async () => {
    expectUsageError(await runCli(['validate', '-c'], { cwd: emptyDir }), /'-c, --config <value>' argument missing/);
    expectUsageError(await runCli(['validate', 'extra'], { cwd: emptyDir }), /unexpected argument 'extra'/);
  });

  it('a bad --port or --timeout is a usage error even when the config is missing or invalid', async () => {
    // The command line is checked before the config file is read.
    expectUsageError(await runCli(['serve', '--port', 'abc'], { cwd: emptyDir }), /--port/);
    expectUsageError(await runCli(['check-upstream', '--timeout', 'abc'], { cwd: emptyDir }), /--timeout/);
    const invalid = writeConfig('[upstream]\nnope = 1\n');
    expectUsageError(await runCli(['run', '-c', invalid, '--port', 'abc'], { cwd: emptyDir }), /--port/);
  });

  it.each([['abc'], ['-1'], ['65536'], ['1.5'], [''], [' 80'], ['0x50'], ['1e3']])('--port %j is refused', async (value) => {
    const config = writeConfig('[upstream]\ncommand = "true"\n');
    expectUsageError(await runCli(['serve', '-c', config, `--port=${value}`], { cwd: emptyDir }), /--port must be an integer from 0 to 65535/);
  });

  it.each([['abc'], ['0'], ['-2'], [''], ['Infinity'], ['1e10']])('--timeout %j is refused', async (value) => {
    const config = writeConfig('[upstream]\ncommand = "true"\n');
    expectUsageError(await runCli(['check-upstream', '-c', config, `--timeout=${value}`], { cwd: emptyDir }), /--timeout must be/);
  });
});
