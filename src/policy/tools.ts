/**
 * Which tools an identity may see and call: pure functions over tool names, built once from the
 * config (API keys) or once per scope (JWT), so that a request only pays for a Set lookup or one
 * precompiled regular expression.
 */
import type { JsonRpcRequest, JsonRpcResponse } from '../jsonrpc/messages.js';

/** Turns `read_*` / `get_?` into an anchored regular expression source. */
function globSource(glob: string): string {
  let source = '';
  for (const char of glob) {
    if (char === '*') source += '.*';
    else if (char === '?') source += '.';
    else source += char.replace(/[.+^${}()|[\]\\/-]/g, '\\$&');
  }
  return source;
}

/**
 * A pattern qualified by a server, `filesystem:read_*`: applies to that server's tools only (on
 * its own route and inside virtual servers). The part before the first ":" is the server's name.
 */
const QUALIFIED = /^([A-Za-z0-9_-]{1,64}):(.+)$/s;

/**
 * A set of allowed tools: everything, nothing, or names and globs, each for every server or
 * qualified by one (`"filesystem:read_*"`).
 */
export class ToolPolicy {
  /** Every tool. */
  static readonly ALL = new ToolPolicy(true, new Set(), undefined, undefined);
  /** No tool at all. */
  static readonly NONE = new ToolPolicy(false, new Set(), undefined, undefined);

  private constructor(
    /** True when every tool of every server is allowed. */
    readonly all: boolean,
    private readonly names: ReadonlySet<string>,
    private readonly pattern: RegExp | undefined,
    /** The qualified patterns, per server; undefined when there are none. */
    private readonly byServer: ReadonlyMap<string, ToolPolicy> | undefined,
  ) {}

  /**
   * From `allowed_tools`: absent or empty = every tool (as in the earlier gateway); `"*"` also
   * means every tool; other entries are exact names or globs (`*` any run, `?` one character),
   * optionally qualified by a server (`"server:glob"`).
   */
  static fromPatterns(patterns: readonly string[] | undefined): ToolPolicy {
    if (patterns === undefined || patterns.length === 0) return ToolPolicy.ALL;
    return ToolPolicy.compile(patterns);
  }

  /**
   * From JWT scopes and `scope_tool_mapping`: no mapping = every tool; otherwise the union of the
   * tools of the scopes the token has, every tool if one of them maps to "*", none if the token
   * has no mapped scope.
   */
  static fromScopes(scopes: readonly string[], mapping: ScopeToolMapping | undefined): ToolPolicy {
    if (mapping === undefined) return ToolPolicy.ALL;
    const patterns: string[] = [];
    for (const scope of scopes) {
      if (!Object.hasOwn(mapping, scope)) continue;
      patterns.push(...(mapping[scope] ?? []));
    }
    return patterns.length === 0 ? ToolPolicy.NONE : ToolPolicy.compile(patterns);
  }

  private static compile(patterns: readonly string[]): ToolPolicy {
    if (patterns.includes('*')) return ToolPolicy.ALL;
    const plain: string[] = [];
    const qualified = new Map<string, string[]>();
    for (const p of patterns) {
      const match = QUALIFIED.exec(p);
      if (!match) plain.push(p);
      else {
        const list = qualified.get(match[1]!) ?? [];
        list.push(match[2]!);
        qualified.set(match[1]!, list);
      }
    }
    const byServer = qualified.size === 0 ? undefined : new Map([...qualified].map(([server, list]) => [server, ToolPolicy.compile(list)]));
    const names = new Set<string>();
    const globs: string[] = [];
    for (const p of plain) {
      if (p.includes('*') || p.includes('?')) globs.push(globSource(p));
      else names.add(p);
    }
    return new ToolPolicy(false, names, globs.length > 0 ? new RegExp(`^(?:${globs.join('|')})$`, 's') : undefined, byServer);
  }

  /**
   * Whether `tool` (its own name, as its server knows it) of `server` may be listed and called.
   * Without a server only the unqualified patterns apply.
   */
  allows(tool: string, server?: string): boolean {
    if (this.all || this.names.has(tool) || (this.pattern?.test(tool) ?? false)) return true;
    if (server === undefined || this.byServer === undefined) return false;
    return this.byServer.get(server)?.allows(tool) ?? false;
  }
}

/** `[auth.jwt.scope_tool_mapping]`: scope -> tool names or globs. */
export type ScopeToolMapping = Readonly<Record<string, readonly string[] | undefined>>;

/** The tool a `tools/call` request names, or undefined for any other request. */
export function calledTool(request: JsonRpcRequest): string | undefined {
  if (request.method !== 'tools/call') return undefined;
  const name = request.params?.['name'];
  return typeof name === 'string' ? name : '';
}

/** Which server a listed tool belongs to and its own name there (a virtual server's names are namespaced). */
export type ToolOwner = (listed: string) => { server: string; tool: string } | undefined;

/**
 * Removes the tools the policy does not allow from a `tools/list` result, in place of the
 * response (a new object; the upstream's is not changed). `nextCursor` is kept, so a client
 * paging through a long list still gets every allowed tool, page by page. `owner` says whose
 * each listed tool is; a tool it does not know is left out.
 */
export function filterToolsList(policy: ToolPolicy, response: JsonRpcResponse, owner: ToolOwner): JsonRpcResponse {
  if (policy.all || !('result' in response)) return response;
  const tools = response.result['tools'];
  if (!Array.isArray(tools)) return response;
  const allowed = tools.filter((tool: unknown) => {
    const name = typeof tool === 'object' && tool !== null ? (tool as { name?: unknown }).name : undefined;
    const found = typeof name === 'string' ? owner(name) : undefined;
    return found !== undefined && policy.allows(found.tool, found.server);
  });
  const result: Record<string, unknown> = { ...response.result, tools: allowed };
  // A list cut to one identity's tools is that identity's: no shared cache may keep it (2026-07-28).
  if (result['cacheScope'] === 'public') result['cacheScope'] = 'private';
  return { ...response, result };
}
