/**
 * A real redis-server for the shared-limit tests: started on a free port of 127.0.0.1, without
 * persistence (`--save "" --appendonly no`), and stopped, paused or restarted by its own pid
 * (never by name: other redis servers on this machine are not ours).
 *
 * With REDIS_URL set, sharedRedis() uses that server instead; tests that must stop or pause the
 * server always start their own.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { freePort } from './everything.js';
import { tmpdir } from 'node:os';

export interface RedisServer {
  url: string;
  /** False for a REDIS_URL server: it cannot be stopped, paused or restarted here. */
  readonly owned: boolean;
  /** The pid of the running server (undefined when stopped or not ours). */
  readonly pid: number | undefined;
  /** Starts it again on the same port (after stop()). */
  start(): Promise<void>;
  /** SIGTERM by pid, SIGKILL if it is still there after 5 s; resolves once it has exited. */
  stop(): Promise<void>;
  /** SIGSTOP: the server keeps its connections open and answers nothing (a hung Redis). */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
}

function launch(port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', tmpdir(), '--logfile', ''], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`redis-server on port ${port} did not start within 10 s:\n${output}`));
    }, 10_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString('utf8');
      if (output.includes('Ready to accept connections')) {
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        // Keep draining its output so that a full pipe never blocks it.
        child.stdout!.resume();
        resolve(child);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited (${code ?? signal}) before it was ready:\n${output}`));
    });
  });
}

/** A redis-server of our own on a free port. */
export async function startRedis(): Promise<RedisServer> {
  const port = await freePort();
  let child: ChildProcess | undefined = await launch(port);
  let paused = false;
  return {
    url: `redis://127.0.0.1:${port}`,
    owned: true,
    get pid() {
      return child?.pid;
    },
    async start() {
      if (child) throw new Error('redis-server is already running');
      child = await launch(port);
    },
    async stop() {
      const running = child;
      if (!running || running.exitCode !== null || running.signalCode !== null) {
        child = undefined;
        return;
      }
      const exited = new Promise<void>((resolve) => running.once('exit', () => resolve()));
      if (paused) {
        running.kill('SIGCONT');
        paused = false;
      }
      running.kill('SIGTERM');
      const timer = setTimeout(() => running.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
      child = undefined;
    },
    pause() {
      if (!child) throw new Error('redis-server is not running');
      child.kill('SIGSTOP');
      paused = true;
    },
    resume() {
      if (!child) throw new Error('redis-server is not running');
      child.kill('SIGCONT');
      paused = false;
    },
  };
}

/** REDIS_URL when set, else a redis-server of our own. */
export async function sharedRedis(): Promise<RedisServer> {
  const url = process.env['REDIS_URL'];
  if (url === undefined || url === '') return startRedis();
  const notOurs = () => {
    throw new Error('REDIS_URL: this server is not ours to stop, pause or restart');
  };
  return { url, owned: false, pid: undefined, start: async () => notOurs(), stop: async () => undefined, pause: notOurs, resume: notOurs };
}
