/**
 * The circuit breaker's per-server fields: defaults, inheritance from [upstream] like the other
 * scalar defaults, and a clear error at the key to change for each value that cannot work.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { configErrors } from '../helpers/config.js';

function parse(toml: string, env: Record<string, string> = {}) {
  return parseConfig(toml, { env });
}

const circuitOf = (server: { circuit_failure_threshold: number; circuit_open_ms: number; circuit_open_max_ms: number } | undefined) => ({
  threshold: server?.circuit_failure_threshold,
  open: server?.circuit_open_ms,
  max: server?.circuit_open_max_ms,
});

describe('circuit breaker fields', () => {
  it('default to 5 failures, 30 s open, at most 120 s', () => {
    const config = parse('[upstream]\nurl = "http://127.0.0.1:1/mcp"\n');
    expect(circuitOf(config.servers[0])).toEqual({ threshold: 5, open: 30_000, max: 120_000 });
  });

  it('are set per server; 0 failures switches the breaker off', () => {
    const config = parse(`
[[upstream.servers]]
name = "a"
path_prefix = "/a"
url = "http://127.0.0.1:1/mcp"
circuit_failure_threshold = 0

[[upstream.servers]]
name = "b"
path_prefix = "/b"
command = "node"
circuit_failure_threshold = 2
circuit_open_ms = 500
circuit_open_max_ms = 500
`);
    expect(config.servers.map(circuitOf)).toEqual([
      { threshold: 0, open: 30_000, max: 120_000 },
      { threshold: 2, open: 500, max: 500 },
    ]);
  });

  it('are inherited from [upstream] by every server, stdio and http alike, unless a server sets its own', () => {
    const config = parse(
      `
[upstream]
circuit_failure_threshold = 3
circuit_open_ms = 1000
circuit_open_max_ms = 8000

[[upstream.servers]]
name = "child"
path_prefix = "/child"
command = "node"

[[upstream.servers]]
name = "remote"
path_prefix = "/remote"
url = "https://remote.example/mcp"
circuit_open_ms = 2000
`,
      { MCP_GUARD_ADDITIONAL_SERVERS: '{"extra": {"path_prefix": "/extra", "url": "http://127.0.0.1:1", "circuit_failure_threshold": 0}}' },
    );
    expect(config.servers.map((s) => [s.name, circuitOf(s)])).toEqual([
      ['child', { threshold: 3, open: 1000, max: 8000 }],
      ['remote', { threshold: 3, open: 2000, max: 8000 }],
      ['extra', { threshold: 0, open: 1000, max: 8000 }],
    ]);
  });

  it('refuses values that are not whole numbers in range, at their key path', () => {
    expect(
      configErrors(`
[upstream]
url = "http://127.0.0.1:1/mcp"
circuit_failure_threshold = -1
circuit_open_ms = 0
circuit_open_max_ms = 2.5
`),
    ).toEqual([
      'upstream.circuit_failure_threshold: expected an integer of at least 0',
      'upstream.circuit_open_ms: expected a whole number of milliseconds from 1 to 2147483647',
      'upstream.circuit_open_max_ms: expected a whole number of milliseconds from 1 to 2147483647',
    ]);
    expect(configErrors('[upstream]\nurl = "http://127.0.0.1:1/mcp"\ncircuit_failure_threshold = "5"\n')).toEqual([
      'upstream.circuit_failure_threshold: expected an integer of at least 0',
    ]);
    expect(configErrors('[upstream]\nurl = "http://127.0.0.1:1/mcp"\ncircuit_open_ms = 2147483648\n')).toEqual([
      'upstream.circuit_open_ms: expected a whole number of milliseconds from 1 to 2147483647',
    ]);
    expect(configErrors('[[upstream.servers]]\nname = "a"\npath_prefix = "/a"\nurl = "http://a"\ncircuit_opn_ms = 5\n')).toEqual([
      'upstream.servers[0].circuit_opn_ms: unknown key',
    ]);
  });

  it('circuit_open_max_ms may not be below circuit_open_ms, blamed on the key the entry sets', () => {
    // Above the built-in maximum of 120 s, the open period needs its own maximum.
    expect(configErrors('[upstream]\nurl = "http://a"\ncircuit_open_ms = 300000\n')).toEqual([
      'upstream.circuit_open_ms: must be at most circuit_open_max_ms (120000)',
    ]);
    expect(configErrors('[upstream]\nurl = "http://a"\ncircuit_open_max_ms = 1000\n')).toEqual([
      'upstream.circuit_open_max_ms: must be at least circuit_open_ms (30000)',
    ]);
    expect(
      configErrors(`
[upstream]
circuit_open_ms = 500
circuit_open_max_ms = 1000

[[upstream.servers]]
name = "a"
path_prefix = "/a"
url = "http://a"
circuit_open_ms = 2000

[[upstream.servers]]
name = "b"
path_prefix = "/b"
url = "http://b"
`),
    ).toEqual(['upstream.servers[0].circuit_open_ms: must be at most circuit_open_max_ms (1000)']);
    expect(
      configErrors(`
[upstream]
circuit_open_ms = 1000
circuit_open_max_ms = 100

[[upstream.servers]]
name = "a"
path_prefix = "/a"
url = "http://a"
`),
    ).toEqual(['upstream.circuit_open_max_ms: must be at least circuit_open_ms (1000)']);
    // With both pairs wrong, each is reported.
    expect(configErrors('[upstream]\ncommand = "x"\nrestart_backoff_ms = 40000\ncircuit_open_ms = 200000\n')).toEqual([
      'upstream.restart_backoff_ms: must be at most restart_backoff_max_ms (30000)',
      'upstream.circuit_open_ms: must be at most circuit_open_max_ms (120000)',
    ]);
  });
});
