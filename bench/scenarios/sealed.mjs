/**
 * What sealed sessions cost (issue 19, "Measured"; docs/operations.md "Sessions any replica can
 * serve"):
 *   micro     sealing one session id at initialize, and opening one (what a replica does once
 *             when it takes a session up), in µs per operation, in this process.
 *   sessions  tools/call in a session, closed loop, on the instant HTTP upstream: a gateway
 *             without session_keys (the baseline) against one with them. The session is opened
 *             once (initialize) and its id sent with every request, as a client does; a sealed id
 *             is a longer header, found in the same map.
 */
import { performance } from 'node:perf_hooks';
import { compareVariants, serverToml, startGateway, startInstantUpstream } from '../lib/harness.mjs';
import { SessionSeal } from '../../dist/replicas/seal.js';

const MICRO_ROUNDS = 5;
const MICRO_OPS = 20_000;
const KEY = `k1:${'s'.repeat(48)}`;

function micro() {
  const seal = new SessionSeal([KEY]);
  const state = {
    route: 'everything',
    owner: 'key:alice',
    version: '2025-06-18',
    scope: '',
    forwardPath: '',
    client: { protocolVersion: '2025-06-18', capabilities: { sampling: {}, elicitation: {} }, clientInfo: { name: 'claude-code', version: '2.1.0' } },
    upstream: { kind: 'http', sid: '4f5c9a4e-0b7e-4d55-9b2e-1f0c8d3a2b61', version: '2025-06-18' },
    expires: Date.now() + 86_400_000,
    nonce: '9b2e1f0c-8d3a-4f5c-9a4e-0b7e4d552b61',
  };
  const sealUs = [];
  const openUs = [];
  let id = '';
  for (let round = 0; round < MICRO_ROUNDS; round++) {
    let start = performance.now();
    for (let i = 0; i < MICRO_OPS; i++) id = seal.seal(state);
    sealUs.push(((performance.now() - start) * 1_000) / MICRO_OPS);
    start = performance.now();
    for (let i = 0; i < MICRO_OPS; i++) if (!seal.open(id, 'everything')) throw new Error('a sealed id did not open');
    openUs.push(((performance.now() - start) * 1_000) / MICRO_OPS);
  }
  const best = (xs) => Number(Math.min(...xs).toFixed(2));
  return { variant: 'micro', seal_us: best(sealUs), open_us: best(openUs), sealed_id_chars: id.length };
}

async function openSession(url) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 0,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'bench', version: '1' } },
    }),
  });
  await res.text();
  const id = res.headers.get('mcp-session-id');
  if (res.status !== 200 || !id) throw new Error(`initialize answered ${res.status}`);
  return { 'mcp-session-id': id, 'mcp-protocol-version': '2025-06-18' };
}

export async function run(settings) {
  const rows = [micro()];
  const upstream = await startInstantUpstream();
  const server = serverToml('instant', upstream.url);
  const [plain, sealed] = await Promise.all([
    startGateway('sessions-plain', `[server]\nmetrics = false\nmax_sessions_per_identity = 1000\n${server}`),
    startGateway('sessions-sealed', `[server]\nmetrics = false\nmax_sessions_per_identity = 1000\nsession_keys = ["${KEY}"]\n${server}`),
  ]);
  const variants = [];
  for (const [name, gateway] of [
    ['unsealed', plain],
    ['sealed', sealed],
  ]) {
    const url = `${gateway.url}/mcp/instant`;
    variants.push({ name, url, pid: gateway.child.pid, headers: await openSession(url) });
  }
  const body = { method: 'tools/call', params: { name: 'tool-0', arguments: { n: 1 } } };
  rows.push(...(await compareVariants('sealed', variants, body, settings)));
  return rows;
}
