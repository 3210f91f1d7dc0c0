/**
 * A real S3-compatible store for the archive tests: s3rver (npm) on 127.0.0.1, its objects in a
 * directory of the test's, which outlives a stop so that a restart on the same port finds them
 * (an outage). What it received is recorded (method, URL, the headers the tests look at), and
 * objects are read back with the official client, as an operator would.
 */
import { randomBytes } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import account from 's3rver/lib/models/account.js';
import { secret } from '../helpers/secret-scan.js';

export const BUCKET = 'audit-archive';

// The test's own client: no multi-line Node version warning in the test output (the gateways get their own environment).
process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

/** Credentials of one test run: s3rver knows the key id (it checks it; SigV4 signatures it does not). */
export function credentials(): { AWS_ACCESS_KEY_ID: string; AWS_SECRET_ACCESS_KEY: string } {
  const id = `AKIAGUARD${randomBytes(6).toString('hex').toUpperCase()}`;
  const key = secret(`archive-secret-${randomBytes(18).toString('base64url')}`, 'AWS_SECRET_ACCESS_KEY of the archive test');
  account.DUMMY_ACCOUNT.createKeyPair(id, key);
  return { AWS_ACCESS_KEY_ID: id, AWS_SECRET_ACCESS_KEY: key };
}

export interface Received {
  method: string;
  url: string;
  sse: string | undefined;
  kmsKeyId: string | undefined;
  authorization: string | undefined;
}

export class Store {
  readonly received: Received[] = [];
  private server: S3rver | undefined;
  port = 0;

  constructor(private readonly directory: string) {}

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get up(): boolean {
    return this.server !== undefined;
  }

  /** Starts (or starts again, on the same port and directory). */
  async start(): Promise<void> {
    const server = new S3rver({
      port: this.port,
      address: '127.0.0.1',
      silent: true,
      directory: this.directory,
      configureBuckets: [{ name: BUCKET, configs: [] }],
    });
    server.middleware.unshift(async (ctx, next) => {
      this.received.push({
        method: ctx.method,
        url: ctx.url,
        sse: ctx.headers['x-amz-server-side-encryption'],
        kmsKeyId: ctx.headers['x-amz-server-side-encryption-aws-kms-key-id'],
        authorization: ctx.headers['authorization'],
      });
      await next();
    });
    const address = await server.run();
    this.port = address.port;
    this.server = server;
  }

  /** Stops listening and cuts every connection (the SDK keeps them alive). */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    const closed = server.close();
    server.httpServer?.closeAllConnections();
    await closed;
  }

  /** The objects under the bucket: key -> bytes (gunzipped for `.gz`). */
  async objects(env: { AWS_ACCESS_KEY_ID: string; AWS_SECRET_ACCESS_KEY: string }): Promise<Map<string, Buffer>> {
    const client = new S3Client({
      region: 'us-east-1',
      endpoint: this.endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY },
    });
    try {
      const result = new Map<string, Buffer>();
      let token: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, ContinuationToken: token }));
        for (const object of page.Contents ?? []) {
          const got = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: object.Key! }));
          const bytes = Buffer.from(await got.Body!.transformToByteArray());
          result.set(object.Key!, object.Key!.endsWith('.gz') ? gunzipSync(bytes) : bytes);
        }
        token = page.NextContinuationToken;
      } while (token);
      return result;
    } finally {
      client.destroy();
    }
  }
}
