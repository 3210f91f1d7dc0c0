/**
 * Upstream fixtures of the reliability tests: tiny stdio MCP servers whose life is short on purpose.
 *
 * - the flapping server: a POSIX sh script (no subprocess: dash starts in about a millisecond, so a
 *   thousand crash/restart cycles fit in a test). It answers `initialize`, `tools/list` and
 *   `tools/call`; every call is answered with the server's pid, and the tool `answer_then_exit`
 *   exits (status 1) right after answering.
 * - the slow server: `node slow-server.mjs DELAY_MS MARKER [stubborn]`, whose tool `slow` answers after DELAY_MS, writing `call-started <n>`
 *   to stderr when a call arrives (the gateway logs each stderr line, so a test can see that a
 *   call reached the upstream) and `call-answered <n>` when it answers; it exits when its stdin
 *   ends, unless stubborn.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** The JSON-RPC id of a line the gateway wrote: the first `"id":` (the gateway puts id before params). */
const SH_ID = `id=\${line#*\\"id\\":}; id=\${id%%[,\\}]*}`;

const FLAPPING_SERVER = [
  'while IFS= read -r line; do',
  '  case "$line" in',
  `    *'"method":"initialize"'*) ${SH_ID}; printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"flapping","version":"1"}}}\\n' "$id" ;;`,
  `    *'"method":"tools/list"'*) ${SH_ID}; printf '{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"answer","inputSchema":{"type":"object"}},{"name":"answer_then_exit","inputSchema":{"type":"object"}}]}}\\n' "$id" ;;`,
  `    *'"method":"tools/call"'*) ${SH_ID}; printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"pid %s"}]}}\\n' "$id" "$$"; case "$line" in *'"name":"answer_then_exit"'*) exit 1 ;; esac ;;`,
  `    *'"id":'*) ${SH_ID}; printf '{"jsonrpc":"2.0","id":%s,"result":{}}\\n' "$id" ;;`,
  '  esac',
  'done',
].join('\n');

const SLOW_SERVER = `
const delayMs = Number(process.argv[2] ?? 1000);
let calls = 0;
const send = (m) => process.stdout.write(JSON.stringify(m) + '\\n');
let buffered = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  buffered += chunk;
  let nl;
  while ((nl = buffered.indexOf('\\n')) !== -1) {
    const line = buffered.slice(0, nl);
    buffered = buffered.slice(nl + 1);
    if (!line.trim()) continue;
    const msg = JSON.parse(line);
    if (msg.id === undefined || msg.method === undefined) continue;
    if (msg.method === 'initialize') {
      send({ jsonrpc: '2.0', id: msg.id, result: { protocolVersion: '2025-06-18', capabilities: { tools: {} }, serverInfo: { name: 'slow', version: '1' } } });
    } else if (msg.method === 'tools/list') {
      send({ jsonrpc: '2.0', id: msg.id, result: { tools: [{ name: 'slow', inputSchema: { type: 'object' } }] } });
    } else if (msg.method === 'tools/call') {
      const n = ++calls;
      const tag = String(msg.params?.arguments?.tag ?? n);
      process.stderr.write('call-started ' + tag + '\\n');
      setTimeout(() => {
        send({ jsonrpc: '2.0', id: msg.id, result: { content: [{ type: 'text', text: 'slow answer ' + tag }] } });
        process.stderr.write('call-answered ' + tag + '\\n');
      }, delayMs);
    } else {
      send({ jsonrpc: '2.0', id: msg.id, result: {} });
    }
  }
});
// A stubborn server (argv[4] = "stubborn") outlives the end of its stdin and ignores SIGTERM.
if (process.argv[4] === 'stubborn') {
  process.on('SIGTERM', () => {});
  setInterval(() => {}, 1000);
}
else process.stdin.on('end', () => process.exit(0));
`;

/** Writes the flapping server (run it as `sh PATH MARKER`) into dir and returns its path. */
export function writeFlappingServer(dir: string): string {
  const path = join(dir, 'flapping-server.sh');
  writeFileSync(path, `${FLAPPING_SERVER}\n`);
  return path;
}

/** Writes the slow server into dir and returns its path. */
export function writeSlowServer(dir: string): string {
  const path = join(dir, 'slow-server.mjs');
  writeFileSync(path, SLOW_SERVER);
  return path;
}

/**
 * A wrapper tree like `npx` -> `sh` -> `node`: `sh outer.sh MARKER` runs `sh inner.sh MARKER`, which
 * runs the slow server (holding the stdio pipes) without exec; the outer wrapper also starts a
 * background helper that holds none of the pipes (`bg-MARKER`). A stubborn server ignores the end
 * of its stdin and SIGTERM. Returns the outer script's path.
 */
export function writeWrapperTree(dir: string, node: string, delayMs: number, stubborn = false): string {
  const server = writeSlowServer(dir);
  const inner = join(dir, 'inner.sh');
  const outer = join(dir, 'outer.sh');
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  writeFileSync(inner, `${quote(node)} ${quote(server)} ${delayMs} "$1"${stubborn ? ' stubborn' : ''}\nexit $?\n`);
  writeFileSync(outer, `${quote(node)} -e 'setInterval(() => {}, 1000)' "bg-$1" </dev/null >/dev/null 2>&1 &\nsh ${quote(inner)} "$1"\nexit $?\n`);
  return outer;
}
