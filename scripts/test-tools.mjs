#!/usr/bin/env node
/**
 * `npm test` runs this first: the tests need two programs that npm cannot install, a real
 * `redis-server` (shared rate limits) and `promtool` (the Prometheus text-format parser that checks
 * /metrics). When one is missing and this is a Debian/Ubuntu machine where we are root, they are
 * installed with apt-get (packages redis-server and prometheus); otherwise the run stops here with
 * the command to run.
 */
import { spawnSync } from 'node:child_process';

const TOOLS = [
  { command: 'redis-server', args: ['--version'], pkg: 'redis-server' },
  { command: 'promtool', args: ['--version'], pkg: 'prometheus' },
];

const present = (tool) => {
  const probe = spawnSync(tool.command, tool.args, { stdio: 'ignore' });
  return !probe.error && probe.status === 0;
};

const missing = TOOLS.filter((tool) => !present(tool));
if (missing.length === 0) process.exit(0);

const packages = missing.map((tool) => tool.pkg);
const hasApt = spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status === 0;
if (!hasApt || process.getuid?.() !== 0) {
  console.error(`The tests need ${missing.map((t) => t.command).join(' and ')}. Install them first, e.g.:\n  sudo apt-get install -y ${packages.join(' ')}`);
  process.exit(1);
}
console.error(`Installing ${packages.join(', ')} for the tests (apt-get)...`);
const run = (args) => spawnSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
if (run(['install', '-y', '--no-install-recommends', ...packages]).status !== 0) {
  run(['update']);
  if (run(['install', '-y', '--no-install-recommends', ...packages]).status !== 0) process.exit(1);
}
const still = missing.filter((tool) => !present(tool));
if (still.length > 0) {
  console.error(`still missing after apt-get: ${still.map((t) => t.command).join(', ')}`);
  process.exit(1);
}
