import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { configErrors as errorsOf } from '../helpers/config.js';
import { normalisePathPrefix } from '../../src/config/schema.js';

function servers(...prefixes: string[]): string {
  return prefixes.map((prefix, i) => `[[upstream.servers]]\nname = "s${i}"\npath_prefix = ${JSON.stringify(prefix)}\ncommand = "x"\n`).join('\n');
}

function prefixesOf(...prefixes: string[]): string[] {
  return parseConfig(servers(...prefixes), { env: {} }).servers.map((server) => server.path_prefix);
}

describe('path_prefix', () => {
  it('drops one trailing "/" and keeps "/" as the catch-all', () => {
    expect(prefixesOf('/api/', '/', '/a/b/', '/v1')).toEqual(['/api', '/', '/a/b', '/v1']);
  });

  it('accepts the segment characters RFC 3986 allows, and valid %XX escapes', () => {
    const prefix = "/a-b._~!$&'()*+,;=:@/%20x/.well";
    expect(prefixesOf(prefix)).toEqual([prefix]);
  });

  it('must start with "/"', () => {
    expect(errorsOf(servers('api', ''))).toEqual([
      'upstream.servers[0].path_prefix: must start with "/"',
      'upstream.servers[1].path_prefix: must start with "/"',
    ]);
  });

  it('refuses empty, "." and ".." segments', () => {
    expect(errorsOf(servers('//', '/a//b', '/a/./b', '/..', '/a/..'))).toEqual([
      'upstream.servers[0].path_prefix: must not contain an empty segment ("//")',
      'upstream.servers[1].path_prefix: must not contain an empty segment ("//")',
      'upstream.servers[2].path_prefix: must not contain "." or ".." segments',
      'upstream.servers[3].path_prefix: must not contain "." or ".." segments',
      'upstream.servers[4].path_prefix: must not contain "." or ".." segments',
    ]);
  });

  it('refuses characters that do not belong in a path or a header', () => {
    const bad = ['/a b', '/a?b', '/a#b', '/a"b', '/a\r\nX-Injected: 1', '/a\\b', '/é', '/a<b>'];
    expect(errorsOf(servers(...bad))).toEqual(
      bad.map((_, i) => `upstream.servers[${i}].path_prefix: may only contain letters, digits and -._~!$&'()*+,;=:@% between the "/"`),
    );
  });

  it('refuses broken escapes and escapes that would give a path a second spelling', () => {
    expect(errorsOf(servers('/a%2', '/a%zz', '/%61pi', '/a%2Fb', '/a%2e', '/a%5C', '/a%00'))).toEqual([
      'upstream.servers[0].path_prefix: has a "%" that does not start a %XX escape',
      'upstream.servers[1].path_prefix: has a "%" that does not start a %XX escape',
      ...[2, 3, 4, 5, 6].map((i) => `upstream.servers[${i}].path_prefix: must not percent-encode letters, digits, "-._~", "/", "\\" or control characters`),
    ]);
  });

  it.each([
    ['/health', '/health'],
    ['/health/', '/health'],
    ['/health/deep', '/health'],
    ['/live', '/live'],
    ['/ready', '/ready'],
    ['/metrics', '/metrics'],
    ['/routes/x', '/routes'],
    ['/.well-known', '/.well-known'],
    ['/.well-known/oauth-protected-resource', '/.well-known'],
  ])('refuses %s: it would shadow %s', (prefix, reserved) => {
    expect(errorsOf(servers(prefix))).toEqual([
      `upstream.servers[0].path_prefix: "${reserved}" and the paths below it are reserved for the gateway's own endpoint`,
    ]);
  });

  it('refuses /mcp and below: those are the by-name endpoints', () => {
    const message = '"/mcp" and the paths below it are reserved for the by-name endpoints /mcp and /mcp/:server_name';
    expect(errorsOf(servers('/mcp', '/mcp/filesystem'))).toEqual([
      `upstream.servers[0].path_prefix: ${message}`,
      `upstream.servers[1].path_prefix: ${message}`,
    ]);
  });

  it('matches reserved paths on whole segments only', () => {
    expect(prefixesOf('/healthz', '/mcpx', '/metrics-v2', '/api/health', '/Health')).toEqual(['/healthz', '/mcpx', '/metrics-v2', '/api/health', '/Health']);
  });

  it('must be unique after normalisation', () => {
    expect(errorsOf(servers('/api', '/api/', '/x', '/', '/'))).toEqual([
      'upstream.servers[1].path_prefix: same path_prefix "/api" as upstream.servers[0] (compared without a trailing "/")',
      'upstream.servers[4].path_prefix: same path_prefix "/" as upstream.servers[3] (compared without a trailing "/")',
    ]);
  });

  it('defaults to "/" for a single [upstream] and is checked there too', () => {
    expect(parseConfig('[upstream]\ncommand = "x"\n', { env: {} }).servers[0]?.path_prefix).toBe('/');
    expect(errorsOf('[upstream]\ncommand = "x"\npath_prefix = "/ready"\n')).toEqual([
      `upstream.path_prefix: "/ready" and the paths below it are reserved for the gateway's own endpoint`,
    ]);
  });

  it('normalisePathPrefix gives the normal form or the reason', () => {
    expect(normalisePathPrefix('/a/')).toEqual({ prefix: '/a' });
    expect(normalisePathPrefix('/')).toEqual({ prefix: '/' });
    expect(normalisePathPrefix('a')).toEqual({ error: 'must start with "/"' });
  });
});
