/**
 * The request pipeline of every MCP endpoint, top to bottom. Each stage either adds to what the
 * next one needs or ends the request with a typed GatewayError, rendered in one place
 * (src/http/errors.ts).
 *
 * The order, and why:
 *   0. onRequest hooks, before the body is even read (wired in src/app.ts):
 *      a. address limit  per client address (src/ratelimit/): a flood, with or without
 *                        credentials, is refused for the price of a counter, before any key is
 *                        verified.
 *      b. authenticate   src/http/auth.ts: an unauthenticated client costs no parsing and learns
 *                        nothing about servers.
 *      c. identity limit right after authentication: per identity (a key's own `rate_limit`
 *                        when it has one), so one caller cannot use up another's share.
 *   1. resolve target   the URL names the server (by name or by prefix); an unknown one is a 404
 *                       that lists the servers this identity may reach (src/app.ts).
 *   2. server access    an identity restricted to some servers gets 403 on the others, whatever
 *                       the method: it must not reach them at all.
 *   3. decode           JSON-RPC envelope checks within the [server] limits (nesting depth, checked
 *                       before the body is parsed; batch length; id and method sizes); bad input
 *                       is a 4xx and is never forwarded, and what is forwarded is rebuilt from
 *                       its JSON-RPC members only. Then (3b, src/mcp/request-check.ts; for a
 *                       2026-07-28 request right after its header checks) the params of known
 *                       methods against the SDK's schemas (-32602), and no request-only method
 *                       sent as a notification (-32600): such a message would skip authorization
 *                       and the audit log, and a malformed one cost a timeout and a circuit
 *                       failure upstream. Refused, recorded, never forwarded.
 *   4. era and session  a 2026-07-28 request (its _meta names a protocol version) has no
 *                       session: its Mcp-Method / Mcp-Name / MCP-Protocol-Version headers are
 *                       checked against the body first (handleModern; docs/eras.md), and it goes
 *                       to a modern server as it is (directExchange) or to a legacy one on the
 *                       gateway's own upstream session, translated. Otherwise: the gateway's own
 *                       session id; initialize opens one, others must name a live one on the
 *                       same server opened by the same identity, or none at all (a plain curl
 *                       request).
 *   5. authorize        per request, batch elements included: a tools/call of a tool outside the
 *                       identity's policy is answered with an error here and never forwarded.
 *                       Then the tool limits: each tools/call (batch elements included) counts
 *                       against the limits whose tool_pattern matches; a limited one is answered
 *                       in place (HTTP 429 when it is the only request) and never forwarded.
 *                       After authorization, so a refused call uses up nothing. A request about
 *                       a task that is not the identity's (tasks/get|result|cancel, a related
 *                       task in _meta, a tasks/list cursor) is answered here exactly as an
 *                       unknown task (src/mcp/tasks.ts).
 *   6. forward          each request with its deadline; related messages stream back on the
 *                       same response when the client accepts SSE. tools/list results are
 *                       filtered to the identity's tools on the way back; a created task is
 *                       recorded as the identity's, tasks/list pages are cut to its tasks.
 *   7. record           src/observability/recorder.ts: each refusal (server, tool, limit) and each
 *                       forwarded request becomes its audit line and its metric series, in one
 *                       call, so the two never disagree. Authentication records its own outcome.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { mayReach, ownerKey, type Identity } from './auth/identity.js';
import type { ServerConfig, ServerSettings } from './config/schema.js';
import { GatewayError, httpError, sendError } from './http/errors.js';
import { decodeBody, isRequest, objectOf, type JsonRpcId, type JsonRpcMessage, type JsonRpcRequest } from './jsonrpc/messages.js';
import type { Gateway } from './mcp/gateway.js';
import { checkModern, discoverResult, isModern, MODERN_METHODS, MODERN_PROTOCOL_VERSIONS, toModernResult, type ModernContext } from './mcp/era.js';
import { bindingOf } from './mcp/input-rounds.js';
import { checkMessages, type SchemaEra } from './mcp/request-check.js';
import { honored, Listener } from './mcp/subscriptions.js';
import { errorOutcome, parseAccept, PostResponse, type Outcome } from './mcp/post-response.js';
import type { DownstreamSession } from './mcp/sessions.js';
import { SUPPORTED_PROTOCOL_VERSIONS } from './mcp/protocol.js';
import { SseWriter } from './mcp/sse-writer.js';
import { calledTool, filterToolsList } from './policy/tools.js';
import type { Recorder } from './observability/recorder.js';
import type { RateLimiter } from './ratelimit/limiter.js';
import { UpstreamError } from './upstreams/errors.js';
import type { Era, UpstreamSession } from './upstreams/upstream.js';
import { errorMessage } from './error-message.js';

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

function header(request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** What every stage after resolution knows: the request, where it goes and who sent it. */
export interface Context {
  gateway: Gateway;
  target: Target;
  identity: Identity;
  /** The rate limits; undefined when none are enforced. */
  limiter?: RateLimiter | undefined;
  /** Stage 7: the audit log and metrics. */
  recorder: Recorder;
  /** The HTTP request (its id, client address and arrival time go into every record). */
  request: FastifyRequest;
}

/** POST: the client sends requests, notifications or answers. */
export async function handlePost(context: Context, reply: FastifyReply): Promise<void> {
  const { request } = context;
  try {
    checkServerAccess(context);
    const messages = decode(request, context.gateway.config.server);
    if (isModern(messages.messages, header(request, VERSION_HEADER))) {
      await handleModern(context, messages, reply);
      return;
    }
    checkWellFormed(context, messages, 'legacy');
    const sessionId = header(request, SESSION_HEADER);
    const initialize = messages.messages.find((m): m is JsonRpcRequest => isRequest(m) && m.method === 'initialize');
    if (initialize) {
      await openSession(context, initialize, messages.messages.length, sessionId, reply);
      return;
    }
    checkProtocolVersion(request);
    const session = sessionId === undefined ? undefined : findSession(context, sessionId);
    session?.touch();
    await exchange(context, session, messages, reply, true);
  } catch (err) {
    if (err instanceof GatewayError) sendError(reply, err);
    else throw err;
  }
}

/**
 * Stage 4 for a 2026-07-28 request (src/mcp/era.ts): no session, its context travels in its
 * `_meta`, and its mirrored headers are checked against the body before any later stage reads
 * the method or tool. `server/discover` is answered from what the server said when the gateway
 * initialized it; a method the era does not have is a 404. The request then goes through the
 * same stages as any other, on the gateway's own upstream session.
 */
async function handleModern(context: Context, decoded: { messages: JsonRpcMessage[]; batch: boolean }, reply: FastifyReply): Promise<void> {
  const { message, context: modern } = checkModern(decoded.messages, decoded.batch, (name) => header(context.request, name));
  checkWellFormed(context, decoded, 'modern');
  // No modern notification needs relaying: cancellation is the client closing its response.
  if (!('id' in message)) {
    void reply.code(202).send();
    return;
  }
  // A modern server gets the request as it is (listen streams and input rounds included); for a
  // legacy one the gateway answers what the legacy era has no counterpart for.
  if ((await serverEra(context, message.id)) === 'modern') {
    await directExchange(context, message, reply, modern);
    return;
  }
  if (!MODERN_METHODS.has(message.method)) throw new GatewayError('method_not_found', 'Method not found', message.id);
  if (message.method === 'subscriptions/listen') {
    await listen(context, message, reply);
    return;
  }
  await exchange(context, undefined, { messages: [message], batch: false }, reply, true, modern);
}

/** The era of the target server: probed once and remembered (src/upstreams/). */
async function serverEra({ gateway, target }: Context, id: JsonRpcId): Promise<Era> {
  return (await reaching(gateway.upstream(target.server.name).era({ forwardPath: target.forwardPath }), id)).era;
}

/** What `work` gives, its upstream failure rethrown as the error of the request `id`. */
async function reaching<T>(work: Promise<T>, id: JsonRpcId): Promise<T> {
  try {
    return await work;
  } catch (err) {
    if (err instanceof UpstreamError) throw GatewayError.fromUpstream(err, id);
    throw err;
  }
}

/** The client's `Mcp-Param-*` headers: passed to a modern server as they are (the specification says so of unknown ones). */
function paramHeaders(request: FastifyRequest): Record<string, string> | undefined {
  let found: Record<string, string> | undefined;
  for (const [name, value] of Object.entries(request.headers)) {
    if (name.startsWith('mcp-param-') && typeof value === 'string') (found ??= {})[name] = value;
  }
  return found;
}

/**
 * A 2026-07-28 `subscriptions/listen`: an SSE stream that acknowledges what the server can send
 * of what was asked, then carries those change notifications until the client closes it
 * (src/mcp/subscriptions.ts).
 */
async function listen({ gateway, target, request, identity }: Context, message: JsonRpcRequest, reply: FastifyReply): Promise<void> {
  const owner = ownerKey(identity);
  const upstream = await reaching(gateway.sharedSession(target.server, target.forwardPath, owner), message.id);
  // In use from now on through its listen hub, not through this request.
  gateway.releaseShared(target.server, target.forwardPath, owner);
  const init = upstream.initializeResult;
  const filter = honored(message.params?.['notifications'], objectOf('result' in init ? init.result['capabilities'] : undefined) ?? {});
  const listener = new Listener(message.id, filter, SseWriter.of(reply, {}, { keepalive: true }));
  listener.acknowledge();
  try {
    const stop = await gateway.listen(target.server, target.forwardPath, owner, upstream, listener);
    if (listener.open) reply.raw.once('close', stop);
    else stop();
  } catch (err) {
    request.log.warn({ err: errorMessage(err) }, 'a listen stream could not subscribe to its resources upstream');
    listener.close();
  }
}

/** Stage 2: an identity limited to some servers reaches no other. */
function checkServerAccess({ target, identity, recorder, request }: Context): void {
  if (!mayReach(identity, target.server.name)) {
    recorder.denied(request, identity, target.server.name, 'server not allowed');
    throw new GatewayError('server_forbidden', `Forbidden: identity "${identity.id}" may not use server "${target.server.name}"`);
  }
}

/**
 * Stage 3: the body as JSON-RPC messages, within the `[server]` limits (nesting depth before
 * anything parses it, then batch length, method and id sizes): bad input is a 4xx here and never
 * reaches an upstream.
 */
function decode(request: FastifyRequest, limits: ServerSettings): { messages: JsonRpcMessage[]; batch: boolean } {
  const contentType = header(request, 'content-type');
  if (contentType !== undefined && !JSON_LIKE.test(contentType)) {
    throw new GatewayError('unsupported_media_type', 'Unsupported Media Type: send the JSON-RPC message as application/json');
  }
  const body = typeof request.body === 'string' ? request.body : '';
  const decoded = decodeBody(body, { maxBatchLength: limits.max_batch_length, maxDepth: limits.max_json_depth });
  if ('kind' in decoded) {
    throw new GatewayError(decoded.kind === 'parse' ? 'parse_error' : 'invalid_request', decoded.message, 'id' in decoded ? decoded.id : null);
  }
  return decoded;
}

/**
 * Stage 3b (src/mcp/request-check.ts): the params of known methods against the SDK's schemas, and
 * no request-only method sent as a notification. A refused body is recorded and never forwarded:
 * the upstream sees nothing of it, and its circuit counts nothing.
 */
function checkWellFormed({ identity, recorder, request, target }: Context, decoded: { messages: JsonRpcMessage[]; batch: boolean }, era: SchemaEra): void {
  const refusal = checkMessages(decoded.messages, era, decoded.batch);
  if (refusal === undefined) return;
  recorder.malformed(request, identity, target.server.name, refusal.method, refusal.reason, httpError(refusal.error).body.error);
  throw refusal.error;
}

function checkProtocolVersion(request: FastifyRequest): void {
  const version = header(request, VERSION_HEADER);
  if (version !== undefined && !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
    const supported = [...MODERN_PROTOCOL_VERSIONS, ...SUPPORTED_PROTOCOL_VERSIONS];
    throw new GatewayError(
      'unsupported_protocol_version',
      `Bad Request: unsupported MCP-Protocol-Version ${JSON.stringify(version)} (supported: ${supported.join(', ')})`,
      null,
      { supported, requested: version },
    );
  }
}

/**
 * Stage 4: the session named by Mcp-Session-Id, on the server the URL names, opened by the same
 * identity: a session id seen by someone else is of no use to them.
 */
function findSession({ gateway, target, identity }: Context, sessionId: string): DownstreamSession {
  const session = gateway.sessions.get(sessionId);
  if (!session || session.server !== target.server.name || session.owner !== ownerKey(identity)) {
    throw new GatewayError('session_not_found', 'Session not found: start a new session with initialize');
  }
  return session;
}

async function openSession(
  { gateway, target, identity, request, recorder }: Context,
  initialize: JsonRpcRequest,
  count: number,
  sessionId: string | undefined,
  reply: FastifyReply,
): Promise<void> {
  if (count > 1) throw new GatewayError('invalid_request', 'Invalid Request: initialize must be sent on its own, not in a batch', initialize.id);
  if (sessionId !== undefined) {
    throw new GatewayError('invalid_request', 'Invalid Request: initialize opens a new session; send it without Mcp-Session-Id', initialize.id);
  }
  const { response, session } = await gateway.initialize(target.server, target.forwardPath, initialize, ownerKey(identity), request.log).catch((err: unknown) => {
    if (err instanceof GatewayError && (err.kind === 'session_quota' || err.kind === 'too_many_sessions')) {
      recorder.sessionRefused(request, identity, target.server.name, err.kind === 'session_quota' ? 'session quota' : 'max_sessions');
    }
    throw err;
  });
  const headers: Record<string, string> = session ? { [SESSION_HEADER]: session.id } : {};
  const post = new PostResponse(reply, parseAccept(header(request, 'accept')), headers);
  post.finish([{ response, status: 200, cancelled: false }], false);
}

/** Stage 5: a tools/call of a tool the identity may not use is answered here, never forwarded. */
function authorize(identity: Identity, call: JsonRpcRequest, tool: string | undefined): GatewayError | undefined {
  if (tool === undefined || identity.tools.allows(tool)) return undefined;
  return new GatewayError('tool_forbidden', `Forbidden: identity "${identity.id}" may not call tool ${JSON.stringify(tool)}`, call.id);
}

/**
 * Stages 5 and 6 for one request: its tool authorized, its tool limits checked (when `limits`),
 * then forwarded, recorded, and a tools/list answer cut to the identity's tools. `single`: it
 * is the only answer of its response, which then carries the limit's headers.
 */
async function answer(
  context: Context,
  r: JsonRpcRequest,
  reply: FastifyReply,
  single: boolean,
  limits: boolean,
  forward: (r: JsonRpcRequest) => Promise<Outcome>,
): Promise<Outcome> {
  const { identity, recorder, request } = context;
  const server = context.target.server.name;
  const tool = calledTool(r);
  const refused = authorize(identity, r, tool);
  if (refused) {
    recorder.denied(request, identity, server, 'tool not allowed', tool);
    return errorOutcome(refused);
  }
  // Another identity's task is answered as an unknown one, never forwarded (src/mcp/tasks.ts).
  const task = context.gateway.tasks.check(server, identity, r);
  if (task && 'refused' in task) {
    recorder.denied(request, identity, server, task.reason);
    return task.refused;
  }
  // No await unless a tool limit applies (checkToolCall gives undefined otherwise): each one costs a microtask.
  const checking = limits && tool !== undefined ? context.limiter?.checkToolCall(request, identity, tool, r.id) : undefined;
  const limited = checking === undefined ? undefined : await checking;
  if (limited) {
    // Retry-After and RateLimit-* describe the response only when this is its one answer.
    if (single) void reply.headers(limited.headers);
    return errorOutcome(limited.error);
  }
  const started = performance.now();
  const outcome = await forward(task ? task.forward : r);
  if (!outcome.cached) recorder.forwarded(request, identity, server, r, tool, outcome.response, (performance.now() - started) / 1000);
  if (r.method === 'tools/list') return { ...outcome, response: filterToolsList(identity.tools, outcome.response) };
  // A created task becomes the caller's; a tasks/list page is cut to the caller's tasks.
  const response = context.gateway.tasks.result(server, identity, r, outcome.response);
  return response === outcome.response ? outcome : { ...outcome, response };
}

/** Stage 6: notifications and answers are relayed; requests are authorized, forwarded and answered. */
async function exchange(
  context: Context,
  session: DownstreamSession | undefined,
  decoded: { messages: JsonRpcMessage[]; batch: boolean },
  reply: FastifyReply,
  retry: boolean,
  modern?: ModernContext,
): Promise<void> {
  const { gateway, target, identity, recorder, request } = context;
  const server = target.server.name;
  // Without a session, the identity's own upstream session for this server (never another's).
  const owner = ownerKey(identity);
  let upstream: UpstreamSession;
  try {
    upstream = session ? session.upstream : await gateway.sharedSession(target.server, target.forwardPath, owner);
  } catch (err) {
    const first = decoded.messages.find(isRequest);
    if (!(err instanceof UpstreamError)) throw err;
    const error = GatewayError.fromUpstream(err, first?.id ?? null);
    // No upstream session: each request of the body failed upstream, and is recorded as such.
    const { body } = httpError(error);
    for (const r of decoded.messages.filter(isRequest)) recorder.forwarded(request, identity, server, r, calledTool(r), body, 0);
    throw error;
  }
  try {
    await exchangeOn(context, session, upstream, decoded, reply, retry, modern);
  } finally {
    if (!session) gateway.releaseShared(target.server, target.forwardPath, owner);
  }
}

/** exchange() on the upstream session it found. */
async function exchangeOn(
  context: Context,
  session: DownstreamSession | undefined,
  upstream: UpstreamSession,
  decoded: { messages: JsonRpcMessage[]; batch: boolean },
  reply: FastifyReply,
  retry: boolean,
  modern?: ModernContext,
): Promise<void> {
  const { gateway, target, identity, request } = context;
  const server = target.server.name;
  const requests: JsonRpcRequest[] = [];
  for (const message of decoded.messages) {
    if (isRequest(message)) requests.push(message);
    else await gateway.relayToUpstream(message, upstream, session, request.log);
  }
  if (requests.length === 0) {
    void reply.code(202).send();
    return;
  }
  const headers: Record<string, string> = session ? { [SESSION_HEADER]: session.id } : {};
  const post = new PostResponse(reply, parseAccept(header(request, 'accept')), headers, modern ? modernRelay(modern) : undefined);
  const translate = modern ? modernTranslation(upstream, clientGone(reply), modern) : undefined;
  const forward = translate
    ? async (r: JsonRpcRequest) =>
        translate.result(r, await gateway.forwardModern(r, upstream, post, translate.signal, translate.capabilities, () => bindingOf(ownerKey(identity), server, r), request.log))
    : (r: JsonRpcRequest) => gateway.forward(r, upstream, session, post, request.log);
  // A retry only follows when every request was forwarded, so each has passed its limits once.
  const one = (r: JsonRpcRequest): Outcome | Promise<Outcome> =>
    r.method === 'server/discover' && translate ? translate.discover(r) : answer(context, r, reply, !decoded.batch, retry, forward);
  const outcomes = requests.length === 1 ? [await one(requests[0]!)] : await Promise.all(requests.map(one));
  // The gateway's own shared session expired upstream: open a new one and try once more (unless
  // something was already streamed to the client: a second answer cannot follow on that response).
  if (!session && retry && !post.streaming && outcomes.every((o) => o.status === 404)) {
    gateway.dropSharedSession(target.server, target.forwardPath, ownerKey(identity), upstream);
    await exchange(context, session, { messages: requests, batch: decoded.batch }, reply, false, modern);
    return;
  }
  post.finish(outcomes, decoded.batch);
}

/**
 * What a modern request may receive before its answer: progress, and log lines only when it
 * asked for them (`_meta` logLevel; a 2026-07-28 server sends none otherwise).
 */
function modernRelay(modern: ModernContext): (message: JsonRpcMessage) => boolean {
  return (message) => modern.logLevel !== undefined || !('method' in message) || message.method !== 'notifications/message';
}

/**
 * A modern request to a legacy upstream: its answer in the modern shape, and its cancellation
 * when the client closes the response (2026-07-28 has no notifications/cancelled on HTTP).
 */
function modernTranslation(upstream: UpstreamSession, signal: AbortSignal, modern: ModernContext) {
  const init = upstream.initializeResult;
  const initResult = 'result' in init ? init.result : {};
  const serverInfo = initResult['serverInfo'];
  return {
    signal,
    capabilities: modern.clientCapabilities,
    discover: (r: JsonRpcRequest): Outcome => ({ response: { jsonrpc: '2.0', id: r.id, result: discoverResult(initResult) }, status: 200, cancelled: false }),
    result(r: JsonRpcRequest, outcome: Outcome): Outcome {
      const response = outcome.response;
      if (!('result' in response)) return outcome;
      return { ...outcome, response: { ...response, result: toModernResult(r.method, response.result, serverInfo) } };
    },
  };
}

/** Aborts when the client closes its response before the answer: a 2026-07-28 cancellation. */
function clientGone(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  const res = reply.raw;
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  return controller.signal;
}

/**
 * Stage 6 for a modern request to a modern server: the same policy as any request (tool
 * authorization, tool limits, audit, tools/list filtering), then the request goes as it is,
 * its answer comes back as it is: input rounds, listen streams and caching hints are the
 * client's and the server's business.
 */
async function directExchange(context: Context, call: JsonRpcRequest, reply: FastifyReply, modern: ModernContext): Promise<void> {
  const { gateway, target, request } = context;
  const server = target.server;
  const post = new PostResponse(reply, parseAccept(header(request, 'accept')), {}, modernRelay(modern));
  const forward = async (r: JsonRpcRequest): Promise<Outcome> => {
    // Cacheable results within their TTL, shared only when the server marked them public.
    const keys = gateway.cache.keys(server.name, target.forwardPath, r, ownerKey(context.identity));
    const hit = keys && gateway.cache.get(keys, r.id);
    if (keys) context.recorder.cacheLookup(server.name, hit !== undefined);
    if (hit) return { response: hit, status: 200, cancelled: false, cached: true };
    const outcome = await gateway.call(r, server, target.forwardPath, post, clientGone(reply), paramHeaders(request), ownerKey(context.identity), request.log);
    if (keys) gateway.cache.put(keys, outcome.response);
    return outcome;
  };
  post.finish([await answer(context, call, reply, true, true, forward)], false);
}

/** GET: the client opens the standalone stream of server-to-client messages. */
export function handleGet(context: Context, reply: FastifyReply): void {
  const { request } = context;
  try {
    checkServerAccess(context);
    const sessionId = header(request, SESSION_HEADER);
    if (sessionId === undefined) throw new GatewayError('session_required', 'Bad Request: Mcp-Session-Id header is required');
    if (!parseAccept(header(request, 'accept')).sse) {
      throw new GatewayError('not_acceptable', 'Not Acceptable: the client must accept text/event-stream');
    }
    const session = findSession(context, sessionId);
    if (session.eventStream?.open) throw new GatewayError('stream_conflict', 'Conflict: only one stream is allowed per session');
    session.attachEventStream(SseWriter.of(reply, { [SESSION_HEADER]: session.id }, { keepalive: true }));
  } catch (err) {
    if (err instanceof GatewayError) sendError(reply, err);
    else throw err;
  }
}

/** DELETE: the client ends its session. */
export async function handleDelete(context: Context, reply: FastifyReply): Promise<void> {
  const { request } = context;
  try {
    checkServerAccess(context);
    const sessionId = header(request, SESSION_HEADER);
    if (sessionId === undefined) throw new GatewayError('session_required', 'Bad Request: Mcp-Session-Id header is required');
    const session = findSession(context, sessionId);
    await context.gateway.sessions.close(session, 'client DELETE');
    void reply.code(200).send();
  } catch (err) {
    if (err instanceof GatewayError) sendError(reply, err);
    else throw err;
  }
}
