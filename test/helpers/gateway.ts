/**
 * Starts a real gateway on 127.0.0.1:0 from a TOML config, with its log captured in memory so
 * tests can assert on it (and scan it for secrets).
 */
import { resolve } from 'node:path';
import { Writable } from 'node:stream';
import { buildApp, type App, type AppOptions } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/observability/logger.js';
import { secretHeaders, secretsOfConfig, snapshotFiles, watchFile, watchLog } from './secret-scan.js';

export const EVERYTHING = new URL('../../node_modules/@modelcontextprotocol/server-everything/dist/index.js', import.meta.url).pathname;
export const FILESYSTEM = new URL('../../node_modules/@modelcontextprotocol/server-filesystem/dist/index.js', import.meta.url).pathname;
export const NODE = process.execPath;

export interface RunningGateway {
  url: string;
  app: App;
  logs: string[];
  stop(): Promise<void>;
}

export async function startGateway(
  toml: string,
  options: { env?: Record<string, string | undefined>; waitReady?: boolean; auth?: AppOptions['auth'] } = {},
): Promise<RunningGateway> {
  const config = parseConfig(toml, { env: options.env ?? {} });
  config.server.host = '127.0.0.1';
  config.server.port = 0;
  const logs: string[] = [];
  // The secrets scan (secret-scan.ts): this config's credentials, this log and this audit file.
  secretsOfConfig(config, 'startGateway config');
  watchLog('startGateway log', () => logs.join('\n'));
  if (config.audit?.file !== undefined) watchFile(resolve(config.audit.file), 'startGateway audit file');
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      logs.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  const app = buildApp(config, { logger: createLogger({ level: 'debug', destination }), ...(options.auth ? { auth: options.auth } : {}) });
  const address = await app.app.listen({ host: '127.0.0.1', port: 0 });
  if (options.waitReady !== false) await app.start();
  else void app.start();
  let stopped = false;
  return {
    url: address,
    app,
    logs,
    async stop() {
      if (stopped) return;
      stopped = true;
      await app.stop();
      snapshotFiles();
    },
  };
}

/** A TOML string literal. */
export function q(value: string): string {
  return JSON.stringify(value);
}

/** A `[[upstream.servers]]` entry: server-everything as a stdio child, named `name` at `/name`, plus `extra` lines. */
export function everythingStdio(name = 'everything', extra = ''): string {
  return `[[upstream.servers]]\nname = ${q(name)}\npath_prefix = "/${name}"\ncommand = ${q(NODE)}\nargs = [${q(EVERYTHING)}, "stdio"]\n${extra}`;
}

/** Posts one JSON-RPC body the way `curl -X POST -d` does (form content type, no Accept). */
export async function curlPost(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; text: string; json: any }> {
  secretHeaders(headers, 'authorization sent with curlPost');
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  const json = jsonOrUndefined(text);
  return { status: res.status, headers: res.headers, text, json };
}

/** The JSON value of a response body, or undefined when it is not JSON. */
export function jsonOrUndefined(text: string): any {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Waits until cond() holds, polling; fails after timeoutMs. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}
