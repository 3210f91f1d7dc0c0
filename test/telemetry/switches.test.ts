/**
 * When traces are sent and when not (docs/telemetry.md): nothing at all with telemetry off (no
 * endpoint, or `enabled = false`) even with a receiver listening; on with the standard
 * OTEL_EXPORTER_OTLP_ENDPOINT; and a receiver that is down never fails a request or the stop.
 */
import { createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { curlPost, NODE, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { startRecordingUpstream } from '../helpers/recording-upstream.js';
import { hex, KIND, parseTraceparent, startOtlpReceiver, traceparent, type OtlpReceiver } from './otlp-receiver.js';

const META_ECHO = new URL('../fixtures/meta-echo-stdio.mjs', import.meta.url).pathname;
const SERVER = `[[upstream.servers]]\nname = "stdio"\npath_prefix = "/stdio"\ncommand = ${q(NODE)}\nargs = [${q(META_ECHO)}]\n`;

const running: Array<{ stop(): Promise<void> }> = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop()));
});

async function receiver(): Promise<OtlpReceiver> {
  const started = await startOtlpReceiver();
  running.push(started);
  return started;
}

async function gateway(toml: string, env: Record<string, string> = {}): Promise<RunningGateway> {
  const started = await startGateway(toml, { env });
  running.push(started);
  return started;
}

/** A tools/call of the echo tool with a client trace context; gives the `_meta` the upstream got. */
async function callMeta(gw: RunningGateway, traceId = hex(16)): Promise<Record<string, unknown>> {
  const res = await curlPost(
    `${gw.url}/stdio`,
    { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'meta', arguments: {}, _meta: { traceparent: traceparent(traceId, hex(8)), custom: 1 } } },
    {},
  );
  expect(res.status).toBe(200);
  return JSON.parse(res.json.result.content[0].text) as Record<string, unknown>;
}

/** A port nothing listens on (taken, then freed). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('telemetry switches', () => {
  it("off (no endpoint): no tracing, nothing sent to a listening receiver, the client's _meta passed on untouched", async () => {
    const otlp = await receiver();
    // The receiver's address is known to the config, just not as an endpoint.
    const gw = await gateway(`${SERVER}[telemetry]\nservice_name = ${q(otlp.url)}\n`);
    expect(gw.app.services.tracing).toBeUndefined();
    const traceId = hex(16);
    const meta = await callMeta(gw, traceId);
    expect(parseTraceparent(meta['traceparent']).traceId).toBe(traceId);
    expect(meta['custom']).toBe(1);
    await gw.stop();
    expect(otlp.requests).toEqual([]);
  });

  it("off: an HTTP upstream gets the client's own valid _meta traceparent as its header too, and a forged one in neither form changed", async () => {
    const upstream = await startRecordingUpstream('http');
    running.push(upstream);
    const gw = await gateway(`[[upstream.servers]]\nname = "http"\npath_prefix = "/http"\nurl = ${q(upstream.url)}\n`);
    const post = (id: number, meta: Record<string, unknown>, headers: Record<string, string> = {}) =>
      curlPost(`${gw.url}/http`, { jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'recorded', arguments: {}, _meta: meta } }, headers);
    const valid = traceparent(hex(16), hex(8));
    expect((await post(1, { traceparent: valid, tracestate: 'a=1' }, { traceparent: traceparent(hex(16), hex(8)) })).status).toBe(200);
    expect((await post(2, { traceparent: 'forged\r\nx-injected: 1' })).status).toBe(200);
    const [first, second] = upstream.requests.filter((r) => r.tool === 'recorded');
    expect(first!.headers).toMatchObject({ traceparent: valid, tracestate: 'a=1' });
    expect(first!.meta).toMatchObject({ traceparent: valid, tracestate: 'a=1' });
    expect(second!.headers['traceparent']).toBeUndefined();
    expect(second!.headers['x-injected']).toBeUndefined();
    expect(second!.meta?.['traceparent']).toBe('forged\r\nx-injected: 1');
  });

  it('off with enabled = false, even with an endpoint and OTEL_EXPORTER_OTLP_ENDPOINT: nothing sent', async () => {
    const otlp = await receiver();
    const gw = await gateway(`${SERVER}[telemetry]\nenabled = false\notlp_endpoint = ${q(otlp.url)}\n`, { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url });
    await callMeta(gw);
    await gw.stop();
    expect(otlp.requests).toEqual([]);
  });

  it('on with OTEL_EXPORTER_OTLP_ENDPOINT alone (no [telemetry] table): spans reach /v1/traces as OTLP JSON', async () => {
    const otlp = await receiver();
    const gw = await gateway(SERVER, { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_SERVICE_NAME: 'from-env' });
    const traceId = hex(16);
    await callMeta(gw, traceId);
    await gw.app.services.tracing!.flush();
    const server = otlp.spans.find((s) => s.traceId === traceId && s.kind === KIND.SERVER);
    expect(server).toMatchObject({ name: 'tools/call meta', resource: { 'service.name': 'from-env' } });
    expect(otlp.requests.every((r) => r.method === 'POST' && r.url === '/v1/traces' && String(r.headers['content-type']).startsWith('application/json'))).toBe(
      true,
    );
  });

  it('a receiver that is down: every request is still served, the failure is logged (not per request), and the gateway stops', async () => {
    const port = await closedPort();
    const started = Date.now();
    const gw = await gateway(`${SERVER}[telemetry]\notlp_endpoint = "http://127.0.0.1:${port}"\n`);
    for (let i = 0; i < 20; i++) {
      const meta = await callMeta(gw);
      expect(() => parseTraceparent(meta['traceparent'])).not.toThrow();
    }
    await gw.app.services.tracing!.flush();
    await waitFor(() => gw.logs.some((l) => l.includes('telemetry: spans could not be exported')), 10_000, 'the export warning');
    // Not per request: at most one warning per 10 s window (src/observability/logger.ts RateLimitedWarning),
    // however long this took on a busy machine.
    const windows = Math.ceil((Date.now() - started) / 10_000) + 1;
    expect(gw.logs.filter((l) => l.includes('telemetry: spans could not be exported')).length).toBeLessThanOrEqual(windows);
    await gw.stop();
  });
});
