/**
 * Tools that need a person's approval (`require_approval` on an API key, a server or
 * `[auth.jwt]`; docs/tool-integrity.md). Before such a call is forwarded, the gateway asks the
 * client's user through an elicitation: the tool, its server and its arguments (summarised,
 * truncated, credentials redacted), and a yes/no question. Accepted (with `confirm: true`): the
 * call goes on. Declined, cancelled, unanswered in time, or a client that cannot be asked: the
 * call is answered with a JSON-RPC error and never reaches the server.
 *
 *   legacy session   an `elicitation/create` request to the client, on the call's response
 *                    stream (or the session's GET stream); only that session's client can answer
 *                    it (src/mcp/sessions.ts takeOwnAnswer), within the server's timeout_ms
 *   no session       refused: a session-less client cannot be asked anything
 *   2026-07-28       an `input_required` answer whose `inputRequests` hold the elicitation and
 *                    whose `requestState` is an opaque handle, bound to the identity, the server
 *                    and the call's parameters (src/eras/input-rounds.ts bindingOf); the retry
 *                    with the answer in `inputResponses` is forwarded without them. A later round
 *                    of the approved call (the server's own `requestState`) is not asked again.
 *
 * A client asked must have declared the elicitation capability (form mode): at initialize, or in
 * a 2026-07-28 request's `_meta`. Every decision is audited (`tool_approval`) and counted.
 */
import { randomBytes } from 'node:crypto';
import { ownerKey, type Identity } from '../auth/identity.js';
import type { GatewayConfig } from '../config/schema.js';
import { GatewayError } from '../http/errors.js';
import { objectOf, type JsonRpcRequest, type JsonRpcResponse } from '../jsonrpc/messages.js';
import { answered, errorOutcome, type Outcome } from '../mcp/post-response.js';
import { redactCredentialField, redactLine } from '../observability/audit/redaction.js';
import { ToolPolicy } from '../policy/tools.js';
import type { Forwarding } from '../eras/forwarding.js';
import { bindingOf, sameBinding, type CallBinding } from '../eras/input-rounds.js';

export type ApprovalDecision = 'accepted' | 'declined' | 'cancelled' | 'unavailable' | 'timeout';

/** The key of the approval question in a 2026-07-28 `inputRequests` / `inputResponses`. */
export const APPROVAL_INPUT_KEY = 'mcp-guard-approval';
/** What starts the gateway's own requestState (a server's never does: the gateway made it). */
const STATE_PREFIX = 'mcp-guard-approval.';
/** The arguments shown to the user, at most this many characters. */
const MAX_SUMMARY = 4_000;
/** Questions (and approved calls' later rounds) remembered at most; the oldest go first. */
const MAX_HELD = 10_000;
/** How long a later round of an approved 2026-07-28 call is recognised. */
const CONTINUATION_MS = 10 * 60_000;

/** A tools/call placed with its server: the member and its own name on a virtual server. */
export interface ApprovalTarget {
  server: string;
  tool: string;
  /** The name the client called it by. */
  called: string;
}

/** What becomes of the call: forwarded (perhaps rewritten; `after` sees its outcome), or answered here. */
export type ApprovalResult = { forward: JsonRpcRequest; after?: (outcome: Outcome) => void } | { answer: Outcome };

/** Told each decision, for the audit log and metrics. */
export type Decided = (decision: ApprovalDecision) => void;

export class Approvals {
  private servers = new Map<string, ToolPolicy>();
  /** 2026-07-28 questions waiting for their retry, by requestState. */
  private readonly questions = new Map<string, { binding: CallBinding; expires: number }>();
  /** The server's requestStates of approved 2026-07-28 calls: their later rounds are not asked again. */
  private readonly continued = new Map<string, { owner: string; server: string; expires: number }>();

  /** Each server's `require_approval` (at start and on every reload). */
  configure(config: GatewayConfig): void {
    const servers = new Map<string, ToolPolicy>();
    for (const server of config.servers) {
      if (server.require_approval && server.require_approval.length > 0) servers.set(server.name, ToolPolicy.fromPatterns(server.require_approval));
    }
    this.servers = servers;
  }

  /** Whether a call of `tool` (its own name) of `server` by `identity` needs a person's approval: two lookups. */
  required(identity: Identity, server: string, tool: string): boolean {
    return (identity.approval?.allows(tool, server) ?? false) || (this.servers.get(server)?.allows(tool, server) ?? false);
  }

  /**
   * Asks for the approval of `call`, the way its client can be asked. `timeoutMs`: how long a
   * legacy client's user has to answer, and how long a 2026-07-28 question stays open.
   */
  async ask(
    call: JsonRpcRequest,
    target: ApprovalTarget,
    identity: Identity,
    forwarding: Forwarding,
    timeoutMs: number,
    decided: Decided,
  ): Promise<ApprovalResult> {
    const meta = objectOf(call.params?.['_meta']);
    if (meta?.['io.modelcontextprotocol/protocolVersion'] !== undefined) return this.askModern(call, target, identity, meta, timeoutMs, decided);
    if (!forwarding.ask)
      return this.refuse(
        call,
        target,
        decided,
        'unavailable',
        'a client without a session cannot be asked: initialize a session that declares the elicitation capability',
      );
    if (!canElicitForm(forwarding.clientCapabilities)) {
      return this.refuse(
        call,
        target,
        decided,
        'unavailable',
        'this client cannot be asked: it did not declare the elicitation capability (form) at initialize',
      );
    }
    const shown = summary(call.params?.['arguments']);
    if (shown === undefined) return this.refuse(call, target, decided, 'unavailable', TOO_LONG);
    const question: JsonRpcRequest = {
      jsonrpc: '2.0',
      id: `${STATE_PREFIX}${randomBytes(12).toString('base64url')}`,
      method: 'elicitation/create',
      params: elicitationParams(shown, target),
    };
    const answer = await forwarding.ask(question, timeoutMs);
    if (answer === 'timeout') return this.refuse(call, target, decided, 'timeout', 'nobody answered the approval request in time');
    if (answer === 'unreachable')
      return this.refuse(call, target, decided, 'unavailable', 'the approval request could not be sent: accept text/event-stream or open the GET stream');
    return this.settle(call, target, decided, decisionOf(answer), call);
  }

  private askModern(
    call: JsonRpcRequest,
    target: ApprovalTarget,
    identity: Identity,
    meta: Record<string, unknown>,
    timeoutMs: number,
    decided: Decided,
  ): ApprovalResult {
    const owner = ownerKey(identity);
    const params = call.params ?? {};
    const state = params['requestState'];
    const now = Date.now();
    if (typeof state === 'string' && state.startsWith(STATE_PREFIX)) {
      const held = this.questions.get(state);
      if (held === undefined || held.expires < now) {
        this.questions.delete(state);
        return {
          answer: errorOutcome(
            new GatewayError('invalid_params', 'Invalid params: requestState is unknown or has expired: send the request again without it', call.id),
          ),
        };
      }
      if (!sameBinding(held.binding, bindingOf(owner, target.server, call))) {
        return { answer: errorOutcome(new GatewayError('invalid_params', 'Invalid params: requestState belongs to another request', call.id)) };
      }
      this.questions.delete(state);
      const response = objectOf(params['inputResponses'])?.[APPROVAL_INPUT_KEY];
      const decision = response === undefined ? 'cancelled' : decisionOf({ jsonrpc: '2.0', id: call.id, result: objectOf(response) ?? {} });
      const forward: JsonRpcRequest = { ...call, params: { ...params } };
      delete forward.params!['requestState'];
      delete forward.params!['inputResponses'];
      return this.settle(call, target, decided, decision, forward, owner);
    }
    if (typeof state === 'string') {
      const continued = this.continued.get(state);
      // A later round of a call approved before: the server asked something, the client answered.
      if (continued && continued.expires >= now && continued.owner === owner && continued.server === target.server) {
        return { forward: call, after: this.remember(owner, target.server) };
      }
    }
    if (!canElicitForm(objectOf(meta['io.modelcontextprotocol/clientCapabilities']))) {
      return this.refuse(call, target, decided, 'unavailable', 'this client cannot be asked: its _meta clientCapabilities do not declare elicitation (form)');
    }
    const shown = summary(call.params?.['arguments']);
    if (shown === undefined) return this.refuse(call, target, decided, 'unavailable', TOO_LONG);
    const token = `${STATE_PREFIX}${randomBytes(24).toString('base64url')}`;
    hold(this.questions, token, { binding: bindingOf(owner, target.server, call), expires: now + timeoutMs });
    const inputRequests = { [APPROVAL_INPUT_KEY]: { method: 'elicitation/create', params: elicitationParams(shown, target) } };
    return { answer: answered({ jsonrpc: '2.0', id: call.id, result: { resultType: 'input_required', inputRequests, requestState: token } }) };
  }

  /** The decision recorded; accepted: `forward` goes on, anything else is an error answer. */
  private settle(
    call: JsonRpcRequest,
    target: ApprovalTarget,
    decided: Decided,
    decision: ApprovalDecision,
    forward: JsonRpcRequest,
    owner?: string,
  ): ApprovalResult {
    if (decision !== 'accepted') {
      return this.refuse(call, target, decided, decision, decision === 'cancelled' ? 'the user cancelled the approval request' : 'the user declined it');
    }
    decided('accepted');
    return owner === undefined ? { forward } : { forward, after: this.remember(owner, target.server) };
  }

  /** After an approved 2026-07-28 call: its own input rounds (the server's requestState) are not asked again. */
  private remember(owner: string, server: string): (outcome: Outcome) => void {
    return (outcome) => {
      const response = outcome.response;
      if (!('result' in response) || response.result['resultType'] !== 'input_required') return;
      const state = response.result['requestState'];
      if (typeof state === 'string') hold(this.continued, state, { owner, server, expires: Date.now() + CONTINUATION_MS });
    };
  }

  private refuse(call: JsonRpcRequest, target: ApprovalTarget, decided: Decided, decision: Exclude<ApprovalDecision, 'accepted'>, why: string): ApprovalResult {
    decided(decision);
    const message = `Forbidden: calling tool ${JSON.stringify(target.called)} of server ${JSON.stringify(target.server)} needs a person's approval, and ${why}`;
    return { answer: errorOutcome(new GatewayError('tool_forbidden', message, call.id, { reason: `approval_${decision}`, server: target.server })) };
  }
}

/** Whether a client's declared capabilities allow a form elicitation (an empty `elicitation` means form). */
function canElicitForm(capabilities: Record<string, unknown> | undefined): boolean {
  const elicitation = objectOf(capabilities?.['elicitation']);
  if (elicitation === undefined) return false;
  return elicitation['form'] !== undefined || elicitation['url'] === undefined;
}

/** The client's answer to the question: accepted only with `action: "accept"` and `confirm: true`. */
function decisionOf(answer: JsonRpcResponse): ApprovalDecision {
  if (!('result' in answer)) return 'cancelled';
  const action = answer.result['action'];
  if (action === 'accept') return objectOf(answer.result['content'])?.['confirm'] === true ? 'accepted' : 'declined';
  return action === 'cancel' ? 'cancelled' : 'declined';
}

/** The question: the tool, its server, its arguments (credentials redacted, truncated), and a yes/no field. */
function elicitationParams(shown: string, target: ApprovalTarget): Record<string, unknown> {
  return {
    mode: 'form',
    message: `Allow the tool "${target.called}" of server "${target.server}" to run with these arguments?\n${shown}`,
    requestedSchema: {
      type: 'object',
      properties: { confirm: { type: 'boolean', title: 'Allow this call', description: `Run ${target.called} on ${target.server}` } },
      required: ['confirm'],
    },
  };
}

/**
 * The arguments as the person is shown them: JSON, credential-named members and credential-looking
 * values redacted (the audit log's built-in rules), bidirectional and invisible format characters
 * written as escapes (they could make the text read otherwise than it runs). Undefined when longer
 * than MAX_SUMMARY: what is forwarded must be what was shown, so such a call is refused rather
 * than shown cut (a payload after the cut would be approved unseen).
 */
export function summary(args: unknown): string | undefined {
  const text = JSON.stringify(args ?? {}, redactCredentialField) ?? '{}';
  const redacted = redactLine(text, args, []).replace(FORMAT_CHARACTERS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return redacted.length <= MAX_SUMMARY ? redacted : undefined;
}

/** Characters that change how text is displayed without being seen: bidi controls, zero-width ones. */
const FORMAT_CHARACTERS = /[\u061C\u200B-\u200F\u202A-\u202E\u2060-\u2069\uFEFF]/g;

const TOO_LONG = `its arguments are too long to show in an approval request (more than ${MAX_SUMMARY} characters once redacted): a person cannot approve what they cannot see`;

function hold<V>(map: Map<string, V>, key: string, value: V): void {
  if (map.size >= MAX_HELD) map.delete(map.keys().next().value as string);
  map.set(key, value);
}
