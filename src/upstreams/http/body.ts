/**
 * Reading what an HTTP upstream answers: whole bodies within a size limit, error bodies a little
 * way for the log (with configured credentials redacted), bodies discarded so that their
 * connection can be reused, and the decoding of a body or an SSE event's data into JSON-RPC
 * messages. A body that fails half way, or is too large, becomes an UpstreamError here.
 */
import type { HttpServerConfig } from '../../config/schema.js';
import { toMessage, type JsonRpcMessage } from '../../jsonrpc/messages.js';
import { UpstreamError } from '../errors.js';
import { BodyTooLarge } from '../exchange.js';
import { nestedTooDeep, tooDeepError } from '../inbound.js';
import type { HttpContext } from './context.js';
import { header, type HttpResponse } from './request.js';

/**
 * The largest body the gateway reads as one answer: the same limit as one SSE event
 * (sse-stream.ts) and one stdout line of a stdio child (../stdio/line-reader.ts).
 */
export const MAX_BODY_BYTES = 32 * 1024 * 1024;
/** Error bodies are read this far, for the log and for the session-expired check. */
const ERROR_BODY_LIMIT = 4_096;
/** Error body text that reaches the log, after sanitizing. */
const LOG_SNIPPET_CHARS = 200;

/**
 * Reads a response body with `read`; a body that fails half way (the server died, the connection
 * was reset) means the answer will never come: kind 'closed'.
 */
export async function readBody<T>(server: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (error) {
    if (error instanceof UpstreamError) throw error;
    // sse-stream.ts's limit on one event (eventsource-parser's error): the server's fault, not a lost connection.
    if ((error as { type?: unknown }).type === 'max-buffer-size-exceeded') {
      throw new UpstreamError('protocol', server, `Upstream '${server}' sent an event over the size limit (${(error as Error).message})`, { cause: error });
    }
    throw new UpstreamError('closed', server, `Upstream '${server}' closed the connection while answering`, { cause: error });
  }
}

/**
 * Reads a whole answer as text. One over `limit` bytes is a protocol fault, refused from its
 * Content-Length when it has one, else once that many bytes have arrived (the body is destroyed).
 */
export async function readText(response: HttpResponse, server: string, limit = MAX_BODY_BYTES): Promise<string> {
  const tooLarge = (): UpstreamError => new UpstreamError('protocol', server, `Upstream '${server}' answered with a body over the limit of ${limit} bytes`);
  const declared = header(response, 'content-length');
  if (declared !== undefined && /^\d+$/.test(declared) && Number(declared) > limit) {
    response.body.destroy();
    throw tooLarge();
  }
  try {
    return await response.body.text(limit);
  } catch (error) {
    throw error instanceof BodyTooLarge ? tooLarge() : error;
  }
}

/** Reads at most `limit` bytes of a body as text, then releases it. */
export async function readLimited(body: HttpResponse['body'], limit = ERROR_BODY_LIMIT): Promise<string> {
  const decoder = new TextDecoder();
  let text = '';
  let bytes = 0;
  try {
    for await (const chunk of body) {
      text += decoder.decode(chunk.subarray(0, limit - bytes), { stream: true });
      bytes += chunk.length;
      if (bytes >= limit) break;
    }
  } catch {
    // A body that fails half way is still worth what arrived.
  }
  return text + decoder.decode();
}

/** Discards a body so that its connection can be reused; never throws. */
export async function discard(body: HttpResponse['body']): Promise<void> {
  await body.dump(64 * 1024).catch(() => undefined);
}

/**
 * Body text fit for a log line: bounded, no control characters, and none of the configured header
 * values (a server that echoes its request in an error page must not put credentials in our log).
 */
export function logSnippet(text: string, config: HttpServerConfig): string {
  let snippet = text;
  for (const value of Object.values(config.headers)) {
    if (value.length >= 4) snippet = snippet.split(value).join('[redacted]');
  }
  return (
    snippet
      // Control characters are what this removes: a log line must not carry a server's escapes.
      // eslint-disable-next-line no-control-regex
      .replace(/[\u0000-\u001f\u007f]+/g, ' ')
      .trim()
      .slice(0, LOG_SNIPPET_CHARS)
  );
}

/**
 * The error for a response that is not 2xx, after logging its status and a short snippet of its
 * body (never in the error, which may reach clients). Also returns the body text read so far.
 */
export async function statusError(context: HttpContext, response: HttpResponse, what: string): Promise<{ error: UpstreamError; body: string }> {
  const name = context.config.name;
  const body = await readLimited(response.body);
  const failure = new UpstreamError('protocol', name, `Upstream '${name}' answered HTTP ${response.statusCode}`);
  if (response.statusCode >= 500) context.health.failed(failure);
  context.logger.warn({ status: response.statusCode, what, body: logSnippet(body, context.config) }, 'upstream answered an HTTP error');
  return { error: failure, body };
}

/**
 * The MCP SDK's example servers (server-everything among them, and many built from that template)
 * answer 400 "Bad Request: No valid session ID provided" for a session they no longer know where
 * the spec (2025-03-26, Session Management) says 404. Treat that answer as expiry too.
 */
export function saysSessionUnknown(status: number, body: string): boolean {
  if (status !== 400) return false;
  try {
    const parsed = JSON.parse(body) as { error?: { message?: unknown } };
    const message = parsed.error?.message;
    return typeof message === 'string' && /session/i.test(message);
  } catch {
    return false;
  }
}

/**
 * Decodes a body or an SSE event's data: one JSON-RPC message or a batch. Text nested deeper than
 * MAX_UPSTREAM_DEPTH is not parsed (inbound.ts): it goes to `onTooDeep` when given (an SSE event:
 * dropped, or its request failed, and the stream goes on), else it is a protocol fault (a JSON
 * body: the request it answers fails).
 */
export function parseMessages(text: string, server: string, onTooDeep?: (text: string) => void): JsonRpcMessage[] {
  if (nestedTooDeep(text)) {
    if (!onTooDeep) throw tooDeepError(server);
    onTooDeep(text);
    return [];
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new UpstreamError('protocol', server, `Upstream '${server}' sent a body that is not JSON`, { cause: error });
  }
  const items: unknown[] = Array.isArray(value) ? value : [value];
  return items.map((item) => {
    const message = toMessage(item);
    if (typeof message === 'string') {
      throw new UpstreamError('protocol', server, `Upstream '${server}' sent an invalid JSON-RPC message: ${message}`);
    }
    return message;
  });
}
