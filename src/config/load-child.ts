/**
 * The child process of load-isolated.ts: loads the config at argv[2] and sends the answer over
 * IPC, then exits. Never prints a stack trace: an unexpected error is sent as its message.
 */
import { ConfigError } from './errors.js';
import { loadConfig } from './load.js';
import type { LoadAnswer } from './load-isolated.js';

let answer: LoadAnswer;
try {
  answer = { config: await loadConfig(process.argv[2] ?? '') };
} catch (error) {
  answer = error instanceof ConfigError ? { issues: error.issues } : { failure: error instanceof Error ? error.message : String(error) };
}
process.send!(answer, () => process.disconnect());
