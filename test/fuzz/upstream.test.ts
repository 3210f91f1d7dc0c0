/**
 * Fuzzing in the upstream -> gateway direction (issue 16, finding 2 and "no upstream input can
 * crash or wedge the gateway"): `mcp-guard serve` as a real process, in front of a hostile stdio
 * upstream and a hostile streamable HTTP upstream (test/fixtures/hostile-upstream.mjs), while
 * clients call tools through it. Each call makes the upstream write generated messages
 * (upstream-messages.ts) before and after its answer: on stdout, as SSE events of the POST's
 * answer or of the session's GET stream, or as one JSON body.
 *
 * Properties: the gateway process never exits; every call is answered within timeout_ms plus a
 * margin, with a clean answer (JSON, or SSE of JSON; never a 500) whose response carries the
 * call's own id; every event on the clients' GET streams is JSON; no error-level log line but
 * the one for a line over the size limit (an internal error is logged at error level). At the
 * end the gateway still serves a plain call on both servers.
 *
 * FUZZ_RUNS is the number of generated messages (default 2,000; `npm run fuzz` runs 100,000).
 * Calls run WORKERS at a time, so fast-check generates them (fc.sample, seeded) rather than
 * fc.assert: a failure names its seed (FUZZ_SEED replays it) and the call's script.
 */
import { fork, type ChildProcess } from 'node:child_process';
import fc from 'fast-check';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliProcess, cleanupTempDirs, ensureBuilt, leftovers, marker, NODE, q, waitFor, writeConfig } from '../helpers/cli.js';
import { freePort } from '../helpers/everything.js';
import { call as callArbitrary, messagesOf, type Call } from './upstream-messages.js';

const HOSTILE = new URL('../fixtures/hostile-upstream.mjs', import.meta.url).pathname;

/** Generated messages in all: FUZZ_RUNS, else a default that keeps `npm test` quick. */
const MESSAGES = positiveInt(process.env['FUZZ_RUNS'], 2_000);
const SEED = process.env['FUZZ_SEED'] === undefined ? Date.now() % 2 ** 31 : Number(process.env['FUZZ_SEED']);
/** Calls in flight at once (each worker has its own sessions and GET streams). */
const WORKERS = 8;
/** The upstreams' timeout_ms: a call the upstream never answers ends after it. */
const TIMEOUT_MS = 2_000;
/** Every call is answered within this: its deadline plus a wide margin for a busy machine. */
const ANSWER_BOUND_MS = TIMEOUT_MS + 15_000;
/** Error-level log lines that are the upstream's fault and expected here. */
const EXPECTED_ERRORS = new Set(['upstream wrote a line over the size limit; dropped']);

function positiveInt(text: string | undefined, fallback: number): number {
  const n = text === undefined ? NaN : Number(text);
  return Number.isSafeInteger(n) && n > 0 ? n : fallback;
}

let gw: CliProcess;
let base: string;
let httpUpstream: ChildProcess;
let agent: Agent;
const mark = marker('fuzz-upstream');
/** What went wrong outside a call's own answer (GET streams, the log). */
const problems: string[] = [];

beforeAll(async () => {
  await ensureBuilt();
  httpUpstream = fork(HOSTILE, ['http', mark], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const port = await new Promise<number>((resolve, reject) => {
    httpUpstream.once('message', (m) => resolve((m as { port: number }).port));
    httpUpstream.once('exit', (code) => reject(new Error(`hostile upstream exited with ${code}`)));
  });
  const config = `
[server]
max_request_size = 16777216
max_sessions = 100000

[[upstream.servers]]
name = "stdio"
path_prefix = "/stdio"
transport = "stdio"
command = ${q(NODE)}
args = [${q(HOSTILE)}, "stdio", ${q(mark)}]
timeout_ms = ${TIMEOUT_MS}
circuit_failure_threshold = 0

[[upstream.servers]]
name = "http"
path_prefix = "/http"
transport = "http"
url = ${q(`http://127.0.0.1:${port}/mcp`)}
timeout_ms = ${TIMEOUT_MS}
circuit_failure_threshold = 0
`;
  // Warnings and errors only (a line per request would be most of the log): readiness from /health.
  const gatewayPort = await freePort();
  gw = new CliProcess(['serve', '-c', writeConfig(config), '--host', '127.0.0.1', '--port', String(gatewayPort)], { env: { MCP_GUARD_LOG_LEVEL: 'warn' } });
  base = `http://127.0.0.1:${gatewayPort}`;
  await waitFor(async () => (await fetch(`${base}/health`).catch(() => undefined))?.ok === true || !gw.running, 30_000, 'the gateway to listen');
  agent = new Agent({ connections: WORKERS * 4, keepAliveTimeout: 10_000 });
}, 180_000);

afterAll(async () => {
  // The processes first (by pid): nothing below may keep them alive if it fails or hangs.
  if (gw?.running) {
    gw.signal('SIGTERM');
    await gw.waitExit(10_000).catch(() => undefined);
  }
  httpUpstream?.kill('SIGKILL');
  await leftovers(mark, 2_000);
  await Promise.all(streams.splice(0).map((s) => s.close()));
  await agent?.destroy();
  cleanupTempDirs();
}, 30_000);

const CAPABILITIES = { sampling: {}, elicitation: {}, roots: { listChanged: true } };

/** The data of each event in an SSE text, and the text after the last complete event. */
function sseEvents(text: string): { data: string[]; rest: string } {
  const data: string[] = [];
  const blocks = text.replace(/\r\n?/g, '\n').split('\n\n');
  const rest = blocks.pop() ?? '';
  for (const block of blocks) {
    const lines = block.split('\n').filter((l) => l.startsWith('data:'));
    if (lines.length > 0) data.push(lines.map((l) => l.slice(l.startsWith('data: ') ? 6 : 5)).join('\n'));
  }
  return { data, rest };
}

/** A client's GET stream on one session: every event must be JSON; server requests are answered. */
class GetStream {
  private readonly controller = new AbortController();
  private closed = false;
  events = 0;
  /** Times the gateway cut the stream. */
  cut = 0;

  constructor(
    private readonly server: string,
    private readonly session: string,
  ) {
    void this.run();
  }

  private async run(): Promise<void> {
    while (!this.closed) {
      try {
        const res = await request(`${base}/mcp/${this.server}`, {
          dispatcher: agent,
          method: 'GET',
          headers: { accept: 'text/event-stream', 'mcp-session-id': this.session },
          signal: this.controller.signal,
        });
        if (res.statusCode !== 200) {
          problems.push(`GET stream on ${this.server} answered ${res.statusCode}: ${(await res.body.text()).slice(0, 300)}`);
          return;
        }
        // Chunks are split into events only when an event has ended in them: an event of megabytes
        // comes in many chunks, and splitting the whole of it at each one would stall this process.
        const decoder = new TextDecoder();
        let pieces: string[] = [];
        let tail = '';
        for await (const chunk of res.body) {
          const text = decoder.decode(chunk as Buffer, { stream: true });
          pieces.push(text);
          const ended = (tail + text.slice(0, 1)).endsWith('\n\n') || text.includes('\n\n');
          tail = (tail + text).slice(-1);
          if (!ended) continue;
          const { data, rest } = sseEvents(pieces.join(''));
          pieces = [rest];
          for (const d of data) this.onEvent(d);
        }
      } catch {
        if (this.closed) return;
        // The gateway ends a stream its client does not read fast enough (MAX_BUFFERED_BYTES).
        this.cut++;
      }
      // Ended or cut: a client reconnects (refused, it is a problem above).
    }
  }

  private onEvent(data: string): void {
    this.events++;
    let message: unknown;
    try {
      message = JSON.parse(data);
    } catch {
      problems.push(`an event on the GET stream of ${this.server} that is not JSON: ${data.slice(0, 300)}`);
      return;
    }
    const m = message as { id?: unknown; method?: unknown };
    if (typeof m.method === 'string' && (typeof m.id === 'string' || typeof m.id === 'number')) {
      // Answered like a client would (the answer goes upstream through the gateway).
      void post(this.server, this.session, { jsonrpc: '2.0', id: m.id, result: {} }, false).catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.controller.abort();
  }
}

const streams: GetStream[] = [];

async function post(server: string, session: string | undefined, body: unknown, sse: boolean): Promise<{ status: number; type: string; text: string }> {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    accept: sse ? 'application/json, text/event-stream' : 'application/json',
  };
  if (session) headers['mcp-session-id'] = session;
  const res = await request(`${base}/mcp/${server}`, { dispatcher: agent, method: 'POST', headers, body: JSON.stringify(body) });
  return { status: res.statusCode, type: String(res.headers['content-type'] ?? ''), text: await res.body.text() };
}

/** A session on `server` with its GET stream open. */
async function openSession(server: string): Promise<string> {
  const init = {
    jsonrpc: '2.0',
    id: 0,
    method: 'initialize',
    params: { protocolVersion: '2025-06-18', capabilities: CAPABILITIES, clientInfo: { name: 'fuzz', version: '1' } },
  };
  const res = await request(`${base}/mcp/${server}`, {
    dispatcher: agent,
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify(init),
  });
  const session = res.headers['mcp-session-id'];
  await res.body.text();
  if (res.statusCode !== 200 || typeof session !== 'string') throw new Error(`initialize on ${server}: ${res.statusCode}`);
  await post(server, session, { jsonrpc: '2.0', method: 'notifications/initialized' }, true);
  streams.push(new GetStream(server, session));
  return session;
}

/** The JSON-RPC messages of an answer: a JSON body or an SSE stream. Throws on anything else. */
function messagesOfAnswer(type: string, text: string): unknown[] {
  if (type.startsWith('text/event-stream')) {
    const { data, rest } = sseEvents(text);
    if (rest.trim() !== '') throw new Error(`an SSE answer that ends in the middle of an event: ${rest.slice(0, 300)}`);
    return data.map((d) => JSON.parse(d) as unknown);
  }
  if (!type.startsWith('application/json')) throw new Error(`an answer that is neither JSON nor SSE: ${type}`);
  const value = JSON.parse(text) as unknown;
  return Array.isArray(value) ? value : [value];
}

/**
 * How long this process could not run (its timers late by more than 50 ms), in all and at most: a
 * machine shared with other work stops every process for a while now and then, and a call is not
 * late for the time the test itself was not running.
 */
function watchStalls(): { total: number; longest: number; stop(): void } {
  const period = 100;
  const stalls = { total: 0, longest: 0, stop: () => clearInterval(timer) };
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    const late = now - last - period;
    if (late > 50) stalls.total += late;
    stalls.longest = Math.max(stalls.longest, late);
    last = now;
  }, period);
  return stalls;
}

/**
 * The answer, or a failure when it has not come within `boundMs` of this process's running time.
 * Before failing it lets pending I/O in: an answer that arrived while this process was stalled
 * would otherwise lose to the timer that fires first.
 */
async function answeredWithin<T>(answer: Promise<T>, boundMs: number, stalls: { total: number }): Promise<T> {
  let settled = false;
  answer.then(
    () => (settled = true),
    () => (settled = true),
  );
  const started = performance.now();
  const stalledBefore = stalls.total;
  for (;;) {
    if (settled) return answer;
    const left = started + boundMs + (stalls.total - stalledBefore) - performance.now();
    if (left <= 0) {
      await new Promise((resolve) => setImmediate(resolve));
      if (settled) return answer;
      throw new Error(`no answer within ${boundMs} ms (and ${Math.round(stalls.total - stalledBefore)} ms this process was stalled)`);
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      answer.then(
        () => undefined,
        () => undefined,
      ),
      new Promise((resolve) => (timer = setTimeout(resolve, left))),
    ]);
    clearTimeout(timer);
  }
}

/** Error-level log lines since the last look (the stderr read so far is skipped). */
let logOffset = 0;
function newErrorLines(): string[] {
  const text = gw.stderr;
  const end = text.lastIndexOf('\n') + 1;
  const lines = text.slice(logOffset, end).split('\n');
  logOffset = Math.max(logOffset, end);
  const errors: string[] = [];
  for (const line of lines) {
    if (!line.startsWith('{')) continue;
    try {
      const entry = JSON.parse(line) as { level?: number; msg?: string };
      if ((entry.level ?? 0) >= 50 && !EXPECTED_ERRORS.has(entry.msg ?? '')) errors.push(line.slice(0, 1_000));
    } catch {
      errors.push(`a log line that is not JSON: ${line.slice(0, 300)}`);
    }
  }
  return errors;
}

/** Counts the log lines with this message (for the report: what the fuzzing reached). */
function logCount(msg: string): number {
  let n = 0;
  for (let at = gw.stderr.indexOf(`"msg":${JSON.stringify(msg)}`); at !== -1; at = gw.stderr.indexOf(`"msg":${JSON.stringify(msg)}`, at + 1)) n++;
  return n;
}

describe('fuzzing from the upstream side: hostile stdio and streamable HTTP upstreams', () => {
  it(
    'generated upstream messages never crash or wedge the gateway: every call answered in time, with its own id',
    async () => {
      const started = performance.now();
      const sessions = await Promise.all(Array.from({ length: WORKERS }, async () => ({ stdio: await openSession('stdio'), http: await openSession('http') })));
      const statuses = new Map<number, number>();
      let messages = 0;
      let calls = 0;
      let chunk = 0;
      let pending: Call[] = [];
      /** The next call to make, generated in seeded chunks until MESSAGES messages are reached. */
      const next = (): Call | undefined => {
        if (messages >= MESSAGES) return undefined;
        if (pending.length === 0) pending = fc.sample(callArbitrary, { numRuns: 200, seed: SEED + chunk++ });
        const c = pending.shift()!;
        messages += messagesOf(c);
        return c;
      };
      const failures: string[] = [];
      const stalls = watchStalls();
      const run = async (worker: number, c: Call): Promise<void> => {
        const n = ++calls;
        const id = n % 2 === 0 ? n : `call-${n}`;
        const params: Record<string, unknown> = { name: 'emit', arguments: { script: JSON.stringify(c.script) } };
        if (c.progress) params['_meta'] = { progressToken: `p-${n}` };
        const body = { jsonrpc: '2.0', id, method: 'tools/call', params };
        const what = () =>
          `${c.server} (session: ${c.session}, sse: ${c.sse}, http: ${c.script.http}) call ${JSON.stringify(body).slice(0, 3_000)} (seed ${SEED})`;
        try {
          const session = c.session ? sessions[worker]![c.server] : undefined;
          const answer = await answeredWithin(post(c.server, session, body, c.sse), ANSWER_BOUND_MS, stalls);
          statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
          if (answer.status === 500 || answer.status < 200 || answer.status > 504) throw new Error(`status ${answer.status}: ${answer.text.slice(0, 500)}`);
          const responses = messagesOfAnswer(answer.type, answer.text).filter((m) => typeof m === 'object' && m !== null && ('result' in m || 'error' in m));
          const own = responses.filter((m) => (m as { id?: unknown }).id === id);
          if (own.length !== 1) throw new Error(`${own.length} responses with the call's id in: ${answer.text.slice(0, 500)}`);
        } catch (error) {
          failures.push(`${(error as Error).message}: ${what()}`);
        }
      };
      await Promise.all(
        Array.from({ length: WORKERS }, async (_, worker) => {
          for (let c = next(); c !== undefined && failures.length === 0 && gw.running; c = next()) {
            await run(worker, c);
            const errors = newErrorLines();
            if (errors.length > 0) failures.push(...errors.map((e) => `error-level log line: ${e}`));
          }
        }),
      );
      stalls.stop();
      expect(gw.running, `the gateway exited:\n${gw.stderr.slice(-5_000)}`).toBe(true);
      expect(failures.slice(0, 5), `seed ${SEED}`).toEqual([]);
      expect(problems.slice(0, 5), `seed ${SEED}`).toEqual([]);
      expect(messages).toBeGreaterThanOrEqual(MESSAGES);

      // Still serving, on both servers, after all of it.
      for (const server of ['stdio', 'http']) {
        const answer = await post(
          server,
          undefined,
          { jsonrpc: '2.0', id: 'last', method: 'tools/call', params: { name: 'echo', arguments: { ok: true } } },
          false,
        );
        expect(answer.status).toBe(200);
        expect(JSON.parse(answer.text)).toEqual({ jsonrpc: '2.0', id: 'last', result: { content: [{ type: 'text', text: '{"ok":true}' }] } });
      }
      expect(gw.running).toBe(true);
      expect(newErrorLines()).toEqual([]);

      const byStatus = [...statuses.entries()]
        .sort(([a], [b]) => a - b)
        .map(([s, n]) => `${s}: ${n}`)
        .join(', ');
      const seen = {
        tooDeep: logCount('upstream sent a message nested too deep; dropped'),
        notJson: logCount('upstream wrote a line that is not JSON; ignored'),
        invalid: logCount('upstream wrote an invalid JSON-RPC message; ignored'),
        oversized: logCount('upstream wrote a line over the size limit; dropped'),
        getEvents: streams.reduce((n, s) => n + s.events, 0),
        getCut: streams.reduce((n, s) => n + s.cut, 0),
        restarts: logCount('upstream child exited'),
      };
      console.log(
        `fuzz upstream: ${messages} messages in ${calls} calls in ${((performance.now() - started) / 1000).toFixed(1)} s, seed ${SEED} (${byStatus}); ` +
          `dropped too deep: ${seen.tooDeep}, not JSON: ${seen.notJson}, invalid JSON-RPC: ${seen.invalid}, over the size limit: ${seen.oversized}, GET stream events: ${seen.getEvents} (streams cut: ${seen.getCut}), child restarts: ${seen.restarts}, longest stall of this process: ${Math.round(stalls.longest)} ms`,
      );
      // The fuzzing reached the limits it is about.
      expect(seen.tooDeep).toBeGreaterThan(0);
    },
    // Grows with the number of messages: a full run (100,000) takes minutes.
    120_000 + MESSAGES * 30,
  );
});
