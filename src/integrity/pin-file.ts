/**
 * The pin file (`[tool_integrity] pin_file`): reviewed text. One JSON document, keys sorted at
 * every level and two-space indented, so that `mcp-guard pin` run twice on the same servers
 * writes the same bytes and a changed tool is a small, readable diff in code review: each entry
 * holds the server's name, the tool's or prompt's name, its SHA-256 and the pinned definition
 * itself (what the reviewer approves).
 *
 *   { "version": 1,
 *     "servers": { "<server>": { "prompts": { "<name>": { "definition": {...}, "sha256": "..." } },
 *                                "tools":   { "<name>": { "definition": {...}, "sha256": "..." } } } } }
 *
 * On reading, each entry's sha256 must be the hash of its definition: an edited definition
 * without its hash (or the reverse) is an error naming the entry, never a silent pin.
 * Written atomically (a temporary file in the same directory, then a rename): a gateway reading
 * it (a reload) sees the old file or the new one, never half of one.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { hashDefinition, listMember, sortedDeep, type PinKind } from './definitions.js';
import { isObject } from '../jsonrpc/messages.js';

export interface Pin {
  sha256: string;
  definition: Record<string, unknown>;
}

/** One server's pins, by tool and prompt name. */
export interface ServerPins {
  tools: Map<string, Pin>;
  prompts: Map<string, Pin>;
}

/** Every server's pins, by server name. */
export type Pins = Map<string, ServerPins>;

export const PIN_FILE_VERSION = 1;

/** A pin file that cannot be used: the message names the file and the entry. */
export class PinFileError extends Error {}

export function emptyServerPins(): ServerPins {
  return { tools: new Map(), prompts: new Map() };
}

export function pinsOf(pins: ServerPins, kind: PinKind): Map<string, Pin> {
  return kind === 'tool' ? pins.tools : pins.prompts;
}

/** A pin for a definition. */
export function pinFor(definition: Record<string, unknown>): Pin {
  return { sha256: hashDefinition(definition), definition };
}

/** Reads a pin file; `missing` when there is none (no pins at all). Throws PinFileError when it is unreadable or malformed. */
export async function readPins(path: string): Promise<{ pins: Pins; missing: boolean }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { pins: new Map(), missing: true };
    throw new PinFileError(`pin file ${path}: cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return { pins: parsePins(text, path), missing: false };
}

/** readPins, synchronously: at start-up, so that the gateway never serves a request before its pins are in force. */
export function readPinsSync(path: string): { pins: Pins; missing: boolean } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { pins: new Map(), missing: true };
    throw new PinFileError(`pin file ${path}: cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return { pins: parsePins(text, path), missing: false };
}

/** The pins of a pin file's text. Throws PinFileError naming the entry at fault. */
export function parsePins(text: string, path: string): Pins {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch {
    throw new PinFileError(`pin file ${path}: not valid JSON`);
  }
  const fail = (where: string, message: string): never => {
    throw new PinFileError(`pin file ${path}: ${where}: ${message}`);
  };
  if (!isObject(document)) return fail('(file)', 'expected a JSON object');
  if (document['version'] !== PIN_FILE_VERSION) fail('version', `expected ${PIN_FILE_VERSION}`);
  const servers = document['servers'];
  if (!isObject(servers)) return fail('servers', 'expected an object of servers');
  const pins: Pins = new Map();
  for (const [server, entry] of Object.entries(servers)) {
    if (!isObject(entry)) return fail(`servers.${server}`, 'expected an object with "tools" and "prompts"');
    const own = emptyServerPins();
    for (const kind of ['tool', 'prompt'] as const) {
      const member = listMember(kind);
      const list = entry[member] ?? {};
      if (!isObject(list)) return fail(`servers.${server}.${member}`, 'expected an object');
      for (const [name, pin] of Object.entries(list)) {
        const where = `servers.${server}.${member}.${JSON.stringify(name)}`;
        if (!isObject(pin) || typeof pin['sha256'] !== 'string' || !isObject(pin['definition'])) {
          return fail(where, 'expected { "sha256": "...", "definition": {...} }');
        }
        const definition = sortedDeep(pin['definition']) as Record<string, unknown>;
        if (definition['name'] !== name) fail(where, 'the definition names another tool or prompt');
        if (hashDefinition(definition) !== pin['sha256']) fail(where, 'sha256 is not the hash of the definition: write pins with `mcp-guard pin`');
        pinsOf(own, kind).set(name, { sha256: pin['sha256'], definition });
      }
    }
    pins.set(server, own);
  }
  return pins;
}

/** The pin file's text: keys sorted at every level, two-space indented, one trailing newline. */
export function serializePins(pins: Pins): string {
  const servers: Record<string, unknown> = {};
  for (const [server, own] of pins) {
    servers[server] = {
      tools: Object.fromEntries([...own.tools].map(([name, pin]) => [name, { sha256: pin.sha256, definition: pin.definition }])),
      prompts: Object.fromEntries([...own.prompts].map(([name, pin]) => [name, { sha256: pin.sha256, definition: pin.definition }])),
    };
  }
  return `${JSON.stringify(sortedDeep({ version: PIN_FILE_VERSION, servers }), null, 2)}\n`;
}

/** Writes the pin file atomically: a temporary file beside it, then a rename over it. */
export async function writePins(path: string, pins: Pins): Promise<void> {
  const temporary = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(temporary, serializePins(pins), { mode: 0o644 });
    await rename(temporary, path);
  } catch (err) {
    await rm(temporary, { force: true }).catch(() => undefined);
    throw err;
  }
}
