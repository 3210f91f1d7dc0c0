/**
 * Messages between the replicas that serve sealed sessions, over the Redis the deployment already
 * has (`[server] redis_url`, else `[rate_limit] redis_url`): what must reach the replica that
 * holds something only it can act on.
 *
 * - `answer`: a client's answer to a server-to-client request (sampling, elicitation, roots) that
 *   reached another replica than the one that sent the request. Every replica hears it; the one
 *   whose session sent that request, to that client, forwards it (the rest ignore it).
 * - `ended`: a client ended its session (DELETE): every replica drops its copy and refuses the id
 *   until it expires.
 *
 * One channel, fire and forget: Redis pub/sub delivers to the replicas connected at that moment,
 * which is who holds anything. The sender's own messages come back to it and are skipped. Redis
 * unreachable: messages are not delivered (a warning, at most one per 10 s), requests never wait
 * for it; an answer then reaches its upstream only on the replica that sent the request, which
 * ends the call at its deadline.
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { JsonRpcMessage, JsonRpcRequest, JsonRpcResponse } from '../jsonrpc/messages.js';
import { RateLimitedWarning, type Logger } from '../observability/logger.js';
import { ioredis } from '../optional.js';
import { errorMessage } from '../error-message.js';
import type { SessionSeal } from './seal.js';

const CHANNEL = 'mcp-guard:replicas';
/** Longest a message may be: an answer carries a sampling or elicitation result. */
const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

export type ReplicaMessage =
  | { kind: 'answer'; session: string; message: JsonRpcResponse }
  | { kind: 'ended'; session: string; expires: number }
  /** A replica took the session up: the one that opened it does not end it as half-open. */
  | { kind: 'taken'; session: string }
  /** A 2026-07-28 client's retry (its requestState) for a call another replica holds: `reply` is the asker. */
  | { kind: 'round'; ask: string; reply: string; requestState: string; request: JsonRpcRequest; binding: Record<string, string> }
  /** The holder has the call: it is continuing it (the asker waits for the result, not for the ack's deadline). */
  | { kind: 'round-taken'; ask: string; to: string }
  /** The round's result: what the call sent meanwhile (progress, log lines) and its answer. */
  | { kind: 'round-result'; ask: string; to: string; messages: JsonRpcMessage[]; response: JsonRpcResponse };

export class ReplicaBus {
  /** This process, among the replicas: its own messages are not for it. */
  readonly replica = randomUUID();
  private readonly publisher: Redis;
  private readonly subscriber: Redis;
  private readonly warning: RateLimitedWarning;
  private handler: ((message: ReplicaMessage) => void) | undefined;
  private closed = false;

  constructor(
    url: string,
    private readonly log: Logger,
    /**
     * The session keys' sealer: every message is encrypted and authenticated with them (sampling
     * answers are what users typed; a message nobody with the keys sealed is dropped), so that
     * Redis, often shared with other services, can neither read nor forge what replicas tell each other.
     */
    private readonly seal: () => SessionSeal | undefined,
  ) {
    const { Redis } = ioredis();
    const options = {
      lazyConnect: true,
      // A message while disconnected is dropped at once, never queued behind a request.
      enableOfflineQueue: false,
      connectTimeout: 2_000,
      commandTimeout: 1_000,
      maxRetriesPerRequest: 1,
      retryStrategy: (attempt: number) => Math.min(attempt * 100, 1_000),
    };
    this.publisher = new Redis(url, { ...options, connectionName: 'mcp-guard-replicas-pub' });
    // The subscriber queues its SUBSCRIBE until connected and subscribes again after a reconnect.
    this.subscriber = new Redis(url, { ...options, enableOfflineQueue: true, commandTimeout: undefined, connectionName: 'mcp-guard-replicas-sub' });
    this.warning = new RateLimitedWarning(log);
    for (const client of [this.publisher, this.subscriber]) {
      client.on('error', (error: Error) => this.warning.warn('connection', { err: error.message }, 'replica messages: Redis connection failed'));
    }
    this.subscriber.on('message', (channel: string, text: string) => {
      if (channel === CHANNEL) this.receive(text);
    });
  }

  /** Where the other replicas' messages go (one handler: the gateway's). */
  onMessage(handler: (message: ReplicaMessage) => void): void {
    this.handler = handler;
  }

  /**
   * Connects and subscribes, waiting at most a few seconds: an unreachable Redis must not keep
   * the gateway from starting (it keeps trying in the background).
   */
  async start(): Promise<void> {
    const subscribed = Promise.all([this.publisher.connect(), this.subscriber.subscribe(CHANNEL)]);
    subscribed.catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([subscribed, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('not connected within 3000 ms')), 3_000)))]);
      this.log.info('replica messages: connected');
    } catch (error) {
      this.log.warn(
        { err: errorMessage(error) },
        'replica messages: Redis not reachable at start-up; answers and ended sessions reach other replicas once it is',
      );
    } finally {
      clearTimeout(timer);
    }
  }

  publish(message: ReplicaMessage): void {
    if (this.closed) return;
    const sealer = this.seal();
    if (!sealer) return;
    const text = sealer.sealMessage(JSON.stringify({ from: this.replica, ...message }));
    if (text.length > MAX_MESSAGE_BYTES) {
      this.warning.warn('too-large', { kind: message.kind, bytes: text.length }, 'replica messages: a message too large to send was dropped');
      return;
    }
    this.publisher.publish(CHANNEL, text).catch((error: unknown) => {
      this.warning.warn('publish', { err: errorMessage(error), kind: message.kind }, 'replica messages: could not publish');
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.publisher.disconnect();
    this.subscriber.disconnect();
  }

  private receive(sealed: string): void {
    if (sealed.length > MAX_MESSAGE_BYTES) return;
    const text = this.seal()?.openMessage(sealed);
    if (text === undefined) {
      this.warning.warn('unsealed', {}, 'replica messages: dropped a message not sealed with the session keys');
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return;
    }
    if (parsed === null || typeof parsed !== 'object') return;
    const message = parsed as Record<string, unknown>;
    if (message['from'] === this.replica) return;
    const kind = message['kind'];
    if (kind === 'round' || kind === 'round-taken' || kind === 'round-result') {
      // Between replicas of one deployment: checked for shape, trusted for content, like the rest.
      if (typeof message['ask'] === 'string') this.handler?.(message as unknown as ReplicaMessage);
      return;
    }
    if (typeof message['session'] !== 'string') return;
    if (message['kind'] === 'answer' && isResponse(message['message'])) {
      this.handler?.({ kind: 'answer', session: message['session'], message: message['message'] });
    } else if (message['kind'] === 'taken') {
      this.handler?.({ kind: 'taken', session: message['session'] });
    } else if (message['kind'] === 'ended' && typeof message['expires'] === 'number') {
      this.handler?.({ kind: 'ended', session: message['session'], expires: message['expires'] });
    }
  }
}

function isResponse(value: unknown): value is JsonRpcResponse {
  if (value === null || typeof value !== 'object') return false;
  const m = value as Record<string, unknown>;
  return m['jsonrpc'] === '2.0' && (typeof m['id'] === 'string' || typeof m['id'] === 'number') && ('result' in m || 'error' in m);
}
