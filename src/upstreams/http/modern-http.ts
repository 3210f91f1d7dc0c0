/**
 * Streamable HTTP the 2026-07-28 way (specification, basic/transports/streamable-http): the era
 * probe, and stateless calls. Every request is its own POST to the endpoint, with no session; its
 * headers mirror the body (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`); the answer is a JSON
 * body or an SSE stream that carries the request's own notifications first (progress, log
 * lines; for `subscriptions/listen`, change notifications until the stream ends). Closing that
 * stream is the cancellation: no `notifications/cancelled` is sent.
 *
 * A call needs no id rewriting (the POST carries one request and nothing else), so the client's
 * id and progress token travel as they are.
 */
import type { JsonRpcMessage, JsonRpcNotification, JsonRpcRequest, JsonRpcResponse } from '../../jsonrpc/messages.js';
import { isNotification, isResponse, objectOf, type JsonRpcErrorObject } from '../../jsonrpc/messages.js';
import { MODERN_PROTOCOL_VERSION } from '../../protocol/versions.js';
import { traceHeaders } from '../../protocol/trace-context.js';
import { discoverRequest, encodeHeaderValue, mcpName, probedVerdict, readProbeAnswer, requestVersion, type ProbeAnswer } from '../era.js';
import { Cancellation } from '../cancellation.js';
import { UpstreamError } from '../errors.js';
import { IdTable } from '../id-table.js';
import { dropTooDeep, nestedTooDeep } from '../inbound.js';
import type { CallOptions, EraVerdict } from '../upstream.js';
import { discard, logSnippet, MAX_BODY_BYTES, parseMessages, readBody, readLimited, readText, statusError } from './body.js';
import type { HttpContext } from './context.js';
import { abortError, asUpstreamError, EXCHANGE_OVER, header, httpRequest, isManagedHeader, mediaType, requestHeaders, type HttpResponse } from './request.js';
import { eventMessages, readEvents } from './sse-stream.js';
import { targetUrl } from './url.js';

/** A JSON-RPC error body of a 4xx answer is read this far (a -32022 lists versions, a -32020 the mismatch). */
const ERROR_ANSWER_LIMIT = 64 * 1024;
/** Header values undici accepts (no CR, LF, NUL or other controls). */
const SENDABLE_HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** A call in flight, so that close() can end it. */
type Finish = (error: UpstreamError) => void;

export class ModernHttp {
  private probes = 0;
  /** Each call's way to end it, while in flight (not a Set: see id-table.ts). */
  private readonly calls = new IdTable<Finish>();
  /** The url of every call without a forwarded path: never changed once made. */
  private baseUrl: URL | undefined;

  constructor(private readonly context: HttpContext) {}

  /**
   * Sends `server/discover` to url + forwardPath and reads the answer by the specification's
   * rules (era.ts): the verdict of that path only (upstream.ts keeps one per path). Rejects,
   * so that nothing is remembered, when the answer says nothing about the era: HTTP 401/403 (an
   * auth wall in front of any server), 5xx (a modern server can fail too), no connection, no
   * answer within timeout_ms, a 2xx that is not an answer.
   *
   * timeout_ms, not startup_timeout_ms: the probe is a request, made while a client waits for it
   * (finding 10 of issue 16). One deadline for the probe and its corrective retry.
   */
  async probe(forwardPath: string): Promise<EraVerdict> {
    const { config, logger } = this.context;
    const url = targetUrl(config.url, forwardPath, config.name);
    const signal = AbortSignal.timeout(config.timeout_ms);
    let version = MODERN_PROTOCOL_VERSION;
    let answer = await this.discover(url, version, signal);
    // One corrective retry with the version the server named (-32022).
    if (answer.kind === 'retry') {
      version = answer.version;
      answer = await this.discover(url, version, signal);
      if (answer.kind === 'retry') answer = { kind: 'legacy', why: 'server/discover refused every version it named' };
    }
    const verdict = probedVerdict(answer);
    // The path probed (its query left out: it may carry a key), since each has its own verdict.
    const path = url.pathname;
    logger.info({ era: verdict.era, version: verdict.version, path, ...(answer.kind === 'legacy' ? { why: answer.why } : {}) }, 'upstream era probed');
    return verdict;
  }

  private async discover(url: URL, version: string, signal: AbortSignal): Promise<ProbeAnswer> {
    const { config } = this.context;
    const name = config.name;
    const probe = discoverRequest(`mcp-guard-discover-${++this.probes}`, version);
    const response = await httpRequest(this.context, {
      method: 'POST',
      url,
      headers: requestHeaders(this.context, {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': version,
        'mcp-method': probe.method,
      }),
      body: JSON.stringify(probe),
      signal,
    });
    const status = response.statusCode;
    try {
      if (status >= 200 && status < 300 && status !== 202) {
        const answer = await this.readAnswer(response, () => undefined);
        if (!answer) throw new UpstreamError('protocol', name, `Upstream '${name}' ended its answer to server/discover without a response`);
        return readProbeAnswer(answer);
      }
      if (status >= 400 && status < 500 && status !== 401 && status !== 403) {
        // Legacy servers answer an unknown request without a session 400 or 404, with or
        // without a JSON-RPC error; modern ones answer 400 with a modern error.
        const answer = errorAnswer(await readLimited(response.body, ERROR_ANSWER_LIMIT));
        return answer ? readProbeAnswer(answer) : { kind: 'legacy', why: `server/discover answered HTTP ${status}` };
      }
      if (status === 202) {
        await discard(response.body);
        throw new UpstreamError('protocol', name, `Upstream '${name}' accepted server/discover without answering it`);
      }
      throw (await statusError(this.context, response, 'POST server/discover')).error;
    } catch (error) {
      // A deadline that passes while the body is read is a timeout, not a lost connection.
      if (signal.aborted) throw abortError(name, signal);
      throw error;
    }
  }

  /**
   * Sends one modern request and resolves with its response, the request's id on it. The
   * deadline (options.timeoutMs, else timeout_ms) restarts with each progress notification; a
   * `subscriptions/listen` has it only until its stream has carried its first message (the
   * acknowledgement), then runs until the server ends it or the caller aborts.
   */
  call(request: JsonRpcRequest, options: CallOptions): Promise<JsonRpcResponse> {
    const { config, logger } = this.context;
    const name = config.name;
    let url: URL;
    try {
      // Calls without a forwarded path share one URL (as streamable-http.ts's sessions do), which
      // request.ts also turns into an origin and a path once.
      url = options.forwardPath === '' ? (this.baseUrl ??= targetUrl(config.url, '', name)) : targetUrl(config.url, options.forwardPath, name);
    } catch (error) {
      return Promise.reject(asUpstreamError(error, name));
    }
    const headers = this.headersFor(request, options.headers);
    const timeoutMs = options.timeoutMs ?? config.timeout_ms;
    const listen = request.method === 'subscriptions/listen';
    const signal = options.signal;

    return new Promise<JsonRpcResponse>((resolve, reject) => {
      const stop = new Cancellation();
      let timer: NodeJS.Timeout | undefined;
      let settled = false;
      const slot = this.calls.claim();
      const finish = (error: UpstreamError | undefined, response?: JsonRpcResponse): void => {
        if (settled) return;
        settled = true;
        this.calls.delete(slot);
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        // Closing the exchange is how a 2026-07-28 request is cancelled; after an answer it only
        // lets go of what is left of the body.
        stop.abort(error ?? EXCHANGE_OVER);
        if (error) reject(error);
        else resolve(response!);
      };
      const fail: Finish = (error) => finish(error);
      const onAbort = (): void => finish(new UpstreamError('cancelled', name, 'Request cancelled by the client'));
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs > 0) {
        timer = setTimeout(() => finish(new UpstreamError('timeout', name, `Upstream '${name}' did not answer within ${timeoutMs} ms`)), timeoutMs);
      }
      this.calls.set(slot, fail);
      const onNotification = (message: JsonRpcNotification): void => {
        if (settled) return;
        if (listen) {
          if (timer) clearTimeout(timer);
          timer = undefined;
        } else if (message.method === 'notifications/progress') {
          timer?.refresh();
        }
        try {
          options.onMessage(message);
        } catch (error) {
          logger.error({ err: error, method: message.method }, 'message handler threw');
        }
      };
      this.exchange(url, headers, request, stop, onNotification).then(
        (response) => finish(undefined, response),
        (error: unknown) => finish(asUpstreamError(error, name)),
      );
    });
  }

  /** Ends every call in flight (the upstream is closing). */
  close(): void {
    const name = this.context.config.name;
    const error = new UpstreamError('unavailable', name, `Upstream '${name}' is shutting down`);
    for (const fail of this.calls.ordered()) fail(error);
  }

  private async exchange(
    url: URL,
    headers: Record<string, string>,
    request: JsonRpcRequest,
    stop: Cancellation,
    onNotification: (message: JsonRpcNotification) => void,
  ): Promise<JsonRpcResponse> {
    const name = this.context.config.name;
    const response = await httpRequest(this.context, { method: 'POST', url, headers, body: JSON.stringify(request), signal: stop });
    const status = response.statusCode;
    if (status >= 200 && status < 300 && status !== 202) {
      const answer = await this.readAnswer(response, onNotification);
      if (!answer) throw new UpstreamError('closed', name, `Upstream '${name}' ended the stream before answering`);
      answer.id = request.id;
      return answer;
    }
    if (status === 202) {
      await discard(response.body);
      throw new UpstreamError('protocol', name, `Upstream '${name}' accepted a request without answering it`);
    }
    // A modern server answers what it refuses with a JSON-RPC error and a 4xx (400: -32020,
    // -32021, -32022, -32602; 404: -32601): that is the answer, for the client to see as it is.
    // 401 and 403 are the gateway's credentials, not the client's business.
    if (status >= 400 && status < 500 && status !== 401 && status !== 403 && mediaType(response) === 'application/json') {
      const text = await readBody(name, () => readText(response, name, ERROR_ANSWER_LIMIT));
      const answer = errorAnswer(text);
      if (answer) {
        answer.id = request.id;
        return answer;
      }
      this.context.logger.warn({ status, what: `POST ${request.method}`, body: logSnippet(text, this.context.config) }, 'upstream answered an HTTP error');
      throw new UpstreamError('protocol', name, `Upstream '${name}' answered HTTP ${status}`);
    }
    throw (await statusError(this.context, response, `POST ${request.method}`)).error;
  }

  /**
   * The response in a 2xx answer, JSON or SSE; notifications before it go to `onNotification`.
   * Undefined when the body ends without one.
   */
  private async readAnswer(response: HttpResponse, onNotification: (message: JsonRpcNotification) => void): Promise<JsonRpcResponse | undefined> {
    const name = this.context.config.name;
    const type = mediaType(response);
    let answer: JsonRpcResponse | undefined;
    const take = (message: JsonRpcMessage): boolean => {
      if (isResponse(message)) {
        answer = message;
        return false;
      }
      if (isNotification(message)) onNotification(message);
      // "The server MUST NOT send independent JSON-RPC requests on this stream."
      else this.context.logger.warn({ method: (message as JsonRpcRequest).method }, 'a modern upstream sent a request on a response stream; dropped');
      return true;
    };
    if (type === 'application/json') {
      await readBody(name, () =>
        readJsonBody(response, name, (text) => {
          for (const message of parseMessages(text, name)) if (!take(message)) return false;
          return true;
        }),
      );
      return answer;
    }
    if (type === 'text/event-stream') {
      // An event nested too deep: a response in it fails the call (thrown out of the read), other
      // messages are dropped (inbound.ts).
      const onTooDeep = (text: string): void =>
        dropTooDeep(text, name, this.context.logger, (_id, error) => {
          throw error;
        });
      await readBody(name, () =>
        readEvents(response.body, (event) => {
          for (const message of eventMessages(event, name, onTooDeep)) if (!take(message)) return false;
          return true;
        }),
      );
      return answer;
    }
    await discard(response.body);
    throw new UpstreamError('protocol', name, `Upstream '${name}' answered a request with content-type '${type}'`);
  }

  /**
   * The headers of one call: the caller's own (the client's `Mcp-Param-*`) where they name no
   * header the gateway manages or configures, then the configured ones, then the protocol's.
   */
  private headersFor(request: JsonRpcRequest, extra: Record<string, string> | undefined): Record<string, string> {
    const own: Record<string, string | undefined> = {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': requestVersion(request) ?? MODERN_PROTOCOL_VERSION,
      'mcp-method': request.method,
    };
    const named = mcpName(request);
    if (named !== undefined) own['mcp-name'] = encodeHeaderValue(named);
    // The request's `_meta` trace context, also as headers (src/protocol/trace-context.ts).
    const trace = traceHeaders(request);
    if (trace) Object.assign(own, trace);
    const headers = requestHeaders(this.context, own);
    if (extra) {
      for (const [key, value] of Object.entries(extra)) {
        const lower = key.toLowerCase();
        if (isManagedHeader(lower) || lower in headers || !SENDABLE_HEADER_VALUE.test(value)) continue;
        headers[lower] = value;
      }
    }
    return headers;
  }
}

/**
 * A JSON-RPC error response in a body, if that is what it is. Loose on purpose: an error object
 * with a numeric code and a message is enough (the answer goes back with the request's id).
 */
function errorAnswer(text: string): JsonRpcResponse | undefined {
  // Its data would go to the client as it is: nested too deep, it is no answer (inbound.ts).
  if (nestedTooDeep(text)) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  const error = objectOf(objectOf(value)?.['error']);
  if (typeof error?.['code'] !== 'number' || typeof error['message'] !== 'string') return undefined;
  const id = (value as { id?: unknown }).id;
  return { jsonrpc: '2.0', id: typeof id === 'string' || typeof id === 'number' ? id : null, error: error as unknown as JsonRpcErrorObject };
}

/** True when `text` is one JSON value on its own. */
function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * An application/json answer, handed to `onText` (false: stop reading, the answer has come).
 *
 * The specification's answer is one JSON value. Some 2026-07-28 servers (the conformance suite's
 * reference server among them) write one message per line instead, the response last, and keep a
 * `subscriptions/listen` body open with one line per notification for as long as it lasts. Read
 * whole, such a body fails as "not JSON", and a listen body never ends: its client would get
 * nothing, ever. So a body without Content-Length is read as it arrives: each complete line that
 * is JSON on its own is a message, taken at once; once a line is not (JSON printed over several
 * lines), the rest is read and the body parsed as one value, as before. What waits for a newline
 * is bounded like any body (MAX_BODY_BYTES); a listen stream's total is not, as an SSE one's.
 *
 * That text is kept in the pieces it came in, joined once a newline comes (or the body ends): only
 * each new chunk is searched. One string appended to and searched at every chunk was flattened
 * and scanned whole each time (quadratic): a line that never ends took the gateway half a minute
 * of CPU and hundreds of MB of garbage to reach the bound, its client held until timeout_ms.
 */
async function readJsonBody(response: HttpResponse, server: string, onText: (text: string) => boolean): Promise<void> {
  if (header(response, 'content-length') !== undefined) {
    onText(await readText(response, server));
    return;
  }
  const decoder = new TextDecoder();
  let pieces: string[] = [];
  let size = 0;
  let byLine = true;
  for await (const chunk of response.body) {
    const text = decoder.decode(chunk as Uint8Array, { stream: true });
    size += text.length;
    if (size > MAX_BODY_BYTES) {
      throw new UpstreamError('protocol', server, `Upstream '${server}' answered with a body over the limit of ${MAX_BODY_BYTES} bytes`);
    }
    pieces.push(text);
    if (!byLine || !text.includes('\n')) continue;
    let pending = pieces.join('');
    for (let newline = pending.indexOf('\n'); byLine && newline !== -1; newline = pending.indexOf('\n')) {
      const line = pending.slice(0, newline).trim();
      if (line !== '' && !isJson(line)) {
        byLine = false;
        break;
      }
      pending = pending.slice(newline + 1);
      if (line !== '' && !onText(line)) return;
    }
    pieces = [pending];
    size = pending.length;
  }
  const rest = pieces.join('') + decoder.decode();
  if (rest.trim() !== '') onText(rest);
}
