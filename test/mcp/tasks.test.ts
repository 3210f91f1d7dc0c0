/**
 * The task table's bounds (src/mcp/tasks.ts): what it remembers of whose task is whose stays
 * within its ttl and its counts, so a caller that creates tasks without end cannot grow the
 * gateway's memory. The wire behaviour is in test/e2e/task-ownership.test.ts.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Identity } from '../../src/auth/identity.js';
import type { JsonRpcRequest, JsonRpcResponse } from '../../src/jsonrpc/messages.js';
import { ToolPolicy } from '../../src/policy/tools.js';
import { MAX_TASKS, MAX_TASKS_PER_OWNER, MAX_TTL_MS, TaskOwners } from '../../src/mcp/tasks.js';

const identity = (id: string): Identity => ({ id, provider: 'api_key', tools: ToolPolicy.ALL, servers: undefined, scopes: [] });
const create = (ttl?: number): JsonRpcRequest => ({
  jsonrpc: '2.0',
  id: 1,
  method: 'tools/call',
  params: { name: 'work', task: ttl === undefined ? {} : { ttl } },
});
const created = (taskId: string, ttl: number | null): JsonRpcResponse => ({ jsonrpc: '2.0', id: 1, result: { task: { taskId, status: 'working', ttl } } });
const get = (taskId: string): JsonRpcRequest => ({ jsonrpc: '2.0', id: 2, method: 'tasks/get', params: { taskId } });

afterEach(() => {
  vi.useRealTimers();
});

describe('the task table', () => {
  it('forgets a task some time after its ttl (twice it and a minute), and one without a ttl after MAX_TTL_MS', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const tasks = new TaskOwners();
    const owner = identity('owner');
    tasks.result('s', owner, create(), created('short', 10_000));
    tasks.result('s', owner, create(), created('forever', null));
    expect(tasks.check('s', owner, get('short'))).toBeUndefined();
    vi.setSystemTime(1_000_000 + 2 * 10_000 + 60_000 + 1);
    expect(tasks.check('s', owner, get('short'))).toMatchObject({ reason: 'task unknown to the gateway' });
    expect(tasks.check('s', owner, get('forever'))).toBeUndefined();
    vi.setSystemTime(1_000_000 + MAX_TTL_MS + 1);
    expect(tasks.check('s', owner, get('forever'))).toMatchObject({ reason: 'task unknown to the gateway' });
    expect(tasks.size).toBe(0);
  });

  it('keeps at most MAX_TASKS_PER_OWNER per identity (its oldest go first) and MAX_TASKS in all', () => {
    const tasks = new TaskOwners();
    const busy = identity('busy');
    for (let i = 0; i <= MAX_TASKS_PER_OWNER; i++) tasks.result('s', busy, create(60_000), created(`busy-${i}`, 60_000));
    expect(tasks.size).toBe(MAX_TASKS_PER_OWNER);
    expect(tasks.check('s', busy, get('busy-0'))).toMatchObject({ reason: 'task unknown to the gateway' });
    expect(tasks.check('s', busy, get(`busy-${MAX_TASKS_PER_OWNER}`))).toBeUndefined();

    const owners = Math.ceil(MAX_TASKS / MAX_TASKS_PER_OWNER) + 1;
    for (let o = 0; o < owners; o++) {
      const someone = identity(`o${o}`);
      for (let i = 0; i < MAX_TASKS_PER_OWNER; i++) tasks.result('s', someone, create(60_000), created(`o${o}-${i}`, 60_000));
    }
    expect(tasks.size).toBe(MAX_TASKS);
  });

  it("ties a task to its server: the same id on another server is not the owner's", () => {
    const tasks = new TaskOwners();
    const owner = identity('owner');
    tasks.result('a', owner, create(), created('same-id', 60_000));
    expect(tasks.check('a', owner, get('same-id'))).toBeUndefined();
    expect(tasks.check('b', owner, get('same-id'))).toMatchObject({ reason: 'task unknown to the gateway' });
    expect(tasks.check('a', identity('other'), get('same-id'))).toMatchObject({ reason: 'task of another identity' });
  });
});
