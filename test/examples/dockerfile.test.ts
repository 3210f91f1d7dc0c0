/**
 * The container image runs the example config it ships. Docker cannot run in this suite, so this
 * is a static check of the Dockerfile: the config the image copies is the one MCP_GUARD_CONFIG
 * names, and every stdio server in it starts from what the image holds: the command is in the
 * Node base image, each npm package it names survives `npm prune --omit=dev` (a dependency, or a
 * devDependency the build stage moves into the dependencies first), and each path it names is
 * copied in. (Verified by hand once: the same moves and prune on a copy of node_modules, then
 * `mcp-guard check-upstream` with the example config: both servers ok; without them, both exit 1.)
 */
import { readFileSync } from 'node:fs';
import { posix } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { stdioServer } from '../helpers/servers.js';

const root = (name: string) => readFileSync(new URL(`../../${name}`, import.meta.url), 'utf8');
const dockerfile = root('Dockerfile');
const pkg = JSON.parse(root('package.json')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };

/** The Dockerfile's stages: instructions with their continuation lines joined, comments dropped. */
function stages(): string[][] {
  const instructions = dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  const result: string[][] = [];
  for (const line of instructions) {
    if (/^FROM\s/i.test(line)) result.push([]);
    result.at(-1)?.push(line);
  }
  return result;
}

describe('Dockerfile', () => {
  const [build, image] = stages() as [string[], string[]];

  it('copies an example config to where MCP_GUARD_CONFIG points, and every server in it starts from the image', () => {
    const configPath = /^ENV\s+MCP_GUARD_CONFIG=(\S+)$/m.exec(image.join('\n'))?.[1];
    expect(configPath).toBeDefined();
    const copies = image.filter((line) => /^COPY\s/i.test(line)).map((line) => line.split(/\s+/).slice(1));
    const workdir = /^WORKDIR\s+(\S+)$/m.exec(image.join('\n'))?.[1] ?? '/';
    /** Where each COPY puts its source in the image, as an absolute path. */
    const copied = copies.filter((c) => !c[0]!.startsWith('--')).map(([source, target]) => ({ source: source!, target: posix.resolve(workdir, target!) }));
    const config = copied.find((c) => c.target === configPath);
    expect(config, `the image copies no file to ${configPath}`).toBeDefined();

    // The packages the image keeps: its dependencies, and the devDependencies the build stage
    // moves into them (ARG EXAMPLE_SERVERS, used before the prune).
    const buildText = build.join('\n');
    const moved = (/^ARG\s+EXAMPLE_SERVERS="([^"]*)"$/m.exec(buildText)?.[1] ?? '').split(/\s+/).filter(Boolean);
    const run = build.find((line) => line.includes('npm prune --omit=dev')) ?? '';
    if (moved.length > 0) expect(run.indexOf('$EXAMPLE_SERVERS')).toBeGreaterThan(-1);
    expect(run.indexOf('$EXAMPLE_SERVERS')).toBeLessThan(run.indexOf('npm prune --omit=dev'));
    const kept = new Set([...Object.keys(pkg.dependencies), ...moved.filter((name) => name in pkg.devDependencies)]);
    const inImage = (path: string) => copied.some((c) => path === c.target || path.startsWith(`${c.target}/`));

    const servers = parseConfig(root(config!.source), { env: {} }).servers;
    expect(servers.length).toBeGreaterThan(0);
    for (const server of servers.map(stdioServer)) {
      const args = server.args ?? [];
      // node and npx are in the Node base image; anything else would have to be installed.
      expect(['node', 'npx'], `${server.name}: command ${server.command}`).toContain(server.command);
      let rest = args;
      if (server.command === 'npx') {
        // --no-install: started from node_modules, never downloaded at start.
        expect(args, server.name).toContain('--no-install');
        const at = args.findIndex((a) => !a.startsWith('-'));
        const name = args[at]!.replace(/(.)@[^/]*$/, '$1'); // without a @version
        expect(kept.has(name), `${server.name}: ${name} is pruned from the image (a devDependency not in EXAMPLE_SERVERS)`).toBe(true);
        rest = args.slice(at + 1);
      }
      for (const arg of rest.filter((a) => a.startsWith('/') || a.startsWith('.'))) {
        expect(inImage(posix.resolve(workdir, arg)), `${server.name}: ${arg} is not copied into the image`).toBe(true);
      }
    }
  });
});
