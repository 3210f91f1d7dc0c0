/**
 * Paths and headers as an attacker writes them: a path must never climb out of its prefix or
 * reach a server other than the one it names, however its dots and slashes are encoded, and
 * nothing a client sends may add a header or a header parameter to the gateway's answer. Real
 * gateway on 127.0.0.1, a real HTTP upstream that records what reaches it, and a plain socket so
 * that every request is sent exactly as written.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { q, startGateway, type RunningGateway } from '../helpers/gateway.js';
import { rawHttp } from '../helpers/raw-http.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/recording-upstream.js';

const TOOLS_LIST = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' });
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let recording: RecordingUpstream;
let gw: RunningGateway;

beforeAll(async () => {
  recording = await startRecordingUpstream('http');
  gw = await startGateway(`
[[upstream.servers]]
name = "api"
path_prefix = "/api"
url = ${q(recording.url)}

[[upstream.servers]]
name = "svc"
path_prefix = "/svc"
url = ${q(recording.url)}
strip_prefix = true
`);
});

afterAll(async () => {
  await gw?.stop();
  await recording?.stop();
});

const post = (path: string, headers = '') =>
  rawHttp(gw.url, `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n${headers}`, TOOLS_LIST);

/** The paths that reached the upstream while `run` ran. */
async function forwarded(run: () => Promise<unknown>): Promise<string[]> {
  const before = recording.requests.length;
  await run();
  return recording.requests.slice(before).map((r) => r.url);
}

describe('path traversal', () => {
  it.each([
    '/api/../svc',
    '/api/%2e%2e/svc',
    '/api/%2E%2E/svc',
    '/api/.%2e/svc',
    '/api/%2e./svc',
    '/api/%2e/svc',
    '/api/./svc',
    '/api/x/..',
    '/api/%2e%2e',
    '/api/%2e%2e?x=1',
    '/api/..%2fsvc',
    '/api/%2fsvc',
    '/api/%2F..%2Fsvc',
    '/api/%5c..%5csvc',
    '/api\\..\\svc',
    '/svc/%2e%2e/%2e%2e/etc/passwd',
    // Encoded twice: harmless to an upstream that decodes once, a climb for one that decodes twice.
    '/api/%252e%252e/svc',
    '/api/%252E./svc',
    '/api/%252fsvc',
    '/api/%255c..%255csvc',
  ])('%s is refused with 400 and never forwarded', async (path) => {
    let res: Awaited<ReturnType<typeof post>> | undefined;
    const paths = await forwarded(async () => (res = await post(path)));
    expect(res!.status).toBe(400);
    expect(res!.json).toMatchObject({ jsonrpc: '2.0', error: { code: -32600 } });
    expect(paths).toEqual([]);
  });

  it('any other escape is forwarded as written (a proxy never decodes), and the upstream sees no dot segment', async () => {
    const paths = await forwarded(async () => {
      expect((await post('/api/a%20b/%2541')).status).toBe(200);
      expect((await post('/api/%25/x%252ey')).status).toBe(200);
    });
    expect([...new Set(paths)]).toEqual(['/mcp/api/a%20b/%2541', '/mcp/api/%25/x%252ey']);
    for (const path of paths) {
      // The WHATWG URL parser (what undici forwards with) resolves %2e%2e; it must not see one.
      expect(new URL(`http://upstream${path}`).pathname).toBe(path);
    }
  });

  it.each([
    ['/mcp/%2e%2e', '..'],
    ['/mcp/..%2fsvc', '../svc'],
    ['/mcp/api%2f..%2fsvc', 'api/../svc'],
    ['/mcp/%2e%2e%2fapi', '../api'],
    ['/mcp/api%00', 'api\0'],
    ['/mcp/api%2f', 'api/'],
  ])('the by-name endpoint %s names no server (it decodes to %j)', async (path, name) => {
    let res: Awaited<ReturnType<typeof post>> | undefined;
    const paths = await forwarded(async () => (res = await post(path)));
    expect(res!.status).toBe(404);
    expect(res!.json).toEqual({ error: `Server not found: ${name}`, available: ['api', 'svc'] });
    expect(paths).toEqual([]);
  });

  it('a server name is a lookup key, never a path: an escaped name reaches that server at its url, unchanged', async () => {
    const paths = await forwarded(async () => expect((await post('/mcp/%61pi')).status).toBe(200));
    expect([...new Set(paths)]).toEqual(['/mcp']);
  });
});

describe('header injection', () => {
  it("a client's x-request-id is never echoed: the answer carries the gateway's own id (finding 8: the client cannot choose it)", async () => {
    const safe = await rawHttp(gw.url, 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: trace-1.2:3_A\r\n');
    expect(safe.headers['x-request-id']).toEqual([expect.stringMatching(UUID)]);
    for (const value of ['a b', 'abc\xff', 'x'.repeat(129), '<script>', 'a%0d%0aSet-Cookie:%20x=y', 'a;b', 'a,b']) {
      const res = await rawHttp(gw.url, `GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: ${value}\r\n`);
      expect(res.status, value).toBe(200);
      expect(res.headers['x-request-id'], value).toEqual([expect.stringMatching(UUID)]);
    }
  });

  it.each([
    ['a bare LF inside the value', 'X-Request-Id: abc\nX-Injected: yes\r\n'],
    ['a bare CR inside the value', 'X-Request-Id: abc\rX-Injected: yes\r\n'],
    ['an obsolete folded line', 'X-Request-Id: abc\r\n X-Injected: yes\r\n'],
    ['a NUL', 'X-Request-Id: abc\0X-Injected: yes\r\n'],
  ])('%s: the request is refused (400) and adds no header to the answer', async (_what, line) => {
    const res = await rawHttp(gw.url, `GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n${line}`);
    expect(res.status).toBe(400);
    expect(res.headers['x-injected']).toBeUndefined();
    expect(res.head.toLowerCase()).not.toContain('x-injected');
    for (const id of res.headers['x-request-id'] ?? []) expect(id).toMatch(REQUEST_ID);
  });

  it('CR/LF in a server name or a path stays inside the JSON body', async () => {
    const byName = await post('/mcp/x%0d%0aSet-Cookie:%20a=b');
    expect(byName.status).toBe(404);
    expect(byName.headers['set-cookie']).toBeUndefined();
    expect(byName.json.error).toBe('Server not found: x\r\nSet-Cookie: a=b');
    const byPath = await post('/nowhere%0d%0aSet-Cookie:%20a=b');
    expect(byPath.status).toBe(404);
    expect(byPath.headers['set-cookie']).toBeUndefined();
  });
});

describe('the Host the gateway echoes (OAuth metadata, WWW-Authenticate)', () => {
  let authed: RunningGateway;

  beforeAll(async () => {
    // Host not checked at all: only its syntax stands between it and the challenge header.
    authed = await startGateway(
      `
[server]
allowed_hosts = ["*"]

[auth.jwt]
mode = "simple"
secret = "a-shared-secret-that-is-long-enough-for-hs256"

[[upstream.servers]]
name = "api"
path_prefix = "/api"
url = ${q(recording.url)}
`,
    );
  });
  afterAll(async () => {
    await authed?.stop();
  });

  it('a valid Host is echoed as the resource; one that would add a parameter is refused with 400', async () => {
    const ok = await rawHttp(authed.url, 'POST /mcp/api HTTP/1.1\r\nHost: mcp.example.com:8443\r\nContent-Type: application/json\r\n', TOOLS_LIST);
    expect(ok.status).toBe(401);
    expect(ok.headers['www-authenticate']).toEqual([
      'Bearer realm="mcp-guard", resource_metadata="http://mcp.example.com:8443/.well-known/oauth-protected-resource"',
    ]);
    const metadata = await rawHttp(authed.url, 'GET /.well-known/oauth-protected-resource HTTP/1.1\r\nHost: mcp.example.com:8443\r\n');
    expect(metadata.json.resource).toBe('http://mcp.example.com:8443');

    for (const host of ['evil.example", resource_metadata="https://attacker.example', 'evil.example/x?', 'a@evil.example']) {
      const res = await rawHttp(authed.url, `POST /mcp/api HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\n`, TOOLS_LIST);
      expect(res.status, host).toBe(400);
      expect(res.headers['www-authenticate']).toBeUndefined();
      const meta = await rawHttp(authed.url, `GET /.well-known/oauth-protected-resource HTTP/1.1\r\nHost: ${host}\r\n`);
      expect(meta.status).toBe(400);
      expect(meta.body).not.toContain('attacker');
    }
  });
});
