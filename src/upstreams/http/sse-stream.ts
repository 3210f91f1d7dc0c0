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
  // Leaving the for-await early (return or throw) destroys the body.
  for await (const chunk of body) {
    parser.feed(typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true }));
    if (failure) throw failure;
    while (ready.length > 0) {
      if (onEvent(ready.shift()!) === false) return 'stopped';
    }
  }
  return 'ended';
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
