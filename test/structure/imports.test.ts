/**
 * The structure docs/architecture.md draws, held against the code: the layers import only
 * downwards, and no source file imports one that imports it back (type-only imports included:
 * a cycle of types is still a knot a reader has to untie). Read from the sources' import
 * statements, so a new file is checked the moment it exists.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..', '..');
const SRC = join(ROOT, 'src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sources(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : [];
  });
}

/** Each source file (relative to src/) and the source files it imports. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sources(SRC)) {
    const text = readFileSync(file, 'utf8');
    const targets = new Set<string>();
    // `import … from './x.js'`, `export … from './x.js'`, `import('./x.js')`: relative ones only.
    for (const match of text.matchAll(/(?:from\s+|import\s*\(\s*)'(\.{1,2}\/[^']+)'/g)) {
      const target = resolve(dirname(file), match[1]!.replace(/\.js$/, '.ts'));
      targets.add(relative(SRC, target));
    }
    graph.set(relative(SRC, file), [...targets]);
  }
  return graph;
}

/** The cycles of the graph, each as the files along it (Tarjan's strongly connected components). */
function cycles(graph: Map<string, string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (node: string): void => {
    index.set(node, next);
    low.set(node, next++);
    stack.push(node);
    onStack.add(node);
    for (const to of graph.get(node) ?? []) {
      if (!graph.has(to)) continue;
      if (!index.has(to)) {
        visit(to);
        low.set(node, Math.min(low.get(node)!, low.get(to)!));
      } else if (onStack.has(to)) low.set(node, Math.min(low.get(node)!, index.get(to)!));
    }
    if (low.get(node) === index.get(node)) {
      const component: string[] = [];
      let member: string;
      do {
        member = stack.pop()!;
        onStack.delete(member);
        component.push(member);
      } while (member !== node);
      if (component.length > 1 || (graph.get(node) ?? []).includes(node)) found.push(component.sort());
    }
  };
  for (const node of graph.keys()) if (!index.has(node)) visit(node);
  return found;
}

/**
 * The layers, bottom first: a file may import its own layer and those below it. docs/architecture.md
 * draws the same picture.
 */
const LAYERS: readonly (readonly string[])[] = [
  // What everything may use: protocol constants, JSON-RPC, the error vocabularies, the logger.
  ['version.ts', 'delay.ts', 'error-message.ts', 'lru.ts', 'optional.ts', 'types/', 'jsonrpc/', 'protocol/', 'upstreams/errors.ts', 'observability/logger.ts'],
  ['config/', 'auth/', 'policy/', 'routing/', 'replicas/', 'http/errors.ts', 'http/origin-match.ts', 'http/client-address.ts', 'http/security-headers.ts'],
  // The transports.
  ['upstreams/'],
  // Virtual servers: one session over several members' sessions.
  ['virtual/'],
  // The MCP core and the era translation above the transports; what observes them; tool integrity.
  ['eras/', 'mcp/', 'observability/', 'integrity/'],
  // Downstream HTTP: authentication hooks, limits, health, CORS.
  ['http/', 'ratelimit/'],
  ['pipeline.ts'],
  ['app/', 'app.ts', 'cli/'],
  ['main.ts'],
];

function layerOf(file: string): number {
  let best = -1;
  let length = -1;
  LAYERS.forEach((members, layer) => {
    for (const member of members) {
      if ((file === member || (member.endsWith('/') && file.startsWith(member))) && member.length > length) {
        best = layer;
        length = member.length;
      }
    }
  });
  return best;
}

describe('the structure of src/', () => {
  const graph = importGraph();

  it('has no import cycle, type imports included', () => {
    expect(cycles(graph)).toEqual([]);
  });

  it('places every source file in a layer', () => {
    expect([...graph.keys()].filter((file) => layerOf(file) === -1)).toEqual([]);
  });

  it('imports only downwards: upstreams never reach the MCP core, the core never the pipeline or the app', () => {
    const upward: string[] = [];
    for (const [file, targets] of graph) {
      for (const target of targets) {
        if (graph.has(target) && layerOf(target) > layerOf(file)) upward.push(`${file} -> ${target}`);
      }
    }
    expect(upward).toEqual([]);
  });

  it('finds a cycle and an upward import when there is one (the checks can fail)', () => {
    const knot = new Map([
      ['a.ts', ['b.ts']],
      ['b.ts', ['c.ts']],
      ['c.ts', ['a.ts']],
      ['d.ts', []],
    ]);
    expect(cycles(knot)).toEqual([['a.ts', 'b.ts', 'c.ts']]);
    expect(layerOf('upstreams/http/body.ts')).toBeLessThan(layerOf('mcp/gateway.ts'));
    expect(layerOf('http/errors.ts')).toBeLessThan(layerOf('upstreams/era.ts'));
  });
});
