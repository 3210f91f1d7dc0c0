/**
 * Does argon2 work in this Node? argon2 is a native addon: a tree installed (and the addon
 * compiled) with another Node version can load and then crash the process on its first hash
 * (SIGSEGV, exit 139, not a line in any log), which for a gateway means at the first request with
 * an API key. So before serving with `[[auth.api_keys]]` argon2 hashes (and before `keygen` /
 * `hash-key`), argon2 hashes and verifies a constant in a short-lived child process, where a crash
 * kills only the child: `serve` does it in the config loader's child (load-child.ts, no extra
 * process), the key commands in their own (argon2-check-child.ts). A crash, an error or no answer
 * within ARGON2_CHECK_TIMEOUT_MS becomes a plain Error saying what failed, this Node's version and
 * the fix (exit 1, no stack trace).
 *
 * The check uses the configured hashes' lanes (p, the threads argon2 runs on) with one pass over
 * the least memory argon2 allows: it exercises the binding (load, arguments, thread pool,
 * promise) as a real verification does, for about a millisecond instead of the 0.1-0.5 s a full
 * 64 MiB hash takes, which would be added to every start-up.
 */
import { fork } from 'node:child_process';
import { argon2 } from '../optional.js';
import { errorMessage } from '../error-message.js';

/** How long the check may take, loading the addon included, before it counts as failed. */
export const ARGON2_CHECK_TIMEOUT_MS = 10_000;

/** The most lanes the check uses, whatever a hash in the config says: the check stays cheap. */
const MAX_CHECK_LANES = 16;

/** The lanes (p) of the argon2id PHC strings among these hashes, distinct and sorted; [] = none is argon2. */
export function argon2Lanes(hashes: readonly string[]): number[] {
  const lanes = new Set<number>();
  for (const hash of hashes) {
    if (!hash.startsWith('$argon2')) continue; // the deprecated SHA-256 hashes need no argon2
    const p = /[$,]p=(\d+)/.exec(hash)?.[1];
    lanes.add(Math.min(Math.max(Number(p ?? 4), 1), MAX_CHECK_LANES));
  }
  return [...lanes].sort((a, b) => a - b);
}

/** The error message for a broken argon2: what failed, this Node and the fix. */
export function brokenArgon2Message(what: string): string {
  const node = process.version;
  return (
    `argon2 (the native module that checks API keys) does not work with this Node (${node}): ${what}. ` +
    `It was probably installed or compiled with another Node version. ` +
    `Fix: run \`npm rebuild argon2\` with Node ${node} (or reinstall the dependencies with it: \`rm -rf node_modules && npm ci\`)`
  );
}

/** What failed when a check's child ended without an answer. */
export function crashDescription(code: number | null, signal: NodeJS.Signals | null): string {
  return signal !== null
    ? `it crashed the process (${signal}${signal === 'SIGSEGV' ? ', exit 139' : ''}) while hashing a test value`
    : `the process hashing a test value exited (code ${code}) without an answer`;
}

/**
 * Hashes and verifies a constant with each number of lanes, in this process. Resolves, or rejects
 * with an Error whose message is brokenArgon2Message(...). Run it in a child process only: a
 * broken binding may kill the process instead of throwing.
 */
export async function selfTestArgon2(lanes: readonly number[]): Promise<void> {
  try {
    const { argon2id, hash, verify } = argon2();
    for (const parallelism of lanes) {
      const phc = await hash('mcp-guard argon2 self-test', { type: argon2id, parallelism, timeCost: 1, memoryCost: 8 * parallelism });
      if (!(await verify(phc, 'mcp-guard argon2 self-test'))) throw new Error('a hash it made does not verify');
    }
  } catch (error) {
    throw new Error(brokenArgon2Message(`it failed hashing a test value (${errorMessage(error)})`));
  }
}

/** What argon2-check-child.ts sends back. */
export type Argon2CheckAnswer = { ok: true } | { failure: string };

/**
 * selfTestArgon2(lanes) in a short-lived child process (argon2-check-child.ts), for `keygen` and
 * `hash-key`; rejects with an Error whose message says what failed and the fix.
 */
export function checkArgon2Isolated(lanes: readonly number[] = [4]): Promise<void> {
  return new Promise((resolve, reject) => {
    // execArgv: none of this process's flags; its environment and stderr are this process's.
    const child = fork(new URL('./argon2-check-child.js', import.meta.url), lanes.map(String), {
      execArgv: [],
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    let answer: Argon2CheckAnswer | undefined;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, ARGON2_CHECK_TIMEOUT_MS);
    child.once('message', (message: Argon2CheckAnswer) => {
      answer = message;
    });
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) reject(new Error(brokenArgon2Message(`hashing a test value did not finish within ${ARGON2_CHECK_TIMEOUT_MS / 1000} s`)));
      else if (answer === undefined) reject(new Error(brokenArgon2Message(crashDescription(code, signal))));
      else if ('failure' in answer) reject(new Error(answer.failure));
      else resolve();
    });
  });
}
