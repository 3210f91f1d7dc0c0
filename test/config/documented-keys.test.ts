/**
 * Every key the config accepts is documented (issue 17: an undocumented key fails a test). The
 * keys come from the JSON Schema that `mcp-guard schema` makes from the validating schemas
 * (mcp-guard.schema.json, itself checked against them in test/cli/schema.test.ts); the docs are
 * the reference pages a user reads for each section.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = new URL('../..', import.meta.url).pathname;
const PAGES = ['configuration', 'authentication', 'rate-limits', 'audit', 'metrics', 'operations'];
const docs = PAGES.map((page) => readFileSync(join(ROOT, 'docs', `${page}.md`), 'utf8')).join('\n');

interface Node {
  properties?: Record<string, Node>;
  items?: Node;
  anyOf?: Node[];
  additionalProperties?: Node | boolean;
  type?: string | string[];
}

/** Every key path of the schema: `server.cors.max_age_secs`, `rate_limit.tool_limits.tool_pattern`. */
function keyPaths(node: Node, prefix: string[] = [], out: Array<{ path: string[]; table: boolean }> = []): Array<{ path: string[]; table: boolean }> {
  for (const [key, child] of Object.entries(node.properties ?? {})) {
    const path = [...prefix, key];
    const table = child.properties !== undefined || child.items?.properties !== undefined;
    out.push({ path, table });
    keyPaths(child, path, out);
    if (child.items) keyPaths(child.items, path, out);
  }
  for (const alternative of node.anyOf ?? []) keyPaths(alternative, prefix, out);
  return out;
}

/** Documented: in backticks (alone or with its parents), as `key =` in a TOML example, or, for a table, as its `[header]`. */
function documented(path: string[], table: boolean): boolean {
  const key = path[path.length - 1]!;
  for (let i = 0; i < path.length; i++) if (docs.includes(`\`${path.slice(i).join('.')}\``)) return true;
  if (new RegExp(`^\\s*#?\\s*${key} = `, 'm').test(docs)) return true;
  return table && (docs.includes(`[${path.join('.')}]`) || docs.includes(`[[${path.join('.')}]]`));
}

describe('the config reference', () => {
  it('documents every key the config accepts', () => {
    const schema = JSON.parse(readFileSync(join(ROOT, 'mcp-guard.schema.json'), 'utf8')) as Node;
    const keys = keyPaths(schema);
    expect(keys.length).toBeGreaterThan(100);
    const missing = keys.filter((k) => !documented(k.path, k.table)).map((k) => k.path.join('.'));
    expect(missing).toEqual([]);
  });

  it('would notice a key the docs do not name', () => {
    expect(documented(['server', 'not_a_documented_key'], false)).toBe(false);
    expect(documented(['server', 'max_sessions_per_identity'], false)).toBe(true);
  });
});
