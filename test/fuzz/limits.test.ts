/**
 * The limits that keep bad input at a 4xx, each on both of its sides, over real HTTP to a real
 * gateway with a real upstream (strict-upstream.mjs, which records what it receives): body size
 * (413), header size (431), batch length and JSON depth (400 before anything is forwarded), id and
 * method sizes, messages that are not forwardable as written; and the listener's defences
 * against slow and greedy clients: headers and request timeouts (408, connection closed, other
 * clients still served), the keep-alive timeout, and the connection cap.
 */
import { connect, type Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { startUpstreams, type Upstreams } from './harness.js';

let upstreams: Upstreams;
let gw: RunningGateway;
let capped: RunningGateway;

const KEEP_ALIVE_TIMEOUT_MS = 1000;

beforeAll(async () => {
  upstreams = await startUpstreams({ record: true });
  const server = `
[[upstream.servers]]
name = "web"
path_prefix = "/web"
url = ${JSON.stringify(upstreams.httpUrl)}
strip_prefix = true
`;
  gw = await startGateway(`
[server]
max_request_size = 65536
max_batch_length = 3
max_json_depth = 5
headers_timeout_ms = 1000
request_timeout_ms = 2000
keep_alive_timeout_ms = ${KEEP_ALIVE_TIMEOUT_MS}
${server}`);
  capped = await startGateway(`[server]\nmax_connections = 2\n${server}`);
});

afterAll(async () => {
  await gw?.stop();
  await capped?.stop();
  upstreams?.stop();
});

const endpoint = () => `${gw.url}/mcp/web`;

async function post(body: string, url = endpoint()): Promise<{ status: number; json: any }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  const text = await res.text();
  return { status: res.status, json: text === '' ? undefined : JSON.parse(text) };
}

/** The messages the upstream received while `run` ran. */
async function receivedDuring(run: () => Promise<void>): Promise<Array<Record<string, unknown>>> {
  const before = readFileSync(upstreams.receivedFile, 'utf8').length;
  await run();
  return readFileSync(upstreams.receivedFile, 'utf8')
    .slice(before)
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

const ping = (id: number | string) => ({ jsonrpc: '2.0', id, method: 'ping' });

function invalidRequest(message: string, id: number | string | null = null) {
  return { jsonrpc: '2.0', id, error: { code: -32600, message } };
}

describe('batch length: [server] max_batch_length', () => {
  it('a batch of max_batch_length messages is served', async () => {
    const res = await post(JSON.stringify([ping(1), ping(2), ping(3)]));
    expect(res.status).toBe(200);
    expect(res.json).toEqual([1, 2, 3].map((id) => ({ jsonrpc: '2.0', id, result: {} })));
  });

  it('one more is refused whole with a JSON-RPC Invalid Request, and none of it is forwarded', async () => {
    let res!: { status: number; json: any };
    const received = await receivedDuring(async () => {
      res = await post(JSON.stringify([ping(1), ping(2), ping(3), { jsonrpc: '2.0', method: 'notifications/progress', params: {} }]));
    });
    expect(res.status).toBe(400);
    expect(res.json).toEqual(invalidRequest('Invalid Request: a batch may hold at most 3 messages'));
    expect(received).toEqual([]);
  });
});

describe('nesting depth: [server] max_json_depth', () => {
  /** A tools/call whose body nests `depth` levels (the body and params are 2 of them). */
  const call = (depth: number) =>
    `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":${'{"a":'.repeat(depth - 2)}1${'}'.repeat(depth - 2)}}}`;

  it('a body exactly max_json_depth deep is served', async () => {
    const res = await post(call(5));
    expect(res.status).toBe(200);
    expect(res.json.result.content[0].text).toBe('{"a":{"a":{"a":1}}}');
  });

  it('one level deeper is refused before it is parsed, and not forwarded', async () => {
    let res!: { status: number; json: any };
    const received = await receivedDuring(async () => {
      res = await post(call(6));
    });
    expect(res.status).toBe(400);
    // Refused before anything read the body: not even its id is known.
    expect(res.json).toEqual(invalidRequest('Invalid Request: the JSON is nested deeper than 5 levels'));
    expect(received).toEqual([]);
  });

  it('brackets inside strings (escaped quotes included) do not count', async () => {
    const res = await post(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { s: '[[[[{{{{\\"[[[[' } } }));
    expect(res.status).toBe(200);
  });

  it('found by the fuzzing: 20,000 levels in a tool call are a 400, not an internal error, and the next request is served', async () => {
    // Before the limit, JSON.parse took it and JSON.stringify overflowed the stack forwarding it:
    // 502 "Upstream 'web': Maximum call stack size exceeded" (500 through a stdio server).
    const res = await post(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":${'['.repeat(20_000)}${']'.repeat(20_000)}}}`);
    expect(res.status).toBe(400);
    expect(res.json).toEqual(invalidRequest('Invalid Request: the JSON is nested deeper than 5 levels'));
    expect((await post(JSON.stringify(ping(9)))).status).toBe(200);
  });
});

describe('ids and method names', () => {
  it('an id of up to 256 characters is echoed; a longer one is refused without echoing it', async () => {
    expect((await post(JSON.stringify(ping('i'.repeat(256))))).json).toEqual({ jsonrpc: '2.0', id: 'i'.repeat(256), result: {} });
    const res = await post(JSON.stringify(ping('i'.repeat(257))));
    expect(res.status).toBe(400);
    expect(res.json).toEqual(invalidRequest('Invalid Request: id must be a string of at most 256 characters or a number from -(2^53 - 1) to 2^53 - 1'));
  });

  it('a numeric id beyond 2^53 is refused: JSON.parse would round it and the answer would carry another id', async () => {
    const res = await post('{"jsonrpc":"2.0","id":12345678901234567890,"method":"ping"}');
    expect(res.status).toBe(400);
    expect(res.json.id).toBeNull();
    expect((await post(JSON.stringify(ping(2 ** 53 - 1)))).json.id).toBe(2 ** 53 - 1);
  });

  it('a method name of 256 characters is forwarded; 257 is refused', async () => {
    expect((await post(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'm'.repeat(256) }))).status).toBe(200);
    const res = await post(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'm'.repeat(257) }));
    expect(res.status).toBe(400);
    expect(res.json).toEqual(invalidRequest('Invalid Request: method must be at most 256 characters', 1));
  });
});

describe('what reaches the upstream', () => {
  it('found by the fuzzing: members JSON-RPC does not define are not forwarded; the message is', async () => {
    // Notifications used to be relayed exactly as the client wrote them, extra members, a
    // `result` or an `error` included: invalid JSON-RPC for an upstream (the SDK's schemas are strict).
    const received = await receivedDuring(async () => {
      const res = await post(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/roots/list_changed', params: { x: 1 }, extra: true, __proto__x: 1 }));
      expect(res.status).toBe(202);
    });
    expect(received).toEqual([{ jsonrpc: '2.0', method: 'notifications/roots/list_changed', params: { x: 1 } }]);
  });

  it.each([
    ['a method and a result', '{"jsonrpc":"2.0","method":"notifications/x","result":{}}', 'a message has either a method or a result or error, not both'],
    [
      'a method and an error',
      '{"jsonrpc":"2.0","method":"notifications/x","error":{"code":1,"message":"m"}}',
      'a message has either a method or a result or error, not both',
    ],
    ['a result and an error', '{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}', 'a response has either a result or an error, not both'],
    ['an error code that is not an integer', '{"jsonrpc":"2.0","id":1,"error":{"code":1.5,"message":"m"}}', 'error.code must be an integer'],
  ])('a message with %s is refused, not guessed at', async (_what, body, reason) => {
    const received = await receivedDuring(async () => {
      const res = await post(body);
      expect(res.status).toBe(400);
      expect(res.json.error).toEqual({ code: -32600, message: `Invalid Request: ${reason}` });
    });
    expect(received).toEqual([]);
  });
});

/** A raw connection: what the server wrote, and whether (and when) it closed. */
interface Raw {
  socket: Socket;
  received(): string;
  closed: Promise<void>;
}

function open(base: string): Promise<Raw> {
  const { port } = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1');
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
    socket.on('error', () => undefined);
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.once('connect', () => resolve({ socket, received: () => text, closed }));
    socket.once('error', reject);
  });
}

/** Resolves when the connection closes; fails the test if it is still open after `ms`. */
async function closedWithin(raw: Raw, ms: number, what: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: the connection was still open after ${ms} ms`)), ms);
  });
  try {
    await Promise.race([raw.closed, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The JSON body of the first response on a raw connection. */
function rawResponse(text: string): { status: number; body: any } {
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
  const body = text.slice(text.indexOf('\r\n\r\n') + 4);
  return { status, body: body === '' ? undefined : JSON.parse(body) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('body and header size', () => {
  it('a body over max_request_size: 413 with a JSON-RPC error', async () => {
    const res = await post(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { m: 'x'.repeat(70_000) } } }));
    expect(res.status).toBe(413);
    expect(res.json).toEqual(invalidRequest('Payload Too Large: the body exceeds 65536 bytes'));
  });

  it("headers over Node's 16 KB: 431 with a JSON-RPC error naming the limit, then the connection closes", async () => {
    const raw = await open(gw.url);
    raw.socket.write(`POST /mcp/web HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'b'.repeat(20_000)}\r\nContent-Length: 2\r\n\r\n{}`);
    await closedWithin(raw, 10_000, '431');
    expect(rawResponse(raw.received())).toEqual({
      status: 431,
      body: invalidRequest('Request Header Fields Too Large: the request line and headers exceed 16384 bytes'),
    });
    expect(raw.received()).toMatch(/\r\nContent-Type: application\/json\r\n/);
    expect((await post(JSON.stringify(ping(1)))).status).toBe(200);
  });

  it('a prefix route target the upstream could not take: 414 here, never a 502 from the upstream (found by the fuzzing)', async () => {
    const long = `/web/${'a'.repeat(10_000)}`;
    const received = await receivedDuring(async () => {
      const res = await post(JSON.stringify(ping(1)), `${gw.url}${long}`);
      expect(res.status).toBe(414);
      expect(res.json).toEqual(invalidRequest('URI Too Long: the path and query exceed 8192 characters'));
    });
    expect(received).toEqual([]);
    // Just under the bound: forwarded, answered.
    expect((await post(JSON.stringify(ping(2)), `${gw.url}/web/${'a'.repeat(8_000)}`)).status).toBe(200);
  });

  it('bytes that are not HTTP: 400 with a JSON-RPC error', async () => {
    const raw = await open(gw.url);
    raw.socket.write('NOT HTTP AT ALL\r\n\r\n');
    await closedWithin(raw, 10_000, 'malformed request');
    expect(rawResponse(raw.received())).toEqual({ status: 400, body: invalidRequest('Bad Request: malformed HTTP request') });
  });
});

describe('slow clients: headers_timeout_ms, request_timeout_ms', () => {
  it('slowloris: headers sent one byte per second are cut off with a 408, while another client is served', async () => {
    const raw = await open(gw.url);
    const head = `GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ${'s'.repeat(100)}`;
    let sent = 0;
    const drip = setInterval(() => {
      if (!raw.socket.destroyed) raw.socket.write(head[sent++ % head.length]!);
    }, 1000);
    try {
      // The first byte at once (the drip's next comes a second later): the slow request has begun.
      await new Promise<void>((resolve, reject) => raw.socket.write(head[sent++]!, (err) => (err ? reject(err) : resolve())));
      // Another client meanwhile: served as usual.
      const other = await post(JSON.stringify(ping('other')));
      expect(other).toEqual({ status: 200, json: { jsonrpc: '2.0', id: 'other', result: {} } });
      await closedWithin(raw, 15_000, 'slowloris');
    } finally {
      clearInterval(drip);
    }
    expect(rawResponse(raw.received())).toEqual({ status: 408, body: invalidRequest('Request Timeout: the request was not received in time') });
    expect(sent).toBeLessThan(head.length);
  });

  it('a body sent slowly is cut off with a 408 once request_timeout_ms has passed', async () => {
    const raw = await open(gw.url);
    raw.socket.write('POST /mcp/web HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{');
    const drip = setInterval(() => {
      if (!raw.socket.destroyed) raw.socket.write(' ');
    }, 200);
    try {
      await closedWithin(raw, 15_000, 'slow body');
    } finally {
      clearInterval(drip);
    }
    expect(rawResponse(raw.received()).status).toBe(408);
  });

  it('an answer that takes longer than request_timeout_ms is not cut off: only receiving the request is timed', async () => {
    const res = await post(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'slow', arguments: { ms: 3000 } } }));
    expect(res.status).toBe(200);
    expect(res.json.id).toBe(1);
  });
});

describe('keep-alive: keep_alive_timeout_ms', () => {
  it('a connection is reused while requests keep coming, and closed once idle', async () => {
    const raw = await open(gw.url);
    const request = 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';
    raw.socket.write(request);
    await waitFor(() => raw.received().includes('"status":"ok"'), 5_000, 'first answer');
    // Time is the behaviour: a pause well inside keep_alive_timeout_ms leaves the connection open.
    await sleep(KEEP_ALIVE_TIMEOUT_MS * 0.4);
    raw.socket.write(request);
    await waitFor(() => raw.received().split('HTTP/1.1 200').length === 3, 5_000, 'second answer on the same connection');
    await closedWithin(raw, 10_000, 'idle keep-alive connection');
  });
});

describe('connections: max_connections', () => {
  it('connections over the cap are closed at once; once one ends, a new one is served', async () => {
    const request = 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';
    const first = await open(capped.url);
    const second = await open(capped.url);
    for (const raw of [first, second]) {
      raw.socket.write(request);
      await waitFor(() => raw.received().includes('"status":"ok"'), 5_000, 'answer within the cap');
    }
    const third = await open(capped.url);
    third.socket.write(request);
    await closedWithin(third, 10_000, 'connection over the cap');
    expect(third.received()).toBe('');
    first.socket.destroy();
    await waitFor(
      () => new Promise<boolean>((resolve) => capped.app.app.server.getConnections((_err, n) => resolve(n < 2))),
      5_000,
      'the server to count the closed connection',
    );
    const fourth = await open(capped.url);
    fourth.socket.write(request);
    await waitFor(() => fourth.received().includes('"status":"ok"'), 5_000, 'answer after a slot freed up');
    second.socket.destroy();
    fourth.socket.destroy();
  });
});
