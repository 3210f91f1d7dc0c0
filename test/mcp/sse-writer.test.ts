import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { KeepaliveTicker, MAX_BUFFERED_BYTES, SseWriter, type Ticking } from '../../src/mcp/sse-writer.js';

let server: Server | undefined;
afterEach(() => {
  vi.useRealTimers();
  server?.closeAllConnections();
  server?.close();
  server = undefined;
});

describe('SseWriter', () => {
  it('ends the stream of a client that stops reading instead of buffering without end', async () => {
    let writer: SseWriter | undefined;
    server = createServer((_req, res) => {
      writer = new SseWriter(res, {}, { keepalive: false });
    });
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    // A client that sends its request and then never reads a byte.
    const socket = connect(port, '127.0.0.1');
    socket.write('GET / HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n');
    socket.pause();
    while (!writer) await new Promise((r) => setTimeout(r, 10));
    const big = { jsonrpc: '2.0' as const, method: 'notifications/message', params: { data: 'x'.repeat(256 * 1024) } };
    let written = 0;
    while (writer.write(big)) {
      written += 256 * 1024;
      expect(written).toBeLessThan(MAX_BUFFERED_BYTES + 64 * 1024 * 1024);
      await new Promise((r) => setImmediate(r));
    }
    expect(writer.open).toBe(false);
    expect(written).toBeGreaterThan(MAX_BUFFERED_BYTES);
    socket.destroy();
  });
});

/** A ticker member that counts its ticks. */
function member(onTick?: () => void): Ticking & { ticks: number } {
  const m: Ticking & { ticks: number } = {
    tickPrev: undefined,
    tickNext: undefined,
    ticks: 0,
    tick: () => {
      m.ticks++;
      onTick?.();
    },
  };
  return m;
}

describe('KeepaliveTicker (one interval for every stream)', () => {
  it('ticks every member once per period, drops the removed ones, and runs only while it has members', () => {
    vi.useFakeTimers();
    const ticker = new KeepaliveTicker(1_000);
    const [a, b, c] = [member(), member(), member()];
    expect(vi.getTimerCount()).toBe(0);
    ticker.add(a);
    ticker.add(b);
    ticker.add(c);
    ticker.add(b); // twice is once
    expect(ticker.size).toBe(3);
    expect(vi.getTimerCount()).toBe(1);
    vi.advanceTimersByTime(1_000);
    expect([a.ticks, b.ticks, c.ticks]).toEqual([1, 1, 1]);

    // Removed from the middle, the head and the tail: the others go on.
    ticker.remove(b);
    ticker.remove(b); // twice is once
    vi.advanceTimersByTime(1_000);
    expect([a.ticks, b.ticks, c.ticks]).toEqual([2, 1, 2]);
    ticker.remove(c);
    vi.advanceTimersByTime(1_000);
    expect([a.ticks, c.ticks]).toEqual([3, 2]);
    ticker.remove(a);
    expect(ticker.size).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(5_000);
    expect(a.ticks).toBe(3);

    // And again from empty.
    ticker.add(b);
    vi.advanceTimersByTime(1_000);
    expect(b.ticks).toBe(2);
    ticker.remove(b);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("lets a member leave during its own tick or another's without breaking the walk", () => {
    vi.useFakeTimers();
    const ticker = new KeepaliveTicker(1_000);
    const last = member();
    const leaving: Ticking & { ticks: number } = member(() => ticker.remove(leaving));
    const first = member();
    // The list is newest first: first, leaving, last.
    ticker.add(last);
    ticker.add(leaving);
    ticker.add(first);
    vi.advanceTimersByTime(1_000);
    expect([first.ticks, leaving.ticks, last.ticks]).toEqual([1, 1, 1]);
    vi.advanceTimersByTime(1_000);
    expect([first.ticks, leaving.ticks, last.ticks]).toEqual([2, 1, 2]);
    expect(ticker.size).toBe(2);
  });
});

describe('SseWriter keep-alives and close', () => {
  /** An SSE stream to a real client; only the intervals are fake, so that 25 s pass at once. */
  async function openStream(keepalive: boolean): Promise<{ writer: SseWriter; received: () => string; close: () => void }> {
    let writer: SseWriter | undefined;
    server?.close(); // one server per stream, so that each stream gets its own writer
    server = createServer((_req, res) => {
      writer = new SseWriter(res, { 'mcp-session-id': 's-1' }, { keepalive });
    });
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const socket = connect(port, '127.0.0.1');
    let text = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
    socket.write('GET / HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n');
    while (!writer || !text.includes('\r\n\r\n')) await new Promise((r) => setTimeout(r, 5));
    return { writer, received: () => text, close: () => socket.destroy() };
  }

  /** Polls (real timers: only the intervals are fake) until `cond` holds; the test's timeout bounds it. */
  const until = async (cond: () => boolean): Promise<void> => {
    while (!cond()) await new Promise((r) => setTimeout(r, 5));
  };
  const keepalives = (stream: { received: () => string }): number => stream.received().split(': keepalive\n\n').length - 1;

  it('sends a keep-alive comment on every idle stream each 25 s, and none once a stream has closed', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const one = await openStream(true);
    const two = await openStream(true);
    expect(one.received()).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(one.received()).toContain('content-type: text/event-stream');
    expect(vi.getTimerCount()).toBe(1); // one interval, whatever the number of streams

    vi.advanceTimersByTime(25_000);
    await until(() => keepalives(one) >= 1 && keepalives(two) >= 1);
    expect(one.received().split(': keepalive\n\n')).toHaveLength(2);
    expect(two.received().split(': keepalive\n\n')).toHaveLength(2);

    const closed: string[] = [];
    one.writer.onClose(() => closed.push('first'));
    one.writer.onClose(() => closed.push('second'));
    one.close();
    await until(() => !one.writer.open);
    expect(one.writer.open).toBe(false);
    expect(closed).toEqual(['first', 'second']);

    vi.advanceTimersByTime(25_000);
    await until(() => keepalives(two) >= 2);
    expect(one.received().split(': keepalive\n\n')).toHaveLength(2);
    expect(two.received().split(': keepalive\n\n')).toHaveLength(3);

    two.writer.end();
    await until(() => vi.getTimerCount() === 0);
    expect(vi.getTimerCount()).toBe(0); // the last stream gone, the interval too
    expect(closed).toEqual(['first', 'second']);
  });

  it('sends no keep-alives on a stream opened without them', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const quiet = await openStream(false);
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(60_000);
    // A barrier for the absence: bytes arrive in order, so a keep-alive written before this message would be here by now.
    quiet.writer.write({ jsonrpc: '2.0', method: 'notifications/message', params: { data: 'barrier' } }, true);
    await until(() => quiet.received().includes('barrier'));
    expect(quiet.received()).not.toContain('keepalive');
    quiet.close();
  });
});
