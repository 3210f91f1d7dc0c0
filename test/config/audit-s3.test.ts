/** [audit.s3] and the MCP_GUARD_AUDIT_S3_* variables: defaults, overrides, and every refusal at its key or variable. */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { configErrors } from '../helpers/config.js';

const BASE = '[upstream]\ncommand = "node"\n\n[audit]\nfile = "audit.log"\n';
const parse = (toml: string, env: Record<string, string> = {}) => parseConfig(`${BASE}${toml}`, { env });
const errorsOf = (toml: string, env: Record<string, string> = {}) => configErrors(`${BASE}${toml}`, env);

describe('[audit.s3]', () => {
  it('needs only a bucket; everything else has a default', () => {
    expect(parse('[audit.s3]\nbucket = "mcp-audit"\n').audit?.s3).toEqual({
      bucket: 'mcp-audit',
      force_path_style: false,
      prefix: '',
      part_size_bytes: 5_242_880,
      concurrency: 4,
      connect_timeout_ms: 5_000,
      request_timeout_ms: 30_000,
      retry_backoff_ms: 1_000,
      retry_backoff_max_ms: 300_000,
    });
  });

  it('takes every setting of the seed (region, endpoint, path style, SSE with a KMS key, part size, concurrency, timeouts)', () => {
    const s3 = parse(`[audit.s3]
bucket = "mcp-audit"
region = "eu-west-1"
endpoint = "http://127.0.0.1:9000"
force_path_style = true
prefix = "mcp-guard/"
instance = "gw-1"
server_side_encryption = "aws:kms"
kms_key_id = "alias/mcp-audit"
part_size_bytes = 16777216
concurrency = 8
connect_timeout_ms = 2000
request_timeout_ms = 60000
retry_backoff_ms = 500
retry_backoff_max_ms = 60000
`).audit?.s3;
    expect(s3).toMatchObject({
      region: 'eu-west-1',
      endpoint: 'http://127.0.0.1:9000',
      server_side_encryption: 'aws:kms',
      kms_key_id: 'alias/mcp-audit',
      part_size_bytes: 16_777_216,
    });
  });

  it('refuses what the archive cannot work with, at its key', () => {
    expect(configErrors('[upstream]\ncommand = "node"\n\n[audit]\nstdout = true\n\n[audit.s3]\nbucket = "mcp-audit"\n')).toEqual([
      'audit.s3: needs [audit] file: the archive uploads the rotated audit files, and without a file nothing is rotated',
    ]);
    expect(errorsOf('[audit.s3]\nbucket = "mcp-audit"\nkms_key_id = "alias/x"\n')).toEqual([
      'audit.s3.kms_key_id: only used with server_side_encryption = "aws:kms"',
    ]);
    expect(errorsOf('[audit.s3]\nbucket = "mcp-audit"\nserver_side_encryption = "AES256"\nkms_key_id = "alias/x"\n')).toEqual([
      'audit.s3.kms_key_id: only used with server_side_encryption = "aws:kms"',
    ]);
    expect(errorsOf('[audit.s3]\nbucket = "mcp-audit"\nserver_side_encryption = "aws:KMS"\n')).toEqual([
      'audit.s3.server_side_encryption: expected "AES256" or "aws:kms"',
    ]);
    expect(errorsOf('[audit.s3]\nbucket = "mcp-audit"\nretry_backoff_ms = 5000\nretry_backoff_max_ms = 1000\n')).toEqual([
      'audit.s3.retry_backoff_max_ms: must be at least retry_backoff_ms (5000)',
    ]);
    expect(errorsOf('[audit.s3]\nbucket = "mcp-audit"\nretry_backoff_ms = 600000\n')).toEqual([
      'audit.s3.retry_backoff_ms: must be at most retry_backoff_max_ms (300000)',
    ]);
    expect(errorsOf('[audit.s3]\nregion = "us-east-1"\n')).toEqual(['audit.s3.bucket: required']);
    expect(errorsOf('[audit.s3]\nbucket = "My_Bucket"\n')[0]).toMatch(/^audit\.s3\.bucket: expected a bucket name/);
    expect(errorsOf('[audit.s3]\nbucket = "mcp-audit"\nprefix = "/logs"\n')).toEqual(['audit.s3.prefix: must not start with "/"']);
    expect(errorsOf('[audit.s3]\nbucket = "mcp-audit"\nprefix = "a\\u0000b"\n')).toEqual(['audit.s3.prefix: must not contain control characters']);
    expect(errorsOf('[audit.s3]\nbucket = "mcp-audit"\ninstance = "gw/1"\n')[0]).toMatch(/^audit\.s3\.instance: expected 1 to 128/);
    expect(errorsOf('[audit.s3]\nbucket = "mcp-audit"\npart_size_bytes = 1048576\n')).toEqual([
      'audit.s3.part_size_bytes: expected a whole number of bytes from 5242880 to 5368709120',
    ]);
    expect(errorsOf('[audit.s3]\nbucket = "mcp-audit"\nconcurrency = 0\n')).toEqual(['audit.s3.concurrency: expected an integer from 1 to 64']);
    // Credentials never belong in the config: not as keys, not in the endpoint's URL.
    expect(errorsOf('[audit.s3]\nbucket = "mcp-audit"\naccess_key_id = "AKIA"\n')).toEqual(['audit.s3.access_key_id: unknown key']);
    const inUrl = errorsOf('[audit.s3]\nbucket = "mcp-audit"\nendpoint = "https://AKIAX:very-secret-key@s3.example.com"\n');
    expect(inUrl).toEqual([
      'audit.s3.endpoint: must not contain a user name or password: credentials come from the AWS environment (AWS_ACCESS_KEY_ID..., a profile, instance metadata)',
    ]);
  });

  it('warns that max_backups is not applied with it', () => {
    const config = parseConfig(`${BASE}max_backups = 3\n\n[audit.s3]\nbucket = "mcp-audit"\n`, { env: {} });
    expect(config.warnings).toContain('audit.max_backups is not applied with [audit.s3]: a rotated file is deleted once the store has it, never before');
    expect(parse('[audit.s3]\nbucket = "mcp-audit"\n').warnings).toEqual([]);
  });
});

describe('MCP_GUARD_AUDIT_S3_* variables', () => {
  it('override the keys of the table, each read by its type', () => {
    const s3 = parse('[audit.s3]\nbucket = "from-file"\nregion = "eu-west-1"\nforce_path_style = false\n', {
      MCP_GUARD_AUDIT_S3_BUCKET: 'from-env',
      MCP_GUARD_AUDIT_S3_ENDPOINT: 'http://127.0.0.1:9000',
      MCP_GUARD_AUDIT_S3_FORCE_PATH_STYLE: 'true',
      MCP_GUARD_AUDIT_S3_PART_SIZE_BYTES: '8388608',
      MCP_GUARD_AUDIT_S3_SERVER_SIDE_ENCRYPTION: 'AES256',
      // Empty counts as unset: the file's region stays.
      MCP_GUARD_AUDIT_S3_REGION: '',
    }).audit?.s3;
    expect(s3).toMatchObject({
      bucket: 'from-env',
      region: 'eu-west-1',
      endpoint: 'http://127.0.0.1:9000',
      force_path_style: true,
      part_size_bytes: 8_388_608,
      server_side_encryption: 'AES256',
    });
  });

  it('make [audit.s3] exist when the file has [audit] without it', () => {
    expect(parse('', { MCP_GUARD_AUDIT_S3_BUCKET: 'mcp-audit' }).audit?.s3?.bucket).toBe('mcp-audit');
    // Other variables alone: the table exists, and its bucket is missing.
    expect(errorsOf('', { MCP_GUARD_AUDIT_S3_REGION: 'eu-west-1' })).toEqual(['audit.s3.bucket: required']);
    expect(parse('').audit?.s3).toBeUndefined();
  });

  it('are refused at their own name, with what is wrong and never the value', () => {
    expect(errorsOf('[audit.s3]\nbucket = "mcp-audit"\n', { MCP_GUARD_AUDIT_S3_FORCE_PATH_STYLE: 'yes' })).toEqual([
      'MCP_GUARD_AUDIT_S3_FORCE_PATH_STYLE: expected true or false',
    ]);
    expect(errorsOf('[audit.s3]\nbucket = "mcp-audit"\n', { MCP_GUARD_AUDIT_S3_PART_SIZE_BYTES: '5MB' })).toEqual([
      'MCP_GUARD_AUDIT_S3_PART_SIZE_BYTES: expected a whole number (decimal digits only)',
    ]);
    expect(errorsOf('[audit.s3]\nbucket = "mcp-audit"\n', { MCP_GUARD_AUDIT_S3_CONCURRENCY: '1000' })).toEqual([
      'MCP_GUARD_AUDIT_S3_CONCURRENCY: expected an integer from 1 to 64',
    ]);
    const secretUrl = errorsOf('[audit.s3]\nbucket = "mcp-audit"\n', { MCP_GUARD_AUDIT_S3_ENDPOINT: 'https://AKIAX:very-secret-key@s3.example.com' });
    expect(secretUrl).toEqual([
      'MCP_GUARD_AUDIT_S3_ENDPOINT: must not contain a user name or password: credentials come from the AWS environment (AWS_ACCESS_KEY_ID..., a profile, instance metadata)',
    ]);
    expect(secretUrl.join('\n')).not.toContain('very-secret-key');
    expect(errorsOf('[audit.s3]\nbucket = "mcp-audit"\n', { MCP_GUARD_AUDIT_S3_SECRET_ACCESS_KEY: 'very-secret-key' })[0]).toMatch(
      /^MCP_GUARD_AUDIT_S3_SECRET_ACCESS_KEY: not a key of \[audit\.s3\]: expected one of MCP_GUARD_AUDIT_S3_BUCKET, /,
    );
    // An invalid variable replaces nothing: the file's valid value is not reported as well.
    expect(errorsOf('[audit.s3]\nbucket = "mcp-audit"\n', { MCP_GUARD_AUDIT_S3_BUCKET: 'Not A Bucket' })).toEqual([
      expect.stringMatching(/^MCP_GUARD_AUDIT_S3_BUCKET: expected a bucket name/),
    ]);
  });

  it('need an [audit] table with a file', () => {
    expect(configErrors('[upstream]\ncommand = "node"\n', { MCP_GUARD_AUDIT_S3_BUCKET: 'mcp-audit' })).toEqual([
      'MCP_GUARD_AUDIT_S3_BUCKET: needs an [audit] table with a file: the archive uploads the rotated audit files',
    ]);
    expect(configErrors('[upstream]\ncommand = "node"\n\n[audit]\nstdout = true\n', { MCP_GUARD_AUDIT_S3_BUCKET: 'mcp-audit' })).toEqual([
      'audit.s3: needs [audit] file: the archive uploads the rotated audit files, and without a file nothing is rotated',
    ]);
  });

  it('come after ${VAR} interpolation of the file', () => {
    const s3 = parse('[audit.s3]\nbucket = "${AUDIT_BUCKET}"\nprefix = "${AUDIT_PREFIX}"\n', {
      AUDIT_BUCKET: 'from-interpolation',
      AUDIT_PREFIX: 'p/',
      MCP_GUARD_AUDIT_S3_BUCKET: 'from-override',
    }).audit?.s3;
    expect(s3).toMatchObject({ bucket: 'from-override', prefix: 'p/' });
  });
});
