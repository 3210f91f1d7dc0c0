/**
 * A broken argon2 binding (a tree installed with another Node) is found at start-up, not at the
 * first request: `serve` with argon2 API key hashes, `keygen` and `hash-key` check argon2 in a
 * child process and exit 1 with what failed, this Node's version and the fix, no stack trace.
 * The breakage is simulated in the child processes only, by a preload
 * (test/fixtures/broken-argon2.cjs): its hash kills the process with SIGSEGV as the real crash
 * does, or its loading throws.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CliProcess, NODE, q, ROOT, runCli, trackProcesses, writeConfig, type CliResult } from '../helpers/cli.js';

const { running } = trackProcesses();

const PRELOAD = join(ROOT, 'test/fixtures/broken-argon2.cjs');
const broken = (mode: 'crash' | 'throw') => ({ NODE_OPTIONS: `--require ${PRELOAD}`, BROKEN_ARGON2: mode });

const UPSTREAM = `[[upstream.servers]]\nname = "a"\npath_prefix = "/a"\ncommand = ${q(NODE)}\n`;
/** An argon2id hash (of some key) as `mcp-guard hash-key` prints it. */
const ARGON2_KEY = `[[auth.api_keys]]\nid = "alice"\nkey_hash = "$argon2id$v=19$m=65536,p=4,t=3$LF0CvGkgP2E0HcYkyfbwpw$dCj8fe1+3Vg9Rdem0s9aYgXkpUT9SgwWvMngxE33hVE"\n`;
/** The deprecated unsalted SHA-256 hash: checked without argon2. */
const LEGACY_KEY = `[[auth.api_keys]]\nid = "bob"\nkey_hash = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="\n`;

/** Exit 1, nothing on stdout, and one line on stderr: the diagnosis and the fix, no stack trace. */
function expectBrokenArgon2(r: CliResult, what: RegExp): void {
  expect(r.code, r.stderr).toBe(1);
  expect(r.stdout).toBe('');
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^mcp-guard: argon2 \(the native module that checks API keys\) does not work with this Node/);
  expect(lines[0]).toContain(`(${process.version})`);
  expect(lines[0]).toMatch(what);
  expect(lines[0]).toContain(`Fix: run \`npm rebuild argon2\` with Node ${process.version}`);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

describe('a broken argon2 binding', () => {
  it('serve with argon2 API keys exits 1 before listening when argon2 crashes its process', async () => {
    const config = writeConfig(`${UPSTREAM}\n${ARGON2_KEY}`);
    const r = await runCli(['serve', '-c', config, '--host', '127.0.0.1', '--port', '0'], { env: broken('crash'), timeoutMs: 20_000 });
    expectBrokenArgon2(r, /: it crashed the process \(SIGSEGV, exit 139\) while hashing a test value\./);
  });

  it('serve says why when argon2 cannot even be loaded', async () => {
    const config = writeConfig(`${UPSTREAM}\n${ARGON2_KEY}`);
    const r = await runCli(['serve', '-c', config, '--host', '127.0.0.1', '--port', '0'], { env: broken('throw'), timeoutMs: 20_000 });
    expectBrokenArgon2(r, /: it failed hashing a test value \(.*argon2\.node: undefined symbol: napi_something\)\./);
  });

  it('hash-key and keygen exit 1 with the diagnosis, printing no hash and no key', async () => {
    const key = 'mcp_abcdefgh_not-a-real-key-but-well-formed';
    const hashed = await runCli(['hash-key', key], { env: broken('crash') });
    expectBrokenArgon2(hashed, /SIGSEGV/);
    expect(hashed.stderr).not.toContain(key);
    expectBrokenArgon2(await runCli(['keygen', '--id', 'alice'], { env: broken('crash') }), /SIGSEGV/);
  });

  it('with a working argon2, serve with argon2 API keys checks it and listens', async () => {
    const config = writeConfig(`${UPSTREAM}\n${ARGON2_KEY}`);
    const gateway = new CliProcess(['serve', '-c', config, '--host', '127.0.0.1', '--port', '0']);
    running.push(gateway);
    await gateway.address();
  });

  it('a config without argon2 hashes starts without checking (argon2 is never loaded there)', async () => {
    const config = writeConfig(`${UPSTREAM}\n${LEGACY_KEY}`);
    const gateway = new CliProcess(['serve', '-c', config, '--host', '127.0.0.1', '--port', '0'], { env: broken('crash') });
    running.push(gateway);
    await gateway.address();
  });
});
