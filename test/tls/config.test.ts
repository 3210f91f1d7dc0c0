/**
 * `[server.tls]` and `[[auth.client_certs]]` as configuration: what validation refuses (each at
 * its key path), what the start-up check of the files refuses (loadTls, the same check `serve`
 * and `validate` run), and the built command line: a bad certificate or key stops `serve` with
 * exit 1, the key path and no secret; `validate` checks the files too; a good config serves HTTPS.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../../src/config/errors.js';
import { parseConfig } from '../../src/config/load.js';
import { loadTls } from '../../src/http/tls.js';
import { CliProcess, cleanupTempDirs, ensureBuilt, runCli, writeConfig } from '../helpers/cli.js';
import { configErrors } from '../helpers/config.js';
import { q } from '../helpers/gateway.js';
import { makeTestCerts, type TestCerts } from './certs.js';
import { request, tlsAgent } from './gateway.js';

const UPSTREAM = '[upstream]\ntransport = "stdio"\ncommand = "echo"\n';
const HASH = '$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g';
const FINGERPRINT = 'AB:'.repeat(31) + 'AB';

let certs: TestCerts;

beforeAll(async () => {
  certs = makeTestCerts();
  await ensureBuilt();
}, 120_000);

afterAll(() => {
  certs?.remove();
  cleanupTempDirs();
});

describe('validation of [server.tls] and [[auth.client_certs]]', () => {
  const TLS = '[server.tls]\ncert_path = "/c.pem"\nkey_path = "/k.pem"\n';
  const MTLS = `${TLS}client_ca_path = "/ca.pem"\n`;

  it('resolves the defaults: min_version TLSv1.2; client_auth stays unset (it means "require" with client_ca_path)', () => {
    const { server, auth } = parseConfig(`${MTLS}${UPSTREAM}[auth]\n[[auth.client_certs]]\nid = "svc"\nsubject_cn = "svc.internal"\n`, { env: {} });
    expect(server.tls).toEqual({ cert_path: '/c.pem', key_path: '/k.pem', client_ca_path: '/ca.pem', min_version: 'TLSv1.2' });
    expect(auth?.client_certs).toEqual([{ id: 'svc', subject_cn: 'svc.internal' }]);
  });

  it('refuses missing paths, unknown keys, a wrong min_version and client_auth without client_ca_path', () => {
    expect(configErrors(`[server.tls]\nmin_version = "TLSv1.1"\nclient_auth = "sometimes"\nciphers = "x"\n${UPSTREAM}`)).toEqual([
      'server.tls.cert_path: required',
      'server.tls.key_path: required',
      'server.tls.min_version: expected "TLSv1.2" or "TLSv1.3"',
      'server.tls.client_auth: expected "require" or "optional"',
      'server.tls.ciphers: unknown key',
    ]);
    expect(configErrors(`${TLS}client_auth = "optional"\n${UPSTREAM}`)).toEqual([
      'server.tls.client_auth: needs client_ca_path (the CAs client certificates are verified against)',
    ]);
  });

  it('refuses [[auth.client_certs]] when client certificates are not verified', () => {
    const certs = '[auth]\n[[auth.client_certs]]\nid = "svc"\nsubject_cn = "svc"\n';
    expect(configErrors(`${UPSTREAM}${certs}`)).toEqual([
      'auth.client_certs: needs [server.tls] client_ca_path: client certificates are only verified then (there is no [server.tls])',
    ]);
    expect(configErrors(`${TLS}${UPSTREAM}${certs}`)).toEqual([
      'auth.client_certs: needs [server.tls] client_ca_path: client certificates are only verified then ([server.tls] has no client_ca_path)',
    ]);
  });

  it('refuses entries that name no certificate or two ways, duplicates, clashes with api_keys, unknown servers and bad fingerprints', () => {
    const toml = `${MTLS}${UPSTREAM}[auth]
[[auth.api_keys]]
id = "shared"
key_hash = ${q(HASH)}
[[auth.client_certs]]
id = "a"
subject_cn = "svc"
[[auth.client_certs]]
id = "a"
subject_cn = "svc"
servers = ["nope"]
[[auth.client_certs]]
id = "shared"
fingerprint_sha256 = ${q(FINGERPRINT)}
[[auth.client_certs]]
id = "c"
fingerprint_sha256 = ${q(FINGERPRINT.replace(/:/g, '').toLowerCase())}
[[auth.client_certs]]
id = "d"
[[auth.client_certs]]
id = "e"
subject_cn = "e"
fingerprint_sha256 = ${q(FINGERPRINT)}
[[auth.client_certs]]
id = "f"
fingerprint_sha256 = "AB:CD"
`;
    // Every problem in one run: the entries' own, and the checks across entries.
    expect(configErrors(toml)).toEqual([
      'auth.client_certs[4]: set subject_cn or fingerprint_sha256 (the certificate this identity is)',
      'auth.client_certs[5].fingerprint_sha256: set subject_cn or fingerprint_sha256, not both',
      'auth.client_certs[6].fingerprint_sha256: expected 64 hex digits, optionally as 32 ":"-separated pairs',
      'auth.client_certs[1].id: same id "a" as auth.client_certs[0]',
      'auth.client_certs[1].subject_cn: same subject_cn "svc" as auth.client_certs[0]',
      'auth.client_certs[1].servers[0]: no server named "nope" is configured',
      'auth.client_certs[2].id: same id "shared" as auth.api_keys[0]',
      `auth.client_certs[3].fingerprint_sha256: same fingerprint "${'AB'.repeat(32)}" as auth.client_certs[2]`,
      `auth.client_certs[5].fingerprint_sha256: same fingerprint "${'AB'.repeat(32)}" as auth.client_certs[2]`,
    ]);
    // With the entries' own problems fixed, the checks across entries alone.
    const valid = toml.split('[[auth.client_certs]]\nid = "d"')[0]!;
    expect(configErrors(valid)).toEqual([
      'auth.client_certs[1].id: same id "a" as auth.client_certs[0]',
      'auth.client_certs[1].subject_cn: same subject_cn "svc" as auth.client_certs[0]',
      'auth.client_certs[1].servers[0]: no server named "nope" is configured',
      'auth.client_certs[2].id: same id "shared" as auth.api_keys[0]',
      `auth.client_certs[3].fingerprint_sha256: same fingerprint "${'AB'.repeat(32)}" as auth.client_certs[2]`,
    ]);
  });

  it('an [auth] with client certificates only is complete; a rate_limit needs [rate_limit]', () => {
    expect(() => parseConfig(`${MTLS}${UPSTREAM}[auth]\n[[auth.client_certs]]\nid = "svc"\nsubject_cn = "svc"\n`, { env: {} })).not.toThrow();
    expect(configErrors(`${MTLS}${UPSTREAM}[auth]\n[[auth.client_certs]]\nid = "svc"\nsubject_cn = "svc"\nrate_limit = 5\n`)).toEqual([
      'auth.client_certs[0].rate_limit: needs [rate_limit] to be enforced (there is no [rate_limit] section)',
    ]);
  });

  it('never repeats the passphrase', () => {
    const errors = configErrors(`[server.tls]\nkey_passphrase = "\${PASS}"\n${UPSTREAM}`, { PASS: 'hunter2-secret' });
    expect(errors.join('\n')).not.toContain('hunter2');
  });
});

describe('the start-up check of the files (loadTls)', () => {
  const problems = (settings: Record<string, string>): string[] => {
    try {
      loadTls({ cert_path: certs.server.certPath, key_path: certs.server.keyPath, min_version: 'TLSv1.2', ...settings });
    } catch (error) {
      if (error instanceof ConfigError) return error.issues.map((i) => `${i.path}: ${i.message}`);
      throw error;
    }
    return [];
  };

  it('accepts the server certificate and key, with client CAs and an encrypted key with its passphrase', () => {
    expect(problems({})).toEqual([]);
    expect(problems({ key_path: certs.encryptedKeyPath, key_passphrase: certs.passphrase, client_ca_path: certs.ca.certPath })).toEqual([]);
  });

  it('refuses missing files, files that are not PEM, a key that does not match and an encrypted key without the right passphrase', () => {
    const missing = join(certs.dir, 'missing.pem');
    expect(problems({ cert_path: missing, client_ca_path: certs.dir })).toEqual([
      `server.tls.cert_path: file not found: ${missing}`,
      `server.tls.client_ca_path: ${certs.dir} is a directory`,
    ]);
    expect(problems({ cert_path: certs.server.keyPath, key_path: certs.server.certPath })).toEqual([
      'server.tls.cert_path: no PEM certificate in the file (expected "-----BEGIN CERTIFICATE-----")',
      'server.tls.key_path: not a PEM private key (or an encrypted one: then set key_passphrase)',
    ]);
    expect(problems({ key_path: certs.strayKeyPath })).toEqual(['server.tls.key_path: the private key does not match the certificate of server.tls.cert_path']);
    expect(problems({ key_path: certs.encryptedKeyPath })).toEqual(['server.tls.key_path: the key is encrypted: set key_passphrase']);
    const wrong = problems({ key_path: certs.encryptedKeyPath, key_passphrase: 'not-the-passphrase' });
    expect(wrong).toEqual(['server.tls.key_path: cannot load the private key: not a PEM private key, or key_passphrase is wrong']);
    const corrupt = join(certs.dir, 'corrupt.pem');
    writeFileSync(corrupt, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    expect(problems({ client_ca_path: corrupt })).toEqual(['server.tls.client_ca_path: not a valid X.509 certificate']);
  });
});

describe('mcp-guard serve and validate with [server.tls]', () => {
  let serving: CliProcess | undefined;

  afterEach(async () => {
    await serving?.kill();
    serving = undefined;
  });

  const tlsConfig = (lines: string) => writeConfig(`[server]\nport = 0\n\n[server.tls]\n${lines}\n\n${UPSTREAM}`);

  it('serve: a key that does not match the certificate is exit 1 with the key path, no stack trace', async () => {
    const path = tlsConfig(`cert_path = ${q(certs.server.certPath)}\nkey_path = ${q(certs.strayKeyPath)}`);
    const r = await runCli(['serve', '-c', path]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('mcp-guard: invalid configuration:\n  server.tls.key_path: the private key does not match the certificate of server.tls.cert_path\n');
    expect(r.stdout).toBe('');
  });

  it('serve: a wrong passphrase from the environment is exit 1, and neither it nor the key appears', async () => {
    const path = tlsConfig(`cert_path = ${q(certs.server.certPath)}\nkey_path = ${q(certs.encryptedKeyPath)}\nkey_passphrase = "\${TLS_PASS}"`);
    const r = await runCli(['serve', '-c', path], { env: { TLS_PASS: 'wrong-passphrase-value-91c2' } });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('server.tls.key_path: cannot load the private key');
    expect(r.stderr).not.toContain('wrong-passphrase-value-91c2');
    expect(r.stderr).not.toContain('PRIVATE KEY');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('validate reads the files too: a missing certificate is exit 1 with its key path; good files are valid', async () => {
    const missing = join(certs.dir, 'nowhere.pem');
    const bad = await runCli(['validate', '-c', tlsConfig(`cert_path = ${q(missing)}\nkey_path = ${q(certs.server.keyPath)}`)]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe(`mcp-guard: invalid configuration:\n  server.tls.cert_path: file not found: ${missing}\n`);
    const good = await runCli([
      'validate',
      '-c',
      tlsConfig(`cert_path = ${q(certs.server.certPath)}\nkey_path = ${q(certs.server.keyPath)}\nclient_ca_path = ${q(certs.ca.certPath)}`),
    ]);
    expect(good.stderr).toBe('');
    expect(good.code).toBe(0);
  });

  it('serve: a good config listens on https:// (paths relative to the working directory) and serves a trusting client', async () => {
    const cwd = mkdtempSync(join(certs.dir, 'cwd-'));
    const path = writeConfig(`[server]\nport = 0\n\n[server.tls]\ncert_path = "server.pem"\nkey_path = "server.key"\n\n${UPSTREAM}`, 'mcp-guard.toml', cwd);
    copyFileSync(certs.server.certPath, join(cwd, 'server.pem'));
    copyFileSync(certs.server.keyPath, join(cwd, 'server.key'));
    serving = new CliProcess(['serve', '-c', path], { cwd });
    const address = await serving.address();
    expect(address).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const agent = tlsAgent(certs.ca.cert);
    try {
      expect((await request(agent, `${address}/live`)).status).toBe(200);
    } finally {
      await agent.close();
    }
    serving.signal('SIGTERM');
    expect((await serving.waitExit(20_000)).code).toBe(0);
  });
});
