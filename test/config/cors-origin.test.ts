/**
 * `[server] allowed_hosts` and `[server.cors]`: what the file may say, the errors for what it may
 * not (each at its key path, never with the value), and what the entries mean once the gateway
 * derives its access policy from them (src/http/origin.ts).
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { AccessPolicy } from '../../src/http/origin.js';
import { parseHost } from '../../src/http/origin-match.js';
import { configErrors as errorsOf } from '../helpers/config.js';

const UPSTREAM = '[upstream]\ntransport = "stdio"\ncommand = "echo"\n';

function parse(toml: string) {
  return parseConfig(`${toml}\n${UPSTREAM}`, { env: {} });
}

describe('[server] allowed_hosts and [server.cors]: accepted', () => {
  it('are absent by default: the defaults depend on the listen address and are derived at start-up', () => {
    const { server } = parse('');
    expect(server.allowed_hosts).toBeUndefined();
    expect(server.cors).toBeUndefined();
  });

  it('a [server.cors] section is enabled, with every other key defaulted', () => {
    expect(parse('[server.cors]').server.cors).toEqual({
      enabled: true,
      allowed_headers: [],
      exposed_headers: [],
      max_age_secs: 600,
      allow_credentials: false,
    });
  });

  it('takes every key from the file', () => {
    const { server } = parse(`
[server]
host = "0.0.0.0"
allowed_hosts = ["mcp.example.com", "10.0.0.5:3000", "[::1]", "localhost"]

[server.cors]
enabled = true
allowed_origins = ["https://app.example.com", "http://localhost:*", "https://inspector.example:8443/", "chrome-extension://abcdef"]
allowed_headers = ["X-Trace-Id"]
exposed_headers = ["X-Upstream-Version"]
max_age_secs = 0
allow_credentials = true
`);
    expect(server.allowed_hosts).toEqual(['mcp.example.com', '10.0.0.5:3000', '[::1]', 'localhost']);
    expect(server.cors).toEqual({
      enabled: true,
      allowed_origins: ['https://app.example.com', 'http://localhost:*', 'https://inspector.example:8443/', 'chrome-extension://abcdef'],
      allowed_headers: ['X-Trace-Id'],
      exposed_headers: ['X-Upstream-Version'],
      max_age_secs: 0,
      allow_credentials: true,
    });
  });

  it('"*" alone accepts every host or origin', () => {
    const { server } = parse('[server]\nallowed_hosts = ["*"]\n[server.cors]\nallowed_origins = ["*"]');
    expect(server.allowed_hosts).toEqual(['*']);
    expect(server.cors?.allowed_origins).toEqual(['*']);
  });

  it('takes values from the environment like any string', () => {
    const config = parseConfig(`[server]\nallowed_hosts = ["\${PUBLIC_NAME}"]\n[server.cors]\nallowed_origins = ["https://\${PUBLIC_NAME}"]\n${UPSTREAM}`, {
      env: { PUBLIC_NAME: 'mcp.example.com' },
    });
    expect(config.server.allowed_hosts).toEqual(['mcp.example.com']);
    expect(config.server.cors?.allowed_origins).toEqual(['https://mcp.example.com']);
  });
});

describe('[server] allowed_hosts and [server.cors]: refused, at the key path', () => {
  it('allowed_hosts: not a list, empty, "*" with others, or entries that are not host[:port]', () => {
    expect(errorsOf(`[server]\nallowed_hosts = "mcp.example.com"\n${UPSTREAM}`)).toEqual(['server.allowed_hosts: expected an array of hosts']);
    expect(errorsOf(`[server]\nallowed_hosts = []\n${UPSTREAM}`)).toEqual(['server.allowed_hosts: must not be empty; ["*"] accepts every host']);
    expect(errorsOf(`[server]\nallowed_hosts = ["*", "mcp.example.com"]\n${UPSTREAM}`)).toEqual([
      'server.allowed_hosts: "*" accepts every host: it cannot be combined with other entries',
    ]);
    const bad = [
      'http://mcp.example.com',
      'mcp.example.com/mcp',
      'a b',
      'user@mcp.example.com',
      'mcp.example.com:99999',
      '[::1',
      '[not-v6]',
      '',
      '.example.com',
      '*.example.com',
      1,
    ];
    const entries = bad.map((entry) => JSON.stringify(entry)).join(', ');
    const expected = 'expected a host name or address with an optional ":port", e.g. "mcp.example.com", "10.0.0.5:3000" or "[::1]"';
    expect(errorsOf(`[server]\nallowed_hosts = [${entries}]\n${UPSTREAM}`)).toEqual(bad.map((_, i) => `server.allowed_hosts[${i}]: ${expected}`));
  });

  it('allowed_origins: empty, "*" with others, or entries that are not origins ("null" included)', () => {
    expect(errorsOf(`[server.cors]\nallowed_origins = []\n${UPSTREAM}`)).toEqual([
      'server.cors.allowed_origins: must not be empty; ["*"] accepts every origin',
    ]);
    expect(errorsOf(`[server.cors]\nallowed_origins = ["https://a.example", "*"]\n${UPSTREAM}`)).toEqual([
      'server.cors.allowed_origins: "*" accepts every origin: it cannot be combined with other entries',
    ]);
    const bad = [
      'app.example.com',
      'https://app.example.com/mcp',
      'https://app.example.com?x=1',
      'https://user@app.example.com',
      'null',
      'https://*.example.com',
      'https://app.example.com:99999',
      'https://',
    ];
    const entries = bad.map((entry) => JSON.stringify(entry)).join(', ');
    const expected = 'expected an origin (scheme://host with an optional ":port" or ":*", no path), e.g. "https://app.example.com" or "http://localhost:*"';
    expect(errorsOf(`[server.cors]\nallowed_origins = [${entries}]\n${UPSTREAM}`)).toEqual(bad.map((_, i) => `server.cors.allowed_origins[${i}]: ${expected}`));
  });

  it('allow_credentials with every origin: credentials would go to any site', () => {
    expect(errorsOf(`[server.cors]\nallowed_origins = ["*"]\nallow_credentials = true\n${UPSTREAM}`)).toEqual([
      'server.cors.allow_credentials: cannot be true with allowed_origins = ["*"]: list the origins',
    ]);
  });

  it('wrong types, ranges, header names and unknown keys', () => {
    expect(
      errorsOf(`
[server.cors]
enabled = "yes"
max_age_secs = 86401
allowed_headers = ["X Trace", "X-Ok"]
exposed_headers = "Mcp-Session-Id"
allow_origins = ["https://app.example.com"]
${UPSTREAM}`),
    ).toEqual([
      'server.cors.enabled: expected true or false',
      'server.cors.allowed_headers[0]: not a valid HTTP header name',
      'server.cors.exposed_headers: expected an array of header names',
      'server.cors.max_age_secs: expected an integer from 0 to 86400',
      'server.cors.allow_origins: unknown key',
    ]);
    expect(errorsOf(`[server]\ncors = true\n${UPSTREAM}`)).toEqual(['server.cors: expected a table, got a boolean']);
  });

  it('an error never repeats the value, which may have come from the environment', () => {
    const errors = errorsOf(`[server]\nallowed_hosts = ["\${SECRETISH}"]\n${UPSTREAM}`, { SECRETISH: 's3cr3t value' });
    expect(errors).toHaveLength(1);
    expect(errors[0]).not.toContain('s3cr3t');
  });

  it('[server.tls] sits next to [server.cors] (its own tests: test/tls/)', () => {
    expect(errorsOf(`[server.tls]\ncert_path = "/c"\n[server.cors]\nallowed_origins = ["https://a.example"]\n${UPSTREAM}`)).toEqual([
      'server.tls.key_path: required',
    ]);
  });
});

describe('what the settings mean: the access policy derived at start-up', () => {
  const policy = (toml: string, host?: string) => {
    const { server } = parse(toml);
    if (host !== undefined) server.host = host;
    return AccessPolicy.of(server);
  };
  const host = (value: string) => {
    const parsed = parseHost(value);
    if (!parsed) throw new Error(`not a host: ${value}`);
    return parsed;
  };

  it('a loopback listener accepts the loopback names on any port, and loopback pages only', () => {
    for (const listen of ['127.0.0.1', 'localhost', '::1', '127.0.0.2']) {
      const p = policy('', listen);
      expect(p.warnings).toEqual([]);
      for (const ok of ['127.0.0.1:3000', 'localhost', 'LocalHost.:8080', '[::1]:1', '[0:0:0:0:0:0:0:1]:3000'])
        expect(p.hostAllowed(host(ok), '/mcp')).toBe(true);
      for (const bad of ['evil.example', 'localhost.evil.example', '127.0.0.1.nip.io', '10.0.0.5']) expect(p.hostAllowed(host(bad), '/mcp')).toBe(false);
      for (const ok of ['http://localhost:5173', 'https://127.0.0.1', 'http://[::1]:3000']) expect(p.originAllowed(ok)).toBe(true);
      for (const bad of ['http://evil.example', 'null', 'file://', 'http://localhost.evil.example:3000', 'http://127.0.0.1:3000/', ''])
        expect(p.originAllowed(bad)).toBe(false);
    }
    expect(policy('', '127.0.0.2').hostAllowed(host('127.0.0.2:3000'), '/mcp')).toBe(true);
  });

  it('another address checks no Host (and says so once), and allows no browser origin', () => {
    const p = policy('', '0.0.0.0');
    expect(p.hostAllowed(host('anything.example'), '/mcp')).toBe(true);
    expect(p.originAllowed('http://127.0.0.1:3000')).toBe(false);
    expect(p.warnings).toHaveLength(1);
    expect(p.warnings[0]).toContain('allowed_hosts is not set');
    expect(policy('[server]\nallowed_hosts = ["*"]', '0.0.0.0').warnings).toEqual([]);
  });

  it('an entry without a port accepts any port; with one, only that port', () => {
    const p = policy('[server]\nallowed_hosts = ["mcp.example.com", "10.0.0.5:3000"]', '0.0.0.0');
    expect(p.hostAllowed(host('MCP.example.com:8443'), '/mcp')).toBe(true);
    expect(p.hostAllowed(host('10.0.0.5:3000'), '/mcp')).toBe(true);
    expect(p.hostAllowed(host('10.0.0.5:3001'), '/mcp')).toBe(false);
    expect(p.hostAllowed(host('10.0.0.5'), '/mcp')).toBe(false);
    // Probes address the process by IP: the monitoring routes also take a Host rebinding cannot produce.
    expect(p.hostAllowed(host('10.0.0.7:3000'), '/ready')).toBe(true);
    expect(p.hostAllowed(undefined, '/health')).toBe(true);
    expect(p.hostAllowed(host('evil.example'), '/health')).toBe(false);
    expect(p.hostAllowed(host('10.0.0.7:3000'), '/routes')).toBe(false);
  });

  it('origins compare scheme, host and port, with default ports filled in; ":*" is any port', () => {
    const p = policy('[server.cors]\nallowed_origins = ["https://app.example.com", "http://localhost:*", "https://[::1]:8443/"]');
    expect(p.originAllowed('https://app.example.com')).toBe(true);
    expect(p.originAllowed('https://APP.example.com:443')).toBe(true);
    expect(p.originAllowed('http://app.example.com')).toBe(false);
    expect(p.originAllowed('https://app.example.com:8443')).toBe(false);
    expect(p.originAllowed('https://app.example.com.evil.example')).toBe(false);
    expect(p.originAllowed('http://localhost:5173')).toBe(true);
    expect(p.originAllowed('http://localhost')).toBe(true);
    expect(p.originAllowed('https://[::1]:8443')).toBe(true);
    // The list replaces the loopback default.
    expect(p.originAllowed('http://127.0.0.1:5173')).toBe(false);
  });

  it('[server.cors] enabled = false is ignored whole, allowed_origins included', () => {
    const p = policy('[server.cors]\nenabled = false\nallowed_origins = ["https://app.example.com"]');
    expect(p.originAllowed('https://app.example.com')).toBe(false);
    expect(p.originAllowed('http://localhost:5173')).toBe(true);
  });

  it('CORS on a non-loopback listener without allowed_origins allows nobody, and says so', () => {
    const p = policy('[server]\nallowed_hosts = ["mcp.example.com"]\n[server.cors]', '0.0.0.0');
    expect(p.originAllowed('http://localhost:5173')).toBe(false);
    expect(p.warnings).toEqual([expect.stringContaining('allows no origin')]);
  });
});
