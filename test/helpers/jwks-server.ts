/**
 * A real JSON Web Key Set server on node:http (127.0.0.1, port 0), standing in for an identity
 * provider: it publishes public keys at /.well-known/jwks.json, signs tokens with the matching
 * private keys, counts fetches, and can fail (500, a body that is no key set, or no answer at all)
 * to test outages. The keys are real jose keys, so verification runs the real cryptography.
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';

/** The algorithms the server can make keys for. */
export type JwksAlgorithm = 'RS256' | 'ES256' | 'PS256' | 'EdDSA';

/** One signing key: the private half signs, the public JWK is what the server publishes. */
export interface TestKey {
  kid: string;
  alg: JwksAlgorithm;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  /** With kid, alg and use: "sig" set, as a provider publishes it. */
  publicJwk: JWK;
}

/** How the server misbehaves: 500, a 200 whose body is not a key set, or accepting and never answering. */
export type JwksFailure = 'error' | 'garbage' | 'hang' | null;

/** Options for {@link JwksServer.sign}. */
export interface SignOptions {
  /** The key to sign with, by kid (published or made by createUnpublishedKey). */
  kid?: string;
  /** The key itself; wins over kid (for a key whose kid collides with a published one). */
  key?: TestKey;
  /** Leave `kid` out of the header: the verifier must pick a key by alg alone. */
  omitKid?: boolean;
  /** setExpirationTime: "5m", "10s ago", or absolute epoch seconds; null = no exp. Default "5m". */
  expiresIn?: string | number | null;
  /** setNotBefore: "1h", or absolute epoch seconds. */
  notBefore?: string | number;
  /** Absolute epoch seconds; null = no iat. Default now. */
  issuedAt?: number | null;
  issuer?: string;
  audience?: string | string[];
  subject?: string;
}

const JWKS_PATH = '/.well-known/jwks.json';

/** A local JWKS endpoint with the private keys to sign tokens it vouches for. */
export class JwksServer {
  /** The key set's URL: http://127.0.0.1:PORT/.well-known/jwks.json. */
  readonly url: string;
  /** The server's origin, handy as a token issuer. */
  readonly issuer: string;
  /** How many requests reached the key set's path (including failed ones). */
  fetches = 0;

  readonly #server: Server;
  /** Every key made here, by kid; only those in #published are served. */
  readonly #keys = new Map<string, TestKey>();
  readonly #published = new Set<string>();
  #failure: JwksFailure = null;
  readonly #hanging = new Set<ServerResponse>();

  private constructor(server: Server) {
    this.#server = server;
    const { port } = server.address() as AddressInfo;
    this.issuer = `http://127.0.0.1:${port}`;
    this.url = `${this.issuer}${JWKS_PATH}`;
  }

  /** Starts an empty key set on a free port. */
  static async start(): Promise<JwksServer> {
    let self: JwksServer | undefined;
    const server = createServer((req, res) => self?.handle(req.method ?? 'GET', req.url ?? '/', res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    self = new JwksServer(server);
    return self;
  }

  private handle(method: string, url: string, res: ServerResponse): void {
    if (new URL(url, this.issuer).pathname !== JWKS_PATH || (method !== 'GET' && method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    this.fetches += 1;
    switch (this.#failure) {
      case 'error':
        res.writeHead(500, { 'content-type': 'text/plain' }).end('internal error');
        return;
      case 'garbage':
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"keys":"none"}');
        return;
      case 'hang':
        // Never answered; stop() closes the connection.
        this.#hanging.add(res);
        return;
      case null:
        res.writeHead(200, { 'content-type': 'application/jwk-set+json' }).end(JSON.stringify(this.jwks()));
    }
  }

  /** The key set as currently published. */
  jwks(): { keys: JWK[] } {
    return { keys: [...this.#published].map((kid) => (this.#keys.get(kid) as TestKey).publicJwk) };
  }

  /** Makes a key pair and publishes its public half. */
  async addKey(alg: JwksAlgorithm, kid?: string): Promise<TestKey> {
    const key = await this.createUnpublishedKey(alg, kid);
    this.#published.add(key.kid);
    return key;
  }

  /**
   * Makes a key pair the server knows but does not publish: tokens it signs are what an attacker
   * (or a provider that rotated without publishing) would present. Its kid may collide with a
   * published one; sign with `{ key }` then.
   */
  async createUnpublishedKey(alg: JwksAlgorithm, kid: string = randomUUID()): Promise<TestKey> {
    const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
    const publicJwk: JWK = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
    const key: TestKey = { kid, alg, privateKey, publicKey, publicJwk };
    if (!this.#keys.has(kid)) this.#keys.set(kid, key);
    return key;
  }

  /** Stops publishing a key (rotation); it can still sign. */
  removeKey(kid: string): void {
    this.#published.delete(kid);
  }

  /** Makes the key set endpoint fail in the given way, or work again with null. */
  setFailure(failure: JwksFailure): void {
    this.#failure = failure;
  }

  /** Signs a JWT: iat now, exp in 5 minutes, the key's alg and kid in the header, unless told otherwise. */
  async sign(claims: JWTPayload, options: SignOptions = {}): Promise<string> {
    const key = options.key ?? (options.kid === undefined ? undefined : this.#keys.get(options.kid));
    if (key === undefined) throw new Error(`no key ${options.key?.kid ?? options.kid ?? '(none given)'}`);
    const jwt = new SignJWT(claims).setProtectedHeader({ alg: key.alg, ...(options.omitKid ? {} : { kid: key.kid }), typ: 'JWT' });
    if (options.issuedAt !== null) jwt.setIssuedAt(options.issuedAt);
    const expiresIn = options.expiresIn === undefined ? '5m' : options.expiresIn;
    if (expiresIn !== null) jwt.setExpirationTime(expiresIn);
    if (options.notBefore !== undefined) jwt.setNotBefore(options.notBefore);
    if (options.issuer !== undefined) jwt.setIssuer(options.issuer);
    if (options.audience !== undefined) jwt.setAudience(options.audience);
    if (options.subject !== undefined) jwt.setSubject(options.subject);
    return jwt.sign(key.privateKey);
  }

  /** Closes the server and every connection it holds, hanging ones included. */
  async stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const res of this.#hanging) res.destroy();
    this.#hanging.clear();
    this.#server.closeAllConnections();
    await closed;
  }
}
