/**
 * A child's output as lines (stdio transport), within a size limit: a child writing garbage, or one
 * endless line, must not exhaust the gateway's memory. A line over the limit is dropped up to its
 * newline; what is known of it (its size, its first and last bytes) lets the transport fail the
 * request it answered at once, when its id is plain to see. A line that goes on far beyond the
 * limit ends the reading of the stream.
 */
import type { Readable } from 'node:stream';

/**
 * A stdout line longer than this is dropped; the same limit as one SSE event of the HTTP
 * transports. Reading resumes at the next newline.
 */
export const MAX_LINE_BYTES = 32 * 1024 * 1024;
/**
 * A line still going at this size is no answer that came out too large: the child writes without
 * end, and can answer nothing any more (all it writes is part of that line), while the gateway
 * spends its CPU on reading and dropping it, for ever. The stream is given up: `onOversized` gets
 * the line as it is so far (the request it plainly answers fails now) and the stream is destroyed.
 * That closes the pipe: the child's next write fails (SIGPIPE, or EPIPE), it exits, and its
 * supervisor starts it again.
 */
export const MAX_RUNAWAY_LINE_BYTES = 8 * MAX_LINE_BYTES;
/** How much of each end of a dropped line is kept, to find the id of the request it answered. */
const LINE_END_BYTES = 256;

/**
 * Splits a stream into lines. A line over MAX_LINE_BYTES is not kept: its bytes are counted and
 * dropped up to the next newline, where reading goes on as usual; `onOversized` then gets its
 * length and its first and last bytes. A line over MAX_RUNAWAY_LINE_BYTES gets there without its
 * newline, and the stream is destroyed: nothing more is read from it.
 */
export function readLines(stream: Readable, onLine: (line: string) => void, onOversized: (line: OversizedLine) => void): void {
  let buffered: Buffer[] = [];
  let size = 0;
  let skipped: { head: Buffer; tail: Buffer; bytes: number } | undefined;
  const skip = (line: { tail: Buffer; bytes: number }, piece: Buffer): void => {
    line.bytes += piece.length;
    line.tail = lastBytes(line.tail, piece);
  };
  const report = (line: { head: Buffer; tail: Buffer; bytes: number }): void =>
    onOversized({ head: line.head.toString('utf8'), tail: line.tail.toString('utf8'), bytes: line.bytes });
  const onData = (chunk: Buffer): void => {
    let start = 0;
    let nl = chunk.indexOf(0x0a, start);
    while (nl !== -1) {
      const piece = chunk.subarray(start, nl);
      if (skipped) {
        skip(skipped, piece);
        report(skipped);
        skipped = undefined;
      } else {
        const line = size === 0 ? piece.toString('utf8') : Buffer.concat([...buffered, piece]).toString('utf8');
        onLine(line.endsWith('\r') ? line.slice(0, -1) : line);
      }
      buffered = [];
      size = 0;
      start = nl + 1;
      nl = chunk.indexOf(0x0a, start);
    }
    if (start >= chunk.length) return;
    const rest = chunk.subarray(start);
    if (skipped) {
      skip(skipped, rest);
      if (skipped.bytes <= MAX_RUNAWAY_LINE_BYTES) return;
      stream.off('data', onData);
      stream.destroy();
      return report(skipped);
    }
    size += rest.length;
    if (size <= MAX_LINE_BYTES) {
      buffered.push(Buffer.from(rest));
      return;
    }
    // Buffer.concat with a length copies only the first bytes.
    skipped = { head: Buffer.concat([...buffered, rest], Math.min(size, LINE_END_BYTES)), tail: lastBytes(Buffer.alloc(0), rest), bytes: size };
    buffered = [];
    size = 0;
  };
  stream.on('data', onData);
}

/** What is known of a stdout line that was over the limit. */
export interface OversizedLine {
  head: string;
  tail: string;
  bytes: number;
}

/** The last LINE_END_BYTES of what `tail` and then `piece` hold, copied. */
function lastBytes(tail: Buffer, piece: Buffer): Buffer {
  if (piece.length >= LINE_END_BYTES) return Buffer.from(piece.subarray(piece.length - LINE_END_BYTES));
  const both = Buffer.concat([tail, piece]);
  return Buffer.from(both.subarray(Math.max(0, both.length - LINE_END_BYTES)));
}

/** A response's members before its result or error: `{"jsonrpc":"2.0","id":7,"result":...` (or id, then jsonrpc). */
const ID_FIRST = /^\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*(\d+)\s*,\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"(?:result|error)"\s*:/;
/** A response that starts with its result or error... */
const RESULT_FIRST = /^\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"(?:result|error)"\s*:/;
/** ...and ends with its id (the MCP SDK's order): `...,"jsonrpc":"2.0","id":7}`. */
const ID_LAST = /"id"\s*:\s*(\d+)\s*(?:,\s*"jsonrpc"\s*:\s*"2\.0"\s*)?\}\s*$/;

/**
 * The id of the response a line starts and ends with, if it is plainly one. Only top-level members
 * can sit where these patterns look: right after the opening brace, or right before the closing
 * one with no other brace in between.
 */
export function responseIdOf(head: string, tail: string): number | undefined {
  const first = ID_FIRST.exec(head);
  if (first) return Number(first[1]);
  if (!RESULT_FIRST.test(head)) return undefined;
  const last = ID_LAST.exec(tail);
  return last ? Number(last[1]) : undefined;
}
