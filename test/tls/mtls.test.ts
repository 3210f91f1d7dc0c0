/**
 * Client certificates (`[server.tls] client_ca_path`) and the identities they carry
 * (`[[auth.client_certs]]`), against a real gateway over real TLS: which handshakes succeed in
 * "require" and "optional" mode, which identity a request gets (audit line, tools policy), and
 * what wins when a certificate and an Authorization header come together.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { generateApiKey, hashApiKey } from '../../src/auth/key-format.js';
import { q } from '../helpers/gateway.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/recording-upstream.js';
import { makeTestCerts, type Pem, type TestCerts } from './certs.js';
import { callTool, fetchVia, request, startTlsGateway, tlsAgent, TOOLS_LIST, type Answer, type TlsGateway } from './gateway.js';

let certs: TestCerts;
let upstream: RecordingUpstream;
let apiKey: { key: string; prefix: string };
let apiKeyHash: string;

beforeAll(async () => {
  certs = makeTestCerts();
  upstream = await startRecordingUpstream('http', { tools: ['read', 'write', 'delete'] });
  apiKey = generateApiKey();
  apiKeyHash = await hashApiKey(apiKey.key);
}, 60_000);

afterAll(async () => {
  await upstream?.stop();
  certs?.remove();
});

function config(clientAuth: 'require' | 'optional', certEntry: string, extra = ''): string {
  return `
[server.tls]
cert_path = ${q(certs.server.certPath)}
key_path = ${q(certs.server.keyPath)}
client_ca_path = ${q(certs.ca.certPath)}
${clientAuth === 'optional' ? 'client_auth = "optional"' : ''}

[[upstream.servers]]
name = "web"
path_prefix = "/web"
url = ${q(upstream.url)}

[auth]

[[auth.api_keys]]
id = "key-user"
key_prefix = ${q(apiKey.prefix)}
key_hash = ${q(apiKeyHash)}
allowed_tools = ["delete"]

[[auth.client_certs]]
id = "known-service"
${certEntry}
allowed_tools = ["read"]

[audit]
stdout = true
${extra}`;
}

/** One request with this client certificate (or none); always closes the agent. */
async function as(gw: TlsGateway, client: Pem | undefined, body: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const agent = tlsAgent(certs.ca.cert, client);
  try {
    return await request(agent, `${gw.url}/mcp/web`, { body, headers });
  } finally {
    await agent.close();
  }
}

const toolNames = (answer: Answer) => (answer.json.result.tools as Array<{ name: string }>).map((t) => t.name);
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

describe('client_auth = "require" (the default with client_ca_path)', () => {
  let gw: TlsGateway;

  beforeAll(async () => {
    gw = await startTlsGateway(config('require', 'subject_cn = "known-client"'));
  }, 30_000);

  afterAll(async () => {
    await gw?.stop();
  });

  it('refuses the handshake of a client without a certificate, even with a valid API key', async () => {
    const before = upstream.requests.length;
    await expect(as(gw, undefined, TOOLS_LIST, bearer(apiKey.key))).rejects.toThrow();
    expect(upstream.requests.length).toBe(before);
  });

  it('refuses a certificate from another CA, even one with a known subject', async () => {
    await expect(as(gw, certs.foreignClient, TOOLS_LIST)).rejects.toThrow();
  });

  it('serves a known certificate as its identity: audit line, tools/list filtered, other tools refused with -32011', async () => {
    const list = await as(gw, certs.knownClient, TOOLS_LIST);
    expect(list.status).toBe(200);
    expect(toolNames(list)).toEqual(['read']);

    const allowed = await as(gw, certs.knownClient, callTool(2, 'read'));
    expect(allowed.json.result).toBeDefined();
    const refused = await as(gw, certs.knownClient, callTool(3, 'write'));
    expect(refused.status).toBe(200);
    expect(refused.json.error.code).toBe(-32011);
    expect(upstream.requests.filter((r) => r.tool === 'write')).toHaveLength(0);

    const audit = await gw.audit();
    expect(audit).toContainEqual(expect.objectContaining({ event_type: 'auth_success', identity_id: 'known-service', provider: 'client_cert' }));
    expect(audit).toContainEqual(expect.objectContaining({ event_type: 'authz_denied', identity_id: 'known-service', provider: 'client_cert', tool: 'write' }));
  });

  it('the MCP SDK client with a client certificate gets that identity', async () => {
    const agent = tlsAgent(certs.ca.cert, certs.knownClient);
    const client = new Client({ name: 'mtls-test', version: '1.0.0' });
    try {
      await client.connect(new StreamableHTTPClientTransport(new URL(`${gw.url}/mcp/web`), { fetch: fetchVia(agent) }));
      expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['read']);
      await expect(client.callTool({ name: 'delete', arguments: {} })).rejects.toMatchObject({ code: -32011 });
    } finally {
      await client.close();
      await agent.close();
    }
  });

  it('a verified certificate that matches no entry, without a bearer token: 401, with the reason in the log and audit line', async () => {
    const answer = await as(gw, certs.unknownClient, TOOLS_LIST);
    expect(answer.status).toBe(401);
    expect(answer.json.error.code).toBe(-32010);
    const failure = gw.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'authentication failed' && l.provider === 'client_cert');
    expect(failure?.reason).toContain('matches no [[auth.client_certs]] entry');
    expect(failure?.reason).toContain('"unknown-client"');
    const audit = await gw.audit();
    expect(audit).toContainEqual(expect.objectContaining({ event_type: 'auth_failure', provider: 'client_cert', reason: failure?.reason }));
  });

  it('an Authorization header decides on its own: a valid key wins over the certificate, a bad one is refused', async () => {
    // The unknown certificate with a valid key: the key's identity and policy.
    const withKey = await as(gw, certs.unknownClient, TOOLS_LIST, bearer(apiKey.key));
    expect(withKey.status).toBe(200);
    expect(toolNames(withKey)).toEqual(['delete']);
    // The known certificate with the same key: still the key's identity, not the certificate's.
    const both = await as(gw, certs.knownClient, TOOLS_LIST, bearer(apiKey.key));
    expect(toolNames(both)).toEqual(['delete']);
    // The known certificate with a wrong token: 401, no fall-back to the certificate.
    const wrong = await as(gw, certs.knownClient, TOOLS_LIST, bearer(`${apiKey.prefix}_${'x'.repeat(43)}`));
    expect(wrong.status).toBe(401);
  });

  it('counts client_cert in the auth metrics', async () => {
    const agent = tlsAgent(certs.ca.cert, certs.knownClient);
    try {
      const metrics = await undiciText(agent, `${gw.url}/metrics`);
      expect(metrics).toMatch(/mcp_guard_auth_total\{provider="client_cert",result="success"\} [1-9]/);
      expect(metrics).toMatch(/mcp_guard_auth_total\{provider="client_cert",result="failure"\} [1-9]/);
    } finally {
      await agent.close();
    }
  });
});

describe('client_auth = "optional"', () => {
  let gw: TlsGateway;

  beforeAll(async () => {
    // This entry names its certificate by fingerprint, written as openssl prints it.
    gw = await startTlsGateway(config('optional', `fingerprint_sha256 = ${q(certs.knownClient.fingerprint)}`));
  }, 30_000);

  afterAll(async () => {
    await gw?.stop();
  });

  it('without a certificate: an API key is served, no credentials at all is 401', async () => {
    const withKey = await as(gw, undefined, TOOLS_LIST, bearer(apiKey.key));
    expect(withKey.status).toBe(200);
    expect(toolNames(withKey)).toEqual(['delete']);
    const nothing = await as(gw, undefined, TOOLS_LIST);
    expect(nothing.status).toBe(401);
  });

  it('a certificate that is presented must verify: one from another CA is disconnected, even with a valid key', async () => {
    await expect(as(gw, certs.foreignClient, TOOLS_LIST, bearer(apiKey.key))).rejects.toThrow();
    expect(gw.logs.some((l) => l.includes('client certificate refused'))).toBe(true);
  });

  it('a known certificate (matched by fingerprint) is its identity', async () => {
    const list = await as(gw, certs.knownClient, TOOLS_LIST);
    expect(list.status).toBe(200);
    expect(toolNames(list)).toEqual(['read']);
    const audit = await gw.audit();
    expect(audit).toContainEqual(expect.objectContaining({ event_type: 'auth_success', identity_id: 'known-service', provider: 'client_cert' }));
  });

  it('the subject alone does not make the identity here: the unknown certificate is 401', async () => {
    expect((await as(gw, certs.unknownClient, TOOLS_LIST)).status).toBe(401);
  });
});

describe("a client certificate's own rate_limit", () => {
  let gw: TlsGateway;

  beforeAll(async () => {
    // The identity window is burst / rate = 2 s with max 20; rate_limit = 1 makes it 2 per 2 s.
    gw = await startTlsGateway(config('require', 'subject_cn = "known-client"\nrate_limit = 1', '\n[rate_limit]\nrequests_per_second = 10\nburst_size = 20\n'));
  }, 30_000);

  afterAll(async () => {
    await gw?.stop();
  });

  it("applies to the certificate's identity, not the default", async () => {
    const agent = tlsAgent(certs.ca.cert, certs.knownClient);
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) statuses.push((await request(agent, `${gw.url}/mcp/web`, { body: TOOLS_LIST })).status);
      expect(statuses).toEqual([200, 200, 429]);
    } finally {
      await agent.close();
    }
    // Another identity (the API key) still has the default limit.
    const other = await as(gw, certs.unknownClient, TOOLS_LIST, bearer(apiKey.key));
    expect(other.status).toBe(200);
  });
});

async function undiciText(agent: ReturnType<typeof tlsAgent>, url: string): Promise<string> {
  const { fetch } = await import('undici');
  const res = await fetch(url, { dispatcher: agent });
  return res.text();
}
