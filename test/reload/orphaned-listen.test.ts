/**
 * A reload that changes (or removes) a server ends the 2026-07-28 listen streams on the gateway's
 * shared sessions of it, so their clients listen again on the new upstream; closing the session
 * alone calls no onClose, and the streams stayed open and silent for good (review finding).
 */
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Reloader } from '../../src/app/reload.js';
import { parseConfig } from '../../src/config/load.js';
import { EVERYTHING, NODE, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';

let gw: RunningGateway;

const toml = (tag: string) => `[[upstream.servers]]\nname = "a"\npath_prefix = "/a"\ncommand = ${q(NODE)}\nargs = [${q(EVERYTHING)}, "stdio", ${q(tag)}]\n`;

beforeAll(async () => {
  gw = await startGateway(toml('v1'));
}, 120_000);

afterAll(async () => {
  await gw?.stop();
});

describe('reload: listen streams of a changed server', () => {
  it('end, so that their client listens again on the new upstream', { timeout: 60_000 }, async () => {
    const client = new Client({ name: 'review-listen', version: '1.0.0' }, { versionNegotiation: { mode: { pin: '2026-07-28' } } });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${gw.url}/mcp/a`)));
    try {
      const subscription = await client.listen({ toolsListChanged: true });
      let ended: unknown = 'still open';
      void subscription.closed.then((reason: unknown) => (ended = reason));

      const reloaded = await new Reloader(gw.app.services, async () => parseConfig(toml('v2'), { env: {} })).reload('review');
      expect(reloaded.result).toBe('applied');
      if (reloaded.result === 'applied') await reloaded.drained;

      await waitFor(() => ended !== 'still open', 20_000, 'the listen stream to end');
    } finally {
      await client.close();
    }
  });
});
