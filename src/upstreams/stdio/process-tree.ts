/**
 * The process trees of stdio children: each child leads its own process group (spawned
 * `detached`), so that a wrapper like `npx` and everything it started can be signalled at once.
 */
import type { ChildProcess } from 'node:child_process';

/** Time a child gets to exit after SIGTERM before SIGKILL. */
const KILL_GRACE_MS = 2_000;
/** Time the rest of a child's process group gets to let go of its pipes after the child exited. */
const STRAGGLER_GRACE_MS = 2_000;

/** Children whose process group may still hold processes: until their 'close'. */
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

/**
 * Follows a child until its tree is gone:
 * - 'close' waits for the child's pipes, so a descendant that outlives the child and keeps them
 *   open would keep a dead server looking alive (no restart, no error) until startup_timeout_ms or
 *   forever; STRAGGLER_GRACE_MS after the child's own exit, its group is killed.
 * - If the gateway exits without closing its upstreams (a second SIGTERM/SIGINT, a crash), every
 *   group still alive is killed on the way out: no orphaned tree survives the gateway.
 */
export function track(child: ChildProcess): void {
  if (child.pid === undefined) return;
  liveChildren.add(child);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of liveChildren) killGroup(c, 'SIGKILL');
    });
  }
  let straggler: NodeJS.Timeout | undefined;
  child.once('exit', () => {
    straggler = setTimeout(() => killGroup(child, 'SIGKILL'), STRAGGLER_GRACE_MS);
    straggler.unref();
  });
  child.once('close', () => {
    if (straggler) clearTimeout(straggler);
    liveChildren.delete(child);
  });
}

export function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // The group is already gone.
  }
}

/**
 * Ends a child and its descendants: stdin closed (the polite signal for a stdio server), SIGTERM to
 * the process group, SIGKILL after a grace period.
 */
export async function terminateTree(child: ChildProcess): Promise<void> {
  if (child.pid === undefined) return;
  const exited =
    child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.stdin?.end();
  killGroup(child, 'SIGTERM');
  const timer = setTimeout(() => killGroup(child, 'SIGKILL'), KILL_GRACE_MS);
  await exited;
  clearTimeout(timer);
  killGroup(child, 'SIGKILL');
}
