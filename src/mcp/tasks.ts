/**
 * Task ownership (MCP tasks, protocol 2025-11-25): who may see and steer a task a server created.
 *
 * A task-augmented request (`params.task`, e.g. a `tools/call`) is answered with a
 * CreateTaskResult (`result.task.taskId`); the task then lives on the server, reachable by its id
 * through `tasks/get`, `tasks/result`, `tasks/cancel` and `tasks/list`, and announced by
 * `notifications/tasks/status`. A server keeps tasks per connection at best, and every identity
 * may share that connection (one stdio child, the gateway's own upstream session): the server
 * cannot tell callers apart. So the gateway records the identity (ownerKey) of every task id it
 * forwards, keyed by server and id, and:
 *
 * - answers `tasks/get|result|cancel` (and a request whose `_meta` names a related task) of a task
 *   that is not the caller's exactly as the reference SDK server answers an unknown task id
 *   (-32602, the same message, HTTP 200), never forwarding it: a task the gateway never saw created
 *   for this identity is unknown to it, whoever else may own it (fail closed);
 * - cuts each `tasks/list` page to the caller's tasks (a page may come out short) and replaces the
 *   page's `nextCursor` by an opaque token of its own: the reference server's cursor is the last
 *   task id of the page, which may be another identity's;
 * - lets a `notifications/tasks/status` (or any notification that names a related task) reach
 *   only the task's owner. One that arrives before the gateway has seen its task created (the
 *   reference server announces "working" before it answers) goes to nobody: clients poll
 *   `tasks/get` anyway.
 *
 * Bounded: an entry lives for about the task's ttl (the server's `task.ttl`, else the request's;
 * null or absent = MAX_TTL_MS; see lifetime()), renewed whenever the task is seen again, capped at
 * MAX_TTL_MS; at most
 * MAX_TASKS_PER_OWNER per identity and MAX_TASKS in all, the oldest evicted first. Cheap on the
 * hot path: a request that is not about tasks costs a switch on its method and one `_meta` read;
 * a response, one property read of its result.
 */
import { randomUUID } from 'node:crypto';
import { ownerKey, type Identity } from '../auth/identity.js';
import { ErrorCode, errorResponse, type JsonRpcMessage, type JsonRpcRequest, type JsonRpcResponse } from '../jsonrpc/messages.js';
import { insert, touch, type Touched } from '../lru.js';
import { answered, type Outcome } from './post-response.js';

/** The `_meta` key that ties a message to a task (specification, tasks). */
export const RELATED_TASK_META = 'io.modelcontextprotocol/related-task';

/** Longest an entry lives without the task being seen again: 24 h. */
export const MAX_TTL_MS = 86_400_000;
/** Most tasks remembered per identity; its oldest is forgotten first. */
export const MAX_TASKS_PER_OWNER = 1_000;
/** Most tasks remembered in all. */
export const MAX_TASKS = 20_000;
/** Most tasks/list cursors remembered (least recently used forgotten first). */
const MAX_CURSORS = 1_000;
/** Expired entries are swept at most this often (on a new task). */
const SWEEP_EVERY_MS = 60_000;
/** The reference SDK prefixes each McpError's message with its code (`MCP error -32602: `). */
const SDK_PREFIX = `MCP error ${ErrorCode.InvalidParams}: `;

interface TaskEntry {
  owner: string;
  /** Date.now() after which the entry is forgotten. */
  expires: number;
}

interface CursorEntry extends Touched {
  owner: string;
  server: string;
  /** The server's own cursor. */
  cursor: string;
}

/** What the gateway does with a request before forwarding it. */
export type TaskCheck =
  | undefined
  /** Answered here, as an unknown task; `reason` is for the audit log only. */
  | { refused: Outcome; reason: string }
  /** Forwarded in this form (a tasks/list with the server's cursor in place of the gateway's). */
  | { forward: JsonRpcRequest };

export class TaskOwners {
  private readonly tasks = new Map<string, TaskEntry>();
  private readonly perOwner = new Map<string, number>();
  private readonly cursors = new Map<string, CursorEntry>();
  private nextSweep = 0;

  get size(): number {
    return this.tasks.size;
  }

  /**
   * True when `owner` has a task on `server` that may still be running (its entry has not
   * expired). A scan: for the rare moments that need it (an isolated stdio server choosing which
   * child to end at max_children), never on a request's path.
   */
  holds(server: string, owner: string): boolean {
    if (!this.perOwner.has(owner)) return false;
    const prefix = taskKey(server, '');
    const now = Date.now();
    for (const [key, entry] of this.tasks) {
      if (entry.owner === owner && entry.expires > now && key.startsWith(prefix)) return true;
    }
    return false;
  }

  /**
   * Stage 5 for a request of `identity` to `server`: undefined when it goes as it is (any request
   * not about a task, or about one of the caller's own). The owner key is made only when needed.
   */
  check(server: string, identity: Identity, request: JsonRpcRequest): TaskCheck {
    const params = request.params;
    switch (request.method) {
      case 'tasks/get':
      case 'tasks/result':
      case 'tasks/cancel': {
        const taskId = params?.['taskId'];
        // Not a string: the server's own validation answers it (nothing to look up).
        if (typeof taskId !== 'string') break;
        const reason = this.refusal(server, ownerKey(identity), taskId);
        if (reason) return { refused: unknownTask(request, taskId), reason };
        break;
      }
      case 'tasks/list': {
        const cursor = params?.['cursor'];
        if (cursor === undefined) break;
        const entry = typeof cursor === 'string' ? this.cursors.get(cursor) : undefined;
        if (!entry || entry.owner !== ownerKey(identity) || entry.server !== server) {
          const shown = typeof cursor === 'string' ? cursor : JSON.stringify(cursor);
          const response = errorResponse(request.id, ErrorCode.InvalidParams, `${SDK_PREFIX}Failed to list tasks: Invalid cursor: ${shown}`);
          return { refused: answered(response), reason: 'tasks/list cursor not issued to this identity' };
        }
        touch(this.cursors, cursor as string, entry, Date.now());
        return { forward: { ...request, params: { ...params, cursor: entry.cursor } } };
      }
    }
    // Any other request may name a related task in its _meta: the server would tie its answer
    // to that task (the reference server queues it for the task's tasks/result stream).
    const meta = params?.['_meta'];
    if (typeof meta === 'object' && meta !== null) {
      const related = (meta as Record<string, unknown>)[RELATED_TASK_META];
      const taskId = typeof related === 'object' && related !== null ? (related as Record<string, unknown>)['taskId'] : undefined;
      if (typeof taskId === 'string') {
        const reason = this.refusal(server, ownerKey(identity), taskId);
        if (reason) {
          const response = errorResponse(request.id, ErrorCode.InvalidParams, `${SDK_PREFIX}Task not found: ${taskId}`);
          return { refused: answered(response), reason };
        }
      }
    }
    return undefined;
  }

  /**
   * Stage 6, the way back: a CreateTaskResult makes its task the caller's; a tasks/list page is
   * cut to the caller's tasks. Returns the response to give the client.
   */
  result(server: string, identity: Identity, request: JsonRpcRequest, response: JsonRpcResponse): JsonRpcResponse {
    if (!('result' in response)) return response;
    const result = response.result;
    const task = result['task'];
    if (typeof task === 'object' && task !== null) {
      const taskId = (task as Record<string, unknown>)['taskId'];
      if (typeof taskId === 'string') {
        const requested = request.params?.['task'];
        const requestedTtl = typeof requested === 'object' && requested !== null ? (requested as Record<string, unknown>)['ttl'] : undefined;
        const ttl = (task as Record<string, unknown>)['ttl'];
        this.record(server, ownerKey(identity), taskId, ttl !== undefined ? ttl : requestedTtl);
      }
      return response;
    }
    switch (request.method) {
      case 'tasks/list':
        return { ...response, result: this.page(server, ownerKey(identity), result) };
      case 'tasks/get':
      case 'tasks/cancel':
        // The task is alive on the server: it stays the caller's for another ttl.
        if (typeof result['taskId'] === 'string') this.renew(server, ownerKey(identity), result['taskId'], result['ttl']);
        return response;
      default:
        return response;
    }
  }

  /**
   * A server message on its way to a client of `owner` on `server`: false when it names a task (a
   * task status, or a related task in its `_meta`) that is not that identity's. Without an owner
   * (a session-less or 2026-07-28 request's response) no message about a task is deliverable: such
   * a client polls tasks/get.
   */
  deliverable(server: string | undefined, owner: string | undefined, message: JsonRpcMessage): boolean {
    if (!('method' in message)) return true;
    const params = message.params;
    if (message.method === 'notifications/tasks/status') {
      const taskId = params?.['taskId'];
      if (typeof taskId !== 'string' || owner === undefined || server === undefined || this.refusal(server, owner, taskId)) return false;
      this.renew(server, owner, taskId, params?.['ttl']);
      return true;
    }
    const meta = params?.['_meta'];
    if (typeof meta !== 'object' || meta === null) return true;
    const related = (meta as Record<string, unknown>)[RELATED_TASK_META];
    if (related === undefined) return true;
    if (owner === undefined || server === undefined) return false;
    const taskId = typeof related === 'object' && related !== null ? (related as Record<string, unknown>)['taskId'] : undefined;
    return typeof taskId === 'string' && this.refusal(server, owner, taskId) === undefined;
  }

  /** Why `owner` may not reach the task, for the audit log; undefined when it may. */
  private refusal(server: string, owner: string, taskId: string): string | undefined {
    const key = taskKey(server, taskId);
    const entry = this.tasks.get(key);
    if (entry !== undefined && entry.expires <= Date.now()) {
      this.forget(key, entry);
      return 'task unknown to the gateway';
    }
    if (entry === undefined) return 'task unknown to the gateway';
    return entry.owner === owner ? undefined : 'task of another identity';
  }

  private record(server: string, owner: string, taskId: string, ttl: unknown): void {
    const now = Date.now();
    if (now >= this.nextSweep) this.sweep(now);
    const key = taskKey(server, taskId);
    const previous = this.tasks.get(key);
    // The server has just created this id for this caller: the newest creation is the owner.
    if (previous) this.forget(key, previous);
    const count = (this.perOwner.get(owner) ?? 0) + 1;
    if (count > MAX_TASKS_PER_OWNER) this.forgetOldestOf(owner);
    else this.perOwner.set(owner, count);
    if (this.tasks.size >= MAX_TASKS) {
      const [oldestKey, oldest] = this.tasks.entries().next().value as [string, TaskEntry];
      this.forget(oldestKey, oldest);
    }
    this.tasks.set(key, { owner, expires: now + lifetime(ttl) });
  }

  private renew(server: string, owner: string, taskId: string, ttl: unknown): void {
    const entry = this.tasks.get(taskKey(server, taskId));
    if (entry?.owner === owner) entry.expires = Math.max(entry.expires, Date.now() + lifetime(ttl));
  }

  private page(server: string, owner: string, result: Record<string, unknown>): Record<string, unknown> {
    const tasks = Array.isArray(result['tasks']) ? (result['tasks'] as unknown[]) : [];
    const mine = tasks.filter((task) => {
      const taskId = typeof task === 'object' && task !== null ? (task as Record<string, unknown>)['taskId'] : undefined;
      return typeof taskId === 'string' && this.refusal(server, owner, taskId) === undefined;
    });
    const page: Record<string, unknown> = { ...result, tasks: mine };
    const next = result['nextCursor'];
    if (typeof next === 'string') {
      const token = randomUUID();
      insert(this.cursors, token, { owner, server, cursor: next, touched: Date.now() }, MAX_CURSORS);
      page['nextCursor'] = token;
    } else {
      delete page['nextCursor'];
    }
    return page;
  }

  private forget(key: string, entry: TaskEntry): void {
    this.tasks.delete(key);
    const count = (this.perOwner.get(entry.owner) ?? 1) - 1;
    if (count <= 0) this.perOwner.delete(entry.owner);
    else this.perOwner.set(entry.owner, count);
  }

  /** The owner's oldest task makes room for its newest (its count stays at the maximum). */
  private forgetOldestOf(owner: string): void {
    for (const [key, entry] of this.tasks) {
      if (entry.owner === owner) {
        this.tasks.delete(key);
        return;
      }
    }
  }

  private sweep(now: number): void {
    this.nextSweep = now + SWEEP_EVERY_MS;
    for (const [key, entry] of this.tasks) if (entry.expires <= now) this.forget(key, entry);
  }
}

/** The reference SDK server's answer to a tasks/* request naming a task id it does not know. */
function unknownTask(request: JsonRpcRequest, taskId: string): Outcome {
  const message = request.method === 'tasks/get' ? 'Failed to retrieve task: Task not found' : `Task not found: ${taskId}`;
  return answered(errorResponse(request.id, ErrorCode.InvalidParams, SDK_PREFIX + message));
}

/**
 * How long an entry outlives the last sight of its task. The specification counts a task's ttl
 * from its creation, the reference SDK server counts it again from completion: twice the ttl and a
 * minute covers a task that finishes within its ttl. Forgetting a task late costs only memory;
 * forgetting it early would refuse its owner.
 */
function lifetime(ttl: unknown): number {
  return typeof ttl === 'number' && Number.isFinite(ttl) && ttl >= 0 ? Math.min(ttl * 2 + 60_000, MAX_TTL_MS) : MAX_TTL_MS;
}

function taskKey(server: string, taskId: string): string {
  return `${server}\u0000${taskId}`;
}
