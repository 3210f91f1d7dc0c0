/**
 * Reads a text/event-stream body incrementally (WHATWG HTML, "Server-sent events"), for the
 * streamable HTTP transport's POST and GET streams and the legacy transport's one stream.
 */
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import type { JsonRpcMessage } from '../../jsonrpc/messages.js';
import { parseMessages } from './body.js';

export type SseEvent = EventSourceMessage;

/**
 * One event may not grow beyond this (a tool result with an image is a few MB): a stream that
 * never ends its event must not be able to fill the gateway's memory.
 */
const MAX_EVENT_CHARS = 32 * 1024 * 1024;
/**
 * Nor beyond this many lines. eventsource-parser joins an event's `data:` lines one string at a
 * time, and counts only their characters against MAX_EVENT_CHARS: each line costs it a string of
 * its own (~30 bytes) besides, so an event of empty `data:` lines that never ends would take about
 * 1 GB before its 32 Mi characters. A JSON-RPC message is one line; pretty-printed, some thousands.
 */
export const MAX_EVENT_LINES = 1024 * 1024;

/**
 * Hands each event of `body` to `onEvent`, in order, as soon as it is complete. Resolves 'ended'
 * when the body ends, 'stopped' as soon as `onEvent` returns false (the body is then destroyed).
 * Rejects when the body fails, or with whatever `onEvent` throws. `onRetry` gets each valid
 * `retry:` field (the server's reconnection time, ms) when it is read.
 */
export async function readEvents(
  body: AsyncIterable<Uint8Array | string>,
  onEvent: (event: SseEvent) => boolean | void,
  onRetry?: (ms: number) => void,
): Promise<'ended' | 'stopped'> {
  const ready: SseEvent[] = [];
  let failure: Error | undefined;
  const parser = createParser({
    onEvent: (event) => ready.push(event),
    onRetry,
    onError: (error) => {
      if (error.type === 'max-buffer-size-exceeded') failure = error;
    },
    maxBufferSize: MAX_EVENT_CHARS,
  });
  const decoder = new TextDecoder();
  const lines = new EventLines();
  // Leaving the for-await early (return or throw) destroys the body.
  for await (const chunk of body) {
    const text = typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true });
    if (lines.count(text) > MAX_EVENT_LINES) {
      throw Object.assign(new Error(`Event exceeded ${MAX_EVENT_LINES} lines`), { type: 'max-buffer-size-exceeded' });
    }
    parser.feed(text);
    if (failure) throw failure;
    while (ready.length > 0) {
      if (onEvent(ready.shift()!) === false) return 'stopped';
    }
  }
  return 'ended';
}

/** Counts the lines of the event being read: the lines since the last blank one, across chunks. */
class EventLines {
  private lines = 0;
  /** The line being read has characters already. */
  private open = false;
  /** The last text ended with CR: an LF first in the next one ends nothing (CRLF split in two). */
  private afterCr = false;
  /** A line's end in a text/event-stream: CRLF, CR or LF. */
  private readonly lineEnd = /\r\n?|\n/g;

  /** Reads `text` (the stream's next characters); returns the most lines an event had in it (ended there or not). */
  count(text: string): number {
    let most = this.lines;
    if (text === '') return most;
    let start = this.afterCr && text.charCodeAt(0) === 0x0a ? 1 : 0;
    this.lineEnd.lastIndex = start;
    for (let end = this.lineEnd.exec(text); end !== null; end = this.lineEnd.exec(text)) {
      // A line with nothing in it ends the event.
      if (end.index > start || this.open) most = Math.max(most, ++this.lines);
      else this.lines = 0;
      this.open = false;
      start = this.lineEnd.lastIndex;
    }
    if (start < text.length) this.open = true;
    this.afterCr = text.charCodeAt(text.length - 1) === 0x0d;
    return most;
  }
}

/**
 * The JSON-RPC messages an event carries. MCP sends them as `message` events (or unnamed, which
 * means the same); events with empty data are the streamable transport's priming events
 * (2025-11-25, "Resumability"), which only carry an id. An event nested too deep yields none and
 * goes to `onTooDeep` (parseMessages).
 */
export function eventMessages(event: SseEvent, server: string, onTooDeep?: (text: string) => void): JsonRpcMessage[] {
  if (event.event !== undefined && event.event !== 'message') return [];
  if (event.data.trim() === '') return [];
  return parseMessages(event.data, server, onTooDeep);
}
