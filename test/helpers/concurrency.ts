/**
 * Bounds on what a test file runs at once when its tests or describe blocks run concurrently
 * (describe.concurrent): each test or block of such a file starts real processes (a gateway,
 * server-everything children, about a second of CPU each), and too many starting together on a
 * busy machine would eat the slack of the deadlines the tests wait with. Waiting for a slot counts
 * against the hook's timeout, never the test's.
 */
import { aroundAll, aroundEach } from 'vitest';

/** A counting semaphore: `run(fn)` runs fn once fewer than `n` others are running. */
function slots(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: Array<() => void> = [];
  return async (fn) => {
    if (running >= n) await new Promise<void>((resolve) => waiting.push(resolve));
    else running++;
    try {
      return await fn();
    } finally {
      // The slot passes to the next waiting one, if any.
      const next = waiting.shift();
      if (next) next();
      else running--;
    }
  };
}

/** How long a test or block may wait for its slot: the others of its file may take minutes on a busy machine. */
const SLOT_WAIT_MS = 10 * 60_000;

/** At most `n` tests of this file run at once, whatever vitest's maxConcurrency. Call once, at the top level of the file. */
export function atMostConcurrentTests(n: number): void {
  const run = slots(n);
  aroundEach((runTest) => run(runTest), SLOT_WAIT_MS);
}

/**
 * At most `n` describe blocks of this file run at once (their beforeAll, tests and afterAll).
 * Returns the function to call at the top of each block that takes a slot.
 */
export function atMostConcurrentBlocks(n: number): () => void {
  const run = slots(n);
  return () => aroundAll((runSuite) => run(runSuite), SLOT_WAIT_MS);
}
