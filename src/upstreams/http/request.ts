/**
 * The one way the HTTP transports send an HTTP request: through the upstream's undici Agent, with
 * the configured headers (never a client's) plus the protocol's own, and every failure before the
 * response headers turned into an UpstreamError that says what it means. Also the response-header
 * helpers, and the deadlines of a POST that expects no answer.
 */
import { GATEWAY_MANAGED_HEADERS } from '../../config/constants.js';
import type { HttpServerConfig } from '../../config/schema.js';
import { errorMessage } from '../../error-message.js';
import type { CancelSignal } from '../cancellation.js';
import { connectFailed, UpstreamError } from '../errors.js';
import { exchange, type ExchangeResponse } from '../exchange.js';
import type { HttpContext } from './context.js';

export type HttpResponse = ExchangeResponse;

/** What an HTTP exchange can be stopped by: an AbortSignal, or a Cancellation (cancellation.ts). */
export type StopSignal = CancelSignal;

/**
 * The reason given when a request's HTTP exchange is stopped because the request is over (its
 * answer came, or its deadline or cancellation). One shared object: abort() without a reason
 * builds a DOMException with a stack trace, which showed in profiles when it ran per request.
 */
export const EXCHANGE_OVER = new Error('the request is over');

/**
 * Headers the transports set themselves (or leave out on purpose): the ones config validation
 * already refuses, plus those a transport sets per request. Configured values never pass.
 */
const MANAGED_HEADERS = new Set<string>([...GATEWAY_MANAGED_HEADERS, 'accept', 'content-type', 'last-event-id']);

/** True for a header the transports set themselves (lower-case name): never configured or passed along. */
export function isManagedHeader(name: string): boolean {
  return MANAGED_HEADERS.has(name);
}

/** The configured headers (credentials for this upstream) that may go on the wire. */
export function configuredHeaders(config: HttpServerConfig): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(config.headers)) {
    const key = name.toLowerCase();
    if (!MANAGED_HEADERS.has(key)) headers[key] = value;
  }
  return headers;
}

/**
 * Request headers: the configured ones (never anything from the client) plus the protocol's own.
 * A configured header may not stand in for a managed one, not even where the transport sends
 * none (no Mcp-Session-Id on initialize).
 */
export function requestHeaders(context: HttpContext, own: Record<string, string | undefined>): Record<string, string> {
  const headers: Record<string, string> = { ...context.configuredHeaders };
  for (const [name, value] of Object.entries(own)) if (value !== undefined) headers[name] = value;
  return headers;
}

/** The deadline of a POST that expects no answer (a notification, the client's reply). */
export function sendSignal(config: HttpServerConfig): AbortSignal {
  return AbortSignal.timeout(sendTimeoutMs(config));
}

/** How long a POST that expects no answer may take: the server's timeout_ms, else 30 s. */
export function sendTimeoutMs(config: HttpServerConfig): number {
  return config.timeout_ms > 0 ? config.timeout_ms : 30_000;
}

export interface HttpRequestOptions {
  method: 'GET' | 'POST' | 'DELETE';
  url: URL;
  headers: Record<string, string>;
  body?: string;
  signal: StopSignal;
}

/**
 * Sends one HTTP request and resolves when the response headers arrive. Every failure before that
 * is an UpstreamError: 'connect' (refused, DNS, TLS, reset), 'timeout' or 'cancelled' (the signal;
 * a timeout is an AbortSignal.timeout()). Records the upstream's health.
 */
export async function httpRequest(context: HttpContext, options: HttpRequestOptions): Promise<HttpResponse> {
  const { config, agent, health } = context;
  let response: HttpResponse;
  try {
    const target = dispatchTarget(options.url);
    response = await exchange(agent, {
      origin: target.origin,
      path: target.path,
      method: options.method,
      headers: options.headers,
      body: options.body ?? null,
      signal: options.signal,
    });
  } catch (error) {
    if (options.signal.aborted) throw abortError(config.name, options.signal);
    const failure = requestFailed(config.name, error, options.url);
    health.failed(failure);
    throw failure;
  }
  if (response.statusCode < 500) health.succeeded();
  return response;
}

/**
 * A URL's origin and path with query, as the agent takes them. undici's top-level request() works
 * them out from the URL on every call (its origin getter alone cost 5-7 us per request in
 * profiles); the URLs the transports send to live as long as their session (or, for calls without
 * a forwarded path, as the upstream) and are never changed, so each is worked out once. The
 * WeakMap lets go of an entry with its URL.
 */
const targets = new WeakMap<URL, { origin: string; path: string }>();

function dispatchTarget(url: URL): { origin: string; path: string } {
  let target = targets.get(url);
  if (target === undefined) {
    target = { origin: url.origin, path: url.pathname + url.search };
    targets.set(url, target);
  }
  return target;
}

/**
 * What an HTTP exchange that failed before its response headers means. "Failed to connect" only
 * when it may be true: a server that took the request and closed the connection without an answer
 * (it crashed, a proxy gave up) may have acted on it, and one that answered with what is not HTTP
 * was reached.
 */
function requestFailed(server: string, error: unknown, url: URL): UpstreamError {
  const code = errorCode(error);
  if (code === 'UND_ERR_SOCKET') {
    return new UpstreamError('closed', server, `Upstream '${server}' closed the connection before answering (${url.host})`, { cause: error });
  }
  if (error instanceof Error && error.name === 'HTTPParserError') {
    return new UpstreamError('protocol', server, `Upstream '${server}' answered with something that is not HTTP (${url.host})`, { cause: error });
  }
  return connectFailed(server, `${code ?? errorMessage(error)} (${url.host})`, error);
}

/** The UpstreamError for an aborted HTTP exchange. */
export function abortError(server: string, signal: StopSignal): UpstreamError {
  const reason: unknown = signal.reason;
  if (reason instanceof Error && reason.name === 'TimeoutError') {
    return new UpstreamError('timeout', server, `Upstream '${server}' did not answer in time`, { cause: reason });
  }
  return new UpstreamError('cancelled', server, 'Request cancelled', { cause: reason });
}

/** The code of a socket or undici error; a refused dual-stack connect is an AggregateError. */
function errorCode(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const e = error as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.code === 'string') return e.code;
  if (Array.isArray(e.errors) && e.errors.length > 0) return errorCode(e.errors[0]);
  return e.cause === undefined ? undefined : errorCode(e.cause);
}

/** Any thrown value as an UpstreamError (a failure in our own code counts as 'protocol'). */
export function asUpstreamError(error: unknown, server: string): UpstreamError {
  if (error instanceof UpstreamError) return error;
  return new UpstreamError('protocol', server, `Upstream '${server}': ${errorMessage(error)}`, { cause: error });
}

/** A response header as one string (undici gives arrays for repeated headers). */
export function header(response: HttpResponse, name: string): string | undefined {
  const value = response.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The media type of a response, without parameters, lower-cased. */
export function mediaType(response: HttpResponse): string {
  return (header(response, 'content-type') ?? '').split(';', 1)[0]!.trim().toLowerCase();
}
