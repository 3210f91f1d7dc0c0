/**
 * The child process of load-isolated.ts: loads the config at argv[2] and sends the answer over
 * IPC, then exits. Never prints a stack trace: an unexpected error is sent as its message. With
 * argon2 API key hashes in the config, it first checks that argon2 works (src/auth/argon2-check.ts).
 */
import { argon2Lanes, selfTestArgon2 } from '../auth/argon2-check.js';
import { ConfigError } from './errors.js';
import { loadConfig } from './load.js';
import type { LoadAnswer, LoadProgress } from './load-isolated.js';
import { errorMessage } from '../error-message.js';

let answer: LoadAnswer;
try {
  const config = await loadConfig(process.argv[2] ?? '');
  answer = { config };
  // API keys hashed with argon2: check here that the native module works with this Node, where a
  // crash kills only this process (src/auth/argon2-check.ts). The parent is told first, so that it
  // can tell a crash of argon2 from one of the loader, and bound the check in time.
  const lanes = argon2Lanes((config.auth?.api_keys ?? []).map((key) => key.key_hash));
  if (lanes.length > 0) {
    const sent: LoadProgress = { checking: 'argon2' };
    process.send!(sent);
    try {
      await selfTestArgon2(lanes);
    } catch (error) {
      answer = { argon2: (error as Error).message };
    }
  }
} catch (error) {
  answer = error instanceof ConfigError ? { issues: error.issues } : { failure: errorMessage(error) };
}
process.send!(answer, () => process.disconnect());
