/**
 * What every transport shares to learn and remember an upstream's era (docs/eras.md): the
 * `server/discover` probe as the gateway sends it, how its answer is read (the specification's
 * fallback rules: basic/transports/streamable-http "Backward Compatibility", stdio "Backward
 * Compatibility"), the verdict's lifetime, and the headers of a 2026-07-28 HTTP request.
 *
 * The probe's answer, in order:
 * - a DiscoverResult (`supportedVersions` naming a modern version the gateway speaks): modern;
 * - -32022 (UnsupportedProtocolVersion) whose `data.supported` names one: ask again with it;
 * - any other JSON-RPC error, a result that is not a DiscoverResult: legacy. The fallback is
 *   never keyed to one error code: legacy servers answer an unknown pre-initialize request with
 *   -32601, -32602, -32000 (a missing session) or anything else.
 * Whether silence, an HTTP status or a lost connection means legacy or "try again later" is the
 * transport's to say (modern-http.ts, stdio.ts).
 */
import type { EraSetting, ServerConfig } from '../config/schema.js';
import { isObject, type JsonRpcRequest, type JsonRpcResponse } from '../jsonrpc/messages.js';
import { MODERN_PROTOCOL_VERSION, MODERN_PROTOCOL_VERSIONS } from '../protocol/versions.js';
import { META } from '../protocol/modern.js';
import { GATEWAY_NAME, GATEWAY_VERSION } from '../version.js';
import type { EraVerdict } from './upstream.js';

/** A probed verdict older than this is probed again (the SDK's gateway guide uses the same horizon). */
export const VERDICT_MAX_AGE_MS = 24 * 60 * 60 * 1000;

/** JSON-RPC error code of the 2026-07-28 UnsupportedProtocolVersionError. */
const UNSUPPORTED_PROTOCOL_VERSION = -32022;

/** The `_meta` envelope of a request the gateway makes itself: no capabilities, its own identity. */
export function gatewayEnvelope(version: string): Record<string, unknown> {
  return {
    [META.protocolVersion]: version,
    [META.clientCapabilities]: {},
    [META.clientInfo]: { name: GATEWAY_NAME, version: GATEWAY_VERSION },
  };
}

/** The probe. Its id is a string, so that it can never be taken for a correlated (numeric) request. */
export function discoverRequest(id: string, version: string = MODERN_PROTOCOL_VERSION): JsonRpcRequest {
  // id before params: some line-oriented test servers read the first "id" of a line.
  return { jsonrpc: '2.0', id, method: 'server/discover', params: { _meta: gatewayEnvelope(version) } };
}

/** What one answer to the probe says. */
export type ProbeAnswer =
  { kind: 'modern'; version: string; discover: Record<string, unknown> } | { kind: 'retry'; version: string } | { kind: 'legacy'; why: string };

/** The first modern version the gateway speaks that `offered` names. */
function mutualVersion(offered: unknown): string | undefined {
  if (!Array.isArray(offered)) return undefined;
  return MODERN_PROTOCOL_VERSIONS.find((version) => offered.includes(version));
}

/**
 * Reads the answer to a probe. A -32022 that names a modern version the gateway speaks asks for
 * one more probe with it (the caller asks again once; a second -32022 is legacy).
 */
export function readProbeAnswer(response: JsonRpcResponse): ProbeAnswer {
  if ('error' in response) {
    const { code, data } = response.error;
    if (code === UNSUPPORTED_PROTOCOL_VERSION && isObject(data)) {
      const version = mutualVersion(data['supported']);
      if (version !== undefined) return { kind: 'retry', version };
    }
    return { kind: 'legacy', why: `server/discover answered error ${code}` };
  }
  const result = response.result;
  const version = mutualVersion(result['supportedVersions']);
  if (version === undefined || !isObject(result['capabilities'])) {
    return { kind: 'legacy', why: 'server/discover answered with no usable DiscoverResult' };
  }
  return { kind: 'modern', version, discover: result };
}

/** The verdict of a probe: modern with its result, or legacy (the version comes with initialize). */
export function probedVerdict(answer: Exclude<ProbeAnswer, { kind: 'retry' }>): EraVerdict {
  return answer.kind === 'modern'
    ? { era: 'modern', version: answer.version, discover: answer.discover, decidedAt: Date.now(), source: 'probe' }
    : { era: 'legacy', version: undefined, decidedAt: Date.now(), source: 'probe' };
}

/**
 * The verdict a server has without probing: its `era` setting, and legacy for sse whatever it
 * says (HTTP+SSE exists only in the legacy era; config refuses "modern" there). Undefined: probe.
 */
export function configuredVerdict(config: ServerConfig): EraVerdict | undefined {
  const setting: EraSetting = config.transport === 'sse' ? 'legacy' : config.era;
  if (setting === 'auto') return undefined;
  return {
    era: setting,
    version: setting === 'modern' ? MODERN_PROTOCOL_VERSION : undefined,
    decidedAt: Date.now(),
    source: 'config',
  };
}

/** True while a verdict may be used without asking again. Configured verdicts never age. */
export function isFresh(verdict: EraVerdict | undefined, now = Date.now()): verdict is EraVerdict {
  return verdict !== undefined && (verdict.source === 'config' || now - verdict.decidedAt < VERDICT_MAX_AGE_MS);
}

/** How many forward paths' verdicts one http upstream keeps besides its url's own. */
export const MAX_PATH_VERDICTS = 256;

interface PathEntry {
  verdict: EraVerdict;
  /** Read since the last eviction pass: kept for one more (a second chance). */
  used: boolean;
}

/**
 * The probed verdicts of one http upstream, one per forward path (prefix routing: url + the
 * client's path and query). Each path is probed on its own, so that no caller's choice of path
 * decides the era of requests to another: a path that answers 404 (legacy by the fallback rules)
 * or never answers is that path's affair. The url's own verdict (forward path '', every request
 * without prefix routing) is a field, never evicted; other paths live in a Map of at most
 * MAX_PATH_VERDICTS, the least recently used going first (a read sets a flag, an eviction pass
 * gives a flagged entry a second chance), so that a read is one Map get and a flood of new paths
 * costs its own probes and at worst another probe for an evicted path, never a wrong verdict.
 */
export class PathVerdicts {
  private base: EraVerdict | undefined;
  private readonly paths = new Map<string, PathEntry>();
  private latest: EraVerdict | undefined;

  constructor(private readonly max = MAX_PATH_VERDICTS) {}

  /** The verdict remembered for requests to `forwardPath`, whatever its age. */
  get(forwardPath: string): EraVerdict | undefined {
    if (forwardPath === '') return this.base;
    const entry = this.paths.get(forwardPath);
    if (entry === undefined) return undefined;
    entry.used = true;
    return entry.verdict;
  }

  set(forwardPath: string, verdict: EraVerdict): void {
    this.latest = verdict;
    if (forwardPath === '') {
      this.base = verdict;
      return;
    }
    const entry = this.paths.get(forwardPath);
    if (entry !== undefined) {
      entry.verdict = verdict;
      entry.used = true;
      return;
    }
    if (this.paths.size >= this.max) this.evictOne();
    this.paths.set(forwardPath, { verdict, used: false });
  }

  /** What the server as a whole shows (/routes, /ready, check-upstream): its url's, else the latest. */
  get shown(): EraVerdict | undefined {
    return this.base ?? this.latest;
  }

  /** How many paths have a verdict besides the url's own. */
  get size(): number {
    return this.paths.size;
  }

  private evictOne(): void {
    // Oldest first; a used entry goes to the back unflagged. Ends within one pass plus one.
    for (const [path, entry] of this.paths) {
      this.paths.delete(path);
      if (!entry.used) return;
      entry.used = false;
      this.paths.set(path, entry);
    }
  }
}

/** A legacy verdict with the version its server's initialize answered, when it had none yet. */
export function withLegacyVersion(verdict: EraVerdict | undefined, version: string | undefined): EraVerdict | undefined {
  if (verdict?.era !== 'legacy' || verdict.version !== undefined || version === undefined) return verdict;
  return { ...verdict, version };
}

/** The 2026-07-28 protocol version a request's `_meta` names, if any. */
export function requestVersion(request: JsonRpcRequest): string | undefined {
  const meta = request.params?.['_meta'];
  const version = isObject(meta) ? meta[META.protocolVersion] : undefined;
  return typeof version === 'string' ? version : undefined;
}

/** Methods whose `Mcp-Name` header mirrors a body field (specification, streamable HTTP, Headers). */
const NAME_FIELD: Readonly<Record<string, 'name' | 'uri'>> = {
  'tools/call': 'name',
  'prompts/get': 'name',
  'resources/read': 'uri',
};

/** The value `Mcp-Name` carries for a request, undefined for methods without one. */
export function mcpName(request: JsonRpcRequest): string | undefined {
  const field = NAME_FIELD[request.method];
  const value = field === undefined ? undefined : request.params?.[field];
  return typeof value === 'string' ? value : undefined;
}

/** Plain header values: visible ASCII, space and tab, no whitespace at either end. */
const PLAIN_HEADER_VALUE = /^(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?$/;
const SENTINEL = /^=\?base64\?.*\?=$/;

/**
 * A value as a header carries it (specification, streamable HTTP, "Encoding"): as it is when it
 * is plain visible ASCII, else `=?base64?<Base64 of its UTF-8>?=`; also a plain value that looks
 * like that form, so that it is not decoded by mistake.
 */
export function encodeHeaderValue(value: string): string {
  if (PLAIN_HEADER_VALUE.test(value) && !SENTINEL.test(value)) return value;
  return `=?base64?${Buffer.from(value, 'utf8').toString('base64')}?=`;
}
