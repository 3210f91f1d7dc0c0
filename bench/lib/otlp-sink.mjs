/**
 * A local OTLP/HTTP receiver for the `telemetry` scenario: takes what the gateway's exporter
 * POSTs to /v1/traces (OTLP JSON), counts the spans, and answers as a collector does. Run with
 * fork(); sends { port } over IPC once listening. GET /count answers { spans, exports }.
 */
import { createServer } from 'node:http';

let spans = 0;
let exports = 0;
const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/count') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ spans, exports }));
    return;
  }
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (chunk) => (body += chunk));
  req.on('end', () => {
    try {
      for (const rs of JSON.parse(body).resourceSpans ?? []) for (const ss of rs.scopeSpans ?? []) spans += (ss.spans ?? []).length;
      exports++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    } catch {
      res.writeHead(400).end();
    }
  });
});
server.listen(0, '127.0.0.1', () => process.send?.({ port: server.address().port }));
