/**
 * The depth bound on what an upstream sends: a stdout line of a stdio child, an HTTP answer's
 * JSON body, one SSE event (streamable HTTP, legacy SSE, 2026-07-28). Sizes are bounded where each
 * is read (MAX_LINE_BYTES, MAX_BODY_BYTES, the SSE event limit); nesting is bounded here, before
 * JSON.parse, as a client's body is (`nestedDeeperThan`, src/jsonrpc/messages.ts).
 *
 * Why: JSON.parse copes with any depth, but JSON.stringify (which writes every message to a
 * client) and every recursive walk overflow the stack at a few thousand levels. A notification
 * 5,000 levels deep (10 KB) on a stdio child's stdout threw out of the stdout reader and ended
 * the gateway; a deep result was answered 500 with `id: null` (issue 16, finding 2).
 *
 * A message over the limit is never parsed. Its top-level members are read from the text instead
 * (id, method, result, error: `topLevelOf`): a response to a request in flight fails that request
 * with an UpstreamError of kind 'protocol' (the client gets a JSON-RPC error with its own id); a
 * notification or a server request is dropped and logged (its method, never its content).
 */
import { closingQuote, MAX_ID_LENGTH, MAX_METHOD_LENGTH, nestedDeeperThan, type JsonRpcId } from '../jsonrpc/messages.js';
import type { Logger } from '../observability/logger.js';
import type { Correlator } from './correlator.js';
import { UpstreamError } from './errors.js';

/**
 * The deepest nesting of arrays and objects a message from an upstream may have. Tool results
 * carry the server's own data (structuredContent), so this is looser than a client's default
 * `max_json_depth` (64), and far below the depth at which JSON.stringify overflows the stack
 * (about 4,000 on Node 20) or a Python client's json module gives up (about 1,000).
 */
export const MAX_UPSTREAM_DEPTH = 256;

/**
 * True when the text nests deeper than MAX_UPSTREAM_DEPTH. Text shorter than the limit cannot
 * (each level takes a character), so most messages cost one comparison.
 */
export function nestedTooDeep(text: string): boolean {
  return text.length > MAX_UPSTREAM_DEPTH && nestedDeeperThan(text, MAX_UPSTREAM_DEPTH);
}

/** What the top level of one refused message shows. */
export interface TopLevel {
  /** The id member, when it is a number, null, or a string of at most MAX_ID_LENGTH characters. */
  id?: JsonRpcId | null;
  /** The method member, when it is a string of at most MAX_METHOD_LENGTH characters. */
  method?: string;
  hasMethod: boolean;
  hasResult: boolean;
  hasError: boolean;
}

/** A response: no method, and a result or an error. */
export function isResponseShape(m: TopLevel): boolean {
  return !m.hasMethod && (m.hasResult || m.hasError);
}

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
/** Member names are decoded when at most this long; the members looked for are shorter. */
const MAX_KEY_CHARS = 64;

/** A JSON string literal (quotes included) decoded, or undefined when it is too long or invalid. */
function stringAt(text: string, open: number, close: number, maxChars: number): string | undefined {
  // An escape takes at most 6 characters for one.
  if (close - open - 1 > maxChars * 6) return undefined;
  try {
    const value = JSON.parse(text.slice(open, close + 1)) as string;
    return value.length <= maxChars ? value : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The top-level members of each message in `text` (one object, or a batch of them), read in one
 * pass without building the value: for text too deep to parse. Never throws; what is not
 * recognisable yields nothing (invalid JSON is read as far as it goes).
 */
export function topLevelOf(text: string): TopLevel[] {
  const found: TopLevel[] = [];
  let i = 0;
  while (i < text.length && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r' || text[i] === '\ufeff')) i++;
  // The depth at which the members of a message are: 1 for a message, 2 in a batch.
  const level = text[i] === '[' ? 2 : 1;
  let depth = 0;
  let current: TopLevel | undefined;
  let key: string | undefined;
  let expectKey = false;
  for (; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      const close = closingQuote(text, i);
      if (close === -1) break;
      if (current && depth === level) {
        if (expectKey) {
          key = stringAt(text, i, close, MAX_KEY_CHARS);
          expectKey = false;
          if (key === 'method') current.hasMethod = true;
          else if (key === 'result') current.hasResult = true;
          else if (key === 'error') current.hasError = true;
        } else if (key === 'id') {
          const id = stringAt(text, i, close, MAX_ID_LENGTH);
          if (id !== undefined) current.id = id;
        } else if (key === 'method') {
          const method = stringAt(text, i, close, MAX_METHOD_LENGTH);
          if (method !== undefined) current.method = method;
        }
      }
      i = close;
      continue;
    }
    if (c === 0x7b || c === 0x5b) {
      depth++;
      if (depth === level) {
        current = c === 0x7b ? { hasMethod: false, hasResult: false, hasError: false } : undefined;
        if (current) found.push(current);
        expectKey = current !== undefined;
        key = undefined;
      }
      continue;
    }
    if (c === 0x7d || c === 0x5d) {
      if (depth-- === level) current = undefined;
      if (depth <= 0 && level === 1) break;
      continue;
    }
    if (!current || depth !== level) continue;
    if (c === 0x2c) {
      expectKey = true;
      key = undefined;
    } else if (key === 'id' && (c === 0x2d || (c >= 0x30 && c <= 0x39))) {
      NUMBER.lastIndex = i;
      const m = NUMBER.exec(text);
      if (m) {
        current.id = Number(m[0]);
        i += m[0].length - 1;
      }
    } else if (key === 'id' && c === 0x6e && text.startsWith('null', i)) {
      current.id = null;
      i += 3;
    }
  }
  return found;
}

/** The error a request fails with when its response nests too deep. */
export function tooDeepError(server: string): UpstreamError {
  return new UpstreamError('protocol', server, `Upstream '${server}' answered with a message nested deeper than ${MAX_UPSTREAM_DEPTH} levels`);
}

/**
 * Drops a message (or a batch) that nests too deep. For each response in it, `fail` is called with
 * its id and the error to fail the matching request with; it says whether there was one. The log
 * line (warn: the upstream misbehaves, not the gateway) names what was dropped, never its content.
 * `fail` runs after the log line and may throw (a caller that fails the whole exchange).
 */
export function dropTooDeep(text: string, server: string, logger: Logger, fail: (id: JsonRpcId | null | undefined, error: UpstreamError) => boolean): void {
  const messages = topLevelOf(text);
  const responses = messages.filter(isResponseShape);
  const methods = messages.flatMap((m) => (m.method === undefined ? [] : [m.method.slice(0, 100)])).slice(0, 5);
  logger.warn(
    { chars: text.length, limitDepth: MAX_UPSTREAM_DEPTH, messages: messages.length, responses: responses.length, ...(methods.length > 0 ? { methods } : {}) },
    'upstream sent a message nested too deep; dropped',
  );
  for (const response of responses) fail(response.id, tooDeepError(server));
}

/** A `fail` for dropTooDeep that fails the request in flight with that id in a correlator. */
export function failInFlight<Owner>(correlator: Correlator<Owner>): (id: JsonRpcId | null | undefined, error: UpstreamError) => boolean {
  return (id, error) => {
    const entry = correlator.get(id);
    if (entry === undefined) return false;
    correlator.fail(entry.wireId, error);
    return true;
  };
}
