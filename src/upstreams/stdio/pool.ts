/**
 * An isolated stdio server: one supervised child per identity (`isolation = "identity"`) or per
 * client session (`"session"`), instead of one child that every caller shares.
 *
 * Why: a stdio child is one MCP session. Everything a server keeps per session (its tasks, its
 * log level, the requests it makes to "the" client, the progress of calls it was told to cancel)
 * would otherwise be one pool that every caller reads from, and over stdio nothing on the wire
 * says which caller a server message is for. With a child per identity, nothing crosses.
 *
 * - A child starts on its owner's first request and ends after `child_idle_ms` with no session
 *   and no call in flight (in "session" mode, as soon as its session ends).
 * - At most `max_children` run; beyond, the least recently used idle child makes room, and when
 *   none is idle the request is refused with 503 and `Retry-After` (UpstreamError 'unavailable').
 * - One child is started with the gateway (the spare): a misconfigured command shows in /ready at
 *   once, the era is known before the first request, and the first caller does not wait for a
 *   spawn. The spare has served nobody; it becomes the first new owner's child.
 *
 * Each child is a StdioUpstream of its own (supervision, restarts, era probe, virtual sessions
 * for the owner's several sessions): this class only decides which child a request goes to.
 */
import type { StdioServerConfig } from '../../config/schema.js';
import type { JsonRpcNotification, JsonRpcRequest, JsonRpcResponse } from '../../jsonrpc/messages.js';
import type { Logger } from '../../observability/logger.js';
import { UpstreamError } from '../errors.js';
import type {
  CallOptions,
  EraVerdict,
  CloseOptions,
  OpenSessionOptions,
  RequestOptions,
  Upstream,
  UpstreamDeps,
  UpstreamSession,
  UpstreamStatus,
} from '../upstream.js';
import { StdioUpstream } from './upstream.js';

/** The Retry-After of a refusal at max_children, at most: by then an idle child may have ended. */
const MAX_RETRY_AFTER_MS = 30_000;

export class IsolatedStdioUpstream implements Upstream {
  /** The running children, by owner key ("identity") or session ("session"); Map order = least recently used first. */
  private readonly children = new Map<string, StdioUpstream>();
  private spare: StdioUpstream | undefined;
  private lastVerdict: EraVerdict | undefined;
  /** Restarts of children that have ended, so that status() keeps counting them. */
  private pastRestarts = 0;
  /** A child has reached `ready` once: with none running, the server can still start one. */
  private everReady = false;
  private stopped = false;
  private sweeper: NodeJS.Timeout | undefined;
  private sessionKeys = 0;
  /** Whose each child is (the identity; in "session" mode several children may be one identity's). */
  private readonly owners = new Map<StdioUpstream, string>();
  /** Opens and calls that have chosen a child and not settled yet: that child is not idle. */
  private readonly pending = new Map<StdioUpstream, number>();
  private readonly log: Logger;

  constructor(
    readonly config: StdioServerConfig,
    private readonly deps: UpstreamDeps,
  ) {
    this.log = deps.logger.child({ server: config.name, transport: 'stdio', isolation: config.isolation });
  }

  get verdict(): EraVerdict | undefined {
    for (const child of this.running()) if (child.verdict) this.lastVerdict = child.verdict;
    return this.lastVerdict;
  }

  /** Children running now (the spare included). */
  get size(): number {
    return this.children.size + (this.spare ? 1 : 0);
  }

  async start(): Promise<void> {
    if (this.spare || this.children.size > 0 || this.stopped) return;
    const spare = this.newChild();
    this.spare = spare;
    await spare.start();
    this.noteState(spare);
  }

  status(): UpstreamStatus {
    const running = this.running();
    const statuses = running.map((child) => child.status());
    const restarts = this.pastRestarts + statuses.reduce((sum, s) => sum + s.restarts, 0);
    if (this.stopped) return { state: 'stopped', healthy: false, restarts, since: Date.now(), children: 0 };
    const ready = statuses.find((s) => s.healthy);
    if (ready) this.everReady = true;
    const shown = ready ?? statuses[statuses.length - 1];
    if (!shown) return { state: 'idle', healthy: this.everReady, restarts, since: Date.now(), children: 0 };
    const status: UpstreamStatus = { ...shown, restarts, children: running.length };
    // A pid names the server's one process; with several there is none to name.
    if (running.length !== 1) delete status.pid;
    return status;
  }

  /** The era of the server: any running child's verdict, else the spare's (started when needed). */
  async era(options: { forwardPath?: string; refresh?: boolean } = {}): Promise<EraVerdict> {
    const child = this.running()[0] ?? this.takeSpareSlot();
    const verdict = await child.era(options);
    this.lastVerdict = verdict;
    return verdict;
  }

  async openSession(options: OpenSessionOptions): Promise<UpstreamSession> {
    const session = this.config.isolation === 'session';
    const key = session ? `session:${++this.sessionKeys}` : options.owner;
    const child = this.childFor(key, options.owner);
    let opened: UpstreamSession;
    try {
      opened = await this.using(child, child.openSession(options));
    } catch (error) {
      if (session) this.retire(key, child);
      throw error;
    }
    return session ? new ChildSession(opened, () => this.retire(key, child)) : opened;
  }

  call(request: JsonRpcRequest, options: CallOptions): Promise<JsonRpcResponse> {
    // A 2026-07-28 server has no sessions: in both modes its calls go to their owner's child.
    const child = this.childFor(options.owner, options.owner);
    return this.using(child, child.call(request, options));
  }

  /** `work` on `child`: the child counts as busy until it settles (a start may outlast child_idle_ms). */
  private async using<T>(child: StdioUpstream, work: Promise<T>): Promise<T> {
    this.pending.set(child, (this.pending.get(child) ?? 0) + 1);
    try {
      return await work;
    } finally {
      const left = (this.pending.get(child) ?? 1) - 1;
      if (left > 0) this.pending.set(child, left);
      else this.pending.delete(child);
      child.lastActive = Date.now();
    }
  }

  async close(): Promise<void> {
    this.stopped = true;
    if (this.sweeper) clearTimeout(this.sweeper);
    const all = this.running();
    this.children.clear();
    this.owners.clear();
    this.spare = undefined;
    await Promise.all(all.map((child) => child.close()));
  }

  /** The child of `key` (for `owner`), started when it has none; throws when max_children are busy. */
  private childFor(key: string, owner: string): StdioUpstream {
    if (this.stopped) throw new UpstreamError('unavailable', this.config.name, `Upstream '${this.config.name}' is not available: the gateway is shutting down`);
    const found = this.children.get(key);
    if (found) {
      // Most recently used last: eviction takes from the front.
      this.children.delete(key);
      this.children.set(key, found);
      return found;
    }
    let child = this.spare;
    this.spare = undefined;
    if (!child) {
      if (this.size >= this.config.max_children && !this.evictIdle()) throw this.full();
      child = this.newChild();
    }
    child.lastActive = Date.now();
    this.children.set(key, child);
    this.owners.set(child, owner);
    this.log.debug({ children: this.size }, 'child assigned');
    this.sweepSoon();
    return child;
  }

  /** For era(): the spare, started when there is none (it counts against max_children). */
  private takeSpareSlot(): StdioUpstream {
    if (this.stopped) throw new UpstreamError('unavailable', this.config.name, `Upstream '${this.config.name}' is not available: the gateway is shutting down`);
    if (!this.spare) {
      if (this.size >= this.config.max_children && !this.evictIdle()) throw this.full();
      this.spare = this.newChild();
    }
    return this.spare;
  }

  private newChild(): StdioUpstream {
    return new StdioUpstream(this.config, this.deps);
  }

  private running(): StdioUpstream[] {
    const all = [...this.children.values()];
    if (this.spare) all.push(this.spare);
    return all;
  }

  /**
   * Makes room: ends a child with no call in flight, taken from the identity that holds the most
   * children (the least recently used of its idle ones), so that one identity opening many
   * sessions in "session" mode ends its own children before anyone else's; in "identity" mode
   * every identity holds one, and this is the least recently used idle child. False when every
   * child is working. Its sessions end with it (their clients get 404 and initialize again).
   */
  private evictIdle(): boolean {
    const held = new Map<string, number>();
    for (const owner of this.owners.values()) held.set(owner, (held.get(owner) ?? 0) + 1);
    const withTasks = new Map<string, boolean>();
    const hasTasks = (owner: string): boolean => {
      let known = withTasks.get(owner);
      if (known === undefined) withTasks.set(owner, (known = this.deps.ownerHasTasks?.(this.config.name, owner) ?? false));
      return known;
    };
    // An owner's tasks live in its child: a child whose owner has none goes first.
    const victim = this.biggestIdle(held, (owner) => !hasTasks(owner)) ?? this.biggestIdle(held, () => true);
    if (!victim) return false;
    this.retire(victim[0], victim[1], 'its process was ended to make room for another caller (max_children)');
    return true;
  }

  /**
   * Among idle children whose owner passes `eligible`, the least recently used one of the owner
   * holding the most children (Map order is least recently used first).
   */
  private biggestIdle(held: Map<string, number>, eligible: (owner: string) => boolean): [string, StdioUpstream] | undefined {
    let victim: [string, StdioUpstream] | undefined;
    let most = 0;
    for (const [key, child] of this.children) {
      if (child.working || this.pending.has(child)) continue;
      const owner = this.owners.get(child) ?? '';
      const count = held.get(owner) ?? 0;
      if (count > most && eligible(owner)) {
        most = count;
        victim = [key, child];
      }
    }
    return victim;
  }

  private full(): UpstreamError {
    const name = this.config.name;
    return new UpstreamError(
      'unavailable',
      name,
      `Upstream '${name}' is not available: all ${this.config.max_children} of its processes (max_children) are busy; try again later`,
      { retryAfterMs: Math.min(this.config.child_idle_ms, MAX_RETRY_AFTER_MS) },
    );
  }

  private retire(key: string, child: StdioUpstream, reason?: string): void {
    if (this.children.get(key) !== child) return;
    this.children.delete(key);
    this.owners.delete(child);
    if (reason) child.endSessions(reason);
    this.noteState(child);
    this.pastRestarts += child.status().restarts;
    this.log.debug({ children: this.size }, 'child ended');
    void child.close();
  }

  private noteState(child: StdioUpstream): void {
    if (child.status().healthy) this.everReady = true;
    if (child.verdict) this.lastVerdict = child.verdict;
  }

  /** Children idle for child_idle_ms end; the sweep runs only while some are assigned. */
  private sweepSoon(): void {
    if (this.sweeper || this.stopped) return;
    const every = Math.min(Math.max(this.config.child_idle_ms / 4, 50), 30_000);
    this.sweeper = setTimeout(() => {
      this.sweeper = undefined;
      const cutoff = Date.now() - this.config.child_idle_ms;
      for (const [key, child] of [...this.children]) {
        if (child.busy || this.pending.has(child) || child.lastActive >= cutoff) continue;
        // A task of its owner may still be running in it: it stays (within max_children, which
        // ends such children last) until the task is forgotten (src/mcp/tasks.ts).
        if (this.deps.ownerHasTasks?.(this.config.name, this.owners.get(child) ?? '')) continue;
        this.retire(key, child);
      }
      if (this.children.size > 0) this.sweepSoon();
    }, every);
    this.sweeper.unref();
  }
}

/** "session" isolation: a session whose end ends its child. */
class ChildSession implements UpstreamSession {
  constructor(
    private readonly inner: UpstreamSession,
    private readonly ended: () => void,
  ) {}

  get initializeResult(): JsonRpcResponse {
    return this.inner.initializeResult;
  }

  request(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse> {
    return this.inner.request(request, options);
  }

  send(message: JsonRpcNotification | JsonRpcResponse): Promise<void> {
    return this.inner.send(message);
  }

  openEventStream(): Promise<void> {
    return this.inner.openEventStream();
  }

  closeEventStream(): void {
    this.inner.closeEventStream();
  }

  /** Never taken up by another replica: its child, on this one, holds what the session did (docs/operations.md). */
  async close(options?: CloseOptions): Promise<void> {
    await this.inner.close(options);
    this.ended();
  }
}
