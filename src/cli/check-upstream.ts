/**
 * `mcp-guard check-upstream`: connects to EVERY configured server (the earlier gateway skipped the
 * server list), learns its era (docs/eras.md: the `server/discover` probe, unless `era` is set),
 * does the era's handshake (legacy: initialize) and a full (paginated) tools/list, and reports
 * one row per server. Servers are checked concurrently so one slow server does not hide the others.
 * An http/sse server that answers with an HTTP error gets a second look (hintFor): the usual cause
 * is the wrong transport or path, and the row says which.
 */
import type { GatewayConfig, HttpServerConfig, ServerConfig } from '../config/schema.js';
import type { JsonRpcRequest, JsonRpcResponse } from '../jsonrpc/messages.js';
import type { Logger } from '../observability/logger.js';
import { gatewayEnvelope } from '../upstreams/era.js';
import { createUpstream } from '../upstreams/factory.js';
import type { EraVerdict, Upstream } from '../upstreams/upstream.js';
import { errorMessage } from '../error-message.js';

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
  const failed = async (error: string) => result(false, null, `${error}${await hintFor(config, error, timeoutMs - (performance.now() - started))}`);
  try {
    await upstream.start();
    const status = upstream.status();
    if (status.state !== 'ready' && status.state !== 'idle') return await failed(status.lastError ?? `not ready (${status.state})`);
    const verdict = await upstream.era();
    const counted = verdict.era === 'modern' ? await countModern(upstream, verdict) : await countLegacy(upstream);
    return typeof counted === 'number' ? result(true, counted, null) : result(false, null, counted.error);
  } catch (err) {
    return await failed(errorMessage(err));
  } finally {
    await upstream.close();
  }
}

/** How the upstream layer words an HTTP error status (src/upstreams/http/body.ts, statusError). */
const ANSWERED_HTTP = /answered HTTP (\d{3})$/;

/** The longest a hint's own request may take, in ms. */
const HINT_TIMEOUT_MS = 5_000;

/**
 * What is likely wrong with an http/sse server that answered an HTTP error status, as text to
 * append to the error ('' when nothing better can be said). A legacy SSE server configured as
 * "http" refuses the POST (404 or 405) but answers a GET with an event stream; a streamable HTTP
 * server configured as "sse" refuses the GET without a session (400 or 405) but answers a POST of
 * initialize. One request tells them apart (with the server's configured headers, its credentials);
 * a 404 that neither explains is the url's path.
 */
async function hintFor(config: ServerConfig, error: string, budgetMs: number): Promise<string> {
  const status = Number(ANSWERED_HTTP.exec(error)?.[1]);
  if (config.transport === 'stdio' || !(status >= 400 && status < 500) || status === 401 || status === 403) return '';
  const timeout = Math.min(HINT_TIMEOUT_MS, budgetMs);
  const wrongTransport = timeout > 0 && (config.transport === 'http' ? await answersSse(config, timeout) : await answersPost(config, timeout));
  if (wrongTransport) {
    return config.transport === 'http'
      ? ': the url answers GET with an event stream: is this an SSE server? try transport = "sse"'
      : ': the url answers a POST of initialize: is this a streamable HTTP server? try transport = "http"';
  }
  if (status === 404) return ": nothing is served there: check the url's path";
  if (status === 405 && config.transport === 'http') return ': the url refuses POST: is this an SSE server? try transport = "sse", or check the url\'s path';
  return '';
}

/** True when a GET of the url answers with an event stream, as a legacy SSE endpoint does. */
async function answersSse(config: HttpServerConfig, timeoutMs: number): Promise<boolean> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const response = await fetch(config.url, { headers: { ...config.headers, accept: 'text/event-stream' }, signal: controller.signal, redirect: 'manual' });
    return response.ok && (response.headers.get('content-type') ?? '').toLowerCase().startsWith('text/event-stream');
  } catch {
    return false;
  } finally {
    // The stream would stay open: the status and headers are all that is needed.
    controller.abort();
    clearTimeout(timer);
  }
}

/** True when a POST of initialize to the url gets a JSON-RPC answer, as from a streamable HTTP endpoint. */
async function answersPost(config: HttpServerConfig, timeoutMs: number): Promise<boolean> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const initialize = {
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'mcp-guard check-upstream', version: '1' } },
  };
  try {
    const response = await fetch(config.url, {
      method: 'POST',
      headers: { ...config.headers, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify(initialize),
      signal: controller.signal,
      redirect: 'manual',
    });
    const type = (response.headers.get('content-type') ?? '').toLowerCase();
    const answered = response.ok && (type.startsWith('application/json') || type.startsWith('text/event-stream'));
    // The session this opened is ended at once, so that nothing is left on the server.
    const session = response.headers.get('mcp-session-id');
    controller.abort();
    if (answered && session) {
      await fetch(config.url, { method: 'DELETE', headers: { ...config.headers, 'mcp-session-id': session }, signal: AbortSignal.timeout(timeoutMs) }).then(
        (deleted) => deleted.body?.cancel(),
        () => undefined,
      );
    }
    return answered;
  } catch {
    return false;
  } finally {
    controller.abort();
    clearTimeout(timer);
  }
}

/** tools/list, every page: the number of tools, or what went wrong. */
async function countTools(
  list: (request: JsonRpcRequest) => Promise<JsonRpcResponse>,
  request: (page: number, cursor: string | undefined) => JsonRpcRequest,
): Promise<number | { error: string }> {
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
  return rows
    .map((row) =>
      row
        .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
