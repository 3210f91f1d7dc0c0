/** [rate_limit] and [audit]: defaults, and every wrong setting refused at its key path. */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { configErrors } from '../helpers/config.js';

const UPSTREAM = '[upstream]\ncommand = "node"\n';
const parse = (toml: string) => parseConfig(`${UPSTREAM}${toml}`, { env: {} });
const errorsOf = (toml: string) => configErrors(`${UPSTREAM}${toml}`);

describe('[rate_limit]', () => {
  it('has a default for everything', () => {
    expect(parse('[rate_limit]\n').rate_limit).toEqual({
      enabled: true,
      requests_per_second: 10,
      burst_size: 20,
      per_address_requests_per_second: 100,
      per_address_burst_size: 200,
      store: 'memory',
      redis_timeout_ms: 250,
      on_store_error: 'allow',
    });
  });

  it('takes a Redis store, fractional rates and tool limits', () => {
    const config = parse(`
[rate_limit]
requests_per_second = 0.5
burst_size = 2
store = "redis"
redis_url = "redis://127.0.0.1:6390/0"
on_store_error = "deny"
[[rate_limit.tool_limits]]
tool_pattern = "expensive_*"
requests_per_second = 1
burst_size = 1
`);
    expect(config.rate_limit).toMatchObject({
      requests_per_second: 0.5,
      store: 'redis',
      redis_url: 'redis://127.0.0.1:6390/0',
      on_store_error: 'deny',
      tool_limits: [{ tool_pattern: 'expensive_*', requests_per_second: 1, burst_size: 1 }],
    });
  });

  it('refuses a Redis store without a URL, a URL without Redis, bad numbers and unknown keys', () => {
    expect(errorsOf('[rate_limit]\nstore = "redis"\n')).toEqual(['rate_limit.redis_url: required for store "redis"']);
    expect(errorsOf('[rate_limit]\nredis_url = "redis://x:1"\n')).toEqual(['rate_limit.redis_url: not used by store "memory"']);
    expect(
      errorsOf('[rate_limit]\nrequests_per_second = 0\nburst_size = 0.5\nstore = "disk"\non_store_error = "maybe"\nredis_url = "http://x"\nlimit = 3\n'),
    ).toEqual([
      'rate_limit.requests_per_second: must be above 0',
      'rate_limit.burst_size: expected an integer from 1 to 1000000',
      'rate_limit.store: expected "memory" or "redis"',
      'rate_limit.redis_url: expected a redis:// or rediss:// URL',
      'rate_limit.on_store_error: expected "allow" or "deny"',
      'rate_limit.limit: unknown key',
    ]);
    expect(errorsOf('[[rate_limit.tool_limits]]\ntool_pattern = "x"\n')).toEqual([
      'rate_limit.tool_limits[0].requests_per_second: required',
      'rate_limit.tool_limits[0].burst_size: required',
    ]);
  });
});

describe('[audit]', () => {
  it('has a default for everything but the sinks', () => {
    expect(parse('[audit]\nstdout = true\n').audit).toEqual({
      enabled: true,
      stdout: true,
      rotate_max_bytes: 104_857_600,
      rotate_max_age_secs: 86_400,
      max_backups: 10,
      compress_rotated: true,
      export_batch_size: 100,
      export_flush_interval_ms: 1_000,
      export_max_retries: 5,
      export_timeout_ms: 5_000,
      queue_size: 10_000,
      include_arguments: false,
    });
  });

  it('takes a file, an export URL with its headers, and redaction rules', () => {
    const config = parseConfig(
      `${UPSTREAM}[audit]\nfile = "/var/log/mcp-guard/audit.log"\nexport_url = "https://collector.example.com/events"\nexport_headers = { Authorization = "Bearer \${AUDIT_TOKEN}" }\n[[audit.redaction_rules]]\nname = "email"\npattern = "[\\\\w.]+@[\\\\w.]+"\n`,
      { env: { AUDIT_TOKEN: 'tok' } },
    );
    expect(config.audit).toMatchObject({
      file: '/var/log/mcp-guard/audit.log',
      export_url: 'https://collector.example.com/events',
      export_headers: { Authorization: 'Bearer tok' },
      redaction_rules: [{ name: 'email', pattern: '[\\w.]+@[\\w.]+', replacement: '[REDACTED]' }],
    });
  });

  it('refuses an enabled audit log that writes nowhere', () => {
    expect(errorsOf('[audit]\ninclude_arguments = true\n')).toEqual([
      'audit: configure at least one sink: stdout = true, file or export_url (or enabled = false)',
    ]);
    expect(parse('[audit]\nenabled = false\n').audit?.enabled).toBe(false);
  });

  it('refuses a pattern that is not a regular expression, and unknown keys', () => {
    expect(errorsOf('[audit]\nstdout = true\nrotation = "daily"\n[[audit.redaction_rules]]\nname = "x"\npattern = "(unclosed"\n')).toEqual([
      'audit.redaction_rules[0].pattern: not a valid regular expression',
      'audit.rotation: unknown key',
    ]);
  });
});
