import { readFileSync } from 'node:fs';

/** The gateway's name as it introduces itself to upstream servers (clientInfo) and clients (serverInfo). */
export const GATEWAY_NAME = 'mcp-guard';

/** The package version, read once from package.json (dist/ and src/ both sit one level below it). */
export const GATEWAY_VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
