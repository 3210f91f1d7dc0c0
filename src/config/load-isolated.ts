/**
 * loadConfig() in a short-lived child process, for `mcp-guard serve`. Validating the config takes
 * zod, the schemas and the TOML parser once, at start-up; loaded into the gateway they would stay
 * resident for the life of the process, since an ES module is never unloaded. A child process
 * takes all of it away when it exits: about 4 MB less V8 heap at idle (docs/performance.md). A
 * worker thread would free its isolate too, but leave the thread's malloc arena in the gateway; a
 * child process leaves nothing. Start-up is no slower: main.ts loads the app's modules while the
 * child validates (measured: 468 ms to /ready, against 474 ms before).
 *
 * The resolved config is plain data (objects, arrays, strings, numbers, booleans); it comes back
 * over the IPC channel by structured clone (`serialization: 'advanced'`). A ConfigError comes back
 * as its list of issues. The short-lived commands (validate, check-upstream) call loadConfig()
 * in-process. With argon2 API key hashes in the config, the child also checks that argon2 works
 * with this Node before answering (src/auth/argon2-check.ts): a broken native module crashes
 * that child, not the gateway, and start-up ends with a message instead of the first request.
 */
import { fork } from 'node:child_process';
import { ARGON2_CHECK_TIMEOUT_MS, brokenArgon2Message, crashDescription } from '../auth/argon2-check.js';
import { ConfigError, type ConfigIssue } from './errors.js';
import type { GatewayConfig } from './schema.js';

/**
 * What the loader (load-child.ts) sends back: the config, the issues of a ConfigError, a failure,
 * or the message of an argon2 that does not work (src/auth/argon2-check.ts).
 */
export type LoadAnswer = { config: GatewayConfig } | { issues: ConfigIssue[] } | { failure: string } | { argon2: string };
/** Sent by the loader before its answer when it checks argon2 (the config has argon2 API key hashes). */
export type LoadProgress = { checking: 'argon2' };

/** loadConfig(path) with process.env, run in a child process; rejects with a ConfigError as loadConfig does. */
export function loadConfigIsolated(path: string): Promise<GatewayConfig> {
  return new Promise((resolve, reject) => {
    // execArgv: none of the gateway's own flags (--require preloads, --inspect and the like).
    // The child's environment is the gateway's; its stderr is the gateway's too.
    const child = fork(new URL('./load-child.js', import.meta.url), [path], {
      execArgv: [],
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    let answer: LoadAnswer | undefined;
    let checkingArgon2 = false;
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    child.on('message', (message: LoadAnswer | LoadProgress) => {
      if (!('checking' in message)) {
        answer = message;
        return;
      }
      // The argon2 check is bounded in time: a hung native module must not hold start-up forever.
      checkingArgon2 = true;
      timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, ARGON2_CHECK_TIMEOUT_MS);
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (answer === undefined && checkingArgon2) {
        const what = timedOut ? `hashing a test value did not finish within ${ARGON2_CHECK_TIMEOUT_MS / 1000} s` : crashDescription(code, signal);
        reject(new Error(brokenArgon2Message(what)));
      } else if (answer === undefined) reject(new Error(`the config loader stopped (${signal ?? `exit code ${code}`}) without an answer`));
      else if ('issues' in answer) reject(new ConfigError(answer.issues));
      else if ('failure' in answer) reject(new Error(`the config loader failed: ${answer.failure}`));
      else if ('argon2' in answer) reject(new Error(answer.argon2));
      else resolve(answer.config);
    });
  });
}
