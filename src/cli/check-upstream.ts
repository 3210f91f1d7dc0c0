/**
 * `mcp-guard check-upstream`: connects to EVERY configured server (the earlier gateway skipped the
 * server list), learns its era (docs/eras.md: the `server/discover` probe, unless `era` is set),
 * does the era's handshake (legacy: initialize) and a full (paginated) tools/list, and reports
 * one row per server. Servers are checked concurrently so one slow server does not hide the others.
 */
import type { GatewayConfig, ServerConfig } from '../config/schema.js';
import type { JsonRpcRequest, JsonRpcResponse } from '../jsonrpc/messages.js';
import type { Logger } from '../observability/logger.js';
import { gatewayEnvelope } from '../upstreams/era.js';
import { createUpstream } from '../upstreams/factory.js';
import type { EraVerdict, Upstream } from '../upstreams/upstream.js';

export interface CheckResult {
  name: string;
  transport: string;
  /** The server's era, when it was learnt (or configured); null when the server could not be reached. */
  era: 'legacy' | 'modern' | null;
  /** modern: the version both speak; legacy: what the server's initialize answered. */
  protocol_version: string | null;
  /** When the era was decided (ISO 8601). */
  era_decided_at: string | null;
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
  const result = (ok: boolean, tools: number | null, error: string | null): CheckResult => {
    // Read at the end: a legacy verdict learns its version from the initialize.
    const verdict = upstream.verdict;
    return {
      name: config.name,
      transport: config.transport,
      era: verdict?.era ?? null,
      protocol_version: verdict?.version ?? null,
      era_decided_at: verdict ? new Date(verdict.decidedAt).toISOString() : null,
      ok,
      latency_ms: Math.round(performance.now() - started),
      tools,
      error,
    };
  };
  try {
    await upstream.start();
    const status = upstream.status();
    if (status.state !== 'ready' && status.state !== 'idle') return result(false, null, status.lastError ?? `not ready (${status.state})`);
    const verdict = await upstream.era();
    const counted = verdict.era === 'modern' ? await countModern(upstream, verdict) : await countLegacy(upstream);
    return typeof counted === 'number' ? result(true, counted, null) : result(false, null, counted.error);
  } catch (err) {
    return result(false, null, err instanceof Error ? err.message : String(err));
  } finally {
    await upstream.close();
  }
}

/** tools/list, every page: the number of tools, or what went wrong. */
async function countTools(list: (request: JsonRpcRequest) => Promise<JsonRpcResponse>, request: (page: number, cursor: string | undefined) => JsonRpcRequest): Promise<number | { error: string }> {
  let tools = 0;
  let cursor: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    const response = await list(request(page, cursor));
    if ('error' in response) return { error: `tools/list failed: ${response.error.message}` };
    const listed = response.result['tools'];
    tools += Array.isArray(listed) ? listed.length : 0;
    const next = response.result['nextCursor'];
    if (typeof next !== 'string' || next === '') break;
    cursor = next;
  }
  return tools;
}

/** The owner of check-upstream's own sessions and calls (src/upstreams/upstream.ts OpenSessionOptions.owner). */
const CHECK_OWNER = 'gateway:check-upstream';

/** A legacy server: a session (initialize), then tools/list in it. */
async function countLegacy(upstream: Upstream): Promise<number | { error: string }> {
  const session = await upstream.openSession({ forwardPath: '', owner: CHECK_OWNER, handlers: { onMessage: () => undefined, onClose: () => undefined } });
  try {
    if ('error' in session.initializeResult) return { error: `initialize failed: ${session.initializeResult.error.message}` };
    return await countTools(
      (request) => session.request(request, { onMessage: () => undefined }),
      (page, cursor) => ({ jsonrpc: '2.0', id: page + 1, method: 'tools/list', ...(cursor ? { params: { cursor } } : {}) }),
    );
  } finally {
    await session.close();
  }
}

/** A 2026-07-28 server: stateless tools/list requests, each with the gateway's envelope. */
async function countModern(upstream: Upstream, verdict: EraVerdict): Promise<number | { error: string }> {
  const envelope = gatewayEnvelope(verdict.version ?? '2026-07-28');
  return countTools(
    (request) => upstream.call(request, { forwardPath: '', owner: CHECK_OWNER, onMessage: () => undefined }),
    (page, cursor) => ({ jsonrpc: '2.0', id: page + 1, method: 'tools/list', params: { ...(cursor ? { cursor } : {}), _meta: envelope } }),
  );
}

export async function checkUpstreams(config: GatewayConfig, timeoutMs: number, logger: Logger): Promise<CheckResult[]> {
  return Promise.all(config.servers.map((s) => checkServer(s, timeoutMs, logger)));
}

export function formatTable(results: CheckResult[]): string {
  const rows = [
    ['NAME', 'TRANSPORT', 'ERA', 'STATUS', 'LATENCY', 'TOOLS', 'DETAIL'],
    ...results.map((r) => [
      r.name,
      r.transport,
      r.era === null ? '-' : r.protocol_version === null ? r.era : `${r.era} ${r.protocol_version}`,
      r.ok ? 'ok' : 'error',
      `${r.latency_ms} ms`,
      r.tools === null ? '-' : String(r.tools),
      r.error ?? '',
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
}
