/**
 * The request pipeline of every MCP endpoint, top to bottom. Each stage either adds to what the
 * next one needs or ends the request with a typed GatewayError, rendered in one place
 * (src/http/errors.ts).
 *
 * The order, and why:
 *   1. resolve target   the URL names the server (by name or by prefix); an unknown one is a 404
 *                       that lists the available servers, the same list /routes publishes.
 *   2. decode           JSON-RPC envelope checks; bad input is a 4xx and is never forwarded.
 *   3. session          the gateway's own session id; initialize opens one, others must name a
 *                       live one on the same server, or none at all (a plain curl request).
 *   4. forward          each request with its deadline; related messages stream back on the
 *                       same response when the client accepts SSE.
 * Authentication, rate limits, authorization and the audit/metrics record slot in between these
 * (authenticate and rate-limit before decode, authorize after session, record after forward).
 */
import { SUPPORTED_PROTOCOL_VERSIONS } from '@modelcontextprotocol/sdk/types.js';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ServerConfig } from './config/schema.js';
import { GatewayError, httpError } from './http/errors.js';
import { decodeBody, isRequest, type JsonRpcMessage, type JsonRpcRequest } from './jsonrpc/messages.js';
import type { Gateway } from './mcp/gateway.js';
import { parseAccept, PostResponse } from './mcp/post-response.js';
import type { DownstreamSession } from './mcp/sessions.js';
import { SseWriter } from './mcp/sse-writer.js';
import { UpstreamError } from './upstreams/errors.js';
import type { UpstreamSession } from './upstreams/upstream.js';

/** Where a request goes: stage 1's result. */
export interface Target {
  server: ServerConfig;
  /** Path and query appended to an http/sse upstream's url; '' = the url unchanged. */
  forwardPath: string;
}

const SESSION_HEADER = 'mcp-session-id';
const VERSION_HEADER = 'mcp-protocol-version';
/** Content types a JSON-RPC body may arrive with: curl's `-d` default is form-urlencoded. */
const JSON_LIKE = /^(application\/json|application\/x-www-form-urlencoded|text\/plain)\b/i;

export function sendError(reply: FastifyReply, error: GatewayError, headers: Record<string, string> = {}): void {
  const { status, body } = httpError(error);
  void reply.code(status).headers(headers).type('application/json').send(JSON.stringify(body));
}

function header(request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** POST: the client sends requests, notifications or answers. */
export async function handlePost(gateway: Gateway, target: Target, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  try {
    const messages = decode(request);
    const sessionId = header(request, SESSION_HEADER);
    const initialize = messages.messages.find((m): m is JsonRpcRequest => isRequest(m) && m.method === 'initialize');
    if (initialize) {
      await openSession(gateway, target, initialize, messages.messages.length, sessionId, request, reply);
      return;
    }
    checkProtocolVersion(request);
    const session = sessionId === undefined ? undefined : findSession(gateway, target, sessionId);
    session?.touch();
    await exchange(gateway, target, session, messages, request, reply, true);
  } catch (err) {
    if (err instanceof GatewayError) sendError(reply, err);
    else throw err;
  }
}

/** Stage 2: the body as JSON-RPC messages. */
function decode(request: FastifyRequest): { messages: JsonRpcMessage[]; batch: boolean } {
  const contentType = header(request, 'content-type');
  if (contentType !== undefined && !JSON_LIKE.test(contentType)) {
    throw new GatewayError('unsupported_media_type', 'Unsupported Media Type: send the JSON-RPC message as application/json');
  }
  const body = typeof request.body === 'string' ? request.body : '';
  const decoded = decodeBody(body);
  if ('kind' in decoded) {
    throw new GatewayError(decoded.kind === 'parse' ? 'parse_error' : 'invalid_request', decoded.message, 'id' in decoded ? decoded.id : null);
  }
  return decoded;
}

function checkProtocolVersion(request: FastifyRequest): void {
  const version = header(request, VERSION_HEADER);
  if (version !== undefined && !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
    throw new GatewayError(
      'unsupported_protocol_version',
      `Bad Request: unsupported MCP-Protocol-Version ${JSON.stringify(version)} (supported: ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')})`,
    );
  }
}

/** Stage 3: the session named by Mcp-Session-Id, on the server the URL names. */
function findSession(gateway: Gateway, target: Target, sessionId: string): DownstreamSession {
  const session = gateway.sessions.get(sessionId);
  if (!session || session.server !== target.server.name) {
    throw new GatewayError('session_not_found', 'Session not found: start a new session with initialize');
  }
  return session;
}

async function openSession(
  gateway: Gateway,
  target: Target,
  initialize: JsonRpcRequest,
  count: number,
  sessionId: string | undefined,
  request: FastifyRequest,
  reply: FastifyReply,
): Promise<void> {
  if (count > 1) throw new GatewayError('invalid_request', 'Invalid Request: initialize must be sent on its own, not in a batch', initialize.id);
  if (sessionId !== undefined) {
    throw new GatewayError('invalid_request', 'Invalid Request: initialize opens a new session; send it without Mcp-Session-Id', initialize.id);
  }
  const { response, session } = await gateway.initialize(target.server, target.forwardPath, initialize);
  const headers: Record<string, string> = session ? { [SESSION_HEADER]: session.id } : {};
  const post = new PostResponse(reply, parseAccept(header(request, 'accept')), headers);
  post.finish([{ response, status: 200, cancelled: false }], false);
}

/** Stage 4: notifications and answers are relayed; requests are forwarded and answered. */
async function exchange(
  gateway: Gateway,
  target: Target,
  session: DownstreamSession | undefined,
  decoded: { messages: JsonRpcMessage[]; batch: boolean },
  request: FastifyRequest,
  reply: FastifyReply,
  retry: boolean,
): Promise<void> {
  let upstream: UpstreamSession;
  try {
    upstream = session ? session.upstream : await gateway.sharedSession(target.server, target.forwardPath);
  } catch (err) {
    const first = decoded.messages.find(isRequest);
    throw err instanceof UpstreamError ? GatewayError.fromUpstream(err, first?.id ?? null) : err;
  }
  const requests: JsonRpcRequest[] = [];
  for (const message of decoded.messages) {
    if (isRequest(message)) requests.push(message);
    else await gateway.relayToUpstream(message, upstream, session);
  }
  if (requests.length === 0) {
    void reply.code(202).send();
    return;
  }
  const headers: Record<string, string> = session ? { [SESSION_HEADER]: session.id } : {};
  const post = new PostResponse(reply, parseAccept(header(request, 'accept')), headers);
  const outcomes = await Promise.all(requests.map((r) => gateway.forward(r, upstream, session, post)));
  // The gateway's own shared session expired upstream: open a new one and try once more (unless
  // something was already streamed to the client: a second answer cannot follow on that response).
  if (!session && retry && !post.streaming && outcomes.every((o) => o.status === 404)) {
    gateway.dropSharedSession(target.server, target.forwardPath, upstream);
    await exchange(gateway, target, session, { messages: requests, batch: decoded.batch }, request, reply, false);
    return;
  }
  post.finish(outcomes, decoded.batch);
}

/** GET: the client opens the standalone stream of server-to-client messages. */
export function handleGet(gateway: Gateway, target: Target, request: FastifyRequest, reply: FastifyReply): void {
  try {
    const sessionId = header(request, SESSION_HEADER);
    if (sessionId === undefined) throw new GatewayError('session_required', 'Bad Request: Mcp-Session-Id header is required');
    if (!parseAccept(header(request, 'accept')).sse) {
      throw new GatewayError('not_acceptable', 'Not Acceptable: the client must accept text/event-stream');
    }
    const session = findSession(gateway, target, sessionId);
    if (session.eventStream?.open) throw new GatewayError('stream_conflict', 'Conflict: only one stream is allowed per session');
    reply.hijack();
    session.attachEventStream(new SseWriter(reply.raw, { [SESSION_HEADER]: session.id }, { keepalive: true }));
  } catch (err) {
    if (err instanceof GatewayError) sendError(reply, err);
    else throw err;
  }
}

/** DELETE: the client ends its session. */
export async function handleDelete(gateway: Gateway, target: Target, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  try {
    const sessionId = header(request, SESSION_HEADER);
    if (sessionId === undefined) throw new GatewayError('session_required', 'Bad Request: Mcp-Session-Id header is required');
    const session = findSession(gateway, target, sessionId);
    await gateway.sessions.close(session, 'client DELETE');
    void reply.code(200).send();
  } catch (err) {
    if (err instanceof GatewayError) sendError(reply, err);
    else throw err;
  }
}
