/**
 * What the load balancer helpers (haproxy.ts, nginx.ts) share: a real load balancer from the
 * machine's packages, run in the foreground with a config of our own in a temp dir, on a free
 * port of 127.0.0.1, and stopped by its pid (never by name: the machine may run its own).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One gateway behind the load balancer. */
export interface Backend {
  host: string;
  port: number;
}

export interface LoadBalancer {
  /** http://127.0.0.1:<port>, where clients connect. */
  readonly url: string;
  readonly port: number;
  /** The pid of the running load balancer (its master process for nginx). */
  readonly pid: number | undefined;
  /** The config it runs, as written (docs/operations.md shows the same recipe). */
  readonly config: string;
  /** What it wrote to stdout and stderr (and its error log for nginx). */
  output(): string;
  /** SIGTERM by pid, SIGKILL after 5 s; resolves once it has exited. Its temp dir is removed. */
  stop(): Promise<void>;
}

/** A fresh temp dir the load balancer's worker processes may read (nginx workers drop root). */
export function balancerDir(label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `mcp-guard-${label}-`));
  chmodSync(dir, 0o755);
  return dir;
}

/** True once a TCP connection to 127.0.0.1:port is accepted. */
export function accepts(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, host);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Runs `command args` in the foreground and resolves once its port accepts connections; rejects
 * (with what it printed) if it exits first or takes longer than 15 s.
 */
export async function runBalancer(
  name: string,
  command: string,
  args: string[],
  options: { port: number; dir: string; config: string; extraOutput?: () => string },
): Promise<LoadBalancer> {
  const child: ChildProcess = spawn(command, args, { cwd: options.dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let printed = '';
  child.stdout!.on('data', (c: Buffer) => (printed += c.toString('utf8')));
  child.stderr!.on('data', (c: Buffer) => (printed += c.toString('utf8')));
  const output = () => printed + (options.extraOutput?.() ?? '');
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      resolve();
    });
    child.once('error', (error) => {
      printed += `\n${String(error)}`;
      exited = true;
      resolve();
    });
  });
  const stop = async () => {
    if (!exited && child.pid !== undefined) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exit;
      clearTimeout(timer);
    }
    rmSync(options.dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 15_000;
  while (!(await accepts(options.port))) {
    if (exited || Date.now() > deadline) {
      await stop();
      throw new Error(
        `${name} did not accept connections on port ${options.port}${exited ? ' (it exited)' : ' within 15 s'}:\n${output()}\nconfig:\n${options.config}`,
      );
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    url: `http://127.0.0.1:${options.port}`,
    port: options.port,
    get pid() {
      return exited ? undefined : child.pid;
    },
    config: options.config,
    output,
    stop,
  };
}
