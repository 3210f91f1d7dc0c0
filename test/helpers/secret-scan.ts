/**
 * The secrets scan: no key, token or secret a test used may appear in any log or audit file its
 * gateways wrote.
 *
 * The helpers that start gateways and send credentials feed it, so a test file gets the scan by
 * using them, without code of its own:
 * - secrets: the `authorization` header values (and the credential after `Bearer `/`Basic `) sent
 *   with curlPost() and connectSdk(); the keys printed by `mcp-guard keygen` and given to
 *   `mcp-guard hash-key` through runCli(); in every config started with startGateway() or
 *   CliProcess (`serve -c FILE`), the JWT secret and any value under a key named like a secret
 *   (secret, password, passphrase, token) or under a credential-named header (authorization,
 *   cookie, *key*, *token*, *auth*...) of a `headers`/`export_headers` table. Tests add
 *   others with secret(value, label).
 * - logs: the operational log of every startGateway() gateway, stdout and stderr of every
 *   CliProcess, and the `[audit] file` of both (read at the end, or the copy taken when the
 *   gateway stopped, so a removed temp dir does not hide it).
 *
 * Importing this module registers a file-level afterAll that fails the test file when a secret is
 * found, naming the secret's label and the log (never printing the secret itself).
 * Not covered: the output of runCli() (keygen prints its key by design), audit lines sent to an
 * export_url collector or captured from `stdout = true` through the auditStdout option, and
 * rotated (gzipped) audit files.
 */
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, expect } from 'vitest';

/** Shorter values would match by accident (and are no secrets worth the name). */
const MIN_LENGTH = 8;

const secrets = new Map<string, string>();
const logs: Array<{ label: string; read: () => string }> = [];
const files = new Map<string, { label: string; snapshot: string }>();

/** Registers a value no log may contain; returns it. */
export function secret(value: string, label: string): string {
  if (typeof value === 'string' && value.length >= MIN_LENGTH && !secrets.has(value)) secrets.set(value, label);
  return value;
}

/** Registers the credential of an Authorization header value (the whole value, and what follows its scheme). */
export function secretHeader(value: string | undefined, label = 'authorization header'): void {
  if (!value) return;
  secret(value, label);
  const m = /^(?:Bearer|Basic)\s+(\S+)$/i.exec(value);
  if (m) secret(m[1]!, label);
}

/** Registers every credential of a headers object (`authorization`, any case). */
export function secretHeaders(headers: Record<string, string> | undefined, label = 'authorization header'): void {
  for (const [name, value] of Object.entries(headers ?? {})) if (name.toLowerCase() === 'authorization') secretHeader(value, label);
}

const SECRET_KEY = /secret|password|passphrase|token/i;
/** Header names that carry a credential. Other configured headers (`X-Gateway = "mcp-guard"`) are not secrets. */
const CREDENTIAL_HEADER = /authorization|cookie|key|token|secret|auth|password|session/i;

/** Registers the credentials a parsed config holds (see the header comment). */
export function secretsOfConfig(config: unknown, label = 'config'): void {
  const walk = (value: unknown, key: string, inHeaders: boolean): void => {
    if (typeof value === 'string') {
      if ((inHeaders && CREDENTIAL_HEADER.test(key)) || SECRET_KEY.test(key)) {
        secret(value, `${label}: ${key}`);
        secretHeader(value, `${label}: ${key}`);
      }
    } else if (Array.isArray(value)) value.forEach((v) => walk(v, key, inHeaders));
    else if (typeof value === 'object' && value !== null) {
      for (const [k, v] of Object.entries(value)) walk(v, k, inHeaders || /headers$/i.test(k));
    }
  };
  walk(config, '', false);
}

/** Registers a log to scan; read() is called when the scan runs. */
export function watchLog(label: string, read: () => string): void {
  logs.push({ label, read });
}

/** Registers a log file to scan (read at scan time; see snapshotFiles for files that may be removed first). */
export function watchFile(path: string, label = path): void {
  if (!files.has(path)) files.set(path, { label, snapshot: '' });
  snapshotFiles();
}

/** Copies every watched file that exists now: call before removing them. */
export function snapshotFiles(): void {
  for (const [path, entry] of files) {
    try {
      if (existsSync(path)) entry.snapshot = readFileSync(path, 'utf8');
    } catch {
      // unreadable now: the last copy stands
    }
  }
}

export interface SecretFinding {
  secret: string;
  log: string;
}

/** Every (secret label, log) pair where the secret appears. */
export function findSecrets(): SecretFinding[] {
  snapshotFiles();
  const texts = [...logs.map((l) => ({ label: l.label, text: l.read() })), ...[...files.values()].map((f) => ({ label: f.label, text: f.snapshot }))];
  const found: SecretFinding[] = [];
  for (const [value, label] of secrets) {
    for (const { label: log, text } of texts) if (text.includes(value)) found.push({ secret: label, log });
  }
  return found;
}

/** What was scanned: for a test to report. */
export function scanSummary(): { secrets: number; logs: number; bytes: number } {
  snapshotFiles();
  const bytes = logs.reduce((n, l) => n + l.read().length, 0) + [...files.values()].reduce((n, f) => n + f.snapshot.length, 0);
  return { secrets: secrets.size, logs: logs.length + files.size, bytes };
}

export function expectNoSecretsInLogs(): void {
  expect(findSecrets(), 'secrets found in logs (labels only)').toEqual([]);
}

afterAll(() => {
  if (process.env['SECRET_SCAN_REPORT']) {
    const s = scanSummary();
    console.log(`secrets scan: ${s.secrets} secrets in ${s.logs} logs (${s.bytes} bytes): ${findSecrets().length} found`);
  }
  expectNoSecretsInLogs();
});
