/**
 * Native TLS for the gateway's listener (`[server.tls]`): the certificate, key and client CAs read
 * and checked at start-up (and by `mcp-guard validate`), the `https` options Fastify creates its
 * server with, and the verified client certificate of a connection.
 *
 * Every problem is a ConfigError at the key path of the file it is about
 * (`server.tls.key_path: ...`), so that `serve` and `validate` report it like any other config
 * problem and exit 1. No message ever contains file contents or the key's passphrase; OpenSSL's own
 * messages are reduced to their reason.
 *
 * Client certificates: with `client_ca_path`, the server asks every client for a certificate and
 * verifies it against those CAs. `client_auth = "require"` lets OpenSSL refuse a handshake without
 * a valid one; `"optional"` lets a client without a certificate in, but a client whose certificate
 * does not verify is disconnected right after the handshake (before any request is read).
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ServerOptions } from 'node:https';
import type { Server } from 'node:net';
import { createSecureContext, type TLSSocket } from 'node:tls';
import { ConfigError, type ConfigIssue } from '../config/errors.js';
import { normaliseFingerprint } from '../config/constants.js';
import type { TlsSettings } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import { errorMessage } from '../error-message.js';

export type ClientAuth = 'none' | 'optional' | 'require';

/** What the listener is built with, once the files have been read and checked. */
export interface TlsMaterial {
  /** For Fastify's `https` option. Holds the key: never log it. */
  readonly options: ServerOptions;
  /** Whether and how client certificates are asked for. */
  readonly clientAuth: ClientAuth;
  /** Notes for the start-up log (an expired certificate, ...): paths and dates only. */
  readonly warnings: readonly string[];
}

const CERTIFICATE_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** How `client_auth` resolves: "require" when client_ca_path is set and client_auth is not. */
export function clientAuthOf(settings: TlsSettings): ClientAuth {
  if (settings.client_ca_path === undefined) return 'none';
  return settings.client_auth ?? 'require';
}

/**
 * Reads and checks every file of `[server.tls]`. Throws a ConfigError listing every problem found
 * (each at `server.tls.<key>`); returns the listener's options otherwise.
 */
export function loadTls(settings: TlsSettings, now: Date = new Date()): TlsMaterial {
  const issues: ConfigIssue[] = [];
  const warnings: string[] = [];
  const fail = (key: string, message: string) => issues.push({ path: `server.tls.${key}`, message });

  const certText = readPem(settings.cert_path, 'cert_path', fail);
  const keyText = readPem(settings.key_path, 'key_path', fail);
  const caText = settings.client_ca_path === undefined ? undefined : readPem(settings.client_ca_path, 'client_ca_path', fail);

  let leaf: X509Certificate | undefined;
  if (certText !== undefined) {
    const chain = certificates(certText, 'cert_path', fail);
    leaf = chain?.[0];
    if (leaf) {
      const notAfter = new Date(leaf.validTo);
      const notBefore = new Date(leaf.validFrom);
      if (notAfter < now) warnings.push(`server.tls.cert_path: the certificate expired on ${notAfter.toISOString()}; clients will refuse it`);
      else if (notBefore > now)
        warnings.push(`server.tls.cert_path: the certificate is not valid before ${notBefore.toISOString()}; clients will refuse it until then`);
    }
  }

  let key: KeyObject | undefined;
  if (keyText !== undefined) {
    try {
      key = createPrivateKey({ key: keyText, format: 'pem', ...(settings.key_passphrase !== undefined ? { passphrase: settings.key_passphrase } : {}) });
    } catch (error) {
      fail('key_path', describeKeyError(error, keyText, settings.key_passphrase !== undefined));
    }
  }
  if (leaf && key && !leaf.checkPrivateKey(key)) {
    fail('key_path', 'the private key does not match the certificate of server.tls.cert_path');
  }

  if (caText !== undefined) certificates(caText, 'client_ca_path', fail);

  const clientAuth = clientAuthOf(settings);
  const options: ServerOptions = {
    cert: certText,
    key: keyText,
    ...(settings.key_passphrase !== undefined ? { passphrase: settings.key_passphrase } : {}),
    minVersion: settings.min_version,
    ...(clientAuth === 'none' ? {} : { ca: caText, requestCert: true, rejectUnauthorized: clientAuth === 'require' }),
  };
  // What the listener will do with them: OpenSSL's own checks (key size, algorithms it refuses).
  if (issues.length === 0) {
    try {
      createSecureContext(options);
    } catch (error) {
      fail('cert_path', `OpenSSL refused the certificate or key (${opensslReason(error)})`);
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return { options, clientAuth, warnings };
}

/** The file's text, or undefined after reporting why it cannot be read. */
function readPem(path: string, key: string, fail: (key: string, message: string) => void): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException | undefined)?.code;
    switch (code) {
      case 'ENOENT':
        fail(key, `file not found: ${path}`);
        break;
      case 'EACCES':
      case 'EPERM':
        fail(key, `cannot read ${path}: permission denied`);
        break;
      case 'EISDIR':
        fail(key, `${path} is a directory`);
        break;
      default:
        fail(key, `cannot read ${path}${code ? ` (${code})` : ''}`);
    }
    return undefined;
  }
}

/** Every PEM certificate of a file, each parsed; undefined after reporting a problem. */
function certificates(text: string, key: string, fail: (key: string, message: string) => void): X509Certificate[] | undefined {
  const blocks = text.match(CERTIFICATE_BLOCK) ?? [];
  if (blocks.length === 0) {
    fail(key, 'no PEM certificate in the file (expected "-----BEGIN CERTIFICATE-----")');
    return undefined;
  }
  const parsed: X509Certificate[] = [];
  for (const [i, block] of blocks.entries()) {
    try {
      parsed.push(new X509Certificate(block));
    } catch {
      fail(key, blocks.length === 1 ? 'not a valid X.509 certificate' : `certificate ${i + 1} of the file is not a valid X.509 certificate`);
      return undefined;
    }
  }
  return parsed;
}

/** Why a private key could not be loaded, without a word of the key or its passphrase. */
function describeKeyError(error: unknown, text: string, passphraseSet: boolean): string {
  const code = (error as { code?: string } | undefined)?.code;
  const encrypted = code === 'ERR_MISSING_PASSPHRASE' || /-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(text);
  if (encrypted && !passphraseSet) return 'the key is encrypted: set key_passphrase';
  if (passphraseSet) return 'cannot load the private key: not a PEM private key, or key_passphrase is wrong';
  return 'not a PEM private key (or an encrypted one: then set key_passphrase)';
}

/** OpenSSL's reason ("ee key too small"), without the library's error-code prefix. */
function opensslReason(error: unknown): string {
  const reason = (error as { reason?: unknown } | undefined)?.reason;
  if (typeof reason === 'string' && reason !== '') return reason;
  const message = errorMessage(error);
  return message.replace(/^error:[0-9A-Fa-f]+:[^:]*:[^:]*:/, '').slice(0, 200);
}

/**
 * Listens to the TLS events of the server: handshake failures are logged at debug level (they are
 * often scanners or plain-HTTP clients), and with `client_auth = "optional"` a client that
 * presented a certificate that does not verify is disconnected before it can send a request.
 */
export function watchTls(server: Server, clientAuth: ClientAuth, log: Logger): void {
  server.on('tlsClientError', (error: Error & { code?: string }, socket: TLSSocket) => {
    log.debug({ clientIp: socket.remoteAddress, reason: opensslReason(error), code: error.code }, 'TLS handshake failed');
  });
  if (clientAuth !== 'optional') return;
  server.on('secureConnection', (socket: TLSSocket) => {
    if (socket.authorized) return;
    const presented = socket.getPeerCertificate();
    if (!presented || Object.keys(presented).length === 0) return;
    log.info(
      { clientIp: socket.remoteAddress, reason: String(socket.authorizationError ?? 'not verified') },
      'client certificate refused: it does not verify against client_ca_path',
    );
    socket.destroy();
  });
}

/** A client certificate that verified against client_ca_path, as authentication needs it. */
export interface VerifiedPeer {
  /** The subject's CN, when it has exactly one. */
  readonly subjectCn: string | undefined;
  /** SHA-256 of the certificate, 64 uppercase hex digits. */
  readonly fingerprint: string;
  /** Set once this connection has authenticated as the certificate's identity (for a single audit line per connection). */
  audited: boolean;
}

/** Per connection: read once, a connection keeps its certificate. */
const peers = new WeakMap<object, VerifiedPeer | null>();

/**
 * The verified client certificate of the connection a request came on, or undefined (plain
 * connection, no certificate asked for, none presented, or one that did not verify).
 */
export function verifiedPeer(socket: object): VerifiedPeer | undefined {
  const known = peers.get(socket);
  if (known !== undefined) return known ?? undefined;
  const tlsSocket = socket as Partial<TLSSocket>;
  let peer: VerifiedPeer | null = null;
  if (tlsSocket.encrypted === true && tlsSocket.authorized === true && typeof tlsSocket.getPeerCertificate === 'function') {
    const certificate = tlsSocket.getPeerCertificate();
    if (certificate && typeof certificate.fingerprint256 === 'string' && certificate.fingerprint256 !== '') {
      const cn = (certificate.subject as Record<string, unknown> | undefined)?.['CN'];
      peer = { subjectCn: typeof cn === 'string' ? cn : undefined, fingerprint: normaliseFingerprint(certificate.fingerprint256), audited: false };
    }
  }
  peers.set(socket, peer);
  return peer ?? undefined;
}
