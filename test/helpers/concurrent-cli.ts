/**
 * The process bookkeeping of a test file whose tests run the command line concurrently
 * (describe.concurrent): like trackProcesses (cli.ts), but per test. What a test started (its
 * gateways, the processes carrying its markers) is ended by pid when that test finishes, never
 * what another test, still running, started.
 */
import { afterAll, beforeAll, type TestContext } from 'vitest';
import { cleanupTempDirs, ensureBuilt, leftovers, marker, type CliProcess } from './cli.js';

/** The build first, the temp dirs removed at the end. Call once, at the top level of the file. */
export function cliFile(): void {
  beforeAll(async () => {
    await ensureBuilt();
  }, 120_000);
  afterAll(() => cleanupTempDirs());
}

/** A marker unique to this test; once it has finished, nothing carrying the marker is left running (ended by pid). */
export function testMarker(label: string, context: TestContext): string {
  const m = marker(label);
  context.onTestFinished(async () => {
    await leftovers(m, 0);
  });
  return m;
}

/** `process`, ended (by pid) if it is still running once this test has finished: a failed test leaves nothing behind. */
export function ownedBy<P extends CliProcess>(context: TestContext, process: P): P {
  context.onTestFinished(() => process.kill());
  return process;
}
