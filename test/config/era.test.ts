/**
 * The `era` server field: which era of MCP the gateway speaks to a server ("auto" probes it).
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { configErrors } from '../helpers/config.js';

function erasOf(toml: string, env: Record<string, string> = {}): Record<string, string> {
  return Object.fromEntries(parseConfig(toml, { env }).servers.map((s) => [s.name, s.era]));
}

describe('era', () => {
  it('is "auto" by default, and takes "legacy" and "modern"', () => {
    expect(erasOf('[upstream]\ncommand = "node"\n')).toEqual({ default: 'auto' });
    expect(erasOf('[upstream]\ncommand = "node"\nera = "legacy"\n')).toEqual({ default: 'legacy' });
    expect(erasOf('[upstream]\nurl = "http://127.0.0.1:1/mcp"\nera = "modern"\n')).toEqual({ default: 'modern' });
  });

  it('refuses anything else, by its path', () => {
    expect(configErrors('[upstream]\ncommand = "node"\nera = "2026-07-28"\n')).toEqual(['upstream.era: expected "auto", "legacy" or "modern"']);
    expect(configErrors('[upstream]\ncommand = "node"\nera = true\n')).toEqual(['upstream.era: expected "auto", "legacy" or "modern"']);
  });

  it('is inherited from [upstream] and overridden per server', () => {
    const toml = `
[upstream]
era = "legacy"

[[upstream.servers]]
name = "a"
path_prefix = "/a"
command = "node"

[[upstream.servers]]
name = "b"
path_prefix = "/b"
url = "http://127.0.0.1:1/mcp"
era = "modern"
`;
    expect(erasOf(toml)).toEqual({ a: 'legacy', b: 'modern' });
  });

  it('refuses "modern" on an sse server: HTTP+SSE is legacy only', () => {
    expect(configErrors('[upstream]\ntransport = "sse"\nurl = "http://127.0.0.1:1/sse"\nera = "modern"\n')).toEqual([
      'upstream.era: transport "sse" is legacy only: expected "auto" or "legacy"',
    ]);
    expect(
      configErrors('[[upstream.servers]]\nname = "old"\npath_prefix = "/old"\ntransport = "sse"\nurl = "http://127.0.0.1:1/sse"\nera = "modern"\n'),
    ).toEqual(['upstream.servers[0].era: transport "sse" is legacy only: expected "auto" or "legacy"']);
    expect(erasOf('[upstream]\ntransport = "sse"\nurl = "http://127.0.0.1:1/sse"\nera = "legacy"\n')).toEqual({ default: 'legacy' });
  });

  it('inherited as "modern", does not apply to sse servers, like the fields of another transport', () => {
    const toml = `
[upstream]
era = "modern"

[[upstream.servers]]
name = "new"
path_prefix = "/new"
url = "http://127.0.0.1:1/mcp"

[[upstream.servers]]
name = "old"
path_prefix = "/old"
transport = "sse"
url = "http://127.0.0.1:1/sse"
`;
    expect(erasOf(toml)).toEqual({ new: 'modern', old: 'auto' });
  });

  it('is accepted in MCP_GUARD_ADDITIONAL_SERVERS, with the same rules', () => {
    const env = { MCP_GUARD_ADDITIONAL_SERVERS: JSON.stringify({ extra: { path_prefix: '/extra', command: 'node', era: 'modern' } }) };
    expect(erasOf('[upstream]\ncommand = "node"\nera = "legacy"\n', env)).toEqual({ default: 'legacy', extra: 'modern' });
    const sse = {
      MCP_GUARD_ADDITIONAL_SERVERS: JSON.stringify({ old: { path_prefix: '/old', transport: 'sse', url: 'http://127.0.0.1:1/sse', era: 'modern' } }),
    };
    expect(configErrors('[upstream]\ncommand = "node"\n', sse)).toEqual([
      'MCP_GUARD_ADDITIONAL_SERVERS.old.era: transport "sse" is legacy only: expected "auto" or "legacy"',
    ]);
  });

  it('leaves Mcp-Method and Mcp-Name to the gateway: they mirror each 2026-07-28 request', () => {
    expect(configErrors('[upstream]\nurl = "http://127.0.0.1:1/mcp"\nheaders = { "Mcp-Method" = "tools/call", "mcp-name" = "x" }\n')).toEqual([
      'upstream.headers.Mcp-Method: is set by the gateway itself and cannot be configured',
      'upstream.headers.mcp-name: is set by the gateway itself and cannot be configured',
    ]);
  });
});
