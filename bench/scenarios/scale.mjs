/**
 * Cost growth: does a bigger configuration make each request dearer?
 *   servers-1 / servers-1000    one configured server vs 1,000 (all HTTP, each its own prefix);
 *                               the request goes by path prefix to the last one configured
 *   tools-all / tools-10-of-500 tools/list of a 500-tool upstream through an API key allowed
 *                               every tool, vs one allowed 10 (the list is filtered on its way back)
 * (1 vs 1,000 API keys is in the `auth` scenario.) Each pair is compared in its own rotation, the
 * first of the pair being the baseline of its ratio.
 */
import { compareVariants, ROOT, startGateway, startInstantUpstream, tomlString } from '../lib/harness.mjs';

const { generateApiKey, hashApiKey } = await import(`${ROOT}/dist/auth/key-format.js`);

function servers(count, url) {
  let toml = '';
  for (let i = 0; i < count; i++) {
    toml += `[[upstream.servers]]\nname = "s${i}"\npath_prefix = "/s${i}"\nstrip_prefix = true\nurl = ${tomlString(url)}\n`;
  }
  return toml;
}

async function keyBlock(id, allowedTools) {
  const key = generateApiKey();
  const tools = allowedTools ? `allowed_tools = ${JSON.stringify(allowedTools)}\n` : '';
  return { key: key.key, toml: `[[auth.api_keys]]\nid = "${id}"\nkey_prefix = "${key.prefix}"\nkey_hash = ${tomlString(await hashApiKey(key.key))}\n${tools}` };
}

export async function run(settings) {
  const instant = await startInstantUpstream();
  const [one, thousand] = await Promise.all([startGateway('servers-1', servers(1, instant.url)), startGateway('servers-1000', servers(1000, instant.url))]);
  const call = { method: 'tools/call', params: { name: 'tool-0', arguments: { n: 1 } } };
  const routing = await compareVariants(
    'scale',
    [
      { name: 'servers-1', url: `${one.url}/s0`, pid: one.child.pid },
      { name: 'servers-1000', url: `${thousand.url}/s999`, pid: thousand.child.pid },
    ],
    call,
    settings,
  );

  const wide = await startInstantUpstream(500);
  const server = `[[upstream.servers]]\nname = "wide"\npath_prefix = "/wide"\nurl = ${tomlString(wide.url)}\n`;
  const all = await keyBlock('all-tools', undefined);
  const ten = await keyBlock(
    'ten-tools',
    Array.from({ length: 10 }, (_, i) => `tool-${i * 50}`),
  );
  const gateway = await startGateway('tools', `${server}\n${all.toml}\n${ten.toml}`);
  const list = { method: 'tools/list', params: {} };
  const filtering = await compareVariants(
    'scale',
    [
      { name: 'tools-all', url: `${gateway.url}/mcp/wide`, pid: gateway.child.pid, headers: { authorization: `Bearer ${all.key}` } },
      { name: 'tools-10-of-500', url: `${gateway.url}/mcp/wide`, pid: gateway.child.pid, headers: { authorization: `Bearer ${ten.key}` } },
    ],
    list,
    settings,
  );
  // Proof that the filter did its work: the 10-tool identity sees exactly its 10 tools.
  const seen = await listed(`${gateway.url}/mcp/wide`, ten.key);
  const seenAll = await listed(`${gateway.url}/mcp/wide`, all.key);
  if (seen !== 10 || seenAll !== 500) throw new Error(`tools/list: expected 10 and 500 tools, got ${seen} and ${seenAll}`);
  for (const row of filtering) row.tools_listed = row.variant === 'tools-all' ? seenAll : seen;
  return [...routing, ...filtering];
}

async function listed(url, key) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }),
  });
  const body = await response.json();
  return body.result?.tools?.length;
}
