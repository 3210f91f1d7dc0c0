/** Types of gen-request-schemas.mjs, for the test that checks the generated file is fresh. */
import type { SchemaTable } from '../src/mcp/request-check.js';

/** One era's table from the SDK module's ClientRequestSchema and ClientNotificationSchema. */
export function eraTable(types: unknown): SchemaTable;
/** The text of src/mcp/request-schemas.generated.ts, from the installed SDKs. */
export function generate(): Promise<string>;
