/**
 * What recording costs: the same tools/call through gateways that differ only in what they record:
 *   off         [server] metrics = false, no [audit] (the baseline)
 *   metrics     metrics on (the default), no audit
 *   audit+metrics  metrics on and [audit] to a file (one tool_call line per request)
 *   full        an API key, rate limits (never reached), audit to a file and metrics: every
 *               stage of the pipeline doing its work
 */
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareVariants, ROOT, serverToml, startGateway, startInstantUpstream, tomlString } from '../lib/harness.mjs';

const { generateApiKey, hashApiKey } = await import(`${ROOT}/dist/auth/key-format.js`);

export async function run(settings) {
  const upstream = await startInstantUpstream();
  const dir = mkdtempSync(join(tmpdir(), 'mcp-guard-bench-audit-'));
  const server = serverToml('instant', upstream.url);
  const audit = (name) => `[audit]\nfile = ${tomlString(join(dir, `${name}.log`))}\n`;
  const key = generateApiKey();
  const keyBlock = `[[auth.api_keys]]\nid = "bench"\nkey_prefix = "${key.prefix}"\nkey_hash = ${tomlString(await hashApiKey(key.key))}\n`;
  const variants = [
    { name: 'off', toml: `[server]\nmetrics = false\n${server}` },
    { name: 'metrics', toml: server },
    { name: 'audit+metrics', toml: `${server}\n${audit('audit-metrics')}` },
    {
      name: 'full',
      toml: `${server}\n${audit('full')}\n${keyBlock}\n[rate_limit]\nrequests_per_second = 1000000\nburst_size = 1000000\nper_address_requests_per_second = 1000000\nper_address_burst_size = 1000000\n`,
      headers: { authorization: `Bearer ${key.key}` },
    },
  ];
  const gateways = await Promise.all(variants.map((v) => startGateway(v.name.replace('+', '-'), v.toml)));
  const body = { method: 'tools/call', params: { name: 'tool-0', arguments: { n: 1 } } };
  const rows = await compareVariants(
    'observability',
    variants.map((v, i) => ({ name: v.name, url: `${gateways[i].url}/mcp/instant`, headers: v.headers, pid: gateways[i].child.pid })),
    body,
    settings,
  );
  // The audit files are the proof that the audited variants really wrote a line per call.
  for (const row of rows) {
    if (row.variant === 'audit+metrics' || row.variant === 'full') {
      row.audit_bytes = statSync(join(dir, `${row.variant === 'full' ? 'full' : 'audit-metrics'}.log`)).size;
    }
  }
  return rows;
}
