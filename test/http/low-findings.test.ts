/**
 * Issue 16, finding 8 (the low findings at the HTTP boundary), against a real gateway with a real
 * HTTP upstream: 404s on the gateway's own paths name no server to a caller who has not proved who
 * it is; a path Fastify cannot decode gets the gateway's JSON-RPC error; the audit request_id is
 * the gateway's own id, the client's x-request-id kept apart; a 4 MiB body sent with fetch reads
 * its 413 every time.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { legacyHash } from '../../src/auth/key-format.js';
import { curlPost, q, startGateway, type RunningGateway } from '../helpers/gateway.js';
import { rawHttp } from '../helpers/raw-http.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/recording-upstream.js';

const ALL_KEY = 'finding-eight-key-for-every-server';
const ALPHA_KEY = 'finding-eight-key-for-alpha-only';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TOOLS_LIST = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' });

let dir: string;
let recording: RecordingUpstream;
let gw: RunningGateway;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mcp-guard-low-findings-'));
  recording = await startRecordingUpstream('http');
  gw = await startGateway(`
[server]
max_request_size = 65536

[[upstream.servers]]
name = "alpha"
path_prefix = "/alpha"
url = ${q(recording.url)}

[[upstream.servers]]
name = "beta-secret-name"
path_prefix = "/beta"
url = ${q(recording.url)}

[auth]
protect_routes = true

[[auth.api_keys]]
id = "all"
key_hash = ${q(legacyHash(ALL_KEY))}

[[auth.api_keys]]
id = "alpha-only"
key_hash = ${q(legacyHash(ALPHA_KEY))}
servers = ["alpha"]

[audit]
file = ${q(join(dir, 'audit.log'))}
`);
});

afterAll(async () => {
  await gw?.stop();
  await recording?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

describe('finding 8: 404s name no server to a caller whose identity is not proved', () => {
  it.each([
    ['GET', '/routes/x'],
    ['GET', '/health/x'],
    ['OPTIONS', '/routes'],
    ['POST', '/health'],
    ['GET', '/.well-known/other'],
  ])('%s %s without credentials: no server names', async (method, path) => {
    const res = await fetch(`${gw.url}${path}`, { method });
    const text = await res.text();
    expect(res.status).toBe(404);
    expect(text).not.toContain('alpha');
    expect(text).not.toContain('beta-secret-name');
  });

  it('with a bad key too: no server names', async () => {
    const res = await fetch(`${gw.url}/routes/x`, { headers: bearer('not-a-key-at-all') });
    expect(res.status).toBe(404);
    expect(await res.text()).not.toMatch(/alpha|beta-secret-name/);
  });

  it('an authenticated caller sees only the servers its identity may reach', async () => {
    const unknownAll = await fetch(`${gw.url}/mcp/nope`, {
      method: 'POST',
      headers: { ...bearer(ALL_KEY), 'content-type': 'application/json' },
      body: TOOLS_LIST,
    });
    expect(unknownAll.status).toBe(404);
    expect(((await unknownAll.json()) as { available: string[] }).available).toEqual(['alpha', 'beta-secret-name']);
    const unknownAlpha = await fetch(`${gw.url}/mcp/nope`, {
      method: 'POST',
      headers: { ...bearer(ALPHA_KEY), 'content-type': 'application/json' },
      body: TOOLS_LIST,
    });
    expect(unknownAlpha.status).toBe(404);
    expect(((await unknownAlpha.json()) as { available: string[] }).available).toEqual(['alpha']);
    // /routes itself, behind protect_routes.
    expect((await fetch(`${gw.url}/routes`)).status).toBe(401);
    const routes = (await (await fetch(`${gw.url}/routes`, { headers: bearer(ALPHA_KEY) })).json()) as { routes: Array<{ name: string }> };
    expect(routes.routes.map((r) => r.name)).toEqual(['alpha']);
  });
});

describe('finding 8: a path Fastify cannot decode', () => {
  it.each(['/ev/%u002e', '/alpha/%E0%A4%A', '/mcp/%'])('%s gets the JSON-RPC error body, with the security headers and a request id', async (path) => {
    const res = await rawHttp(gw.url, `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n`, TOOLS_LIST);
    expect(res.status).toBe(400);
    expect(res.json).toEqual({ jsonrpc: '2.0', id: null, error: { code: -32600, message: expect.stringMatching(/^Bad Request: /) } });
    expect(res.body).not.toContain('FST_');
    expect(res.headers['x-content-type-options']).toEqual(['nosniff']);
    expect(res.headers['x-request-id']).toEqual([expect.stringMatching(UUID)]);
  });
});

describe("finding 8: the audit request_id is the gateway's own", () => {
  it("a client's x-request-id is kept apart as client_request_id; an unsafe one is left out", async () => {
    const sent = [
      { header: 'victim-request-1', kept: 'victim-request-1' },
      { header: 'x'.repeat(129), kept: undefined },
      { header: 'a b<script>', kept: undefined },
    ];
    const ids: string[] = [];
    for (const { header } of sent) {
      const res = await curlPost(`${gw.url}/alpha`, TOOLS_LIST, { ...bearer('wrong-key'), 'x-request-id': header });
      expect(res.status).toBe(401);
      const id = res.headers.get('x-request-id') ?? '';
      expect(id).toMatch(UUID);
      ids.push(id);
    }
    await gw.app.recorder.audit.flush();
    const lines = readFileSync(join(dir, 'audit.log'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    sent.forEach(({ kept }, i) => {
      const line = lines.find((l) => l['event_type'] === 'auth_failure' && l['request_id'] === ids[i]);
      expect(line, `audit line of request ${i}`).toBeDefined();
      if (kept === undefined) expect(line).not.toHaveProperty('client_request_id');
      else expect(line?.['client_request_id']).toBe(kept);
    });
    // No line takes the client's value as its request_id.
    expect(lines.some((l) => l['request_id'] === 'victim-request-1')).toBe(false);
  });
});

describe('finding 8: a 4 MiB body sent with fetch', () => {
  /**
   * The client runs in a process of its own, as a real one does: in the test's own process the
   * client and the gateway take turns on one event loop, and the race never shows.
   */
  const CLIENT = `
    const [url, auth] = process.argv.slice(1);
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'x', arguments: { blob: 'a'.repeat(4 * 1024 * 1024) } } });
    const headers = { authorization: auth, 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
    const outcomes = [];
    for (let i = 0; i < 20; i++) {
      try {
        const res = await fetch(url, { method: 'POST', headers, body });
        const json = await res.json();
        outcomes.push(res.status + ' ' + json.error?.code);
      } catch (err) {
        outcomes.push(err.message + ': ' + (err.cause?.code ?? err.cause));
      }
    }
    // The connection, kept for the next request, is still in step.
    const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'ping' }) });
    outcomes.push('then ' + res.status + ' ' + JSON.stringify((await res.json()).result));
    console.log(JSON.stringify(outcomes));
  `;

  it('reads its 413 every time (20 times): the connection is not closed under the client while it is still sending', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', CLIENT, `${gw.url}/alpha`, `Bearer ${ALL_KEY}`], {
      timeout: 110_000,
    });
    expect(JSON.parse(stdout)).toEqual([...Array(20).fill('413 -32600'), 'then 200 {}']);
  }, 120_000);
});
