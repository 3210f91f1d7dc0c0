/**
 * Every TOML example of the earlier gateway's multi-server guide, read from the seed document
 * itself so that a test cannot drift from what users copy. Examples with [[auth.api_keys]] or
 * [auth.jwt] must fail with the "not supported yet" error (we never accept a security setting we do
 * not enforce); the rest of each of them must validate.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, type ConfigIssue } from '../../src/config/errors.js';
import { parseConfig } from '../../src/config/load.js';

const SEED = new URL('../../../shared/seeds/mcp-guard-multi-server-routing.md', import.meta.url);
const blocks = [...readFileSync(SEED, 'utf8').matchAll(/```toml\n([\s\S]*?)```/g)].map((match) => match[1] as string);

const AUTH_ERROR = {
  path: 'auth',
  message: 'not supported by this version yet (authentication lands in a later release); remove it',
};

function parse(toml: string) {
  return parseConfig(toml, { env: {} });
}

function issuesOf(toml: string): ConfigIssue[] {
  try {
    parse(toml);
  } catch (error) {
    if (error instanceof ConfigError) return error.issues;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

/** Drops [auth...] and [[auth...]] tables, up to the next table that is not one of them. */
function withoutAuth(toml: string): string {
  let inAuth = false;
  const kept: string[] = [];
  for (const line of toml.split('\n')) {
    const header = /^\s*\[\[?\s*([A-Za-z_.]+)/.exec(line);
    if (header) inAuth = (header[1] as string).startsWith('auth');
    if (!inAuth) kept.push(line);
  }
  return kept.join('\n');
}

function block(title: string, index: number): [string, string] {
  const text = blocks[index];
  if (text === undefined) throw new Error(`seed example ${index} (${title}) is missing`);
  return [title, text];
}

describe('seed guide examples', () => {
  it('finds the ten TOML examples of the guide', () => {
    expect(blocks).toHaveLength(10);
  });

  it('Basic Structure: validates; [upstream] transport and command are ignored with a warning', () => {
    const [, text] = block('Basic Structure', 0);
    const config = parse(text);
    expect(config.single).toBe(false);
    expect(config.servers.map((s) => [s.name, s.path_prefix, s.transport])).toEqual([
      ['filesystem', '/fs', 'stdio'],
      ['github', '/github', 'http'],
    ]);
    expect(config.servers[0]).toMatchObject({
      command: 'npx',
      args: ['-y', '@modelcontextprotocol/server-filesystem', '/tmp'],
    });
    expect(config.servers[1]).toMatchObject({ url: 'https://github-mcp.example.com/api', strip_prefix: false });
    expect(config.warnings).toEqual(['[upstream] transport, command are ignored because [[upstream.servers]] is set']);
  });

  it('Path Matching: a routing fragment without transports is refused, naming each missing transport', () => {
    const [, text] = block('Path Matching', 1);
    expect(issuesOf(text)).toEqual(
      [0, 1, 2].map((index) => ({
        path: `upstream.servers[${index}].transport`,
        message: 'required: "stdio" (with command), "http" or "sse" (with url)',
      })),
    );
  });

  it('Path Matching: completed with urls, it validates with the three prefixes', () => {
    const [, text] = block('Path Matching', 1);
    const completed = text.replace(/path_prefix = "([^"]*)"/g, (line, prefix: string) => `${line}\nurl = "http://backend:8080${prefix}"`);
    const config = parse(completed);
    expect(config.servers.map((s) => [s.name, s.path_prefix, s.transport])).toEqual([
      ['api', '/api', 'http'],
      ['api-v2', '/api/v2', 'http'],
      ['default', '/', 'http'],
    ]);
  });

  it('Without strip_prefix: validates as an http server (the transport follows from url)', () => {
    const [, text] = block('Without strip_prefix', 2);
    const config = parse(text);
    expect(config.single).toBe(false);
    expect(config.servers).toEqual([
      expect.objectContaining({ name: 'api', path_prefix: '/api', transport: 'http', url: 'http://backend:8080', strip_prefix: false }),
    ]);
  });

  it('With strip_prefix: validates with strip_prefix = true', () => {
    const [, text] = block('With strip_prefix', 3);
    expect(parse(text).servers).toEqual([
      expect.objectContaining({ name: 'api', transport: 'http', url: 'http://backend:8080', strip_prefix: true }),
    ]);
  });

  const withAuth: Array<[string, number, (config: ReturnType<typeof parse>) => void]> = [
    [
      'Two Local Servers',
      4,
      (config) => {
        expect(config.server).toMatchObject({ host: '127.0.0.1', port: 3000 });
        expect(config.servers.map((s) => [s.name, s.path_prefix, s.transport, s.command])).toEqual([
          ['filesystem', '/fs', 'stdio', 'npx'],
          ['memory', '/memory', 'stdio', 'npx'],
        ]);
        expect(config.servers[1]?.args).toEqual(['-y', '@modelcontextprotocol/server-memory']);
      },
    ],
    [
      'Mixed Transports',
      5,
      (config) => {
        expect(config.server).toMatchObject({ host: '0.0.0.0', port: 3000 });
        expect(config.servers.map((s) => [s.name, s.path_prefix, s.transport, s.command ?? s.url])).toEqual([
          ['local', '/local', 'stdio', 'npx'],
          ['api', '/api', 'http', 'https://mcp-api.example.com/v1'],
          ['stream', '/stream', 'sse', 'https://streaming-mcp.example.com/events'],
        ]);
      },
    ],
    [
      'Microservices Architecture',
      6,
      (config) => {
        expect(config.servers.map((s) => [s.name, s.path_prefix, s.url])).toEqual([
          ['users', '/users', 'http://user-service.internal:8080/mcp'],
          ['orders', '/orders', 'http://order-service.internal:8080/mcp'],
          ['inventory', '/inventory', 'http://inventory-service.internal:8080/mcp'],
        ]);
        expect(config.warnings).toEqual(['[upstream] transport, url are ignored because [[upstream.servers]] is set']);
      },
    ],
    [
      'Tool Segregation by Server',
      7,
      (config) => {
        expect(config.servers.map((s) => [s.name, s.path_prefix, s.args.at(-1)])).toEqual([
          ['readonly', '/readonly', '--readonly'],
          ['admin', '/admin', '/data'],
        ]);
      },
    ],
  ];

  for (const [title, index, check] of withAuth) {
    it(`${title}: refused because of its [auth] section, and nothing else`, () => {
      const [, text] = block(title, index);
      expect(issuesOf(text)).toEqual([AUTH_ERROR]);
    });

    it(`${title}: validates without its [auth] section`, () => {
      const [, text] = block(title, index);
      check(parse(withoutAuth(text)));
    });
  }

  it('Global Tool Restrictions and Scope-Based Authorization: auth-only fragments are refused', () => {
    for (const index of [8, 9]) {
      const [, text] = block('auth fragment', index);
      expect(issuesOf(text)).toContainEqual(AUTH_ERROR);
    }
  });
});
