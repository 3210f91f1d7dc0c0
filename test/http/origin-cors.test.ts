/**
 * DNS rebinding protection, CORS and the security headers, as browsers and clients meet them:
 * real gateways on 127.0.0.1 in front of real upstreams (server-everything over stdio, and the
 * recording HTTP server), spoken to over real HTTP with undici.request, which (unlike fetch)
 * lets a test send any Host header, as a rebinding page's browser would.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { SignJWT } from 'jose';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type App } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/observability/logger.js';
import { everythingStdio, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';
import { rawHttp } from '../helpers/raw-http.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/recording-upstream.js';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any;
}

/** One request, with exactly these headers (Host included); the body is read to the end. */
async function send(base: string, path: string, init: { method?: string; headers?: Record<string, string>; body?: unknown } = {}): Promise<Answer> {
  const res = await request(`${base}${path}`, {
    method: (init.method ?? (init.body === undefined ? 'GET' : 'POST')) as 'GET',
    headers: init.headers ?? {},
    ...(init.body === undefined ? {} : { body: typeof init.body === 'string' ? init.body : JSON.stringify(init.body) }),
  });
  const text = await res.body.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.statusCode, headers: res.headers, text, json };
}

/** The headers of a response that does not end (an SSE stream); the stream is then closed. */
async function streamHeaders(base: string, path: string, headers: Record<string, string>): Promise<{ status: number; headers: Answer['headers'] }> {
  const res = await request(`${base}${path}`, { method: 'GET', headers });
  res.body.destroy();
  return { status: res.statusCode, headers: res.headers };
}

const JSON_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
const INITIALIZE = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'origin-test', version: '1.0.0' } },
};
const INITIALIZED = { jsonrpc: '2.0', method: 'notifications/initialized' };
const TOOLS_LIST = { jsonrpc: '2.0', id: 2, method: 'tools/list' };

const portOf = (gw: { url: string }) => new URL(gw.url).port;

function expectForbidden(res: Answer, what: 'Host' | 'Origin'): void {
  expect(res.status).toBe(403);
  expect(res.json).toEqual({ jsonrpc: '2.0', id: null, error: { code: -32011, message: `Forbidden: ${what} not allowed` } });
}

function corsHeadersOf(res: { headers: Answer['headers'] }): string[] {
  return Object.keys(res.headers).filter((name) => name.startsWith('access-control-'));
}

const SECURITY = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'cross-origin-resource-policy': 'same-origin',
};

function expectSecurityHeaders(res: { headers: Answer['headers'] }, cacheControl = 'no-store'): void {
  expect(res.headers).toMatchObject({ ...SECURITY, 'cache-control': cacheControl });
  expect(res.headers['x-powered-by']).toBeUndefined();
  expect(res.headers['server']).toBeUndefined();
}

/** A gateway whose config says `host` while it listens on 127.0.0.1 (tests only reach loopback). */
async function startAs(host: string, toml: string): Promise<{ url: string; app: App; logs: string[]; stop(): Promise<void> }> {
  const config = parseConfig(toml, { env: {} });
  config.server.host = host;
  config.server.port = 0;
  const logs: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      logs.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  const app = buildApp(config, { logger: createLogger({ level: 'debug', destination }) });
  const url = await app.app.listen({ host: '127.0.0.1', port: 0 });
  await app.start();
  return { url, app, logs, stop: () => app.stop() };
}

describe('a gateway on a loopback address, default settings', () => {
  let gw: RunningGateway;
  let port: string;

  beforeAll(async () => {
    gw = await startGateway(everythingStdio());
    port = portOf(gw);
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it('refuses a DNS rebinding attempt (Host: evil.example, Origin: http://evil.example) and serves the same request from 127.0.0.1', async () => {
    const attack = await send(gw.url, '/mcp/everything', {
      headers: { ...JSON_HEADERS, host: `evil.example:${port}`, origin: `http://evil.example:${port}` },
      body: INITIALIZE,
    });
    expectForbidden(attack, 'Host');
    expect(attack.headers['mcp-session-id']).toBeUndefined();

    // The same exchange as a local client sends it, with the headers the conformance suite uses.
    const local = { ...JSON_HEADERS, host: `127.0.0.1:${port}`, origin: `http://127.0.0.1:${port}` };
    const init = await send(gw.url, '/mcp/everything', { headers: local, body: INITIALIZE });
    expect(init.status).toBe(200);
    expect(init.json.result.serverInfo).toBeDefined();
    const session = init.headers['mcp-session-id'] as string;
    expect(session).toMatch(/\S/);
    const initialized = await send(gw.url, '/mcp/everything', { headers: { ...local, 'mcp-session-id': session }, body: INITIALIZED });
    expect(initialized.status).toBe(202);
    const list = await send(gw.url, '/mcp/everything', { headers: { ...local, 'mcp-session-id': session }, body: TOOLS_LIST });
    expect(list.status).toBe(200);
    expect(list.json.result.tools.length).toBeGreaterThan(0);
  });

  it('checks Host and Origin each on their own', async () => {
    // Only the Host gives it away (a same-origin GET sends no Origin).
    expectForbidden(await send(gw.url, '/mcp/everything', { headers: { ...JSON_HEADERS, host: 'evil.example' }, body: TOOLS_LIST }), 'Host');
    // Only the Origin (a page elsewhere posting to http://127.0.0.1).
    expectForbidden(
      await send(gw.url, '/mcp/everything', { headers: { ...JSON_HEADERS, host: `127.0.0.1:${port}`, origin: 'http://evil.example' }, body: TOOLS_LIST }),
      'Origin',
    );
  });

  it.each(['evil.example', 'EVIL.example:3000', 'localhost.evil.example', '127.0.0.1.nip.io', '[::2]:3000', '10.0.0.5:3000'])(
    'refuses Host %s on an MCP endpoint',
    async (host) => {
      expectForbidden(await send(gw.url, '/mcp/everything', { headers: { ...JSON_HEADERS, host }, body: TOOLS_LIST }), 'Host');
    },
  );

  it('serves the loopback names on any port, and clients that send no Origin', async () => {
    for (const host of [
      `127.0.0.1:${port}`,
      `localhost:${port}`,
      `LOCALHOST.:${port}`,
      `[::1]:${port}`,
      `[0:0:0:0:0:0:0:1]:${port}`,
      '127.0.0.1',
      'localhost:8080',
    ]) {
      const res = await send(gw.url, '/mcp/everything', { headers: { ...JSON_HEADERS, host }, body: TOOLS_LIST });
      expect(res.status, host).toBe(200);
      expect(res.json.result.tools.length).toBeGreaterThan(0);
    }
  });

  it('serves pages on loopback origins, and refuses every other origin, "null" and malformed ones', async () => {
    for (const origin of ['http://localhost:5173', 'https://127.0.0.1', `http://[::1]:${port}`]) {
      const res = await send(gw.url, '/mcp/everything', { headers: { ...JSON_HEADERS, origin }, body: TOOLS_LIST });
      expect(res.status, origin).toBe(200);
    }
    for (const origin of [
      'http://evil.example',
      'null',
      'file://',
      'http://localhost.evil.example',
      `http://127.0.0.1:${port}/path`,
      'http://localhost:5173, http://evil.example',
      '',
    ]) {
      expectForbidden(await send(gw.url, '/mcp/everything', { headers: { ...JSON_HEADERS, origin }, body: TOOLS_LIST }), 'Origin');
    }
  });

  it('checks every route, GET requests and 404s included', async () => {
    for (const path of ['/routes', '/metrics', '/health', '/ready', '/mcp/everything', '/mcp/nope', '/nowhere', '/.well-known/oauth-protected-resource']) {
      expectForbidden(await send(gw.url, path, { headers: { host: 'evil.example' } }), 'Host');
      expectForbidden(await send(gw.url, path, { headers: { origin: 'https://evil.example' } }), 'Origin');
    }
  });

  it('monitoring routes also accept a Host rebinding cannot produce (an IP address), other routes do not', async () => {
    for (const path of ['/health', '/live', '/ready', '/metrics']) {
      expect((await send(gw.url, path, { headers: { host: '10.1.2.3:3000' } })).status, path).toBe(200);
    }
    expectForbidden(await send(gw.url, '/routes', { headers: { host: '10.1.2.3:3000' } }), 'Host');
    expectForbidden(await send(gw.url, '/mcp/everything', { headers: { ...JSON_HEADERS, host: '10.1.2.3:3000' }, body: TOOLS_LIST }), 'Host');
    // HTTP/1.0 may omit Host: fine for a probe, not for anything else.
    expect((await rawHttp(gw.url, 'GET /live HTTP/1.0\r\n')).status).toBe(200);
    expect((await rawHttp(gw.url, 'GET /routes HTTP/1.0\r\n')).status).toBe(403);
  });

  it('answers a Host that is not host[:port] with 400, whatever the settings', async () => {
    // Over a plain socket: undici itself refuses to send some of these.
    for (const host of ['evil.example", x="y', 'user@127.0.0.1', '127.0.0.1:99999', '127.0.0.1/x', '127.0.0.1,evil.example', '[::1', '[evil]:80', '']) {
      const res = await rawHttp(gw.url, `GET /health HTTP/1.1\r\nHost: ${host}\r\n`);
      expect(res.status, host).toBe(400);
      expect(res.json).toEqual({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Bad Request: invalid Host header' } });
    }
  });

  it('refuses before the body is read (malformed JSON is a 403, not a 400), and logs the refused value', async () => {
    const res = await send(gw.url, '/mcp/everything', { headers: { ...JSON_HEADERS, host: 'evil.example' }, body: '{not json' });
    expectForbidden(res, 'Host');
    expect(gw.logs.some((line) => line.includes('request refused: Host not allowed') && line.includes('evil.example'))).toBe(true);
  });

  it('sends no CORS headers and answers no preflight while [server.cors] is off', async () => {
    const preflight = await send(gw.url, '/mcp/everything', {
      method: 'OPTIONS',
      headers: { origin: 'http://localhost:5173', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
    expect(preflight.status).toBe(405);
    expect(corsHeadersOf(preflight)).toEqual([]);
    const post = await send(gw.url, '/mcp/everything', { headers: { ...JSON_HEADERS, origin: 'http://localhost:5173' }, body: TOOLS_LIST });
    expect(post.status).toBe(200);
    expect(corsHeadersOf(post)).toEqual([]);
    expect(post.headers['vary']).toBeUndefined();
  });

  describe('security headers', () => {
    it("are on every kind of answer: MCP JSON, health, metrics, routes, errors, refusals (the HTTP parser's too) and 404s", async () => {
      const raw = async (head: string, body?: string): Promise<Answer> => {
        const res = await rawHttp(gw.url, head, body);
        return {
          status: res.status,
          headers: Object.fromEntries(Object.entries(res.headers).map(([k, v]) => [k, v.join(', ')])),
          text: res.body,
          json: res.json,
        };
      };
      const answers: Array<[string, Answer]> = [
        ['MCP result', await send(gw.url, '/mcp/everything', { headers: JSON_HEADERS, body: TOOLS_LIST })],
        ['parse error', await send(gw.url, '/mcp/everything', { headers: JSON_HEADERS, body: '{' })],
        ['405', await send(gw.url, '/mcp/everything', { method: 'PUT', headers: JSON_HEADERS, body: TOOLS_LIST })],
        ['unknown server', await send(gw.url, '/mcp/nope', { headers: JSON_HEADERS, body: TOOLS_LIST })],
        ['no route', await send(gw.url, '/nowhere')],
        ['framework 404', await send(gw.url, '/health', { method: 'DELETE' })],
        ['unsafe path', await raw('POST /everything/%2e%2e/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n', JSON.stringify(TOOLS_LIST))],
        ['refused Host', await send(gw.url, '/health', { headers: { host: 'evil.example' } })],
        ['invalid Host', await send(gw.url, '/health', { headers: { host: 'a@b' } })],
        // Refused by Node's HTTP parser before any route runs (a header line without a colon).
        ['parser refusal', await raw('POST /mcp/everything HTTP/1.1\r\nHost: 127.0.0.1\r\nNot a header\r\n')],
        ['health', await send(gw.url, '/health')],
        ['ready', await send(gw.url, '/ready')],
        ['routes', await send(gw.url, '/routes')],
        ['metrics', await send(gw.url, '/metrics')],
      ];
      for (const [what, res] of answers) {
        expect(res.headers, what).toMatchObject({ ...SECURITY, 'cache-control': 'no-store' });
        expect(res.headers['x-powered-by'], what).toBeUndefined();
        expect(res.headers['server'], what).toBeUndefined();
      }
      expect(answers.map(([, res]) => res.status)).toEqual([200, 400, 405, 404, 404, 404, 400, 403, 400, 400, 200, 200, 200, 200]);
    });

    it('are on a streamed answer too (the GET stream, written to the socket directly)', async () => {
      const init = await send(gw.url, '/mcp/everything', { headers: JSON_HEADERS, body: INITIALIZE });
      const session = init.headers['mcp-session-id'] as string;
      await send(gw.url, '/mcp/everything', { headers: { ...JSON_HEADERS, 'mcp-session-id': session }, body: INITIALIZED });
      const stream = await streamHeaders(gw.url, '/mcp/everything', { accept: 'text/event-stream', 'mcp-session-id': session });
      expect(stream.status).toBe(200);
      expect(stream.headers['content-type']).toBe('text/event-stream');
      // Streams keep their own cache directive: proxies must neither cache nor transform them.
      expectSecurityHeaders(stream, 'no-cache, no-transform');
      await send(gw.url, '/mcp/everything', { method: 'DELETE', headers: { 'mcp-session-id': session } });
    });
  });
});

describe('CORS on, with authentication', () => {
  const SECRET = 'a-shared-secret-that-is-long-enough-for-hs256';
  const APP = 'https://app.example';
  let gw: RunningGateway;
  let token: string;

  beforeAll(async () => {
    token = await new SignJWT({ sub: 'browser-user' })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuedAt()
      .setExpirationTime('10m')
      .sign(new TextEncoder().encode(SECRET));
    gw = await startGateway(
      `
[server.cors]
allowed_origins = [${q(APP)}, "http://localhost:*"]
allowed_headers = ["X-Trace-Id"]
exposed_headers = ["X-Upstream-Version"]
max_age_secs = 120

[auth.jwt]
mode = "simple"
secret = "\${JWT_SECRET}"

${everythingStdio()}`,
      { env: { JWT_SECRET: SECRET } },
    );
  });
  afterAll(async () => {
    await gw?.stop();
  });

  const list = (header: unknown) =>
    String(header ?? '')
      .split(',')
      .map((name) => name.trim().toLowerCase())
      .filter(Boolean);

  it('a browser-like preflight then POST, GET stream and DELETE from an allowed origin all work', async () => {
    // What a browser checks before it sends a POST with these headers, and again for the GET.
    const preflight = async (method: string, requested: string[]) => {
      const res = await send(gw.url, '/mcp/everything', {
        method: 'OPTIONS',
        headers: { origin: APP, 'access-control-request-method': method, 'access-control-request-headers': requested.join(', ') },
      });
      expect(res.status).toBe(204);
      expect(res.text).toBe('');
      expect(res.headers['access-control-allow-origin']).toBe(APP);
      expect(list(res.headers['vary'])).toContain('origin');
      expect(list(res.headers['access-control-allow-methods'])).toContain(method.toLowerCase());
      for (const name of requested) expect(list(res.headers['access-control-allow-headers'])).toContain(name);
      expect(res.headers['access-control-max-age']).toBe('120');
      expect(res.headers['access-control-allow-credentials']).toBeUndefined();
      expectSecurityHeaders(res);
    };
    // Preflights carry no credentials: they are answered before authentication.
    await preflight('POST', ['authorization', 'content-type', 'mcp-protocol-version', 'x-trace-id']);

    const headers = { ...JSON_HEADERS, origin: APP, authorization: `Bearer ${token}`, 'mcp-protocol-version': '2025-06-18' };
    const init = await send(gw.url, '/mcp/everything', { headers, body: INITIALIZE });
    expect(init.status).toBe(200);
    expect(init.headers['access-control-allow-origin']).toBe(APP);
    // The page can read its session id only because it is exposed.
    expect(list(init.headers['access-control-expose-headers'])).toEqual(expect.arrayContaining(['mcp-session-id', 'www-authenticate', 'x-upstream-version']));
    const session = init.headers['mcp-session-id'] as string;
    expect(session).toMatch(/\S/);
    const initialized = await send(gw.url, '/mcp/everything', { headers: { ...headers, 'mcp-session-id': session }, body: INITIALIZED });
    expect(initialized.status).toBe(202);
    expect(initialized.headers['access-control-allow-origin']).toBe(APP);

    await preflight('GET', ['authorization', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id']);
    const stream = await streamHeaders(gw.url, '/mcp/everything', {
      origin: APP,
      authorization: `Bearer ${token}`,
      accept: 'text/event-stream',
      'mcp-session-id': session,
    });
    expect(stream.status).toBe(200);
    expect(stream.headers['access-control-allow-origin']).toBe(APP);
    expect(list(stream.headers['access-control-expose-headers'])).toContain('mcp-session-id');

    await preflight('DELETE', ['authorization', 'mcp-session-id']);
    const ended = await send(gw.url, '/mcp/everything', {
      method: 'DELETE',
      headers: { origin: APP, authorization: `Bearer ${token}`, 'mcp-session-id': session },
    });
    expect(ended.status).toBe(200);
    expect(ended.headers['access-control-allow-origin']).toBe(APP);
  });

  it('a 401 is readable by the page: the origin is allowed and WWW-Authenticate exposed', async () => {
    const res = await send(gw.url, '/mcp/everything', { headers: { ...JSON_HEADERS, origin: APP }, body: TOOLS_LIST });
    expect(res.status).toBe(401);
    expect(res.headers['access-control-allow-origin']).toBe(APP);
    expect(list(res.headers['access-control-expose-headers'])).toContain('www-authenticate');
    expect(res.headers['www-authenticate']).toContain('resource_metadata=');
    // And the OAuth metadata it points to can be fetched cross-origin.
    const metadata = await send(gw.url, '/.well-known/oauth-protected-resource', { headers: { origin: APP } });
    expect(metadata.status).toBe(200);
    expect(metadata.headers['access-control-allow-origin']).toBe(APP);
  });

  it('echoes an origin matched by a port wildcard, and never "*"', async () => {
    const res = await send(gw.url, '/mcp/everything', {
      method: 'OPTIONS',
      headers: { origin: 'http://localhost:5173', 'access-control-request-method': 'POST' },
    });
    expect(res.status).toBe(204);
    expect(res.headers['access-control-allow-origin']).toBe('http://localhost:5173');
  });

  it('refuses a preflight or a request from any other origin with 403, before authentication, and without CORS headers', async () => {
    for (const origin of ['https://evil.example', 'http://127.0.0.1:5173', 'https://app.example.evil.example']) {
      const preflight = await send(gw.url, '/mcp/everything', { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST' } });
      expectForbidden(preflight, 'Origin');
      expect(corsHeadersOf(preflight)).toEqual([]);
      const post = await send(gw.url, '/mcp/everything', { headers: { ...JSON_HEADERS, origin, authorization: `Bearer ${token}` }, body: TOOLS_LIST });
      expectForbidden(post, 'Origin');
      expect(corsHeadersOf(post)).toEqual([]);
    }
  });

  it('a request without Origin gets no CORS headers but Vary: Origin; an OPTIONS that is not a preflight is not answered as one', async () => {
    const res = await send(gw.url, '/mcp/everything', { headers: { ...JSON_HEADERS, authorization: `Bearer ${token}` }, body: TOOLS_LIST });
    expect(res.status).toBe(200);
    expect(corsHeadersOf(res)).toEqual([]);
    expect(res.headers['vary']).toBe('Origin');
    const options = await send(gw.url, '/mcp/everything', { method: 'OPTIONS', headers: { origin: APP, authorization: `Bearer ${token}` } });
    expect(options.status).toBe(405);
    expect(options.headers['access-control-allow-methods']).toBeUndefined();
  });
});

describe('CORS variants and non-loopback listeners (HTTP upstream)', () => {
  let recording: RecordingUpstream;
  const server = () => `
[[upstream.servers]]
name = "web"
path_prefix = "/web"
url = ${q(recording.url)}
`;
  const running: Array<{ stop(): Promise<void> }> = [];

  beforeAll(async () => {
    recording = await startRecordingUpstream('http');
  });
  afterAll(async () => {
    for (const gw of running) await gw.stop();
    await recording?.stop();
  });

  async function gateway(host: string, toml: string) {
    const gw = await startAs(host, toml + server());
    running.push(gw);
    return gw;
  }

  it('each refusal is an audit line (request_refused, with its reason) and counted in mcp_guard_requests_total', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'origin-audit-'));
    const file = join(dir, 'audit.log');
    try {
      const gw = await gateway('127.0.0.1', `[audit]\nfile = ${q(file)}\n`);
      expectForbidden(await send(gw.url, '/web', { headers: { ...JSON_HEADERS, origin: 'http://evil.example' }, body: TOOLS_LIST }), 'Origin');
      expectForbidden(await send(gw.url, '/web', { headers: { ...JSON_HEADERS, host: 'evil.example' }, body: TOOLS_LIST }), 'Host');
      expect((await send(gw.url, '/web', { headers: { ...JSON_HEADERS, host: 'a@b' }, body: TOOLS_LIST })).status).toBe(400);
      const lines = () =>
        existsSync(file)
          ? readFileSync(file, 'utf8')
              .split('\n')
              .filter(Boolean)
              .map((l) => JSON.parse(l) as Record<string, unknown>)
          : [];
      await waitFor(() => lines().filter((e) => e['event_type'] === 'request_refused').length === 3, 5_000, 'three request_refused lines');
      const refused = lines().filter((e) => e['event_type'] === 'request_refused');
      expect(refused.map((e) => e['reason'])).toEqual(['Origin not allowed', 'Host not allowed', 'invalid Host header']);
      for (const e of refused) expect(e).toMatchObject({ identity_id: null, success: false, client_ip: '127.0.0.1' });
      const metrics = (await send(gw.url, '/metrics')).text;
      expect(metrics).toMatch(/mcp_guard_requests_total\{method="POST",status="403",server="none"\} 2/);
      expect(metrics).toMatch(/mcp_guard_requests_total\{method="POST",status="400",server="none"\} 1/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('allowed_origins = ["*"]: any origin, answered with "*" and no credentials', async () => {
    const gw = await gateway('127.0.0.1', '[server.cors]\nallowed_origins = ["*"]\n');
    const res = await send(gw.url, '/mcp/web', { headers: { ...JSON_HEADERS, origin: 'https://anywhere.example' }, body: TOOLS_LIST });
    expect(res.status).toBe(200);
    expect(res.headers['access-control-allow-origin']).toBe('*');
    expect(res.headers['access-control-allow-credentials']).toBeUndefined();
    // The Host is still checked: "*" origins do not switch DNS rebinding protection off.
    expectForbidden(
      await send(gw.url, '/mcp/web', { headers: { ...JSON_HEADERS, host: 'evil.example', origin: 'http://evil.example' }, body: TOOLS_LIST }),
      'Host',
    );
  });

  it('allow_credentials = true: the exact origin and Access-Control-Allow-Credentials', async () => {
    const gw = await gateway('127.0.0.1', '[server.cors]\nallowed_origins = ["https://app.example"]\nallow_credentials = true\n');
    const preflight = await send(gw.url, '/mcp/web', {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers['access-control-allow-origin']).toBe('https://app.example');
    expect(preflight.headers['access-control-allow-credentials']).toBe('true');
    const res = await send(gw.url, '/mcp/web', { headers: { ...JSON_HEADERS, origin: 'https://app.example' }, body: TOOLS_LIST });
    expect(res.headers['access-control-allow-origin']).toBe('https://app.example');
    expect(res.headers['access-control-allow-credentials']).toBe('true');
  });

  it('on 0.0.0.0 without allowed_hosts: any Host is served (with a start-up warning), but no browser origin, loopback pages included', async () => {
    const gw = await gateway('0.0.0.0', '');
    const res = await send(gw.url, '/mcp/web', { headers: { ...JSON_HEADERS, host: 'mcp.example.com' }, body: TOOLS_LIST });
    expect(res.status).toBe(200);
    expect(res.json.result.tools).toEqual([expect.objectContaining({ name: 'recorded' })]);
    expect(gw.logs.some((line) => line.includes('"level":40') && line.includes('allowed_hosts is not set'))).toBe(true);
    // A rebinding page's POST carries its Origin: refused even though its Host is not checked.
    expectForbidden(
      await send(gw.url, '/mcp/web', { headers: { ...JSON_HEADERS, host: 'evil.example', origin: 'http://evil.example' }, body: TOOLS_LIST }),
      'Origin',
    );
    expectForbidden(await send(gw.url, '/mcp/web', { headers: { ...JSON_HEADERS, origin: `http://127.0.0.1:${portOf(gw)}` }, body: TOOLS_LIST }), 'Origin');
  });

  it('on 0.0.0.0 with allowed_hosts: only those names (and only the given port), IP-addressed probes still answered', async () => {
    const gw = await gateway('0.0.0.0', '[server]\nallowed_hosts = ["mcp.example.com", "gateway.internal:3000"]\n');
    expect(gw.logs.some((line) => line.includes('allowed_hosts is not set'))).toBe(false);
    for (const host of ['mcp.example.com', 'mcp.example.com:443', 'gateway.internal:3000']) {
      expect((await send(gw.url, '/mcp/web', { headers: { ...JSON_HEADERS, host }, body: TOOLS_LIST })).status, host).toBe(200);
    }
    for (const host of ['gateway.internal:3001', 'gateway.internal', 'evil.example', `127.0.0.1:${portOf(gw)}`]) {
      expectForbidden(await send(gw.url, '/mcp/web', { headers: { ...JSON_HEADERS, host }, body: TOOLS_LIST }), 'Host');
    }
    expect((await send(gw.url, '/ready', { headers: { host: `127.0.0.1:${portOf(gw)}` } })).status).toBe(200);
    expect((await send(gw.url, '/metrics', { headers: { host: '10.0.0.9:3000' } })).status).toBe(200);
    expectForbidden(await send(gw.url, '/routes', { headers: { host: '10.0.0.9:3000' } }), 'Host');
  });
});
