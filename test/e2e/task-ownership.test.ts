/**
 * Issue 16, finding 1: tasks belong to the identity that created them. An admin starts a
 * task-augmented tools/call on real server-everything (over stdio with `isolation = "shared"`, one
 * child for every identity, and over streamable HTTP); a reader may not see it in tasks/list, read
 * it, cancel it or hear its status, and gets exactly the server's own answer for an unknown task,
 * with and without sessions. The admin keeps full use of it.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CallToolResultSchema, CreateTaskResultSchema, McpError, TaskStatusNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateApiKey, hashApiKey } from '../../src/auth/key-format.js';
import { EverythingServer } from '../helpers/everything.js';
import { EVERYTHING, NODE, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';

interface Key {
  key: string;
  block: string;
}

async function apiKey(id: string, tools?: string): Promise<Key> {
  const { key, prefix } = generateApiKey();
  const allowed = tools === undefined ? '' : `allowed_tools = [${tools.split(',').map(q).join(', ')}]\n`;
  return { key, block: `[[auth.api_keys]]\nid = ${q(id)}\nkey_prefix = ${q(prefix)}\nkey_hash = ${q(await hashApiKey(key))}\n${allowed}` };
}

interface Rpc {
  status: number;
  headers: Headers;
  /** The JSON-RPC response (from a JSON body, or the SSE event that carries it). */
  json: any;
  /** Every message of an SSE body. */
  messages: any[];
}

/** One JSON-RPC POST, as a plain HTTP client sends it; an SSE answer is read whole. */
async function rpc(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Rpc> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let messages: any[] = [];
  let json: any;
  if ((res.headers.get('content-type') ?? '').includes('text/event-stream')) {
    messages = text
      .split('\n')
      .filter((line) => line.startsWith('data:') && line.slice(5).trim() !== '')
      .map((line) => JSON.parse(line.slice(5)));
    json = messages.find((m) => 'result' in m || 'error' in m);
  } else if (text !== '') {
    json = JSON.parse(text);
  }
  return { status: res.status, headers: res.headers, json, messages };
}

const bearer = (key: Key) => ({ authorization: `Bearer ${key.key}` });
const TTL = 60_000;
const startTask = (id: number) => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name: 'simulate-research-query', arguments: { topic: 'owned tasks' }, task: { ttl: TTL } },
});
const taskRequest = (id: number, method: string, taskId: string) => ({ jsonrpc: '2.0', id, method, params: { taskId } });

let admin: Key;
let reader: Key;
let http: EverythingServer;
let gw: RunningGateway;

beforeAll(async () => {
  [admin, reader, http] = await Promise.all([
    apiKey('admin'),
    apiKey('reader', 'echo,trigger-long-running-operation'),
    EverythingServer.start('streamableHttp'),
  ]);
  gw = await startGateway(`
[[upstream.servers]]
name = "everything"
path_prefix = "/everything"
command = ${q(NODE)}
args = [${q(EVERYTHING)}, "stdio"]
isolation = "shared"
timeout_ms = 15000

[[upstream.servers]]
name = "web"
path_prefix = "/web"
url = ${q(http.url)}
timeout_ms = 15000

${admin.block}
${reader.block}
`);
}, 60_000);

afterAll(async () => {
  await gw?.stop();
  await http?.stop();
});

/**
 * What server-everything itself answers, on a session of its own (where the task does not exist),
 * to tasks/get, tasks/result and tasks/cancel of `taskId`: the reference for "unknown task".
 */
async function serverAnswersForUnknown(taskId: string): Promise<Record<string, Rpc>> {
  const init = await rpc(http.url, {
    jsonrpc: '2.0',
    id: 0,
    method: 'initialize',
    params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'direct', version: '1' } },
  });
  const session = { 'mcp-session-id': init.headers.get('mcp-session-id')!, 'mcp-protocol-version': '2025-11-25' };
  await rpc(http.url, { jsonrpc: '2.0', method: 'notifications/initialized' }, session);
  const answers: Record<string, Rpc> = {};
  for (const [i, method] of ['tasks/get', 'tasks/result', 'tasks/cancel'].entries())
    answers[method] = await rpc(http.url, taskRequest(10 + i, method, taskId), session);
  await fetch(http.url, { method: 'DELETE', headers: session });
  return answers;
}

const UPSTREAMS = [
  { label: 'stdio, isolation = "shared"', server: 'everything' },
  { label: 'streamable HTTP', server: 'web' },
];

// The tests are independent (each starts tasks of its own) and mostly wait for the server's
// simulated research (a few seconds a task): they run concurrently, except the last, whose point
// is a reader's call alone in flight on the shared child.
describe.concurrent('finding 1: tasks cross identities', () => {
  for (const { label, server } of UPSTREAMS) {
    it(`${label}, without sessions: the reader cannot see, read or cancel the admin's task and gets the server's own unknown-task answer; the admin keeps it`, async () => {
      const url = `${gw.url}/mcp/${server}`;
      const created = await rpc(url, startTask(1), bearer(admin));
      expect(created.status).toBe(200);
      const taskId: string = created.json.result.task.taskId;
      expect(taskId).toEqual(expect.any(String));

      const listed = await rpc(url, { jsonrpc: '2.0', id: 2, method: 'tasks/list', params: {} }, bearer(reader));
      expect(listed.status).toBe(200);
      expect(JSON.stringify(listed.json)).not.toContain(taskId);

      // The reference: the same server asked, on a session where the task does not exist.
      const unknown = await serverAnswersForUnknown(taskId);
      expect(unknown['tasks/get']!.json.error).toEqual({ code: -32602, message: 'MCP error -32602: Failed to retrieve task: Task not found' });
      for (const [i, method] of ['tasks/get', 'tasks/result', 'tasks/cancel'].entries()) {
        const answer = await rpc(url, taskRequest(10 + i, method, taskId), bearer(reader));
        expect(answer.status, method).toBe(unknown[method]!.status);
        expect(answer.json, method).toEqual(unknown[method]!.json);
      }

      // The reader's cancel did not reach the task: the admin sees it, and gets its result.
      const status = await rpc(url, taskRequest(20, 'tasks/get', taskId), bearer(admin));
      expect(status.json.result).toMatchObject({ taskId, status: expect.stringMatching(/^(working|completed)$/) });
      const own = await rpc(url, { jsonrpc: '2.0', id: 21, method: 'tasks/list', params: {} }, bearer(admin));
      expect(own.json.result.tasks.map((t: { taskId: string }) => t.taskId)).toContain(taskId);
      const result = await rpc(url, taskRequest(22, 'tasks/result', taskId), bearer(admin));
      expect(result.json.result.content[0].text).toContain('Research Report: owned tasks');
    }, 40_000);

    it(`${label}, with sessions (SDK clients): the reader's tasks/list, tasks/get, tasks/result and tasks/cancel treat the admin's task as unknown`, async () => {
      const url = new URL(`${gw.url}/mcp/${server}`);
      const connect = async (key: Key): Promise<Client> => {
        const client = new Client({ name: 'tasks-e2e', version: '1.0.0' }, { capabilities: {} });
        await client.connect(new StreamableHTTPClientTransport(url, { requestInit: { headers: bearer(key) } }));
        return client;
      };
      const [adminClient, readerClient] = await Promise.all([connect(admin), connect(reader)]);
      try {
        const created = await adminClient.request(
          { method: 'tools/call', params: { name: 'simulate-research-query', arguments: { topic: 'owned tasks' }, task: { ttl: TTL } } },
          CreateTaskResultSchema,
        );
        const taskId = created.task.taskId;
        const tasks = readerClient.experimental.tasks;
        expect((await tasks.listTasks()).tasks.map((t) => t.taskId)).not.toContain(taskId);
        // The same error as for an id that never existed, through the same client.
        const refusal = async (work: Promise<unknown>) =>
          work.then(
            () => 'answered',
            (e: unknown) => (e instanceof McpError ? { code: e.code, message: e.message } : e),
          );
        expect(await refusal(tasks.getTask(taskId))).toEqual(await refusal(tasks.getTask('0'.repeat(32))));
        expect(await refusal(tasks.getTaskResult(taskId, CallToolResultSchema))).toEqual({
          code: -32602,
          message: `MCP error -32602: MCP error -32602: Task not found: ${taskId}`,
        });
        expect(await refusal(tasks.cancelTask(taskId))).toEqual({ code: -32602, message: `MCP error -32602: MCP error -32602: Task not found: ${taskId}` });

        expect((await adminClient.experimental.tasks.listTasks()).tasks.map((t) => t.taskId)).toContain(taskId);
        const result = await adminClient.experimental.tasks.getTaskResult(taskId, CallToolResultSchema);
        expect(JSON.stringify(result.content)).toContain('Research Report: owned tasks');
      } finally {
        await Promise.all([adminClient.close(), readerClient.close()]);
      }
    }, 40_000);
  }

  it("a request that names the admin's task as its related task is answered as for an unknown task, not queued into the admin's task", async () => {
    const url = `${gw.url}/mcp/everything`;
    const created = await rpc(url, startTask(1), bearer(admin));
    const taskId: string = created.json.result.task.taskId;
    const related = {
      jsonrpc: '2.0',
      id: 2,
      method: 'tools/call',
      params: { name: 'echo', arguments: { message: 'into your task' }, _meta: { 'io.modelcontextprotocol/related-task': { taskId } } },
    };
    const answer = await rpc(url, related, bearer(reader));
    expect(answer.status).toBe(200);
    expect(answer.json).toEqual({ jsonrpc: '2.0', id: 2, error: { code: -32602, message: `MCP error -32602: Task not found: ${taskId}` } });
    const result = await rpc(url, taskRequest(3, 'tasks/result', taskId), bearer(admin));
    expect(JSON.stringify(result.messages)).not.toContain('into your task');
    expect(result.json.result.content[0].text).toContain('Research Report');
  }, 40_000);

  it("a 2026-07-28 request that creates a task on a legacy server makes it its identity's too", async () => {
    const url = `${gw.url}/mcp/everything`;
    const envelope = {
      'io.modelcontextprotocol/protocolVersion': '2026-07-28',
      'io.modelcontextprotocol/clientCapabilities': {},
      'io.modelcontextprotocol/clientInfo': { name: 'modern-tasks', version: '1.0.0' },
    };
    const modern = { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'simulate-research-query' };
    const created = await rpc(url, { ...startTask(1), params: { ...startTask(1).params, _meta: envelope } }, { ...bearer(admin), ...modern });
    expect(created.status, JSON.stringify(created.json)).toBe(200);
    const taskId: string = created.json.result.task.taskId;
    expect(taskId).toEqual(expect.any(String));

    const listed = await rpc(url, { jsonrpc: '2.0', id: 2, method: 'tasks/list', params: {} }, bearer(reader));
    expect(JSON.stringify(listed.json)).not.toContain(taskId);
    const read = await rpc(url, taskRequest(3, 'tasks/get', taskId), bearer(reader));
    expect(read.json.error).toEqual({ code: -32602, message: 'MCP error -32602: Failed to retrieve task: Task not found' });
    // The same identity, the legacy way: its own task.
    const own = await rpc(url, taskRequest(4, 'tasks/get', taskId), bearer(admin));
    expect(own.json.result.taskId).toBe(taskId);
  }, 40_000);

  it("a tasks/list page never names another identity's task, not even as its cursor; the owner pages through all of its own", async () => {
    const url = `${gw.url}/mcp/everything`;
    // More than one page of the server's (10 tasks a page).
    const created = await Promise.all(Array.from({ length: 12 }, (_, i) => rpc(url, startTask(100 + i), bearer(admin))));
    const mine = created.map((c) => c.json.result.task.taskId as string);

    const seenByReader: string[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < 20; page++) {
      const listed = await rpc(url, { jsonrpc: '2.0', id: 200 + page, method: 'tasks/list', params: cursor ? { cursor } : {} }, bearer(reader));
      expect(listed.json.error, JSON.stringify(listed.json)).toBeUndefined();
      seenByReader.push(JSON.stringify(listed.json));
      cursor = listed.json.result.nextCursor;
      if (!cursor) break;
    }
    for (const taskId of mine) expect(seenByReader.join('\n')).not.toContain(taskId);

    // The server's own cursor (a task id) is no cursor of the reader's.
    const guessed = await rpc(url, { jsonrpc: '2.0', id: 300, method: 'tasks/list', params: { cursor: mine[0] } }, bearer(reader));
    expect(guessed.json.error).toEqual({ code: -32602, message: `MCP error -32602: Failed to list tasks: Invalid cursor: ${mine[0]}` });

    const seenByAdmin = new Set<string>();
    cursor = undefined;
    for (let page = 0; page < 20; page++) {
      const listed = await rpc(url, { jsonrpc: '2.0', id: 400 + page, method: 'tasks/list', params: cursor ? { cursor } : {} }, bearer(admin));
      for (const task of listed.json.result.tasks) seenByAdmin.add(task.taskId);
      cursor = listed.json.result.nextCursor;
      if (!cursor) break;
    }
    for (const taskId of mine) expect(seenByAdmin.has(taskId), taskId).toBe(true);
  }, 40_000);

  it.sequential(
    "the status notifications of the admin's task never reach the reader, even while the reader's call is the only one in flight",
    async () => {
      const url = new URL(`${gw.url}/mcp/everything`);
      const readerClient = new Client({ name: 'tasks-e2e', version: '1.0.0' }, { capabilities: {} });
      const heard: string[] = [];
      readerClient.setNotificationHandler(TaskStatusNotificationSchema, async (n) => void heard.push(n.params.taskId));
      await readerClient.connect(new StreamableHTTPClientTransport(url, { requestInit: { headers: bearer(reader) } }));
      try {
        // The reader waits on a call of its own, the only one in flight, while the admin's task
        // moves through its stages (about a second each): a status the child sends then is easily
        // taken for the reader's.
        let progressed = 0;
        const call = readerClient.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 6, steps: 6 } }, undefined, {
          onprogress: () => void progressed++,
          timeout: 30_000,
        });
        await waitFor(() => progressed > 0, 10_000, "the reader's call to be under way");
        const created = await rpc(url.href, startTask(1), bearer(admin));
        const taskId: string = created.json.result.task.taskId;
        await call;
        const admins = await rpc(url.href, taskRequest(2, 'tasks/get', taskId), bearer(admin));
        // The task changed status while the reader's call was in flight.
        expect(admins.json.result.statusMessage).not.toBe('Gathering sources...');
        expect(heard).not.toContain(taskId);
      } finally {
        await readerClient.close();
      }
    },
    40_000,
  );
});
