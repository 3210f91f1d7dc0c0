/**
 * The two eras of MCP and how the gateway tells them apart on its downstream side.
 *
 * - Legacy (protocol versions up to 2025-11-25): `initialize` opens a session (`Mcp-Session-Id`),
 *   the server may send requests to the client, a GET opens the standalone stream.
 * - Modern (2026-07-28): stateless. Every request carries its own context in `params._meta`
 *   (protocol version, client capabilities, client info), HTTP requests mirror the method and
 *   name in headers (`Mcp-Method`, `Mcp-Name`) that must match the body, `server/discover`
 *   replaces `initialize`.
 *
 * A dual-era server chooses per request (specification, basic/versioning "A dual-era server
 * selects its behavior from how the client opens"): a request whose `_meta` names a protocol
 * version is modern; anything else is legacy. A modern `MCP-Protocol-Version` header on a body
 * without that claim is a malformed modern request, not a legacy one, so it cannot slip past the
 * header checks by leaving `_meta` out.
 *
 * Everything here is pure: the checks of a modern request, in the order the specification and
 * the official SDK apply them, each ending in the error the specification names. docs/eras.md
 * has the decisions.
 */
import { GatewayError } from '../http/errors.js';
import { objectOf, type JsonRpcMessage, type JsonRpcNotification, type JsonRpcRequest } from '../jsonrpc/messages.js';
import { CACHEABLE_METHODS, META } from '../protocol/modern.js';
import { MODERN_PROTOCOL_VERSIONS } from '../protocol/versions.js';

/** Every `_meta` key of the modern envelope: removed before a request goes to a legacy server. */
const ENVELOPE_KEYS: readonly string[] = [META.protocolVersion, META.clientCapabilities, META.clientInfo, META.logLevel];

/** Methods whose `Mcp-Name` header mirrors a body field. */
const NAME_FIELD: Readonly<Record<string, 'name' | 'uri'>> = {
  'tools/call': 'name',
  'prompts/get': 'name',
  'resources/read': 'uri',
};

/** The checked context of one modern request. */
export interface ModernContext {
  version: string;
  clientCapabilities: Record<string, unknown>;
  clientInfo: Record<string, unknown> | undefined;
  /** The client asked for log notifications at this level and above; none without it. */
  logLevel: string | undefined;
}

/** How a header is read: the first value, or undefined. */
export type HeaderReader = (name: string) => string | undefined;

function metaOf(message: JsonRpcMessage): Record<string, unknown> | undefined {
  if (!('method' in message)) return undefined;
  return objectOf(message.params?.['_meta']);
}

/**
 * True when a POST is modern: one of its messages claims a protocol version in `_meta`, or the
 * `MCP-Protocol-Version` header names a modern version.
 */
export function isModern(messages: readonly JsonRpcMessage[], versionHeader: string | undefined): boolean {
  if (versionHeader !== undefined && MODERN_PROTOCOL_VERSIONS.includes(versionHeader.trim())) return true;
  for (const message of messages) {
    const meta = metaOf(message);
    if (meta !== undefined && META.protocolVersion in meta) return true;
  }
  return false;
}

function headerMismatch(message: string, id: JsonRpcRequest['id'] | null): GatewayError {
  return new GatewayError('header_mismatch', `Bad Request: the request headers and body disagree: ${message}`, id);
}

function invalidEnvelope(message: string, id: JsonRpcRequest['id'] | null): GatewayError {
  return new GatewayError('invalid_params', `Invalid params: ${message}`, id);
}

/**
 * A header value as the specification encodes it: plain, or `=?base64?…?=` for values that are
 * not plain visible ASCII. Undefined when the encoded form is not valid Base64.
 */
export function decodeHeaderValue(value: string): string | undefined {
  const trimmed = value.trim();
  if (!trimmed.startsWith('=?base64?') || !trimmed.endsWith('?=') || trimmed.length < 11) return trimmed;
  const encoded = trimmed.slice(9, -2);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(encoded) || encoded.length % 4 !== 0) return undefined;
  return Buffer.from(encoded, 'base64').toString('utf8');
}

/**
 * Checks a modern POST body and its headers. Throws the specified error for the first problem:
 *
 * - a batch, or a body that is not one request or notification: 400, -32600;
 * - `_meta` missing, or without the protocol version or client capabilities: 400, -32602;
 * - `MCP-Protocol-Version` missing or unlike the body's version: 400, -32020;
 * - a version the gateway does not speak: 400, -32022 with the supported versions;
 * - `Mcp-Method` missing or unlike the method, `Mcp-Name` missing or unlike the name or uri of
 *   tools/call, prompts/get and resources/read: 400, -32020.
 *
 * Notifications are accepted without the header checks: the specification defines none for
 * them, and the official client sends its `notifications/cancelled` without `Mcp-Method`.
 */
export function checkModern(
  messages: readonly JsonRpcMessage[],
  batch: boolean,
  header: HeaderReader,
): { message: JsonRpcRequest | JsonRpcNotification; context: ModernContext } {
  const message = messages[0];
  if (batch || messages.length !== 1 || message === undefined || !('method' in message)) {
    throw new GatewayError('invalid_request', 'Invalid Request: a 2026-07-28 POST carries exactly one request or notification, never a batch or a response');
  }
  const id = 'id' in message ? message.id : null;
  const meta = metaOf(message);
  if (meta === undefined) {
    throw invalidEnvelope('the MCP-Protocol-Version header names a 2026-07-28 revision, but the request has no params._meta envelope', id);
  }
  const version = meta[META.protocolVersion];
  if (typeof version !== 'string') throw invalidEnvelope(`_meta["${META.protocolVersion}"] must be a string`, id);
  const versionHeader = header('mcp-protocol-version')?.trim();
  if (versionHeader !== version) {
    throw headerMismatch(
      versionHeader === undefined
        ? `the body names protocol version ${version} but the MCP-Protocol-Version header is absent`
        : `the MCP-Protocol-Version header names ${versionHeader} but the body names ${version}`,
      id,
    );
  }
  if (!MODERN_PROTOCOL_VERSIONS.includes(version)) {
    throw new GatewayError('unsupported_protocol_version', `Unsupported protocol version: ${version}`, id, {
      supported: [...MODERN_PROTOCOL_VERSIONS],
      requested: version,
    });
  }
  const capabilities = objectOf(meta[META.clientCapabilities]);
  if (capabilities === undefined) {
    throw invalidEnvelope(`_meta["${META.clientCapabilities}"] is required (an object, {} for none)`, id);
  }
  const clientInfo = meta[META.clientInfo];
  const logLevel = meta[META.logLevel];
  const context: ModernContext = {
    version,
    clientCapabilities: capabilities,
    clientInfo: objectOf(clientInfo),
    logLevel: typeof logLevel === 'string' ? logLevel : undefined,
  };
  if (!('id' in message)) return { message, context };

  const methodHeader = header('mcp-method')?.trim();
  if (methodHeader !== message.method) {
    throw headerMismatch(
      methodHeader === undefined
        ? `the body names method ${message.method} but the Mcp-Method header is absent`
        : `the Mcp-Method header names ${methodHeader} but the body names ${message.method}`,
      id,
    );
  }
  const field = NAME_FIELD[message.method];
  if (field !== undefined) {
    const value = message.params?.[field];
    const raw = header('mcp-name');
    const named = raw === undefined ? undefined : decodeHeaderValue(raw);
    if (raw === undefined) throw headerMismatch(`the body carries params.${field} but the Mcp-Name header is absent`, id);
    if (named === undefined) throw headerMismatch('the Mcp-Name header is not valid =?base64?…?= encoding', id);
    if (named !== value) throw headerMismatch(`the Mcp-Name header does not match params.${field}`, id);
  }
  return { message, context };
}

/**
 * The request as a legacy server takes it: the modern envelope keys removed from `_meta` (a
 * progress token and other keys stay). Other members are kept as they are.
 */
export function toLegacyRequest(request: JsonRpcRequest): JsonRpcRequest {
  const meta = metaOf(request);
  if (meta === undefined) return request;
  const rest: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(meta)) if (!ENVELOPE_KEYS.includes(key)) rest[key] = value;
  const params: Record<string, unknown> = { ...request.params };
  if (Object.keys(rest).length > 0) params['_meta'] = rest;
  else delete params['_meta'];
  return { ...request, params };
}

/**
 * A legacy server's result in the modern shape: `resultType` (every modern result has one),
 * the caching hints on the methods that carry them (a legacy server gives none: not cacheable,
 * and private), and the server's identity in `_meta`.
 */
export function toModernResult(method: string, result: Record<string, unknown>, serverInfo: unknown): Record<string, unknown> {
  const modern: Record<string, unknown> = { ...result };
  if (modern['resultType'] === undefined) modern['resultType'] = 'complete';
  // Caching hints belong to complete results only.
  if (CACHEABLE_METHODS.has(method) && modern['resultType'] === 'complete') {
    if (typeof modern['ttlMs'] !== 'number') modern['ttlMs'] = 0;
    if (modern['cacheScope'] !== 'public' && modern['cacheScope'] !== 'private') modern['cacheScope'] = 'private';
  }
  if (serverInfo !== undefined) {
    modern['_meta'] = { ...objectOf(result['_meta']), [META.serverInfo]: serverInfo };
  }
  return modern;
}

/**
 * The answer to `server/discover` for a legacy server, from what its `initialize` said: the
 * versions the gateway speaks, the server's capabilities and instructions, and its identity
 * (in `_meta`, where the final 2026-07-28 revision puts it, and in the body for clients of the
 * earlier drafts).
 */
export function discoverResult(initializeResult: Record<string, unknown>): Record<string, unknown> {
  const result: Record<string, unknown> = {
    supportedVersions: [...MODERN_PROTOCOL_VERSIONS],
    capabilities: objectOf(initializeResult['capabilities']) ?? {},
  };
  const serverInfo = initializeResult['serverInfo'];
  if (serverInfo !== undefined) result['serverInfo'] = serverInfo;
  if (typeof initializeResult['instructions'] === 'string') result['instructions'] = initializeResult['instructions'];
  return toModernResult('server/discover', result, serverInfo);
}
