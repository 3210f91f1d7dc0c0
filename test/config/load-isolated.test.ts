/**
 * `mcp-guard serve` loads its config in a child process (src/config/load-isolated.ts), so that
 * zod and the schemas do not stay resident. What crosses back must be exactly what loadConfig()
 * gives in-process: the same config, the same problems, the same environment.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, type ConfigIssue } from '../../src/config/errors.js';
import { parseConfig } from '../../src/config/load.js';
import type { GatewayConfig } from '../../src/config/schema.js';
import { cleanupTempDirs, ensureBuilt, ROOT, runCli, tempDir, writeConfig } from '../helpers/cli.js';
import { fieldsOf } from '../helpers/servers.js';

type LoadIsolated = (path: string) => Promise<GatewayConfig>;
let loadConfigIsolated: LoadIsolated;

beforeAll(async () => {
  await ensureBuilt();
  // The built module: the child it forks is dist/config/load-child.js, plain JavaScript.
  ({ loadConfigIsolated } = (await import(join(ROOT, 'dist/config/load-isolated.js'))) as { loadConfigIsolated: LoadIsolated });
});
afterAll(cleanupTempDirs);

const HASH = '$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0nVd0U4mJCDkyQmMx6nZfWmLkL0OSn0Cj5mIwSKtvXA';

/** A config that sets every section, so that any part which is not plain data would show. */
const EVERY_SECTION = `
[server]
host = "127.0.0.1"
port = 0
allowed_hosts = ["gateway.internal:3000"]

[server.cors]
allowed_origins = ["https://app.example.com", "http://localhost:*"]

[upstream]
timeout_ms = 20000
headers = { Authorization = "Bearer \${ISOLATED_TEST_TOKEN}" }

[[upstream.servers]]
name = "fs"
path_prefix = "/fs"
transport = "stdio"
command = "node"
args = ["server.js", "stdio"]
env = { MODE = "test" }

[[upstream.servers]]
name = "remote"
path_prefix = "/remote"
url = "http://127.0.0.1:9/mcp"
era = "legacy"

[[upstream.servers]]
name = "old"
path_prefix = "/old"
transport = "sse"
url = "http://127.0.0.1:9/sse"

[[auth.api_keys]]
id = "alice"
key_hash = "${HASH}"
key_prefix = "mcp_abcdefgh"
allowed_tools = ["read_*"]
servers = ["fs"]
rate_limit = 5

[auth.jwt]
mode = "jwks"
jwks_url = "https://auth.internal/.well-known/jwks.json"
issuer = "https://auth.internal/"
audience = "mcp-guard"

[rate_limit]
requests_per_second = 10
burst_size = 20

[[rate_limit.tool_limits]]
tool_pattern = "expensive_*"
requests_per_second = 1
burst_size = 1

[audit]
file = "/tmp/mcp-guard-isolated-test/audit.log"
include_arguments = true

[[audit.redaction_rules]]
name = "email"
pattern = "[\\\\w.]+@[\\\\w.]+"
`;

function issuesOf(fn: () => unknown): ConfigIssue[] {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return error.issues;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfigIsolated', () => {
  it('gives exactly the config loadConfig gives in-process, environment included', async () => {
    process.env['ISOLATED_TEST_TOKEN'] = 'token-from-the-environment';
    try {
      const isolated = await loadConfigIsolated(writeConfig(EVERY_SECTION));
      const inProcess = parseConfig(EVERY_SECTION);
      // toStrictEqual: the same types too, so a class instance or a lost field would fail here.
      expect(isolated).toStrictEqual(inProcess);
      expect(isolated.servers.map((s) => s.name)).toEqual(['fs', 'remote', 'old']);
      expect(fieldsOf(isolated.servers[1]).headers).toEqual({ Authorization: 'Bearer token-from-the-environment' });
    } finally {
      delete process.env['ISOLATED_TEST_TOKEN'];
    }
  });

  it('rejects with a ConfigError holding the same issues as in-process', async () => {
    const bad = '[[upstream.servers]]\nname = "x y"\npath_prefix = "fs"\nurl = "ftp://nowhere"\n[rate_limit]\nrequests_per_second = 0\n';
    const expected = issuesOf(() => parseConfig(bad, { env: {} }));
    expect(expected.length).toBeGreaterThan(2);
    const error = await loadConfigIsolated(writeConfig(bad)).then(
      () => undefined,
      (e: unknown) => e,
    );
    // The class of dist/, not of src/: compared by name and content.
    expect((error as Error).name).toBe('ConfigError');
    expect((error as { issues: ConfigIssue[] }).issues).toEqual(expected);
    expect((error as Error).message).toBe(new ConfigError(expected).message);
  });

  it('a missing file is a ConfigError at (file)', async () => {
    const missing = join(tempDir(), 'absent.toml');
    const error = (await loadConfigIsolated(missing).catch((e: unknown) => e)) as { name: string; issues: ConfigIssue[] };
    expect(error.name).toBe('ConfigError');
    expect(error.issues).toEqual([{ path: '(file)', message: expect.stringContaining(missing) }]);
  });
});

describe('serve with a config that does not validate', () => {
  it('is exit 1 with every problem at its key path, as validate prints them', async () => {
    const path = writeConfig('[[upstream.servers]]\nname = "x y"\npath_prefix = "/x"\nurl = "http://127.0.0.1:9/mcp"\n[server]\nport = "eighty"\n');
    const [serve, validate] = await Promise.all([runCli(['serve', '-c', path]), runCli(['validate', '-c', path])]);
    expect(serve.code).toBe(1);
    expect(serve.stderr).toMatch(/^mcp-guard: invalid configuration:\n {2}/);
    expect(serve.stderr).toContain('server.port');
    expect(serve.stderr).toContain('upstream.servers[0].name');
    expect(serve.stderr).not.toMatch(/\n\s+at /);
    expect(serve.stderr).toBe(validate.stderr);
  });
});
