/**
 * Multi round-trip requests (2026-07-28, "MRTR") in front of a legacy server.
 *
 * A legacy server asks the client for input by sending it a request (sampling/createMessage,
 * elicitation/create, roots/list) while it handles the client's call. A modern client has no
 * channel for that: the server answers the call with `resultType: "input_required"` and the
 * requests in `inputRequests`, and the client calls again with `inputResponses` and the
 * `requestState` it was given.
 *
 * The gateway bridges the two: it keeps the legacy call running, answers the modern client
 * `input_required` with the server's requests, and when the client calls again, hands each answer
 * to the server as the response to its request, then waits for the next thing the server does:
 * another request (another round) or the call's own answer.
 *
 * `requestState` is an opaque random handle to the call held here (never data the client could
 * alter), bound to the identity, server, method and parameters of the call that started it: a
 * retry by anyone else, or of another call, is refused. The state lives in this process, so the
 * rounds of one call must reach the same gateway replica (docs/eras.md).
 */
import { createHash, randomBytes } from 'node:crypto';
import { ErrorCode, errorResponse, type JsonRpcRequest } from '../jsonrpc/messages.js';
import type { ServerMessage, UpstreamSession } from '../upstreams/upstream.js';
import type { Outcome } from '../mcp/post-response.js';

/** The client capability each server-to-client request needs. */
const NEEDED_CAPABILITY: Readonly<Record<string, string>> = {
  'sampling/createMessage': 'sampling',
  'elicitation/create': 'elicitation',
  'roots/list': 'roots',
};

/** How long the answer of a call whose client has not come back for it is kept. */
const SETTLED_KEEP_MS = 60_000;

/** What a round ends with: the call's answer, or input the client must give first. */
export type RoundResult = { answer: Outcome } | { inputRequired: Record<string, unknown> };

/** Who may continue a call: the same identity, on the same server, with the same call. */
export interface CallBinding {
  owner: string;
  server: string;
  method: string;
  /** SHA-256 of the call's parameters without `_meta`, `inputResponses` and `requestState`. */
  digest: string;
}

export function bindingOf(owner: string, server: string, request: JsonRpcRequest): CallBinding {
  const params: Record<string, unknown> = { ...request.params };
  delete params['_meta'];
  delete params['inputResponses'];
  delete params['requestState'];
  const digest = createHash('sha256').update(JSON.stringify(params)).digest('base64url');
  return { owner, server, method: request.method, digest };
}

export function sameBinding(a: CallBinding, b: CallBinding): boolean {
  return a.owner === b.owner && a.server === b.server && a.method === b.method && a.digest === b.digest;
}

/** One legacy call that asked, or may ask, its modern client for input. */
export class PendingCall {
  /**
   * Who may continue the call, and its requestState: made only when the call first asks for
   * input (most calls never do; both cost microseconds on every call otherwise).
   */
  binding: CallBinding | undefined;
  private handle: string | undefined;
  /** Server requests not yet handed to the client. */
  private readonly queue: JsonRpcRequest[] = [];
  /** Handed to the client and not answered yet: inputRequests key -> the server's request. */
  private readonly asked = new Map<string, JsonRpcRequest>();
  private answer: Outcome | undefined;
  private wake: (() => void) | undefined;
  private keys = 0;
  /** Where the call's progress and log lines go: the response of the round under way. */
  relay: (message: ServerMessage) => void = () => undefined;

  constructor(
    private readonly upstream: UpstreamSession,
    /** The modern client's declared capabilities (its `_meta`), checked for each server request. */
    private readonly capabilities: Record<string, unknown>,
    /** Cancels the legacy call (the client closed its response while waiting). */
    readonly controller: AbortController,
  ) {}

  get token(): string {
    this.handle ??= randomBytes(24).toString('base64url');
    return this.handle;
  }

  get settled(): boolean {
    return this.answer !== undefined;
  }

  /** A request the server sent while handling the call. */
  serverRequest(request: JsonRpcRequest): void {
    if (request.method === 'ping') {
      void this.upstream.send({ jsonrpc: '2.0', id: request.id, result: {} }).catch(() => undefined);
      return;
    }
    const needed = NEEDED_CAPABILITY[request.method];
    if (needed === undefined || this.capabilities[needed] === undefined) {
      // The specification forbids asking a client for input it did not declare it can give.
      const reason =
        needed === undefined ? `${request.method} cannot be relayed to a 2026-07-28 client` : `The client did not declare the ${needed} capability`;
      void this.upstream.send(errorResponse(request.id, ErrorCode.MethodNotFound, reason)).catch(() => undefined);
      return;
    }
    this.queue.push(request);
    this.wake?.();
  }

  /** The legacy call's own answer (or its failure as a JSON-RPC error). */
  settle(answer: Outcome): void {
    this.answer = answer;
    this.wake?.();
  }

  /**
   * The client's answers to the inputs it was asked for, each sent to the server as the response
   * to its request. Answers to keys it was not asked for are ignored, as the specification says.
   */
  respond(inputResponses: unknown): void {
    if (inputResponses === null || typeof inputResponses !== 'object') return;
    for (const [key, value] of Object.entries(inputResponses as Record<string, unknown>)) {
      const request = this.asked.get(key);
      if (request === undefined || value === null || typeof value !== 'object' || Array.isArray(value)) continue;
      this.asked.delete(key);
      void this.upstream.send({ jsonrpc: '2.0', id: request.id, result: value as Record<string, unknown> }).catch(() => undefined);
    }
  }

  /**
   * Waits for the next thing the server does: its answer (which makes any open question moot),
   * or requests for input (with those the client left unanswered in the last round, asked again).
   */
  async next(): Promise<RoundResult> {
    while (this.answer === undefined && this.queue.length === 0) {
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
    if (this.answer !== undefined) return { answer: this.answer };
    for (const request of this.queue.splice(0)) this.asked.set(`${request.method.replace('/', '-')}-${++this.keys}`, request);
    const inputRequests: Record<string, unknown> = {};
    for (const [key, request] of this.asked) {
      inputRequests[key] = request.params === undefined ? { method: request.method } : { method: request.method, params: request.params };
    }
    return { inputRequired: { resultType: 'input_required', inputRequests, requestState: this.token } };
  }

  /** The call will not be continued: its open server requests are refused, the call cancelled. */
  abandon(): void {
    for (const request of [...this.asked.values(), ...this.queue.splice(0)]) {
      void this.upstream.send(errorResponse(request.id, ErrorCode.InternalError, 'The client did not answer')).catch(() => undefined);
    }
    this.asked.clear();
    if (!this.settled) this.controller.abort();
  }
}

/** The calls waiting for their client to come back, by requestState. */
export class InputRounds {
  private readonly calls = new Map<string, { call: PendingCall; timer: NodeJS.Timeout | undefined }>();

  get size(): number {
    return this.calls.size;
  }

  /** Whether the call `requestState` names is held here (another replica asks: src/replicas/bus.ts). */
  holds(requestState: string): boolean {
    return this.calls.has(requestState);
  }

  hold(call: PendingCall): void {
    this.calls.set(call.token, { call, timer: undefined });
    if (call.settled) this.expireWhenSettled(call);
  }

  /**
   * The call a retry continues, taken out of the registry (put back with hold() if it asks again).
   * A string error when the state is unknown (expired, or from another replica) or bound to
   * another identity or call.
   */
  take(requestState: unknown, binding: CallBinding): PendingCall | string {
    const entry = typeof requestState === 'string' ? this.calls.get(requestState) : undefined;
    if (!entry) return 'requestState is unknown or has expired: send the request again without it';
    if (!entry.call.binding || !sameBinding(entry.call.binding, binding)) return 'requestState belongs to another request';
    this.calls.delete(requestState as string);
    if (entry.timer) clearTimeout(entry.timer);
    return entry.call;
  }

  /** Forgets a held call once it has settled and its client has had a while to collect it. */
  expireWhenSettled(call: PendingCall): void {
    const entry = this.calls.get(call.token);
    if (!entry || entry.timer) return;
    entry.timer = setTimeout(() => {
      this.calls.delete(call.token);
      call.abandon();
    }, SETTLED_KEEP_MS);
    entry.timer.unref();
  }

  /** Shutdown: every held call is abandoned. */
  clear(): void {
    for (const { call, timer } of this.calls.values()) {
      if (timer) clearTimeout(timer);
      call.abandon();
    }
    this.calls.clear();
  }
}
