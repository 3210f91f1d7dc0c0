/**
 * Identity and policy end to end, as a user meets them: keys made by `mcp-guard keygen`, JWTs
 * signed by keys a local JWKS server publishes, the official SDK client sending Authorization,
 * and real upstreams (server-everything over stdio; a recording HTTP server that shows what
 * reaches an upstream).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { curlPost, everythingStdio, q, startGateway, type RunningGateway } from '../helpers/gateway.js';
import { JwksServer } from '../helpers/jwks-server.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/recording-upstream.js';
import { connectSdk, resultText } from '../helpers/sdk-client.js';

interface IssuedKey {
  key: string;
  block: string;
}

/** `mcp-guard keygen`, as a user runs it: the key line and the TOML block. */
async function keygen(args: string[]): Promise<IssuedKey> {
  const r = await runCli(['keygen', ...args]);
  expect(r.code, r.stderr).toBe(0);
  const key = r.stdout.split('\n').find((line) => line.startsWith('mcp_'));
  const block = r.stdout.slice(r.stdout.indexOf('[[auth.api_keys]]'));
  if (!key) throw new Error(`keygen printed no key:\n${r.stdout}`);
  return { key, block };
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const TOOLS_LIST = { jsonrpc: '2.0', method: 'tools/list', id: 1 };
const callTool = (id: number, name: string, args: Record<string, unknown> = {}) => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name, arguments: args },
});

describe('API keys', () => {
  let reader: IssuedKey;
  let admin: IssuedKey;
  let webOnly: IssuedKey;
  let recording: RecordingUpstream;
  let gw: RunningGateway;

  beforeAll(async () => {
    await ensureBuilt();
    [reader, admin, webOnly] = await Promise.all([
      keygen(['--id', 'reader', '--tools', 'echo,get-*']),
      keygen(['--id', 'admin']),
      keygen(['--id', 'web-only', '--tools', 'recorded']),
    ]);
    recording = await startRecordingUpstream('http', { tools: ['recorded', 'other'] });
    gw = await startGateway(
      `
[upstream]
headers = { "X-Upstream-Credential" = "\${UPSTREAM_TOKEN}" }

${everythingStdio()}

[[upstream.servers]]
name = "web"
path_prefix = "/web"
url = ${q(recording.url)}

[auth]
max_failures_per_minute = 5

${reader.block}
${admin.block}
${webOnly.block}
servers = ["web"]
`,
      { env: { UPSTREAM_TOKEN: 'upstream-secret-value' } },
    );
  }, 120_000);

  afterAll(async () => {
    await gw?.stop();
    await recording?.stop();
  });

  it('no credentials: 401 with a Bearer challenge that points at the resource metadata, and a body that says nothing more', async () => {
    const res = await curlPost(`${gw.url}/mcp/everything`, TOOLS_LIST);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe(`Bearer realm="mcp-guard", resource_metadata="${gw.url}/.well-known/oauth-protected-resource"`);
    expect(res.json).toEqual({ jsonrpc: '2.0', id: null, error: { code: -32010, message: 'Unauthorized: missing or invalid credentials' } });
  });

  it('an unknown server, a prefix route and /mcp get the 401 before anything is said about servers', async () => {
    for (const path of ['/mcp/no-such-server', '/web/x', '/mcp', '/nowhere']) {
      const res = await curlPost(`${gw.url}${path}`, TOOLS_LIST);
      expect(res.status, path).toBe(401);
      expect(res.text).not.toMatch(/available|everything|web/);
    }
  });

  it('a wrong key gets the same body; the reason is in the log, the key is not', async () => {
    const wrong = `${reader.key.slice(0, 13)}${'A'.repeat(reader.key.length - 13)}`;
    const res = await curlPost(`${gw.url}/mcp/everything`, TOOLS_LIST, bearer(wrong));
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer realm="mcp-guard", error="invalid_token", resource_metadata=/);
    expect(res.json.error.message).toBe('Unauthorized: missing or invalid credentials');
    const line = gw.logs.find((l) => l.includes('"authentication failed"') && l.includes('api key: mismatch'));
    expect(line).toBeDefined();
    expect(gw.logs.join('\n')).not.toContain(wrong);
  });

  it('the SDK client as "reader" sees only its tools, calls an allowed one, and is refused the others as a JSON-RPC error', async () => {
    const { client } = await connectSdk(`${gw.url}/mcp/everything`, { headers: bearer(reader.key) });
    try {
      const { tools } = await client.listTools();
      expect(tools.map((t) => t.name).sort()).toEqual([
        'echo',
        'get-annotated-message',
        'get-env',
        'get-resource-links',
        'get-resource-reference',
        'get-structured-content',
        'get-sum',
        'get-tiny-image',
      ]);
      expect(resultText(await client.callTool({ name: 'echo', arguments: { message: 'hi' } }))).toBe('Echo: hi');
      const refused = await client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 1 } }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(McpError);
      expect(refused).toMatchObject({ code: -32011, message: expect.stringContaining('may not call tool "trigger-long-running-operation"') });
    } finally {
      await client.close();
    }
  });

  it('"admin" (no allowed_tools) sees every tool', async () => {
    const res = await curlPost(`${gw.url}/mcp/everything`, TOOLS_LIST, bearer(admin.key));
    expect(res.status).toBe(200);
    expect(res.json.result.tools.map((t: { name: string }) => t.name)).toContain('trigger-long-running-operation');
  });

  it('a batch is checked element by element: allowed calls go through, the forbidden one is answered in its place', async () => {
    const res = await curlPost(
      `${gw.url}/mcp/everything`,
      [callTool(1, 'echo', { message: 'a' }), callTool(2, 'gzip-file-as-resource'), callTool(3, 'get-sum', { a: 1, b: 2 })],
      bearer(reader.key),
    );
    expect(res.status).toBe(200);
    expect(res.json.map((r: { id: number }) => r.id)).toEqual([1, 2, 3]);
    expect(res.json[0].result.content[0].text).toBe('Echo: a');
    expect(res.json[1].error).toMatchObject({ code: -32011 });
    expect(res.json[2].result.content[0].text).toMatch(/3/);
  });

  it('a refused call never reaches the upstream; an allowed one does', async () => {
    const before = recording.requests.length;
    const refused = await curlPost(`${gw.url}/mcp/web`, callTool(7, 'other'), bearer(webOnly.key));
    expect(refused.status).toBe(200);
    expect(refused.json.error.code).toBe(-32011);
    const allowed = await curlPost(`${gw.url}/mcp/web`, callTool(8, 'recorded'), bearer(webOnly.key));
    expect(allowed.json.result.content[0].text).toBe('called recorded');
    const calls = recording.requests.slice(before).filter((r) => r.rpcMethod === 'tools/call');
    expect(calls.map((r) => r.tool)).toEqual(['recorded']);
  });

  it('credentials never cross the gateway: the upstream gets its own configured header, never the client Authorization', async () => {
    await curlPost(`${gw.url}/mcp/web`, TOOLS_LIST, bearer(admin.key));
    const posts = recording.requests.filter((r) => r.method === 'POST');
    expect(posts.length).toBeGreaterThan(0);
    for (const r of posts) {
      expect(r.headers['authorization']).toBeUndefined();
      expect(r.headers['x-upstream-credential']).toBe('upstream-secret-value');
      expect(JSON.stringify(r.headers)).not.toContain('mcp_');
    }
    expect(gw.logs.join('\n')).not.toContain('upstream-secret-value');
  });

  it('servers = [...]: an identity reaches no other server, by name or prefix, and is not told about them', async () => {
    const byName = await curlPost(`${gw.url}/mcp/everything`, TOOLS_LIST, bearer(webOnly.key));
    expect(byName.status).toBe(403);
    expect(byName.json.error).toMatchObject({ code: -32011, message: 'Forbidden: identity "web-only" may not use server "everything"' });
    const byPrefix = await curlPost(`${gw.url}/everything`, TOOLS_LIST, bearer(webOnly.key));
    expect(byPrefix.status).toBe(403);
    const unknown = await curlPost(`${gw.url}/mcp/nope`, TOOLS_LIST, bearer(webOnly.key));
    expect(unknown.status).toBe(404);
    expect(unknown.json).toEqual({ error: 'Server not found: nope', available: ['web'] });
    const listed = await curlPost(`${gw.url}/mcp/web`, TOOLS_LIST, bearer(webOnly.key));
    expect(listed.json.result.tools.map((t: { name: string }) => t.name)).toEqual(['recorded']);
  });

  it('a session belongs to the identity that opened it', async () => {
    const { client, transport } = await connectSdk(`${gw.url}/mcp/everything`, { headers: bearer(admin.key) });
    try {
      const res = await curlPost(`${gw.url}/mcp/everything`, TOOLS_LIST, { ...bearer(reader.key), 'mcp-session-id': transport.sessionId as string });
      expect(res.status).toBe(404);
      expect((await client.listTools()).tools.length).toBeGreaterThan(10);
    } finally {
      await client.close();
    }
  });

  it("health, readiness and routes stay open; the gateway's own paths need no key", async () => {
    for (const path of ['/health', '/live', '/ready', '/routes']) {
      const res = await fetch(`${gw.url}${path}`);
      expect(res.status, path).toBe(200);
    }
    const metadata = await fetch(`${gw.url}/.well-known/oauth-protected-resource`);
    expect(metadata.status).toBe(200);
    expect((await metadata.json()) as unknown).toEqual({ resource: gw.url, bearer_methods_supported: ['header'], resource_name: 'MCP Guard' });
  });
});

describe('JWT from a JWKS', () => {
  let jwks: JwksServer;
  let gw: RunningGateway;
  let kid: string;

  beforeAll(async () => {
    jwks = await JwksServer.start();
    kid = (await jwks.addKey('RS256')).kid;
    gw = await startGateway(
      `
${everythingStdio()}

${everythingStdio('second')}

[auth]
protect_routes = true
protect_metrics = true

[auth.jwt]
mode = "jwks"
jwks_url = ${q(jwks.url)}
issuer = ${q(jwks.issuer)}
audience = "mcp-guard"
servers_claim = "mcp_servers"
authorization_servers = ["https://auth.example.com"]

[auth.jwt.scope_tool_mapping]
"read" = ["echo", "get-sum"]
"admin" = ["*"]
`,
      { auth: { jwt: { cooldownMs: 0 } } },
    );
  }, 120_000);

  afterAll(async () => {
    await gw?.stop();
    await jwks?.stop();
  });

  const token = (claims: Record<string, unknown>, options: Parameters<JwksServer['sign']>[1] = {}) =>
    jwks.sign({ mcp_servers: ['everything'], ...claims }, { kid, issuer: jwks.issuer, audience: 'mcp-guard', subject: 'alice', ...options });

  it('the SDK client with a "read" token lists and calls only the mapped tools', async () => {
    const { client } = await connectSdk(`${gw.url}/mcp/everything`, { headers: bearer(await token({ scope: 'read openid' })) });
    try {
      expect((await client.listTools()).tools.map((t) => t.name).sort()).toEqual(['echo', 'get-sum']);
      expect(resultText(await client.callTool({ name: 'get-sum', arguments: { a: 2, b: 3 } }))).toMatch(/5/);
      await expect(client.callTool({ name: 'get-env', arguments: {} })).rejects.toMatchObject({ code: -32011 });
    } finally {
      await client.close();
    }
  });

  it('scopes as an array; a scope mapped to "*" gets every tool; no mapped scope gets none', async () => {
    const admin = await curlPost(`${gw.url}/mcp/everything`, TOOLS_LIST, bearer(await token({ scope: ['admin'] })));
    expect(admin.json.result.tools.length).toBeGreaterThan(10);
    const none = await curlPost(`${gw.url}/mcp/everything`, TOOLS_LIST, bearer(await token({ scope: 'profile' })));
    expect(none.json.result.tools).toEqual([]);
  });

  it('the servers claim limits which servers a token reaches', async () => {
    const res = await curlPost(`${gw.url}/mcp/second`, TOOLS_LIST, bearer(await token({ scope: 'admin' })));
    expect(res.status).toBe(403);
    const both = await curlPost(`${gw.url}/mcp/second`, TOOLS_LIST, bearer(await token({ scope: 'admin', mcp_servers: 'everything second' })));
    expect(both.status).toBe(200);
  });

  it('every bad token is a plain 401; the log says which check failed', async () => {
    const other = await jwks.createUnpublishedKey('RS256');
    const none = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: 'alice', exp: 9_999_999_999 })).toString('base64url')}.`;
    const cases: Array<[string, string]> = [
      [await token({}, { expiresIn: '1 hour ago' }), 'jwt: expired'],
      [await token({}, { audience: 'someone-else' }), 'jwt: wrong audience'],
      [await token({}, { issuer: 'https://evil.example' }), 'jwt: wrong issuer'],
      [await token({}, { key: other }), 'jwt: unknown key'],
      [none, 'jwt: algorithm not allowed'],
    ];
    for (const [bad, reason] of cases) {
      const res = await curlPost(`${gw.url}/mcp/everything`, TOOLS_LIST, bearer(bad));
      expect(res.status, reason).toBe(401);
      expect(res.json.error.message).toBe('Unauthorized: missing or invalid credentials');
      expect(
        gw.logs.some((l) => l.includes(reason)),
        reason,
      ).toBe(true);
    }
  });

  it('a token too large for a header is refused before any verification (431 from the HTTP parser)', async () => {
    const fetches = jwks.fetches;
    const res = await curlPost(`${gw.url}/mcp/everything`, TOOLS_LIST, bearer(`${'a'.repeat(8_000)}.${'b'.repeat(9_000)}.c`));
    expect(res.status).toBe(431);
    expect(jwks.fetches).toBe(fetches);
  });

  it('a key added to the JWKS after start (rotation) is used as soon as a token names it', async () => {
    const rotated = await jwks.addKey('ES256');
    const res = await curlPost(`${gw.url}/mcp/everything`, TOOLS_LIST, bearer(await token({ scope: 'read' }, { kid: rotated.kid })));
    expect(res.status).toBe(200);
  });

  it('publishes protected resource metadata (RFC 9728) with the authorization servers and scopes', async () => {
    const res = await fetch(`${gw.url}/.well-known/oauth-protected-resource`);
    expect((await res.json()) as unknown).toEqual({
      resource: gw.url,
      authorization_servers: ['https://auth.example.com'],
      scopes_supported: ['read', 'admin'],
      bearer_methods_supported: ['header'],
      resource_name: 'MCP Guard',
    });
    const suffixed = await fetch(`${gw.url}/.well-known/oauth-protected-resource/mcp/everything`);
    expect(((await suffixed.json()) as { resource: string }).resource).toBe(`${gw.url}/mcp/everything`);
  });

  it('protect_routes: /routes needs a token and lists only the servers it reaches; /health does not', async () => {
    expect((await fetch(`${gw.url}/routes`)).status).toBe(401);
    const res = await fetch(`${gw.url}/routes`, { headers: bearer(await token({ scope: 'read' })) });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { routes: Array<{ name: string }> }).routes.map((r) => r.name)).toEqual(['everything']);
    expect((await fetch(`${gw.url}/health`)).status).toBe(200);
  });

  it('protect_metrics: /metrics needs a token', async () => {
    expect((await fetch(`${gw.url}/metrics`)).status).toBe(401);
    const res = await fetch(`${gw.url}/metrics`, { headers: bearer(await token({ scope: 'read' })) });
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('mcp_guard_requests_total');
  });
});

describe('auth under load and at the edges', () => {
  let good: IssuedKey;
  let recording: RecordingUpstream;
  let gw: RunningGateway;
  const LEGACY_KEY = 'mcp_legacy-key-from-the-earlier-gateway';

  beforeAll(async () => {
    await ensureBuilt();
    good = await keygen(['--id', 'good', '--tools', 'tool-00?,tool-4*']);
    const { createHash } = await import('node:crypto');
    const legacyHash = createHash('sha256').update(LEGACY_KEY).digest('base64');
    recording = await startRecordingUpstream('http', { tools: Array.from({ length: 500 }, (_, i) => `tool-${String(i).padStart(3, '0')}`), pageSize: 50 });
    gw = await startGateway(
      `
[[upstream.servers]]
name = "many"
path_prefix = "/many"
url = ${q(recording.url)}

[auth]
max_failures_per_minute = 5

${good.block}

[[auth.api_keys]]
id = "legacy"
key_hash = ${q(legacyHash)}

[auth.jwt]
mode = "simple"
secret = "\${JWT_SECRET}"
`,
      { env: { JWT_SECRET: 'a-shared-secret-that-is-long-enough-for-hs256' } },
    );
  }, 120_000);

  afterAll(async () => {
    await gw?.stop();
    await recording?.stop();
  });

  it('tools/list is filtered on every page: the SDK client paging through 500 tools gets exactly its 10 + 100', async () => {
    const { client } = await connectSdk(`${gw.url}/mcp/many`, { headers: bearer(good.key) });
    try {
      const names: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page = await client.listTools(cursor ? { cursor } : {});
        names.push(...page.tools.map((t) => t.name));
        cursor = page.nextCursor;
        pages++;
      } while (cursor);
      expect(pages).toBe(10);
      expect(names).toHaveLength(110);
      expect(names.every((n) => /^tool-(00\d|4\d\d)$/.test(n))).toBe(true);
    } finally {
      await client.close();
    }
  });

  it('tools/list answered as an SSE stream is filtered too', async () => {
    const res = await fetch(`${gw.url}/mcp/many`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...bearer(good.key) },
      body: JSON.stringify(TOOLS_LIST),
    });
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const data = (await res.text()).split('\n').find((l) => l.startsWith('data: '));
    const message = JSON.parse(data!.slice(6)) as { result: { tools: Array<{ name: string }> } };
    expect(message.result.tools.map((t) => t.name)).toEqual([
      'tool-000',
      'tool-001',
      'tool-002',
      'tool-003',
      'tool-004',
      'tool-005',
      'tool-006',
      'tool-007',
      'tool-008',
      'tool-009',
    ]);
  });

  it("the earlier gateway's SHA-256 key still works (and start-up warned about it)", async () => {
    const res = await curlPost(`${gw.url}/mcp/many`, TOOLS_LIST, bearer(LEGACY_KEY));
    expect(res.status).toBe(200);
    expect(res.json.result.tools).toHaveLength(50);
    expect(gw.app.gateway.config.warnings.join()).toMatch(/legacy|SHA-256/);
  });

  it('an HS256 token (mode "simple") is accepted beside the API keys', async () => {
    const { SignJWT } = await import('jose');
    const jwt = await new SignJWT({ sub: 'svc' })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode('a-shared-secret-that-is-long-enough-for-hs256'));
    const res = await curlPost(`${gw.url}/mcp/many`, TOOLS_LIST, bearer(jwt));
    expect(res.status).toBe(200);
  });

  it('a flood of wrong keys: the guessing address is throttled, a known-good key from it still works, other addresses are untouched', async () => {
    // Warm the cache with the good key: known-good keys are checked by digest, not argon2.
    expect((await curlPost(`${gw.url}/mcp/many`, TOOLS_LIST, bearer(good.key))).status).toBe(200);
    const prefix = good.key.slice(0, 13);
    const flood = await Promise.all(
      Array.from({ length: 40 }, (_, i) => curlPost(`${gw.url}/mcp/many`, TOOLS_LIST, bearer(`${prefix}${String(i).padStart(43, 'x')}`))),
    );
    const statuses = flood.map((r) => r.status);
    expect(statuses.filter((s) => s === 401).length).toBeGreaterThanOrEqual(5);
    expect(statuses.every((s) => s === 401 || s === 429 || s === 503)).toBe(true);
    const throttled = await curlPost(`${gw.url}/mcp/many`, TOOLS_LIST, bearer(`${prefix}${'y'.repeat(43)}`));
    expect(throttled.status).toBe(429);
    expect(Number(throttled.headers.get('retry-after'))).toBeGreaterThan(0);
    // The same address, with the key it already proved: served.
    expect((await curlPost(`${gw.url}/mcp/many`, TOOLS_LIST, bearer(good.key))).status).toBe(200);
    // Another address (127.0.0.2 on the loopback), first use of the legacy key: served.
    const { Agent, request } = await import('undici');
    const other = new Agent({ connect: { localAddress: '127.0.0.2' } });
    try {
      const res = await request(`${gw.url}/mcp/many`, {
        method: 'POST',
        dispatcher: other,
        headers: { 'content-type': 'application/json', ...bearer(LEGACY_KEY) },
        body: JSON.stringify(TOOLS_LIST),
      });
      expect(res.statusCode).toBe(200);
      await res.body.dump();
    } finally {
      await other.close();
    }
  });
});
