/**
 * `mcp-guard keygen` and `mcp-guard hash-key`, run as real processes: the printed entry is valid
 * config that accepts the printed key; hash-key reads the key from its argument or stdin; command
 * line mistakes are usage errors (exit 2); a key never appears on stderr.
 *
 * The tests run three at a time (describe.concurrent, bounded), and within a test the independent
 * CLI runs and argon2 verifications run together: each is a process or a hash of its own, so
 * every check is the same as one after the other.
 */
import * as argon2 from 'argon2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiKeyVerifier } from '../../src/auth/api-keys.js';
import { generateApiKey } from '../../src/auth/key-format.js';
import { parseConfig } from '../../src/config/load.js';
import { ARGON2ID_PHC_PATTERN } from '../../src/config/schema.js';
import { cleanupTempDirs, ensureBuilt, runCli, tempDir, writeConfig, type CliResult } from '../helpers/cli.js';
import { atMostConcurrentTests } from '../helpers/concurrency.js';

let emptyDir: string;

beforeAll(async () => {
  await ensureBuilt();
  emptyDir = tempDir();
}, 120_000);

afterAll(() => cleanupTempDirs());

// Each keygen or hash-key run is an argon2id hash (64 MiB, 4 lanes): three at once on two cores.
atMostConcurrentTests(3);

const UPSTREAM = '[[upstream.servers]]\nname = "a"\npath_prefix = "/a"\ncommand = "node"\n';

/** The key and the config block keygen printed, after checking the whole output's shape. */
function keygenOutput(r: CliResult, id: string): { key: string; block: string } {
  expect(r.code, r.stderr).toBe(0);
  expect(r.stderr).toBe('');
  const m =
    /^# API key for "(.*)": shown once; store it now \(only its hash is kept\)\n(mcp_[a-z0-9]{8}_[A-Za-z0-9_-]{43})\n\n# Add this to the config file:\n(\[\[auth\.api_keys\]\]\nid = .*\nkey_prefix = "(mcp_[a-z0-9]{8})"\nkey_hash = "(.*)"\n(allowed_tools = \[.*\]\n)?(rate_limit = .*\n)?)$/.exec(
      r.stdout,
    );
  expect(m, r.stdout).not.toBeNull();
  const [, shownId, key, block, prefix, hash] = m!;
  expect(shownId).toBe(id);
  expect(prefix).toBe(key!.slice(0, 12));
  expect(hash).toMatch(ARGON2ID_PHC_PATTERN);
  expect(r.stdout.split(key!)).toHaveLength(2); // printed once
  return { key: key!, block: block! };
}

/** fn over items, at most `n` at a time (each is a process: the machine has two cores), results in order. */
async function mapAtMost<T, R>(n: number, items: readonly T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return results;
}

function expectUsageError(r: CliResult, why: RegExp | string): void {
  expect(r.code, r.stderr).toBe(2);
  expect(r.stdout).toBe('');
  if (typeof why === 'string') expect(r.stderr).toContain(why);
  else expect(r.stderr).toMatch(why);
  expect(r.stderr).toMatch(/^Usage: mcp-guard <command> \[options\]$/m);
}

describe.concurrent('keygen', () => {
  it('prints a key and an entry that `validate` accepts and that accepts the key', async () => {
    const { key, block } = keygenOutput(await runCli(['keygen', '--id', 'alice@example.com'], { cwd: emptyDir }), 'alice@example.com');
    expect(block).toMatch(
      /^\[\[auth\.api_keys\]\]\nid = "alice@example\.com"\nkey_prefix = "mcp_[a-z0-9]{8}"\nkey_hash = "\$argon2id\$v=19\$m=65536,p=4,t=3\$[^"]+"\n$/,
    );

    const path = writeConfig(`${UPSTREAM}\n${block}`);
    const validated = await runCli(['validate', '-c', path]);
    expect(validated.code, validated.stderr).toBe(0);
    expect(validated.stderr).toBe('');

    const config = parseConfig(`${UPSTREAM}\n${block}`, { env: {} });
    const keys = config.auth?.api_keys ?? [];
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatchObject({ id: 'alice@example.com', key_prefix: key.slice(0, 12) });
    expect(keys[0]!.allowed_tools).toBeUndefined();
    const verifier = new ApiKeyVerifier(keys);
    expect(await verifier.verify(key)).toMatchObject({ ok: true, key: { id: 'alice@example.com' } });
    expect(verifier.stats.argon2Verifications).toBe(1);
    expect(await verifier.verify(generateApiKey().key)).toEqual({ ok: false, reason: 'unknown_prefix' });
  });

  it('--tools becomes allowed_tools, trimmed, as valid TOML whatever the names contain', async () => {
    const simple = keygenOutput(await runCli(['keygen', '--id', 'bob', '--tools', 'a, b'], { cwd: emptyDir }), 'bob');
    expect(simple.block).toMatch(/\nallowed_tools = \["a", "b"\]\n$/);
    expect(parseConfig(`${UPSTREAM}${simple.block}`, { env: {} }).auth?.api_keys?.[0]?.allowed_tools).toEqual(['a', 'b']);

    const odd = ['say "hi"', 'back\\slash', 'new\nline', 'caf\u00e9_*', 'del\x7f', "it's", '$dollar{brace}'];
    const r = await runCli(['keygen', '--id', 'carol', '--tools', odd.join(',')], { cwd: emptyDir });
    const { key, block } = keygenOutput(r, 'carol');
    const keys = parseConfig(`${UPSTREAM}${block}`, { env: {} }).auth?.api_keys ?? [];
    expect(keys[0]?.allowed_tools).toEqual(odd);
    expect(await new ApiKeyVerifier(keys).verify(key)).toMatchObject({ ok: true });
  });

  it("--rate-limit N becomes the key's rate_limit, which the config accepts with [rate_limit] and refuses without it", async () => {
    const { key, block } = keygenOutput(await runCli(['keygen', '--id', 'dave', '--tools', 'a', '--rate-limit', '2.5'], { cwd: emptyDir }), 'dave');
    expect(block).toMatch(/\nallowed_tools = \["a"\]\nrate_limit = 2\.5\n$/);
    const withLimits = `${UPSTREAM}\n[rate_limit]\nrequests_per_second = 1\nburst_size = 2\n\n${block}`;
    const keys = parseConfig(withLimits, { env: {} }).auth?.api_keys ?? [];
    expect(keys[0]).toMatchObject({ id: 'dave', rate_limit: 2.5 });
    expect(await new ApiKeyVerifier(keys).verify(key)).toMatchObject({ ok: true });
    const [validated, without, disabled, erin] = await Promise.all([
      runCli(['validate', '-c', writeConfig(withLimits)]),
      runCli(['validate', '-c', writeConfig(`${UPSTREAM}\n${block}`)]),
      runCli(['validate', '-c', writeConfig(`${UPSTREAM}\n[rate_limit]\nenabled = false\n\n${block}`)]),
      runCli(['keygen', '--id', 'erin', '--rate-limit', '100'], { cwd: emptyDir }),
    ]);
    expect(validated.code, validated.stderr).toBe(0);

    // A limit nobody enforces is an error, not a silent no-op.
    expect(without.code).toBe(1);
    expect(without.stderr).toContain('auth.api_keys[0].rate_limit: needs [rate_limit] to be enforced (there is no [rate_limit] section)');
    expect(disabled.code).toBe(1);
    expect(disabled.stderr).toContain('auth.api_keys[0].rate_limit: needs [rate_limit] to be enforced ([rate_limit] has enabled = false)');

    const whole = keygenOutput(erin, 'erin');
    expect(whole.block).toMatch(/\nkey_hash = "[^"]+"\nrate_limit = 100\n$/);
  });

  it('two runs make different keys', async () => {
    const [a, b] = await Promise.all([runCli(['keygen', '--id', 'x'], { cwd: emptyDir }), runCli(['keygen', '--id', 'x'], { cwd: emptyDir })]);
    expect(keygenOutput(a!, 'x').key).not.toBe(keygenOutput(b!, 'x').key);
  });

  it.each([['has space'], [''], ['x'.repeat(129)], ['semi;colon'], ['quote"']])('--id %j is a usage error', async (id) => {
    expectUsageError(await runCli(['keygen', '--id', id], { cwd: emptyDir }), '--id must be 1 to 128 letters, digits or ._@:+-');
  });

  it('usage errors: no --id, empty --tools entries, --rate-limit, options of other commands, extra arguments', async () => {
    // Each run, with the error it must give; the runs go together (none of them hashes anything).
    const cases: Array<[string[], string]> = [
      [['keygen'], 'keygen needs --id ID'],
      ...['', 'a,,b', 'a, ,b', 'a,'].map((tools): [string[], string] => [['keygen', '--id', 'x', '--tools', tools], '--tools must be a comma-separated list']),
      // The config loader would read it as a ${VAR} reference.
      [['keygen', '--id', 'x', '--tools', 'a,${HOME}'], '--tools: a tool name cannot contain "${"'],
      ...['0', '-1', 'abc', '', '1e3', '0x10', 'Infinity', '1000001', '1,5'].map((rate): [string[], string] => [
        ['keygen', '--id', 'x', `--rate-limit=${rate}`],
        `--rate-limit must be a number of requests per second above 0 and at most 1000000, got ${JSON.stringify(rate)}`,
      ]),
      [['keygen', '--id', 'x', '-c', 'f.toml'], "--config does not apply to 'keygen'"],
      [['validate', '--tools', 'a'], "--tools does not apply to 'validate'"],
      [['keygen', '--id', 'x', 'extra'], "unexpected argument 'extra'"],
    ];
    expect(cases).toHaveLength(18);
    const results = await mapAtMost(6, cases, ([args]) => runCli(args, { cwd: emptyDir }));
    cases.forEach(([, why], i) => expectUsageError(results[i]!, why));
  });

  it('--help lists both commands and says why stdin is better for hash-key', async () => {
    const r = await runCli(['--help'], { cwd: emptyDir });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ {2}keygen --id ID /m);
    expect(r.stdout).toMatch(/^ {2}hash-key \[KEY\] /m);
    expect(r.stdout).toMatch(/stdin keeps the key out of shell history and `ps`/);
  });
});

describe.concurrent('hash-key', () => {
  async function expectHashOf(r: CliResult, key: string): Promise<void> {
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^\$argon2id\$v=19\$m=65536,p=4,t=3\$\S+\n$/);
    const hash = r.stdout.trim();
    expect(hash).toMatch(ARGON2ID_PHC_PATTERN);
    const [right, wrong] = await Promise.all([argon2.verify(hash, key), argon2.verify(hash, `${key}x`)]);
    expect(right).toBe(true);
    expect(wrong).toBe(false);
  }

  it('hashes its argument', async () => {
    const { key } = generateApiKey();
    await expectHashOf(await runCli(['hash-key', key], { cwd: emptyDir }), key);
  });

  it('hashes the first line of stdin, without its line ending', async () => {
    const key = 'hand-made-key-0123456789';
    const runs = await Promise.all([`${key}\n`, `${key}\r\nsecond line\n`, key].map((input) => runCli(['hash-key'], { cwd: emptyDir, input })));
    for (const r of runs) await expectHashOf(r, key);
  });

  it('an empty key is an error (exit 1)', async () => {
    const runs: Array<Promise<CliResult>> = [];
    for (const [args, input] of [
      [['hash-key'], ''],
      [['hash-key'], '\n'],
      [['hash-key'], '\r\nkey-on-the-second-line\n'],
      [['hash-key', ''], ''],
    ] as const) {
      runs.push(runCli([...args], { cwd: emptyDir, input }));
    }
    for (const r of await Promise.all(runs)) {
      expect(r.code, r.stderr).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain('hash-key: the key is empty');
      expect(r.stderr).not.toContain('key-on-the-second-line');
    }
  });

  it('a key the gateway would never accept is an error that does not repeat the key', async () => {
    const keys = ['secret with spaces', 'trailing-space-secret ', 's'.repeat(513)];
    const runs = await Promise.all(
      keys.map((key) => Promise.all([runCli(['hash-key', key], { cwd: emptyDir }), runCli(['hash-key'], { cwd: emptyDir, input: `${key}\n` })])),
    );
    for (const [i, key] of keys.entries()) {
      for (const r of runs[i]!) {
        expect(r.code, r.stderr).toBe(1);
        expect(r.stdout).toBe('');
        expect(r.stderr).toMatch(/hash-key: a key must be at most 512 visible ASCII characters/);
        expect(r.stderr).not.toContain(key.trim().slice(0, 20));
      }
    }
  });

  it('usage errors (a second argument, an unknown option) never quote what was typed: it may be a key', async () => {
    const usage = "hash-key takes at most one KEY and no options (give a key that starts with '-' on stdin)";
    const [r, dashed, withId] = await Promise.all([
      runCli(['hash-key', 'the-secret-key', 'extra-secret'], { cwd: emptyDir }),
      runCli(['hash-key', '-secretkey'], { cwd: emptyDir }),
      runCli(['hash-key', '--id', 'x'], { cwd: emptyDir }),
    ]);
    expectUsageError(r, usage);
    expect(r.stderr).not.toMatch(/the-secret-key|extra-secret/);
    expectUsageError(dashed, usage);
    expect(dashed.stderr).not.toMatch(/'-s'|secretkey/);
    expectUsageError(withId, "--id does not apply to 'hash-key'");
  });
});
