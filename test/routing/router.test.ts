import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { forwardPathFor, Router, UnsafePathError } from '../../src/routing/router.js';

function router(toml: string): Router {
  return new Router(parseConfig(toml, { env: {} }).servers);
}

const seedRouting = router(`
[[upstream.servers]]
name = "api"
path_prefix = "/api"
url = "http://backend:8080"

[[upstream.servers]]
name = "api-v2"
path_prefix = "/api/v2"
url = "http://backend:8080"

[[upstream.servers]]
name = "default"
path_prefix = "/"
url = "http://backend:8080"

[[upstream.servers]]
name = "stripped"
path_prefix = "/s"
url = "http://backend:8080"
strip_prefix = true
`);

describe('longest-prefix routing on whole segments', () => {
  it.each([
    ['/api/users', 'api'],
    ['/api', 'api'],
    ['/api/', 'api'],
    ['/api/v2/users', 'api-v2'],
    ['/api/v2', 'api-v2'],
    ['/api/v2x', 'api'],
    ['/apix', 'default'],
    ['/health', 'default'],
    ['/', 'default'],
    ['/s/x?y=1', 'stripped'],
  ])('%s -> %s (the seed guide table, and /apix never matching /api)', (path, name) => {
    expect(seedRouting.match(path)?.server.name).toBe(name);
  });

  it('finds nothing without a matching prefix and no "/" server', () => {
    const r = router(`
[[upstream.servers]]
name = "api"
path_prefix = "/api"
url = "http://backend:8080"
`);
    expect(r.match('/apix')).toBeUndefined();
    expect(r.match('/')).toBeUndefined();
    expect(r.match('/other/api')).toBeUndefined();
  });

  it('routes by exact name only', () => {
    expect(seedRouting.byName('api')?.path_prefix).toBe('/api');
    expect(seedRouting.byName('ap')).toBeUndefined();
    expect(seedRouting.byName('api-v2x')).toBeUndefined();
  });

  it.each(['/api/../admin', '/api/%2e%2e/admin', '/api/%2E%2e', '/api/./x', '/api/a%2fb', '/api\\..\\x'])('refuses the unsafe path %s', (path) => {
    expect(() => seedRouting.match(path)).toThrow(UnsafePathError);
  });
});

describe('the forwarded path (seed guide "Request Path Transformation")', () => {
  it('forwards the full path by default and drops the prefix with strip_prefix, keeping the query', () => {
    expect(seedRouting.match('/api/users')?.forwardPath).toBe('/api/users');
    expect(seedRouting.match('/api/users?x=1&y=2')?.forwardPath).toBe('/api/users?x=1&y=2');
    expect(seedRouting.match('/s/users?x=1')?.forwardPath).toBe('/users?x=1');
    expect(seedRouting.match('/s')?.forwardPath).toBe('');
    expect(seedRouting.match('/s/')?.forwardPath).toBe('');
    expect(seedRouting.match('/s?q=1')?.forwardPath).toBe('?q=1');
  });

  it('strips nothing for the "/" prefix', () => {
    const server = { ...seedRouting.byName('default')!, strip_prefix: true };
    expect(forwardPathFor(server, '/x/y', '?a')).toBe('/x/y?a');
  });
});

describe('many servers', () => {
  it('matches correctly among 1,000 prefixes', () => {
    const servers = Array.from(
      { length: 1000 },
      (_, i) => `
[[upstream.servers]]
name = "s${i}"
path_prefix = "/team${i}/svc"
url = "http://127.0.0.1:9/mcp"
`,
    ).join('');
    const r = router(servers);
    expect(r.match('/team999/svc/deep/path')?.server.name).toBe('s999');
    expect(r.match('/team5/svc')?.server.name).toBe('s5');
    expect(r.match('/team5/svcx')).toBeUndefined();
  });
});
