/**
 * Micro-benchmark of tool integrity (issue 21): what the check costs a tools/call, and what a
 * list costs per definition. Runs on the built gateway (dist/): `npm run build && node
 * bench/tool-integrity.mjs [--tools N] [--calls N]`.
 *
 *   call check   namedItem() + vet() in block mode for a pinned tool whose verdict is known: what
 *                stage 5 adds to every tools/call (target: at most 2 us). The median of 7 runs.
 *   list check   checkList() of one tools/list page of N tools, per tool: the canonical JSON and
 *                SHA-256 of each definition, computed once per listed definition, never per call.
 */
import { parseArgs } from 'node:util';
import { definitionOf } from '../dist/integrity/definitions.js';
import { ToolIntegrity } from '../dist/integrity/guard.js';
import { pinFor, serializePins, writePins } from '../dist/integrity/pin-file.js';
import { namedItem, vet } from '../dist/integrity/vet.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const { values } = parseArgs({ options: { tools: { type: 'string', default: '50' }, calls: { type: 'string', default: '2000000' } } });
const TOOLS = Number(values.tools);
const CALLS = Number(values.calls);

const tools = Array.from({ length: TOOLS }, (_, i) => ({
  name: `tool_${i}`,
  title: `Tool ${i}`,
  description: `Does thing number ${i}. `.repeat(8),
  inputSchema: { type: 'object', properties: { path: { type: 'string', description: 'A path' }, depth: { type: 'integer', minimum: 0 } }, required: ['path'] },
  annotations: { readOnlyHint: i % 2 === 0 },
}));

const dir = mkdtempSync(join(tmpdir(), 'mcp-guard-bench-integrity-'));
const pinFile = join(dir, 'pins.json');
await writePins(pinFile, new Map([['srv', { tools: new Map(tools.map((t) => [t.name, pinFor(definitionOf('tool', t))])), prompts: new Map() }]]));
const silent = { warn() {}, error() {}, info() {}, debug() {} };
const integrity = new ToolIntegrity({ definition() {} }, silent);
integrity.configureSync({ mode: 'block', pin_file: pinFile, trust_on_first_use: false });
const owner = (name) => ({ server: 'srv', name });
const listResponse = { jsonrpc: '2.0', id: 1, result: { tools } };

function median(list) {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

// List check, per tool (fresh objects each time, as a parsed answer is).
const listRuns = [];
for (let run = 0; run < 7; run++) {
  const pages = 200;
  const copies = Array.from({ length: pages }, () => JSON.parse(JSON.stringify(listResponse)));
  const started = process.hrtime.bigint();
  for (const page of copies) integrity.checkList('tool', page, owner);
  listRuns.push(Number(process.hrtime.bigint() - started) / (pages * TOOLS));
}

// Call check.
const call = { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: `tool_${TOOLS >> 1}`, arguments: { path: '/tmp' } } };
const forward = () => {
  throw new Error('a known verdict must not list');
};
let refused = 0;
const callRuns = [];
for (let run = 0; run < 7; run++) {
  const started = process.hrtime.bigint();
  for (let i = 0; i < CALLS; i++) {
    const item = namedItem(call);
    if (vet(integrity, item.kind, 'srv', item.name, call, forward, owner) !== undefined) refused++;
  }
  callRuns.push(Number(process.hrtime.bigint() - started) / CALLS);
}
if (refused > 0) throw new Error('a pinned tool was refused');
rmSync(dir, { recursive: true, force: true });

const result = {
  tools: TOOLS,
  call_check_ns: Math.round(median(callRuns)),
  list_check_ns_per_tool: Math.round(median(listRuns)),
  pin_file_bytes: serializePins(new Map([['srv', { tools: new Map(tools.map((t) => [t.name, pinFor(definitionOf('tool', t))])), prompts: new Map() }]])).length,
  node: process.version,
};
console.log(JSON.stringify(result, null, 2));
console.log(
  `call check: ${(result.call_check_ns / 1000).toFixed(3)} us per tools/call (target <= 2 us); list check: ${(result.list_check_ns_per_tool / 1000).toFixed(1)} us per listed tool`,
);
