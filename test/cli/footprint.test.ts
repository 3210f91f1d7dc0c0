/**
 * What a running gateway loads. Idle memory is mostly the code of the libraries loaded
 * (docs/performance.md, `memory`), so the ones a configuration does not use must stay unloaded:
 * the whole of undici (the gateway uses its Agent only), Fastify's schema compilers (no route has a
 * schema), the config validator (zod, run in a child process at start-up: src/config/load-isolated.ts),
 * and the packages of features that are off (rate limits, Redis, API key hashing, pretty logs,
 * the OpenTelemetry SDK). A
 * dependency that starts loading one of them again fails here, not in a benchmark.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupTempDirs, CliProcess, ensureBuilt, NODE, q, ROOT, tempDir, waitFor, writeConfig } from '../helpers/cli.js';

const PRELOAD = join(ROOT, 'test/fixtures/loaded-modules.cjs');
const INSTANT_STDIO = join(ROOT, 'bench/lib/instant-stdio-upstream.mjs');

let gateway: CliProcess | undefined;

beforeAll(ensureBuilt);
afterAll(async () => {
  await gateway?.kill();
  cleanupTempDirs();
});

/** The packages (node_modules/<name>/...) the running gateway has loaded, by package and file. */
async function loadedFiles(process: CliProcess, out: string): Promise<string[]> {
  process.child.kill('SIGUSR2');
  await waitFor(() => existsSync(out), 5_000, 'the preload to write the loaded modules');
  return readFileSync(out, 'utf8').split('\n');
}

describe('footprint', () => {
  it('a gateway with an HTTP and a stdio server, nothing else on, loads no code it does not use', async () => {
    const out = join(tempDir(), 'loaded.txt');
    const config = writeConfig(
      [
        `[[upstream.servers]]\nname = "stdio"\npath_prefix = "/stdio"\ntransport = "stdio"\ncommand = ${q(NODE)}\nargs = [${q(INSTANT_STDIO)}]\n`,
        `[[upstream.servers]]\nname = "http"\npath_prefix = "/http"\nurl = "http://127.0.0.1:9/mcp"\n`,
      ].join('\n'),
    );
    gateway = new CliProcess(['serve', '-c', config, '--host', '127.0.0.1', '--port', '0'], {
      env: { NODE_OPTIONS: `--require ${PRELOAD}`, LOADED_MODULES_OUT: out },
    });
    const base = await gateway.address();
    const call = await fetch(`${base}/mcp/stdio`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    expect(call.status).toBe(200);
    await call.text();
    const files = await loadedFiles(gateway, out);
    const inPackage = (name: string) => files.filter((f) => f.includes(`/node_modules/${name}/`));
    // The check means something: the packages the gateway does use are seen.
    expect(inPackage('fastify').length).toBeGreaterThan(0);
    expect(inPackage('undici').some((f) => f.endsWith('/lib/dispatcher/agent.js'))).toBe(true);
    // undici's index (fetch, WebSocket, caches, mocks) is not loaded, only the Agent's part.
    expect(inPackage('undici').filter((f) => f.endsWith('/undici/index.js') || f.includes('/lib/web/'))).toEqual([]);
    // Fastify's precompiled error serializer takes two small files of fast-json-stringify; its compiler stays out.
    expect(inPackage('fast-json-stringify').filter((f) => f.endsWith('/fast-json-stringify/index.js'))).toEqual([]);
    // The config was validated (the gateway serves it) in a child process, whose zod went with it.
    expect(files).not.toContain('esm:zod');
    for (const unused of [
      'ajv',
      '@fastify/ajv-compiler',
      '@fastify/fast-json-stringify-compiler',
      '@fastify/rate-limit',
      'ioredis',
      'argon2',
      'pino-pretty',
      '@modelcontextprotocol/sdk',
      // The AWS SDK is loaded only with [audit.s3] (src/observability/audit/s3-archive.ts).
      '@aws-sdk/client-s3',
      '@aws-sdk/lib-storage',
      // Telemetry is off: the OpenTelemetry SDK is imported only when it is on (src/observability/tracing/).
      // (@opentelemetry/api is not listed: prom-client loads it for exemplars whenever it is installed.)
      '@opentelemetry/sdk-trace-base',
      '@opentelemetry/sdk-trace',
      '@opentelemetry/exporter-trace-otlp-http',
      '@opentelemetry/otlp-exporter-base',
      '@opentelemetry/otlp-transformer',
      '@opentelemetry/resources',
    ]) {
      expect(inPackage(unused), unused).toEqual([]);
    }
  });

  it('the preload does see zod when a process loads it (the check above can fail)', async () => {
    const out = join(tempDir(), 'loaded.txt');
    const code = `import('zod').then(() => { process.kill(process.pid, 'SIGUSR2'); setTimeout(() => {}, 100); })`;
    const child = spawn(NODE, ['--require', PRELOAD, '-e', code], { cwd: ROOT, env: { ...process.env, LOADED_MODULES_OUT: out }, stdio: 'ignore' });
    await once(child, 'exit');
    expect(readFileSync(out, 'utf8').split('\n')).toContain('esm:zod');
  });
});
