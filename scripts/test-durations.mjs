/**
 * A vitest reporter that writes test/durations.json: how long each test file ran (its tests and
 * hooks, in ms, rounded to 100 ms), keyed by its path. test/sequencer.ts starts the longest first
 * from it where vitest has no cache of its own (a fresh clone). Written only when every file ran
 * and passed, so that a partial or failed run never replaces it.
 *
 *   npm run test:durations
 */
import { writeFileSync } from 'node:fs';
import { relative } from 'node:path';

export default class DurationsReporter {
  onInit(vitest) {
    this.root = vitest.config.root;
    this.durations = {};
    this.complete = true;
  }

  onTestModuleEnd(module) {
    if (module.state() !== 'passed') this.complete = false;
    this.durations[relative(this.root, module.moduleId)] = Math.round(module.diagnostic().duration / 100) * 100;
  }

  onTestRunEnd(modules, errors, reason) {
    if (!this.complete || reason !== 'passed') {
      console.error('test:durations: the run did not pass whole; test/durations.json is left as it was');
      return;
    }
    const sorted = Object.fromEntries(Object.entries(this.durations).sort(([a], [b]) => (a < b ? -1 : 1)));
    writeFileSync(new URL('../test/durations.json', import.meta.url), `${JSON.stringify(sorted, null, 2)}\n`);
    console.log(`test:durations: wrote test/durations.json (${Object.keys(sorted).length} files)`);
  }
}
