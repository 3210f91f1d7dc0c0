import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { configErrors as errorsOf } from '../helpers/config.js';

const UPSTREAM = '[upstream]\ntransport = "stdio"\ncommand = "echo"\n';

function parse(toml: string) {
  return parseConfig(toml, { env: {} });
}

describe('[server]', () => {
  it('has defaults for every field, with or without the section', () => {
    const defaults = {
      host: '127.0.0.1',
      port: 3000,
      max_request_size: 1_048_576,
      watch_config: false,
      shutdown_grace_ms: 10_000,
      shutdown_delay_ms: 0,
      session_idle_timeout_ms: 1_800_000,
      max_sessions: 10_000,
      session_handshake_timeout_ms: 30_000,
      metrics: true,
      max_batch_length: 100,
      max_json_depth: 64,
      headers_timeout_ms: 10_000,
      request_timeout_ms: 30_000,
      keep_alive_timeout_ms: 72_000,
      max_connections: 20_000,
      session_ttl_ms: 86_400_000,
      trusted_proxies: [],
      client_address_header: 'x-forwarded-for',
    };
    expect(parse(UPSTREAM).server).toEqual(defaults);
    expect(parse(`[server]\n${UPSTREAM}`).server).toEqual(defaults);
  });

  it('takes every field from the file', () => {
    const config = parse(`
[server]
host = "0.0.0.0"
port = 0
max_request_size = 2048
watch_config = true
shutdown_grace_ms = 0
shutdown_delay_ms = 5000
session_idle_timeout_ms = 60000
max_sessions = 3
max_sessions_per_identity = 2
session_handshake_timeout_ms = 5000
metrics = false
max_batch_length = 1
max_json_depth = 1000
headers_timeout_ms = 500
request_timeout_ms = 1000
keep_alive_timeout_ms = 2000
max_connections = 50
session_keys = ["k1:${'s'.repeat(32)}", "old:${'t'.repeat(40)}"]
session_ttl_ms = 3600000
redis_url = "redis://127.0.0.1:6379/2"
trusted_proxies = ["10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8", "192.168.1.0/24"]
client_address_header = "forwarded"
${UPSTREAM}`);
    expect(config.server).toEqual({
      host: '0.0.0.0',
      port: 0,
      max_request_size: 2048,
      watch_config: true,
      shutdown_grace_ms: 0,
      shutdown_delay_ms: 5000,
      session_idle_timeout_ms: 60_000,
      max_sessions: 3,
      max_sessions_per_identity: 2,
      session_handshake_timeout_ms: 5000,
      metrics: false,
      max_batch_length: 1,
      max_json_depth: 1000,
      headers_timeout_ms: 500,
      request_timeout_ms: 1000,
      keep_alive_timeout_ms: 2000,
      max_connections: 50,
      session_keys: [`k1:${'s'.repeat(32)}`, `old:${'t'.repeat(40)}`],
      session_ttl_ms: 3_600_000,
      redis_url: 'redis://127.0.0.1:6379/2',
      trusted_proxies: ['10.0.0.0/8', '127.0.0.1', '::1', 'fd00::/8', '192.168.1.0/24'],
      client_address_header: 'forwarded',
    });
  });

  it('refuses session keys that are not "kid:secret" with a long secret, or name a key id twice', () => {
    const long = 'x'.repeat(32);
    expect(errorsOf(`[server]\nsession_keys = ["k1:short"]\n${UPSTREAM}`).join('\n')).toMatch(/server\.session_keys\[0\]: expected "kid:secret"/);
    expect(errorsOf(`[server]\nsession_keys = [":${long}"]\n${UPSTREAM}`).join('\n')).toMatch(/server\.session_keys\[0\]: expected "kid:secret"/);
    expect(errorsOf(`[server]\nsession_keys = ["a b:${long}"]\n${UPSTREAM}`).join('\n')).toMatch(/server\.session_keys\[0\]/);
    expect(errorsOf(`[server]\nsession_keys = ["k1:${long}", "k1:${long}y"]\n${UPSTREAM}`).join('\n')).toMatch(
      /server\.session_keys: each key id may appear once/,
    );
    expect(errorsOf(`[server]\nsession_keys = []\n${UPSTREAM}`).join('\n')).toMatch(/server\.session_keys: name at least one key/);
    expect(errorsOf(`[server]\nredis_url = "http://x"\n${UPSTREAM}`).join('\n')).toMatch(/server\.redis_url: expected a redis:\/\//);
  });

  it('warns when sealed sessions have no Redis to carry answers between replicas', () => {
    const config = parse(`[server]\nsession_keys = ["k1:${'x'.repeat(32)}"]\n${UPSTREAM}`);
    expect(config.warnings.join('\n')).toMatch(/session_keys without a Redis/);
    const withRedis = parse(`[server]\nsession_keys = ["k1:${'x'.repeat(32)}"]\nredis_url = "redis://127.0.0.1:1"\n${UPSTREAM}`);
    expect(withRedis.warnings.join('\n')).not.toMatch(/session_keys/);
  });

  it('warns when trusted_proxies trusts every address', () => {
    expect(parse(`[server]\ntrusted_proxies = ["10.0.0.0/8"]\n${UPSTREAM}`).warnings).toEqual([]);
    for (const all of ['0.0.0.0/0', '::/0']) {
      expect(parse(`[server]\ntrusted_proxies = ["10.0.0.0/8", "${all}"]\n${UPSTREAM}`).warnings).toEqual([
        'server.trusted_proxies trusts every address (a /0 network): any client that reaches the port directly can choose its own client address (limits, audit); list the load balancers instead',
      ]);
    }
  });

  it('refuses trusted_proxies entries that are no address or network, naming each by its index', () => {
    const expected = 'expected an IP address or a CIDR network, e.g. "10.0.0.0/8", "127.0.0.1", "::1" or "fd00::/8"';
    const errors = errorsOf(`
[server]
trusted_proxies = ["10.0.0.0/8", "lb.example.com", "10.0.0.0/33", "::1/129", "10.0.0.1/", "1.2.3", "fe80::1%eth0", "10.0.0.0/-1", "", 5]
shutdown_delay_ms = -1
client_address_header = "x-real-ip"
${UPSTREAM}`);
    expect(errors).toEqual([
      'server.shutdown_delay_ms: expected a whole number of milliseconds from 0 to 2147483647',
      ...[1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => `server.trusted_proxies[${i}]: ${expected}`),
      'server.client_address_header: expected "x-forwarded-for" or "forwarded"',
    ]);
    expect(errorsOf(`[server]\ntrusted_proxies = "10.0.0.0/8"\n${UPSTREAM}`)).toEqual([
      'server.trusted_proxies: expected an array of addresses or CIDR networks',
    ]);
  });

  it('explains wrong types and ranges without zod jargon', () => {
    const errors = errorsOf(`
[server]
host = 1
port = 70000
max_request_size = 0
shutdown_grace_ms = -1
session_idle_timeout_ms = 1.5
max_sessions = "many"
max_sessions_per_identity = 0
session_handshake_timeout_ms = 0
${UPSTREAM}`);
    expect(errors).toEqual([
      'server.host: expected a non-empty string',
      'server.port: expected an integer from 0 to 65535',
      'server.max_request_size: expected a whole number of bytes of at least 1',
      'server.shutdown_grace_ms: expected a whole number of milliseconds from 0 to 2147483647',
      'server.session_idle_timeout_ms: expected a whole number of milliseconds from 1 to 2147483647',
      'server.max_sessions: expected an integer of at least 1',
      'server.max_sessions_per_identity: expected an integer of at least 1',
      'server.session_handshake_timeout_ms: expected a whole number of milliseconds from 1 to 2147483647',
    ]);
    expect(errors.join('\n')).not.toMatch(/Invalid input|received/);
  });

  it('explains wrong request limits, timeouts and connection caps at their key paths', () => {
    const errors = errorsOf(`
[server]
max_batch_length = 0
max_json_depth = 1001
headers_timeout_ms = 0
request_timeout_ms = 2147483648
keep_alive_timeout_ms = "72s"
max_connections = 1.5
${UPSTREAM}`);
    expect(errors).toEqual([
      'server.max_batch_length: expected an integer of at least 1',
      'server.max_json_depth: expected an integer from 1 to 1000',
      'server.headers_timeout_ms: expected a whole number of milliseconds from 1 to 2147483647',
      'server.request_timeout_ms: expected a whole number of milliseconds from 1 to 2147483647',
      'server.keep_alive_timeout_ms: expected a whole number of milliseconds from 1 to 2147483647',
      'server.max_connections: expected an integer of at least 1',
    ]);
  });

  it('refuses a port given as a string, even a numeric one', () => {
    expect(errorsOf(`[server]\nport = "3000"\n${UPSTREAM}`)).toEqual(['server.port: expected an integer from 0 to 65535']);
  });

  it('refuses a timer longer than setTimeout can wait', () => {
    expect(errorsOf(`[server]\nshutdown_grace_ms = 2147483648\n${UPSTREAM}`)).toEqual([
      'server.shutdown_grace_ms: expected a whole number of milliseconds from 0 to 2147483647',
    ]);
  });

  it('refuses [server] that is not a table', () => {
    expect(errorsOf(`server = 3000\n${UPSTREAM}`)).toEqual(['server: expected a table, got an integer']);
  });

  it('refuses unknown keys with their path', () => {
    expect(errorsOf(`[server]\nprot = 3000\nhots = "x"\n${UPSTREAM}`)).toEqual(['server.prot: unknown key', 'server.hots: unknown key']);
  });
});

describe('sections of [server] and the top level', () => {
  it('takes [server.tls] (its files are checked at start-up: test/tls/) next to [server.cors]', () => {
    const { server } = parse(`[server.tls]\ncert_path = "/c"\nkey_path = "/k"\n[server.cors]\nenabled = true\n${UPSTREAM}`);
    expect(server.tls).toEqual({ cert_path: '/c', key_path: '/k', min_version: 'TLSv1.2' });
  });

  it('refuses unknown top-level keys', () => {
    expect(errorsOf(`${UPSTREAM}[logging]\nlevel = "debug"\n`)).toEqual(['logging: unknown key']);
  });
});
