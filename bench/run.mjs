/**
 * `npm run bench`: runs the selected scenarios, prints a table and writes
 * bench/results/<date>.json with the machine it ran on. Every figure is a median of several short
 * runs, reported as a ratio against a baseline measured in the same run (shared machines are
 * noisy; absolute numbers are only comparable within one run).
 *
 *   npm run bench -- [--scenarios all | http,stdio,scale,auth,memory,isolation,observability,eras,gc,virtual,reload,sealed,telemetry] [--duration SECONDS] [--rounds N] [--connections N]
 *
 * Without --scenarios it runs the ones the targets are measured by (DEFAULT: about 5 minutes on 2
 * cores); `all` adds what recording costs (observability), the two MCP eras (eras), the GC guard
 * (gc), what stdio isolation costs (isolation: a child per identity against one shared child) and
 * what a virtual server costs (virtual: a merged tools/list and a routed tools/call, issue 18) and
 * what a config reload costs (reload: calls failed across 100 reloads under load, the event loop
 * blocked by the reload of a 1,000-server config, issue 20).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT, stopChildren } from './lib/harness.mjs';

const SCENARIOS = {
  http: () => import('./scenarios/http.mjs'),
  stdio: () => import('./scenarios/stdio.mjs'),
  scale: () => import('./scenarios/scale.mjs'),
  auth: () => import('./scenarios/auth.mjs'),
  observability: () => import('./scenarios/observability.mjs'),
  memory: () => import('./scenarios/memory.mjs'),
  eras: () => import('./scenarios/eras.mjs'),
  gc: () => import('./scenarios/gc.mjs'),
  isolation: () => import('./scenarios/isolation.mjs'),
  virtual: () => import('./scenarios/virtual.mjs'),
  reload: () => import('./scenarios/reload.mjs'),
  sealed: () => import('./scenarios/sealed.mjs'),
  telemetry: () => import('./scenarios/telemetry.mjs'),
};

const DEFAULT = ['http', 'stdio', 'scale', 'auth', 'memory'];

const { values } = parseArgs({
  options: {
    scenarios: { type: 'string', default: DEFAULT.join(',') },
    // The defaults keep a full run within about 5 minutes on 2 cores; more rounds, steadier medians.
    duration: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '20' },
  },
});
const settings = { durationSecs: Number(values.duration), rounds: Number(values.rounds), connections: Number(values.connections) };
const selected =
  values.scenarios === 'all'
    ? Object.keys(SCENARIOS)
    : values.scenarios
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
for (const name of selected) if (!SCENARIOS[name]) throw new Error(`unknown scenario ${name} (known: ${Object.keys(SCENARIOS).join(', ')})`);

const machine = {
  cores: cpus().length,
  cpu: cpus()[0]?.model,
  memory_gib: Math.round(totalmem() / 2 ** 30),
  node: process.version,
  platform: process.platform,
};
console.log(
  `mcp-guard bench: ${selected.join(', ')} | ${machine.cores} cores, Node ${machine.node} | ${settings.rounds} rounds of ${settings.durationSecs} s, ${settings.connections} connections`,
);

const rows = [];
try {
  for (const name of selected) {
    const scenario = await SCENARIOS[name]();
    rows.push(...(await scenario.run(settings)));
  }
} finally {
  stopChildren();
}

// One table per scenario, with only the columns it fills (the JSON has everything).
for (const name of selected) {
  const own = rows.filter((row) => row.scenario === name).map(({ scenario, rounds, cpu_rounds, details, ...row }) => row);
  const columns = [...new Set(own.flatMap((row) => Object.keys(row).filter((key) => row[key] !== undefined && row[key] !== null)))];
  console.log(`\n${name}`);
  console.table(own, columns);
}
const date = new Date().toISOString();
const dir = join(ROOT, 'bench/results');
mkdirSync(dir, { recursive: true });
const file = join(dir, `${date.slice(0, 10)}.json`);
writeFileSync(file, `${JSON.stringify({ date, machine, settings, results: rows }, null, 2)}\n`);
console.log(`written: ${file}`);
process.exit(0);
