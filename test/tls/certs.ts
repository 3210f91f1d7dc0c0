/**
 * Certificates for the TLS tests, made with the `openssl` command line in a fresh temp dir (once
 * per test file): a CA, a server certificate for 127.0.0.1 and localhost, two client certificates
 * of that CA (one an identity in the tests' configs, one not), and a client certificate from a
 * second CA that carries the known client's subject. EC P-256 keys: quick to make.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Pem {
  /** The certificate file and its contents. */
  certPath: string;
  cert: string;
  /** The key file and its contents. */
  keyPath: string;
  key: string;
  /** SHA-256 fingerprint, as `openssl x509 -fingerprint -sha256` prints it (AB:CD:...). */
  fingerprint: string;
}

export interface TestCerts {
  dir: string;
  ca: Pem;
  otherCa: Pem;
  server: Pem;
  /** CN=known-client, issued by ca. */
  knownClient: Pem;
  /** CN=unknown-client, issued by ca. */
  unknownClient: Pem;
  /** CN=known-client, issued by otherCa. */
  foreignClient: Pem;
  /** The server key encrypted with `passphrase`. */
  encryptedKeyPath: string;
  passphrase: string;
  /** A key that belongs to no certificate here. */
  strayKeyPath: string;
  remove(): void;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function newKey(dir: string, name: string): string {
  const path = join(dir, `${name}.key`);
  openssl(dir, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path]);
  return path;
}

function pem(dir: string, name: string): Pem {
  const certPath = join(dir, `${name}.pem`);
  const keyPath = join(dir, `${name}.key`);
  const cert = readFileSync(certPath, 'utf8');
  return { certPath, cert, keyPath, key: readFileSync(keyPath, 'utf8'), fingerprint: new X509Certificate(cert).fingerprint256 };
}

function makeCa(dir: string, name: string, cn: string): Pem {
  const key = newKey(dir, name);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, 'basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n');
  openssl(dir, ['req', '-new', '-key', key, '-subj', `/CN=${cn}`, '-out', join(dir, `${name}.csr`)]);
  openssl(dir, ['x509', '-req', '-in', join(dir, `${name}.csr`), '-signkey', key, '-days', '2', '-extfile', ext, '-out', join(dir, `${name}.pem`)]);
  return pem(dir, name);
}

function issue(dir: string, ca: Pem, name: string, cn: string, extensions: string): Pem {
  const key = newKey(dir, name);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, `basicConstraints = CA:FALSE\n${extensions}\n`);
  openssl(dir, ['req', '-new', '-key', key, '-subj', `/CN=${cn}`, '-out', join(dir, `${name}.csr`)]);
  openssl(dir, [
    'x509',
    '-req',
    '-in',
    join(dir, `${name}.csr`),
    '-CA',
    ca.certPath,
    '-CAkey',
    ca.keyPath,
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    ext,
    '-out',
    join(dir, `${name}.pem`),
  ]);
  return pem(dir, name);
}

/** Makes every certificate the TLS tests use; call remove() when done. */
export function makeTestCerts(): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), 'mcp-guard-tls-'));
  const ca = makeCa(dir, 'ca', 'MCP Guard Test CA');
  const otherCa = makeCa(dir, 'other-ca', 'Some Other CA');
  const server = issue(
    dir,
    ca,
    'server',
    'localhost',
    'keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost',
  );
  const clientExt = 'keyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth';
  const knownClient = issue(dir, ca, 'known-client', 'known-client', clientExt);
  const unknownClient = issue(dir, ca, 'unknown-client', 'unknown-client', clientExt);
  const foreignClient = issue(dir, otherCa, 'foreign-client', 'known-client', clientExt);
  const passphrase = 'pass-phrase-never-logged-7f3a';
  const encryptedKeyPath = join(dir, 'server-encrypted.key');
  openssl(dir, ['pkey', '-in', server.keyPath, '-aes-256-cbc', '-passout', `pass:${passphrase}`, '-out', encryptedKeyPath]);
  const strayKeyPath = newKey(dir, 'stray');
  return {
    dir,
    ca,
    otherCa,
    server,
    knownClient,
    unknownClient,
    foreignClient,
    encryptedKeyPath,
    passphrase,
    strayKeyPath,
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
