/**
 * Supervision of a stdio server's child process: its spawn, its state, its restarts.
 *
 * A child that exits is restarted with exponential backoff; after `max_restarts` consecutive
 * quick failures the server is reported as `crash_loop` and retried at the slowest pace only.
 * The child gets an explicit environment, never the gateway's, and runs in its own process group
 * so that the whole tree (`npx` -> `sh` -> `node`) ends with it (process-tree.ts).
 *
 * A start is: spawn, decide the era, initialize, ready. The era and the handshake belong to the
 * upstream (probe.ts, upstream.ts) and are given as hooks; so are the child's stdout lines and
 * what has to fail when a child ends. This file knows processes and timers only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { StdioServerConfig } from '../../config/schema.js';
import type { Logger } from '../../observability/logger.js';
import { UpstreamError } from '../errors.js';
import type { UpstreamState, UpstreamStatus } from '../upstream.js';
import { MAX_LINE_BYTES, readLines, type OversizedLine } from './line-reader.js';
import { killGroup, terminateTree, track } from './process-tree.js';

/** The environment a child inherits from the gateway; everything else comes from `env` in config. */
const INHERITED_ENV = ['HOME', 'LOGNAME', 'PATH', 'SHELL', 'TERM', 'USER', 'LANG', 'TMPDIR'] as const;
/** A child that ran this long before exiting was healthy: its exit does not count as a quick failure. */
const STABLE_AFTER_MS = 30_000;
/** stderr lines are logged up to this length. */
const MAX_STDERR_LINE = 2_000;

export function childEnvironment(configured: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const key of INHERITED_ENV) {
    const value = process.env[key];
    // A value starting with "()" is a shell function export (shellshock): never pass it on.
    if (value !== undefined && !value.startsWith('()')) env[key] = value;
  }
  return { ...env, ...configured };
}

/** What the upstream does at each step of a child's life. */
export interface SupervisorHooks {
  /** Decides the era of a child that has just started; returns the child to go on with (it may have been started again). */
  settleEra(child: ChildProcess): Promise<ChildProcess>;
  /** Brings the child to where it takes requests (initialize, for a legacy child). */
  initialize(child: ChildProcess): Promise<void>;
  /** The child is ready. */
  ready(child: ChildProcess): void;
  /** One line of the child's stdout, and one that was over the size limit (dropped). */
  line(line: string): void;
  oversizedLine(line: OversizedLine): void;
  /**
   * The current child's process is gone: it closed ('exited') or never started ('gone'). True
   * when its exit answered the era probe at start: that is part of starting, not a failure.
   */
  childGone(child: ChildProcess, how: 'exited' | 'gone'): boolean;
  /** A child has ended: everything in flight on it fails with this message. */
  ended(message: string): void;
}

export class ChildSupervisor {
  private state: UpstreamState = 'idle';
  private since = Date.now();
  private lastError: string | undefined;
  private restarts = 0;
  private quickFailures = 0;
  private current: ChildProcess | undefined;
  private startedAt = 0;
  /** Why the gateway itself ended the current child, when it did (reported instead of the signal). */
  private exitReason: string | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private readyWaiters: Array<{ resolve: () => void; reject: (e: UpstreamError) => void }> = [];

  constructor(
    private readonly config: StdioServerConfig,
    private readonly log: Logger,
    private readonly hooks: SupervisorHooks,
    private readonly onRestart: ((server: string) => void) | undefined,
  ) {}

  /** The running child, if any (also while it starts). */
  get child(): ChildProcess | undefined {
    return this.current;
  }

  /** When the current start began: what is left of startup_timeout_ms is counted from it. */
  get childStartedAt(): number {
    return this.startedAt;
  }

  get stopped(): boolean {
    return this.state === 'stopped';
  }

  status(): UpstreamStatus {
    // A child that has exited while its pipes are still open (a descendant holds them, for up to
    // the straggler grace) is still 'ready' until its 'close', but it serves nothing.
    const exited = this.current !== undefined && (this.current.exitCode !== null || this.current.signalCode !== null);
    const s: UpstreamStatus = {
      state: this.state,
      healthy: this.state === 'ready' && !exited,
      restarts: this.restarts,
      since: this.since,
    };
    if (this.lastError !== undefined && this.state !== 'ready') s.lastError = this.lastError;
    if (this.current?.pid !== undefined && this.state === 'ready' && !exited) s.pid = this.current.pid;
    return s;
  }

  /** Spawns and initializes the child. Resolves once the first attempt has succeeded or failed. */
  async start(): Promise<void> {
    if (this.state !== 'idle') return;
    await this.launch().catch(() => undefined);
  }

  /** The gateway shuts the server down: no restart from now on, and whoever waits for the child is refused. */
  stop(): void {
    this.setState('stopped');
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.rejectWaiters(this.unavailable());
  }

  /** Ends the child's whole process tree and waits for it to be gone (after stop()). */
  async endProcess(): Promise<void> {
    const child = this.current;
    if (child) await terminateTree(child);
    this.current = undefined;
  }

  /** True when a request can be written to a running, initialized child now. */
  writable(): boolean {
    const stdin = this.current?.stdin;
    return this.state === 'ready' && stdin !== undefined && stdin !== null && !stdin.destroyed && stdin.writable;
  }

  whenReady(timeoutMs: number): Promise<void> {
    // 'ready' with no stdin to write to: the child has just exited (its 'close' is still to come,
    // then the restart); wait for that restart like any other.
    if (this.writable()) return Promise.resolve();
    // A crash loop or a stopped server fails fast; a (re)start in progress is worth waiting for.
    if (this.state === 'crash_loop' || this.state === 'stopped') return Promise.reject(this.unavailable());
    if (this.state === 'idle') void this.start();
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e: UpstreamError) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.readyWaiters = this.readyWaiters.filter((w) => w !== waiter);
        reject(new UpstreamError('timeout', this.config.name, `Upstream '${this.config.name}' did not become ready within ${timeoutMs} ms`));
      }, timeoutMs);
      this.readyWaiters.push(waiter);
    });
  }

  unavailable(): UpstreamError {
    const name = this.config.name;
    const last = this.lastError ? `; last error: ${this.lastError}` : '';
    return new UpstreamError('unavailable', name, `Upstream '${name}' is not available: ${this.notAvailableBecause()}${last}`);
  }

  /**
   * Ends a child the gateway gave up on; its exit handler does the bookkeeping (calls in flight
   * fail, a restart is scheduled) and reports this reason rather than the signal we sent.
   */
  endChild(child: ChildProcess, reason: string): void {
    this.exitReason = reason;
    // Reported at once (status(), check-upstream), not only once the child has gone.
    this.lastError = reason;
    void terminateTree(child);
  }

  /**
   * Lets go of a child that exited on the era probe at start: its close is then not booked as a
   * failure with a restart (the probe starts it again itself).
   */
  release(child: ChildProcess): void {
    if (this.current === child) this.current = undefined;
  }

  /** Starts a child process; it becomes the current child. */
  spawnChild(): ChildProcess {
    const { command, args, env, cwd } = this.config;
    if (!command) throw new Error('no command configured');
    const child = spawn(command, args, {
      env: childEnvironment(env),
      cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
      // Its own process group: the whole tree can be signalled at once (kill(-pid)).
      detached: true,
      windowsHide: true,
    });
    this.current = child;
    let spawnError: string | undefined;
    child.once('error', (err) => {
      spawnError = `Failed to start '${this.config.name}': ${err.message}`;
      this.log.error({ err: err.message }, 'child process error');
      // A spawn that failed (ENOENT, EACCES) has no pid and may never emit 'close'.
      if (child.pid === undefined && this.current === child) {
        this.current = undefined;
        this.onExit(spawnError);
        this.hooks.childGone(child, 'gone');
      }
    });
    child.stdin?.on('error', (err) => this.log.debug({ err: err.message }, 'child stdin error'));
    readLines(
      child.stdout!,
      (line) => this.hooks.line(line),
      (line) => this.hooks.oversizedLine(line),
    );
    readLines(
      child.stderr!,
      (line) => {
        if (line.length > 0) this.log.info({ stream: 'stderr' }, line.length > MAX_STDERR_LINE ? `${line.slice(0, MAX_STDERR_LINE)}…` : line);
      },
      (line) => this.log.error({ stream: 'stderr', bytes: line.bytes, limitBytes: MAX_LINE_BYTES }, 'upstream wrote a line over the size limit; dropped'),
    );
    child.once('close', (code, signal) => {
      if (this.current !== child) return;
      this.current = undefined;
      // Stragglers of the tree (a grandchild that outlived npx) end with it.
      killGroup(child, 'SIGKILL');
      // Exiting on the start probe is part of starting (the probe starts it again), not a failure.
      if (this.hooks.childGone(child, 'exited')) return;
      this.onExit(spawnError ?? `exited (${signal ? `signal ${signal}` : `code ${code}`})`);
    });
    track(child);
    return child;
  }

  private setState(state: UpstreamState): void {
    if (this.state === state) return;
    this.state = state;
    this.since = Date.now();
  }

  /** Why no request can be written now, in words (a state name such as "ready" would mislead). */
  private notAvailableBecause(): string {
    switch (this.state) {
      case 'idle':
        return 'it has not been started';
      case 'starting':
        return 'it is starting';
      case 'ready':
        // The child has exited and its pipes are not closed yet: the restart follows their close.
        return 'its process has ended';
      case 'backoff':
        return 'it is restarting';
      case 'crash_loop':
        return `it keeps failing soon after it starts (crash loop); it is restarted every ${this.config.restart_backoff_max_ms} ms`;
      case 'stopped':
        return 'the gateway is shutting down';
    }
  }

  private rejectWaiters(error: UpstreamError): void {
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w.reject(error);
  }

  /** One attempt: spawn, era, initialize. On failure, schedules the next attempt and rejects. */
  private async launch(): Promise<void> {
    this.setState('starting');
    this.startedAt = Date.now();
    let child: ChildProcess;
    try {
      child = this.spawnChild();
    } catch (err) {
      this.onFailure(`Failed to start '${this.config.name}': ${(err as Error).message}`);
      throw err;
    }
    try {
      child = await this.hooks.settleEra(child);
      await this.hooks.initialize(child);
    } catch (err) {
      const message = err instanceof UpstreamError ? err.message : String(err);
      // The child is alive but did not initialize: end it.
      if (this.current === child) this.endChild(child, message);
      throw err;
    }
    this.setState('ready');
    this.lastError = undefined;
    this.hooks.ready(child);
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w.resolve();
  }

  private onExit(how: string): void {
    const reason = this.exitReason;
    this.exitReason = undefined;
    const message = reason ?? (how.startsWith('Failed') ? how : `Upstream '${this.config.name}' ${how}`);
    this.hooks.ended(message);
    if (this.state === 'stopped') return;
    this.log.warn({ reason: how }, 'upstream child exited');
    this.onFailure(message);
  }

  /** Books a failed or ended child and schedules the next start. */
  private onFailure(message: string): void {
    this.lastError = message;
    const ranFor = Date.now() - this.startedAt;
    this.quickFailures = ranFor >= STABLE_AFTER_MS ? 1 : this.quickFailures + 1;
    const crashLoop = this.quickFailures > this.config.max_restarts;
    const delay = crashLoop
      ? this.config.restart_backoff_max_ms
      : Math.min(this.config.restart_backoff_ms * 2 ** (this.quickFailures - 1), this.config.restart_backoff_max_ms);
    this.setState(crashLoop ? 'crash_loop' : 'backoff');
    if (crashLoop) this.rejectWaiters(this.unavailable());
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.state === 'stopped') return;
      this.restarts++;
      this.log.info({ attempt: this.quickFailures, restarts: this.restarts }, 'restarting upstream child');
      this.onRestart?.(this.config.name);
      this.launch().catch(() => undefined);
    }, delay);
    this.restartTimer.unref();
    this.log.warn({ delayMs: delay, quickFailures: this.quickFailures, state: this.state }, 'upstream will be restarted');
  }
}
