/**
 * The upstream's GET stream is resumed, not dropped: when a client's GET stream closes the gateway
 * closes the upstream's too, and the next one it opens carries the Last-Event-ID of the last event
 * the server sent, so a server that keeps its events (the specification's resumability) sends what
 * it sent meanwhile.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/recording-upstream.js';

let upstream: RecordingUpstream;
let gateway: RunningGateway;

beforeAll(async () => {
  upstream = await startRecordingUpstream('http', { eventStream: true });
  gateway = await startGateway(`[[upstream.servers]]\nname = "rec"\npath_prefix = "/rec"\nurl = ${q(upstream.url)}\n`);
});

afterAll(async () => {
  await gateway?.stop();
  await upstream?.stop();
});

/** Opens a session on the recording upstream; its id. */
async function initialize(url: string): Promise<string> {
  const init = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } },
    }),
  });
  await init.text();
  return init.headers.get('mcp-session-id')!;
}

/**
 * Opens the session's GET stream (409 until the gateway has seen the previous one close: awaited)
 * and reads it until `until` holds or it ends; then closes it. What it read.
 */
async function readStream(url: string, session: string, headers: Record<string, string>, until: (text: string) => boolean): Promise<string> {
  const controller = new AbortController();
  let res: Response | undefined;
  await waitFor(
    async () => {
      res = await fetch(url, { headers: { accept: 'text/event-stream', 'mcp-session-id': session, ...headers }, signal: controller.signal });
      if (res.status !== 409) return true;
      await res.body?.cancel();
      return false;
    },
    10_000,
    'the previous stream to be seen closed',
  );
  expect(res!.status).toBe(200);
  const reader = res!.body!.getReader();
  let text = '';
  while (!until(text)) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  controller.abort();
  return text;
}

/** Reads the GET stream until its first event (the upstream's) has arrived, then closes it. */
async function listen(url: string, session: string): Promise<void> {
  const text = await readStream(url, session, {}, (t) => t.includes('list_changed'));
  if (!text.includes('list_changed')) throw new Error(`the stream ended early: ${text}`);
}

it("resumes the upstream's GET stream from its last event id when the client's stream comes back", async () => {
  const url = `${gateway.url}/mcp/rec`;
  const session = await initialize(url);
  await listen(url, session);
  const gets = () => upstream.requests.filter((r) => r.method === 'GET');
  await listen(url, session);
  expect(gets().length).toBeGreaterThanOrEqual(2);
  expect(gets()[0]!.headers['last-event-id']).toBeUndefined();
  expect(gets()[1]!.headers['last-event-id']).toBe('ev-1');
});

it('replays the GET-stream events a client missed when it comes back with Last-Event-ID; a broken POST stream is answered at once', async () => {
  const url = `${gateway.url}/mcp/rec`;
  const session = await initialize(url);
  const read = (headers: Record<string, string>, until: (text: string) => boolean) => readStream(url, session, headers, until);
  const first = await read({}, (t) => t.includes('list_changed'));
  expect(first).toMatch(/^id: g\.1$/m);
  // Back with the id before the last one it saw: g.1 again, then what comes next.
  const again = await read({ 'last-event-id': 'g.0' }, (t) => (t.match(/list_changed/g) ?? []).length >= 2);
  expect(again).toMatch(/^id: g\.1$/m);
  expect(again).toMatch(/^id: g\.2$/m);
  // Asking after a POST stream (request id "abc"): an error for that request at once, the stream ended.
  const prefix = `p.${Buffer.from(JSON.stringify('abc')).toString('base64url')}.`;
  const post = await read({ 'last-event-id': `${prefix}3` }, () => false);
  expect(post).toContain(`id: ${prefix}end`);
  expect(post).toMatch(/"id":"abc".*interrupted/);
  // And after that error: nothing more (405), so that the client stops asking.
  const ended = await fetch(url, { headers: { accept: 'text/event-stream', 'mcp-session-id': session, 'last-event-id': `${prefix}end` } });
  expect(ended.status).toBe(405);
  await ended.text();
  // Garbage ids are no one's: the stream starts afresh.
  for (const junk of ['p.!!.1', 'g.x', 'x'.repeat(600), 'p..1']) {
    const fresh = await read({ 'last-event-id': junk }, (t) => t.includes('list_changed'));
    expect(fresh).toContain('list_changed');
  }
});
