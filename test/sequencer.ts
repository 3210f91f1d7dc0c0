/**
 * The order test files start in: the longest first, so that the suite does not end with one long
 * file running alone (three workers share two cores: vitest.config.ts).
 *
 * vitest orders files so from its cache of the last run's durations, which a fresh clone (CI, a
 * new user's `npm test`) does not have: it falls back to file size there, which started the 20 s
 * soak among the very last files. test/durations.json holds the durations of a measured run
 * (`npm run test:durations` writes it again); this machine's own cache, where it exists, wins. A
 * file in neither starts first (it may be long); a file that failed last time starts before the
 * others, as in vitest.
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

const MEASURED: Readonly<Record<string, number>> = JSON.parse(readFileSync(new URL('./durations.json', import.meta.url), 'utf8'));

export default class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const root = this.ctx.config.root;
    const facts = new Map(
      files.map((spec) => {
        const path = relative(root, spec.moduleId);
        const cached = this.ctx.cache.getFileTestResults(`${spec.project.name}:${path}`);
        return [spec, { failed: cached?.failed === true, duration: cached?.duration ?? MEASURED[path] }];
      }),
    );
    return [...files].sort((a, b) => {
      const x = facts.get(a)!;
      const y = facts.get(b)!;
      if ((x.duration === undefined) !== (y.duration === undefined)) return x.duration === undefined ? -1 : 1;
      if (x.failed !== y.failed) return x.failed ? -1 : 1;
      return (y.duration ?? 0) - (x.duration ?? 0);
    });
  }
}
