/**
 * What the tool integrity tests share (issue 21, docs/tool-integrity.md): the rug-pull fixture
 * (test/fixtures/rug-pull-server.mjs) as a stdio server carrying the test's marker, its state
 * and call record files, `mcp-guard pin` as a real process, and raw 2026-07-28 requests.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { jsonOrUndefined } from '../helpers/gateway.js';
import { NODE, q, runCli, type CliResult } from '../helpers/cli.js';

export const RUG_PULL = new URL('../fixtures/rug-pull-server.mjs', import.meta.url).pathname;

/** The fixture's files in `dir`: its state (changed or not) and what it executed. */
export function fixtureFiles(dir: string): { state: string; calls: string } {
  return { state: join(dir, 'state.json'), calls: join(dir, 'calls.log') };
}

/** A `[[upstream.servers]]` entry: the rug-pull fixture as one shared stdio child named `name`. */
export function rugPullServer(name: string, dir: string, m: string): string {
  const { state, calls } = fixtureFiles(dir);
  return (
    `[[upstream.servers]]\nname = ${q(name)}\npath_prefix = ${q(`/${name}`)}\ntransport = "stdio"\nisolation = "shared"\n` +
    `command = ${q(NODE)}\nargs = [${[RUG_PULL, '--state', state, '--calls', calls, m].map(q).join(', ')}]\n`
  );
}

export function integrityTable(mode: string, pinFile: string, extra = ''): string {
  return `[tool_integrity]\nmode = ${q(mode)}\npin_file = ${q(pinFile)}\n${extra}\n`;
}

/** The lines of the fixture's call record: what reached the server. */
export function callsOf(dir: string): string[] {
  const { calls } = fixtureFiles(dir);
  return existsSync(calls) ? readFileSync(calls, 'utf8').split('\n').filter(Boolean) : [];
}

/** `mcp-guard pin -c FILE ...args`, to completion. */
export function pinCli(config: string, ...args: string[]): Promise<CliResult> {
  return runCli(['pin', '-c', config, ...args], { timeoutMs: 60_000 });
}

export function readJson(path: string): any {
  return JSON.parse(readFileSync(path, 'utf8'));
}

const MODERN = '2026-07-28';

/** One 2026-07-28 POST (the modern headers and `_meta`); the answer (JSON or the last SSE event with an id). */
export async function modernPost(
  url: string,
  method: string,
  params: Record<string, unknown>,
  name?: string,
  extra: { capabilities?: Record<string, unknown>; headers?: Record<string, string> } = {},
): Promise<{ status: number; json: any }> {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'mcp-protocol-version': MODERN,
    'mcp-method': method,
  };
  if (name !== undefined) headers['mcp-name'] = name;
  Object.assign(headers, extra.headers);
  const meta = {
    'io.modelcontextprotocol/protocolVersion': MODERN,
    'io.modelcontextprotocol/clientCapabilities': extra.capabilities ?? {},
    'io.modelcontextprotocol/clientInfo': { name: 'integrity-modern', version: '1.0.0' },
  };
  const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 7, method, params: { ...params, _meta: meta } }) });
  const raw = await res.text();
  const json =
    jsonOrUndefined(raw) ??
    raw
      .split('\n')
      .filter((line) => line.startsWith('data:'))
      .map((line) => jsonOrUndefined(line.slice(5).trim()))
      .filter((m) => m && 'id' in m)
      .at(-1);
  return { status: res.status, json };
}
