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

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
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

/** The decoded body of a POST: one message or a batch. */
export interface DecodedBody {
  messages: JsonRpcMessage[];
  batch: boolean;
}

export type DecodeFailure = { kind: 'parse'; message: string } | { kind: 'invalid'; message: string; id: JsonRpcId | null };

/** Parses and checks a POST body. Never throws on client input. */
export function decodeBody(text: string): DecodedBody | DecodeFailure {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { kind: 'parse', message: 'Parse error: the body is not valid JSON' };
  }
  const batch = Array.isArray(value);
  const items: unknown[] = batch ? (value as unknown[]) : [value];
  if (items.length === 0) return { kind: 'invalid', message: 'Invalid Request: empty batch', id: null };
  const messages: JsonRpcMessage[] = [];
  for (const item of items) {
    const m = toMessage(item);
    if (typeof m === 'string') {
      const id = isObject(item) && isId(item['id']) ? item['id'] : null;
      return { kind: 'invalid', message: `Invalid Request: ${m}`, id };
    }
    messages.push(m);
  }
  return { messages, batch };
}
