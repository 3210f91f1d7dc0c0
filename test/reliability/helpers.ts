/**
 * Shared by the reliability tests: a `mcp-guard serve` process started from a config, JSON-RPC
 * posts, /ready and /metrics readings, and what `ps` and /proc say about the gateway's children.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { CliProcess, writeConfig } from '../helpers/cli.js';
import { jsonOrUndefined } from '../helpers/gateway.js';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function serveConfig(toml: string, dir?: string): CliProcess {
  return new CliProcess(['serve', '-c', writeConfig(toml, 'mcp-guard.toml', dir), '--host', '127.0.0.1', '--port', '0']);
}

export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any; text: string }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  const json = jsonOrUndefined(text);
  return { status: res.status, json, text };
}

export const toolCall = (id: number, name: string, args: Record<string, unknown> = {}) => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name, arguments: args },
});

export async function ready(base: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${base}/ready`);
  return { status: res.status, body: await res.json() };
}

/** The value of one metric series in /metrics (undefined when absent). */
export async function metric(base: string, series: string): Promise<number | undefined> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** The direct children of a process, with their state (Z = a zombie nobody reaped). */
export function childrenOf(pid: number): Array<{ pid: number; stat: string; args: string }> {
  let out = '';
  try {
    out = execFileSync('ps', ['-o', 'pid=,stat=,args=', '--ppid', String(pid)], { encoding: 'utf8' });
  } catch {
    return []; // ps exits 1 when nothing matches
  }
  return out
    .split('\n')
    .map((l) => /^\s*(\d+)\s+(\S+)\s+(.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ pid: Number(m[1]), stat: m[2]!, args: m[3]! }));
}

/** How many file descriptors a process holds (pipes to children included). */
export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}
