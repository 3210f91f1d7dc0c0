/** `[[virtual_servers]]`: what the loader accepts, resolves and refuses (docs/virtual-servers.md). */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { configErrors } from '../helpers/config.js';

const SERVERS = `
[[upstream.servers]]
name = "filesystem"
path_prefix = "/fs"
command = "x"
timeout_ms = 5000

[[upstream.servers]]
name = "everything"
path_prefix = "/everything"
url = "http://127.0.0.1:1/mcp"
timeout_ms = 9000
`;

function parse(virtual: string) {
  return parseConfig(SERVERS + virtual, { env: {} });
}

describe('[[virtual_servers]]', () => {
  it('resolves members, the default separator and the longest member timeout', () => {
    const config = parse('[[virtual_servers]]\nname = "workspace"\npath_prefix = "/workspace/"\nservers = ["everything", "filesystem"]\n');
    expect(config.virtual_servers).toEqual([
      { transport: 'virtual', name: 'workspace', path_prefix: '/workspace', servers: ['everything', 'filesystem'], separator: '__', timeout_ms: 9000 },
    ]);
  });

  it('"*" is every configured server, in config order', () => {
    const config = parse('[[virtual_servers]]\nname = "all"\nservers = ["*"]\nseparator = "."\n');
    expect(config.virtual_servers[0]).toMatchObject({ servers: ['filesystem', 'everything'], separator: '.' });
    expect(config.virtual_servers[0]!.path_prefix).toBeUndefined();
  });

  it('shares one namespace of names and one of prefixes with the servers', () => {
    expect(
      configErrors(
        SERVERS +
          '[[virtual_servers]]\nname = "filesystem"\nservers = ["everything"]\n' +
          '[[virtual_servers]]\nname = "v"\npath_prefix = "/fs"\nservers = ["everything"]\n' +
          '[[virtual_servers]]\nname = "v"\nservers = ["everything"]\n',
      ),
    ).toEqual([
      'virtual_servers[0].name: a server named "filesystem" is already configured (servers and virtual servers share one namespace)',
      'virtual_servers[1].path_prefix: same path_prefix "/fs" as "filesystem" (compared without a trailing "/")',
      'virtual_servers[2].name: same name "v" as virtual_servers[1]',
    ]);
  });

  it('refuses unknown members, virtual members, duplicates, "*" with others and an empty list', () => {
    expect(
      configErrors(
        SERVERS +
          '[[virtual_servers]]\nname = "a"\nservers = ["nope", "b", "everything", "everything"]\n' +
          '[[virtual_servers]]\nname = "b"\nservers = ["*", "filesystem"]\n' +
          '[[virtual_servers]]\nname = "c"\nservers = []\n',
      ),
    ).toEqual([
      'virtual_servers[2].servers: name at least one server, or "*" for every configured server',
      'virtual_servers[0].servers[0]: no server named "nope" is configured',
      'virtual_servers[0].servers[1]: "b" is a virtual server: members must be servers',
      'virtual_servers[0].servers[3]: "everything" is listed twice',
      'virtual_servers[1].servers: "*" stands for every configured server: list nothing else with it',
    ]);
  });

  it('checks the separator, the name, the prefix and unknown keys like any other table', () => {
    expect(
      configErrors(SERVERS + '[[virtual_servers]]\nname = "bad name"\npath_prefix = "/health"\nservers = ["everything"]\nseparator = "x"\nmembers = []\n'),
    ).toEqual([
      'virtual_servers[0].name: must be 1 to 64 letters, digits, "-" or "_"',
      'virtual_servers[0].path_prefix: "/health" and the paths below it are reserved for the gateway\'s own endpoint',
      'virtual_servers[0].separator: must be 1 to 8 of "_", ".", "-" or "/"',
      'virtual_servers[0].members: unknown key',
    ]);
  });

  it("refuses members whose names could make the same tool name (a hostile member could shadow the other's tools)", () => {
    const toml =
      '[[upstream.servers]]\nname = "git"\ncommand = "x"\npath_prefix = "/g"\n[[upstream.servers]]\nname = "git__hub"\ncommand = "x"\npath_prefix = "/gh"\n';
    expect(configErrors(`${toml}[[virtual_servers]]\nname = "v"\nservers = ["*"]\n`)).toEqual([
      'virtual_servers[0].servers: "git" and "git__hub" cannot both be members with separator "__": their tool names could be the same; choose another separator',
    ]);
    expect(parseConfig(`${toml}[[virtual_servers]]\nname = "v"\nservers = ["*"]\nseparator = "."\n`, { env: {} }).virtual_servers[0]!.servers).toEqual([
      'git',
      'git__hub',
    ]);
  });

  it('refuses "a" and "a_" with "__" too: a___x would be _x of one and x of the other (review finding)', () => {
    const toml = '[[upstream.servers]]\nname = "a"\ncommand = "x"\npath_prefix = "/a"\n[[upstream.servers]]\nname = "a_"\ncommand = "x"\npath_prefix = "/a_"\n';
    expect(configErrors(`${toml}[[virtual_servers]]\nname = "v"\nservers = ["a", "a_"]\n`)).toEqual([
      'virtual_servers[0].servers: "a" and "a_" cannot both be members with separator "__": their tool names could be the same; choose another separator',
    ]);
    // With "-", a-- and a_-- cannot meet.
    expect(parseConfig(`${toml}[[virtual_servers]]\nname = "v"\nservers = ["a", "a_"]\nseparator = "-"\n`, { env: {} }).virtual_servers).toHaveLength(1);
  });

  it("may be named by an API key's servers, like a server", () => {
    const hash = '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$k8V2/m7bXyQ8OA5bSyJm8k4y2oG3bWn7pmkCrN8QyOk';
    const toml = `${SERVERS}[[virtual_servers]]\nname = "workspace"\nservers = ["*"]\n[[auth.api_keys]]\nid = "k"\nkey_hash = "${hash}"\nservers = ["workspace", "ghost"]\n`;
    expect(configErrors(toml)).toEqual(['auth.api_keys[0].servers[1]: no server named "ghost" is configured']);
  });
});
