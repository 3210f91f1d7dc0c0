/**
 * Supervision of stdio children: restarts with backoff, the crash-loop guard, spawn failures, and
 * calls that never hang on a dead child.
 */
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { stdioServer } from '../helpers/servers.js';
import { parseConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/observability/logger.js';
import { UpstreamError } from '../../src/upstreams/errors.js';
import { StdioUpstream } from '../../src/upstreams/stdio/upstream.js';
import { EVERYTHING, NODE, q, waitFor } from '../helpers/gateway.js';

const logs: string[] = [];
const logger = createLogger({
  level: 'debug',
  destination: new Writable({
    write(chunk: Buffer, _e, done) {
      logs.push(chunk.toString());
      done();
    },
  }),
});

const opened: StdioUpstream[] = [];
function upstream(fields: string): StdioUpstream {
  const config = parseConfig(`[[upstream.servers]]\nname = "child"\npath_prefix = "/child"\ntransport = "stdio"\n${fields}`, { env: {} });
  const u = new StdioUpstream(stdioServer(config.servers[0]), { logger });
  opened.push(u);
  return u;
}

const handlers = { onMessage: () => undefined, onClose: () => undefined };

afterEach(async () => {
  await Promise.all(opened.splice(0).map((u) => u.close()));
});

describe('stdio supervision', () => {
  it('restarts a child that exits at once with backoff, then reports a crash loop and fails fast', async () => {
    const u = upstream(`command = ${q(NODE)}\nargs = ["-e", "process.exit(3)"]\nrestart_backoff_ms = 20\nrestart_backoff_max_ms = 200\nmax_restarts = 2`);
    await u.start();
    expect(u.status().healthy).toBe(false);
    await waitFor(() => u.status().state === 'crash_loop', 5_000, 'crash_loop');
    const status = u.status();
    expect(status.restarts).toBe(2);
    expect(status.lastError).toMatch(/exited \(code 3\)/);
    const started = Date.now();
    const err = await u.openSession({ owner: 'test', forwardPath: '', handlers }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).kind).toBe('unavailable');
    // At once, not after waiting for a start: the wait it skips is timeout_ms (60 s by default).
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('reports a command that cannot be spawned, by name', async () => {
    const u = upstream(`command = "/nonexistent/mcp-server"\nrestart_backoff_ms = 1000`);
    await u.start();
    await waitFor(() => u.status().lastError !== undefined, 5_000, 'the spawn error');
    expect(u.status().lastError).toBe("Failed to start 'child': spawn /nonexistent/mcp-server ENOENT");
    expect(u.status().healthy).toBe(false);
  });

  it('fails a child that never answers initialize within startup_timeout_ms', async () => {
    const u = upstream(`command = ${q(NODE)}\nargs = ["-e", "setInterval(() => {}, 1000)"]\nstartup_timeout_ms = 300\nrestart_backoff_ms = 5000`);
    const started = Date.now();
    await u.start();
    // The deadline is the behaviour: startup_timeout_ms (300), with ten times it for a busy machine.
    expect(Date.now() - started).toBeLessThan(300 * 10);
    expect(u.status().healthy).toBe(false);
    // Still the reason after the gateway has ended the silent child.
    await waitFor(() => u.status().state === 'backoff', 3_000, 'backoff');
    expect(u.status().lastError).toMatch(/did not answer within 300 ms/);
  });

  it('a request waits for a restart in progress instead of failing', async () => {
    const u = upstream(`command = ${q(NODE)}\nargs = [${q(EVERYTHING)}, "stdio"]\nrestart_backoff_ms = 200`);
    await u.start();
    const session = await u.openSession({ owner: 'test', forwardPath: '', handlers });
    process.kill(u.status().pid!, 'SIGKILL');
    await waitFor(() => u.status().state !== 'ready', 5_000, 'the child to be seen dead');
    const response = await session.request(
      { jsonrpc: '2.0', id: 'after', method: 'tools/call', params: { name: 'echo', arguments: { message: 'back' } } },
      { onMessage: () => undefined },
    );
    expect(response).toMatchObject({ id: 'after', result: { content: [{ text: 'Echo: back' }] } });
    expect(u.status().restarts).toBe(1);
  });

  it('requests sent in one turn of the event loop reach the child in one write, each answered', async () => {
    const u = upstream(`command = ${q(NODE)}\nargs = [${q(EVERYTHING)}, "stdio"]`);
    await u.start();
    const session = await u.openSession({ owner: 'test', forwardPath: '', handlers });
    // The writes the child's stdin hands to the pipe: each is a write(2), and a wake-up of the child.
    const stdin = (u as unknown as { supervisor: { child: { stdin: Record<'_write' | '_writev', (...args: unknown[]) => unknown> } } }).supervisor.child.stdin;
    let writes = 0;
    for (const method of ['_write', '_writev'] as const) {
      const original = stdin[method];
      stdin[method] = function (this: unknown, ...args: unknown[]) {
        writes++;
        return original.apply(this, args);
      };
    }
    const call = (n: number) =>
      session.request(
        { jsonrpc: '2.0', id: `c${n}`, method: 'tools/call', params: { name: 'echo', arguments: { message: `m${n}` } } },
        { onMessage: () => undefined },
      );
    const answers = await Promise.all(Array.from({ length: 20 }, (_, n) => call(n)));
    expect(writes).toBe(1);
    expect(answers.map((a) => a.id)).toEqual(Array.from({ length: 20 }, (_, n) => `c${n}`));
    expect(answers.map((a) => (a as unknown as { result: { content: [{ text: string }] } }).result.content[0].text)).toEqual(
      Array.from({ length: 20 }, (_, n) => `Echo: m${n}`),
    );
    // The next turn's request is written too: the stream was uncorked.
    expect(await call(20)).toMatchObject({ id: 'c20', result: { content: [{ text: 'Echo: m20' }] } });
    expect(writes).toBe(2);
  });

  it('skips stdout lines that are not JSON-RPC and keeps serving', async () => {
    const script = `
      const rl = require('readline').createInterface({ input: process.stdin });
      process.stdout.write('this is not json\\n{"not":"jsonrpc"}\\n');
      rl.on('line', (line) => {
        const m = JSON.parse(line);
        if (m.method === 'initialize') process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id: m.id, result: { protocolVersion: '2025-06-18', capabilities: { tools: {} }, serverInfo: { name: 'noisy', version: '1' } } }) + '\\n');
        else if (m.id !== undefined) process.stdout.write('garbage\\n' + JSON.stringify({ jsonrpc: '2.0', id: m.id, result: { tools: [] } }) + '\\n');
      });`;
    const u = upstream(`command = ${q(NODE)}\nargs = ["-e", ${q(script)}]`);
    await u.start();
    const session = await u.openSession({ owner: 'test', forwardPath: '', handlers });
    const response = await session.request({ jsonrpc: '2.0', id: 5, method: 'tools/list' }, { onMessage: () => undefined });
    expect(response).toEqual({ jsonrpc: '2.0', id: 5, result: { tools: [] } });
    expect(logs.some((l) => l.includes('not JSON'))).toBe(true);
  });

  it("keeps a client's roots away from a shared child unless relay_roots is set", async () => {
    const toolsOf = async (fields: string): Promise<string[]> => {
      const u = upstream(`command = ${q(NODE)}\nargs = [${q(EVERYTHING)}, "stdio"]\n${fields}`);
      await u.start();
      const session = await u.openSession({ owner: 'test', forwardPath: '', handlers });
      // server-everything registers get-roots-list only for a client that declared roots, synchronously
      // on notifications/initialized: that came before this tools/list on the same ordered pipe.
      const response = await session.request({ jsonrpc: '2.0', id: 1, method: 'tools/list' }, { onMessage: () => undefined });
      return (response as unknown as { result: { tools: Array<{ name: string }> } }).result.tools.map((t) => t.name);
    };
    expect(await toolsOf('')).not.toContain('get-roots-list');
    expect(await toolsOf('relay_roots = true')).toContain('get-roots-list');
  });
});

describe('a hostile child sending server requests nobody answers', () => {
  const HOSTILE = new URL('../fixtures/hostile-upstream.mjs', import.meta.url).pathname;

  it("keeps at most 1,000 waiting on clients and refuses the rest at once: the gateway's memory stays bounded", async () => {
    const u = upstream(`command = ${q(NODE)}\nargs = [${q(HOSTILE)}, "stdio"]`);
    const delivered: unknown[] = [];
    // A client that declared sampling and never answers.
    const session = await u.openSession({
      owner: 'test',
      forwardPath: '',
      initialize: {
        jsonrpc: '2.0',
        id: 0,
        method: 'initialize',
        params: { protocolVersion: '2025-06-18', capabilities: { sampling: {} }, clientInfo: { name: 't', version: '1' } },
      },
      handlers,
    });
    const items = Array.from({ length: 1_500 }, (_, i) => ({
      b64: Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: `s${i}`, method: 'sampling/createMessage', params: { messages: [], maxTokens: 1 } })).toString(
        'base64',
      ),
    }));
    const response = await session.request(
      { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'emit', arguments: { script: JSON.stringify({ items, answer: 'result' }) } } },
      { onMessage: (m) => delivered.push(m) },
    );
    expect('result' in response).toBe(true);
    expect(delivered).toHaveLength(1_000);
    await waitFor(() => logs.some((l) => l.includes('too many server requests waiting on clients')), 5_000, 'the refusals to be logged');
  });
});
