/**
 * What the fuzz tests share: a real gateway in front of two real upstream processes that check
 * every message they receive (strict-upstream.mjs), the properties every answer must have, and
 * how many inputs each property gets.
 *
 * The gateway: server "web" (streamable HTTP, at /web and /mcp/web) and server "local" (stdio, at
 * /local and /mcp/local), behind API keys and JWTs, rate limits far above what the fuzzing sends,
 * and small limits (body 64 KiB, batch 8, depth 12) so that the fuzzing lands on both sides of
 * each. The upstreams are healthy throughout: any 5xx is the gateway's fault.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { SignJWT } from 'jose';
import { expect } from 'vitest';
import { buildApp, type App } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/observability/logger.js';

export const STRICT_UPSTREAM = new URL('./strict-upstream.mjs', import.meta.url).pathname;

/** Inputs in all fuzz properties together: FUZZ_RUNS, else a default that keeps `npm test` quick. */
export const TOTAL_RUNS = positiveInt(process.env['FUZZ_RUNS'], 5_000);

/** A fixed seed when FUZZ_SEED is set (to replay a failure), else fast-check picks one and prints it on failure. */
export const SEED = process.env['FUZZ_SEED'] === undefined ? undefined : Number(process.env['FUZZ_SEED']);

/**
 * Each property's share of TOTAL_RUNS. The shares add up to 1, so the properties of all fuzz
 * files together run exactly TOTAL_RUNS inputs (each prints its count).
 */
const SHARES = {
  'inject-bodies-http': 0.3,
  'inject-bodies-stdio': 0.2,
  'inject-requests': 0.15,
  'wire-undici': 0.15,
  'wire-raw': 0.2,
} as const;

export type PropertyName = keyof typeof SHARES;

/** How many inputs a property runs: its share of TOTAL_RUNS (the last one takes the rounding). */
export function runsFor(name: PropertyName): number {
  const names = Object.keys(SHARES) as PropertyName[];
  const rounded = names.map((n) => Math.floor(TOTAL_RUNS * SHARES[n]));
  const i = names.indexOf(name);
  return i === names.length - 1 ? TOTAL_RUNS - rounded.slice(0, -1).reduce((a, b) => a + b, 0) : rounded[i]!;
}

/** A test timeout that grows with the number of inputs (a full run takes minutes, not seconds). */
export function timeoutFor(name: PropertyName): number {
  return 60_000 + runsFor(name) * 10;
}

function positiveInt(text: string | undefined, fallback: number): number {
  const n = text === undefined ? NaN : Number(text);
  return Number.isSafeInteger(n) && n > 0 ? n : fallback;
}

/** The API keys: "fuzzer" may call only echo; "web-only" may reach only the server "web". */
export const KEY = 'mcp_fuzzkey1_abcdefghijklmnopqrstuvwxyz0123456789';
export const WEB_ONLY_KEY = 'mcp_fuzzkey2_abcdefghijklmnopqrstuvwxyz0123456789';
const JWT_SECRET = 'fuzz-secret-fuzz-secret-fuzz-secret-0123456789';

/** A base64 SHA-256 key_hash (the legacy format: no argon2, so tens of thousands of checks stay cheap). */
function legacyHash(key: string): string {
  return createHash('sha256').update(key).digest('base64');
}

export interface Upstreams {
  httpUrl: string;
  violationsFile: string;
  /** Bytes of the violations file already reported. */
  consumed: number;
  /** Every message received, one JSON line each (when started with `record`). */
  receivedFile: string;
  child: ChildProcess;
  /** Ends the child (by its PID) and removes the temp files. */
  stop(): void;
}

export interface FuzzGateway {
  url: string;
  app: App;
  upstreams: Upstreams;
  /** Error-level log lines (an internal error is logged at this level). */
  errors: string[];
  /** A valid HS256 JWT for user "jwt-user" with scope "tools". */
  jwt: string;
  /** Sessions opened in advance: by server, and one of another identity. */
  sessions: { web: string; local: string; webOtherIdentity: string };
  stop(): Promise<void>;
}

/**
 * Starts the HTTP strict upstream as a child process; its violations go to a fresh temp file, and
 * with `record`, every message it receives to another (`receivedFile`).
 */
export async function startUpstreams(options: { record?: boolean } = {}): Promise<Upstreams> {
  const dir = mkdtempSync(join(tmpdir(), 'mcp-guard-fuzz-'));
  const violationsFile = join(dir, 'violations.jsonl');
  const receivedFile = join(dir, 'received.jsonl');
  writeFileSync(violationsFile, '');
  writeFileSync(receivedFile, '');
  const args = ['http', violationsFile, ...(options.record ? [receivedFile] : [])];
  const child = fork(STRICT_UPSTREAM, args, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m) => resolve((m as { port: number }).port));
    child.once('exit', (code) => reject(new Error(`strict upstream exited with ${code}`)));
  });
  return {
    httpUrl: `http://127.0.0.1:${port}/mcp`,
    violationsFile,
    receivedFile,
    consumed: 0,
    child,
    stop() {
      child.kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The gateway's config (TOML): see the header comment. */
function config(upstreams: Upstreams): string {
  const q = JSON.stringify;
  return `
[server]
max_request_size = 65536
max_sessions = 1000000
max_batch_length = 8
max_json_depth = 12

[[upstream.servers]]
name = "web"
path_prefix = "/web"
transport = "http"
url = ${q(upstreams.httpUrl)}
strip_prefix = true
timeout_ms = 10000

[[upstream.servers]]
name = "local"
path_prefix = "/local"
transport = "stdio"
command = ${q(process.execPath)}
args = [${q(STRICT_UPSTREAM)}, "stdio", ${q(upstreams.violationsFile)}]
timeout_ms = 10000

[auth]
# Every garbage credential goes through the verifiers instead of the failure limiter's 429.
max_failures_per_minute = 1000000

[[auth.api_keys]]
id = "fuzzer"
key_hash = ${q(legacyHash(KEY))}
allowed_tools = ["echo"]

[[auth.api_keys]]
id = "web-only"
key_hash = ${q(legacyHash(WEB_ONLY_KEY))}
servers = ["web"]

[auth.jwt]
mode = "simple"
secret = ${q(JWT_SECRET)}

[auth.jwt.scope_tool_mapping]
"tools" = ["echo", "admin_*"]

[rate_limit]
requests_per_second = 1000000
burst_size = 1000000
per_address_requests_per_second = 1000000
per_address_burst_size = 1000000

[[rate_limit.tool_limits]]
tool_pattern = "echo"
requests_per_second = 1000000
burst_size = 1000000
`;
}

export async function startFuzzGateway(): Promise<FuzzGateway> {
  const upstreams = await startUpstreams();
  const errors: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line && (JSON.parse(line) as { level: number }).level >= 50) errors.push(line);
      }
      done();
    },
  });
  const parsed = parseConfig(config(upstreams), { env: {} });
  parsed.server.host = '127.0.0.1';
  parsed.server.port = 0;
  const app = buildApp(parsed, { logger: createLogger({ level: 'warn', destination }) });
  const url = await app.app.listen({ host: '127.0.0.1', port: 0 });
  await app.start();
  const jwt = await new SignJWT({ scope: 'tools' })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject('jwt-user')
    .setIssuedAt()
    .setExpirationTime('2h')
    .sign(new TextEncoder().encode(JWT_SECRET));
  const open = async (server: string, key: string): Promise<string> => {
    const res = await app.app.inject({
      method: 'POST',
      url: `/mcp/${server}`,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      payload: JSON.stringify({
        jsonrpc: '2.0',
        id: 0,
        method: 'initialize',
        params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'fuzz', version: '1' } },
      }),
    });
    const id = res.headers['mcp-session-id'];
    if (res.statusCode !== 200 || typeof id !== 'string') throw new Error(`initialize on ${server}: ${res.statusCode} ${res.body}`);
    // The handshake completed, as a real client does: a half-open session is closed after
    // session_handshake_timeout_ms, long before the fuzz runs end.
    await app.app.inject({
      method: 'POST',
      url: `/mcp/${server}`,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'mcp-session-id': id },
      payload: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
    });
    return id;
  };
  const sessions = { web: await open('web', KEY), local: await open('local', KEY), webOtherIdentity: await open('web', WEB_ONLY_KEY) };
  return {
    url,
    app,
    upstreams,
    errors,
    jwt,
    sessions,
    async stop() {
      await app.stop();
      upstreams.stop();
    },
  };
}

/** An answer as the properties see it, from inject or from the wire. */
export interface Answer {
  status: number;
  contentType: string | undefined;
  body: string;
}

/**
 * Text that must never reach a client unless the client sent it itself (an echo, a path in a 404
 * message): the repository's path, dependency paths, stack frames, TypeScript sources.
 */
const LEAKS: Array<{ what: string; test: (text: string) => boolean }> = [
  { what: 'the repository path', test: (t) => t.includes(process.cwd()) || t.includes('/work/') },
  { what: 'node_modules', test: (t) => t.includes('node_modules') },
  { what: 'a stack frame', test: (t) => /\bat \S+ \(|\n\s+at /.test(t) || / at (?:async )?\S+:\d+:\d+/.test(t) },
  { what: 'a TypeScript source', test: (t) => /\.ts:\d+/.test(t) },
];

/**
 * The properties every answer to client input has: no 5xx (the upstreams are healthy), a body that
 * is empty, JSON, or an SSE stream of JSON messages, and nothing internal in it that the client
 * did not send. `sent` is everything the client sent (path, headers, body), to tell a reflection
 * from a leak.
 */
export function expectCleanAnswer(answer: Answer, sent: string): void {
  const where = `status ${answer.status}, body ${JSON.stringify(answer.body.slice(0, 500))}`;
  expect(answer.status, `a 5xx for client input: ${where}`).toBeLessThan(500);
  expect(answer.status, where).toBeGreaterThanOrEqual(100);
  if (answer.body !== '') {
    if (answer.contentType?.startsWith('text/event-stream')) {
      const data = answer.body.split('\n').filter((l) => l.startsWith('data:'));
      for (const line of data) expect(() => JSON.parse(line.slice(5)), `an SSE event that is not JSON: ${where}`).not.toThrow();
    } else {
      expect(answer.contentType, `a body that is not declared JSON: ${where}`).toMatch(/^application\/json/);
      expect(() => JSON.parse(answer.body), `a body that is not JSON: ${where}`).not.toThrow();
    }
  }
  for (const leak of LEAKS) {
    if (leak.test(answer.body) && !leak.test(sent)) expect.fail(`${leak.what} in an answer: ${where}`);
  }
}

/**
 * No error-level log line (an internal error is logged as one) since the last check. Lines found
 * are taken, so that while fast-check shrinks a failure each input is judged by its own lines.
 */
export function expectNoInternalErrors(gw: FuzzGateway): void {
  expect(gw.errors.splice(0), 'error-level log lines').toEqual([]);
}

/**
 * What the upstreams recorded as malformed since the last call, as "reason: message" lines
 * (taken, like the log lines above).
 */
export function violations(gw: FuzzGateway): string[] {
  const upstreams = gw.upstreams;
  if (statSync(upstreams.violationsFile).size === upstreams.consumed) return [];
  const bytes = readFileSync(upstreams.violationsFile);
  const end = bytes.lastIndexOf(0x0a) + 1;
  const text = bytes.subarray(upstreams.consumed, end).toString('utf8');
  upstreams.consumed = end;
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const v = JSON.parse(line) as { reason: string; text: string };
      return `${v.reason}: ${v.text}`;
    });
}

/**
 * Every message both upstreams received so far was valid JSON-RPC 2.0. A ping through the stdio
 * server first: the child handles its stdin in order, so once the ping is answered every earlier
 * line has been checked.
 */
export async function expectNothingMalformedUpstream(gw: FuzzGateway): Promise<void> {
  const res = await gw.app.app.inject({
    method: 'POST',
    url: '/mcp/local',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    payload: '{"jsonrpc":"2.0","id":"flush","method":"ping"}',
  });
  expect(res.statusCode).toBe(200);
  expect(violations(gw), 'messages the upstreams received that are not valid JSON-RPC 2.0').toEqual([]);
}

/** After the fuzzing: the gateway still serves a plain call on both servers. */
export async function expectStillServing(gw: FuzzGateway): Promise<void> {
  for (const server of ['web', 'local']) {
    const res = await fetch(`${gw.url}/mcp/${server}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { ok: true } } }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text: '{"ok":true}' }] } });
  }
}

/**
 * Prints how many inputs a property ran, how long it took (`npm run fuzz` adds these up) and how
 * they were answered, by status: a run that only ever hit one refusal would have tested little.
 */
export function report(name: PropertyName, runs: number, startedAt: number, statuses: Map<number, number>): void {
  const byStatus = [...statuses.entries()]
    .sort(([a], [b]) => a - b)
    .map(([status, n]) => `${status}: ${n}`)
    .join(', ');
  console.log(`fuzz ${name}: ${runs} inputs in ${((performance.now() - startedAt) / 1000).toFixed(1)} s (${byStatus})`);
}

/** An answer must come within this: the upstreams answer at once, and time out after 10 s. */
export const ANSWER_DEADLINE_MS = 15_000;

/**
 * The promise's value, or a failure naming the input when it has not settled within
 * ANSWER_DEADLINE_MS: a request left without an answer is a bug too, and fast-check can only
 * shrink it if the property fails rather than hangs.
 */
export async function withDeadline<T>(promise: Promise<T>, input: unknown): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ANSWER_DEADLINE_MS} ms to ${JSON.stringify(input).slice(0, 2000)}`)), ANSWER_DEADLINE_MS);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
