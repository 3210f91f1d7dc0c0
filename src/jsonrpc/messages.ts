/**
 * JSON-RPC 2.0 messages as MCP uses them. Wire payloads from peers stay loosely typed (params and
 * results are plain objects) so that every valid peer passes; only the envelope is checked.
 */

/** A JSON-RPC id. MCP forbids null ids on requests. */
export type JsonRpcId = string | number;

export interface JsonRpcRequest {
  jsonrpc: '2.0';
  id: JsonRpcId;
  method: string;
  params?: Record<string, unknown>;
}

export interface JsonRpcNotification {
  jsonrpc: '2.0';
  method: string;
  params?: Record<string, unknown>;
}

export interface JsonRpcResult {
  jsonrpc: '2.0';
  id: JsonRpcId;
  result: Record<string, unknown>;
}

export interface JsonRpcErrorObject {
  code: number;
  message: string;
  data?: unknown;
}

export interface JsonRpcErrorResponse {
  jsonrpc: '2.0';
  id: JsonRpcId | null;
  error: JsonRpcErrorObject;
}

export type JsonRpcResponse = JsonRpcResult | JsonRpcErrorResponse;
export type JsonRpcMessage = JsonRpcRequest | JsonRpcNotification | JsonRpcResponse;

/** Standard JSON-RPC codes and the MCP/gateway codes in the implementation-defined range. */
export const ErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  /** The upstream could not be reached, failed, or is not available (gateway-defined). */
  UpstreamError: -32000,
  /** Session not found (the code the MCP SDK uses). */
  SessionNotFound: -32001,
  /** The upstream did not answer within the server's timeout (gateway-defined). */
  UpstreamTimeout: -32002,
  /** No or bad credentials (gateway-defined; sent with HTTP 401, 429 or 503). */
  Unauthorized: -32010,
  /** The identity may not use this server or tool (gateway-defined). */
  Forbidden: -32011,
  /** A rate limit refused the request, or could not be checked (gateway-defined; HTTP 429 or 503). */
  RateLimited: -32012,
  /** 2026-07-28: a mirrored HTTP header (Mcp-Method, Mcp-Name, MCP-Protocol-Version) is missing or unlike the body. */
  HeaderMismatch: -32020,
  /** 2026-07-28: the request needs a client capability its `_meta` does not declare. */
  MissingRequiredClientCapability: -32021,
  /** 2026-07-28 (and the gateway's answer to any unknown version): `data` lists the supported versions. */
  UnsupportedProtocolVersion: -32022,
  /** The request was cancelled (gateway-defined, sent only to a client that is still waiting). */
  RequestCancelled: -32800,
} as const;

export function isRequest(m: JsonRpcMessage): m is JsonRpcRequest {
  return 'method' in m && 'id' in m;
}

export function isNotification(m: JsonRpcMessage): m is JsonRpcNotification {
  return 'method' in m && !('id' in m);
}

export function isResponse(m: JsonRpcMessage): m is JsonRpcResponse {
  return !('method' in m) && ('result' in m || 'error' in m);
}

export function errorResponse(id: JsonRpcId | null, code: number, message: string, data?: unknown): JsonRpcErrorResponse {
  const error: JsonRpcErrorObject = data === undefined ? { code, message } : { code, message, data };
  return { jsonrpc: '2.0', id, error };
}

/** A key under which an id can live in a Map: 1 and "1" are different JSON-RPC ids. */
export function idKey(id: JsonRpcId): string {
  return typeof id === 'number' ? `n:${id}` : `s:${id}`;
}

/** True for a JSON object (not null, not an array): what params, results and `_meta` must be. */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The value when it is a JSON object, else undefined: for reading a peer's loosely typed members. */
export function objectOf(v: unknown): Record<string, unknown> | undefined {
  return isObject(v) ? v : undefined;
}

function isId(v: unknown): v is JsonRpcId {
  return typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v));
}

/**
 * Checks the JSON-RPC envelope of one decoded value. Returns the message, or a reason why it is
 * not a valid MCP JSON-RPC message (the caller answers -32600 Invalid Request).
 */
export function toMessage(value: unknown): JsonRpcMessage | string {
  if (!isObject(value)) return 'a JSON-RPC message must be an object';
  if (value['jsonrpc'] !== '2.0') return 'jsonrpc must be "2.0"';
  const hasId = 'id' in value;
  if ('method' in value) {
    if (typeof value['method'] !== 'string' || value['method'] === '') return 'method must be a non-empty string';
    if ('params' in value && value['params'] !== undefined && !isObject(value['params'])) {
      return 'params must be an object';
    }
    if (hasId && !isId(value['id'])) return 'id must be a string or a number';
    return value as unknown as JsonRpcMessage;
  }
  if ('result' in value || 'error' in value) {
    if (!hasId || !(isId(value['id']) || value['id'] === null)) return 'a response needs an id';
    if ('error' in value) {
      const e = value['error'];
      if (!isObject(e) || typeof e['code'] !== 'number' || typeof e['message'] !== 'string') {
        return 'error must be an object with a numeric code and a message';
      }
    } else if (!isObject(value['result'])) {
      return 'result must be an object';
    }
    return value as unknown as JsonRpcMessage;
  }
  return 'not a request, notification or response';
}

/**
 * Bounds on what a client may send that protect the gateway itself. Ids and method names are
 * logged, written to the audit log, kept in maps while a call is in flight and echoed in answers:
 * no client needs more than this, and more would only cost memory and log volume.
 */
export const MAX_METHOD_LENGTH = 256;
export const MAX_ID_LENGTH = 256;

/** Limits a POST body is decoded with: the `[server]` settings `max_batch_length` and `max_json_depth`. */
export interface DecodeLimits {
  maxBatchLength: number;
  maxDepth: number;
}

/** The `[server]` defaults, for callers without a config. */
export const DEFAULT_DECODE_LIMITS: DecodeLimits = { maxBatchLength: 100, maxDepth: 64 };

/**
 * True when the text nests arrays and objects deeper than `max`. One pass over the text, skipping
 * strings (with their escapes) through indexOf, so it costs far less than the JSON.parse it
 * protects: JSON.parse itself copes with any depth, but JSON.stringify (which forwards a request)
 * and every other recursive walk overflows the stack at a few thousand levels, and turned a
 * client's garbage into an internal error. Invalid JSON is not judged here; JSON.parse does that.
 */
export function nestedDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      i = closingQuote(text, i);
      if (i === -1) return false;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return false;
}

/** The index of the quote that ends the string opened at `open`, or -1 when it never ends. */
export function closingQuote(text: string, open: number): number {
  let at = open;
  for (;;) {
    at = text.indexOf('"', at + 1);
    if (at === -1) return -1;
    // Escaped when preceded by an odd number of backslashes (each run is counted once: O(n)).
    let backslashes = 0;
    while (text.charCodeAt(at - 1 - backslashes) === 0x5c) backslashes++;
    if (backslashes % 2 === 0) return at;
  }
}

/**
 * An id as a client may send it: a string of at most MAX_ID_LENGTH characters, or a number JSON
 * can carry exactly. Beyond 2^53 JSON.parse rounds, and the answer would carry another id than
 * the one sent.
 */
function isClientId(v: unknown): v is JsonRpcId {
  if (typeof v === 'string') return v.length <= MAX_ID_LENGTH;
  return typeof v === 'number' && Number.isFinite(v) && Math.abs(v) <= Number.MAX_SAFE_INTEGER;
}

const CLIENT_ID_RULE = `id must be a string of at most ${MAX_ID_LENGTH} characters or a number from -(2^53 - 1) to 2^53 - 1`;

/**
 * One message of a client's body, checked (toMessage's envelope rules plus the client bounds) and
 * rebuilt from its JSON-RPC members only: what goes upstream is always a well-formed JSON-RPC
 * 2.0 object, whatever else the client put in it. A message that is both a request and a response
 * is refused rather than guessed at.
 */
export function toClientMessage(value: unknown): JsonRpcMessage | string {
  const checked = toMessage(value);
  if (typeof checked === 'string') return checked;
  const v = value as Record<string, unknown>;
  const hasId = 'id' in v;
  if ('method' in v) {
    if ('result' in v || 'error' in v) return 'a message has either a method or a result or error, not both';
    if ((v['method'] as string).length > MAX_METHOD_LENGTH) return `method must be at most ${MAX_METHOD_LENGTH} characters`;
    if (hasId && !isClientId(v['id'])) return CLIENT_ID_RULE;
    const message: Record<string, unknown> = { jsonrpc: '2.0' };
    if (hasId) message['id'] = v['id'];
    message['method'] = v['method'];
    if (v['params'] !== undefined) message['params'] = v['params'];
    return message as unknown as JsonRpcMessage;
  }
  if ('result' in v && 'error' in v) return 'a response has either a result or an error, not both';
  if (v['id'] !== null && !isClientId(v['id'])) return CLIENT_ID_RULE;
  const id = v['id'] as JsonRpcId | null;
  if (!('error' in v)) return { jsonrpc: '2.0', id: id as JsonRpcId, result: v['result'] as Record<string, unknown> };
  const e = v['error'] as Record<string, unknown>;
  if (!Number.isSafeInteger(e['code'])) return 'error.code must be an integer';
  return errorResponse(id, e['code'] as number, e['message'] as string, e['data']);
}

/** The decoded body of a POST: one message or a batch. */
export interface DecodedBody {
  messages: JsonRpcMessage[];
  batch: boolean;
}

export type DecodeFailure = { kind: 'parse'; message: string } | { kind: 'invalid'; message: string; id: JsonRpcId | null };

/**
 * Parses and checks a POST body: depth first (before JSON.parse builds anything), then the
 * batch's length, then each message. Never throws on client input.
 */
export function decodeBody(text: string, limits: DecodeLimits = DEFAULT_DECODE_LIMITS): DecodedBody | DecodeFailure {
  if (nestedDeeperThan(text, limits.maxDepth)) {
    return { kind: 'invalid', message: `Invalid Request: the JSON is nested deeper than ${limits.maxDepth} levels`, id: null };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { kind: 'parse', message: 'Parse error: the body is not valid JSON' };
  }
  const batch = Array.isArray(value);
  const items: unknown[] = batch ? (value as unknown[]) : [value];
  if (items.length === 0) return { kind: 'invalid', message: 'Invalid Request: empty batch', id: null };
  if (items.length > limits.maxBatchLength) {
    return { kind: 'invalid', message: `Invalid Request: a batch may hold at most ${limits.maxBatchLength} messages`, id: null };
  }
  const messages: JsonRpcMessage[] = [];
  for (const item of items) {
    const m = toClientMessage(item);
    if (typeof m === 'string') {
      const id = isObject(item) && isClientId(item['id']) ? item['id'] : null;
      return { kind: 'invalid', message: `Invalid Request: ${m}`, id };
    }
    messages.push(m);
  }
  return { messages, batch };
}
