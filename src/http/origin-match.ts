/**
 * Host and Origin header values, and the patterns of `[server] allowed_hosts` and
 * `[server.cors] allowed_origins`: parsing and matching only, no I/O and no dependencies, so the
 * config schema validates entries with the very functions src/http/origin.ts checks requests
 * with. An entry the schema accepts is one the checks understand.
 *
 * Hosts are compared case-insensitively, without one trailing dot ("localhost." is "localhost"),
 * and IPv6 addresses in their canonical form ("[0:0::1]" is "[::1]"). Nothing is resolved: the
 * point is to compare names, and DNS is exactly what a rebinding attacker controls.
 */
import { isIP } from 'node:net';

/** A DNS name or IPv4 address, or an IPv6 address in brackets; no user info, no sub-delims. */
const HOST = String.raw`(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)`;
const HOST_HEADER = new RegExp(String.raw`^${HOST}(?::(\d{1,5}))?$`);
const ORIGIN_HEADER = new RegExp(String.raw`^([A-Za-z][A-Za-z0-9+.-]*)://${HOST}(?::(\d{1,5}))?$`);
/** An origin pattern may end in ":*" (any port) and one "/" (ignored: people copy origins from the address bar). */
const ORIGIN_PATTERN = new RegExp(String.raw`^([A-Za-z][A-Za-z0-9+.-]*)://${HOST}(?::(\d{1,5}|\*))?/?$`);

const DEFAULT_PORTS: Readonly<Record<string, number>> = { http: 80, https: 443 };

/** The names a loopback listener answers to by default. */
export const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'] as const;

/** A Host header, or an `allowed_hosts` entry: `port` undefined means none was given. */
export interface HostValue {
  hostname: string;
  port: number | undefined;
}

/** An Origin header: `port` is filled in for http and https, and undefined for other schemes without one. */
export interface OriginValue {
  scheme: string;
  hostname: string;
  port: number | undefined;
}

/** An `allowed_origins` entry: `port` "*" matches any port. */
export interface OriginPattern {
  scheme: string;
  hostname: string;
  port: number | '*' | undefined;
}

/** The canonical form of a host, or undefined when it is not one. */
function canonicalHost(raw: string): string | undefined {
  const host = raw.toLowerCase();
  if (host.startsWith('[')) {
    if (isIP(host.slice(1, -1)) !== 6) return undefined;
    return new URL(`http://${host}`).hostname;
  }
  const name = host.endsWith('.') ? host.slice(0, -1) : host;
  return name === '' || name.startsWith('.') ? undefined : name;
}

function port(raw: string | undefined): number | undefined | null {
  if (raw === undefined) return undefined;
  const value = Number(raw);
  return value <= 65_535 ? value : null;
}

/**
 * A Host header value (`name`, `name:port`, `[v6]:port`), or undefined when it is not a valid
 * one: quotes, spaces, commas, "@" or "/" have no place in a Host, and a Host the gateway echoes
 * (the OAuth resource metadata, WWW-Authenticate) must not carry them.
 */
export function parseHost(value: string): HostValue | undefined {
  const match = HOST_HEADER.exec(value);
  if (!match) return undefined;
  const hostname = canonicalHost(match[1]!);
  const p = port(match[2]);
  if (hostname === undefined || p === null) return undefined;
  return { hostname, port: p };
}

/** An `allowed_hosts` entry: like a Host value (no port = any port), or "*". */
export function parseHostPattern(entry: string): HostValue | '*' | undefined {
  return entry === '*' ? '*' : parseHost(entry);
}

/** True when one of the patterns names this host (a pattern without a port accepts any port). */
export function hostMatches(patterns: readonly HostValue[], host: HostValue): boolean {
  return patterns.some((p) => p.hostname === host.hostname && (p.port === undefined || p.port === host.port));
}

/** An Origin header value (`scheme://host[:port]`, as browsers serialize it), or undefined ("null" included). */
export function parseOrigin(value: string): OriginValue | undefined {
  const match = ORIGIN_HEADER.exec(value);
  if (!match) return undefined;
  const scheme = match[1]!.toLowerCase();
  const hostname = canonicalHost(match[2]!);
  const p = port(match[3]);
  if (hostname === undefined || p === null) return undefined;
  return { scheme, hostname, port: p ?? DEFAULT_PORTS[scheme] };
}

/** An `allowed_origins` entry: an origin, one whose port is "*", or "*" alone. */
export function parseOriginPattern(entry: string): OriginPattern | '*' | undefined {
  if (entry === '*') return '*';
  const match = ORIGIN_PATTERN.exec(entry);
  if (!match) return undefined;
  const scheme = match[1]!.toLowerCase();
  const hostname = canonicalHost(match[2]!);
  const p = match[3] === '*' ? '*' : port(match[3]);
  if (hostname === undefined || p === null) return undefined;
  return { scheme, hostname, port: p ?? DEFAULT_PORTS[scheme] };
}

export function originMatches(patterns: readonly OriginPattern[], origin: OriginValue): boolean {
  return patterns.some((p) => p.scheme === origin.scheme && p.hostname === origin.hostname && (p.port === '*' || p.port === origin.port));
}

/** True for a listen address on this machine only: `localhost`, 127.0.0.0/8, ::1 (and ::ffff:127.x). */
export function isLoopbackAddress(address: string): boolean {
  const host = address.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) !== 6) return false;
  const canonical = new URL(`http://[${host}]`).hostname;
  return canonical === '[::1]' || canonical.startsWith('[::ffff:7f');
}

/** The Hosts a loopback listener accepts by default: the loopback names, and its own address, on any port. */
export function loopbackHostPatterns(listenAddress: string): HostValue[] {
  const names = new Set<string>(LOOPBACK_NAMES);
  const own = canonicalHost(isIP(listenAddress) === 6 ? `[${listenAddress}]` : listenAddress);
  if (own !== undefined) names.add(own);
  return [...names].map((hostname) => ({ hostname, port: undefined }));
}

/** The Origins a loopback listener accepts by default: http and https pages on those names, any port. */
export function loopbackOriginPatterns(listenAddress: string): OriginPattern[] {
  return loopbackHostPatterns(listenAddress).flatMap(({ hostname }) => [
    { scheme: 'http', hostname, port: '*' as const },
    { scheme: 'https', hostname, port: '*' as const },
  ]);
}

/**
 * True for a Host that DNS rebinding can never produce: none at all, an IP address, or
 * `localhost` (which browsers resolve themselves). A rebinding page reaches the gateway under a
 * DNS name its attacker controls, and its requests carry that name as Host.
 */
export function cannotBeRebound(host: HostValue | undefined): boolean {
  if (host === undefined) return true;
  return host.hostname === 'localhost' || host.hostname.startsWith('[') || isIP(host.hostname) === 4;
}
