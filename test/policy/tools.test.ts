/** Tool policies: allowed_tools globs, scope_tool_mapping, and tools/list filtering. */
import { describe, expect, it } from 'vitest';
import type { JsonRpcResponse } from '../../src/jsonrpc/messages.js';
import { calledTool, filterToolsList, ToolPolicy } from '../../src/policy/tools.js';

describe('ToolPolicy.fromPatterns (allowed_tools)', () => {
  it('absent or empty allows every tool, as in the earlier gateway', () => {
    expect(ToolPolicy.fromPatterns(undefined).allows('anything')).toBe(true);
    expect(ToolPolicy.fromPatterns([]).allows('anything')).toBe(true);
  });

  it('exact names match exactly', () => {
    const policy = ToolPolicy.fromPatterns(['read_file', 'list_directory']);
    expect(policy.allows('read_file')).toBe(true);
    expect(policy.allows('list_directory')).toBe(true);
    expect(policy.allows('read_file_2')).toBe(false);
    expect(policy.allows('write_file')).toBe(false);
  });

  it('globs: * any run, ? one character, everything else literal', () => {
    const policy = ToolPolicy.fromPatterns(['read_*', 'get_?', 'a.b']);
    expect(policy.allows('read_file')).toBe(true);
    expect(policy.allows('read_')).toBe(true);
    expect(policy.allows('xread_file')).toBe(false);
    expect(policy.allows('get_x')).toBe(true);
    expect(policy.allows('get_xy')).toBe(false);
    expect(policy.allows('a.b')).toBe(true);
    expect(policy.allows('aXb')).toBe(false);
    expect(ToolPolicy.fromPatterns(['(x|y)*']).allows('x')).toBe(false);
    expect(ToolPolicy.fromPatterns(['*']).all).toBe(true);
  });
});

describe('ToolPolicy.fromScopes (scope_tool_mapping)', () => {
  const mapping = { read: ['read_file', 'list_*'], write: ['write_file'], admin: ['*'] };

  it('no mapping: every tool', () => {
    expect(ToolPolicy.fromScopes([], undefined).all).toBe(true);
  });

  it('the union of the matched scopes', () => {
    const policy = ToolPolicy.fromScopes(['read', 'write', 'unmapped'], mapping);
    expect(['read_file', 'list_directory', 'write_file'].every((t) => policy.allows(t))).toBe(true);
    expect(policy.allows('delete_file')).toBe(false);
  });

  it('a scope mapped to "*": every tool', () => {
    expect(ToolPolicy.fromScopes(['read', 'admin'], mapping).allows('delete_file')).toBe(true);
  });

  it('no matched scope: no tool (never "all" by accident)', () => {
    expect(ToolPolicy.fromScopes(['unmapped'], mapping).allows('read_file')).toBe(false);
    expect(ToolPolicy.fromScopes([], mapping).allows('read_file')).toBe(false);
    expect(ToolPolicy.fromScopes(['__proto__', 'constructor', 'toString'], mapping).allows('read_file')).toBe(false);
  });
});

describe('filterToolsList', () => {
  const direct = (tool: string) => ({ server: 'fs', tool });
  const response: JsonRpcResponse = {
    jsonrpc: '2.0',
    id: 1,
    result: { tools: [{ name: 'read_file' }, { name: 'write_file' }, { nameless: true }, { name: 'list_directory' }], nextCursor: 'page-2' },
  };

  it('keeps only allowed tools, and the cursor so that paging goes on', () => {
    const filtered = filterToolsList(ToolPolicy.fromPatterns(['read_file', 'list_*']), response, direct);
    expect(filtered).toEqual({ jsonrpc: '2.0', id: 1, result: { tools: [{ name: 'read_file' }, { name: 'list_directory' }], nextCursor: 'page-2' } });
    expect((response as unknown as { result: { tools: unknown[] } }).result.tools).toHaveLength(4);
  });

  it('an empty page stays a page (the client follows nextCursor to the next one)', () => {
    const filtered = filterToolsList(ToolPolicy.NONE, response, direct);
    expect(filtered).toMatchObject({ result: { tools: [], nextCursor: 'page-2' } });
  });

  it('leaves errors and everything for an all-tools policy untouched', () => {
    const error: JsonRpcResponse = { jsonrpc: '2.0', id: 1, error: { code: -1, message: 'x' } };
    expect(filterToolsList(ToolPolicy.NONE, error, direct)).toBe(error);
    expect(filterToolsList(ToolPolicy.ALL, response, direct)).toBe(response);
  });
});

describe('patterns qualified by a server', () => {
  const policy = ToolPolicy.fromPatterns(['filesystem:read_*', 'echo', 'everything:get-sum']);

  it('applies a qualified pattern to its server only', () => {
    expect(policy.allows('read_file', 'filesystem')).toBe(true);
    expect(policy.allows('read_file', 'everything')).toBe(false);
    expect(policy.allows('get-sum', 'everything')).toBe(true);
    expect(policy.allows('get-sum', 'filesystem')).toBe(false);
    // Without a server (nothing to qualify against) only the unqualified patterns apply.
    expect(policy.allows('read_file')).toBe(false);
  });

  it('applies an unqualified pattern to every server, as before', () => {
    expect(policy.allows('echo', 'filesystem')).toBe(true);
    expect(policy.allows('echo', 'everything')).toBe(true);
    expect(policy.allows('echo')).toBe(true);
  });

  it('"server:*" is every tool of that server and no other', () => {
    const one = ToolPolicy.fromPatterns(['everything:*']);
    expect(one.all).toBe(false);
    expect(one.allows('anything', 'everything')).toBe(true);
    expect(one.allows('anything', 'filesystem')).toBe(false);
  });

  it('works in scope mappings too', () => {
    const scoped = ToolPolicy.fromScopes(['read'], { read: ['filesystem:read_*'] });
    expect(scoped.allows('read_file', 'filesystem')).toBe(true);
    expect(scoped.allows('read_file', 'other')).toBe(false);
  });

  it('filters a merged list by the member each tool belongs to', () => {
    const merged: JsonRpcResponse = {
      jsonrpc: '2.0',
      id: 1,
      result: { tools: [{ name: 'filesystem__read_file' }, { name: 'everything__read_file' }, { name: 'everything__echo' }, { name: 'unplaced' }] },
    };
    const owner = (listed: string) => {
      const at = listed.indexOf('__');
      return at === -1 ? undefined : { server: listed.slice(0, at), tool: listed.slice(at + 2) };
    };
    expect(filterToolsList(policy, merged, owner)).toMatchObject({ result: { tools: [{ name: 'filesystem__read_file' }, { name: 'everything__echo' }] } });
  });
});

describe('calledTool', () => {
  it('names the tool of tools/call, "" for a call without a name, undefined for other methods', () => {
    expect(calledTool({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'x' } })).toBe('x');
    expect(calledTool({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 5 } })).toBe('');
    expect(calledTool({ jsonrpc: '2.0', id: 1, method: 'tools/list' })).toBeUndefined();
  });
});
