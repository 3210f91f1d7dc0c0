import { defineConfig } from 'vitest/config';
import LongestFirst from './test/sequencer.js';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // End-to-end tests spawn real MCP servers; two cores are shared by everything on the machine.
    // Three workers on two cores: much of an end-to-end test is waiting (for a child to start, a
    // timeout to pass), so a third file keeps the cores busy meanwhile. Measured on an idle
    // 2-core machine, whole suite: 3 workers 241 s (164% CPU), 4 workers 233 s (182% CPU: more
    // parallel module loading for 8 s less); 2 workers took 351 s with one 63 s file since cut.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    maxWorkers: 3,
    // A worker keeps its loaded modules from one file to the next instead of starting afresh for
    // each of the 129 files: loading them again cost ~0.7 s of CPU per file (vitest's "import"
    // time: 77-114 s per run, 18 s without). Files must therefore leave nothing behind: every spy
    // is restored, every environment variable a test sets is deleted, every server and child is
    // stopped (the suite passes so; src/ keeps no process-wide registry: metrics, tracing and
    // limits are per gateway instance).
    isolate: false,
    // The longest files first, also in a fresh clone (test/sequencer.ts).
    sequence: { sequencer: LongestFirst },
  },
});
