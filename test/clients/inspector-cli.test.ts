/**
 * The MCP Inspector's command-line mode as a real client of the gateway (issue 17: "an independent
 * suite with ... MCP Inspector CLI"): it lists the tools of server-everything through a gateway
 * that requires an API key, and calls one, over streamable HTTP with `Authorization: Bearer`.
 *
 * The documented form is `npx @modelcontextprotocol/inspector --cli URL --method ...`; the package
 * that does it without a browser is @modelcontextprotocol/inspector-cli (a devDependency): its
 * launcher, build/cli.js (bin `mcp-inspector-cli`), runs build/index.js with `--cli`. Version 1.0.3
 * finds its own package.json relative to the working directory (`fs.existsSync('../package.json')`)
 * and imports it relative to the module, so it runs with its build/ directory as working directory.
 *
 * Every run is bounded in time and ends by pid; the runs carry this file's marker (as a
 * `--metadata` pair) so that nothing of them is left behind.
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateApiKey, hashApiKey } from '../../src/auth/key-format.js';
import { cleanupTempDirs, leftovers, marker, ROOT } from '../helpers/cli.js';
import { everythingStdio, NODE, q, startGateway, type RunningGateway } from '../helpers/gateway.js';
import { secretHeaders } from '../helpers/secret-scan.js';

const INSPECTOR = join(ROOT, 'node_modules', '@modelcontextprotocol', 'inspector-cli', 'build', 'cli.js');
/** One inspector run: connect, one request, exit. Seconds; the bound is for one that hangs. */
const RUN_TIMEOUT_MS = 60_000;

const m = marker('inspector-cli');
let gateway: RunningGateway | undefined;
let key = '';

/** Runs the inspector in CLI mode with `args`; resolves with its exit code and output. */
function inspect(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(NODE, [INSPECTOR, '--cli', ...args, '--metadata', `run=${m}`], { cwd: dirname(INSPECTOR), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the inspector did not finish within ${RUN_TIMEOUT_MS} ms:\n${stdout}${stderr}`));
    }, RUN_TIMEOUT_MS);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

beforeAll(async () => {
  const generated = generateApiKey();
  key = generated.key;
  secretHeaders({ authorization: `Bearer ${key}` }, 'the API key the inspector sends');
  gateway = await startGateway(
    `[[auth.api_keys]]\nid = "inspector"\nkey_prefix = ${q(generated.prefix)}\nkey_hash = ${q(await hashApiKey(key))}\n\n${everythingStdio('everything')}`,
  );
}, 60_000);

afterAll(async () => {
  await gateway?.stop();
  const left = await leftovers(m, 3_000);
  cleanupTempDirs();
  expect(left.map((p) => p.args)).toEqual([]);
}, 30_000);

describe('MCP Inspector CLI (@modelcontextprotocol/inspector-cli 1.0.3) through the gateway', () => {
  const target = (): string[] => [`${gateway!.url}/mcp/everything`, '--transport', 'http', '--header', `Authorization: Bearer ${key}`];

  it('lists the tools of server-everything with an API key', async () => {
    const run = await inspect([...target(), '--method', 'tools/list']);
    expect(run.code, run.stderr).toBe(0);
    const listed = JSON.parse(run.stdout) as { tools: Array<{ name: string }> };
    expect(listed.tools.map((t) => t.name)).toEqual(expect.arrayContaining(['echo', 'get-sum']));
  });

  it('calls a tool with an API key', async () => {
    const run = await inspect([...target(), '--method', 'tools/call', '--tool-name', 'echo', '--tool-arg', 'message=through the gateway']);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual({ content: [{ type: 'text', text: 'Echo: through the gateway' }] });
  });

  it('is refused without the key (401), and says so', async () => {
    const run = await inspect([`${gateway!.url}/mcp/everything`, '--transport', 'http', '--method', 'tools/list']);
    expect(run.code).not.toBe(0);
    expect(run.stdout + run.stderr).toMatch(/401|Unauthorized|authenticat/i);
  });
});
