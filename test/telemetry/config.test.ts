/**
 * `[telemetry]` and the standard OTEL_* variables (docs/telemetry.md, "Configuration"): on only
 * with an endpoint, the table over the environment, bad values reported by name and never echoed.
 */
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/errors.js';
import { diffConfig } from '../../src/config/diff.js';
import { parseConfig } from '../../src/config/load.js';

const SERVER = '[upstream]\ncommand = "node"\n';

function load(extra: string, env: Record<string, string> = {}) {
  return parseConfig(`${SERVER}${extra}`, { env });
}

function problems(extra: string, env: Record<string, string> = {}): string[] {
  try {
    load(extra, env);
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((i) => `${i.path}: ${i.message}`);
    throw err;
  }
  throw new Error('the config was accepted');
}

describe('[telemetry]', () => {
  it('is off without an endpoint, table or environment', () => {
    expect(load('').telemetry).toBeUndefined();
    expect(load('[telemetry]\nservice_name = "x"\nsample_ratio = 0.5\n').telemetry).toBeUndefined();
  });

  it('is on with otlp_endpoint: /v1/traces appended, defaults filled in', () => {
    expect(load('[telemetry]\notlp_endpoint = "http://127.0.0.1:4318"\n').telemetry).toEqual({
      traces_url: 'http://127.0.0.1:4318/v1/traces',
      service_name: 'mcp-guard',
      sample_ratio: 1,
      headers: {},
    });
    expect(load('[telemetry]\notlp_endpoint = "https://otlp.example.com/otlp/"\n').telemetry?.traces_url).toBe('https://otlp.example.com/otlp/v1/traces');
  });

  it('is on with OTEL_EXPORTER_OTLP_ENDPOINT (a base) or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as it is, and first)', () => {
    expect(load('', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }).telemetry?.traces_url).toBe('http://collector:4318/v1/traces');
    expect(
      load('', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://tempo:4318/custom/traces' }).telemetry
        ?.traces_url,
    ).toBe('http://tempo:4318/custom/traces');
    // An empty variable counts as unset.
    expect(load('', { OTEL_EXPORTER_OTLP_ENDPOINT: '' }).telemetry).toBeUndefined();
  });

  it('takes each key from the table first, then its variable, then the default', () => {
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://env:4318', OTEL_SERVICE_NAME: 'from-env', OTEL_TRACES_SAMPLER_ARG: '0.25' };
    expect(load('', env).telemetry).toMatchObject({ traces_url: 'http://env:4318/v1/traces', service_name: 'from-env', sample_ratio: 0.25 });
    const table = '[telemetry]\notlp_endpoint = "http://table:4318"\nservice_name = "from-table"\nsample_ratio = 0.5\n[telemetry.headers]\nx-api-key = "k"\n';
    expect(load(table, env).telemetry).toEqual({
      traces_url: 'http://table:4318/v1/traces',
      service_name: 'from-table',
      sample_ratio: 0.5,
      headers: { 'x-api-key': 'k' },
    });
  });

  it('is off with enabled = false or OTEL_SDK_DISABLED=true, whatever the endpoint', () => {
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://env:4318' };
    expect(load('[telemetry]\nenabled = false\notlp_endpoint = "http://table:4318"\n', env).telemetry).toBeUndefined();
    expect(load('[telemetry]\notlp_endpoint = "http://table:4318"\n', { OTEL_SDK_DISABLED: 'true' }).telemetry).toBeUndefined();
  });

  it('reports bad values with their key or variable name, never the value', () => {
    expect(problems('[telemetry]\notlp_endpoint = "ftp://x"\nsample_ratio = 2\nbogus = 1\n')).toEqual([
      'telemetry.otlp_endpoint: expected an absolute http:// or https:// URL',
      'telemetry.sample_ratio: expected a number from 0 to 1',
      'telemetry.bogus: unknown key',
    ]);
    const secret = 'http://user:s3cr3t@collector:4318';
    const found = problems('', { OTEL_EXPORTER_OTLP_ENDPOINT: secret, OTEL_TRACES_SAMPLER_ARG: 'lots' });
    expect(found).toEqual([
      'OTEL_EXPORTER_OTLP_ENDPOINT: must not contain a user name or password; put credentials in headers',
      'OTEL_TRACES_SAMPLER_ARG: expected a number from 0 to 1',
    ]);
    expect(found.join('\n')).not.toContain('s3cr3t');
    expect(problems('', { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'collector:4318' })).toEqual([
      'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: expected an absolute http:// or https:// URL',
    ]);
  });

  it('a change of [telemetry] (or of the variables it reads) waits for a restart, and a reload says so', () => {
    const before = load('[telemetry]\notlp_endpoint = "http://a:4318"\n');
    expect(diffConfig(before, load('[telemetry]\notlp_endpoint = "http://a:4318"\n')).restartRequired).toEqual([]);
    expect(diffConfig(before, load('[telemetry]\notlp_endpoint = "http://b:4318"\n')).restartRequired).toEqual(['telemetry']);
    expect(diffConfig(load(''), load('', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' })).restartRequired).toEqual(['telemetry']);
  });

  it("refuses a traceparent or tracestate among an upstream's configured headers: the gateway sets them", () => {
    expect(() => parseConfig('[upstream]\nurl = "http://127.0.0.1:1/mcp"\n[upstream.headers]\ntraceparent = "x"\n', { env: {} })).toThrow(
      /traceparent: is set by the gateway itself/,
    );
  });
});
