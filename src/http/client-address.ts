/**
 * The client's address behind load balancers: `[server] trusted_proxies` and
 * `client_address_header`. Parsing and matching only, no I/O, so the config schema validates
 * entries with the very function the gateway matches addresses with.
 *
 * A forwarding header is read only when the socket peer is itself a trusted proxy, and then from
 * the right: each entry was written by the hop to its right, so an entry is believed only while
 * every hop after it is trusted. The first entry from the right that is not a trusted proxy is
 * the client; entries to its left were written by the client (or whoever it chose to be) and are
 * never read. An entry that is no address (`unknown`, an obfuscated `_node`, garbage) stops the
 * walk: the client is then the trusted hop that wrote it, since nothing further left can be
 * believed.
 *
 * One header only, the configured one (`x-forwarded-for` by default, or `forwarded`, RFC 7239),
 * never "whichever is present": a proxy appends to the header it sets and passes the other one on
 * as the client wrote it, so reading the other would let any client name its own address.
 */
import { BlockList, isIP } from 'node:net';

/** Which forwarding header carries the client address. */
export type ClientAddressHeader = 'x-forwarded-for' | 'forwarded';

/** One `trusted_proxies` entry: an address, or a network in CIDR notation. */
interface ProxyEntry {
  address: string;
  prefix: number;
  family: 'ipv4' | 'ipv6';
}

/** A `trusted_proxies` entry ("10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8"), or undefined when it is not one. */
export function parseProxyEntry(entry: string): ProxyEntry | undefined {
  const slash = entry.indexOf('/');
  const address = slash === -1 ? entry : entry.slice(0, slash);
  const version = isIP(address);
  // A zone (fe80::1%eth0) names an interface of one machine: not a network to trust.
  if (version === 0 || address.includes('%')) return undefined;
  const bits = version === 4 ? 32 : 128;
  if (slash === -1) return { address, prefix: bits, family: version === 4 ? 'ipv4' : 'ipv6' };
  const prefixText = entry.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > bits) return undefined;
  return { address, prefix: Number(prefixText), family: version === 4 ? 'ipv4' : 'ipv6' };
}

/**
 * The address a forwarding header's entry names, or undefined for anything else (`unknown`, an
 * obfuscated identifier, garbage). Accepts what proxies write: `192.0.2.1`, `192.0.2.1:4711`,
 * `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:4711`, each optionally in double quotes.
 */
export function entryAddress(raw: string): string | undefined {
  let value = raw.trim();
  if (value.startsWith('"')) {
    if (value.length < 2 || !value.endsWith('"')) return undefined;
    value = value.slice(1, -1);
  }
  if (value.startsWith('[')) {
    const end = value.indexOf(']');
    if (end === -1) return undefined;
    const rest = value.slice(end + 1);
    if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return undefined;
    const address = value.slice(1, end);
    return isIP(address) === 6 ? address : undefined;
  }
  const version = isIP(value);
  if (version !== 0) return value;
  const withPort = /^([0-9.]{7,15}):\d{1,5}$/.exec(value);
  return withPort && isIP(withPort[1]!) === 4 ? withPort[1] : undefined;
}

/**
 * The comma-separated elements of a header value, commas inside a quoted string left alone. A
 * quoted string that never closes makes the rest of the value one element (which then names no
 * address).
 */
function elements(value: string): string[] {
  const out: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (quoted) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) quoted = false;
    } else if (c === 0x22) quoted = true;
    else if (c === 0x2c /* , */) {
      out.push(value.slice(start, i));
      start = i + 1;
    }
  }
  out.push(value.slice(start));
  return out;
}

/** The `for=` value of one RFC 7239 forwarded-element (`for=192.0.2.60;proto=http;by=203.0.113.43`), or undefined. */
function forwardedFor(element: string): string | undefined {
  for (const pair of element.split(';')) {
    const equals = pair.indexOf('=');
    if (equals !== -1 && pair.slice(0, equals).trim().toLowerCase() === 'for') return pair.slice(equals + 1);
  }
  return undefined;
}

/** The hops a header lists, left (the first client) to right (the last proxy); undefined entries name no address. */
function hops(header: ClientAddressHeader, value: string): (string | undefined)[] {
  const list = elements(value);
  return header === 'forwarded'
    ? list.map((element) => {
        const node = forwardedFor(element);
        return node === undefined ? undefined : entryAddress(node);
      })
    : list.map(entryAddress);
}

/** `[server] trusted_proxies` and `client_address_header`, made once at start-up. */
export class TrustedProxies {
  private readonly list = new BlockList();

  constructor(
    entries: readonly string[],
    private readonly header: ClientAddressHeader,
  ) {
    for (const entry of entries) {
      const parsed = parseProxyEntry(entry);
      // The schema refused anything else; an entry that still fails trusts nothing.
      if (parsed) this.list.addSubnet(parsed.address, parsed.prefix, parsed.family);
    }
  }

  /** True when `address` is a trusted proxy (IPv4-mapped IPv6 addresses match IPv4 entries). */
  trusts(address: string): boolean {
    const version = isIP(address);
    return version !== 0 && this.list.check(address, version === 4 ? 'ipv4' : 'ipv6');
  }

  /**
   * The client address of a request that came from `peer` (the socket's remote address) with
   * these headers: `peer` itself unless it is a trusted proxy.
   */
  clientAddress(peer: string, headers: Readonly<Record<string, string | string[] | undefined>>): string {
    if (!this.trusts(peer)) return peer;
    const raw = headers[this.header];
    // Node joins repeated X-Forwarded-For and Forwarded lines with ", ": one list, in order.
    const value = Array.isArray(raw) ? raw.join(', ') : raw;
    if (value === undefined) return peer;
    const listed = hops(this.header, value);
    let client = peer;
    for (let i = listed.length - 1; i >= 0; i--) {
      const hop = listed[i];
      // Written by a trusted hop, but it names no address: nothing further left can be believed.
      if (hop === undefined) return client;
      client = hop;
      if (!this.trusts(hop)) return client;
    }
    return client;
  }
}
