/**
 * A real gateway with `[server.tls]` on 127.0.0.1:0 (in-process, like test/helpers/gateway.ts),
 * with its log and audit lines captured, and undici clients that trust the test CA and present a
 * client certificate (or not).
 */
import { Writable } from 'node:stream';
import { Agent, fetch as undiciFetch, type RequestInit as UndiciRequestInit } from 'undici';
import { buildApp, type App } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/observability/logger.js';
import type { Pem } from './certs.js';
import { jsonOrUndefined } from '../helpers/gateway.js';

export interface TlsGateway {
  /** https://127.0.0.1:PORT */
  url: string;
  port: number;
  app: App;
  logs: string[];
  /** The audit lines written so far (needs `[audit] stdout = true` in the config). */
  audit(): Promise<Array<Record<string, unknown>>>;
  stop(): Promise<void>;
}

function lineCollector(into: string[]): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      into.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
}

export async function startTlsGateway(toml: string, env: Record<string, string> = {}): Promise<TlsGateway> {
  const config = parseConfig(toml, { env });
  config.server.host = '127.0.0.1';
  config.server.port = 0;
  const logs: string[] = [];
  const auditLines: string[] = [];
  const app = buildApp(config, { logger: createLogger({ level: 'debug', destination: lineCollector(logs) }), auditStdout: lineCollector(auditLines) });
  const url = await app.app.listen({ host: '127.0.0.1', port: 0 });
  await app.start();
  return {
    url,
    port: Number(new URL(url).port),
    app,
    logs,
    async audit() {
      await app.recorder.audit.flush();
      return auditLines.map((line) => JSON.parse(line) as Record<string, unknown>);
    },
    stop: () => app.stop(),
  };
}

/** An undici Agent that trusts `ca` and, when given, presents `client` as its certificate. */
export function tlsAgent(ca: string | undefined, client?: Pem): Agent {
  return new Agent({
    connect: {
      ...(ca !== undefined ? { ca } : {}),
      ...(client ? { cert: client.cert, key: client.key } : {}),
    },
  });
}

export interface Answer {
  status: number;
  headers: Headers;
  json: any;
}

/** One request through `agent` (undici's own fetch, so that the dispatcher is undici 7's). */
export async function request(agent: Agent, url: string, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<Answer> {
  const options: UndiciRequestInit = {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...init.headers },
    dispatcher: agent,
    ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
  };
  const res = await undiciFetch(url, options);
  const text = await res.text();
  const json = jsonOrUndefined(text);
  return { status: res.status, headers: res.headers as unknown as Headers, json };
}

/** A fetch for the MCP SDK's transport that goes through `agent`. */
export function fetchVia(agent: Agent): (url: string | URL, init?: RequestInit) => Promise<Response> {
  return (url, init) => undiciFetch(url, { ...(init as UndiciRequestInit), dispatcher: agent }) as unknown as Promise<Response>;
}

export const TOOLS_LIST = { jsonrpc: '2.0', id: 1, method: 'tools/list' };
export const callTool = (id: number, name: string) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {} } });
