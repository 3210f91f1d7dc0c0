/**
 * `[server.tls]` without client certificates: the port serves HTTPS and nothing else, with the
 * configured certificate (a client that trusts the test CA connects, one that does not is
 * refused), the MCP SDK client works through it, and min_version is enforced.
 */
import { connect as tlsConnect } from 'node:tls';
import { connect as netConnect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { q } from '../helpers/gateway.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/recording-upstream.js';
import { makeTestCerts, type TestCerts } from './certs.js';
import { fetchVia, request, startTlsGateway, tlsAgent, TOOLS_LIST, type TlsGateway } from './gateway.js';

let certs: TestCerts;
let upstream: RecordingUpstream;

beforeAll(async () => {
  certs = makeTestCerts();
  upstream = await startRecordingUpstream('http', { tools: ['read', 'write'] });
}, 60_000);

afterAll(async () => {
  await upstream?.stop();
  certs?.remove();
});

const upstreamToml = () => `[[upstream.servers]]\nname = "web"\npath_prefix = "/web"\nurl = ${q(upstream.url)}\n`;

describe('HTTPS on the gateway port', () => {
  let gw: TlsGateway;

  beforeAll(async () => {
    gw = await startTlsGateway(
      `
[server.tls]
cert_path = ${q(certs.server.certPath)}
key_path = "\${TLS_KEY_PATH}"

${upstreamToml()}`,
      { TLS_KEY_PATH: certs.server.keyPath },
    );
  }, 30_000);

  afterAll(async () => {
    await gw?.stop();
  });

  it('listens on https:// and serves a client that trusts the CA, with the configured certificate', async () => {
    expect(gw.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const agent = tlsAgent(certs.ca.cert);
    try {
      const health = await request(agent, `${gw.url}/health`);
      expect(health.status).toBe(200);
      const list = await request(agent, `${gw.url}/mcp/web`, { body: TOOLS_LIST });
      expect(list.status).toBe(200);
      expect(list.json.result.tools.map((t: { name: string }) => t.name)).toEqual(['read', 'write']);
    } finally {
      await agent.close();
    }
    // The certificate the handshake presents is the configured one.
    const fingerprint = await new Promise<string>((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', port: gw.port, ca: certs.ca.cert, servername: 'localhost' }, () => {
        resolve(socket.getPeerCertificate().fingerprint256);
        socket.end();
      });
      socket.once('error', reject);
    });
    expect(fingerprint).toBe(certs.server.fingerprint);
  });

  it('refuses a client that does not trust the CA (the certificate is really verified by clients)', async () => {
    const agent = tlsAgent(undefined);
    try {
      await expect(request(agent, `${gw.url}/health`)).rejects.toThrow();
    } finally {
      await agent.close();
    }
    const other = tlsAgent(certs.otherCa.cert);
    try {
      await expect(request(other, `${gw.url}/health`)).rejects.toThrow();
    } finally {
      await other.close();
    }
  });

  it('does not speak plain HTTP on the port', async () => {
    await expect(fetch(`http://127.0.0.1:${gw.port}/health`)).rejects.toThrow();
    // On the wire: a plain request gets no HTTP answer, and the connection is closed.
    const received = await new Promise<string>((resolve, reject) => {
      const socket = netConnect({ host: '127.0.0.1', port: gw.port }, () => socket.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'));
      let data = '';
      socket.on('data', (chunk: Buffer) => (data += chunk.toString('latin1')));
      socket.once('close', () => resolve(data));
      socket.once('error', () => resolve(data));
      setTimeout(() => {
        socket.destroy();
        reject(new Error('the connection stayed open'));
      }, 5_000).unref();
    });
    expect(received).not.toContain('HTTP/1.1');
    expect(received).not.toContain('"status"');
  });

  it('the MCP SDK client connects over HTTPS and calls a tool', async () => {
    const agent = tlsAgent(certs.ca.cert);
    const client = new Client({ name: 'tls-test', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(`${gw.url}/mcp/web`), { fetch: fetchVia(agent) });
    try {
      await client.connect(transport);
      const tools = await client.listTools();
      expect(tools.tools.map((t) => t.name)).toEqual(['read', 'write']);
      const result = await client.callTool({ name: 'read', arguments: {} });
      expect(result.isError ?? false).toBe(false);
    } finally {
      await client.close();
      await agent.close();
    }
  });

  it('accepts TLS 1.2 by default (min_version = "TLSv1.2")', async () => {
    await expect(handshake(gw.port, 'TLSv1.2')).resolves.toBe('TLSv1.2');
  });
});

describe('min_version = "TLSv1.3"', () => {
  let gw: TlsGateway;

  beforeAll(async () => {
    gw = await startTlsGateway(
      `
[server.tls]
cert_path = ${q(certs.server.certPath)}
key_path = ${q(certs.encryptedKeyPath)}
key_passphrase = "\${TLS_KEY_PASSPHRASE}"
min_version = "TLSv1.3"

${upstreamToml()}`,
      { TLS_KEY_PASSPHRASE: certs.passphrase },
    );
  }, 30_000);

  afterAll(async () => {
    await gw?.stop();
  });

  it('refuses a TLS 1.2 client and serves a TLS 1.3 one (with an encrypted key and its passphrase)', async () => {
    await expect(handshake(gw.port, 'TLSv1.2')).rejects.toThrow();
    await expect(handshake(gw.port, 'TLSv1.3')).resolves.toBe('TLSv1.3');
    expect(gw.logs.join('\n')).not.toContain(certs.passphrase);
  });
});

/** A bare handshake at exactly `version`; resolves with the negotiated protocol. */
function handshake(port: number, version: 'TLSv1.2' | 'TLSv1.3'): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca: certs.ca.cert, servername: 'localhost', minVersion: version, maxVersion: version }, () => {
      resolve(socket.getProtocol() ?? '');
      socket.end();
    });
    socket.once('error', reject);
  });
}
