/**
 * Resumable streams: the SSE events the gateway sends in a session carry ids, and a client whose
 * stream broke asks after them with `Last-Event-ID` on a GET (the specification's "Resumability
 * and Redelivery"), to this replica or any other.
 *
 *   g.<n>        the session's standalone GET stream, numbered per session: the replica that sent
 *                them replays the last MAX_REPLAYED the client missed (another replica has none).
 *   p.<id>.<n>   a POST's response stream, <id> the base64url JSON of its (first) request's id:
 *                the answer that stream would have carried is lost with it, so the client is told
 *                at once (an error with that id: it may have run, retry if that is safe) rather
 *                than left waiting until its own timeout; the request, if still running here, is
 *                cancelled, since nobody can receive its answer.
 *   p.<id>.end   the id of that error: a client that asks after it again gets 405 (nothing more
 *                will come), so that it stops asking.
 */
import { ErrorCode, errorResponse, type JsonRpcId, type JsonRpcResponse } from '../jsonrpc/messages.js';

/** GET-stream events a session keeps for a client that comes back. */
export const MAX_REPLAYED = 64;

export type LastEvent =
  | { kind: 'stream'; seq: number }
  | { kind: 'post'; id: JsonRpcId }
  | { kind: 'post-ended' }
  /** Not one of ours (another server's, garbage): the stream starts afresh. */
  | { kind: 'unknown' };

export function getStreamEventId(seq: number): string {
  return `g.${seq}`;
}

/** The prefix of a POST stream's event ids, for the request `id`. */
export function postStreamPrefix(id: JsonRpcId): string {
  return `p.${Buffer.from(JSON.stringify(id), 'utf8').toString('base64url')}.`;
}

export function parseLastEventId(value: string | undefined): LastEvent | undefined {
  if (value === undefined || value === '') return undefined;
  if (value.length > 512) return { kind: 'unknown' };
  const stream = /^g\.(\d{1,15})$/.exec(value);
  if (stream) return { kind: 'stream', seq: Number(stream[1]) };
  const post = /^p\.([A-Za-z0-9_-]{1,400})\.(\d{1,15}|end)$/.exec(value);
  if (!post) return { kind: 'unknown' };
  if (post[2] === 'end') return { kind: 'post-ended' };
  try {
    const id: unknown = JSON.parse(Buffer.from(post[1]!, 'base64url').toString('utf8'));
    if (typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id))) return { kind: 'post', id };
  } catch {
    // not ours
  }
  return { kind: 'unknown' };
}

/** The answer a client gets for a request whose response stream broke before its answer. */
export function interrupted(id: JsonRpcId): { response: JsonRpcResponse; eventId: string } {
  return {
    response: errorResponse(
      id,
      ErrorCode.InternalError,
      'The stream carrying the answer to this request was interrupted before the answer (the gateway replica serving it may have stopped); the request may or may not have run: retry it if that is safe',
    ),
    eventId: `${postStreamPrefix(id)}end`,
  };
}
