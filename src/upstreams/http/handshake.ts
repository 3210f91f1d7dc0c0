/**
 * The MCP initialize exchange of a legacy-era HTTP session (spec: basic/lifecycle), on whatever
 * connection the transport chooses: the client's own initialize forwarded, or the gateway's when
 * it opens a session of its own; then `notifications/initialized` when nobody else will send it.
 */
import type { JsonRpcNotification, JsonRpcRequest, JsonRpcResponse } from '../../jsonrpc/messages.js';
import { GATEWAY_NAME, GATEWAY_VERSION } from '../../version.js';
import type { RequestOptions, ServerMessage } from '../upstream.js';

/**
 * The initialize the gateway sends for a session it owns (no client initialize to forward). It
 * declares sampling and elicitation: a server asks for them while handling a 2026-07-28 client's
 * call, and the gateway relays them to that client as `input_required` rounds
 * (src/eras/input-rounds.ts). A plain session-less client cannot answer: such requests are
 * refused at once (src/mcp/gateway.ts).
 */
export function gatewayInitialize(protocolVersion: string): JsonRpcRequest {
  return {
    jsonrpc: '2.0',
    id: 0,
    method: 'initialize',
    params: { protocolVersion, capabilities: { sampling: {}, elicitation: {} }, clientInfo: { name: GATEWAY_NAME, version: GATEWAY_VERSION } },
  };
}

export const INITIALIZED: JsonRpcNotification = { jsonrpc: '2.0', method: 'notifications/initialized' };

/** The two calls the initialize handshake makes, on whatever connection the transport chooses. */
export interface HandshakeChannel {
  request(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse>;
  send(message: JsonRpcNotification): Promise<void>;
}

export interface HandshakeOptions {
  /** The client's initialize; absent = the gateway's own with `protocolVersion`. */
  initialize: JsonRpcRequest | undefined;
  protocolVersion: string;
  /**
   * Send `notifications/initialized` after a successful result. Only when the client will not send
   * its own (the gateway's own initialize, or a replay after a reconnect).
   */
  announce: boolean;
  timeoutMs: number;
  onMessage: (message: ServerMessage) => void;
}

/**
 * The MCP lifecycle's initialization phase (spec: basic/lifecycle). An answer that is a JSON-RPC
 * error is returned, not thrown: the core relays it to the client.
 */
export async function handshake(channel: HandshakeChannel, options: HandshakeOptions): Promise<JsonRpcResponse> {
  const initialize = options.initialize ?? gatewayInitialize(options.protocolVersion);
  const response = await channel.request(initialize, { timeoutMs: options.timeoutMs, onMessage: options.onMessage });
  if (options.announce && 'result' in response) await channel.send(INITIALIZED);
  return response;
}

/** The protocol version a server chose in its initialize result, if it is one. */
export function negotiatedVersion(response: JsonRpcResponse): string | undefined {
  if (!('result' in response)) return undefined;
  const version = response.result['protocolVersion'];
  return typeof version === 'string' ? version : undefined;
}
