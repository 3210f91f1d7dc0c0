/**
 * What stdio isolation costs (issue 16): the same tools/call, sent by 10 identities (API keys)
 * taking turns request by request, through a stdio server that is
 *   shared     one child for every identity (`isolation = "shared"`: the baseline)
 *   identity   one child per identity (`isolation = "identity"`, the default): 10 children
 * The upstream is the instant stdio server, so the figures are the gateway's (and the pipes'),
 * not the server's. CPU per request is the gateway process's own; the children's CPU is reported
 * apart (all of them together, per request).
 *
 * Memory per child: the RSS of each child the identity gateway runs after the load (the instant
 * server), and of a child of server-everything (a real MCP server on the official SDK) started
 * through an identity-isolated gateway: what one more identity costs on the machine.
 */
import { readdirSync, readFileSync } from 'node:fs';
import autocannon from 'autocannon';
import { compareLoops, cpuMicros, median, ROOT, serverToml, startGateway, tomlString } from '../lib/harness.mjs';

const { generateApiKey, hashApiKey } = await import(`${ROOT}/dist/auth/key-format.js`);

const IDENTITIES = 10;
const EVERYTHING = `${ROOT}/node_modules/@modelcontextprotocol/server-everything/dist/index.js`;

/** The pids of the processes whose parent is `pid`. */
function childrenOf(pid) {
  const found = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

function rssMb(pid) {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) / 1024 : 0;
}

/** `[[auth.api_keys]]` blocks for IDENTITIES callers, and their keys. */
async function identities() {
  const keys = [];
  const blocks = [];
  for (let i = 0; i < IDENTITIES; i++) {
    const k = generateApiKey();
    keys.push(k.key);
    blocks.push(`[[auth.api_keys]]\nid = "caller-${i}"\nkey_prefix = "${k.prefix}"\nkey_hash = ${tomlString(await hashApiKey(k.key))}\n`);
  }
  return { keys, toml: blocks.join('\n') };
}

/** One autocannon run in which consecutive requests go out with the identities' keys in turn. */
async function rotatingLoad(url, keys, connections, durationSecs) {
  let n = 0;
  const body = (id) => JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'tool-0', arguments: { n: 1 } } });
  const result = await autocannon({
    url,
    connections,
    duration: durationSecs,
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    requests: [
      {
        setupRequest: (req) => {
          const i = ++n;
          return { ...req, headers: { ...req.headers, authorization: `Bearer ${keys[i % keys.length]}` }, body: body(i) };
        },
      },
    ],
  });
  const bad = result.non2xx + result.errors + result.timeouts;
  if (bad > 0) throw new Error(`${url}: ${bad} failed requests (non2xx ${result.non2xx}, errors ${result.errors}, timeouts ${result.timeouts})`);
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, requests: result.requests.total };
}

/** CPU of every child of `pid` so far, in µs (children that ended are not counted). */
function childrenCpu(pid) {
  return childrenOf(pid).reduce((sum, child) => sum + (cpuMicros(child) ?? 0), 0);
}

/** RSS of one server-everything child, started through an identity-isolated gateway. */
async function everythingChildMb() {
  const { keys, toml } = await identities();
  const gateway = await startGateway(
    'isolation-everything',
    `${[`[[upstream.servers]]`, 'name = "everything"', 'path_prefix = "/everything"', `command = ${tomlString(process.execPath)}`, `args = [${tomlString(EVERYTHING)}, "stdio"]`, ''].join('\n')}\n[auth]\n${toml}`,
  );
  const readings = [];
  for (const key of keys.slice(0, 3)) {
    const res = await fetch(`${gateway.url}/mcp/everything`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    await res.text();
  }
  // Let the children settle after their start before reading them.
  await new Promise((r) => setTimeout(r, 2_000));
  for (const pid of childrenOf(gateway.child.pid)) readings.push(rssMb(pid));
  gateway.child.kill('SIGTERM');
  return { children: readings.length, mb: readings.length ? median(readings) : undefined };
}

export async function run(settings) {
  const { keys, toml } = await identities();
  const variants = [];
  for (const isolation of ['shared', 'identity']) {
    const gateway = await startGateway(`isolation-${isolation}`, `${serverToml('instant', undefined, [`isolation = "${isolation}"`])}\n[auth]\n${toml}`);
    const url = `${gateway.url}/mcp/instant`;
    const pid = gateway.child.pid;
    variants.push({
      name: isolation,
      pid,
      async first() {
        // Every identity's first request, so that every child is running before the rounds.
        for (const key of keys) {
          const res = await fetch(url, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
            body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'tool-0', arguments: { n: 1 } } }),
          });
          await res.text();
          if (res.status !== 200) throw new Error(`${isolation}: first request answered ${res.status}`);
        }
      },
      run: (secs) => rotatingLoad(url, keys, settings.connections, secs),
    });
  }
  const rows = await compareLoops('isolation', variants, settings);
  for (const [i, row] of rows.entries()) {
    const pid = variants[i].pid;
    // The children's CPU per request, over one more run (the rounds measure the gateway's own).
    const before = childrenCpu(pid);
    const extra = await variants[i].run(settings.durationSecs);
    row.children_cpu_us_per_req = Math.round((childrenCpu(pid) - before) / extra.requests);
    const children = childrenOf(pid);
    row.children = children.length;
    row.child_rss_mb = Number(median(children.map(rssMb)).toFixed(1));
    row.gateway_rss_mb = Number(rssMb(pid).toFixed(1));
  }
  const everything = await everythingChildMb();
  rows.push({
    scenario: 'isolation',
    variant: 'server-everything child',
    children: everything.children,
    child_rss_mb: everything.mb === undefined ? undefined : Number(everything.mb.toFixed(1)),
  });
  return rows;
}
