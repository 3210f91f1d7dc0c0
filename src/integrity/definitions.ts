/**
 * What a pin is made of: the canonical form of a tool's or a prompt's definition and its SHA-256.
 * Canonical means the members that describe what the model reads and what the call takes
 * (name, title, description, schemas, annotations; for a prompt its arguments), with every
 * object's keys sorted, recursively: two servers that send the same definition in another key
 * order get the same hash, and a change of any character of those members changes it. Members
 * outside that list (icons, `_meta`, `execution`) are not pinned: they change what a client
 * shows, not what a model is told.
 */
import { createHash } from 'node:crypto';

/** What is pinned: tools (tools/list, tools/call) and prompts (prompts/list, prompts/get). */
export type PinKind = 'tool' | 'prompt';

/** The members of a tool that are pinned. */
export const TOOL_FIELDS = ['name', 'title', 'description', 'inputSchema', 'outputSchema', 'annotations'] as const;
/** The members of a prompt that are pinned. */
export const PROMPT_FIELDS = ['name', 'title', 'description', 'arguments'] as const;

export function fieldsOf(kind: PinKind): readonly string[] {
  return kind === 'tool' ? TOOL_FIELDS : PROMPT_FIELDS;
}

/** The member of a list result that holds the items of a kind. */
export function listMember(kind: PinKind): 'tools' | 'prompts' {
  return kind === 'tool' ? 'tools' : 'prompts';
}

/** The value with every object's keys sorted, recursively (arrays keep their order). */
export function sortedDeep(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortedDeep);
  if (value === null || typeof value !== 'object') return value;
  // No prototype: a member named "__proto__" (JSON.parse makes it an own property) must be a
  // member here too, hashed and pinned like any other; on a plain {} assigning it would set the
  // prototype instead, and the key would vanish from the hash while still reaching clients.
  const out = Object.create(null) as Record<string, unknown>;
  for (const key of Object.keys(value).sort()) {
    const member = (value as Record<string, unknown>)[key];
    if (member !== undefined) out[key] = sortedDeep(member);
  }
  return out;
}

/** Canonical JSON: sorted keys, no whitespace. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortedDeep(value)) ?? 'null';
}

/** The pinned members of a listed item (those it has), keys sorted. */
export function definitionOf(kind: PinKind, item: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const field of fieldsOf(kind)) {
    if (item[field] !== undefined) out[field] = sortedDeep(item[field]);
  }
  return out;
}

/** SHA-256 (hex) of a definition's canonical JSON. */
export function hashDefinition(definition: Record<string, unknown>): string {
  return createHash('sha256').update(canonicalJson(definition)).digest('hex');
}

/** The pinned members whose canonical JSON differs between two definitions (a member added or removed counts). */
export function changedFields(kind: PinKind, before: Record<string, unknown>, after: Record<string, unknown>): string[] {
  return fieldsOf(kind).filter((field) => canonicalJson(before[field]) !== canonicalJson(after[field]));
}
