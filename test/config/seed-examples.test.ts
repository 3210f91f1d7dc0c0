/**
 * Every TOML example of the earlier gateway's multi-server guide, read from the seed document
 * itself so that a test cannot drift from what users copy. The guide writes `key_hash = "..."`
 * where a user pastes the hash `mcp-guard hash-key` or `keygen` prints: with that placeholder
 * filled in by a real argon2id hash, every example validates; with it left as "...", the one
 * problem reported is that key_hash is not a hash.
 */
import { readFileSync } from 'node:fs';
import argon2 from 'argon2';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, type ConfigIssue } from '../../src/config/errors.js';
import { parseConfig } from '../../src/config/load.js';
import { fieldsOf } from '../helpers/servers.js';

const SEED = new URL('../../../shared/seeds/mcp-guard-multi-server-routing.md', import.meta.url);
const blocks = [...readFileSync(SEED, 'utf8').matchAll(/```toml\n([\s\S]*?)```/g)].map((match) => match[1] as string);

const PLACEHOLDER_ERROR = 'expected an argon2id hash ($argon2id$v=19$...) as printed by `mcp-guard hash-key`, or a base64 SHA-256 hash';
let realHashes: string[] = [];
beforeAll(async () => {
  realHashes = await Promise.all(['first', 'second'].map((k) => argon2.hash(`mcp_seed_${k}`, { type: argon2.argon2id })));
});

/** The example as a user completes it: each `key_hash = "..."` replaced by the hash of its own key. */
function withHashes(toml: string): string {
  let n = 0;
  return toml.replace(/key_hash = "\.\.\."/g, () => `key_hash = "${realHashes[n++]}"`);
}

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
    expect(parse(text).servers).toEqual([expect.objectContaining({ name: 'api', transport: 'http', url: 'http://backend:8080', strip_prefix: true })]);
  });

  const withAuth: Array<[string, number, (config: ReturnType<typeof parse>) => void]> = [
    [
      'Two Local Servers',
      4,
      (config) => {
        expect(config.server).toMatchObject({ host: '127.0.0.1', port: 3000 });
        expect(config.servers.map(fieldsOf).map((s) => [s.name, s.path_prefix, s.transport, s.command])).toEqual([
          ['filesystem', '/fs', 'stdio', 'npx'],
          ['memory', '/memory', 'stdio', 'npx'],
        ]);
        expect(fieldsOf(config.servers[1]).args).toEqual(['-y', '@modelcontextprotocol/server-memory']);
      },
    ],
    [
      'Mixed Transports',
      5,
      (config) => {
        expect(config.server).toMatchObject({ host: '0.0.0.0', port: 3000 });
        expect(config.servers.map(fieldsOf).map((s) => [s.name, s.path_prefix, s.transport, s.command ?? s.url])).toEqual([
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
        expect(config.servers.map(fieldsOf).map((s) => [s.name, s.path_prefix, s.url])).toEqual([
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
        expect(config.servers.map(fieldsOf).map((s) => [s.name, s.path_prefix, s.args?.at(-1)])).toEqual([
          ['readonly', '/readonly', '--readonly'],
          ['admin', '/admin', '/data'],
        ]);
      },
    ],
  ];

  for (const [title, index, check] of withAuth) {
    it(`${title}: validates as written, its key_hash placeholder filled in`, () => {
      const [, text] = block(title, index);
      const config = parse(withHashes(text));
      check(config);
      expect(config.auth).toBeDefined();
    });

    it(`${title}: the literal "..." placeholder is the only problem`, () => {
      const [, text] = block(title, index);
      if (!text.includes('key_hash = "..."')) return;
      const issues = issuesOf(text);
      expect(issues.length).toBeGreaterThan(0);
      for (const issue of issues) expect(issue).toEqual({ path: expect.stringMatching(/^auth\.api_keys\[\d\]\.key_hash$/), message: PLACEHOLDER_ERROR });
    });
  }

  it('Microservices Architecture: its [auth.jwt] is a JWKS verifier with issuer and audience', () => {
    const [, text] = block('Microservices Architecture', 6);
    expect(parse(text).auth?.jwt).toMatchObject({
      mode: 'jwks',
      jwks_url: 'https://auth.internal/.well-known/jwks.json',
      issuer: 'https://auth.internal/',
      audience: 'mcp-guard',
      user_id_claim: 'sub',
      scopes_claim: 'scope',
    });
  });

  it('Tool Segregation by Server: the reader key lists two tools, the admin key none (all tools)', () => {
    const [, text] = block('Tool Segregation by Server', 7);
    const keys = parse(withHashes(text)).auth?.api_keys;
    expect(keys?.map((k) => [k.id, k.allowed_tools])).toEqual([
      ['reader', ['read_file', 'list_directory']],
      ['admin', undefined],
    ]);
  });

  it('Global Tool Restrictions: the fragment validates once it has an upstream', () => {
    const [, text] = block('Global Tool Restrictions', 8);
    const config = parse(`[upstream]\ncommand = "node"\n${withHashes(text)}`);
    expect(config.auth?.api_keys?.[0]).toMatchObject({ id: 'limited-user', allowed_tools: ['read_file'] });
  });

  it('Scope-Based Authorization: the mapping works inside a complete [auth.jwt]; alone it names the missing mode', () => {
    const [, text] = block('Scope-Based Authorization', 9);
    const [, jwt] = block('Microservices Architecture', 6);
    const config = parse(`${jwt}\n${text}`);
    expect(config.auth?.jwt?.scope_tool_mapping).toEqual({ read: ['read_file', 'list_directory'], write: ['write_file'] });
    expect(issuesOf(`[upstream]\ncommand = "node"\n${text}`)).toEqual([{ path: 'auth.jwt.mode', message: 'required' }]);
  });
});
