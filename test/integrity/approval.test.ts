/**
 * Calls that need a person's approval (issue 21, `require_approval`, docs/tool-integrity.md), with
 * the official SDK client answering the gateway's elicitation, a server that records every call
 * it executes (test/fixtures/rug-pull-server.mjs), and raw 2026-07-28 requests:
 *
 *   - accepted: the call reaches the server; the question names the tool, the server and the
 *     arguments, a credential among them redacted; declined or cancelled: an error, and nothing
 *     reaches the server; a client that did not declare elicitation, or has no session: refused,
 *     saying why; nobody answering within the server's timeout_ms: refused;
 *   - require_approval on a server, on an API key (another key is not asked) and on [auth.jwt];
 *   - a 2026-07-28 client gets an input_required round, and its retry with the answer is
 *     forwarded; a retry of another call with that requestState is refused;
 *   - attacker: another session answering the question (its id seen) approves nothing;
 *   - a session that ends while its question is open: the call is refused at once;
 *   - every decision audited (`tool_approval`) and counted.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitRequestSchema, type ElicitResult } from '@modelcontextprotocol/sdk/types.js';
import { existsSync, readFileSync } from 'node:fs';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupTempDirs, tempDir } from '../helpers/cli.js';
import { curlPost, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { bearer, makeKey, type Key } from '../helpers/identities.js';
import { callsOf, modernPost, rugPullServer } from './helpers.js';

const SECRET = 'a-jwt-secret-of-at-least-32-bytes-for-hs256';
let gw: RunningGateway;
let dir: string;
let auditFile: string;
let alice: Key;
let bob: Key;

beforeAll(async () => {
  dir = tempDir();
  auditFile = `${dir}/audit.log`;
  [alice, bob] = await Promise.all([makeKey('alice'), makeKey('bob')]);
  const key = (k: Key, extra = '') => `${k.block.trimEnd()}\n${extra}\n`;
  const toml =
    `[server]\nmetrics = true\n[audit]\nfile = "${auditFile}"\n` +
    key(alice) +
    key(bob, 'require_approval = ["fx:stable"]') +
    `[auth.jwt]\nmode = "simple"\nsecret = "${SECRET}"\nrequire_approval = ["stable"]\n` +
    rugPullServer('fx', dir, 'approval-test') +
    'require_approval = ["weath*"]\n' +
    rugPullServer('slow', `${dir}/slow`, 'approval-test-slow') +
    'require_approval = ["weather"]\ntimeout_ms = 1500\n' +
    '[[virtual_servers]]\nname = "ws"\nservers = ["fx"]\n';
  gw = await startGateway(toml);
}, 60_000);

afterAll(async () => {
  await gw?.stop();
  cleanupTempDirs();
});

type Answer = (request: { params: { message: string; requestedSchema: unknown } }, id: string | number) => Promise<ElicitResult> | ElicitResult;

async function client(path: string, headers: Record<string, string>, answer?: Answer): Promise<Client> {
  const c = new Client({ name: 'approval-test', version: '1.0.0' }, { capabilities: answer ? { elicitation: { form: {} } } : {} });
  if (answer) c.setRequestHandler(ElicitRequestSchema, (request, extra) => answer(request as never, extra.requestId));
  await c.connect(new StreamableHTTPClientTransport(new URL(`${gw.url}${path}`), { requestInit: { headers } }));
  return c;
}

function text(result: unknown): string {
  return ((result as { content?: Array<{ text?: string }> }).content ?? []).map((c) => c.text ?? '').join('');
}

function audits(): Array<Record<string, any>> {
  if (!existsSync(auditFile)) return [];
  return readFileSync(auditFile, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
}

async function metric(labels: Record<string, string>): Promise<number> {
  const body = await (await fetch(`${gw.url}/metrics`)).text();
  let total = 0;
  for (const line of body.split('\n')) {
    if (!line.startsWith('mcp_guard_tool_approvals_total{')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.split(' ').at(-1));
  }
  return total;
}

describe('require_approval: a person approves the call through an elicitation', () => {
  it('accepted: the call reaches the server; the question names the tool, the server and the redacted arguments', async () => {
    const asked: string[] = [];
    const c = await client('/mcp/fx', bearer(alice), (request) => {
      asked.push(request.params.message);
      expect(request.params.requestedSchema).toMatchObject({ properties: { confirm: { type: 'boolean' } }, required: ['confirm'] });
      return { action: 'accept', content: { confirm: true } };
    });
    const before = callsOf(dir).length;
    expect(text(await c.callTool({ name: 'weather', arguments: { city: 'Oslo', password: 'hunter2-secret' } }))).toBe('sunny in Oslo');
    expect(callsOf(dir).slice(before)).toEqual(['tools/call weather']);
    expect(asked).toHaveLength(1);
    expect(asked[0]).toContain('"weather" of server "fx"');
    expect(asked[0]).toContain('"city":"Oslo"');
    expect(asked[0]).toContain('[REDACTED]');
    expect(asked[0]).not.toContain('hunter2-secret');
    // A tool that does not match asks nothing.
    expect(text(await c.callTool({ name: 'stable', arguments: {} }))).toBe('stable');
    expect(asked).toHaveLength(1);
    await c.close();
  });

  it("through a virtual server: the member's require_approval applies to its namespaced tool", async () => {
    const asked: string[] = [];
    const c = await client('/mcp/ws', bearer(alice), (request) => {
      asked.push(request.params.message);
      return { action: 'decline' };
    });
    const before = callsOf(dir).length;
    await expect(c.callTool({ name: 'fx__weather', arguments: { city: 'Oslo' } })).rejects.toThrow(
      /calling tool "fx__weather" of server "fx" needs a person's approval/,
    );
    expect(asked[0]).toContain('"fx__weather" of server "fx"');
    expect(text(await c.callTool({ name: 'fx__stable', arguments: {} }))).toBe('stable');
    expect(asked).toHaveLength(1);
    expect(callsOf(dir).slice(before)).toEqual(['tools/call stable']);
    await c.close();
  });

  it('declined, cancelled, or accepted without confirm: an error, and nothing reaches the server', async () => {
    const answers: ElicitResult[] = [{ action: 'decline' }, { action: 'cancel' }, { action: 'accept', content: { confirm: false } }];
    const c = await client('/mcp/fx', bearer(alice), () => answers.shift()!);
    const before = callsOf(dir).length;
    await expect(c.callTool({ name: 'weather', arguments: { city: 'Oslo' } })).rejects.toThrow(/needs a person's approval, and the user declined it/);
    await expect(c.callTool({ name: 'weather', arguments: { city: 'Oslo' } })).rejects.toThrow(/the user cancelled the approval request/);
    await expect(c.callTool({ name: 'weather', arguments: { city: 'Oslo' } })).rejects.toThrow(/the user declined it/);
    expect(callsOf(dir).length).toBe(before);
    await c.close();
  });

  it('a client without the elicitation capability, or without a session, is refused and told why', async () => {
    const c = await client('/mcp/fx', bearer(alice));
    const before = callsOf(dir).length;
    await expect(c.callTool({ name: 'weather', arguments: { city: 'Oslo' } })).rejects.toThrow(
      /it did not declare the elicitation capability \(form\) at initialize/,
    );
    const curl = await curlPost(`${gw.url}/mcp/fx`, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'weather', arguments: {} } }, bearer(alice));
    expect(curl.json.error.message).toMatch(/a client without a session cannot be asked/);
    expect(curl.json.error.data).toMatchObject({ reason: 'approval_unavailable', server: 'fx' });
    expect(callsOf(dir).length).toBe(before);
    await c.close();
  });

  it("nobody answering within the server's timeout_ms: refused, and nothing reaches the server", async () => {
    let asked = 0;
    const c = await client('/mcp/slow', bearer(alice), () => {
      asked++;
      return new Promise<ElicitResult>(() => undefined);
    });
    await expect(c.callTool({ name: 'weather', arguments: { city: 'Oslo' } }, undefined, { timeout: 30_000 })).rejects.toThrow(
      /nobody answered the approval request in time/,
    );
    expect(asked).toBe(1);
    expect(callsOf(`${dir}/slow`)).toEqual([]);
    await c.close();
  });

  it('on an API key (another key is not asked) and on [auth.jwt]', async () => {
    let asked = 0;
    const accept = (): ElicitResult => {
      asked++;
      return { action: 'accept', content: { confirm: true } };
    };
    const bobs = await client('/mcp/fx', bearer(bob), accept);
    expect(text(await bobs.callTool({ name: 'stable', arguments: {} }))).toBe('stable');
    expect(asked).toBe(1);
    const alices = await client('/mcp/fx', bearer(alice), accept);
    expect(text(await alices.callTool({ name: 'stable', arguments: {} }))).toBe('stable');
    expect(asked).toBe(1);
    const token = await new SignJWT({ sub: 'carol' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(new TextEncoder().encode(SECRET));
    const carols = await client('/mcp/fx', { authorization: `Bearer ${token}` }, accept);
    expect(text(await carols.callTool({ name: 'stable', arguments: {} }))).toBe('stable');
    expect(asked).toBe(2);
    await Promise.all([bobs.close(), alices.close(), carols.close()]);
  });

  it('attacker: another session that answers the question (its id seen) approves nothing', async () => {
    let question: string | number | undefined;
    let release: ((r: ElicitResult) => void) | undefined;
    const victim = await client('/mcp/fx', bearer(alice), (_request, id) => {
      question = id;
      return new Promise<ElicitResult>((resolve) => (release = resolve));
    });
    const before = callsOf(dir).length;
    let settled = false;
    const call = victim
      .callTool({ name: 'weather', arguments: { city: 'Oslo' } })
      .then(
        () => 'answered',
        (err: Error) => err.message,
      )
      .finally(() => (settled = true));
    await waitFor(() => release !== undefined, 10_000, 'the question to reach the victim');
    // The attacker opens its own session (same key even) and answers the question by its id.
    const attacker = await client('/mcp/fx', bearer(alice));
    const sessionId = (attacker.transport as StreamableHTTPClientTransport).sessionId!;
    expect(typeof question).toBe('string');
    {
      const id = question;
      const res = await fetch(`${gw.url}/mcp/fx`, {
        method: 'POST',
        headers: { ...bearer(alice), 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-session-id': sessionId },
        body: JSON.stringify({ jsonrpc: '2.0', id, result: { action: 'accept', content: { confirm: true } } }),
      });
      expect(res.status).toBe(202);
    }
    // The attacker's answer is dropped (and logged), and the call still waits for the victim's.
    await waitFor(
      () => gw.logs.some((l) => l.includes('dropped an answer to a server request this session was not sent')),
      10_000,
      'the spoofed answer to be dropped',
    );
    expect(settled).toBe(false);
    expect(callsOf(dir).length).toBe(before);
    release!({ action: 'decline' });
    expect(await call).toMatch(/the user declined it/);
    expect(callsOf(dir).length).toBe(before);
    await Promise.all([victim.close(), attacker.close()]);
  });

  it('a session that ends while its question is open: the call is refused at once, never forwarded', async () => {
    let asked = false;
    const c = await client('/mcp/fx', bearer(alice), () => {
      asked = true;
      return new Promise<ElicitResult>(() => undefined);
    });
    const sessionId = (c.transport as StreamableHTTPClientTransport).sessionId!;
    const before = callsOf(dir).length;
    const call = c.callTool({ name: 'weather', arguments: { city: 'Oslo' } }).then(
      () => 'answered',
      (err: Error) => err.message,
    );
    await waitFor(() => asked, 10_000, 'the question');
    const deleted = await fetch(`${gw.url}/mcp/fx`, { method: 'DELETE', headers: { ...bearer(alice), 'mcp-session-id': sessionId } });
    expect(deleted.status).toBe(200);
    expect(await call).toMatch(/the user cancelled the approval request/);
    expect(callsOf(dir).length).toBe(before);
    await c.close().catch(() => undefined);
  });

  it('a 2026-07-28 client: an input_required round, then its retry with the answer is forwarded', async () => {
    const url = `${gw.url}/mcp/fx`;
    const auth = bearer(alice);
    const capabilities = { elicitation: { form: {} } };
    const before = callsOf(dir).length;
    const first = await modernPost(url, 'tools/call', { name: 'weather', arguments: { city: 'Lima' } }, 'weather', { capabilities, headers: auth });
    expect(first.json.result.resultType).toBe('input_required');
    const question = first.json.result.inputRequests['mcp-guard-approval'];
    expect(question.method).toBe('elicitation/create');
    expect(question.params.message).toContain('"weather" of server "fx"');
    const state = first.json.result.requestState;
    expect(callsOf(dir).length).toBe(before);
    // The same state for another call (other arguments) is refused.
    const other = await modernPost(
      url,
      'tools/call',
      {
        name: 'weather',
        arguments: { city: 'Quito' },
        requestState: state,
        inputResponses: { 'mcp-guard-approval': { action: 'accept', content: { confirm: true } } },
      },
      'weather',
      { capabilities, headers: auth },
    );
    expect(other.json.error.message).toMatch(/requestState belongs to another request/);
    const retry = await modernPost(
      url,
      'tools/call',
      {
        name: 'weather',
        arguments: { city: 'Lima' },
        requestState: state,
        inputResponses: { 'mcp-guard-approval': { action: 'accept', content: { confirm: true } } },
      },
      'weather',
      { capabilities, headers: auth },
    );
    expect(retry.json.result.content[0].text).toBe('sunny in Lima');
    expect(callsOf(dir).slice(before)).toEqual(['tools/call weather']);
    // A client whose _meta does not declare elicitation is refused.
    const unable = await modernPost(url, 'tools/call', { name: 'weather', arguments: { city: 'Lima' } }, 'weather', { headers: auth });
    expect(unable.json.error.message).toMatch(/its _meta clientCapabilities do not declare elicitation/);
    expect(callsOf(dir).length).toBe(before + 1);
  });

  it('every decision is audited and counted', async () => {
    await waitFor(() => audits().filter((l) => l['event_type'] === 'tool_approval').length >= 12, 10_000, 'the tool_approval lines');
    const lines = audits().filter((l) => l['event_type'] === 'tool_approval');
    expect(lines[0]).toMatchObject({ identity_id: 'alice', server: 'fx', tool: 'weather', method: 'tools/call', success: true, reason: 'accepted' });
    expect(new Set(lines.map((l) => l['reason']))).toEqual(new Set(['accepted', 'declined', 'cancelled', 'unavailable', 'timeout']));
    expect(await metric({ server: 'fx', result: 'cancelled' })).toBe(2);
    expect(await metric({ server: 'fx', result: 'declined' })).toBe(4);
    expect(await metric({ server: 'slow', result: 'timeout' })).toBe(1);
  });
});
