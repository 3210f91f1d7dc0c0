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
 * in-process.
 */
import { fork } from 'node:child_process';
import { ConfigError, type ConfigIssue } from './errors.js';
import type { GatewayConfig } from './schema.js';

/** What the loader (load-child.ts) sends back: the config, the issues of a ConfigError, or a failure. */
export type LoadAnswer = { config: GatewayConfig } | { issues: ConfigIssue[] } | { failure: string };

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
    child.once('message', (message: LoadAnswer) => {
      answer = message;
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (answer === undefined) reject(new Error(`the config loader stopped (${signal ?? `exit code ${code}`}) without an answer`));
      else if ('issues' in answer) reject(new ConfigError(answer.issues));
      else if ('failure' in answer) reject(new Error(`the config loader failed: ${answer.failure}`));
      else resolve(answer.config);
    });
  });
}
