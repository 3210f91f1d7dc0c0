/** What a reload applies: the diff of the running config and the reloaded one (src/config/diff.ts). */
import { describe, expect, it } from 'vitest';
import { appliesAnything, diffConfig } from '../../src/config/diff.js';
import { parseConfig } from '../../src/config/load.js';

const HASH_A = '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$k8V2/m7bXyQ8OA5bSyJm8k4y2oG3bWn7pmkCrN8QyOk';
const HASH_B = '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx1$k8V2/m7bXyQ8OA5bSyJm8k4y2oG3bWn7pmkCrN8QyOk';

function config(extra: string, servers = ['a', 'b']): ReturnType<typeof parseConfig> {
  const entries = servers.map((name) => `[[upstream.servers]]\nname = "${name}"\npath_prefix = "/${name}"\ncommand = "x"\n`).join('');
  return parseConfig(`${entries}${extra}`, { env: {} });
}

describe('diffConfig', () => {
  it('an identical config changes nothing', () => {
    const diff = diffConfig(config(''), config(''));
    expect(appliesAnything(diff)).toBe(false);
    expect(diff.restartRequired).toEqual([]);
  });

  it('names added, removed and changed servers; the rest are untouched', () => {
    const before = config('');
    const after = parseConfig(
      '[[upstream.servers]]\nname = "a"\npath_prefix = "/a"\ncommand = "x"\nargs = ["--new"]\n[[upstream.servers]]\nname = "c"\npath_prefix = "/c"\ncommand = "x"\n',
      { env: {} },
    );
    expect(diffConfig(before, after).servers).toEqual({ added: ['c'], removed: ['b'], changed: ['a'] });
  });

  it('names keys by id (never by hash), and virtual servers by name', () => {
    const keys = (...list: Array<[string, string]>) => list.map(([id, hash]) => `[[auth.api_keys]]\nid = "${id}"\nkey_hash = "${hash}"\n`).join('');
    const before = config(`${keys(['ci', HASH_A], ['old', HASH_B])}[[virtual_servers]]\nname = "v"\nservers = ["a"]\n`);
    const after = config(`${keys(['ci', HASH_B], ['new', HASH_A])}[[virtual_servers]]\nname = "v"\nservers = ["a", "b"]\n`);
    const diff = diffConfig(before, after);
    expect(diff.keys).toEqual({ added: ['api_key:new'], removed: ['api_key:old'], changed: ['api_key:ci'] });
    expect(diff.virtualServers).toEqual({ added: [], removed: [], changed: ['v'] });
    expect(JSON.stringify(diff)).not.toContain('argon2');
  });

  it('limits, audit and JWT settings apply; [server] and what protects the routes wait for a restart', () => {
    const before = config(
      '[server]\nport = 3000\n[rate_limit]\nrequests_per_second = 10\n[auth.jwt]\nmode = "simple"\nsecret = "0123456789abcdef0123456789abcdef"\n',
    );
    const after = config(
      '[server]\nport = 3001\nmetrics = false\n[rate_limit]\nrequests_per_second = 20\n[audit]\nenabled = true\nstdout = true\n[auth]\nprotect_routes = true\n[auth.jwt]\nmode = "simple"\nsecret = "0123456789abcdef0123456789abcdef"\nleeway_secs = 5\n',
    );
    const diff = diffConfig(before, after);
    expect(diff).toMatchObject({ rateLimit: true, audit: true, jwt: true });
    expect(diff.restartRequired.sort()).toEqual(['auth.protect_routes', 'server.metrics', 'server.port']);
  });

  it('[auth] appearing needs a restart (the routes are made with or without authentication)', () => {
    const diff = diffConfig(config(''), config(`[[auth.api_keys]]\nid = "k"\nkey_hash = "${HASH_A}"\n`));
    expect(diff.restartRequired).toEqual(['auth']);
    expect(diff.keys.added).toEqual(['api_key:k']);
  });
});
