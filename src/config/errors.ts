/**
 * Configuration errors. One ConfigError carries every problem found, each located by the key path
 * a user would look for in the file (`upstream.servers[2].url`) or in the environment
 * (`MCP_GUARD_ADDITIONAL_SERVERS.staging.url`), so that one `mcp-guard validate` run shows them all.
 */

/** One problem in the configuration. */
export interface ConfigIssue {
  /**
   * Where: a TOML key path with zero-based indexes (`upstream.servers[2].url`), a path below
   * `MCP_GUARD_ADDITIONAL_SERVERS`, or `(file)` for the file as a whole (missing, unreadable, not TOML).
   */
  path: string;
  /** What is wrong. Never contains the value of an environment variable. */
  message: string;
}

/** The configuration cannot be used; `message` lists every issue as `path: message` lines. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly issues: ConfigIssue[];

  constructor(issues: ConfigIssue[]) {
    super(issues.map((issue) => `${issue.path}: ${issue.message}`).join('\n'));
    this.issues = issues;
  }
}

/** A key path as segments: table keys and zero-based array indexes. */
export type KeyPath = readonly (string | number)[];

const BARE_KEY = /^[A-Za-z0-9_-]+$/;

/** `['upstream', 'servers', 2, 'url']` -> `upstream.servers[2].url`; keys TOML would quote are quoted. */
export function formatKeyPath(path: KeyPath): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') {
      out += `[${segment}]`;
    } else {
      const key = BARE_KEY.test(segment) ? segment : JSON.stringify(segment);
      out += out === '' ? key : `.${key}`;
    }
  }
  return out;
}
