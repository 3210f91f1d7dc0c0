/**
 * docs/operations.md shows the haproxy and nginx configs that test/replicas/ runs: the same text,
 * with the documentation's ports and addresses instead of the tests' (a free port on 127.0.0.1,
 * a source address, a pid file and temp paths of its own). A change to one without the other
 * fails here.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { haproxyConfig } from '../helpers/haproxy.js';
import { nginxConfig } from '../helpers/nginx.js';

const OPERATIONS = readFileSync(new URL('../../docs/operations.md', import.meta.url), 'utf8');
const BACKENDS = [11, 12, 13].map((n) => ({ host: `10.0.1.${n}`, port: 3000 }));

/** The text of the one fenced block of this language in docs/operations.md. */
function block(language: string): string {
  const blocks = [...OPERATIONS.matchAll(new RegExp(`^\`\`\`${language}\\n([\\s\\S]*?)^\`\`\`$`, 'gm'))];
  expect(blocks).toHaveLength(1);
  return blocks[0]![1]!;
}

describe('the load balancer recipes of docs/operations.md', () => {
  it('haproxy: the config the replica tests run', () => {
    expect(block('haproxy')).toBe(haproxyConfig(BACKENDS, ':80').replace(/\n+$/, '\n'));
  });

  it('nginx: the config the replica tests run', () => {
    expect(block('nginx')).toBe(nginxConfig(BACKENDS, '80'));
  });
});
