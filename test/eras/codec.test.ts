/**
 * The pure rules of src/eras/codec.ts: which POSTs are modern, the header value encoding of the
 * 2026-07-28 specification (its own examples), and the translation of requests and results
 * between the eras.
 */
import { describe, expect, it } from 'vitest';
import { decodeHeaderValue, discoverResult, isModern, toLegacyRequest, toModernResult } from '../../src/eras/codec.js';

const META_VERSION = 'io.modelcontextprotocol/protocolVersion';

describe('isModern', () => {
  it('is the _meta protocol version claim, or a modern MCP-Protocol-Version header', () => {
    const claim = { jsonrpc: '2.0' as const, id: 1, method: 'tools/list', params: { _meta: { [META_VERSION]: '2026-07-28' } } };
    const plain = { jsonrpc: '2.0' as const, id: 1, method: 'tools/list' };
    expect(isModern([claim], undefined)).toBe(true);
    expect(isModern([plain], undefined)).toBe(false);
    expect(isModern([plain], '2025-11-25')).toBe(false);
    expect(isModern([plain], '2026-07-28')).toBe(true);
    // A future version claimed in the body is modern (and then refused with -32022), not legacy.
    expect(isModern([{ ...claim, params: { _meta: { [META_VERSION]: '2099-01-01' } } }], undefined)).toBe(true);
    // Responses and an initialize without the claim are legacy.
    expect(isModern([{ jsonrpc: '2.0', id: 1, result: {} }], undefined)).toBe(false);
  });
});

describe('decodeHeaderValue', () => {
  it('decodes the specification examples and leaves plain values as they are', () => {
    expect(decodeHeaderValue('=?base64?SGVsbG8sIOS4lueVjA==?=')).toBe('Hello, 世界');
    expect(decodeHeaderValue('=?base64?IHBhZGRlZCA=?=')).toBe(' padded ');
    expect(decodeHeaderValue('=?base64?bGluZTEKbGluZTI=?=')).toBe('line1\nline2');
    expect(decodeHeaderValue('=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=')).toBe('=?base64?literal?=');
    expect(decodeHeaderValue('  get_weather ')).toBe('get_weather');
  });

  it('refuses a sentinel whose content is not Base64', () => {
    expect(decodeHeaderValue('=?base64?not base64?=')).toBeUndefined();
    expect(decodeHeaderValue('=?base64?abc?=')).toBeUndefined();
  });
});

describe('translation', () => {
  it('removes only the modern envelope from a request forwarded to a legacy server', () => {
    const request = {
      jsonrpc: '2.0' as const,
      id: 7,
      method: 'tools/call',
      params: {
        name: 'echo',
        arguments: { message: 'x' },
        _meta: { [META_VERSION]: '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {}, progressToken: 'p1' },
      },
    };
    expect(toLegacyRequest(request)).toEqual({
      jsonrpc: '2.0',
      id: 7,
      method: 'tools/call',
      params: { name: 'echo', arguments: { message: 'x' }, _meta: { progressToken: 'p1' } },
    });
    const bare = toLegacyRequest({ ...request, params: { name: 'echo', _meta: { [META_VERSION]: '2026-07-28' } } });
    expect(bare.params).toEqual({ name: 'echo' });
    // The original is untouched (it is what the audit log records).
    expect(request.params._meta.progressToken).toBe('p1');
  });

  it('gives a legacy result the modern members, keeping what the server set', () => {
    const info = { name: 'srv', version: '1' };
    expect(toModernResult('tools/list', { tools: [] }, info)).toEqual({
      tools: [],
      resultType: 'complete',
      ttlMs: 0,
      cacheScope: 'private',
      _meta: { 'io.modelcontextprotocol/serverInfo': info },
    });
    expect(toModernResult('tools/call', { content: [], _meta: { a: 1 } }, info)).toEqual({
      content: [],
      resultType: 'complete',
      _meta: { a: 1, 'io.modelcontextprotocol/serverInfo': info },
    });
    expect(toModernResult('tools/list', { tools: [], ttlMs: 5000, cacheScope: 'public', resultType: 'complete' }, undefined)).toEqual({
      tools: [],
      ttlMs: 5000,
      cacheScope: 'public',
      resultType: 'complete',
    });
  });

  it('answers server/discover from an initialize result', () => {
    const result = discoverResult({ protocolVersion: '2025-06-18', capabilities: { tools: {} }, serverInfo: { name: 's', version: '2' }, instructions: 'hi' });
    expect(result).toEqual({
      supportedVersions: ['2026-07-28'],
      capabilities: { tools: {} },
      serverInfo: { name: 's', version: '2' },
      instructions: 'hi',
      resultType: 'complete',
      ttlMs: 0,
      cacheScope: 'private',
      _meta: { 'io.modelcontextprotocol/serverInfo': { name: 's', version: '2' } },
    });
  });
});
