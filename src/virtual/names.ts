/**
 * How a virtual server names what its members own (docs/virtual-servers.md):
 *
 *   tools, prompts      `<server><separator><name>`, always (a name never changes when a member
 *                       is added); no member's name followed by the separator starts another's
 *                       (the config refuses `a` and `a__b` with `__`), so a name has one owner.
 *   resources           `mcp-guard://<server>/<the member's own URI>`: unique across members,
 *                       reversible by cutting the prefix, and still a URI (templates too:
 *                       `mcp-guard://files/file:///{path}` expands as the member's would).
 *   list cursors        one opaque cursor for every member's pages: base64url of the cursors of
 *                       the members that have more.
 */

/** The scheme of the URIs a virtual server gives its members' resources. */
export const VIRTUAL_URI_SCHEME = 'mcp-guard://';

/** Where a namespaced name or URI leads: the member, and the name or URI it knows itself. */
export interface Owned {
  member: string;
  own: string;
}

export class Namespace {
  /** Each member with its name and separator, longest first (the config makes sure at most one matches a name). */
  private readonly prefixes: ReadonlyArray<{ member: string; prefix: string }>;
  private readonly members: ReadonlySet<string>;

  constructor(
    members: readonly string[],
    readonly separator: string,
  ) {
    this.members = new Set(members);
    this.prefixes = [...members].sort((a, b) => b.length - a.length).map((member) => ({ member, prefix: member + separator }));
  }

  has(member: string): boolean {
    return this.members.has(member);
  }

  /** A member's tool or prompt name as the client sees it. */
  name(member: string, own: string): string {
    return `${member}${this.separator}${own}`;
  }

  /** The member and own name of a namespaced tool or prompt name; undefined when no member owns it. */
  splitName(name: string): Owned | undefined {
    for (const { member, prefix } of this.prefixes) {
      if (name.length > prefix.length && name.startsWith(prefix)) return { member, own: name.slice(prefix.length) };
    }
    return undefined;
  }

  /** A member's resource URI (or URI template) as the client sees it. */
  uri(member: string, own: string): string {
    return `${VIRTUAL_URI_SCHEME}${member}/${own}`;
  }

  /** The member and own URI of a virtual server's resource URI; undefined when it is not one of a member. */
  splitUri(uri: string): Owned | undefined {
    if (!uri.startsWith(VIRTUAL_URI_SCHEME)) return undefined;
    const slash = uri.indexOf('/', VIRTUAL_URI_SCHEME.length);
    if (slash === -1) return undefined;
    const member = uri.slice(VIRTUAL_URI_SCHEME.length, slash);
    const own = uri.slice(slash + 1);
    return this.members.has(member) && own !== '' ? { member, own } : undefined;
  }
}

/** The most members a cursor may name, and the longest member cursor it may carry (characters). */
const MAX_CURSOR_CHARS = 65_536;

/**
 * The list cursor of a virtual server: for each member that has more, its own cursor. Opaque to
 * the client; a cursor naming a server that is not a member of this session is refused, so it
 * can never reach a server the caller may not.
 */
export function encodeCursor(next: ReadonlyMap<string, string>): string | undefined {
  if (next.size === 0) return undefined;
  return Buffer.from(JSON.stringify({ v: 1, next: Object.fromEntries(next) }), 'utf8').toString('base64url');
}

/** The members' cursors of a virtual server's cursor; undefined when it is not one of this namespace's. */
export function decodeCursor(cursor: unknown, namespace: Namespace): Map<string, string> | undefined {
  if (typeof cursor !== 'string' || cursor.length > MAX_CURSOR_CHARS) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null || (parsed as { v?: unknown }).v !== 1) return undefined;
  const next = (parsed as { next?: unknown }).next;
  if (typeof next !== 'object' || next === null || Array.isArray(next)) return undefined;
  const found = new Map<string, string>();
  for (const [member, own] of Object.entries(next)) {
    if (!namespace.has(member) || typeof own !== 'string') return undefined;
    found.set(member, own);
  }
  return found.size > 0 ? found : undefined;
}
