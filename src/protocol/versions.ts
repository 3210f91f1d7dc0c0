/**
 * The MCP protocol versions the gateway speaks, both eras, as constants of its own: the bottom
 * layer, below the MCP core (src/mcp/), the era translation (src/eras/) and the transports
 * (src/upstreams/), which all read them. They equal the official
 * SDK's (a test compares them); importing them from `@modelcontextprotocol/sdk/types.js` would load
 * the SDK's several hundred zod schemas into every gateway process for two constants: about 17 MB
 * of memory and 120 ms of start-up, measured.
 */
/** The newest version: what the gateway offers an upstream it initializes itself. */
export const LATEST_PROTOCOL_VERSION = '2025-11-25';

/** Every version a client or upstream may use, newest first. */
export const SUPPORTED_PROTOCOL_VERSIONS: readonly string[] = ['2025-11-25', '2025-06-18', '2025-03-26', '2024-11-05', '2024-10-07'];

/** The modern protocol versions the gateway speaks, newest first. */
export const MODERN_PROTOCOL_VERSIONS: readonly string[] = ['2026-07-28'];
export const MODERN_PROTOCOL_VERSION = '2026-07-28';
