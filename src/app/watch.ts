/**
 * `[server] watch_config = true`: a change of the config file reloads it. The directory is
 * watched, not the file: an editor that writes a new file and renames it over the old one, and a
 * Kubernetes ConfigMap (whose files are symlinks swapped at once), replace the file rather than
 * write to it. Events are debounced, and a reload happens only when the file's content differs
 * from what was last loaded: an editor's write-and-rename counts once, a `touch` not at all.
 */
import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { errorMessage } from '../error-message.js';
import type { Logger } from '../observability/logger.js';

/** Quiet time after the last event before the file is read. */
const DEBOUNCE_MS = 250;

async function digest(path: string): Promise<string | undefined> {
  try {
    return createHash('sha256')
      .update(await readFile(path))
      .digest('hex');
  } catch {
    // Gone for a moment (between an editor's delete and rename): the next event reads it again.
    return undefined;
  }
}

/** Calls `changed` when the content of `path` changes; returns what stops watching. */
export async function watchConfigFile(path: string, changed: () => void, log: Logger): Promise<() => void> {
  let last = await digest(path);
  let timer: NodeJS.Timeout | undefined;
  let watcher: FSWatcher;
  try {
    watcher = watch(dirname(path), { persistent: false }, () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        timer = undefined;
        void digest(path).then((now) => {
          if (now === undefined || now === last) return;
          last = now;
          changed();
        });
      }, DEBOUNCE_MS);
    });
  } catch (err) {
    log.error({ err: errorMessage(err), path }, 'watch_config: the config directory cannot be watched; reload with SIGHUP');
    return () => undefined;
  }
  watcher.on('error', (err) => log.error({ err: errorMessage(err), path }, 'watch_config: watching the config directory failed; reload with SIGHUP'));
  log.info({ path }, 'watching the config file for changes');
  return () => {
    if (timer) clearTimeout(timer);
    watcher.close();
  };
}
