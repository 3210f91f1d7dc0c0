/**
 * The era seam of the pipeline: how the requests of one POST are forwarded, given the client's
 * era and the server's, and the two exchanges only one era needs (callModern: a request to a
 * modern server as it is; continueOrStart: a modern request on a legacy session, in input rounds). The pipeline (src/pipeline.ts) runs the same stages for every request and
 * asks this file for one `Forwarding`; everything that differs between the eras is here or below
 * it (src/eras/).
 *
 *   client   server   forwarding
 *   legacy   either   the session's upstream session as it is (a modern server is reached
 *                     through a legacy-shaped session: src/eras/modern-server.ts)
 *   modern   legacy   translated: the request without its envelope on the identity's own upstream
 *                     session, server requests turned into input rounds, the answer in the modern
 *                     shape; `server/discover` answered from what the server said at initialize
 *   modern   modern   direct: the request as it is, its answer as it is, cacheable results cached
 */
import type { FastifyReply } from 'fastify';
import { ownerKey } from '../auth/identity.js';
import { GatewayError, type GatewayErrorKind } from '../http/errors.js';
import { ErrorCode, errorResponse, type JsonRpcMessage, type JsonRpcRequest, type JsonRpcResponse } from '../jsonrpc/messages.js';
import { discoverResult, toLegacyRequest, toModernResult, type ModernContext } from './codec.js';
import { toGatewayError, type Gateway, type RoundResult } from '../mcp/gateway.js';
import { bindingOf, PendingCall, type CallBinding } from './input-rounds.js';
import { answered, errorOutcome, type Outcome, type PostResponse } from '../mcp/post-response.js';
import { refuseServerRequest, type DownstreamSession } from '../mcp/sessions.js';
import type { LineLogger } from '../observability/logger.js';
import type { Identity } from '../auth/identity.js';
import type { RouteConfig } from '../config/schema.js';
import type { CallOptions, RequestOptions, UpstreamSession } from '../upstreams/upstream.js';

/** How the requests of one POST reach their server. */
export interface Forwarding {
  /** Sends one request (authorized and within its limits) and gives its outcome; never throws. */
  forward(request: JsonRpcRequest): Promise<Outcome>;
  /** The gateway's own answer to a request that is not forwarded at all; undefined for the others. */
  local?(request: JsonRpcRequest): Outcome | undefined;
  /**
   * Asks the client something on the gateway's own behalf (an approval's `elicitation/create`,
   * src/integrity/approval.ts), on the call's response stream or else the session's GET stream,
   * and gives its answer: `timeout` when none came within `timeoutMs`, `unreachable` when it
   * could not be sent. Only a legacy session's client can be asked this way: absent otherwise
   * (a 2026-07-28 client is asked with an `input_required` answer instead).
   */
  ask?(request: JsonRpcRequest, timeoutMs: number): Promise<JsonRpcResponse | 'timeout' | 'unreachable'>;
  /** What the client declared it can be asked (its initialize's capabilities); absent without a session. */
  clientCapabilities?: Record<string, unknown>;
}

/** What every forwarding needs to know of the request it serves. */
export interface ForwardingContext {
  gateway: Gateway;
  server: RouteConfig;
  forwardPath: string;
  identity: Identity;
  post: PostResponse;
  reply: FastifyReply;
  log: LineLogger;
}

/** A legacy client's requests, on its session's upstream session or the identity's shared one. */
export function legacyForwarding({ gateway, post, log }: ForwardingContext, upstream: UpstreamSession, session: DownstreamSession | undefined): Forwarding {
  const forwarding: Forwarding = { forward: (r) => gateway.forward(r, upstream, session, post, log) };
  if (session) {
    forwarding.ask = (request, timeoutMs) => askClient(session, post, request, timeoutMs);
    forwarding.clientCapabilities = session.clientCapabilities;
  }
  return forwarding;
}

/**
 * The gateway's own request to a legacy session's client: on the POST's response stream when the
 * client accepts one, else on its GET stream. Only this session's client can answer it (its
 * answer is taken by DownstreamSession.takeOwnAnswer, never relayed upstream).
 */
function askClient(
  session: DownstreamSession,
  post: PostResponse,
  request: JsonRpcRequest,
  timeoutMs: number,
): Promise<JsonRpcResponse | 'timeout' | 'unreachable'> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      session.forgetOwnRequest(request.id);
      resolve('timeout');
    }, timeoutMs);
    session.awaitOwnAnswer(request.id, (answer) => {
      clearTimeout(timer);
      resolve(answer);
    });
    if (post.push(request) || session.eventStream?.write(request)) return;
    clearTimeout(timer);
    session.forgetOwnRequest(request.id);
    resolve('unreachable');
  });
}

/** How long a round continued by another replica may take when the route has no timeout of its own (a virtual server). */
const ROUND_ELSEWHERE_MS = 60_000;

/**
 * A modern request to a legacy server: its answer in the modern shape, its server requests as
 * input rounds (src/eras/input-rounds.ts), and its cancellation when the client closes the
 * response (2026-07-28 has no notifications/cancelled on HTTP).
 */
export function translatedForwarding(context: ForwardingContext, upstream: UpstreamSession, modern: ModernContext): Forwarding {
  const { gateway, post, identity, server, reply, log } = context;
  const init = upstream.initializeResult;
  const initResult = 'result' in init ? init.result : {};
  const serverInfo = initResult['serverInfo'];
  const signal = clientGone(reply);
  return {
    local: (r) => (r.method === 'server/discover' ? answered({ jsonrpc: '2.0', id: r.id, result: discoverResult(initResult) }) : undefined),
    async forward(r) {
      const bind = () => bindingOf(ownerKey(identity), server.name, r);
      const timeoutMs = 'timeout_ms' in server ? server.timeout_ms : ROUND_ELSEWHERE_MS;
      const outcome = await continueOrStart(gateway, r, upstream, post, signal, modern.clientCapabilities, bind, log, timeoutMs);
      const response = outcome.response;
      if (!('result' in response)) return outcome;
      return { ...outcome, response: { ...response, result: toModernResult(r.method, response.result, serverInfo) } };
    },
  };
}

/**
 * A modern request to a modern server: it goes as it is, its answer comes back as it is (input
 * rounds, listen streams and caching hints are the client's and the server's business).
 * Cacheable results are served within their TTL, shared only when the server marked them public.
 */
export function directForwarding(
  { gateway, server, forwardPath, identity, post, reply, log }: ForwardingContext,
  headers: Record<string, string> | undefined,
  onCacheLookup: (hit: boolean) => void,
): Forwarding {
  const owner = ownerKey(identity);
  return {
    async forward(r) {
      const keys = gateway.cache.keys(server.name, forwardPath, r, owner);
      const hit = keys && gateway.cache.get(keys, r.id);
      if (keys) onCacheLookup(hit !== undefined);
      if (hit) return { ...answered(hit), cached: true };
      const outcome = await callModern(gateway, r, server, forwardPath, post, clientGone(reply), headers, owner, log);
      if (keys) gateway.cache.put(keys, outcome.response);
      return outcome;
    },
  };
}

/**
 * What a modern request may receive before its answer: progress, and log lines only when it
 * asked for them (`_meta` logLevel; a 2026-07-28 server sends none otherwise).
 */
export function modernRelay(modern: ModernContext): (message: JsonRpcMessage) => boolean {
  return (message) => modern.logLevel !== undefined || !('method' in message) || message.method !== 'notifications/message';
}

/**
 * Sends a 2026-07-28 client's request to a modern server as it is (its envelope, MRTR rounds and
 * listen streams pass through). Never throws: failures become JSON-RPC errors.
 */
async function callModern(
  gateway: Gateway,
  request: JsonRpcRequest,
  server: RouteConfig,
  forwardPath: string,
  post: PostResponse,
  signal: AbortSignal,
  headers: Record<string, string> | undefined,
  owner: string,
  log: LineLogger,
): Promise<Outcome> {
  try {
    const options: CallOptions = { forwardPath, signal, owner, onMessage: (m) => void post.push(m) };
    if (headers) options.headers = headers;
    // A listen has the server's timeout_ms until its acknowledgement, then lasts until the
    // client closes it (modern-http.ts call()): a server that never acknowledges is a timeout,
    // not a stream that stays silent for ever.
    const response = await gateway.upstream(server.name).call(request, options);
    return modernOutcome(response);
  } catch (err) {
    return errorOutcome(toGatewayError(err, request.id, log));
  }
}

/**
 * Sends a 2026-07-28 client's request to a legacy server, or continues one that asked the client
 * for input (its `requestState`). Ends with the server's answer, or with an `input_required`
 * result when the server asks the client something first (src/eras/input-rounds.ts). Never
 * throws. `signal` aborts when the client closes this round's response: the call is cancelled.
 */
async function continueOrStart(
  gateway: Gateway,
  request: JsonRpcRequest,
  upstream: UpstreamSession,
  post: PostResponse,
  signal: AbortSignal,
  capabilities: Record<string, unknown>,
  /** Who may continue the call: computed only when the call takes input rounds. */
  bind: () => CallBinding,
  log: LineLogger,
  /** How long a round another replica continues may take (the server's timeout_ms). */
  timeoutMs: number,
): Promise<Outcome> {
  let call: PendingCall;
  const requestState = request.params?.['requestState'];
  if (requestState !== undefined) {
    const binding = bind();
    const taken = gateway.rounds.take(requestState, binding);
    if (typeof taken === 'string') {
      // Not held here: the replica that holds the call continues it (sealed sessions with Redis).
      if (typeof requestState === 'string' && !gateway.rounds.holds(requestState)) {
        const elsewhere = await gateway.continueElsewhere(requestState, request, { ...binding }, timeoutMs);
        if (elsewhere) {
          for (const m of elsewhere.messages) post.push(m);
          return answered(elsewhere.response);
        }
      }
      return errorOutcome(new GatewayError('invalid_params', `Invalid params: ${taken}`, request.id));
    }
    call = taken;
    call.respond(request.params?.['inputResponses']);
  } else {
    const controller = new AbortController();
    const started = new PendingCall(upstream, capabilities, controller);
    call = started;
    const options: RequestOptions = {
      signal: controller.signal,
      capabilities,
      // 2026-07-28 clients have no tasks: a message about one is not theirs (src/mcp/tasks.ts).
      onMessage: (m) => {
        if (!gateway.tasks.deliverable(undefined, undefined, m)) {
          if ('id' in m) refuseServerRequest(upstream, m.id, 'Not the client of this task');
        } else if ('id' in m) started.serverRequest(m);
        else started.relay(m);
      },
    };
    upstream
      .request(toLegacyRequest(request), options)
      .then(
        (response) => started.settle(answered(response)),
        (err: unknown) => started.settle(errorOutcome(toGatewayError(err, request.id, log))),
      )
      .finally(() => gateway.rounds.expireWhenSettled(started));
  }
  call.relay = (m) => void post.push(m);
  const cancel = (): void => call.controller.abort();
  signal.addEventListener('abort', cancel, { once: true });
  try {
    return await nextRound(gateway, call, request, bind);
  } finally {
    signal.removeEventListener('abort', cancel);
  }
}

/** The next round of a call: held again when the server asks more, else its answer (with this round's id). */
async function nextRound(gateway: Gateway, call: PendingCall, request: JsonRpcRequest, bind: () => CallBinding): Promise<Outcome> {
  const round = await call.next();
  if ('inputRequired' in round) {
    call.binding ??= bind();
    gateway.rounds.hold(call);
    return answered({ jsonrpc: '2.0', id: request.id, result: round.inputRequired });
  }
  // The answer carries the id of the request that started the call; this round's is another.
  return { ...round.answer, response: { ...round.answer.response, id: request.id } };
}

/**
 * Continues a call held here for a client whose retry reached another replica (Gateway
 * continueElsewhere, through Redis): checked against the binding that replica computed from the
 * client it authenticated, as a retry here would be. What the call sends meanwhile (progress, log
 * lines) is gathered and sent back with the round's answer.
 */
export async function continueHeld(gateway: Gateway, requestState: string, request: JsonRpcRequest, binding: Record<string, string>): Promise<RoundResult> {
  const taken = gateway.rounds.take(requestState, binding as unknown as CallBinding);
  if (typeof taken === 'string') return { messages: [], response: errorResponse(request.id, ErrorCode.InvalidParams, `Invalid params: ${taken}`) };
  const messages: JsonRpcMessage[] = [];
  taken.relay = (m) => void messages.push(m);
  taken.respond(request.params?.['inputResponses']);
  const outcome = await nextRound(gateway, taken, request, () => binding as unknown as CallBinding);
  return { messages, response: outcome.response };
}

/**
 * A modern server's answer, with the kind of its error where the specification gives that error
 * its own HTTP status (400 for the header, capability and version errors, 404 for an unknown
 * method; src/http/errors.ts decides the status): any other answer is a 200.
 */
function modernOutcome(response: JsonRpcResponse): Outcome {
  if (!('error' in response)) return answered(response);
  const kind = MODERN_ERROR_KINDS.get(response.error.code);
  return kind ? { response, error: kind, cancelled: false } : answered(response);
}

const MODERN_ERROR_KINDS: ReadonlyMap<number, GatewayErrorKind> = new Map([
  [ErrorCode.HeaderMismatch, 'header_mismatch'],
  [ErrorCode.MissingRequiredClientCapability, 'missing_client_capability'],
  [ErrorCode.UnsupportedProtocolVersion, 'unsupported_protocol_version'],
  [ErrorCode.MethodNotFound, 'method_not_found'],
]);

/** Aborts when the client closes its response before the answer: a 2026-07-28 cancellation. */
function clientGone(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  const res = reply.raw;
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  return controller.signal;
}
