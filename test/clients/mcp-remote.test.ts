/**
 * mcp-remote as a real client of the gateway (issue 17: "an independent suite with ... mcp-remote
 * and both SDK clients"): mcp-remote bridges stdio to the gateway's URL, the way a desktop client
 * that only speaks stdio reaches a remote server, and each official SDK client (v1
 * `@modelcontextprotocol/sdk`, v2 `@modelcontextprotocol/client`) starts it as its stdio server and
 * speaks to server-everything behind the gateway through it, with an API key.
 *
 * The key goes in a header file (`--header-file`), not in the arguments: any user can read those
 * from the process list. mcp-remote keeps its state in MCP_REMOTE_CONFIG_DIR, a temp dir here.
 * `--transport http-only`: the gateway speaks streamable HTTP; no SSE fallback hides a failure.
 * Each mcp-remote carries this file's marker (as an `--ignore-tool` pattern no tool matches), so
 * that nothing of it is left behind; every step is bounded in time.
 */
import { Client as ClientV2 } from '@modelcontextprotocol/client';
import { StdioClientTransport as StdioClientTransportV2 } from '@modelcontextprotocol/client/stdio';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generateApiKey, hashApiKey } from '../../src/auth/key-format.js';
import { cleanupTempDirs, leftovers, marker, ROOT, tempDir } from '../helpers/cli.js';
import { everythingStdio, NODE, q, startGateway, type RunningGateway } from '../helpers/gateway.js';
import { secretHeaders } from '../helpers/secret-scan.js';

const MCP_REMOTE = join(ROOT, 'node_modules', 'mcp-remote', 'dist', 'proxy.js');

const m = marker('mcp-remote');
let gateway: RunningGateway | undefined;
let headerFile = '';
let configDir = '';
const closers: Array<() => Promise<void>> = [];

/** How mcp-remote is started: against the gateway's URL for server-everything, with the key from the file. */
function remoteServer(): { command: string; args: string[]; env: Record<string, string> } {
  return {
    command: NODE,
    args: [MCP_REMOTE, `${gateway!.url}/mcp/everything`, '--header-file', headerFile, '--transport', 'http-only', '--ignore-tool', m],
    env: { PATH: process.env['PATH'] ?? '', HOME: configDir, MCP_REMOTE_CONFIG_DIR: configDir },
  };
}

/** Bounds a promise: a client that hangs fails the test instead. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

beforeAll(async () => {
  const { key, prefix } = generateApiKey();
  secretHeaders({ authorization: `Bearer ${key}` }, 'the API key mcp-remote sends');
  const dir = tempDir();
  configDir = join(dir, 'mcp-auth');
  headerFile = join(dir, 'headers');
  writeFileSync(headerFile, `# the gateway's API key\nAuthorization: Bearer ${key}\n`, { mode: 0o600 });
  gateway = await startGateway(
    `[[auth.api_keys]]\nid = "mcp-remote"\nkey_prefix = ${q(prefix)}\nkey_hash = ${q(await hashApiKey(key))}\n\n${everythingStdio('everything')}`,
  );
}, 60_000);

afterEach(async () => {
  // A failed test must not leave its client (and so its mcp-remote) running.
  await Promise.all(closers.splice(0).map((close) => close().catch(() => undefined)));
});

afterAll(async () => {
  await gateway?.stop();
  const left = await leftovers(m, 5_000);
  cleanupTempDirs();
  expect(left.map((p) => p.args)).toEqual([]);
}, 30_000);

describe("mcp-remote (stdio to the gateway's URL) with each official SDK client", () => {
  it('the v1 SDK client lists and calls tools of server-everything through mcp-remote and the gateway', async () => {
    const client = new Client({ name: 'mcp-remote-test', version: '1.0.0' });
    const transport = new StdioClientTransport({ ...remoteServer(), stderr: 'pipe' });
    closers.push(() => client.close());
    await within(client.connect(transport), 60_000, 'connecting through mcp-remote');
    const { tools } = await within(client.listTools(), 30_000, 'tools/list');
    expect(tools.map((t) => t.name)).toEqual(expect.arrayContaining(['echo', 'get-sum']));
    const answer = await within(client.callTool({ name: 'get-sum', arguments: { a: 2, b: 3 } }), 30_000, 'tools/call');
    expect(JSON.stringify(answer.content)).toContain('5');
  });

  it('the v2 SDK client does the same', async () => {
    const client = new ClientV2({ name: 'mcp-remote-test-v2', version: '1.0.0' });
    const transport = new StdioClientTransportV2({ ...remoteServer(), stderr: 'pipe' });
    closers.push(() => client.close());
    await within(client.connect(transport), 60_000, 'connecting through mcp-remote');
    const { tools } = await within(client.listTools(), 30_000, 'tools/list');
    expect(tools.map((t) => t.name)).toEqual(expect.arrayContaining(['echo', 'get-sum']));
    const answer = await within(client.callTool({ name: 'echo', arguments: { message: 'over stdio' } }), 30_000, 'tools/call');
    expect(answer.content).toEqual([{ type: 'text', text: 'Echo: over stdio' }]);
  });
});
