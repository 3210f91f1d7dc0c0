/**
 * The child process of checkArgon2Isolated() (argon2-check.ts): hashes and verifies a constant
 * with argon2 for each number of lanes in argv, sends the answer over IPC and exits. If the
 * binding is broken this process may die instead; the parent reports that.
 */
import { selfTestArgon2, type Argon2CheckAnswer } from './argon2-check.js';
import { errorMessage } from '../error-message.js';

let answer: Argon2CheckAnswer;
try {
  await selfTestArgon2(process.argv.slice(2).map(Number));
  answer = { ok: true };
} catch (error) {
  answer = { failure: errorMessage(error) };
}
process.send!(answer, () => process.disconnect());
