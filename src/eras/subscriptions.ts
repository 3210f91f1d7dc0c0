/**
 * `subscriptions/listen` (2026-07-28) in front of a legacy server.
 *
 * A modern client asks for change notifications with one long-lived request: its response is an
 * SSE stream that starts with `notifications/subscriptions/acknowledged` (the notification types
 * the server will send) and then carries only those, each marked with the listen request's id in
 * `_meta["io.modelcontextprotocol/subscriptionId"]`. The client ends it by closing the stream.
 *
 * A legacy server sends the same notifications on its session: list changes when it likes,
 * `notifications/resources/updated` for the resources a `resources/subscribe` named. The gateway
 * listens on its own upstream session for the server (one per server and path, the one plain
 * requests use) and fans each notification out to the listen streams that asked for it. A
 * resource is subscribed upstream while at least one stream wants it, and unsubscribed after
 * the last one goes.
 */
import { objectOf, type JsonRpcId, type JsonRpcNotification } from '../jsonrpc/messages.js';
import type { UpstreamSession } from '../upstreams/upstream.js';
import { META } from '../protocol/modern.js';
import type { SseWriter } from '../mcp/sse-writer.js';

/** The notification types a listen request may ask for. */
export interface ListenFilter {
  toolsListChanged?: boolean;
  promptsListChanged?: boolean;
  resourcesListChanged?: boolean;
  resourceSubscriptions?: string[];
}

const LIST_CHANGED: ReadonlyArray<[keyof ListenFilter, string, string]> = [
  ['toolsListChanged', 'notifications/tools/list_changed', 'tools'],
  ['promptsListChanged', 'notifications/prompts/list_changed', 'prompts'],
  ['resourcesListChanged', 'notifications/resources/list_changed', 'resources'],
];

/** The longest list of resources one listen request may subscribe to. */
const MAX_RESOURCE_SUBSCRIPTIONS = 100;

/**
 * What of `requested` a server with these capabilities can deliver: list changes it announces
 * (`listChanged`), resource updates when it supports `resources.subscribe`. The rest is left
 * out of the acknowledgement, as the specification says.
 */
export function honored(requested: unknown, capabilities: Record<string, unknown>): ListenFilter {
  const asked = objectOf(requested) ?? {};
  const capability = (name: string, flag: string): boolean => objectOf(capabilities[name])?.[flag] === true;
  const filter: ListenFilter = {};
  for (const [key, , name] of LIST_CHANGED) {
    if (asked[key] === true && capability(name, 'listChanged')) (filter as Record<string, unknown>)[key] = true;
  }
  const uris = asked['resourceSubscriptions'];
  if (Array.isArray(uris) && capability('resources', 'subscribe')) {
    const strings = [...new Set(uris.filter((u): u is string => typeof u === 'string'))].slice(0, MAX_RESOURCE_SUBSCRIPTIONS);
    if (strings.length > 0) filter.resourceSubscriptions = strings;
  }
  return filter;
}

/** One open listen stream. */
export class Listener {
  constructor(
    readonly id: JsonRpcId,
    readonly filter: ListenFilter,
    private readonly stream: SseWriter,
  ) {}

  get open(): boolean {
    return this.stream.open;
  }

  /** The acknowledgement, the stream's first message. */
  acknowledge(): void {
    this.write({ jsonrpc: '2.0', method: 'notifications/subscriptions/acknowledged', params: { notifications: this.filter } });
  }

  /** Sends a server notification when this stream asked for its kind. */
  deliver(notification: JsonRpcNotification): void {
    if (this.wants(notification)) this.write(notification);
  }

  /** Shutdown: the empty result ends the stream gracefully. */
  end(): void {
    this.stream.write({ jsonrpc: '2.0', id: this.id, result: { resultType: 'complete' } });
    this.stream.end();
  }

  /** Ends the stream without a result: the client may listen again. */
  close(): void {
    this.stream.end();
  }

  private wants(notification: JsonRpcNotification): boolean {
    for (const [key, method] of LIST_CHANGED) if (notification.method === method) return this.filter[key] === true;
    if (notification.method === 'notifications/resources/updated') {
      const uri = notification.params?.['uri'];
      return typeof uri === 'string' && (this.filter.resourceSubscriptions?.includes(uri) ?? false);
    }
    return false;
  }

  private write(notification: JsonRpcNotification): void {
    const params = notification.params ?? {};
    this.stream.write({
      jsonrpc: '2.0',
      method: notification.method,
      params: { ...params, _meta: { ...objectOf(params['_meta']), [META.subscriptionId]: this.id } },
    });
  }
}

/** The listen streams on one upstream session, and the resources subscribed upstream for them. */
export class ListenHub {
  private readonly listeners = new Set<Listener>();
  private readonly resources = new Map<string, number>();
  private wire = 0;

  constructor(readonly upstream: UpstreamSession) {}

  get size(): number {
    return this.listeners.size;
  }

  /** Adds a stream; resolves once its resources are subscribed upstream (failures are logged by the caller). */
  async add(listener: Listener): Promise<void> {
    this.listeners.add(listener);
    // Notifications outside any request reach the gateway's session on this stream (HTTP).
    await this.upstream.openEventStream();
    for (const uri of listener.filter.resourceSubscriptions ?? []) {
      const count = this.resources.get(uri) ?? 0;
      this.resources.set(uri, count + 1);
      if (count === 0) await this.call('resources/subscribe', uri);
    }
  }

  remove(listener: Listener): void {
    if (!this.listeners.delete(listener)) return;
    for (const uri of listener.filter.resourceSubscriptions ?? []) {
      const count = (this.resources.get(uri) ?? 1) - 1;
      if (count > 0) {
        this.resources.set(uri, count);
        continue;
      }
      this.resources.delete(uri);
      void this.call('resources/unsubscribe', uri).catch(() => undefined);
    }
  }

  deliver(notification: JsonRpcNotification): void {
    for (const listener of this.listeners) listener.deliver(notification);
  }

  /** Shutdown: every stream gets its empty result and ends. */
  endAll(): void {
    for (const listener of this.listeners) listener.end();
    this.listeners.clear();
  }

  /** The upstream session is gone: every stream ends without a result. */
  closeAll(): void {
    for (const listener of this.listeners) listener.close();
    this.listeners.clear();
  }

  private async call(method: string, uri: string): Promise<void> {
    const response = await this.upstream.request(
      { jsonrpc: '2.0', id: `gateway-listen-${++this.wire}`, method, params: { uri } },
      { onMessage: () => undefined },
    );
    if ('error' in response) throw new Error(`${method} ${uri}: ${response.error.message}`);
  }
}
