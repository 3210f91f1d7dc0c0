/**
 * `mcp-guard schema`: the JSON Schema of the config file, made from the same zod schemas that
 * validate it (src/config/schema.ts), so the two cannot disagree. Editors take it for completion
 * and checks as they type: the TOML files of this repository name it on their first line with
 * taplo's `#:schema` directive (Even Better TOML in VS Code, taplo's LSP). The committed copy,
 * mcp-guard.schema.json, is shipped in the package; a test fails when it is stale.
 *
 * It describes the file as written, before `${VAR}` references are replaced: a value that needs a
 * variable is a string in the file and is checked only by `mcp-guard validate`. Rules no JSON
 * Schema can say (a key the other transport needs, inheritance from [upstream], unique names)
 * are left to `validate` too.
 */
import * as z from 'zod';
import { configFileSchema } from '../config/schema.js';
import { GATEWAY_VERSION } from '../version.js';

export function configJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(configFileSchema, { io: 'input', unrepresentable: 'any', target: 'draft-7' }) as Record<string, unknown>;
  const { $schema, ...rest } = schema;
  return {
    $schema,
    title: 'MCP Guard configuration',
    description: `The config file of mcp-guard ${GATEWAY_VERSION} (TOML). Made by \`mcp-guard schema\` from the schemas that validate it; \`mcp-guard validate\` checks what a JSON Schema cannot.`,
    ...rest,
  };
}

/** What `mcp-guard schema` prints (and the committed file holds). */
export function configJsonSchemaText(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
}
