/**
 * Tool integrity (docs/tool-integrity.md): the definitions of tools and prompts pinned by
 * `mcp-guard pin`, checked on every list the gateway forwards (every page), again after every
 * `list_changed`, and at every call.
 *
 * The gateway keeps, per server and tool (or prompt), the verdict on the definition it saw last
 * in any list of that server: pinned, changed (unlike its pin) or unpinned. A call is checked
 * against that verdict: a Map lookup, no hashing (the hash is computed once per listed
 * definition). A server's `list_changed` makes its verdicts stale: the next call of one of its
 * tools lists the server's tools first (src/integrity/vet.ts), so that a client holding an old
 * list cannot call a tool whose definition changed since.
 *
 * Each definition unlike its pin is reported once (per server, item and hash): audited as
 * `tool_definition_changed` and counted, whatever the number of lists that show it.
 */
import type { ToolIntegrityConfig } from '../config/schema.js';
import type { JsonRpcResponse } from '../jsonrpc/messages.js';
import type { Logger } from '../observability/logger.js';
import type { ServerMessage } from '../upstreams/upstream.js';
import { errorMessage } from '../error-message.js';
import { changedFields, definitionOf, hashDefinition, listMember, type PinKind } from './definitions.js';
import { emptyServerPins, pinsOf, readPins, readPinsSync, writePins, type Pin, type Pins } from './pin-file.js';

export type IntegrityMode = ToolIntegrityConfig['mode'];

/** What the gateway knows of a tool's (or prompt's) current definition. */
export type Verdict = 'pinned' | 'changed' | 'unpinned';

/** A definition the gateway saw that is not simply its pin. */
export interface DefinitionEvent {
  server: string;
  kind: PinKind;
  /** Its own name on its server (never a virtual server's namespaced name). */
  name: string;
  /** changed: unlike its pin; unpinned: no pin (and no trust on first use); trusted: pinned now, on first use. */
  result: 'changed' | 'unpinned' | 'trusted';
  /** The pinned members that differ from the pin (changed only). */
  fields: string[];
  /** The pin's hash (changed only). */
  oldHash?: string;
  newHash: string;
  mode: IntegrityMode;
}

export interface IntegrityEvents {
  /** Once per server, item and definition. */
  definition(event: DefinitionEvent): void;
}

/** Which server a listed name belongs to and its own name there (a virtual server's names are namespaced). */
export type ItemOwner = (listed: string) => { server: string; name: string } | undefined;

interface Current {
  verdict: Verdict;
  hash: string;
  /** The server said its list changed since: the verdict may be out of date. */
  stale: boolean;
}

/** Per server: the last verdict per tool and per prompt name. */
interface ServerState {
  tool: Map<string, Current>;
  prompt: Map<string, Current>;
}

/** Hashes of listed definitions remembered at most (then forgotten all at once), and the longest item text remembered: at most ~16 MB. */
const MAX_HASHED = 1_000;
const MAX_HASHED_TEXT = 16_384;

/** Reported definitions remembered at most (then forgotten all at once: a report may then repeat, never go missing). */
const MAX_REPORTED = 10_000;

export class ToolIntegrity {
  mode: IntegrityMode = 'off';
  private tofu = false;
  private path = '';
  private pins: Pins = new Map();
  private readonly current = new Map<string, ServerState>();
  private readonly reported = new Set<string>();
  /**
   * The hash of each definition as its server wrote it (its JSON text, key order included): a
   * list that shows the same definitions again costs a JSON.stringify per item, not a canonical
   * form and a SHA-256 (about 20 us for a tool with a schema).
   */
  private readonly hashed = new Map<string, { definition: Record<string, unknown>; hash: string }>();
  /** Pins made on first use, not yet in the file. */
  private readonly trusted: Array<{ server: string; kind: PinKind; name: string; pin: Pin }> = [];
  private writing: Promise<void> | undefined;

  constructor(
    private readonly events: IntegrityEvents,
    private readonly log: Logger,
  ) {}

  /** False when mode is "off": then nothing is checked, nothing costs. */
  get active(): boolean {
    return this.mode !== 'off';
  }

  get blocking(): boolean {
    return this.mode === 'block';
  }

  /**
   * At start-up: applies `[tool_integrity]` and reads the pin file before the gateway serves
   * anything. Throws a PinFileError when the file cannot be used (the gateway does not start).
   */
  configureSync(settings: ToolIntegrityConfig | undefined): void {
    this.apply(settings, settings && settings.mode !== 'off' ? readPinsSync(settings.pin_file) : undefined);
  }

  /**
   * On a reload: applies `[tool_integrity]` and reads the pin file again (`pin --approve` then a
   * reload restores a tool). Rejects with a PinFileError when the file cannot be used; the pins
   * in force then stay as they were.
   */
  async configure(settings: ToolIntegrityConfig | undefined): Promise<void> {
    if (!settings || settings.mode === 'off') return this.apply(settings, undefined);
    // Pins made on first use reach the file before it is read again.
    await this.flush();
    this.apply(settings, await readPins(settings.pin_file));
  }

  private apply(settings: ToolIntegrityConfig | undefined, read: { pins: Pins; missing: boolean } | undefined): void {
    if (!settings || settings.mode === 'off' || !read) {
      this.mode = 'off';
      this.pins = new Map();
      this.current.clear();
      return;
    }
    if (read.missing && !settings.trust_on_first_use) {
      this.log.warn({ pinFile: settings.pin_file }, 'tool integrity: no pin file: every tool and prompt is unpinned (write one with `mcp-guard pin`)');
    }
    this.pins = read.pins;
    this.mode = settings.mode;
    this.tofu = settings.trust_on_first_use;
    this.path = settings.pin_file;
    // What was seen is judged again against the pins as they are now.
    for (const [server, state] of this.current) {
      const own = this.pins.get(server);
      for (const kind of ['tool', 'prompt'] as const) {
        for (const [name, entry] of state[kind]) {
          const pin = own && pinsOf(own, kind).get(name);
          entry.verdict = pin === undefined ? 'unpinned' : pin.sha256 === entry.hash ? 'pinned' : 'changed';
        }
      }
    }
  }

  /**
   * A message from a server (src/integrity/watch.ts): after a list_changed, the server's verdicts
   * of that kind are stale until it is listed again.
   */
  seen(server: string, message: ServerMessage): void {
    if (this.mode === 'off' || 'id' in message) return;
    const kind =
      message.method === 'notifications/tools/list_changed' ? 'tool' : message.method === 'notifications/prompts/list_changed' ? 'prompt' : undefined;
    if (kind === undefined) return;
    const state = this.current.get(server);
    if (state) for (const entry of state[kind].values()) entry.stale = true;
  }

  /** The verdict on a tool's or prompt's current definition; undefined when it is not known (never listed, or stale). */
  verdict(server: string, kind: PinKind, name: string): Verdict | undefined {
    const entry = this.current.get(server)?.[kind].get(name);
    return entry === undefined || entry.stale ? undefined : entry.verdict;
  }

  /**
   * Checks every item of a tools/list or prompts/list answer (one page) against its pin: the
   * gateway learns each item's current definition, reports what differs (once), and in block
   * mode gives the answer without what is not pinned (a new object; `nextCursor` kept).
   */
  checkList(kind: PinKind, response: JsonRpcResponse, owner: ItemOwner): JsonRpcResponse {
    if (this.mode === 'off' || !('result' in response)) return response;
    const items = response.result[listMember(kind)];
    if (!Array.isArray(items)) return response;
    let kept: unknown[] | undefined;
    items.forEach((item: unknown, i) => {
      const pinned = this.judge(kind, item, owner);
      if (!pinned && this.mode === 'block') kept ??= items.slice(0, i);
      else kept?.push(item);
    });
    if (kept === undefined) return response;
    const result: Record<string, unknown> = { ...response.result, [listMember(kind)]: kept };
    // A list cut by the gateway is no longer the server's: no shared cache may keep it (2026-07-28).
    if (result['cacheScope'] === 'public') result['cacheScope'] = 'private';
    return { ...response, result };
  }

  /** True when the item is pinned (or has just been pinned on first use); items it cannot place pass. */
  private judge(kind: PinKind, item: unknown, owner: ItemOwner): boolean {
    if (item === null || typeof item !== 'object') return true;
    const listed = (item as { name?: unknown }).name;
    if (typeof listed !== 'string') return true;
    const placed = owner(listed);
    if (placed === undefined) return true;
    const { definition, hash } = this.hashOf(kind, placed.name, item as Record<string, unknown>);
    const serverPins = this.pins.get(placed.server);
    const pin = serverPins && pinsOf(serverPins, kind).get(placed.name);
    let verdict: Verdict;
    if (pin?.sha256 === hash) verdict = 'pinned';
    else if (pin === undefined && this.tofu) {
      this.trust(placed.server, kind, placed.name, { sha256: hash, definition });
      verdict = 'pinned';
    } else {
      verdict = pin === undefined ? 'unpinned' : 'changed';
      this.report({
        server: placed.server,
        kind,
        name: placed.name,
        result: verdict,
        fields: pin === undefined ? [] : changedFields(kind, pin.definition, definition),
        ...(pin ? { oldHash: pin.sha256 } : {}),
        newHash: hash,
        mode: this.mode,
      });
    }
    let state = this.current.get(placed.server);
    if (!state) this.current.set(placed.server, (state = { tool: new Map(), prompt: new Map() }));
    state[kind].set(placed.name, { verdict, hash, stale: false });
    return verdict === 'pinned';
  }

  /** A listed item's pinned definition and its hash, computed once per distinct item. */
  private hashOf(kind: PinKind, name: string, item: Record<string, unknown>): { definition: Record<string, unknown>; hash: string } {
    const key = `${kind}\u0000${name}\u0000${JSON.stringify(item)}`;
    let found = this.hashed.get(key);
    if (found === undefined) {
      // The pin is of the member's own name: a virtual server's namespaced name is not its definition.
      const definition = definitionOf(kind, { ...item, name });
      found = { definition, hash: hashDefinition(definition) };
      if (key.length <= MAX_HASHED_TEXT) {
        if (this.hashed.size >= MAX_HASHED) this.hashed.clear();
        this.hashed.set(key, found);
      }
    }
    return found;
  }

  private report(event: DefinitionEvent): void {
    const key = `${event.server}\u0000${event.kind}\u0000${event.name}\u0000${event.newHash}`;
    if (this.reported.has(key)) return;
    if (this.reported.size >= MAX_REPORTED) this.reported.clear();
    this.reported.add(key);
    this.log.warn(
      { server: event.server, kind: event.kind, name: event.name, result: event.result, fields: event.fields },
      `tool integrity: ${event.kind} definition ${event.result === 'changed' ? 'differs from its pin' : 'is not pinned'}`,
    );
    this.events.definition(event);
  }

  /** Trust on first use: pinned now, in memory at once and in the file soon (added to it, never rewriting another entry). */
  private trust(server: string, kind: PinKind, name: string, pin: Pin): void {
    let own = this.pins.get(server);
    if (!own) this.pins.set(server, (own = emptyServerPins()));
    pinsOf(own, kind).set(name, pin);
    this.trusted.push({ server, kind, name, pin });
    this.events.definition({ server, kind, name, result: 'trusted', fields: [], newHash: pin.sha256, mode: this.mode });
    this.writing ??= this.persist().finally(() => (this.writing = undefined));
  }

  /**
   * Adds the pins made on first use to the file as it is on disk now (an operator's `mcp-guard
   * pin` may have rewritten it meanwhile: its entries are kept), atomically; again while more came.
   */
  private async persist(): Promise<void> {
    while (this.trusted.length > 0) {
      const batch = this.trusted.splice(0);
      try {
        const { pins } = await readPins(this.path);
        for (const { server, kind, name, pin } of batch) {
          let own = pins.get(server);
          if (!own) pins.set(server, (own = emptyServerPins()));
          if (!pinsOf(own, kind).has(name)) pinsOf(own, kind).set(name, pin);
        }
        await writePins(this.path, pins);
      } catch (err) {
        this.log.error({ pinFile: this.path, err: errorMessage(err) }, 'tool integrity: could not write pins made on first use to the pin file');
      }
    }
  }

  /** Resolves when the pins made on first use so far are in the file (tests, shutdown). */
  async flush(): Promise<void> {
    while (this.writing) await this.writing;
  }
}
