/**
 * Several real gateway processes (`node dist/main.js serve -c <config>`), each on a port of its own
 * that it keeps across restarts, for the tests that put them behind a real load balancer
 * (haproxy.ts, nginx.ts) with a real redis-server (redis.ts). Each replica's config comes from
 * `configFor(i, context)`; `everythingUpstream(context)` is a stdio server-everything carrying the
 * set's marker, so that whatever a killed gateway leaves running is found and ended by pid.
 *
 *   const redis = await startRedis();
 *   const replicas = await startReplicas({ count: 3, configFor: (i, c) => `...${everythingUpstream(c)}` });
 *   const lb = await startHaproxy(replicas.backends);
 *   ...
 *   await lb.stop(); await replicas.stop(); await redis.stop();
 */
import { join } from 'node:path';
import { Agent, request, type Dispatcher } from 'undici';
import { CliProcess, ensureBuilt, leftovers, marker, NODE, q, tempDir, writeConfig } from './cli.js';
import { freePort } from './everything.js';
import { EVERYTHING } from './gateway.js';
import type { Backend } from './load-balancer.js';

export { startRedis } from './redis.js';
export { startHaproxy } from './haproxy.js';
export { startNginx } from './nginx.js';

/** What configFor is given for each replica. */
export interface ReplicaContext {
  /** The replica's port (the config's `[server] port` is overridden by --port anyway). */
  port: number;
  /** A temp dir of the replica's own: audit files, anything else it writes. */
  dir: string;
  /** The set's marker: put it in the arguments of every process a replica starts. */
  marker: string;
}

export interface Replica {
  readonly index: number;
  readonly port: number;
  /** http://127.0.0.1:<port>: the replica itself, bypassing the load balancer. */
  readonly url: string;
  readonly dir: string;
  /** The running process (a new one after restart()). */
  readonly process: CliProcess;
  /** Sends a signal to the running process, by pid. */
  signal(signal: NodeJS.Signals): void;
  /** Waits for the running process to exit (SIGKILL after timeoutMs). */
  waitExit(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Starts it again, on the same port with the same config, once it has exited; resolves when /ready is 200. */
  restart(): Promise<void>;
}

export interface Replicas {
  readonly list: readonly Replica[];
  /** Where a load balancer sends traffic: one per replica, in order (g0, g1, ...). */
  readonly backends: Backend[];
  readonly marker: string;
  /** Every process started so far, in start order (logs of replicas that were restarted included). */
  readonly processes: readonly CliProcess[];
  /** SIGTERM to each running replica, SIGKILL after 20 s; then nothing carrying the marker is left. */
  stop(): Promise<void>;
}

/** server-everything over stdio, named `name` at `/name`, its process carrying the set's marker. */
export function everythingUpstream(context: ReplicaContext, name = 'everything'): string {
  return `[[upstream.servers]]\nname = ${q(name)}\npath_prefix = "/${name}"\ntransport = "stdio"\ncommand = ${q(NODE)}\nargs = [${q(EVERYTHING)}, "stdio", ${q(context.marker)}]\n`;
}

/** Resolves once GET /ready answers 200; fails early if the process exits. */
export async function waitReady(url: string, process: CliProcess, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!process.running) throw new Error(`the gateway at ${url} exited before it was ready:\n${process.stderr}`);
    const status = await fetch(`${url}/ready`).then(
      (res) => res.body?.cancel().then(() => res.status) ?? res.status,
      () => 0,
    );
    if (status === 200) return;
    if (Date.now() > deadline) throw new Error(`the gateway at ${url} was not ready within ${timeoutMs} ms:\n${process.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `count` gateways, started together; resolves once every one answers /ready with 200. */
export async function startReplicas(options: {
  count: number;
  configFor(index: number, context: ReplicaContext): string;
  readyTimeoutMs?: number;
}): Promise<Replicas> {
  await ensureBuilt();
  const setMarker = marker('replicas');
  const processes: CliProcess[] = [];
  const list: Replica[] = [];
  for (let index = 0; index < options.count; index++) {
    const port = await freePort();
    const dir = tempDir();
    const url = `http://127.0.0.1:${port}`;
    const config = writeConfig(options.configFor(index, { port, dir, marker: setMarker }), 'mcp-guard.toml', dir);
    const spawnOne = () => {
      const child = new CliProcess(['serve', '-c', config, '--host', '127.0.0.1', '--port', String(port)], { cwd: dir });
      processes.push(child);
      return child;
    };
    let current = spawnOne();
    list.push({
      index,
      port,
      url,
      dir,
      get process() {
        return current;
      },
      signal(signal) {
        current.signal(signal);
      },
      waitExit(timeoutMs) {
        return current.waitExit(timeoutMs);
      },
      async restart() {
        if (current.running) throw new Error(`replica ${index} is still running`);
        current = spawnOne();
        await waitReady(url, current, options.readyTimeoutMs);
      },
    });
  }
  const stop = async () => {
    await Promise.all(
      list.map(async (replica) => {
        if (!replica.process.running) return;
        replica.signal('SIGTERM');
        await replica.waitExit(20_000).catch(() => undefined);
      }),
    );
    await Promise.all(processes.map((p) => p.kill()));
    await leftovers(setMarker, 2_000);
  };
  try {
    await Promise.all(list.map((replica) => waitReady(replica.url, replica.process, options.readyTimeoutMs)));
  } catch (error) {
    await stop();
    throw error;
  }
  return { list, backends: list.map((r) => ({ host: '127.0.0.1', port: r.port })), marker: setMarker, processes, stop };
}

/** The audit file path a replica's config should use (`[audit] file`), in its own dir. */
export function auditFile(context: ReplicaContext): string {
  return join(context.dir, 'audit.log');
}

/** The outcome of one session-less call through the load balancer. */
export interface CallOutcome {
  ok: boolean;
  status: number;
  /** What went wrong, for the failure report (status and body, or the socket error). */
  problem?: string;
}

/**
 * One session-less `tools/call` of server-everything's `echo` (a plain POST, no session): ok when
 * the answer is HTTP 200 with a JSON-RPC result that echoes the message.
 */
export async function echoCall(agent: Dispatcher, url: string, message: string, headers: Record<string, string> = {}): Promise<CallOutcome> {
  try {
    const res = await request(url, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { message } } }),
    });
    const text = await res.body.text();
    let echoed = false;
    try {
      echoed = String((JSON.parse(text) as { result?: { content?: Array<{ text?: string }> } }).result?.content?.[0]?.text).includes(message);
    } catch {
      // not JSON: reported below
    }
    return res.statusCode === 200 && echoed
      ? { ok: true, status: 200 }
      : { ok: false, status: res.statusCode, problem: `${res.statusCode} ${text.slice(0, 300)}` };
  } catch (error) {
    return { ok: false, status: 0, problem: String(error) };
  }
}

export interface LoadResult {
  sent: number;
  ok: number;
  failures: string[];
  durationMs: number;
}

/**
 * `clients` concurrent clients, each with its own kept-alive connection, each sending session-less
 * echo calls one after another until `until()` holds, `maxRequests` have been sent in all, or
 * `maxMs` has passed: bounded in count and time whatever happens. `live` counts as it goes;
 * `finished` resolves once every client has stopped.
 */
export function sessionlessLoad(options: { url: string; clients: number; until: () => boolean; maxRequests: number; maxMs: number }): {
  live: LoadResult;
  finished: Promise<LoadResult>;
} {
  const started = performance.now();
  const live: LoadResult = { sent: 0, ok: 0, failures: [], durationMs: 0 };
  const agents: Agent[] = [];
  const client = async (c: number) => {
    const agent = new Agent({ connections: 1, keepAliveTimeout: 30_000 });
    agents.push(agent);
    for (let n = 0; !options.until() && live.sent < options.maxRequests && performance.now() - started < options.maxMs; n++) {
      live.sent++;
      const outcome = await echoCall(agent, options.url, `client ${c} call ${n}`);
      if (outcome.ok) live.ok++;
      else live.failures.push(`client ${c} call ${n}: ${outcome.problem}`);
    }
  };
  const finished = Promise.all(Array.from({ length: options.clients }, (_, c) => client(c))).finally(async () => {
    await Promise.all(agents.map((a) => a.close()));
    live.durationMs = Math.round(performance.now() - started);
  });
  return { live, finished: finished.then(() => live) };
}
