import { describe, expect, it } from 'vitest';
import { interpolateString } from '../../src/config/env.js';
import { ConfigError } from '../../src/config/errors.js';
import { parseConfig } from '../../src/config/load.js';
import { fieldsOf } from '../helpers/servers.js';

function errorOf(toml: string, env: Record<string, string>): ConfigError {
  try {
    parseConfig(toml, { env });
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

const GITHUB = (headers: string) => `
[[upstream.servers]]
name = "github"
path_prefix = "/github"
transport = "http"
url = "\${GITHUB_URL:-https://api.githubcopilot.com/mcp}"
headers = ${headers}
`;

describe('${VAR} interpolation', () => {
  it('replaces references in strings anywhere: tables, arrays, env and headers', () => {
    const config = parseConfig(
      `
[server]
host = "\${HOST}"

[[upstream.servers]]
name = "\${NAME}"
path_prefix = "/\${NAME}"
command = "\${BIN_DIR}/server"
args = ["--token=\${TOKEN}", "--level", "\${LEVEL:-info}"]
env = { TOKEN = "\${TOKEN}", EMPTY = "\${UNSET:-}" }
cwd = "\${HOME}/work"
`,
      { env: { HOST: '0.0.0.0', NAME: 'fs', BIN_DIR: '/opt/bin', TOKEN: 's3cr3t', HOME: '/home/u' } },
    );
    expect(config.server.host).toBe('0.0.0.0');
    expect(config.servers[0]).toMatchObject({
      name: 'fs',
      path_prefix: '/fs',
      command: '/opt/bin/server',
      args: ['--token=s3cr3t', '--level', 'info'],
      env: { TOKEN: 's3cr3t', EMPTY: '' },
      cwd: '/home/u/work',
    });
  });

  it('uses the default when the variable is unset or empty, like the shell', () => {
    const url = (env: Record<string, string>) => fieldsOf(parseConfig(GITHUB('{}'), { env }).servers[0]).url;
    expect(url({})).toBe('https://api.githubcopilot.com/mcp');
    expect(url({ GITHUB_URL: '' })).toBe('https://api.githubcopilot.com/mcp');
    expect(url({ GITHUB_URL: 'http://localhost:9/mcp' })).toBe('http://localhost:9/mcp');
  });

  it('keeps a variable set to "" as "" when there is no default', () => {
    const config = parseConfig('[upstream]\ncommand = "x"\nenv = { A = "${EMPTY}" }\n', { env: { EMPTY: '' } });
    expect(fieldsOf(config.servers[0]).env).toEqual({ A: '' });
  });

  it('reports an unset variable at the key path of the value, naming the variable only', () => {
    const error = errorOf(GITHUB('{ Authorization = "Bearer ${GITHUB_TOKEN}" }'), {
      OTHER_SECRET: 'hunter2',
      GITHUB_URL: 'http://secret-host.internal/mcp',
    });
    expect(error.issues).toEqual([{ path: 'upstream.servers[0].headers.Authorization', message: 'environment variable GITHUB_TOKEN is not set' }]);
    expect(error.message).toBe('upstream.servers[0].headers.Authorization: environment variable GITHUB_TOKEN is not set');
  });

  it('never puts a resolved value into an error message', () => {
    const secret = 'Sup3rS3cret-value';
    const env = { SECRET: secret, URL: `http://${secret}`, NAME: `bad name ${secret}` };
    const error = errorOf(
      `
[server]
host = "\${SECRET}"
port = 1.5

[[upstream.servers]]
name = "\${NAME}"
path_prefix = "\${SECRET}"
transport = "stdio"
url = "\${URL}"
headers = { "X-\${SECRET}" = "\${SECRET}\\n" }
unknown = "\${SECRET}"
`,
      env,
    );
    expect(error.issues.length).toBeGreaterThan(3);
    expect(error.message).not.toContain(secret);
    expect(error.message).not.toContain('Sup3r');
  });

  it('reports each unset variable, in every string', () => {
    const error = errorOf('[upstream]\ncommand = "${A}${B}"\nargs = ["${C:-ok}", "${D}"]\n', {});
    expect(error.issues).toEqual([
      { path: 'upstream.command', message: 'environment variable A is not set' },
      { path: 'upstream.command', message: 'environment variable B is not set' },
      { path: 'upstream.args[1]', message: 'environment variable D is not set' },
    ]);
  });

  it('reports only the missing variable, not what the unreplaced text would fail', () => {
    const error = errorOf('[upstream]\ntransport = "http"\nurl = "${UPSTREAM_URL}"\n', {});
    expect(error.issues).toEqual([{ path: 'upstream.url', message: 'environment variable UPSTREAM_URL is not set' }]);
  });

  it('refuses malformed references', () => {
    const error = errorOf('[upstream]\ncommand = "x"\nargs = ["${", "${not-a-name}", "${A:-${B}}", "$A and {B} are fine"]\n', {});
    expect(error.issues).toEqual([
      { path: 'upstream.args[0]', message: '"${" at character 1 is not closed by "}"' },
      { path: 'upstream.args[1]', message: 'invalid reference at character 1: use ${NAME} or ${NAME:-default}' },
      { path: 'upstream.args[2]', message: 'invalid reference at character 1: use ${NAME} or ${NAME:-default}' },
    ]);
  });

  it('does not interpolate keys, and does not re-scan replaced text', () => {
    const config = parseConfig('[upstream]\ncommand = "x"\nenv = { "${KEY}" = "${VALUE}" }\n', {
      env: { KEY: 'k', VALUE: '${KEY}' },
    });
    expect(fieldsOf(config.servers[0]).env).toEqual({ '${KEY}': '${KEY}' });
  });

  it('only applies to strings: a number given as "${PORT}" is a type error', () => {
    expect(errorOf('[server]\nport = "${PORT}"\n[upstream]\ncommand = "x"\n', { PORT: '8080' }).issues).toEqual([
      { path: 'server.port', message: 'expected an integer from 0 to 65535' },
    ]);
  });

  it('reads process.env when no env is given', () => {
    process.env['MCP_GUARD_TEST_COMMAND'] = 'from-process-env';
    try {
      expect(fieldsOf(parseConfig('[upstream]\ncommand = "${MCP_GUARD_TEST_COMMAND}"\n').servers[0]).command).toBe('from-process-env');
    } finally {
      delete process.env['MCP_GUARD_TEST_COMMAND'];
    }
  });
});

describe('interpolateString', () => {
  it('handles text around and between references', () => {
    expect(interpolateString('a${X}b${Y:-y}c', { X: '1' })).toEqual({ value: 'a1byc', problems: [] });
    expect(interpolateString('no references', {})).toEqual({ value: 'no references', problems: [] });
    expect(interpolateString('${X:-}', {})).toEqual({ value: '', problems: [] });
    expect(interpolateString('${X:-a:-b}', {})).toEqual({ value: 'a:-b', problems: [] });
  });
});
