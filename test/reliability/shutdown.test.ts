/**
 * Graceful shutdown under load, measured on a real `node dist/main.js serve`: an upstream whose
 * tool takes 1 s, many calls in flight, then SIGTERM.
 *
 * The contract (README "SIGTERM or SIGINT", docs/operations.md):
 * - every request the gateway had received before the signal is answered with its real result,
 *   including one whose body was still arriving when the signal came;
 * - after the signal, a new connection is refused (the listener is closed), and a request on a
 *   connection the gateway still holds gets 503 with a JSON body and `Connection: close`; /ready
 *   is 503 from the signal on;
 * - the audit file has a tool_call line for every answered call, then gateway_stop;
 * - the process exits 0 once the last call is answered, well within shutdown_grace_ms.
 */
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import { describe, expect, it } from 'vitest';
import { generateApiKey, hashApiKey } from '../../src/auth/key-format.js';
import { leftovers, trackProcesses, NODE, q, tempDir, waitFor } from '../helpers/cli.js';
import { secret } from '../helpers/secret-scan.js';
import { writeSlowServer } from './fixtures.js';
import { ready, serveConfig, sleep, toolCall } from './helpers.js';

const IN_FLIGHT = 50;
const LATE = 10;
const GRACE_MS = 6_000;
const CALL_MS = 1_000;

const { running, mark } = trackProcesses();

interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** One keep-alive HTTP/1.1 connection driven by hand: requests can be written in pieces. */
class RawConnection {
  private readonly socket: Socket;
  private buffer = Buffer.alloc(0);
  private waiting: ((answer: RawAnswer) => void) | undefined;
  closed = false;
  readonly opened: Promise<void>;

  constructor(base: string) {
    const { hostname, port } = new URL(base);
    this.socket = connect({ host: hostname, port: Number(port) });
    this.opened = new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('error', reject);
    });
    this.socket.on('error', () => undefined);
    this.socket.on('close', () => (this.closed = true));
    this.socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.parse();
    });
  }

  write(text: string): void {
    this.socket.write(text);
  }

  /** The next complete answer (Content-Length framed), or undefined if the server closes first. */
  next(): Promise<RawAnswer | undefined> {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.socket.once('close', () => resolve(undefined));
      this.parse();
    });
  }

  destroy(): void {
    this.socket.destroy();
  }

  private parse(): void {
    if (!this.waiting) return;
    const end = this.buffer.indexOf('\r\n\r\n');
    if (end === -1) return;
    const head = this.buffer.subarray(0, end).toString('latin1').split('\r\n');
    const headers: Record<string, string> = {};
    for (const line of head.slice(1)) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const length = Number(headers['content-length'] ?? 0);
    if (this.buffer.length < end + 4 + length) return;
    const body = this.buffer.subarray(end + 4, end + 4 + length).toString('utf8');
    this.buffer = this.buffer.subarray(end + 4 + length);
    const resolve = this.waiting;
    this.waiting = undefined;
    resolve({ status: Number(head[0]!.split(' ')[1]), headers, body });
  }
}

function postHead(path: string, host: string, key: string, length: number): string {
  return `POST ${path} HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: ${length}\r\n\r\n`;
}

describe('graceful shutdown under load', () => {
  it(`${IN_FLIGHT} calls of 1 s in flight and one body still arriving, then SIGTERM: all answered for real, later requests refused, audit complete, exit 0`, async () => {
    const m = mark('shutdown');
    const dir = tempDir();
    const { key, prefix } = generateApiKey();
    secret(key, 'API key of the shutdown test');
    const gw = serveConfig(
      `[server]\nshutdown_grace_ms = ${GRACE_MS}\n\n[audit]\nfile = ${q(join(dir, 'audit.log'))}\n\n` +
        `[auth]\n[[auth.api_keys]]\nid = "loader"\nkey_prefix = ${q(prefix)}\nkey_hash = ${q(await hashApiKey(key))}\n\n` +
        `[[upstream.servers]]\nname = "slow"\npath_prefix = "/slow"\ntransport = "stdio"\ncommand = ${q(NODE)}\nargs = [${q(writeSlowServer(dir))}, "${CALL_MS}", ${q(m)}]\n`,
      dir,
    );
    running.push(gw);
    const base = await gw.address();
    const host = new URL(base).host;
    await waitFor(async () => (await ready(base)).status === 200, 15_000, '/ready');
    const auth = { authorization: `Bearer ${key}`, 'content-type': 'application/json', accept: 'application/json' };
    const url = `${base}/mcp/slow`;
    // One connection per call: none of them can be reused for the requests sent after the signal.
    const loadAgent = new Agent({ connections: IN_FLIGHT, pipelining: 0 });

    // 1. The load: every call reaches the upstream before the signal.
    const calls = Array.from({ length: IN_FLIGHT }, (_, i) =>
      undiciFetch(url, { method: 'POST', headers: auth, body: JSON.stringify(toolCall(i + 1, 'slow', { tag: `load-${i}` })), dispatcher: loadAgent }).then(
        async (res) => ({ status: res.status, json: (await res.json()) as any }),
        (err: Error) => ({ status: 0, json: { fetchError: String((err as { cause?: unknown }).cause ?? err) } }),
      ),
    );
    const started = () => gw.logLines().filter((l) => typeof l['msg'] === 'string' && (l['msg'] as string).startsWith('call-started load-')).length;
    await waitFor(() => started() === IN_FLIGHT, 15_000, `${IN_FLIGHT} calls to reach the upstream`);

    // 2. A request whose headers and half its body arrived before the signal; the rest comes later.
    const trickle = new RawConnection(base);
    await trickle.opened;
    const body = JSON.stringify(toolCall(1000, 'slow', { tag: 'trickle' }));
    trickle.write(postHead('/mcp/slow', host, key, Buffer.byteLength(body)) + body.slice(0, 20));
    const trickleAnswer = trickle.next();
    // 2b. Two connections busy with one more call each at the signal, reused once that call is answered.
    const hold = async (tag: string) => {
      const conn = new RawConnection(base);
      await conn.opened;
      const text = JSON.stringify(toolCall(1001, 'slow', { tag }));
      conn.write(postHead('/mcp/slow', host, key, Buffer.byteLength(text)) + text);
      const answer = conn.next();
      await waitFor(() => gw.logLines().some((l) => l['msg'] === `call-started ${tag}`), 5_000, `the ${tag} call to reach the upstream`);
      return { conn, answer };
    };
    const heldA = await hold('held-a');
    const heldB = await hold('held-b');
    // Must stay: the trickled half request (2) shows nowhere until its body completes; 100 ms on loopback.
    await sleep(100);

    // 3. SIGTERM.
    const sentAt = gw.signal('SIGTERM');
    await gw.waitForLog('shutting down', 2_000);

    // 4. After the signal: new connections are refused; /ready too (it is 503 to whoever can still ask).
    const lateAgent = new Agent({ connections: LATE });
    const late = await Promise.all(
      Array.from({ length: LATE }, (_, i) =>
        undiciFetch(url, { method: 'POST', headers: auth, body: JSON.stringify(toolCall(2000 + i, 'slow', { tag: `late-${i}` })), dispatcher: lateAgent }).then(
          (res) => `status ${res.status}`,
          (err: Error) => String((err as { cause?: { code?: string } }).cause?.code ?? err),
        ),
      ),
    );
    const readyAfter = await undiciFetch(`${base}/ready`, { dispatcher: lateAgent }).then(
      (res) => `status ${res.status}`,
      (err: Error) => String((err as { cause?: { code?: string } }).cause?.code ?? err),
    );

    // 4b. The held connections, once their call is answered: /ready on one, a new call on the other.
    const heldAnswers = [await heldA.answer, await heldB.answer];
    heldA.conn.write(`GET /ready HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    const lateBody = JSON.stringify(toolCall(1002, 'slow', { tag: 'held-late' }));
    heldB.conn.write(postHead('/mcp/slow', host, key, Buffer.byteLength(lateBody)) + lateBody);
    const heldReady = await heldA.conn.next();
    const heldLate = await heldB.conn.next();
    await waitFor(() => heldA.conn.closed && heldB.conn.closed, 2_000, 'the held connections to be closed after their 503');
    const show = (a: RawAnswer | undefined) => (a ? `${a.status} (connection: ${a.headers['connection']}) ${a.body}` : 'closed without an answer');
    console.log(
      `connections held across the signal: their calls ${heldAnswers.map((a) => a?.status).join(', ')}; then /ready -> ${show(heldReady)}; a new call -> ${show(heldLate)}; both then closed`,
    );

    // 5. The rest of the trickled body, once every other call has been answered.
    const results = await Promise.all(calls);
    const beforeTrickleEnds = gw.running;
    const trickleCompletedAt = performance.now();
    trickle.write(body.slice(20));
    const trickled = await trickleAnswer;

    const exit = await gw.waitExit(GRACE_MS + 5_000);
    const exitMs = Math.round(exit.at - sentAt);

    const answered = results.filter((r, i) => r.status === 200 && r.json?.result?.content?.[0]?.text === `slow answer load-${i}`).length;
    const audit = readFileSync(join(dir, 'audit.log'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const toolCalls = audit.filter((e) => e['event_type'] === 'tool_call' && e['success'] === true);
    console.log(
      `SIGTERM with ${IN_FLIGHT} calls of ${CALL_MS} ms in flight and one body arriving: ${answered}/${IN_FLIGHT} answered for real, ` +
        `trickled request ${trickled ? `${trickled.status} ${trickled.body.slice(0, 80)}` : 'closed without an answer'}; ` +
        `after the signal: ${LATE} new requests -> ${[...new Set(late)].join(', ')}, /ready -> ${readyAfter}; ` +
        `audit: ${toolCalls.length} tool_call lines, last ${String(audit.at(-1)?.['event_type'])}; exit ${exit.code} after ${exitMs} ms (grace ${GRACE_MS} ms)`,
    );
    await Promise.all([loadAgent.close(), lateAgent.close()]);
    for (const c of [trickle, heldA.conn, heldB.conn]) c.destroy();

    expect(beforeTrickleEnds).toBe(true);
    for (const [i, a] of heldAnswers.entries())
      expect(JSON.parse(a?.body ?? '{}').result?.content?.[0]?.text, JSON.stringify(a)).toBe(`slow answer held-${'ab'[i]}`);
    for (const a of [heldReady, heldLate]) {
      expect(a?.status, JSON.stringify(a)).toBe(503);
      expect(a?.headers['connection']).toBe('close');
      expect(a?.headers['x-content-type-options']).toBe('nosniff');
    }
    // /ready answers for itself; any other request gets the JSON-RPC error every refusal has.
    expect(JSON.parse(heldReady!.body)).toMatchObject({ status: 'not_ready', reason: 'shutting down' });
    expect(JSON.parse(heldLate!.body)).toMatchObject({
      jsonrpc: '2.0',
      id: null,
      error: { code: -32000, message: 'Service Unavailable: the gateway is shutting down' },
    });
    expect(answered, JSON.stringify(results.filter((r) => r.status !== 200).slice(0, 3))).toBe(IN_FLIGHT);
    expect(trickled?.status, JSON.stringify(trickled)).toBe(200);
    expect(JSON.parse(trickled!.body).result.content[0].text).toBe('slow answer trickle');
    expect(late).toEqual(Array.from({ length: LATE }, () => 'ECONNREFUSED'));
    expect(readyAfter).toBe('ECONNREFUSED');
    expect(toolCalls).toHaveLength(IN_FLIGHT + 3); // the load, the trickled call, the two held ones
    expect(audit.at(-1)).toMatchObject({ event_type: 'gateway_stop' });
    expect(exit).toMatchObject({ code: 0, signal: null });
    // It waited for the trickled call, which takes CALL_MS once its body is complete (a timer cannot end early).
    expect(exit.at - trickleCompletedAt).toBeGreaterThan(CALL_MS * 0.9);
    expect(exitMs).toBeLessThan(GRACE_MS);
    expect(await leftovers(m)).toEqual([]);
  }, 60_000);
});
