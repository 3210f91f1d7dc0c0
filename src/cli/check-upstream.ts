/**
 * `mcp-guard check-upstream`: connects to EVERY configured server (the earlier gateway skipped the
 * server list), does the MCP handshake and a full (paginated) tools/list, and reports one row per
 * server. Servers are checked concurrently so one slow server does not hide the others.
 */
import type { GatewayConfig, ServerConfig } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import { createUpstream } from '../upstreams/factory.js';

export interface CheckResult {
  name: string;
  transport: string;
  ok: boolean;
  /** Handshake plus tools/list, in milliseconds. */
  latency_ms: number;
  tools: number | null;
  error: string | null;
}

/** Pages of tools/list followed at most (a server that loops its cursor must not hang the check). */
const MAX_PAGES = 100;

export async function checkServer(config: ServerConfig, timeoutMs: number, logger: Logger): Promise<CheckResult> {
  // No circuit breaker: the check is one attempt whose own error is the answer (the circuit of a
  // running gateway lives in that process; its /ready shows it).
  const server: ServerConfig = { ...config, timeout_ms: timeoutMs, startup_timeout_ms: timeoutMs, max_restarts: 0, circuit_failure_threshold: 0 };
  const upstream = createUpstream(server, { logger });
  const started = performance.now();
  const result = (ok: boolean, tools: number | null, error: string | null): CheckResult => ({
    name: config.name,
    transport: config.transport,
    ok,
    latency_ms: Math.round(performance.now() - started),
    tools,
    error,
  });
  try {
    await upstream.start();
    const status = upstream.status();
    if (status.state !== 'ready' && status.state !== 'idle') return result(false, null, status.lastError ?? `not ready (${status.state})`);
    const session = await upstream.openSession({ forwardPath: '', handlers: { onMessage: () => undefined, onClose: () => undefined } });
    if ('error' in session.initializeResult) return result(false, null, `initialize failed: ${session.initializeResult.error.message}`);
    let tools = 0;
    let cursor: string | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      const response = await session.request(
        { jsonrpc: '2.0', id: page + 1, method: 'tools/list', ...(cursor ? { params: { cursor } } : {}) },
        { onMessage: () => undefined },
      );
      if ('error' in response) return result(false, null, `tools/list failed: ${response.error.message}`);
      const list = response.result['tools'];
      tools += Array.isArray(list) ? list.length : 0;
      const next = response.result['nextCursor'];
      if (typeof next !== 'string' || next === '') break;
      cursor = next;
    }
    const done = result(true, tools, null);
    await session.close();
    return done;
  } catch (err) {
    return result(false, null, err instanceof Error ? err.message : String(err));
  } finally {
    await upstream.close();
  }
}

export async function checkUpstreams(config: GatewayConfig, timeoutMs: number, logger: Logger): Promise<CheckResult[]> {
  return Promise.all(config.servers.map((s) => checkServer(s, timeoutMs, logger)));
}

export function formatTable(results: CheckResult[]): string {
  const rows = [
    ['NAME', 'TRANSPORT', 'STATUS', 'LATENCY', 'TOOLS', 'DETAIL'],
    ...results.map((r) => [r.name, r.transport, r.ok ? 'ok' : 'error', `${r.latency_ms} ms`, r.tools === null ? '-' : String(r.tools), r.error ?? '']),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
}
