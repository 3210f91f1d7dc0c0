/**
 * `mcp-guard validate [-c FILE]`: exit 0 naming the servers, or exit 1 with every problem at its
 * TOML key path; where the config comes from (-c, $MCP_GUARD_CONFIG, ./mcp-guard.toml); the
 * repository's own config and every example validate.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupTempDirs, ensureBuilt, ROOT, runCli, tempDir, writeConfig } from '../helpers/cli.js';

beforeAll(async () => {
  await ensureBuilt();
}, 120_000);

afterAll(() => cleanupTempDirs());

function server(name: string, body = 'command = "node"'): string {
  return `[[upstream.servers]]\nname = "${name}"\npath_prefix = "/${name}"\n${body}\n`;
}

describe('validate', () => {
  it('a valid config: exit 0, the file and its servers named on stdout', async () => {
    const path = writeConfig(`${server('alpha')}${server('beta', 'url = "http://127.0.0.1:9/mcp"')}`);
    const r = await runCli(['validate', '-c', path]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(path);
    expect(r.stdout).toMatch(/valid/);
    expect(r.stdout).toMatch(/2 servers: alpha, beta/);
    expect(r.stderr).toBe('');
  });

  it('a single [upstream]: one server, named "default"', async () => {
    const r = await runCli(['validate', '--config', writeConfig('[upstream]\ntransport = "stdio"\ncommand = "node"\n')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/1 server: default/);
  });

  it('an invalid config: exit 1, each problem at its key path, nothing on stdout', async () => {
    const path = writeConfig(
      [
        server('ok'),
        '[[upstream.servers]]\nname = "web"\npath_prefix = "/web"\ntransport = "http"\n',
        '[[upstream.servers]]\nname = "ok"\npath_prefix = "/other"\ncommand = "x"\n',
        '[[upstream.servers]]\nname = "typo"\npath_prefix = "/typo"\ncommand = "x"\ncomand = "y"\n',
      ].join('\n'),
    );
    const r = await runCli(['validate', '-c', path]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/invalid configuration/);
    expect(r.stderr).toContain('upstream.servers[1].url: required for transport "http"');
    expect(r.stderr).toContain('upstream.servers[2].name: same name "ok" as upstream.servers[0]');
    expect(r.stderr).toContain('upstream.servers[3].comand: unknown key');
    // No usage text: the command line was right, the file was not.
    expect(r.stderr).not.toMatch(/Usage:/);
  });

  it('problems of every stage in one run: a schema error hides no missing command, empty [auth] or sinkless [audit]', async () => {
    const path = writeConfig(
      [
        '[server]\nport = "3000"\nlisten = "0.0.0.0"\n',
        // No command (found when the server is resolved), beside an invalid value.
        '[[upstream.servers]]\nname = "local"\npath_prefix = "/local"\ntransport = "stdio"\ntimeout_ms = "30s"\n',
        // An invalid path_prefix, and no url.
        '[[upstream.servers]]\nname = "web"\npath_prefix = "web"\ntransport = "http"\n',
        '[auth]\n',
        '[audit]\nenabled = true\n',
      ].join('\n'),
    );
    const r = await runCli(['validate', '-c', path]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    const listed = r.stderr
      .split('\n')
      .filter((line) => /^\s*(server|upstream|auth|audit)\b/.test(line))
      .map((line) => line.trim());
    expect(listed).toEqual([
      'server.port: expected an integer from 0 to 65535',
      'server.listen: unknown key',
      'upstream.servers[0].timeout_ms: expected a whole number of milliseconds from 1 to 2147483647',
      'upstream.servers[1].path_prefix: must start with "/"',
      'upstream.servers[0].command: required for transport "stdio"',
      'upstream.servers[1].url: required for transport "http"',
      'auth: configure [[auth.api_keys]], [auth.jwt] or [[auth.client_certs]] (or remove [auth] to run without authentication)',
      'audit: configure at least one sink: stdout = true, file or export_url (or enabled = false)',
    ]);
  });

  it('finding 11: two servers named "local" (and two prefixes, two key ids): each message names the duplicated value', async () => {
    const path = writeConfig(
      [
        server('local'),
        server('a'),
        server('b'),
        '[[upstream.servers]]\nname = "c"\npath_prefix = "/a/"\ncommand = "node"\n',
        '[[upstream.servers]]\nname = "local"\npath_prefix = "/other"\ncommand = "node"\n',
        '[auth]\n[[auth.api_keys]]\nid = "ci-bot"\nkey_hash = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="\n',
        '[[auth.api_keys]]\nid = "ci-bot"\nkey_hash = "LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564="\n',
      ].join('\n'),
    );
    const r = await runCli(['validate', '-c', path]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('upstream.servers[4].name: same name "local" as upstream.servers[0]');
    expect(r.stderr).toContain('upstream.servers[3].path_prefix: same path_prefix "/a" as upstream.servers[1] (compared without a trailing "/")');
    expect(r.stderr).toContain('auth.api_keys[1].id: same id "ci-bot" as auth.api_keys[0]');
  });

  it('TOML that does not parse: exit 1 with the file, line and column', async () => {
    const path = writeConfig('[upstream\ncommand = "x"\n');
    const r = await runCli(['validate', '-c', path]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${path}:1:`);
    expect(r.stderr).toMatch(/not valid TOML/);
  });

  it('an unset ${VAR} is an error naming the key; set, it validates', async () => {
    const path = writeConfig(`${server('alpha', 'url = "${MCP_GUARD_TEST_UPSTREAM_URL}"')}`);
    const unset = await runCli(['validate', '-c', path]);
    expect(unset.code).toBe(1);
    expect(unset.stderr).toMatch(/upstream\.servers\[0\]\.url: .*MCP_GUARD_TEST_UPSTREAM_URL/);
    const set = await runCli(['validate', '-c', path], { env: { MCP_GUARD_TEST_UPSTREAM_URL: 'http://127.0.0.1:9/mcp' } });
    expect(set.code, set.stderr).toBe(0);
  });

  it('a missing file: exit 1 and a clear message', async () => {
    const missing = join(tempDir(), 'nope.toml');
    const r = await runCli(['validate', '-c', missing]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`config file not found: ${missing}`);
    expect(r.stderr).not.toMatch(/Usage:|at .*\.js:\d+/);
  });

  it('a directory given as the file: exit 1 and a clear message', async () => {
    const dir = tempDir();
    const r = await runCli(['validate', '-c', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`config file ${dir} is a directory`);
  });

  describe('where the config comes from: -c, else $MCP_GUARD_CONFIG, else ./mcp-guard.toml', () => {
    let cwd: string;
    let fromEnv: string;
    let fromFlag: string;

    beforeAll(() => {
      cwd = tempDir();
      writeConfig(server('from_cwd'), 'mcp-guard.toml', cwd);
      fromEnv = writeConfig(server('from_env'), 'env.toml');
      fromFlag = writeConfig(server('from_flag'), 'flag.toml');
    });

    it('-c wins over $MCP_GUARD_CONFIG and ./mcp-guard.toml', async () => {
      const r = await runCli(['validate', '-c', fromFlag], { cwd, env: { MCP_GUARD_CONFIG: fromEnv } });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('from_flag');
    });

    it('$MCP_GUARD_CONFIG wins over ./mcp-guard.toml', async () => {
      const r = await runCli(['validate'], { cwd, env: { MCP_GUARD_CONFIG: fromEnv } });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('from_env');
    });

    it('./mcp-guard.toml of the working directory otherwise', async () => {
      const r = await runCli(['validate'], { cwd });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('from_cwd');
    });

    it('an empty $MCP_GUARD_CONFIG counts as unset', async () => {
      const r = await runCli(['validate'], { cwd, env: { MCP_GUARD_CONFIG: '' } });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('from_cwd');
    });

    it('none of them: exit 1 naming ./mcp-guard.toml', async () => {
      const r = await runCli(['validate'], { cwd: tempDir() });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/config file not found: (\.\/)?mcp-guard\.toml/);
    });
  });

  it("the repository's own mcp-guard.toml validates", async () => {
    const r = await runCli(['validate'], { cwd: ROOT });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/mcp-guard\.toml: valid \(2 servers: everything, filesystem\)/);
  });

  const examples = readdirSync(join(ROOT, 'examples')).filter((f) => f.endsWith('.toml'));
  it('there are examples', () => {
    expect(examples.length).toBeGreaterThan(0);
  });
  // What the examples' comments tell a user to export: the key_hash `mcp-guard keygen` printed.
  const exampleEnv = { DEVELOPER_KEY_HASH: '$argon2id$v=19$m=65536,p=4,t=3$U2T/xu0/ijRPasifnWFRLQ$LuqUxd0bHsdJrOeJQHER9v0bjc4E73eeCjOvK/Q18iI' };
  it.each(examples)('examples/%s validates', async (file) => {
    const r = await runCli(['validate', '-c', join('examples', file)], { cwd: ROOT, env: exampleEnv });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/: valid \(\d+ servers?: /);
  });
});
