/**
 * The shape of the generated schema tables (request-schemas.generated.ts): its own file, so that
 * the generated module and request-check.ts, which reads it, do not import each other.
 */

/** A JSON Schema as zod's toJSONSchema writes it (draft 2020-12). */
export type JsonSchema = { [keyword: string]: unknown };

export interface MethodSchema {
  /** True when the method's params may be left out. */
  optional: boolean;
  schema: JsonSchema;
}

/** One era's schemas, by method; `defs` holds the parts they share (`$ref: "#/$defs/..."`). */
export interface SchemaTable {
  requests: Record<string, MethodSchema>;
  notifications: Record<string, MethodSchema>;
  defs: Record<string, JsonSchema>;
}
