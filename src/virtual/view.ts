/**
 * A virtual server as one caller sees it: only the members it may reach. An identity restricted
 * to some servers (`servers` of its key, certificate or JWT claim) reaches a virtual server when
 * it names the virtual server itself (then every member) or at least one member (then those).
 * Views are made once per member set and kept, so a request allocates nothing for them.
 */
import type { RouteConfig, VirtualServerConfig } from '../config/schema.js';
import { Namespace } from './names.js';

/** Member sets per virtual server config (a set of a few names each; bounded by MAX_VIEWS). */
const views = new WeakMap<VirtualServerConfig, Map<string, VirtualServerConfig>>();
const namespaces = new WeakMap<VirtualServerConfig, Namespace>();
const MAX_VIEWS = 256;

/**
 * The virtual server with the members `servers` allows (undefined = every server); undefined when
 * it allows none of them, nor the virtual server itself.
 */
export function viewFor(config: VirtualServerConfig, servers: ReadonlySet<string> | undefined): VirtualServerConfig | undefined {
  if (servers === undefined || servers.has(config.name)) return config;
  const members = config.servers.filter((member) => servers.has(member));
  if (members.length === 0) return undefined;
  if (members.length === config.servers.length) return config;
  let known = views.get(config);
  if (!known) views.set(config, (known = new Map()));
  const key = members.join(',');
  let view = known.get(key);
  if (!view) {
    if (known.size >= MAX_VIEWS) known.delete(known.keys().next().value as string);
    view = { ...config, servers: members };
    known.set(key, view);
  }
  return view;
}

/**
 * What a session is bound to besides its route's name: a virtual server's members as its caller
 * sees them ('' for a server). Made once per view, so a request joins no names.
 */
export function scopeOf(server: RouteConfig): string {
  if (server.transport !== 'virtual') return '';
  let scope = scopes.get(server);
  if (scope === undefined) scopes.set(server, (scope = server.servers.join(',')));
  return scope;
}

const scopes = new WeakMap<VirtualServerConfig, string>();

/** How the view names its members' tools, prompts and resources. */
export function namespaceOf(view: VirtualServerConfig): Namespace {
  let names = namespaces.get(view);
  if (!names) namespaces.set(view, (names = new Namespace(view.servers, view.separator)));
  return names;
}
