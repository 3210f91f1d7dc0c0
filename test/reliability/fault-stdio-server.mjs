/**
 * A stdio MCP server that misbehaves on request, for test/reliability/upstream-faults.test.ts.
 *
 *   node fault-stdio-server.mjs LOG_FILE MARKER [--crash-unless FILE] [--stubborn]
 *
 * Every message it receives is appended to LOG_FILE as one JSON line ({pid, method, id,
 * requestId, reason}: never the params, some are megabytes), so the test sees what reached it (a
 * notifications/cancelled, a call). MARKER only tags the process for the test's `ps`.
 * --crash-unless FILE: writes a reason to stderr and exits 3 at start while FILE does not exist.
 * --stubborn: ignores the end of stdin and SIGTERM (a grandchild that keeps the pipes).
 *
 * Tools (tools/call by name):
 *   echo {text}           answers "echo TEXT pid PID"
 *   hang                  never answers (but keeps reading: cancellations are logged)
 *   garbage               writes lines that are not JSON, JSON that is not JSON-RPC, invalid UTF-8
 *                         and a reply to no request, then answers "garbage survived"
 *   noise {mb}            writes MB megabytes without a newline, then a newline, then answers
 *   huge_answer {mb}      answers with a text of MB megabytes (the whole response on one line)
 *   big {bytes}           answers with a text of exactly BYTES characters ("0123456789" repeated)
 *   stop_reading          answers, then never reads stdin again (the pipe fills up)
 */
import { appendFileSync, existsSync } from 'node:fs';

const args = process.argv.slice(2);
const [logFile] = args;
const crashUnless = args.includes('--crash-unless') ? args[args.indexOf('--crash-unless') + 1] : undefined;
const stubborn = args.includes('--stubborn');

const log = (entry) => appendFileSync(logFile, `${JSON.stringify({ pid: process.pid, ...entry })}\n`);

if (crashUnless !== undefined && !existsSync(crashUnless)) {
  process.stderr.write(`fault-server: cannot start: ${crashUnless} is missing\n`);
  process.exit(3);
}
log({ event: 'start' });

const send = (message) => process.stdout.write(`${JSON.stringify(message)}\n`);
const answer = (id, text) => send({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text }] } });

const TOOLS = ['echo', 'hang', 'garbage', 'noise', 'huge_answer', 'big', 'stop_reading'].map((name) => ({ name, inputSchema: { type: 'object' } }));

function call(id, name, a) {
  switch (name) {
    case 'echo':
      return answer(id, `echo ${a.text ?? ''} pid ${process.pid}`);
    case 'hang':
      return;
    case 'garbage':
      process.stdout.write('this is not json\n');
      process.stdout.write('{"hello":"world"}\n');
      process.stdout.write('[1,2,3]\n');
      process.stdout.write(Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0x7b, 0x0a]));
      process.stdout.write(Buffer.concat([Buffer.from('{"jsonrpc":"2.0","id":'), Buffer.from([0xff]), Buffer.from('}\n')]));
      send({ jsonrpc: '2.0', id: 987654321, result: {} });
      send({ jsonrpc: '2.0', error: { code: -1 } });
      return answer(id, 'garbage survived');
    case 'noise': {
      const mb = Buffer.alloc(1024 * 1024, 'x');
      for (let i = 0; i < (a.mb ?? 50); i++) process.stdout.write(mb);
      process.stdout.write('\n');
      return answer(id, `noise done pid ${process.pid}`);
    }
    case 'huge_answer':
      return answer(id, 'y'.repeat((a.mb ?? 40) * 1024 * 1024));
    case 'big':
      return answer(id, '0123456789'.repeat(Math.ceil(a.bytes / 10)).slice(0, a.bytes));
    case 'stop_reading':
      answer(id, `not reading any more, pid ${process.pid}`);
      process.stdin.pause();
      process.stdin.removeAllListeners('data');
      // A paused stdin keeps nothing alive: stay, like a server stuck in its own work.
      setInterval(() => undefined, 1_000);
      return;
    default:
      return send({ jsonrpc: '2.0', id, error: { code: -32602, message: `unknown tool ${name}` } });
  }
}

function onMessage(m) {
  log({ event: 'received', method: m.method, id: m.id, requestId: m.params?.requestId, reason: m.params?.reason, tool: m.params?.name });
  if (m.method === undefined || m.id === undefined) return;
  switch (m.method) {
    case 'initialize':
      return send({
        jsonrpc: '2.0',
        id: m.id,
        result: { protocolVersion: '2025-06-18', capabilities: { tools: {} }, serverInfo: { name: 'fault-server', version: '1' } },
      });
    case 'tools/list':
      return send({ jsonrpc: '2.0', id: m.id, result: { tools: TOOLS } });
    case 'tools/call':
      return call(m.id, m.params?.name, m.params?.arguments ?? {});
    default:
      return send({ jsonrpc: '2.0', id: m.id, result: {} });
  }
}

let buffered = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  buffered += chunk;
  let nl;
  while ((nl = buffered.indexOf('\n')) !== -1) {
    const line = buffered.slice(0, nl);
    buffered = buffered.slice(nl + 1);
    if (line.trim() !== '') onMessage(JSON.parse(line));
  }
});
if (stubborn) {
  process.on('SIGTERM', () => undefined);
  setInterval(() => undefined, 1_000);
} else process.stdin.on('end', () => process.exit(0));
