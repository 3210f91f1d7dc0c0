/**
 * The seed guide's stories in examples/ run as written: each config file is loaded as it is, with
 * only its documented ${VAR}s pointing at reference servers on free local ports, and every server
 * in it answers a plain curl-style tools/list through the gateway.
 */
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { EverythingServer } from '../helpers/everything.js';
import { curlPost, startGateway, type RunningGateway } from '../helpers/gateway.js';
import { JwksServer } from '../helpers/jwks-server.js';

const example = (name: string) => readFileSync(new URL(`../../examples/${name}`, import.meta.url), 'utf8');
const servers: EverythingServer[] = [];
const gateways: RunningGateway[] = [];

afterAll(async () => {
  await Promise.all(gateways.map((g) => g.stop()));
  await Promise.all(servers.map((s) => s.stop()));
});

async function everything(transport: 'streamableHttp' | 'sse'): Promise<EverythingServer> {
  const server = await EverythingServer.start(transport);
  servers.push(server);
  return server;
}

async function toolCount(gw: RunningGateway, name: string, token?: string): Promise<number> {
  const res = await curlPost(`${gw.url}/mcp/${name}`, { jsonrpc: '2.0', method: 'tools/list', id: 1 }, token ? { authorization: `Bearer ${token}` } : {});
  expect(res.status, `${name}: ${res.text}`).toBe(200);
  return (res.json.result.tools as unknown[]).length;
}

describe('examples/', () => {
  it('mcp-guard.toml (the quick start) serves server-everything and server-filesystem', async () => {
    const gw = await startGateway(readFileSync(new URL('../../mcp-guard.toml', import.meta.url), 'utf8'));
    gateways.push(gw);
    expect(await toolCount(gw, 'everything')).toBeGreaterThan(5);
    expect(await toolCount(gw, 'filesystem')).toBeGreaterThan(5);
    const res = await curlPost(`${gw.url}/fs`, { jsonrpc: '2.0', method: 'tools/call', id: 2, params: { name: 'list_allowed_directories', arguments: {} } });
    expect(res.json.result.content[0].text).toMatch(/examples/);
  });

  it('mixed-transports.toml: stdio, streamable HTTP and SSE behind one gateway', async () => {
    const [http, sse] = await Promise.all([everything('streamableHttp'), everything('sse')]);
    const gw = await startGateway(example('mixed-transports.toml'), { env: { API_URL: http.url, STREAM_URL: sse.url } });
    gateways.push(gw);
    expect(await toolCount(gw, 'local')).toBeGreaterThan(5);
    expect(await toolCount(gw, 'api')).toBeGreaterThan(5);
    expect(await toolCount(gw, 'stream')).toBeGreaterThan(5);
    // The prefix routes, with strip_prefix, reach the same servers.
    const viaPrefix = await curlPost(`${gw.url}/api`, { jsonrpc: '2.0', method: 'tools/list', id: 3 });
    expect(viaPrefix.json.result.tools.length).toBeGreaterThan(5);
    const viaStream = await curlPost(`${gw.url}/stream`, { jsonrpc: '2.0', method: 'tools/list', id: 4 });
    expect(viaStream.json.result.tools.length).toBeGreaterThan(5);
  });

  it('microservices.toml: three HTTP services, each with its own headers, behind JWTs from a JWKS', async () => {
    const [users, orders, inventory] = await Promise.all([everything('streamableHttp'), everything('streamableHttp'), everything('streamableHttp')]);
    const jwks = await JwksServer.start();
    try {
      const { kid } = await jwks.addKey('RS256');
      const gw = await startGateway(example('microservices.toml'), {
        env: {
          USERS_URL: users.url,
          ORDERS_URL: orders.url,
          INVENTORY_URL: inventory.url,
          INVENTORY_TOKEN: 'inventory-secret-token',
          JWKS_URL: jwks.url,
          JWT_ISSUER: jwks.issuer,
        },
      });
      gateways.push(gw);
      expect((await curlPost(`${gw.url}/mcp/users`, { jsonrpc: '2.0', method: 'tools/list', id: 1 })).status).toBe(401);
      const token = await jwks.sign({ sub: 'svc' }, { kid, issuer: jwks.issuer, audience: 'mcp-guard' });
      for (const name of ['users', 'orders', 'inventory']) expect(await toolCount(gw, name, token)).toBeGreaterThan(5);
      expect(gw.logs.join('\n')).not.toContain('inventory-secret-token');
      await gw.stop();
    } finally {
      await jwks.stop();
    }
  });

  it('virtual-servers.toml: both servers behind one endpoint, their tools namespaced', async () => {
    const gw = await startGateway(example('virtual-servers.toml'));
    gateways.push(gw);
    const res = await curlPost(`${gw.url}/mcp/workspace`, { jsonrpc: '2.0', method: 'tools/list', id: 1 });
    const names = (res.json.result.tools as Array<{ name: string }>).map((t) => t.name);
    expect(names).toContain('filesystem__read_text_file');
    expect(names).toContain('everything__echo');
    const viaPrefix = await curlPost(`${gw.url}/workspace`, {
      jsonrpc: '2.0',
      method: 'tools/call',
      id: 2,
      params: { name: 'everything__echo', arguments: { message: 'one endpoint' } },
    });
    expect(viaPrefix.json.result.content[0].text).toBe('Echo: one endpoint');
  });

  it('two-stdio-servers.toml validates with the hash keygen printed (its server-memory comes from the registry at run time)', async () => {
    const { parseConfig } = await import('../../src/config/load.js');
    const { generateApiKey, hashApiKey } = await import('../../src/auth/key-format.js');
    const hash = await hashApiKey(generateApiKey().key);
    const config = parseConfig(example('two-stdio-servers.toml'), { env: { DEVELOPER_KEY_HASH: hash } });
    expect(config.servers.map((s) => s.name)).toEqual(['filesystem', 'memory']);
    expect(config.auth?.api_keys).toEqual([{ id: 'developer', key_hash: hash }]);
    expect(config.warnings.join(' ')).toMatch(/ignored/);
  });
});
