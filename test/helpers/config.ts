/** Config tests' shared assertion: every problem of a config, as `path: message` lines. */
import { ConfigError } from '../../src/config/errors.js';
import { parseConfig } from '../../src/config/load.js';

/** The problems parseConfig reports for this TOML (with this environment); throws if it is valid. */
export function configErrors(toml: string, env: Record<string, string> = {}): string[] {
  try {
    parseConfig(toml, { env });
  } catch (error) {
    if (error instanceof ConfigError) return error.issues.map((issue) => `${issue.path}: ${issue.message}`);
    throw error;
  }
  throw new Error('expected a ConfigError');
}
