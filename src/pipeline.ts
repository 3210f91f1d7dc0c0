/**
 * The request pipeline of every MCP endpoint, top to bottom: the same named stages for every
 * request, whatever its era. Each stage either adds to what the next one needs or ends the
 * request with a typed GatewayError, rendered in one place (src/http/errors.ts decides every
 * status). Each stage below is a function of this file with the stage's name, called in this
 * order by handlePost() (GET and DELETE run access and session only).
 *
 *   0. hooks      onRequest, before the body is even read (src/app/routes.ts):
 *                 a. address limit  per client address (src/ratelimit/): a flood, with or without
 *                    credentials, is refused for the price of a counter, before any key is verified;
 *                 b. authenticate   src/http/auth.ts: an unauthenticated client costs no parsing
 *                    and learns nothing about servers;
 *                 c. identity limit per identity (a key's own `rate_limit` when it has one), so one
 *                    caller cannot use up another's share.
 *   1. resolve    the URL names the server (by name or by prefix); an unknown one is a 404 that
 *                 lists the servers this identity may reach (src/app/routes.ts).
 *   2. access     an identity restricted to some servers gets 403 on the others, whatever the
 *                 method: it must not reach them at all.
 *   3. decode     the era codec's way in: JSON-RPC envelope checks within the [server] limits
 *                 (nesting depth checked before the body is parsed; batch length; id and method
 *                 sizes), what is forwarded rebuilt from its JSON-RPC members only; then the era
 *                 (a 2026-07-28 request's Mcp-Method / Mcp-Name / MCP-Protocol-Version headers
 *                 checked against its body: src/eras/codec.ts, docs/eras.md); then the params of known
 *                 methods against the SDK's schemas (-32602), and no request-only method sent as a
 *                 notification (-32600; src/mcp/request-check.ts): such a message would skip
 *                 authorization and the audit log. The result is one internal form (Incoming).
 *   4. session    legacy: the gateway's own session id; initialize opens one, others must name a
 *                 live one on the same server opened by the same identity, or none at all (a plain
 *                 curl request, on the identity's own shared upstream session). 2026-07-28: no
 *                 session; the server's era decides the forwarding (src/eras/forwarding.ts, the
 *                 era seam): direct to a modern server, translated for a legacy one.
 *   then, per request, batch elements included (answer()):
 *   5. authorize  a tools/call of a tool outside the identity's policy is answered with an error
 *                 and never forwarded; a request about a task that is not the identity's is
 *                 answered exactly as an unknown task (src/mcp/tasks.ts). Then tool integrity
 *                 (src/integrity/): in block mode a tools/call or prompts/get whose current
 *                 definition is not its pin is refused, never forwarded (the server listed first
 *                 when that definition is not known). Then, after the limits, a call of a tool in
 *                 `require_approval` waits for the client's user to accept it (an elicitation, or
 *                 an `input_required` round for a 2026-07-28 client; src/integrity/approval.ts).
 *   6. limit      each tools/call counts against the limits whose tool_pattern matches; a limited
 *                 one is answered in place (HTTP 429 when it is the only request), never
 *                 forwarded. After authorization, so a refused call uses up nothing.
 *   7. forward    with its deadline, the way the era seam chose; related messages stream back on
 *                 the same response when the client accepts SSE.
 *      record     src/observability/recorder.ts: each refusal (server, tool, limit) and each
 *                 forwarded request becomes its audit line and its metric series, in one call, so
 *                 the two never disagree. Authentication records its own outcome.
 *   8. filter     tools/list and prompts/list pages checked against their pins (src/integrity/:
 *                 in block mode what is not pinned is left out), then tools/list cut to the
 *                 identity's tools; a created task recorded as the identity's, tasks/list pages
 *                 cut to its tasks.
 *   Then the answers are encoded for the client's era and transport (src/mcp/post-response.ts:
 *   JSON, or SSE when something precedes them).
 *   Traces (telemetry on, src/observability/tracing/): each request of stages 5 to 8, and an
 *   initialize, is one SERVER span in the context (serverSpan()); the upstream exchange is its CLIENT
 *   child, whose context the upstream receives in `params._meta`.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { mayReach, ownerKey, type Identity } from './auth/identity.js';
import type { RouteConfig } from './config/schema.js';
import { GatewayError, httpError, sendError } from './http/errors.js';
import { decodeBody, idKey, isRequest, objectOf, type JsonRpcId, type JsonRpcMessage, type JsonRpcRequest } from './jsonrpc/messages.js';
import type { Gateway } from './mcp/gateway.js';
import { MODERN_PROTOCOL_VERSIONS } from './protocol/versions.js';
import { MODERN_METHODS } from './protocol/modern.js';
import { checkModern, isModern, type ModernContext } from './eras/codec.js';
import { directForwarding, legacyForwarding, modernRelay, translatedForwarding, type Forwarding, type ForwardingContext } from './eras/forwarding.js';
import { checkMessages, type SchemaEra } from './mcp/request-check.js';
import { honored, Listener } from './eras/subscriptions.js';
import { answered, errorOutcome, parseAccept, PostResponse, type Outcome } from './mcp/post-response.js';
import type { DownstreamSession } from './mcp/sessions.js';
import { SUPPORTED_PROTOCOL_VERSIONS } from './protocol/versions.js';
import { SseWriter } from './mcp/sse-writer.js';
import { interrupted, parseLastEventId, type LastEvent } from './mcp/resume.js';
import { calledTool, filterToolsList, type ToolOwner } from './policy/tools.js';
import { namespaceOf, scopeOf, viewFor } from './virtual/view.js';
import type { Recorder } from './observability/recorder.js';
import type { RequestSpan, Tracing } from './observability/tracing/tracing.js';
import type { RateLimiter } from './ratelimit/limiter.js';
import { UpstreamError } from './upstreams/errors.js';
import type { Era, UpstreamSession } from './upstreams/upstream.js';
import { errorMessage } from './error-message.js';
import type { ItemOwner, ToolIntegrity } from './integrity/guard.js';
import { namedItem, refusalError, vet, type Refusal } from './integrity/vet.js';
import type { ApprovalDecision, Approvals, ApprovalResult } from './integrity/approval.js';

/** Where a request goes: stage 1's result. */
export interface Target {
  /** A server, or a virtual server (after stage 2: as the caller sees it, with only the members it may reach). */
  server: RouteConfig;
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
  /** Traces; undefined with telemetry off, and then nothing here does more than check that. */
  tracing?: Tracing | undefined;
  /** Stages 5 to 8 with telemetry on: the SERVER span of the one request they serve (serverSpan()). */
  span?: RequestSpan | undefined;
  /** `[tool_integrity]` (src/integrity/); absent or off: nothing is checked. */
  integrity?: ToolIntegrity | undefined;
  /** `require_approval` (src/integrity/approval.ts); absent: no call waits for a person. */
  approvals?: Approvals | undefined;
}

/** A POST's body in the gateway's one internal form, whatever the era it came in: stage 3's result. */
interface Incoming {
  messages: JsonRpcMessage[];
  batch: boolean;
  /** A 2026-07-28 request: the context its `_meta` carried (src/eras/codec.ts). Absent: the legacy era. */
  modern?: ModernContext;
}

/** Where stage 4 sends a POST's messages. */
type Route =
  /** A legacy client's session: its own upstream session. */
  | { kind: 'session'; session: DownstreamSession }
  /** No session (a plain curl request, or a modern client of a legacy server): the identity's shared upstream session. */
  | { kind: 'shared' }
  /** A modern client of a modern server: each request on its own, as it is. */
  | { kind: 'direct'; modern: ModernContext };

/**
 * POST: the client sends requests, notifications or answers. The stages, in order; each is a
 * function of this file with the stage's name.
 */
export async function handlePost(context: Context, reply: FastifyReply): Promise<void> {
  // One async frame for the whole POST: every async function (and every await of one) costs a
  // promise and a microtask per request, so the stages below await only what is really pending.
  try {
    context = access(context);
    const incoming = decode(context);
    const routed = session(context, incoming, reply);
    const route = routed instanceof Promise ? await routed : routed;
    // undefined: stage 4 answered the POST itself (initialize, a modern notification, a listen).
    if (route) await exchange(context, route, incoming, reply, { limits: true });
  } catch (err) {
    refused(reply, err);
  }
}

/** Every GatewayError a stage throws is the request's answer (src/http/errors.ts renders it); anything else is a bug, for the error handler. */
function refused(reply: FastifyReply, err: unknown): void {
  if (err instanceof GatewayError) sendError(reply, err);
  else throw err;
}

/**
 * Stage 2: an identity limited to some servers reaches no other. A virtual server is reached
 * through the members the identity may reach (all of them when it may reach the virtual server
 * by name: src/virtual/view.ts), and from here on the target is the virtual server as it sees it.
 */
function access(context: Context): Context {
  const { target, identity, recorder, request } = context;
  const server = target.server;
  if (server.transport === 'virtual') {
    const view = viewFor(server, identity.servers);
    if (view === server) return context;
    if (view) return { ...context, target: { server: view, forwardPath: '' } };
  } else if (mayReach(identity, server.name)) return context;
  recorder.denied(request, identity, server.name, 'server not allowed');
  throw new GatewayError('server_forbidden', `Forbidden: identity "${identity.id}" may not use server "${server.name}"`);
}

/**
 * Stage 3: the body as JSON-RPC messages within the `[server]` limits (nesting depth before
 * anything parses it, then batch length, method and id sizes); then its era (a 2026-07-28
 * request's mirrored headers checked against the body before any later stage reads the method
 * or tool: src/eras/codec.ts); then (3b, src/mcp/request-check.ts) the params of known methods
 * against the SDK's schemas, and no request-only method sent as a notification. Bad input is a
 * 4xx here, recorded, and never reaches an upstream: it sees nothing of it, and its circuit
 * counts nothing.
 */
function decode(context: Context): Incoming {
  const { request } = context;
  const limits = context.gateway.config.server;
  const contentType = header(request, 'content-type');
  if (contentType !== undefined && !JSON_LIKE.test(contentType)) {
    throw new GatewayError('unsupported_media_type', 'Unsupported Media Type: send the JSON-RPC message as application/json');
  }
  const body = typeof request.body === 'string' ? request.body : '';
  const decoded = decodeBody(body, { maxBatchLength: limits.max_batch_length, maxDepth: limits.max_json_depth });
  if ('kind' in decoded) {
    throw new GatewayError(decoded.kind === 'parse' ? 'parse_error' : 'invalid_request', decoded.message, 'id' in decoded ? decoded.id : null);
  }
  if (!isModern(decoded.messages, header(request, VERSION_HEADER))) {
    checkWellFormed(context, decoded, 'legacy');
    return decoded;
  }
  const { message, context: modern } = checkModern(decoded.messages, decoded.batch, (name) => header(request, name));
  checkWellFormed(context, decoded, 'modern');
  return { messages: [message], batch: false, modern };
}

function checkWellFormed({ identity, recorder, request, target }: Context, decoded: { messages: JsonRpcMessage[]; batch: boolean }, era: SchemaEra): void {
  const refusal = checkMessages(decoded.messages, era, decoded.batch);
  if (refusal === undefined) return;
  recorder.malformed(request, identity, target.server.name, refusal.method, refusal.reason, httpError(refusal.error).body.error);
  throw refusal.error;
}

/**
 * Stage 4: the session. A legacy request names the gateway's own session id (initialize opens
 * one; others must name a live one on the same server opened by the same identity, or none at
 * all: a plain curl request). A 2026-07-28 request has no session: its context travels in its
 * `_meta`; `server/discover` is answered from what the server said when the gateway initialized
 * it, and a method the era does not have is a 404.
 */
function session(context: Context, incoming: Incoming, reply: FastifyReply): Route | Promise<Route | undefined> | undefined {
  const { request } = context;
  if (incoming.modern) return modernRoute(context, incoming.messages[0]!, incoming.modern, reply);
  const sessionId = header(request, SESSION_HEADER);
  const initialize = incoming.messages.find(isInitialize);
  if (initialize) return openSession(context, initialize, incoming.messages.length, sessionId, reply);
  checkProtocolVersion(request);
  if (sessionId === undefined) return SHARED;
  const found = findSession(context, sessionId, incoming.messages);
  if (found instanceof Promise) return found.then(sessionRoute);
  return sessionRoute(found);
}

function sessionRoute(session: DownstreamSession): Route {
  session.touch();
  return { kind: 'session', session };
}

/** A legacy session's first request. */
function isInitialize(m: JsonRpcMessage): m is JsonRpcRequest {
  return isRequest(m) && m.method === 'initialize';
}

/** The route of every legacy request without a session (one object: a route is only read). */
const SHARED: Route = { kind: 'shared' };

/** Stage 4 for a 2026-07-28 message (src/eras/codec.ts: its headers are checked by now). */
async function modernRoute(context: Context, message: JsonRpcMessage, modern: ModernContext, reply: FastifyReply): Promise<Route | undefined> {
  // No modern notification needs relaying: cancellation is the client closing its response.
  if (!('id' in message) || !('method' in message)) {
    void reply.code(202).send();
    return undefined;
  }
  // A modern server gets the request as it is (listen streams and input rounds included); for a
  // legacy one the gateway answers what the legacy era has no counterpart for.
  if ((await serverEra(context, message.id)) === 'modern') return { kind: 'direct', modern };
  if (!MODERN_METHODS.has(message.method)) throw new GatewayError('method_not_found', 'Method not found', message.id);
  if (message.method === 'subscriptions/listen') {
    await listen(context, message, reply);
    return undefined;
  }
  return SHARED;
}

/** The era of the target server: probed once and remembered (src/upstreams/). */
async function serverEra({ gateway, target }: Context, id: JsonRpcId): Promise<Era> {
  return reaching(gateway.era(target.server, target.forwardPath), id);
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

/**
 * A 2026-07-28 `subscriptions/listen` to a legacy server: an SSE stream that acknowledges what
 * the server can send of what was asked, then carries those change notifications until the
 * client closes it (src/eras/subscriptions.ts).
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
 * The session named by Mcp-Session-Id, on the server the URL names, opened by the same
 * identity: a session id seen by someone else is of no use to them. With `[server] session_keys`
 * a sealed session another replica opened is taken up here (Gateway.adopt), until its id expires.
 *
 * A session draining after a reload changed its server takes no new request (the client starts
 * again) and no new stream, but still what its calls in flight need: `carried`, the messages of a
 * POST, when none of them is a request (the client's answers to the server's questions, its
 * cancellations), and the DELETE that ends it (NO_REQUEST). Looked at only for a draining session.
 */
function findSession(
  { gateway, target, identity, request }: Context,
  sessionId: string,
  carried?: readonly JsonRpcMessage[],
): DownstreamSession | Promise<DownstreamSession> {
  const found = gateway.sessions.get(sessionId);
  if (found === undefined) {
    const adopted = gateway.adopt(sessionId, target.server, ownerKey(identity), request.log);
    if (adopted === undefined) throw sessionNotFound();
    return adopted.then((session) => session ?? Promise.reject(sessionNotFound()));
  }
  // A virtual server's session is also bound to the members its identity could reach.
  if (
    (found.draining && (carried === undefined || carried.some(isRequest))) ||
    found.server !== target.server.name ||
    found.owner !== ownerKey(identity) ||
    found.scope !== scopeOf(target.server)
  ) {
    throw sessionNotFound();
  }
  if (found.expires !== Infinity && found.expires <= Date.now()) {
    void gateway.sessions.close(found, 'sealed id expired', true);
    throw sessionNotFound();
  }
  return found;
}

/** What a DELETE carries, for findSession: no request (a draining session can be ended too). */
const NO_REQUEST: readonly JsonRpcMessage[] = [];

function sessionNotFound(): GatewayError {
  return new GatewayError('session_not_found', 'Session not found: start a new session with initialize');
}

async function openSession(
  context: Context,
  initialize: JsonRpcRequest,
  count: number,
  sessionId: string | undefined,
  reply: FastifyReply,
): Promise<undefined> {
  const { gateway, target, identity, request, recorder } = context;
  if (count > 1) throw new GatewayError('invalid_request', 'Invalid Request: initialize must be sent on its own, not in a batch', initialize.id);
  if (sessionId !== undefined) {
    throw new GatewayError('invalid_request', 'Invalid Request: initialize opens a new session; send it without Mcp-Session-Id', initialize.id);
  }
  const traced = context.tracing && serverSpan(context, initialize, true);
  const open = (sent: JsonRpcRequest) => gateway.initialize(target.server, target.forwardPath, sent, ownerKey(identity), request.log);
  const { response, session: opened } = await (traced ? traced.forward(initialize, open) : open(initialize)).catch((err: unknown) => {
    if (err instanceof GatewayError && (err.kind === 'session_quota' || err.kind === 'too_many_sessions')) {
      recorder.sessionRefused(request, identity, target.server.name, err.kind === 'session_quota' ? 'session quota' : 'max_sessions');
    }
    if (err instanceof GatewayError) traced?.end(errorOutcome(err));
    throw err;
  });
  traced?.end(answered(response));
  const headers: Record<string, string> = opened ? { [SESSION_HEADER]: opened.id } : {};
  const post = new PostResponse(reply, parseAccept(header(request, 'accept')), headers);
  post.finish([answered(response)], false);
  return undefined;
}

/** How one exchange is run. */
interface Attempt {
  /** Check the tool limits: false on the retry of an exchange whose requests were counted once. */
  limits: boolean;
}

/**
 * Stages 5 to 8 for the messages of a POST: notifications and answers are relayed; each request
 * is authorized, limited, forwarded, recorded and filtered (answer()), then all the answers are
 * written in the client's era and transport (PostResponse).
 */
async function exchange(context: Context, route: Route, incoming: Incoming, reply: FastifyReply, attempt: Attempt): Promise<void> {
  const { gateway, target, identity, request } = context;
  const accept = parseAccept(header(request, 'accept'));
  if (route.kind === 'direct') {
    const post = new PostResponse(reply, accept, {}, modernRelay(route.modern));
    const forwarding = directForwarding(forwardingContext(context, post, reply), paramHeaders(request), (hit) =>
      context.recorder.cacheLookup(target.server.name, hit),
    );
    const call = incoming.messages[0] as JsonRpcRequest;
    post.finish([await answer(context, call, forwarding, { reply, single: true, limits: true })], false);
    return;
  }
  const session = route.kind === 'session' ? route.session : undefined;
  let upstream: UpstreamSession;
  if (session) upstream = session.upstream;
  else {
    // Awaited here, not in a function of its own: that would be one more promise and microtask per request.
    try {
      upstream = await gateway.sharedSession(target.server, target.forwardPath, ownerKey(identity));
    } catch (err) {
      throw unreachable(context, incoming, err);
    }
  }
  try {
    const requests: JsonRpcRequest[] = [];
    for (const message of incoming.messages) {
      if (isRequest(message)) requests.push(message);
      else await gateway.relayToUpstream(message, upstream, session, request.log);
    }
    if (requests.length === 0) {
      void reply.code(202).send();
      return;
    }
    const headers: Record<string, string> = session ? { [SESSION_HEADER]: session.id } : {};
    const post = new PostResponse(reply, accept, headers, incoming.modern ? modernRelay(incoming.modern) : undefined);
    // In a session, a client whose response stream breaks can ask after it (src/mcp/resume.ts).
    if (session) post.withEventIds(requests[0]!.id);
    const forwarding = incoming.modern
      ? translatedForwarding(forwardingContext(context, post, reply), upstream, incoming.modern)
      : legacyForwarding(forwardingContext(context, post, reply), upstream, session);
    const step: Step = { reply, single: !incoming.batch, limits: attempt.limits };
    const one = (r: JsonRpcRequest): Outcome | Promise<Outcome> => forwarding.local?.(r) ?? answer(context, r, forwarding, step);
    const outcomes = requests.length === 1 ? [await one(requests[0]!)] : await Promise.all(requests.map(one));
    // The gateway's own shared session expired upstream: open a new one and try once more (unless
    // something was already streamed to the client: a second answer cannot follow on that
    // response). Only when every request was forwarded, so each has passed its limits once.
    if (!session && attempt.limits && !post.streaming && outcomes.every((o) => o.error === 'session_expired')) {
      gateway.dropSharedSession(target.server, target.forwardPath, ownerKey(identity), upstream);
      await exchange(context, route, { ...incoming, messages: requests }, reply, { limits: false });
      return;
    }
    post.finish(outcomes, incoming.batch);
  } finally {
    if (!session) gateway.releaseShared(target.server, target.forwardPath, ownerKey(identity));
  }
}

/** What the era seam needs of this request, made once per exchange (one object, no spread: this is the hot path). */
function forwardingContext({ gateway, target, identity, request }: Context, post: PostResponse, reply: FastifyReply): ForwardingContext {
  return { gateway, server: target.server, forwardPath: target.forwardPath, identity, post, reply, log: request.log };
}

/**
 * Without a session, a request goes on the identity's own upstream session for this server
 * (never another's). When that cannot be had, each request of the body failed upstream, and is
 * recorded as such: the error to answer with (anything but an UpstreamError is a bug, rethrown).
 */
function unreachable(context: Context, incoming: Incoming, err: unknown): GatewayError {
  const { target, identity, recorder, request } = context;
  if (!(err instanceof UpstreamError)) throw err;
  const requests = incoming.messages.filter(isRequest);
  const error = GatewayError.fromUpstream(err, requests[0]?.id ?? null);
  const { body } = httpError(error);
  for (const r of requests) {
    // Traced: a span that failed as its upstream did (a failure is what a trace is opened for).
    const traced = context.tracing && serverSpan(context, r, !incoming.batch);
    const tool = toolCalled(target, r);
    recorder.forwarded(request, identity, tool?.server ?? target.server.name, r, tool?.tool, body, 0);
    traced?.end({ response: body, error: error.kind });
  }
  return error;
}

/** How answer() treats one request of an exchange. */
interface Step {
  reply: FastifyReply;
  /** It is the only answer of its response, which then carries its limit's headers. */
  single: boolean;
  /** Its tool limits are checked (Attempt.limits). */
  limits: boolean;
}

/**
 * Stages 5 to 8 for one request: authorize, limit, forward, record, filter. A refused request
 * is answered in place and never forwarded; a refused call uses up no limit.
 */
async function answer(context: Context, r: JsonRpcRequest, forwarding: Forwarding, step: Step): Promise<Outcome> {
  if (context.tracing) context = { ...context, span: serverSpan(context, r, step.single) };
  const tool = toolCalled(context.target, r);
  const authorized = authorize(context, r, tool);
  if ('refused' in authorized) return ended(context, authorized.refused);
  // Block mode only (warn mode refuses nothing); awaited only when the server must be listed first.
  const vetting = context.integrity?.blocking ? vetted(context, r, forwarding) : undefined;
  const unvetted = vetting instanceof Promise ? await vetting : vetting;
  if (unvetted) return ended(context, unvetted);
  // Awaited only when a tool limit applies (limit() gives undefined otherwise): each await costs a microtask.
  const limiting = limit(context, r, tool, step);
  const limited = limiting && (await limiting);
  if (limited) return ended(context, limited);
  // A person's approval, asked only for the tools that require it (after the limits: a call refused
  // there never bothers anyone).
  let approved: Exclude<ApprovalResult, { answer: Outcome }> | undefined;
  if (tool !== undefined && context.approvals?.required(context.identity, tool.server, tool.tool)) {
    const asked = await approve(context, authorized.forward, tool, forwarding);
    if ('answer' in asked) return ended(context, asked.answer);
    approved = asked;
  }
  const started = performance.now();
  const sent = approved ? approved.forward : authorized.forward;
  // Traced: the upstream exchange is the span's CLIENT child, whose context the upstream receives.
  const outcome = await (context.span ? context.span.forward(sent, (traced) => forwarding.forward(traced)) : forwarding.forward(sent));
  approved?.after?.(outcome);
  record(context, r, tool, outcome, started);
  return ended(context, filter(context, r, outcome));
}

/**
 * Telemetry on: the SERVER span of one request (src/observability/tracing/). The only request of
 * its POST also gives the POST's audit lines its trace id; a batch's requests each have their own.
 */
function serverSpan({ tracing, request, target, identity }: Context, r: JsonRpcRequest, single: boolean): RequestSpan {
  const started = tracing!.start({ request, message: r, route: target.server, identity });
  if (single) (request.tracing ??= { stages: [] }).ids = started.ids;
  return started;
}

/** The request's outcome, its span ended with it. */
function ended(context: Context, outcome: Outcome): Outcome {
  context.span?.end(outcome);
  return outcome;
}

/** A called tool: the server it belongs to and its own name there. */
interface CalledTool {
  server: string;
  tool: string;
}

/**
 * The server and own name of a tool the target names: on a virtual server, the member whose name
 * prefixes it (src/virtual/names.ts); one it cannot place stays the virtual server's, under the
 * name it was called by (policy then applies its unqualified patterns; the virtual server
 * answers that no such tool exists).
 */
function toolOf(target: Target, name: string): CalledTool {
  const server = target.server;
  if (server.transport !== 'virtual') return { server: server.name, tool: name };
  const owned = namespaceOf(server).splitName(name);
  return owned ? { server: owned.member, tool: owned.own } : { server: server.name, tool: name };
}

/** The tool a tools/call names, placed with its server (toolOf); undefined for any other request. */
function toolCalled(target: Target, r: JsonRpcRequest): CalledTool | undefined {
  const name = calledTool(r);
  return name === undefined ? undefined : toolOf(target, name);
}

/** Whose each tool of a tools/list answer is (ToolOwner for filterToolsList). */
function toolOwner(target: Target): ToolOwner {
  const server = target.server;
  if (server.transport !== 'virtual') return (tool) => ({ server: server.name, tool });
  const names = namespaceOf(server);
  return (listed) => {
    const owned = names.splitName(listed);
    return owned && { server: owned.member, tool: owned.own };
  };
}

/**
 * Stage 5: a tools/call of a tool the identity may not use is answered here, never forwarded;
 * a request about another identity's task is answered exactly as an unknown task
 * (src/mcp/tasks.ts). Gives the request to forward (a task request rewritten for its server).
 */
function authorize(
  { gateway, identity, recorder, request, target }: Context,
  r: JsonRpcRequest,
  tool: CalledTool | undefined,
): { forward: JsonRpcRequest } | { refused: Outcome } {
  const server = target.server.name;
  if (tool !== undefined && !identity.tools.allows(tool.tool, tool.server)) {
    recorder.denied(request, identity, tool.server, 'tool not allowed', tool.tool);
    const called = calledTool(r);
    return {
      refused: errorOutcome(new GatewayError('tool_forbidden', `Forbidden: identity "${identity.id}" may not call tool ${JSON.stringify(called)}`, r.id)),
    };
  }
  const task = gateway.tasks.check(server, identity, r);
  if (task && 'refused' in task) {
    recorder.denied(request, identity, server, task.reason);
    return { refused: task.refused };
  }
  return { forward: task ? task.forward : r };
}

/**
 * Stage 5, tool integrity (src/integrity/vet.ts): in block mode, a tools/call or prompts/get whose
 * current definition is not its pin (or that its server does not list) is answered here with an
 * error saying it awaits approval, recorded, and never forwarded. The pin is of the server's own
 * name: on a virtual server, the member's.
 */
function vetted(context: Context, r: JsonRpcRequest, forwarding: Forwarding): Outcome | undefined | Promise<Outcome | undefined> {
  const item = context.integrity && namedItem(r);
  if (!item) return undefined;
  const placed = toolOf(context.target, item.name);
  const refuse = (refusal: Refusal | undefined): Outcome | undefined => {
    if (refusal === undefined) return undefined;
    const { recorder, request, identity } = context;
    recorder.integrityRefused(request, identity, placed.server, r.method, placed.tool, refusal);
    return errorOutcome(refusalError(item.kind, item.name, placed.server, refusal, r.id));
  };
  const verdict = vet(context.integrity!, item.kind, placed.server, placed.tool, r, (list) => forwarding.forward(list), itemOwner(context.target));
  return verdict instanceof Promise ? verdict.then(refuse) : refuse(verdict);
}

/**
 * Stage 5, approval (src/integrity/approval.ts): a call of a tool in `require_approval` (its key's,
 * its server's, `[auth.jwt]`'s) waits for the client's user to accept it through an elicitation,
 * for at most the server's timeout_ms; declined, cancelled, unanswered or unaskable, it is answered
 * with an error and never forwarded. Each decision is recorded.
 */
function approve(context: Context, r: JsonRpcRequest, tool: CalledTool, forwarding: Forwarding): Promise<ApprovalResult> {
  const { approvals, identity, recorder, request, target } = context;
  const called = calledTool(r) ?? tool.tool;
  const decided = (decision: ApprovalDecision) => recorder.approval(request, identity, tool.server, tool.tool, decision);
  return approvals!.ask(r, { server: tool.server, tool: tool.tool, called }, identity, forwarding, target.server.timeout_ms, decided);
}

/** Whose each tool or prompt of a list answer is, for tool integrity (the member's own name on a virtual server). */
function itemOwner(target: Target): ItemOwner {
  const owner = toolOwner(target);
  return (listed) => {
    const found = owner(listed);
    return found && { server: found.server, name: found.tool };
  };
}

/**
 * Stage 6: each tools/call counts against the limits whose tool_pattern matches; a limited one
 * is answered in place (HTTP 429 when it is the only request) and never forwarded.
 */
function limit(
  { limiter, request, identity, span }: Context,
  r: JsonRpcRequest,
  tool: CalledTool | undefined,
  step: Step,
): Promise<Outcome | undefined> | undefined {
  // undefined unless a tool limit applies (checkToolCall gives undefined then): no promise, no microtask.
  let checking = step.limits && tool !== undefined ? limiter?.checkToolCall(request, identity, tool.tool, r.id, tool.server) : undefined;
  if (checking && span) checking = span.limit(checking);
  return checking?.then((limited) => {
    if (!limited) return undefined;
    // Retry-After and RateLimit-* describe the response only when this is its one answer.
    if (step.single) void step.reply.headers(limited.headers);
    return errorOutcome(limited.error);
  });
}

/**
 * Stage 7 (src/observability/recorder.ts): the forwarded request's audit line and metrics, in one
 * call; a tool call under the server the tool belongs to and its own name (a virtual server's member).
 */
function record({ recorder, request, identity, target }: Context, r: JsonRpcRequest, tool: CalledTool | undefined, outcome: Outcome, started: number): void {
  if (outcome.cached) return;
  const seconds = (performance.now() - started) / 1000;
  recorder.forwarded(request, identity, tool?.server ?? target.server.name, r, tool?.tool, outcome.response, seconds);
}

/**
 * Stage 8: a tools/list or prompts/list page checked against its pins (every item: the gateway
 * learns each current definition; in block mode what is not pinned is left out), then a tools/list
 * answer cut to the identity's tools; a created task becomes the caller's, a tasks/list page is
 * cut to the caller's tasks.
 */
function filter({ gateway, identity, target, integrity }: Context, r: JsonRpcRequest, outcome: Outcome): Outcome {
  if (r.method === 'tools/list') {
    const checked = integrity?.active ? integrity.checkList('tool', outcome.response, itemOwner(target)) : outcome.response;
    return { ...outcome, response: filterToolsList(identity.tools, checked, toolOwner(target)) };
  }
  if (r.method === 'prompts/list' && integrity?.active) return { ...outcome, response: integrity.checkList('prompt', outcome.response, itemOwner(target)) };
  const response = gateway.tasks.result(target.server.name, identity, r, outcome.response);
  return response === outcome.response ? outcome : { ...outcome, response };
}

/** The client's `Mcp-Param-*` headers: passed to a modern server as they are (the specification says so of unknown ones). */
function paramHeaders(request: FastifyRequest): Record<string, string> | undefined {
  let found: Record<string, string> | undefined;
  for (const [name, value] of Object.entries(request.headers)) {
    if (name.startsWith('mcp-param-') && typeof value === 'string') (found ??= {})[name] = value;
  }
  return found;
}

/** GET: the client opens the standalone stream of server-to-client messages. */
export function handleGet(context: Context, reply: FastifyReply): Promise<void> | undefined {
  const { request } = context;
  try {
    context = access(context);
    const sessionId = header(request, SESSION_HEADER);
    if (sessionId === undefined) throw new GatewayError('session_required', 'Bad Request: Mcp-Session-Id header is required');
    if (!parseAccept(header(request, 'accept')).sse) {
      throw new GatewayError('not_acceptable', 'Not Acceptable: the client must accept text/event-stream');
    }
    const found = findSession(context, sessionId);
    if (found instanceof Promise) return found.then((session) => openEventStream(session, reply, request)).catch((err: unknown) => refused(reply, err));
    openEventStream(found, reply, request);
  } catch (err) {
    refused(reply, err);
  }
  return undefined;
}

function openEventStream(session: DownstreamSession, reply: FastifyReply, request: FastifyRequest): void {
  const last = parseLastEventId(header(request, 'last-event-id'));
  if (last?.kind === 'post' || last?.kind === 'post-ended') return resumePost(session, reply, last);
  if (session.eventStream?.open) throw new GatewayError('stream_conflict', 'Conflict: only one stream is allowed per session');
  session.attachEventStream(SseWriter.of(reply, { [SESSION_HEADER]: session.id }, { keepalive: true }), last?.kind === 'stream' ? last.seq : undefined);
}

/**
 * A client asks after a POST's response stream that broke (src/mcp/resume.ts): its answer went
 * with it, so it gets an error for that request at once, and the request, if it still runs here,
 * is cancelled. Asked again after that error: 405, nothing more will come.
 */
function resumePost(session: DownstreamSession, reply: FastifyReply, last: Extract<LastEvent, { kind: 'post' | 'post-ended' }>): void {
  if (last.kind === 'post-ended') {
    sendError(reply, new GatewayError('method_not_allowed', 'Method Not Allowed: that stream has ended'), { allow: 'POST, DELETE' });
    return;
  }
  session.inflight.get(idKey(last.id))?.abort();
  const { response, eventId } = interrupted(last.id);
  const stream = SseWriter.of(reply, { [SESSION_HEADER]: session.id }, { keepalive: false });
  stream.write(response, true, eventId);
  stream.end();
}

/** DELETE: the client ends its session. */
export async function handleDelete(context: Context, reply: FastifyReply): Promise<void> {
  try {
    context = access(context);
    const sessionId = header(context.request, SESSION_HEADER);
    if (sessionId === undefined) throw new GatewayError('session_required', 'Bad Request: Mcp-Session-Id header is required');
    // The client ends it everywhere: upstream too, and no replica takes its id up again.
    const local = context.gateway.sessions.get(sessionId);
    if (local === undefined && context.gateway.sealed) {
      // Another replica's sealed session: ended without taking it up.
      if (!(await context.gateway.endSealed(sessionId, context.target.server, ownerKey(context.identity)))) throw sessionNotFound();
    } else await context.gateway.end(await findSession(context, sessionId, NO_REQUEST));
    void reply.code(200).send();
  } catch (err) {
    refused(reply, err);
  }
}
