/**
 * Authentication cost: the same tools/call through gateways that differ only in [auth]:
 *   open       no [auth] (the baseline)
 *   key-1      one API key (argon2id, as keygen makes it)
 *   key-1000   1,000 API keys; the caller's is the last one configured
 *   jwt        a JWT checked against a local JWKS (RS256)
 * The first request to each is timed alone (a key's first use pays its one argon2 check, among
 * 1,000 keys too, thanks to key_prefix). Each gateway then gets a short warm-up, then the
 * gateways take turns, round after round, so that drift on a shared machine hits them all alike.
 */
import { createServer } from 'node:http';
import { once } from 'node:events';
import argon2 from 'argon2';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { compareVariants, ROOT, serverToml, startGateway, startInstantUpstream, tomlString } from '../lib/harness.mjs';

const { generateApiKey, hashApiKey } = await import(`${ROOT}/dist/auth/key-format.js`);

async function jwksServer() {
  const { publicKey, privateKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'bench', alg: 'RS256', use: 'sig' };
  const server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] })));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const origin = `http://127.0.0.1:${server.address().port}`;
  const token = await new SignJWT({ scope: 'tools' })
    .setProtectedHeader({ alg: 'RS256', kid: 'bench' })
    .setSubject('bench-user')
    .setIssuer(origin)
    .setAudience('mcp-guard')
    .setIssuedAt()
    .setExpirationTime('2h')
    .sign(privateKey);
  return { url: `${origin}/jwks.json`, issuer: origin, token, close: () => server.close() };
}

/** `[[auth.api_keys]]` entries: `count - 1` fillers with cheap hashes (never checked), then the caller's. */
async function keyBlocks(count) {
  const caller = generateApiKey();
  const blocks = [];
  for (let i = 0; i < count - 1; i++) {
    const filler = generateApiKey();
    const hash = await argon2.hash(filler.key, { type: argon2.argon2id, memoryCost: 1024, timeCost: 1, parallelism: 1 });
    blocks.push(`[[auth.api_keys]]\nid = "filler-${i}"\nkey_prefix = "${filler.prefix}"\nkey_hash = ${tomlString(hash)}\n`);
  }
  blocks.push(
    `[[auth.api_keys]]\nid = "caller"\nkey_prefix = "${caller.prefix}"\nkey_hash = ${tomlString(await hashApiKey(caller.key))}\nallowed_tools = ["tool-*"]\n`,
  );
  return { toml: blocks.join('\n'), key: caller.key };
}

export async function run(settings) {
  const upstream = await startInstantUpstream();
  const jwks = await jwksServer();
  const server = serverToml('instant', upstream.url);
  const [one, thousand] = [await keyBlocks(1), await keyBlocks(1000)];
  const variants = [
    { name: 'open', toml: server, token: undefined },
    { name: 'key-1', toml: `${server}\n${one.toml}`, token: one.key },
    { name: 'key-1000', toml: `${server}\n${thousand.toml}`, token: thousand.key },
    {
      name: 'jwt',
      toml: `${server}\n[auth.jwt]\nmode = "jwks"\njwks_url = ${tomlString(jwks.url)}\nissuer = ${tomlString(jwks.issuer)}\naudience = "mcp-guard"\n`,
      token: jwks.token,
    },
  ];
  const gateways = await Promise.all(variants.map((v) => startGateway(v.name, v.toml)));
  const body = { method: 'tools/call', params: { name: 'tool-0', arguments: { n: 1 } } };
  try {
    return await compareVariants(
      'auth',
      variants.map((v, i) => ({
        name: v.name,
        url: `${gateways[i].url}/mcp/instant`,
        headers: v.token ? { authorization: `Bearer ${v.token}` } : {},
        pid: gateways[i].child.pid,
      })),
      body,
      settings,
    );
  } finally {
    jwks.close();
  }
}
