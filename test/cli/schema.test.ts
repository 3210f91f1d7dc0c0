/**
 * `mcp-guard schema` and the JSON Schema editors use (issue 17: a schema-made config): made from
 * the zod schemas that validate the config, committed as mcp-guard.schema.json, and named by
 * every TOML file of the repository with taplo's `#:schema` directive.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { beforeAll, describe, expect, it } from 'vitest';
import { Ajv } from 'ajv';
import { ensureBuilt, ROOT, runCli } from '../helpers/cli.js';

const COMMITTED = join(ROOT, 'mcp-guard.schema.json');
const TOML_FILES = [
  join(ROOT, 'mcp-guard.toml'),
  ...readdirSync(join(ROOT, 'examples'))
    .filter((f) => f.endsWith('.toml'))
    .map((f) => join(ROOT, 'examples', f)),
];

/** The committed schema as a check, with ajv (draft-07, as editors read it). */
function checker(): (value: unknown) => string | undefined {
  const validate = new Ajv({ allErrors: true, strict: false }).compile(JSON.parse(readFileSync(COMMITTED, 'utf8')) as object);
  return (value) => (validate(value) ? undefined : JSON.stringify(validate.errors));
}

/** A JSON Schema node, as far as key descriptions go. */
interface SchemaNode {
  description?: unknown;
  properties?: Record<string, SchemaNode>;
  items?: SchemaNode;
  anyOf?: SchemaNode[];
  additionalProperties?: SchemaNode | boolean;
}

/** Key paths (`server.cors.max_age_secs`) whose schema has no description for an editor to show on hover. */
function undescribedKeys(node: SchemaNode, prefix = ''): string[] {
  const missing: string[] = [];
  for (const [key, child] of Object.entries(node.properties ?? {})) {
    const path = prefix === '' ? key : `${prefix}.${key}`;
    if (typeof child.description !== 'string' || child.description.trim() === '') missing.push(path);
    missing.push(...undescribedKeys(child, path));
  }
  if (node.items) missing.push(...undescribedKeys(node.items, prefix));
  for (const alternative of node.anyOf ?? []) missing.push(...undescribedKeys(alternative, prefix));
  if (typeof node.additionalProperties === 'object') missing.push(...undescribedKeys(node.additionalProperties, prefix));
  return missing;
}

describe('mcp-guard schema', () => {
  beforeAll(async () => {
    await ensureBuilt();
  }, 120_000);

  it('prints the committed mcp-guard.schema.json exactly (a stale file fails here: run `node dist/main.js schema > mcp-guard.schema.json`)', async () => {
    const r = await runCli(['schema']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(readFileSync(COMMITTED, 'utf8'));
    const schema = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(schema['$schema']).toBe('http://json-schema.org/draft-07/schema#');
    expect(Object.keys(schema['properties'] as object)).toEqual([
      'server',
      'upstream',
      'auth',
      'rate_limit',
      'audit',
      'telemetry',
      'virtual_servers',
      'tool_integrity',
    ]);
  });

  it('describes every key, so that an editor shows what it means on hover (add a .describe() in src/config/schema.ts)', () => {
    const schema = JSON.parse(readFileSync(COMMITTED, 'utf8')) as SchemaNode;
    expect(undescribedKeys(schema)).toEqual([]);
    // The check itself finds a key without a description, however deep.
    expect(undescribedKeys({ properties: { a: { description: 'A', items: { properties: { b: {} } } }, c: { description: ' ' } } })).toEqual(['a.b', 'c']);
  });

  it('is named by every TOML file of the repository, on its first line, for editors', () => {
    for (const file of TOML_FILES) {
      const first = readFileSync(file, 'utf8').split('\n')[0]!;
      const match = /^#:schema (\S+)$/.exec(first);
      expect(match, file).not.toBeNull();
      expect(resolve(dirname(file), match![1]!), file).toBe(COMMITTED);
    }
  });

  it('accepts every example config and refuses a typo and a wrong type, as validate does', () => {
    const check = checker();
    for (const file of TOML_FILES) expect(check(parseToml(readFileSync(file, 'utf8'))), file).toBeUndefined();
    expect(check(parseToml('[server]\nprot = 3000\n'))).toMatch(/prot/);
    expect(check(parseToml('[[upstream.servers]]\nname = "a"\npath_prefix = "/a"\ncommand = "x"\nisolation = "per-user"\n'))).toMatch(/isolation/);
    expect(check(parseToml('[server]\nport = "3000"\n'))).toMatch(/port/);
  });
});
