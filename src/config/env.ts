/**
 * `${VAR}` and `${VAR:-default}` in config strings. Secrets live in the environment, not in the
 * file; this is where they enter the configuration, so nothing here ever puts a variable's value
 * into a message.
 */
import type { KeyPath } from './errors.js';

/** The environment variables interpolation reads. */
export type Environment = Record<string, string | undefined>;

/** A problem found while interpolating, at the key path of the string that has it. */
export interface InterpolationProblem {
  path: KeyPath;
  message: string;
}

const REFERENCE = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s;

/**
 * Replaces every `${NAME}` and `${NAME:-default}` in `text`. As in the shell, the default is used
 * when NAME is unset or empty, and `${NAME}` with NAME set to "" gives "". Replaced text is not
 * scanned again, so a value containing `${` stays as it is. A `${` that does not start a valid
 * reference is an error rather than literal text, so that a typo cannot pass a half-formed
 * reference to an upstream as a credential.
 */
export function interpolateString(text: string, env: Environment): { value: string; problems: string[] } {
  const problems: string[] = [];
  let value = '';
  let from = 0;
  for (;;) {
    const start = text.indexOf('${', from);
    if (start === -1) break;
    value += text.slice(from, start);
    const end = text.indexOf('}', start + 2);
    if (end === -1) {
      problems.push(`"\${" at character ${start + 1} is not closed by "}"`);
      return { value: value + text.slice(start), problems };
    }
    const match = REFERENCE.exec(text.slice(start + 2, end));
    if (!match || match[2]?.includes('${')) {
      problems.push(`invalid reference at character ${start + 1}: use \${NAME} or \${NAME:-default}`);
      value += text.slice(start, end + 1);
    } else {
      const name = match[1] as string;
      const fallback = match[2];
      const set = env[name];
      if (fallback !== undefined) {
        value += set === undefined || set === '' ? fallback : set;
      } else if (set === undefined) {
        problems.push(`environment variable ${name} is not set`);
      } else {
        value += set;
      }
    }
    from = end + 1;
  }
  return { value: value + text.slice(from), problems };
}

/**
 * Interpolates every string in a parsed document (TOML or JSON), inside arrays and tables too;
 * keys are left alone (a `__proto__` key is reported). Strings with a problem keep their text, so
 * that later checks see the document's shape; the caller reports the problem at its path and
 * ignores other findings there.
 */
export function interpolateTree(value: unknown, env: Environment, path: KeyPath = []): { value: unknown; problems: InterpolationProblem[] } {
  const problems: InterpolationProblem[] = [];
  const walk = (node: unknown, at: KeyPath): unknown => {
    if (typeof node === 'string') {
      const result = interpolateString(node, env);
      for (const message of result.problems) problems.push({ path: at, message });
      return result.problems.length > 0 ? node : result.value;
    }
    if (Array.isArray(node)) return node.map((item, index) => walk(item, [...at, index]));
    if (typeof node === 'object' && node !== null && !(node instanceof Date)) {
      const entries = Object.entries(node);
      // JSON.parse keeps a "__proto__" key that later steps would drop without a word (TOML
      // parsing already refuses it); fromEntries at least keeps it an own property until then.
      for (const [key] of entries) {
        if (key === '__proto__') problems.push({ path: [...at, key], message: 'this key is not allowed' });
      }
      return Object.fromEntries(entries.map(([key, item]) => [key, walk(item, [...at, key])]));
    }
    return node;
  };
  return { value: walk(value, path), problems };
}
