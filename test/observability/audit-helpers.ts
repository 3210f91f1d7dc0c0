/**
 * What the audit tests share: configs built by the real schema, streams and loggers that keep
 * what was written, a bounded wait, temporary directories, and a real HTTP collector on
 * 127.0.0.1:0 that can fail (a status) or never answer.
 */
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { auditSchema, type AuditConfig } from '../../src/config/schema.js';
import { createLogger, type Logger } from '../../src/observability/logger.js';

/** `[audit]` with these settings, defaults filled in by the schema the loader uses. */
export function auditConfig(fields: Record<string, unknown>): AuditConfig {
  return auditSchema.parse(fields);
}

/** A writable that keeps everything written to it. */
export function capture(): { stream: Writable; text: () => string; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk.toString('utf8'));
      done();
    },
  });
  const text = (): string => chunks.join('');
  return { stream, text, lines: () => parseLines(text()) };
}

/** The operational log of a test: warnings and above, kept in memory. */
export function testLog(): { log: Logger; text: () => string } {
  const out = capture();
  return { log: createLogger({ level: 'warn', format: 'json', destination: out.stream }), text: out.text };
}

/** JSON lines parsed; throws on a line that is not JSON (the assertion that every line is). */
export function parseLines(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** Polls `check` until it returns something truthy; fails after `timeoutMs` naming `what`. */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, timeoutMs = 5_000): Promise<Exclude<T, false | null | undefined | 0 | ''>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as Exclude<T, false | null | undefined | 0 | ''>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Resolves with `promise`, or fails after `timeoutMs` naming `what`: a bound on a wait, not a speed assertion. */
export async function within<T>(what: string, promise: Promise<T>, timeoutMs = 5_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** A fresh temporary directory and a function that removes it. */
export async function tempDir(): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), 'mcp-guard-audit-'));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** One POST the collector received, answered or not. */
export interface CollectedRequest {
  headers: IncomingHttpHeaders;
  events: Record<string, unknown>[];
  /** What it was answered: a status, or "hang" (never). */
  answer: number | 'hang';
}

/** How the collector answers its n-th request (0-based); 200 by default. */
export type Answer = number | 'hang';

/** A real audit collector on 127.0.0.1:0. */
export class Collector {
  readonly requests: CollectedRequest[] = [];
  /** Answers in order; once used up, `thenAnswer`. */
  answers: Answer[] = [];
  thenAnswer: Answer = 200;
  /** Waits this long before answering (to show POSTs do not overlap). */
  delayMs = 0;
  inflight = 0;
  maxInflight = 0;
  private readonly hanging: ServerResponse[] = [];

  private constructor(private readonly server: Server) {}

  static async start(): Promise<Collector> {
    const server = createServer();
    const collector = new Collector(server);
    server.on('request', (request, response) => {
      collector.inflight++;
      collector.maxInflight = Math.max(collector.maxInflight, collector.inflight);
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const answer = collector.answers.shift() ?? collector.thenAnswer;
        collector.requests.push({ headers: request.headers, events: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>[], answer });
        const finish = (): void => {
          collector.inflight--;
          response.writeHead(answer as number, { 'content-type': 'text/plain' }).end('ok');
        };
        if (answer === 'hang') {
          collector.hanging.push(response);
          response.on('close', () => collector.inflight--);
        } else if (collector.delayMs > 0) {
          setTimeout(finish, collector.delayMs);
        } else {
          finish();
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return collector;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/events`;
  }

  /** Every event received, in the order received (failed attempts included). */
  events(): Record<string, unknown>[] {
    return this.requests.flatMap((request) => request.events);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
