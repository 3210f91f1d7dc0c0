import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_BUFFERED_BYTES, SseWriter } from '../../src/mcp/sse-writer.js';

let server: Server | undefined;
afterEach(() => server?.close());

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
