/**
 * `[server] trusted_proxies` and `client_address_header`: the client address behind a load
 * balancer. First the parser on its own (src/http/client-address.ts), then real gateways on
 * 127.0.0.1 reached from other loopback addresses (127.0.0.2 plays the proxy, 127.0.0.3 and
 * 127.0.0.4 direct clients), where the address must reach the per-address limit, the audit
 * `client_ip` and the authentication failure log, and must never move the Host check.
 *
 * The attacker's side: a client that is not behind a trusted proxy sends X-Forwarded-For and
 * Forwarded to get a fresh limit or forge its audit address; a client behind the proxy puts a
 * forged address at the left of the chain, or in the header the proxy does not set; garbage.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateApiKey, hashApiKey } from '../../src/auth/key-format.js';
import { entryAddress, parseProxyEntry, TrustedProxies } from '../../src/http/client-address.js';
import { q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/recording-upstream.js';

describe('parseProxyEntry and entryAddress', () => {
  it('takes addresses and CIDR networks of both families, and nothing else', () => {
    expect(parseProxyEntry('10.0.0.0/8')).toEqual({ address: '10.0.0.0', prefix: 8, family: 'ipv4' });
    expect(parseProxyEntry('127.0.0.1')).toEqual({ address: '127.0.0.1', prefix: 32, family: 'ipv4' });
    expect(parseProxyEntry('::1')).toEqual({ address: '::1', prefix: 128, family: 'ipv6' });
    expect(parseProxyEntry('fd00::/8')).toEqual({ address: 'fd00::', prefix: 8, family: 'ipv6' });
    for (const bad of ['', 'lb.local', '10.0.0.0/33', '::/129', '10.0.0.0/', '10.0.0.0/08x', '1.2.3', '[::1]', 'fe80::1%eth0', '10.0.0.0/8/8']) {
      expect(parseProxyEntry(bad), bad).toBeUndefined();
    }
  });

  it('reads the address forms proxies write, ports and quotes included', () => {
    expect(entryAddress(' 192.0.2.1 ')).toBe('192.0.2.1');
    expect(entryAddress('192.0.2.1:4711')).toBe('192.0.2.1');
    expect(entryAddress('2001:db8::1')).toBe('2001:db8::1');
    expect(entryAddress('[2001:db8::1]')).toBe('2001:db8::1');
    expect(entryAddress('"[2001:db8::1]:1234"')).toBe('2001:db8::1');
    expect(entryAddress('"192.0.2.1"')).toBe('192.0.2.1');
    for (const garbage of ['unknown', '_hidden', '"_x"', '', '"', '[2001:db8::1', '[2001:db8::1]x', '[1.2.3.4]', '999.1.1.1', '1.2.3.4:', 'a,b', '"1.2.3.4']) {
      expect(entryAddress(garbage), garbage).toBeUndefined();
    }
  });
});

describe('TrustedProxies.clientAddress', () => {
  const xff = new TrustedProxies(['10.0.0.0/8', 'fd00::/8'], 'x-forwarded-for');
  const fwd = new TrustedProxies(['10.0.0.0/8', 'fd00::/8'], 'forwarded');

  it('ignores every header from a peer that is not a trusted proxy', () => {
    const headers = { 'x-forwarded-for': '1.1.1.1', forwarded: 'for=2.2.2.2' };
    expect(xff.clientAddress('203.0.113.5', headers)).toBe('203.0.113.5');
    expect(fwd.clientAddress('203.0.113.5', headers)).toBe('203.0.113.5');
    expect(xff.clientAddress('2001:db8::5', headers)).toBe('2001:db8::5');
  });

  it('walks from the right through trusted hops only: a forged left-most entry is never read', () => {
    expect(xff.clientAddress('10.0.0.1', { 'x-forwarded-for': '6.6.6.6, 203.0.113.9, 10.1.2.3' })).toBe('203.0.113.9');
    expect(xff.clientAddress('10.0.0.1', { 'x-forwarded-for': '203.0.113.9' })).toBe('203.0.113.9');
    // Repeated header lines are one list, in order (Node joins X-Forwarded-For lines itself).
    expect(xff.clientAddress('10.0.0.1', { 'x-forwarded-for': ['6.6.6.6', '203.0.113.9, 10.9.9.9'] })).toBe('203.0.113.9');
    // IPv4-mapped peers match IPv4 entries; IPv6 hops work as IPv4 ones do.
    expect(xff.clientAddress('::ffff:10.0.0.1', { 'x-forwarded-for': '203.0.113.9' })).toBe('203.0.113.9');
    expect(xff.clientAddress('fd00::1', { 'x-forwarded-for': '2001:db8::7, fd00::2' })).toBe('2001:db8::7');
    // Every hop trusted: the left-most, as far as anything can be believed.
    expect(xff.clientAddress('10.0.0.1', { 'x-forwarded-for': '10.0.0.7, 10.0.0.8' })).toBe('10.0.0.7');
    // No header from a trusted peer: the peer.
    expect(xff.clientAddress('10.0.0.1', {})).toBe('10.0.0.1');
  });

  it('reads RFC 7239 Forwarded: for= among other parameters, quoted IPv6 with a port, in any case', () => {
    expect(fwd.clientAddress('10.0.0.1', { forwarded: 'for=6.6.6.6, for="[2001:db8::1]:1234";proto=https, FOR=10.0.0.5;by=10.0.0.1' })).toBe('2001:db8::1');
    expect(fwd.clientAddress('10.0.0.1', { forwarded: 'proto=http;for=192.0.2.60;by=203.0.113.43' })).toBe('192.0.2.60');
    // A comma inside a quoted value does not split the element.
    expect(fwd.clientAddress('10.0.0.1', { forwarded: 'for=192.0.2.60;host="a,b"' })).toBe('192.0.2.60');
  });

  it('stops at an entry that names no address (unknown, obfuscated, garbage): the hop that wrote it is the client', () => {
    expect(fwd.clientAddress('10.0.0.1', { forwarded: 'for=6.6.6.6, for=unknown' })).toBe('10.0.0.1');
    expect(fwd.clientAddress('10.0.0.1', { forwarded: 'for=6.6.6.6, for=_hidden, for=10.0.0.9' })).toBe('10.0.0.9');
    expect(fwd.clientAddress('10.0.0.1', { forwarded: 'proto=https' })).toBe('10.0.0.1');
    expect(fwd.clientAddress('10.0.0.1', { forwarded: 'for="unterminated, for=6.6.6.6' })).toBe('10.0.0.1');
    expect(xff.clientAddress('10.0.0.1', { 'x-forwarded-for': '6.6.6.6, not-an-address' })).toBe('10.0.0.1');
    expect(xff.clientAddress('10.0.0.1', { 'x-forwarded-for': '' })).toBe('10.0.0.1');
    expect(xff.clientAddress('10.0.0.1', { 'x-forwarded-for': ',,,' })).toBe('10.0.0.1');
    const flood = `${'9.9.9.9, '.repeat(2_000)}%%%;;"""[[[`;
    expect(xff.clientAddress('10.0.0.1', { 'x-forwarded-for': flood })).toBe('10.0.0.1');
    expect(fwd.clientAddress('10.0.0.1', { forwarded: flood })).toBe('10.0.0.1');
  });

  it('reads only the configured header: the other is passed on by proxies as the client wrote it', () => {
    const both = { 'x-forwarded-for': '203.0.113.1', forwarded: 'for=6.6.6.6' };
    expect(xff.clientAddress('10.0.0.1', both)).toBe('203.0.113.1');
    expect(fwd.clientAddress('10.0.0.1', { 'x-forwarded-for': '6.6.6.6', forwarded: 'for=203.0.113.1' })).toBe('203.0.113.1');
    expect(fwd.clientAddress('10.0.0.1', { 'x-forwarded-for': '6.6.6.6' })).toBe('10.0.0.1');
  });
});

/** A client bound to one loopback address: the gateway sees that address as its peer. */
function clientAt(localAddress: string): Agent {
  return new Agent({ localAddress });
}

const CALL = (id: number) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'recorded', arguments: {} } });

async function post(
  agent: Agent,
  url: string,
  headers: Record<string, string>,
  body: unknown = CALL(1),
): Promise<{ status: number; requestId: string; headers: Record<string, unknown> }> {
  const res = await request(url, {
    method: 'POST',
    dispatcher: agent,
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: JSON.stringify(body),
  });
  await res.body.text();
  return { status: res.statusCode, requestId: String(res.headers['x-request-id']), headers: res.headers };
}

function auditLines(file: string): Array<Record<string, unknown>> {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function clientIpOf(file: string, requestId: string): Promise<unknown> {
  await waitFor(() => auditLines(file).some((l) => l['request_id'] === requestId), 5_000, `the audit line of ${requestId}`);
  return auditLines(file).find((l) => l['request_id'] === requestId)!['client_ip'];
}

describe('a gateway behind a trusted proxy (127.0.0.2)', () => {
  let recording: RecordingUpstream;
  let dir: string;
  const gateways: RunningGateway[] = [];
  const proxy = clientAt('127.0.0.2');
  const direct = clientAt('127.0.0.3');
  const other = clientAt('127.0.0.4');

  beforeAll(async () => {
    recording = await startRecordingUpstream('http');
    dir = mkdtempSync(join(tmpdir(), 'client-address-'));
  });
  afterAll(async () => {
    for (const gw of gateways) await gw.stop();
    await recording?.stop();
    await Promise.all([proxy.close(), direct.close(), other.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  /** A gateway with a per-address limit of 3 per 30 s (long: no assertion depends on this machine's speed). */
  async function gateway(name: string, server: string, extra = ''): Promise<{ url: string; audit: string; gw: RunningGateway }> {
    const audit = join(dir, `${name}.log`);
    const gw = await startGateway(
      `[server]\n${server}\n[audit]\nfile = ${q(audit)}\n` +
        `[rate_limit]\nper_address_requests_per_second = 0.1\nper_address_burst_size = 3\n${extra}\n` +
        `[[upstream.servers]]\nname = "rec"\npath_prefix = "/rec"\ntransport = "http"\nurl = ${q(recording.url)}\n`,
    );
    gateways.push(gw);
    return { url: `${gw.url}/mcp/rec`, audit, gw };
  }

  it('a direct client cannot evade the per-address limit or forge its audit address with forwarding headers', async () => {
    const { url, audit } = await gateway('direct', 'trusted_proxies = ["127.0.0.2"]');
    const answers = [];
    for (let i = 1; i <= 5; i++) {
      answers.push(await post(direct, url, { 'x-forwarded-for': `198.51.100.${i}`, forwarded: `for=198.51.100.${i}` }));
    }
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 429, 429]);
    for (const a of answers) expect(await clientIpOf(audit, a.requestId)).toBe('127.0.0.3');
    // The limit is that address's: another direct client is untouched.
    expect((await post(other, url, {})).status).toBe(200);
  });

  it('behind the proxy, each client has its own limit and its own audit address; a forged left-most entry is ignored', async () => {
    const { url, audit } = await gateway('behind', 'trusted_proxies = ["127.0.0.2", "10.0.0.0/8"]');
    const a: number[] = [];
    for (let i = 1; i <= 4; i++) {
      // The client wrote "6.6.6.<i>" itself; the proxy (and an inner one, 10.1.2.3) appended the rest.
      const answer = await post(proxy, url, { 'x-forwarded-for': `6.6.6.${i}, 203.0.113.9, 10.1.2.3` });
      a.push(answer.status);
      if (i === 1) expect(await clientIpOf(audit, answer.requestId)).toBe('203.0.113.9');
    }
    expect(a).toEqual([200, 200, 200, 429]);
    // Another client through the same proxy still has its whole limit: not one limit per proxy.
    const b = await post(proxy, url, { 'x-forwarded-for': '203.0.113.10' });
    expect(b.status).toBe(200);
    expect(await clientIpOf(audit, b.requestId)).toBe('203.0.113.10');
    // A Forwarded header the proxy passed on as the client wrote it is not read (x-forwarded-for is configured).
    const c = await post(proxy, url, { 'x-forwarded-for': '203.0.113.11', forwarded: 'for=6.6.6.6' });
    expect(await clientIpOf(audit, c.requestId)).toBe('203.0.113.11');
  });

  it('garbage from the proxy is answered as usual, the proxy counted as the client', async () => {
    const { url, audit } = await gateway('garbage', 'trusted_proxies = ["127.0.0.2"]');
    for (const value of ['unknown', '%%%, ;;;', '"[::1', '1.2.3.4.5', `${'x'.repeat(4000)}`, ', ,']) {
      const answer = await post(proxy, url, { 'x-forwarded-for': value });
      expect(answer.status, value).not.toBe(500);
      expect(await clientIpOf(audit, answer.requestId), value).toBe('127.0.0.2');
    }
  });

  it('client_address_header = "forwarded": RFC 7239 for= with a quoted IPv6 address and port; X-Forwarded-For ignored', async () => {
    const { url, audit } = await gateway('forwarded', 'trusted_proxies = ["127.0.0.2"]\nclient_address_header = "forwarded"');
    const answer = await post(proxy, url, { forwarded: 'for=6.6.6.6, for="[2001:db8::1]:1234";proto=https', 'x-forwarded-for': '6.6.6.7' });
    expect(answer.status).toBe(200);
    expect(await clientIpOf(audit, answer.requestId)).toBe('2001:db8::1');
    const unknown = await post(proxy, url, { forwarded: 'for=unknown', 'x-forwarded-for': '6.6.6.7' });
    expect(await clientIpOf(audit, unknown.requestId)).toBe('127.0.0.2');
  });

  it('without trusted_proxies the headers are ignored even from the proxy', async () => {
    const { url, audit } = await gateway('none', '');
    const answer = await post(proxy, url, { 'x-forwarded-for': '203.0.113.9' });
    expect(await clientIpOf(audit, answer.requestId)).toBe('127.0.0.2');
  });

  it('never lets X-Forwarded-Host or X-Forwarded-Proto move the Host check, even from a trusted proxy', async () => {
    const { url } = await gateway('host', 'trusted_proxies = ["127.0.0.2"]');
    const port = new URL(url).port;
    const evil = await post(proxy, url, { host: `evil.example:${port}`, 'x-forwarded-host': `127.0.0.1:${port}`, 'x-forwarded-for': '203.0.113.9' });
    expect(evil.status).toBe(403);
    const fine = await post(proxy, url, { 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.9' });
    expect(fine.status).toBe(200);
  });

  it('logs a failed authentication with the forwarded client address; the OAuth metadata ignores X-Forwarded-Host/Proto', async () => {
    const { key, prefix } = generateApiKey();
    const { url, gw } = await gateway(
      'auth',
      'trusted_proxies = ["127.0.0.2"]',
      `[[auth.api_keys]]\nid = "ci"\nkey_prefix = ${q(prefix)}\nkey_hash = ${q(await hashApiKey(key))}\n`,
    );
    const refused = await post(proxy, url, {
      'x-forwarded-for': '203.0.113.77',
      'x-forwarded-host': 'evil.example',
      'x-forwarded-proto': 'https',
      authorization: 'Bearer mcp_wrong',
    });
    expect(refused.status).toBe(401);
    expect(String(refused.headers['www-authenticate'])).toContain(
      `resource_metadata="http://127.0.0.1:${new URL(url).port}/.well-known/oauth-protected-resource"`,
    );
    await waitFor(() => gw.logs.some((l) => l.includes('"authentication failed"')), 5_000, 'the authentication failure log line');
    const line = JSON.parse(gw.logs.find((l) => l.includes('"authentication failed"'))!) as Record<string, unknown>;
    expect(line['clientIp']).toBe('203.0.113.77');
  });
});
