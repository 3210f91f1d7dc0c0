/**
 * An attacker in control of an upstream answers with one message that never ends, written as fast
 * as the gateway takes it: a 2026-07-28 server's JSON-lines body that never writes its newline, a
 * streamable HTTP (2025-06-18) server's SSE event that never gets its blank line (one endless
 * line, or endless `data:` lines), a stdio child whose stdout line never ends. The gateway must
 * answer its client with a JSON-RPC error that says what happened (no stack, no hang: the size
 * bound, well before timeout_ms), hang up on the upstream, keep its memory bounded, and go on
 * serving.
 *
 * A real gateway, in process (src/, as startGateway builds it), so that its memory is this
 * process's: the peak of its resident set (VmHWM, reset before each attack) while the attack's
 * answer is awaited. The upstreams are test/fixtures/endless-upstream.mjs, in processes of their
 * own (their buffers are not counted). Plain HTTP clients downstream. Traffic to 127.0.0.1 only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_EVENT_LINES, readEvents } from '../../src/upstreams/http/sse-stream.js';
import { MAX_RUNAWAY_LINE_BYTES } from '../../src/upstreams/stdio/line-reader.js';
import { jsonOrUndefined, NODE, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';

const FIXTURE = new URL('../fixtures/endless-upstream.mjs', import.meta.url).pathname;
const MiB = 1024 * 1024;
/** The bound on one body, one SSE event, one stdout line (body.ts, sse-stream.ts, line-reader.ts). */
const LIMIT = 32 * MiB;
/** Far beyond what reading LIMIT bytes takes, even on a busy machine: the size bound must come first. */
const HTTP_TIMEOUT_MS = 30_000;
/** As HTTP_TIMEOUT_MS: reading MAX_RUNAWAY_LINE_BYTES from a pipe takes a second or so (ten on a busy machine). */
const STDIO_TIMEOUT_MS = 45_000;
/** How much the gateway's resident set may grow while it reads an endless message. */
const MEMORY_BUDGET_MiB = 200;

let fixture: ChildProcess;
let fixtureErr = '';
let gw: RunningGateway;
/** Every process this file started, ended by pid in afterAll if still there. */
const pids = new Set<number>();

beforeAll(async () => {
  fixture = spawn(NODE, [FIXTURE, 'http'], { stdio: ['ignore', 'pipe', 'pipe'] });
  pids.add(fixture.pid!);
  fixture.stderr!.on('data', (c: Buffer) => (fixtureErr += c.toString('utf8')));
  let out = '';
  fixture.stdout!.on('data', (c: Buffer) => (out += c.toString('utf8')));
  await waitFor(() => /listening \d+/.test(out), 10_000, 'the endless fixture to listen');
  const base = `http://127.0.0.1:${/listening (\d+)/.exec(out)![1]}`;
  const http = (name: string, path: string) =>
    `[[upstream.servers]]\nname = ${q(name)}\npath_prefix = "/${name}"\ntransport = "http"\nurl = ${q(`${base}${path}`)}\ntimeout_ms = ${HTTP_TIMEOUT_MS}\n\n`;
  const toml =
    http('modern', '/modern') +
    http('legacy', '/legacy') +
    `[[upstream.servers]]\nname = "stdio"\npath_prefix = "/stdio"\ncommand = ${q(NODE)}\nargs = [${q(FIXTURE)}, "stdio"]\n` +
    `timeout_ms = ${STDIO_TIMEOUT_MS}\nrestart_backoff_ms = 100\n`;
  gw = await startGateway(toml);
});

afterAll(async () => {
  await gw?.stop();
  // The gateway ends its children; whatever is left of ours (the fixture, a stdio child) ends here.
  for (const pid of pids) if (alive(pid) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(FIXTURE)) process.kill(pid, 'SIGKILL');
});

interface Answer {
  status: number;
  json: any;
  text: string;
  ms: number;
}

let nextId = 1;
/** A tools/call as a plain HTTP client posts it (JSON only: every error keeps its HTTP status). */
async function call(server: string, tool: string, args: Record<string, unknown> = {}): Promise<Answer> {
  const started = Date.now();
  const res = await fetch(`${gw.url}/mcp/${server}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: nextId++, method: 'tools/call', params: { name: tool, arguments: args } }),
  });
  const text = await res.text();
  return { status: res.status, json: jsonOrUndefined(text), text, ms: Date.now() - started };
}

const residentMiB = (field: 'VmRSS' | 'VmHWM') => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'))?.[1]) / 1024;

/**
 * Runs `attack` and reports how far this process's resident set rose above where it was before:
 * the kernel's high-water mark, reset first (/proc/self/clear_refs, 5), so that the peak while the
 * answer was awaited counts, not what is left after it.
 */
async function growthDuring(attack: () => Promise<Answer>): Promise<{ value: Answer; growthMiB: number }> {
  writeFileSync('/proc/self/clear_refs', '5');
  const before = residentMiB('VmRSS');
  const value = await attack();
  const growthMiB = Math.round(residentMiB('VmHWM') - before);
  console.log(`answered ${value.status} in ${value.ms} ms; resident set ${Math.round(before)} MiB before, peak +${growthMiB} MiB`);
  return { value, growthMiB };
}

/** A failure as a client depends on it: its status, its JSON-RPC error, nothing of the gateway's insides. */
function expectError(answer: Answer, status: number, code: number): string {
  expect(answer.status, answer.text).toBe(status);
  expect(answer.json).toMatchObject({ jsonrpc: '2.0', error: { code } });
  expect(answer.text).not.toMatch(/\n\s+at |\.[jt]s:\d+|node_modules|Error:/);
  return answer.json.error.message;
}

/** The recovery check: a good call to the same server, through the same gateway. Returns its text. */
async function expectEcho(server: string, expected: string): Promise<string> {
  const answer = await call(server, 'echo', { text: expected.replace(/^echo: /, '') });
  expect(answer.status, answer.text).toBe(200);
  const text: string = answer.json.result.content[0].text;
  expect(text.startsWith(expected)).toBe(true);
  return text;
}

const pidOf = (text: string) => Number(/pid (\d+)/.exec(text)![1]);

/** Whether a process is there, and not a zombie. */
function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** The fixture's report that the gateway hung up on an endless answer, and how much it had written. */
async function closedAfter(tool: string): Promise<number> {
  const pattern = new RegExp(`event: closed ${tool} (\\d+)`);
  await waitFor(() => pattern.test(fixtureErr), 10_000, `the gateway to close ${tool}`);
  const bytes = Number(pattern.exec(fixtureErr)![1]);
  fixtureErr = fixtureErr.replace(pattern, '');
  return bytes;
}

describe('a 2026-07-28 HTTP upstream answering with a JSON line that never ends', () => {
  it.each([
    ['endless_line', 'one line, no newline'],
    ['endless_after_lines', 'after a line that is not JSON on its own (the body is then read whole)'],
  ])('%s (%s): 502 at the size bound, memory bounded, the stream closed, the next call served', async (tool) => {
    const { value: answer, growthMiB } = await growthDuring(() => call('modern', tool));
    expect(expectError(answer, 502, -32000)).toBe(`Upstream 'modern' answered with a body over the limit of ${LIMIT} bytes`);
    expect(answer.ms).toBeLessThan(HTTP_TIMEOUT_MS);
    expect(growthMiB).toBeLessThan(MEMORY_BUDGET_MiB);
    const written = await closedAfter(tool);
    // It had written the bound (and what buffers between the two hold), not much more.
    expect(written).toBeGreaterThanOrEqual(LIMIT);
    expect(written).toBeLessThan(2 * LIMIT);
    await expectEcho('modern', 'echo: after');
  });
});

describe('a streamable HTTP (2025-06-18) upstream answering with an SSE event that never ends', () => {
  const tooLarge = `Buffered data exceeded max buffer size of ${LIMIT} characters`;
  const tooManyLines = `Event exceeded ${MAX_EVENT_LINES} lines`;
  it.each([
    ['endless_event', 'one data line that never gets its newline', tooLarge, LIMIT],
    ['endless_data_lines', 'data lines of 1 KiB for ever, never the blank line', tooLarge, LIMIT],
    ['endless_tiny_lines', 'empty data lines for ever, never the blank line', tooManyLines, 6 * MAX_EVENT_LINES],
  ])('%s (%s): 502 at the bound, memory bounded, the stream closed, the next call served', async (tool, _what, reason, least) => {
    const { value: answer, growthMiB } = await growthDuring(() => call('legacy', tool));
    expect(expectError(answer, 502, -32000)).toBe(`Upstream 'legacy' sent an event over the size limit (${reason})`);
    expect(answer.ms).toBeLessThan(HTTP_TIMEOUT_MS);
    expect(growthMiB).toBeLessThan(MEMORY_BUDGET_MiB);
    const written = await closedAfter(tool);
    expect(written).toBeGreaterThanOrEqual(least);
    expect(written).toBeLessThan(least + LIMIT);
    await expectEcho('legacy', 'echo: after');
  });
});

describe("the bound on an event's lines (sse-stream.ts)", () => {
  /** `texts` as a body arrives: in pieces of 64 KiB (what a socket read gives), cut anywhere. */
  async function* chunks(...texts: string[]): AsyncGenerator<string> {
    for (const text of texts) for (let at = 0; at < text.length; at += 64 * 1024) yield text.slice(at, at + 64 * 1024);
  }
  /**
   * An event of `lines` data lines and its blank line, in two texts cut between the CR and the LF
   * of a CRLF. Its lines end with LF, but for a few around the cut that end with CRLF or CR.
   */
  function event(lines: number): string[] {
    const middle = lines / 2;
    const end = (i: number) => (Math.abs(i - middle) > 3 ? '\n' : i % 2 === 0 ? '\r\n' : '\r');
    const text = Array.from({ length: lines }, (_, i) => `data: ${i % 10}${end(i)}`).join('') + '\n';
    const cut = text.indexOf('\r\n') + 1;
    return [text.slice(0, cut), text.slice(cut)];
  }

  it('takes an event of as many lines as the bound, split anywhere, and refuses one line more (a split CRLF is one line end)', async () => {
    const events: number[] = [];
    expect(await readEvents(chunks(...event(MAX_EVENT_LINES)), (e) => void events.push(e.data.split('\n').length))).toBe('ended');
    expect(events).toEqual([MAX_EVENT_LINES]);
    await expect(readEvents(chunks(...event(MAX_EVENT_LINES + 1)), () => undefined)).rejects.toMatchObject({
      type: 'max-buffer-size-exceeded',
      message: `Event exceeded ${MAX_EVENT_LINES} lines`,
    });
  });

  it('counts the lines of one event, not of the stream: many short events and keep-alive comments pass', async () => {
    const many = ': ping\n\ndata: 1\n\n'.repeat(MAX_EVENT_LINES / 4);
    let events = 0;
    expect(await readEvents(chunks(many, many, many, many, many), () => void events++)).toBe('ended');
    expect(events).toBe((5 * MAX_EVENT_LINES) / 4);
  });
});

describe('a stdio child writing a stdout line that never ends', () => {
  it(
    '502 once the line is far past its bound, memory bounded, the child ended and a new one serving',
    async () => {
      const before = pidOf(await expectEcho('stdio', 'echo: before'));
      pids.add(before);
      const { value: answer, growthMiB } = await growthDuring(() => call('stdio', 'endless_line'));
      expect(expectError(answer, 502, -32000)).toMatch(/^Upstream 'stdio' answered with a message of (\d+) bytes, over the limit of 33554432 bytes$/);
      const dropped = Number(/of (\d+) bytes/.exec(answer.json.error.message)![1]);
      expect(dropped).toBeGreaterThan(MAX_RUNAWAY_LINE_BYTES);
      expect(answer.ms).toBeLessThan(STDIO_TIMEOUT_MS);
      expect(growthMiB).toBeLessThan(MEMORY_BUDGET_MiB);
      const logged = gw.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'upstream wrote a line over the size limit; dropped');
      expect(logged).toMatchObject({ bytes: dropped, limitBytes: LIMIT });
      // The gateway closed its end of the pipe: the child's next write failed, and it exited...
      await waitFor(() => gw.logs.some((l) => l.includes('event: epipe')), 10_000, 'the child to see its stdout closed');
      await waitFor(() => !alive(before), 10_000, 'the child to exit');
      // ...and the supervisor started a new one, which serves (calls before it is ready are refused, 503).
      await waitFor(async () => (await call('stdio', 'echo', { text: 'after' })).status === 200, 15_000, 'a new child to serve');
      const after = pidOf(await expectEcho('stdio', 'echo: again'));
      pids.add(after);
      expect(after).not.toBe(before);
      // The other servers of the gateway serve as before.
      await expectEcho('modern', 'echo: still');
      await expectEcho('legacy', 'echo: still');
    },
    2 * STDIO_TIMEOUT_MS,
  );
});
