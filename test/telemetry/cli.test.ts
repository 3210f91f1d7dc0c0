/**
 * The built gateway (`node dist/main.js serve`) with the standard OpenTelemetry variables: spans
 * go to OTEL_EXPORTER_OTLP_ENDPOINT under OTEL_SERVICE_NAME, the last ones are exported when it
 * stops on SIGTERM, and `validate` names a bad variable without echoing it.
 */
import { describe, expect, it } from 'vitest';
import { CliProcess, NODE, q, runCli, trackProcesses, waitFor, writeConfig } from '../helpers/cli.js';
import { hex, KIND, startOtlpReceiver, traceparent } from './otlp-receiver.js';

const META_ECHO = new URL('../fixtures/meta-echo-stdio.mjs', import.meta.url).pathname;
const CONFIG = `[[upstream.servers]]\nname = "stdio"\npath_prefix = "/stdio"\ncommand = ${q(NODE)}\nargs = [${q(META_ECHO)}]\n`;

const { running } = trackProcesses();

describe('mcp-guard serve with OTEL_* variables', () => {
  it('exports to OTEL_EXPORTER_OTLP_ENDPOINT as OTEL_SERVICE_NAME, and flushes the last spans on SIGTERM', async () => {
    const receiver = await startOtlpReceiver();
    try {
      // The default batch delay (5 s) is longer than this test waits before stopping: the span arrives because the stop exports it.
      const gateway = new CliProcess(['serve', '-c', writeConfig(CONFIG), '--host', '127.0.0.1', '--port', '0'], {
        env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_SERVICE_NAME: 'guard-cli', OTEL_BSP_SCHEDULE_DELAY: '600000' },
      });
      running.push(gateway);
      const base = await gateway.address();
      const traceId = hex(16);
      const res = await fetch(`${base}/stdio`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', traceparent: traceparent(traceId, hex(8)) },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'meta', arguments: {} } }),
      });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { result: { content: Array<{ text: string }> } };
      expect(JSON.parse(body.result.content[0]!.text).traceparent).toContain(traceId);
      expect(receiver.spans).toEqual([]);
      gateway.signal('SIGTERM');
      expect((await gateway.waitExit(30_000)).code).toBe(0);
      await waitFor(() => receiver.spans.some((s) => s.traceId === traceId), 5_000, 'the span');
      const server = receiver.spans.find((s) => s.traceId === traceId && s.kind === KIND.SERVER);
      expect(server).toMatchObject({ name: 'tools/call meta', resource: { 'service.name': 'guard-cli' } });
    } finally {
      await receiver.stop();
    }
  });

  it('validate names a bad OTEL_EXPORTER_OTLP_ENDPOINT and never prints its value', async () => {
    const result = await runCli(['validate', '-c', writeConfig(CONFIG)], { env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://user:hunter2@collector:4318' } });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('OTEL_EXPORTER_OTLP_ENDPOINT: must not contain a user name or password');
    expect(result.stdout + result.stderr).not.toContain('hunter2');
  });
});
