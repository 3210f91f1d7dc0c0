/**
 * The call side of tool integrity (stage 5 of src/pipeline.ts, after the tool policy): a
 * tools/call or prompts/get in block mode is forwarded only when the current definition of what
 * it names is its pin. When the gateway does not know that definition (never listed since it
 * started, or its server announced a list change since), it lists the server's tools (or
 * prompts) first, through the very forwarding the call would take (same session, same era, same
 * virtual server), every page until the name is found: a changed definition is then caught even
 * when no client has listed it, and a client holding an old list cannot call it. A name the
 * server does not list at all is refused too: an unlisted tool was never reviewed.
 */
import { GatewayError } from '../http/errors.js';
import type { JsonRpcRequest } from '../jsonrpc/messages.js';
import type { Outcome } from '../mcp/post-response.js';
import type { PinKind } from './definitions.js';
import type { ItemOwner, ToolIntegrity, Verdict } from './guard.js';

/** Why a call is refused: its definition's verdict, or `unlisted` (its server does not list it). */
export type Refusal = Exclude<Verdict, 'pinned'> | 'unlisted';

/** Pages of a list followed at most to find a called name (a server that loops its cursor must not hang a call). */
const MAX_PAGES = 100;

let listings = 0;

/** The tool a tools/call names or the prompt a prompts/get names; undefined for any other request. */
export function namedItem(r: JsonRpcRequest): { kind: PinKind; name: string } | undefined {
  const kind = r.method === 'tools/call' ? 'tool' : r.method === 'prompts/get' ? 'prompt' : undefined;
  if (kind === undefined) return undefined;
  const name = r.params?.['name'];
  return { kind, name: typeof name === 'string' ? name : '' };
}

/**
 * In block mode (the caller's to check): undefined when the call may be forwarded, otherwise why
 * it is refused. Synchronous when the verdict is known (the usual case: a Map lookup); a Promise when
 * the server must be listed first.
 */
export function vet(
  integrity: ToolIntegrity,
  kind: PinKind,
  server: string,
  name: string,
  call: JsonRpcRequest,
  forward: (request: JsonRpcRequest) => Promise<Outcome>,
  owner: ItemOwner,
): Refusal | undefined | Promise<Refusal | undefined> {
  const known = integrity.verdict(server, kind, name);
  if (known !== undefined) return known === 'pinned' ? undefined : known;
  return listFirst(integrity, kind, server, name, call, forward, owner);
}

async function listFirst(
  integrity: ToolIntegrity,
  kind: PinKind,
  server: string,
  name: string,
  call: JsonRpcRequest,
  forward: (request: JsonRpcRequest) => Promise<Outcome>,
  owner: ItemOwner,
): Promise<Refusal | undefined> {
  let cursor: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    const params: Record<string, unknown> = {};
    if (cursor !== undefined) params['cursor'] = cursor;
    // A 2026-07-28 request carries its context in _meta: the list goes with the same one.
    const meta = modernMeta(call);
    if (meta) params['_meta'] = meta;
    const method = kind === 'tool' ? 'tools/list' : 'prompts/list';
    const outcome = await forward({ jsonrpc: '2.0', id: `mcp-guard-integrity-${++listings}`, method, params });
    const response = outcome.response;
    if (!('result' in response)) break;
    integrity.checkList(kind, response, owner);
    const verdict = integrity.verdict(server, kind, name);
    if (verdict !== undefined) return verdict === 'pinned' ? undefined : verdict;
    const next = response.result['nextCursor'];
    if (typeof next !== 'string' || next === '') break;
    cursor = next;
  }
  return 'unlisted';
}

/** The 2026-07-28 envelope members of a request's _meta (not its progress token); undefined for a legacy request. */
function modernMeta(call: JsonRpcRequest): Record<string, unknown> | undefined {
  const meta = call.params?.['_meta'];
  if (meta === null || typeof meta !== 'object') return undefined;
  let out: Record<string, unknown> | undefined;
  for (const [key, value] of Object.entries(meta)) if (key.startsWith('io.modelcontextprotocol/')) (out ??= {})[key] = value;
  return out;
}

/** The JSON-RPC error a refused call is answered with: it says what awaits approval, and why. */
export function refusalError(kind: PinKind, called: string, server: string, refusal: Refusal, id: JsonRpcRequest['id']): GatewayError {
  const what = `${kind === 'tool' ? 'Tool' : 'Prompt'} ${JSON.stringify(called)} of server ${JSON.stringify(server)}`;
  const why =
    refusal === 'changed'
      ? 'awaits approval: its definition changed since it was pinned'
      : refusal === 'unpinned'
        ? 'awaits approval: its definition is not pinned'
        : 'is refused: its server does not list it, so its definition cannot be checked';
  return new GatewayError('tool_forbidden', `Forbidden: ${what} ${why}`, id, { reason: `tool_integrity_${refusal}`, server });
}
