/**
 * A 2026-07-28 client through a real gateway to a 2026-07-28 server (the fixture on the official
 * v2 server package, test/fixtures/modern-server.mjs, modern-only), beyond what
 * modern-upstream.test.ts covers:
 *
 * - `Mcp-Param-*` headers reach the server as the client sent them: the fixture's `region` tool
 *   (`--region-tool`) declares `x-mcp-header: Region`, so the server itself compares the header
 *   with the body;
 * - the gateway's cache of cacheable results (docs/eras.md, "Caching"), over stdio and HTTP: a
 *   `public` tools/list is fetched once for everyone, a `private` one once per identity, and a
 *   list cut to a restricted identity's tools goes out `private` without changing what the
 *   others get.
 *
 * What reached the server is read from the fixture's own `event: recv <method>` lines (its stderr
 * over HTTP; the gateway's log of its child's stderr over stdio).
 */
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateApiKey, hashApiKey } from '../../src/auth/key-format.js';
import { NODE, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { secretHeaders } from '../helpers/secret-scan.js';

const FIXTURE = new URL('../fixtures/modern-server.mjs', import.meta.url).pathname;
const MODERN = '2026-07-28';
const TTL_MS = 60_000;
const ENVELOPE = {
  'io.modelcontextprotocol/protocolVersion': MODERN,
  'io.modelcontextprotocol/clientCapabilities': {},
  'io.modelcontextprotocol/clientInfo': { name: 'eras-matrix', version: '1.0.0' },
};
const ALL_TOOLS = ['add', 'confirm', 'echo', 'notify', 'sample', 'slow'];

/** The fixture over HTTP on port 0 with `args`; resolves with its URL once it listens. Its event lines are collected. */
async function startHttpFixture(args: string[]): Promise<{ url: string; child: ChildProcess; events: string[] }> {
  const child = spawn(NODE, [FIXTURE, 'http', '0', '--modern-only', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const events: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => {
    if (line.startsWith('event: ')) events.push(line.slice('event: '.length));
  });
  const port = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the modern fixture did not listen within 10 s')), 10_000);
    createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      const found = /^listening (\d+)$/.exec(line)?.[1];
      if (found) resolve(found);
      else reject(new Error(`the modern fixture said ${line}`));
    });
    child.once('exit', (code) => reject(new Error(`the modern fixture exited with ${code}`)));
  });
  return { url: `http://127.0.0.1:${port}/mcp`, child, events };
}

/** Ends a fixture by its pid and waits for it to go. */
async function stopFixture(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await gone;
}

/** A raw 2026-07-28 POST: the envelope in `_meta`, the mirrored headers, and its answer. */
async function modernPost(
  url: string,
  method: string,
  params: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: any }> {
  secretHeaders(headers, 'authorization sent with modernPost');
  const all: Record<string, string> = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'mcp-protocol-version': MODERN,
    'mcp-method': method,
  };
  if (typeof params['name'] === 'string') all['mcp-name'] = params['name'];
  const res = await fetch(url, {
    method: 'POST',
    headers: { ...all, ...headers },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params: { ...params, _meta: ENVELOPE } }),
  });
  const text = await res.text();
  // A modern server may answer a request as an SSE stream of one message.
  const data = text.startsWith('{')
    ? text
    : text
        .split('\n')
        .find((l) => l.startsWith('data: '))
        ?.slice('data: '.length);
  return { status: res.status, json: data === undefined ? undefined : JSON.parse(data) };
}

/** An API key and its `[[auth.api_keys]]` block (with `extra` lines). */
async function apiKey(id: string, extra = ''): Promise<{ key: string; block: string }> {
  const { key, prefix } = generateApiKey();
  return { key, block: `[[auth.api_keys]]\nid = ${q(id)}\nkey_prefix = ${q(prefix)}\nkey_hash = ${q(await hashApiKey(key))}\n${extra}` };
}

const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

describe('Mcp-Param-* headers to a modern server over http', () => {
  let fixture: Awaited<ReturnType<typeof startHttpFixture>>;
  let gw: RunningGateway;
  let url: string;

  beforeAll(async () => {
    fixture = await startHttpFixture(['--region-tool']);
    gw = await startGateway(`[[upstream.servers]]\nname = "modern"\npath_prefix = "/modern"\ntransport = "http"\nurl = ${q(fixture.url)}\n`);
    url = `${gw.url}/mcp/modern`;
  });
  afterAll(async () => {
    await gw?.stop();
    await stopFixture(fixture?.child);
  });

  it('a raw modern tools/call with Mcp-Param-Region: eu reaches the server with the header as it was sent', async () => {
    const res = await modernPost(url, 'tools/call', { name: 'region', arguments: { region: 'eu' } }, { 'Mcp-Param-Region': 'eu' });
    expect(res.status).toBe(200);
    // The server compared the header with the body (x-mcp-header) and accepted it.
    expect(res.json.result.content[0].text).toBe('region: eu');
    await waitFor(() => fixture.events.some((e) => e.includes('"name":"region"')), 5_000, 'the headers line of the region call');
    const seen = fixture.events.filter((e) => e.startsWith('headers ') && e.includes('"name":"region"')).map((e) => JSON.parse(e.slice('headers '.length)));
    expect(seen).toEqual([{ version: MODERN, method: 'tools/call', name: 'region', params: { 'mcp-param-region': 'eu' } }]);
  });

  it("a header that disagrees with the body is the server's to refuse: its 400 and -32020 come back as they are", async () => {
    const res = await modernPost(url, 'tools/call', { name: 'region', arguments: { region: 'eu' } }, { 'Mcp-Param-Region': 'us' });
    expect(res.status).toBe(400);
    expect(res.json.error.code).toBe(-32020);
    expect(res.json.error.message).toContain('Mcp-Param-Region');
  });

  it("the v2 client sends Mcp-Param-Region itself, from the tool's x-mcp-header, and the call goes through", async () => {
    const client = new Client({ name: 'eras-matrix', version: '1.0.0' }, { versionNegotiation: { mode: { pin: MODERN } } });
    await client.connect(new StreamableHTTPClientTransport(new URL(url)));
    try {
      await client.listTools();
      const result = await client.callTool({ name: 'region', arguments: { region: 'ap' } });
      expect(result.content).toEqual([{ type: 'text', text: 'region: ap' }]);
      await waitFor(() => fixture.events.some((e) => e.includes('"mcp-param-region":"ap"')), 5_000, 'Mcp-Param-Region: ap at the server');
    } finally {
      await client.close();
    }
  });
});

describe.each(['http', 'stdio'] as const)("the gateway caches a modern server's tools/list over %s", (transport) => {
  const fixtures: Array<Awaited<ReturnType<typeof startHttpFixture>>> = [];
  let gw: RunningGateway;
  let alice: { key: string; block: string };
  let bob: { key: string; block: string };
  let restricted: { key: string; block: string };
  /** The event lines of the fixture behind `server`. */
  let events: (server: 'public' | 'private') => string[];

  /** How many requests of `method` the server behind `server` received, once every line up to now has arrived. */
  async function received(server: 'public' | 'private', method: string): Promise<number> {
    // A call after the others: once its line is in, every earlier line is too (one ordered stream).
    const calls = () => events(server).filter((e) => e === 'recv tools/call').length;
    const before = calls();
    const res = await modernPost(`${gw.url}/mcp/${server}`, 'tools/call', { name: 'echo', arguments: { text: 'marker' } }, bearer(alice.key));
    expect(res.json.result.content[0].text).toBe('echo: marker');
    await waitFor(() => calls() > before, 5_000, `the marker call at the ${server} server`);
    return events(server).filter((e) => e === `recv ${method}`).length;
  }

  const list = (server: 'public' | 'private', key: string) => modernPost(`${gw.url}/mcp/${server}`, 'tools/list', {}, bearer(key));

  beforeAll(async () => {
    [alice, bob, restricted] = await Promise.all([apiKey('alice'), apiKey('bob'), apiKey('restricted', 'allowed_tools = ["echo", "add"]\n')]);
    const hints = (scope: string) => ['--list-ttl', String(TTL_MS), '--list-scope', scope];
    let servers: string;
    if (transport === 'http') {
      fixtures.push(await startHttpFixture(hints('public')), await startHttpFixture(hints('private')));
      servers = (['public', 'private'] as const)
        .map((name, i) => `[[upstream.servers]]\nname = "${name}"\npath_prefix = "/${name}"\ntransport = "http"\nurl = ${q(fixtures[i]!.url)}\n`)
        .join('\n');
    } else {
      servers = (['public', 'private'] as const)
        .map(
          (name) =>
            `[[upstream.servers]]\nname = "${name}"\npath_prefix = "/${name}"\ncommand = ${q(NODE)}\nargs = ${JSON.stringify([FIXTURE, 'stdio', '--modern-only', ...hints(name)])}\n`,
        )
        .join('\n');
    }
    gw = await startGateway(`${servers}\n${alice.block}\n${bob.block}\n${restricted.block}`);
    events = (server) => {
      if (transport === 'http') return fixtures[server === 'public' ? 0 : 1]!.events;
      return childEventsOf(gw, server);
    };
  });
  afterAll(async () => {
    await gw?.stop();
    await Promise.all(fixtures.map((f) => stopFixture(f.child)));
  });

  it('public: two tools/list reach the server once, the second answer with no more TTL than the first, and another identity shares it', async () => {
    const first = await list('public', alice.key);
    expect(first.status).toBe(200);
    expect(first.json.result).toMatchObject({ resultType: 'complete', cacheScope: 'public' });
    expect(first.json.result.tools.map((t: { name: string }) => t.name).sort()).toEqual(ALL_TOOLS);
    expect(first.json.result.ttlMs).toBeGreaterThan(0);
    expect(first.json.result.ttlMs).toBeLessThanOrEqual(TTL_MS);
    const second = await list('public', alice.key);
    expect(second.json.result.tools).toEqual(first.json.result.tools);
    expect(second.json.result.cacheScope).toBe('public');
    expect(second.json.result.ttlMs).toBeLessThanOrEqual(first.json.result.ttlMs);
    expect(second.json.result.ttlMs).toBeGreaterThan(0);
    expect(await received('public', 'tools/list')).toBe(1);
    // Public means shared: another identity is served the same copy.
    const other = await list('public', bob.key);
    expect(other.json.result.tools).toEqual(first.json.result.tools);
    expect(await received('public', 'tools/list')).toBe(1);
    // One miss, two hits, in /metrics.
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    expect(metrics).toMatch(/^mcp_guard_cache_lookups_total\{server="public",result="miss"\} 1$/m);
    expect(metrics).toMatch(/^mcp_guard_cache_lookups_total\{server="public",result="hit"\} 2$/m);
  });

  it("private: each identity's first tools/list reaches the server, the same identity's second does not", async () => {
    const a1 = await list('private', alice.key);
    expect(a1.json.result).toMatchObject({ resultType: 'complete', cacheScope: 'private' });
    expect(await received('private', 'tools/list')).toBe(1);
    const a2 = await list('private', alice.key);
    expect(a2.json.result.cacheScope).toBe('private');
    expect(a2.json.result.ttlMs).toBeLessThanOrEqual(a1.json.result.ttlMs);
    expect(await received('private', 'tools/list')).toBe(1);
    // Another authorization context never gets alice's copy: bob's first goes to the server.
    const b1 = await list('private', bob.key);
    expect(b1.json.result.cacheScope).toBe('private');
    expect(await received('private', 'tools/list')).toBe(2);
    await list('private', bob.key);
    expect(await received('private', 'tools/list')).toBe(2);
  });

  it('a restricted identity gets the list cut to its tools, marked private; the others still get every tool', async () => {
    const cut = await list('public', restricted.key);
    expect(cut.status).toBe(200);
    expect(cut.json.result.tools.map((t: { name: string }) => t.name).sort()).toEqual(['add', 'echo']);
    expect(cut.json.result.cacheScope).toBe('private');
    const whole = await list('public', bob.key);
    expect(whole.json.result.tools.map((t: { name: string }) => t.name).sort()).toEqual(ALL_TOOLS);
    expect(whole.json.result.cacheScope).toBe('public');
    // One copy for everyone, fetched once: the cut list was never stored in its place.
    expect(await received('public', 'tools/list')).toBe(1);
  });
});

/** The `event: ` lines one stdio child of the gateway wrote to its stderr: the gateway logs each with the child's server name. */
function childEventsOf(gw: RunningGateway, server: string): string[] {
  const events: string[] = [];
  for (const line of gw.logs) {
    try {
      const entry = JSON.parse(line) as { stream?: string; msg?: string; server?: string };
      if (entry.stream === 'stderr' && entry.server === server && entry.msg?.startsWith('event: ')) events.push(entry.msg.slice('event: '.length));
    } catch {
      // not a JSON log line
    }
  }
  return events;
}
