/**
 * Issue 16, finding 7: one identity could take every `max_sessions` slot, and sessions whose
 * handshake never completed stayed for the whole idle timeout. Now each identity has its own
 * quota (`max_sessions_per_identity`: 429 with Retry-After, audited), the gateway's capacity is
 * still 503 with Retry-After, and a half-open session is closed after
 * `session_handshake_timeout_ms`. Real server-everything over stdio, real API keys.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateApiKey, hashApiKey } from '../../src/auth/key-format.js';
import { EVERYTHING, NODE, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';

interface Key {
  key: string;
  block: string;
}

async function apiKey(id: string): Promise<Key> {
  const { key, prefix } = generateApiKey();
  return { key, block: `[[auth.api_keys]]\nid = ${q(id)}\nkey_prefix = ${q(prefix)}\nkey_hash = ${q(await hashApiKey(key))}\n` };
}

const everything = `
[[upstream.servers]]
name = "everything"
path_prefix = "/everything"
command = ${q(NODE)}
args = [${q(EVERYTHING)}, "stdio"]
isolation = "shared"
`;

const INITIALIZE = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'quota', version: '1' } },
};

async function post(gw: RunningGateway, key: Key, body: unknown, session?: string): Promise<{ status: number; headers: Headers; json: any }> {
  const res = await fetch(`${gw.url}/mcp/everything`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json',
      authorization: `Bearer ${key.key}`,
      ...(session ? { 'mcp-session-id': session } : {}),
    },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? JSON.parse(text) : undefined };
}

/** initialize, and (unless `halfOpen`) notifications/initialized: the session id. */
async function open(gw: RunningGateway, key: Key, halfOpen = false): Promise<string> {
  const res = await post(gw, key, INITIALIZE);
  expect(res.status, JSON.stringify(res.json)).toBe(200);
  const session = res.headers.get('mcp-session-id')!;
  if (!halfOpen) expect((await post(gw, key, { jsonrpc: '2.0', method: 'notifications/initialized' }, session)).status).toBe(202);
  return session;
}

describe('finding 7: one identity can take every max_sessions slot', () => {
  let dir: string;
  let gw: RunningGateway;
  let a: Key;
  let b: Key;
  let c: Key;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mcp-guard-quota-'));
    [a, b, c] = await Promise.all([apiKey('tenant-a'), apiKey('tenant-b'), apiKey('tenant-c')]);
    gw = await startGateway(`
[server]
max_sessions = 4
max_sessions_per_identity = 2

[audit]
file = ${q(join(dir, 'audit.log'))}
${everything}
${a.block}
${b.block}
${c.block}
`);
  }, 60_000);

  afterAll(async () => {
    await gw?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('an identity at its quota gets 429 with Retry-After (audited); another identity still opens sessions; the gateway full is 503', async () => {
    const first = await open(gw, a);
    await open(gw, a);
    const refused = await post(gw, a, { ...INITIALIZE, id: 'third' });
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(refused.json).toEqual({
      jsonrpc: '2.0',
      id: 'third',
      error: { code: -32012, message: 'Too many sessions for this identity: end one (DELETE) or try again later' },
    });
    // A concurrent burst cannot slip past the quota while upstream sessions open.
    const burst = await Promise.all(Array.from({ length: 5 }, (_, i) => post(gw, a, { ...INITIALIZE, id: i })));
    expect(burst.map((r) => r.status)).toEqual([429, 429, 429, 429, 429]);

    // Someone else is not affected.
    const other = await open(gw, b);
    expect((await post(gw, b, { jsonrpc: '2.0', id: 2, method: 'tools/list' }, other)).json.result.tools.length).toBeGreaterThan(0);

    // The gateway's own capacity is still the last word: 4 sessions open, a third identity gets 503.
    await open(gw, b);
    const full = await post(gw, c, INITIALIZE);
    expect(full.status).toBe(503);
    expect(Number(full.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);

    // Ending a session gives its slot back to its identity.
    expect((await fetch(`${gw.url}/mcp/everything`, { method: 'DELETE', headers: { authorization: `Bearer ${a.key}`, 'mcp-session-id': first } })).status).toBe(
      200,
    );
    await open(gw, a);

    await gw.app.recorder.audit.flush();
    const lines = readFileSync(join(dir, 'audit.log'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    const refusals = lines.filter((l) => l.event_type === 'rate_limited' && l.method === 'initialize');
    expect(refusals.filter((l) => l.identity_id === 'tenant-a' && l.reason === 'session quota')).toHaveLength(6);
    expect(refusals.filter((l) => l.identity_id === 'tenant-c' && l.reason === 'max_sessions')).toHaveLength(1);
    expect(refusals.every((l) => l.server === 'everything' && l.success === false)).toBe(true);
  }, 60_000);
});

describe('finding 7: sessions whose handshake never completes', () => {
  const HANDSHAKE_MS = 400;
  let gw: RunningGateway;
  let a: Key;
  let b: Key;

  beforeAll(async () => {
    [a, b] = await Promise.all([apiKey('half-open-client'), apiKey('other-client')]);
    gw = await startGateway(`
[server]
max_sessions_per_identity = 1
session_handshake_timeout_ms = ${HANDSHAKE_MS}
${everything}
${a.block}
${b.block}
`);
  }, 60_000);

  afterAll(async () => {
    await gw?.stop();
  });

  it('a session whose client never sends initialized is closed after session_handshake_timeout_ms, and gives back its slot', async () => {
    const halfOpen = await open(gw, a, true);
    expect(gw.app.gateway.sessions.get(halfOpen)).toBeDefined();
    // It holds the identity's one slot, but only for a short while, and says so.
    const refused = await post(gw, a, INITIALIZE);
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBe(Math.ceil(HANDSHAKE_MS / 1000));

    // Watched from the inside: a request on the session would complete its handshake.
    await waitFor(() => gw.app.gateway.sessions.get(halfOpen) === undefined, 10_000, 'the half-open session to be closed');
    expect(gw.logs.some((line) => line.includes(halfOpen) && line.includes('"reason":"half-open"'))).toBe(true);
    expect((await post(gw, a, { jsonrpc: '2.0', id: 2, method: 'tools/list' }, halfOpen)).status).toBe(404);

    // The slot is free again, and a session that completes its handshake stays: when a half-open
    // session opened after it is closed, it has been through the same sweeps.
    const complete = await open(gw, a);
    const later = await open(gw, b, true);
    await waitFor(() => gw.app.gateway.sessions.get(later) === undefined, 10_000, 'the later half-open session to be closed');
    expect(gw.app.gateway.sessions.get(complete)).toBeDefined();
    expect((await post(gw, a, { jsonrpc: '2.0', id: 3, method: 'tools/list' }, complete)).json.result.tools.length).toBeGreaterThan(0);
  }, 60_000);
});
