/**
 * The two eras of MCP (docs/eras.md): what the gateway's cache of 2026-07-28 results gives, and
 * what translating between the eras costs. Every request is a session-less POST with its own
 * JSON-RPC id, and every answer is read and checked (`statelessLoop`, bench/lib/mcp-load.mjs).
 *
 * Caching: `tools/list` by a modern client (the `_meta` envelope, MCP-Protocol-Version and
 * Mcp-Method headers) to the modern fixture (test/fixtures/modern-server.mjs, on the official v2
 * server package, modern-only) over streamable HTTP:
 *   direct            the fixture itself, no proxy (the baseline of the ratios)
 *   gateway-cached    through mcp-guard to a fixture whose lists say `cacheScope: "public",
 *                     ttlMs: 60000`: after the first, the gateway answers from its cache
 *   gateway-uncached  through mcp-guard to a fixture whose lists say `ttlMs: 0`: every request
 *                     goes to the server
 * `upstream_cpu_us_per_req` is the fixture's CPU per request answered, `upstream_calls_per_req`
 * the share of the requests that reached it (counted from its `event: recv tools/list` lines);
 * `vs_uncached` and `cpu_vs_uncached` compare the cached row with the uncached one (the gateway's
 * CPU plus the fixture's, for the CPU).
 *
 * Translation: `tools/call` (an echo of the request's own id) through mcp-guard to the instant
 * HTTP upstream, a legacy server:
 *   legacy   a legacy request without a session (the baseline of the ratio): it goes on the
 *            gateway's own upstream session, as is
 *   modern   the same call as a 2026-07-28 request: the same upstream session, plus the header
 *            checks, the envelope taken off and the result given its modern members
 * Both go the same way upstream, so the ratio is what the translation costs.
 *
 * One gateway (defaults: metrics on, no auth) serves the three servers; each variant runs alone,
 * so its CPU time per request is its own. Everything listens on 127.0.0.1; every process is
 * tracked and ended by pid with the bench.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { compareLoops, ROOT, serverToml, startGateway, startInstantUpstream, track } from '../lib/harness.mjs';
import { statelessLoop } from '../lib/mcp-load.mjs';

const FIXTURE = join(ROOT, 'test/fixtures/modern-server.mjs');
const MODERN = '2026-07-28';
const ENVELOPE = {
  'io.modelcontextprotocol/protocolVersion': MODERN,
  'io.modelcontextprotocol/clientCapabilities': {},
  'io.modelcontextprotocol/clientInfo': { name: 'mcp-guard-bench', version: '1.0.0' },
};
const CACHED_TTL_MS = 60_000;
const FIXTURE_TOOLS = 6;
const READY_DEADLINE_MS = 15_000;

/**
 * The modern fixture over HTTP on a free port with the given tools/list caching hints; resolves
 * with its URL, pid and a running count of the tools/list requests it received.
 */
async function startFixture(ttlMs) {
  const child = track(
    spawn(process.execPath, [FIXTURE, 'http', '0', '--modern-only', '--list-ttl', String(ttlMs), '--list-scope', 'public'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  let lists = 0;
  createInterface({ input: child.stderr }).on('line', (line) => {
    if (line === 'event: recv tools/list') lists++;
    else if (!line.startsWith('event: ')) process.stderr.write(`modern fixture: ${line}\n`);
  });
  const lines = createInterface({ input: child.stdout });
  const timer = setTimeout(() => child.kill('SIGTERM'), READY_DEADLINE_MS);
  const [first] = await Promise.race([once(lines, 'line'), once(child, 'exit').then(() => [undefined])]);
  clearTimeout(timer);
  const port = /^listening (\d+)$/.exec(first ?? '')?.[1];
  if (!port) throw new Error(`modern fixture (ttl ${ttlMs}) did not start: ${first ?? 'it exited'}`);
  return { url: `http://127.0.0.1:${port}/mcp`, pid: child.pid, lists: () => lists };
}

/**
 * A session-less request of `method` with `params(id)`, the modern way (envelope and headers;
 * `name`: the Mcp-Name a tools/call mirrors) or the legacy way.
 */
function request(method, params, modern, name) {
  const headers = modern ? { 'mcp-protocol-version': MODERN, 'mcp-method': method, ...(name ? { 'mcp-name': name } : {}) } : {};
  return {
    headers,
    body: (id) => JSON.stringify({ jsonrpc: '2.0', id, method, params: modern ? { ...params(id), _meta: ENVELOPE } : params(id) }),
  };
}

/** A variant of compareLoops: `first` and `run` drive the same request and check. */
function variant(name, url, pid, req, check, connections, upstream) {
  const loop = (durationSecs, clients) => statelessLoop({ url, connections: clients, durationSecs, headers: req.headers, body: req.body, check });
  return {
    name,
    pid,
    upstream,
    run: (secs) => loop(secs, connections),
    // One request on one connection: a 1 ms window closes before a second one can start.
    first: async () => {
      const { completed } = await loop(0.001, 1);
      if (completed !== 1) throw new Error(`${name}: the first request was not sent alone (${completed})`);
    },
  };
}

/** The check of a modern tools/list answer: complete, every tool, the TTL the server allows. */
function listCheck(expect) {
  return (message) => {
    const r = message.result;
    if (r?.resultType !== 'complete') return 'not a complete result';
    if (r.tools?.length !== FIXTURE_TOOLS) return `${r.tools?.length} tools, not ${FIXTURE_TOOLS}`;
    if (r.cacheScope !== 'public') return `cacheScope ${r.cacheScope}`;
    if (!expect(r.ttlMs)) return `ttlMs ${r.ttlMs}`;
    return undefined;
  };
}

/** The check of a tools/call echo of the instant upstream: its own id back; modern: complete. */
function echoCheck(modern) {
  return (message, id) => {
    if (message.result?.content?.[0]?.text !== `{"n":${id}}`) return 'not the echo of this request';
    if (modern && message.result.resultType !== 'complete') return 'no resultType';
    if (!modern && 'resultType' in message.result) return 'a modern member in a legacy answer';
    return undefined;
  };
}

export async function run(settings) {
  const [cachedFixture, uncachedFixture, instant] = await Promise.all([startFixture(CACHED_TTL_MS), startFixture(0), startInstantUpstream()]);
  const gateway = await startGateway(
    'eras',
    [serverToml('cached', cachedFixture.url), serverToml('uncached', uncachedFixture.url), serverToml('instant', instant.url)].join('\n'),
  );
  const { connections } = settings;

  const list = request('tools/list', () => ({}), true);
  const caching = await compareLoops(
    'eras',
    [
      variant(
        'direct',
        uncachedFixture.url,
        uncachedFixture.pid,
        list,
        listCheck((ttl) => ttl === 0),
        connections,
      ),
      variant(
        'gateway-cached',
        `${gateway.url}/mcp/cached`,
        gateway.child.pid,
        list,
        listCheck((ttl) => ttl > 0 && ttl <= CACHED_TTL_MS),
        connections,
        {
          pid: cachedFixture.pid,
          calls: cachedFixture.lists,
        },
      ),
      variant(
        'gateway-uncached',
        `${gateway.url}/mcp/uncached`,
        gateway.child.pid,
        list,
        listCheck((ttl) => ttl === 0),
        connections,
        {
          pid: uncachedFixture.pid,
          calls: uncachedFixture.lists,
        },
      ),
    ],
    settings,
  );
  const cached = caching.find((row) => row.variant === 'gateway-cached');
  const uncached = caching.find((row) => row.variant === 'gateway-uncached');
  cached.vs_uncached = Number((cached.rps / uncached.rps).toFixed(3));
  const total = (row) => row.cpu_us_per_req + row.upstream_cpu_us_per_req;
  if (!Number.isNaN(total(cached)) && !Number.isNaN(total(uncached))) cached.cpu_vs_uncached = Number((total(uncached) / total(cached)).toFixed(3));
  // The cache did its work: at most one request per TTL reached the cached fixture.
  if (!(cached.upstream_calls_per_req < 0.01)) throw new Error(`gateway-cached: ${cached.upstream_calls_per_req} of the requests reached the server`);
  if (!(uncached.upstream_calls_per_req > 0.9)) throw new Error(`gateway-uncached: only ${uncached.upstream_calls_per_req} of the requests reached the server`);

  const echo = (id) => ({ name: 'tool-0', arguments: { n: id } });
  const instantUrl = `${gateway.url}/mcp/instant`;
  const translation = await compareLoops(
    'eras',
    [
      variant('legacy', instantUrl, gateway.child.pid, request('tools/call', echo, false), echoCheck(false), connections),
      variant('modern', instantUrl, gateway.child.pid, request('tools/call', echo, true, 'tool-0'), echoCheck(true), connections),
    ],
    settings,
  );
  const grouped = (group) => (row) => ({ scenario: row.scenario, group, ...row });
  return [...caching.map(grouped('tools/list: caching')), ...translation.map(grouped('tools/call: translation'))];
}
