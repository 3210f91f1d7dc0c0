/**
 * How `[rate_limit]` maps onto fixed windows (the table in docs/rate-limits.md), and what the
 * config refuses: a key's rate_limit that nothing would enforce.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { rateLimitSchema } from '../../src/config/schema.js';
import { fixedWindow, overrideWindow, planLimits, windowSeconds } from '../../src/ratelimit/limits.js';
import { configErrors } from '../helpers/config.js';

describe('the mapping', () => {
  it('rate and burst: a window of burst / rate seconds holding burst requests', () => {
    expect(fixedWindow(2, 3)).toEqual({ max: 3, windowMs: 1500 });
    expect(fixedWindow(10, 20)).toEqual({ max: 20, windowMs: 2000 });
    expect(fixedWindow(0.5, 1)).toEqual({ max: 1, windowMs: 2000 });
    // 0.1 x 30 is not exactly 3 in binary: the window is still 30 s.
    expect(fixedWindow(0.1, 3)).toEqual({ max: 3, windowMs: 30_000 });
    expect(fixedWindow(7, 3)).toEqual({ max: 3, windowMs: 429 });
  });

  it('a window below 1 ms is 1 ms with the rate kept', () => {
    expect(fixedWindow(1_000_000, 1)).toEqual({ max: 1000, windowMs: 1 });
    expect(fixedWindow(1000, 1)).toEqual({ max: 1, windowMs: 1 });
  });

  it('a key override keeps the window and allows ceil(rate x window)', () => {
    const base = fixedWindow(2, 3); // 3 per 1.5 s
    expect(overrideWindow(base, 4)).toEqual({ max: 6, windowMs: 1500 });
    expect(overrideWindow(base, 3)).toEqual({ max: 5, windowMs: 1500 }); // 4.5 -> 5
    expect(overrideWindow(fixedWindow(0.1, 3), 0.1)).toEqual({ max: 3, windowMs: 30_000 }); // no float round-up
    expect(overrideWindow(base, 1 / 1.5)).toEqual({ max: 1, windowMs: 1500 });
  });

  it('an override below one request per window gets a longer window instead of a rounded-up rate', () => {
    expect(overrideWindow(fixedWindow(2, 3), 0.1)).toEqual({ max: 1, windowMs: 10_000 });
  });

  it('planLimits: defaults, per-key overrides, tool globs', () => {
    const config = rateLimitSchema.parse({ tool_limits: [{ tool_pattern: 'write_*', requests_per_second: 1, burst_size: 2 }] });
    const plan = planLimits(config, [
      { id: 'fast', key_hash: 'x', rate_limit: 50 },
      { id: 'plain', key_hash: 'y' },
    ]);
    expect(plan.identity).toEqual({ max: 20, windowMs: 2000 });
    expect(plan.address).toEqual({ max: 200, windowMs: 2000 });
    expect([...plan.keyOverrides]).toEqual([['fast', { max: 100, windowMs: 2000 }]]);
    expect(plan.tools).toHaveLength(1);
    expect(plan.tools[0]).toMatchObject({ pattern: 'write_*', max: 2, windowMs: 2000 });
    expect(plan.tools[0]!.matches.allows('write_file')).toBe(true);
    expect(plan.tools[0]!.matches.allows('read_file')).toBe(false);
  });

  it('windows as the error message says them', () => {
    expect(windowSeconds(1500)).toBe('1.5');
    expect(windowSeconds(30_000)).toBe('30');
    expect(windowSeconds(429)).toBe('0.429');
  });
});

describe('config: a key rate_limit needs an enabled [rate_limit]', () => {
  const base = `
[upstream]
url = "http://127.0.0.1:1/mcp"

[[auth.api_keys]]
id = "a"
key_hash = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
rate_limit = 5
`;

  it('without [rate_limit]: an error at the key, never ignored', () => {
    expect(configErrors(base)).toEqual(['auth.api_keys[0].rate_limit: needs [rate_limit] to be enforced (there is no [rate_limit] section)']);
  });

  it('with enabled = false: the same error', () => {
    expect(configErrors(`${base}\n[rate_limit]\nenabled = false\n`)).toEqual([
      'auth.api_keys[0].rate_limit: needs [rate_limit] to be enforced ([rate_limit] has enabled = false)',
    ]);
  });

  it('reported in the same run as the other problems of the file; a malformed [rate_limit] only by the schema', () => {
    expect(configErrors(base.replace('id = "a"', 'id = "bad id"'))).toEqual([
      'auth.api_keys[0].id: must be 1 to 128 letters, digits or ._@:+-',
      'auth.api_keys[0].rate_limit: needs [rate_limit] to be enforced (there is no [rate_limit] section)',
    ]);
    expect(configErrors(`${base}\n[rate_limit]\nenabled = "yes"\n`)).toEqual(['rate_limit.enabled: expected true or false']);
  });

  it('with [rate_limit]: accepted; the bound is the one of every other rate', () => {
    expect(parseConfig(`${base}\n[rate_limit]\n`, { env: {} }).auth?.api_keys?.[0]?.rate_limit).toBe(5);
    expect(configErrors(`${base.replace('rate_limit = 5', 'rate_limit = 2000000')}\n[rate_limit]\n`)).toEqual([
      'auth.api_keys[0].rate_limit: must be at most 1000000',
    ]);
  });
});
