/**
 * Runs @modelcontextprotocol/server-everything over HTTP for tests: a real child process on a free
 * port, traffic to 127.0.0.1 only. Every instance must be stopped (afterAll); a process-exit hook
 * kills whatever a failed test left behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import type { HttpServerConfig } from '../../src/config/schema.js';
import type { JsonRpcRequest, JsonRpcResponse } from '../../src/jsonrpc/messages.js';
import { createLogger, type Logger } from '../../src/observability/logger.js';
import type { ServerMessage, SessionHandlers } from '../../src/upstreams/upstream.js';

export type EverythingTransport = 'streamableHttp' | 'sse';

const require = createRequire(import.meta.url);
const ENTRY = join(dirname(require.resolve('@modelcontextprotocol/server-everything/package.json')), 'dist/index.js');

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * A port that nothing listens on right now, from below the kernel's ephemeral range (32768 and up
 * on Linux). Every listen(0) of the test files running in parallel (gateways on --port 0, fake
 * upstreams, JWKS servers) draws from that range, so a port taken from it and left unused for a
 * while, as the refused upstreams of the fault tests are, can meanwhile become another test's
 * server: CI once saw "answered HTTP 404" where a refused connection was expected. Below the range
 * only other freePort() callers compete, at random among 12,000 ports.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    try {
      await new Promise<void>((resolve, reject) => {
        const server = createServer();
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => server.close(() => resolve()));
      });
      return port;
    } catch (error) {
      // Taken (a service of the machine, another test): try another, a bounded number of times.
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 100) throw error;
    }
  }
}

export class EverythingServer {
  private child: ChildProcess | undefined;
  /** Everything the server printed (it logs each request and session event). */
  output = '';

  private constructor(
    readonly transport: EverythingTransport,
    readonly port: number,
  ) {}

  /** Starts a server on a free port and waits until it accepts connections. */
  static async start(transport: EverythingTransport, port?: number): Promise<EverythingServer> {
    const server = new EverythingServer(transport, port ?? (await freePort()));
    await server.start();
    return server;
  }

  /** streamableHttp: the /mcp endpoint; sse: the /sse stream. */
  get url(): string {
    return `http://127.0.0.1:${this.port}${this.transport === 'sse' ? '/sse' : '/mcp'}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<void> {
    if (this.child) throw new Error('already running');
    const child = spawn(process.execPath, [ENTRY, this.transport], {
      env: { ...process.env, PORT: String(this.port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    running.add(child);
    const collect = (chunk: Buffer): void => {
      this.output += chunk.toString('utf8');
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    child.once('exit', () => {
      running.delete(child);
      if (this.child === child) this.child = undefined;
    });
    await this.waitForPort(15_000);
  }

  /** Stops the server (SIGTERM, then SIGKILL) and waits for it to exit. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
    await exited;
    clearTimeout(timer);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** Resolves once `text` has appeared in the server's output. */
  async waitForOutput(text: string, timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.output.includes(text)) {
      if (Date.now() > deadline) throw new Error(`server-everything never printed '${text}'`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  private async waitForPort(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.child) throw new Error(`server-everything exited during startup:\n${this.output}`);
      if (await accepts(this.port)) return;
      if (Date.now() > deadline) throw new Error(`server-everything did not listen on ${this.port}:\n${this.output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/* Fixtures shared by the upstream transport tests. */

/** A server's resolved config, as src/config/schema.ts would produce it for an http/sse upstream. */
export function upstreamConfig(name: string, transport: 'http' | 'sse', url: string, overrides: Partial<HttpServerConfig> = {}): HttpServerConfig {
  return {
    name,
    path_prefix: `/${name}`,
    transport,
    url,
    headers: {},
    strip_prefix: true,
    timeout_ms: 20_000,
    startup_timeout_ms: 10_000,
    restart_backoff_ms: 100,
    restart_backoff_max_ms: 1_000,
    max_restarts: 3,
    ...overrides,
  } as HttpServerConfig;
}

/** A debug-level logger whose lines are kept in memory, to be scanned for secrets. */
export function memoryLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  return { logger: createLogger({ level: 'debug', destination }), lines };
}

/** SessionHandlers that record what they receive. */
export function recordingHandlers(): SessionHandlers & { messages: ServerMessage[]; closes: string[] } {
  const messages: ServerMessage[] = [];
  const closes: string[] = [];
  return {
    messages,
    closes,
    onMessage: (message) => messages.push(message),
    onClose: (reason) => closes.push(reason),
  };
}

/** A client's initialize, declaring sampling (server-everything then offers trigger-sampling-request). */
export function clientInitialize(id: string | number, protocolVersion: string): JsonRpcRequest {
  return {
    jsonrpc: '2.0',
    id,
    method: 'initialize',
    params: { protocolVersion, capabilities: { sampling: {} }, clientInfo: { name: 'upstream-test-client', version: '1.0.0' } },
  };
}

/** A tools/call request. */
export function toolCall(id: string | number, name: string, args: Record<string, unknown>, progressToken?: string | number): JsonRpcRequest {
  const params: Record<string, unknown> = { name, arguments: args };
  if (progressToken !== undefined) params['_meta'] = { progressToken };
  return { jsonrpc: '2.0', id, method: 'tools/call', params };
}

/** The text of a tools/call result's first content block. */
export function resultText(response: JsonRpcResponse): string {
  if (!('result' in response)) throw new Error(`expected a result, got ${JSON.stringify(response)}`);
  const content = response.result['content'] as Array<{ text?: string }> | undefined;
  return content?.[0]?.text ?? '';
}

/** Polls until `check` passes (or throws its last failure). */
export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}
