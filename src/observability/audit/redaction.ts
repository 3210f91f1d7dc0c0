/**
 * Redaction of audit lines: credentials never reach a sink, whatever a tool call's arguments or
 * an error message hold. Built-in rules run first and cannot be removed; `[[audit.redaction_rules]]`
 * add the operator's own. Every line stays valid JSON after redaction.
 */
import type { AuditConfig } from '../../config/schema.js';

/** A compiled redaction rule. */
export interface RedactionRule {
  readonly name: string;
  /** Global (g flag). */
  readonly pattern: RegExp;
  /** As in String#replace: `$&`, `$1` refer to the match. */
  readonly replacement: string;
}

/** Names of JSON keys whose value is a credential: Authorization, Cookie, API keys, passwords, secrets, OAuth tokens. */
const CREDENTIAL_KEYS =
  '(?:proxy-)?authorization|(?:set-)?cookie|x-api-key|api[-_]?key|password|passwd|(?:client[-_]?)?secret|(?:access|refresh|id)[-_]?token|token';
const CREDENTIAL_KEY = new RegExp(`^(?:${CREDENTIAL_KEYS})$`, 'i');

/**
 * A JSON.stringify replacer: the whole value of a credential-named key, whatever its type (a
 * string, or an array or object of them: `"password": ["s"]`), becomes "[REDACTED]". Used where
 * a line can hold free-form JSON (tool arguments); the string-valued case is also a line rule.
 */
export function redactCredentialField(key: string, value: unknown): unknown {
  return key !== '' && CREDENTIAL_KEY.test(key) ? '[REDACTED]' : value;
}

/**
 * Always applied, first, and not removable. Each one is safe on a serialised JSON line: it
 * replaces characters that cannot be JSON structure (no `"` or `\`), so the line stays valid.
 */
export const BUILT_IN_REDACTIONS: readonly RedactionRule[] = [
  // The string value of a credential-named key wherever it appears, e.g. in a headers object of
  // tool arguments. Values of other types are replaced while serialising (redactCredentialField).
  {
    name: 'credential-fields',
    pattern: new RegExp(`"(${CREDENTIAL_KEYS})":"(?:[^"\\\\]|\\\\.)*"`, 'gi'),
    replacement: '"$1":"[REDACTED]"',
  },
  // Credentials after an HTTP auth scheme, in any text (a tab inside a JSON string is written `\t`).
  { name: 'bearer-credentials', pattern: /\b(Bearer|Basic)((?:\s|\\t)+)[^\s"\\]+/gi, replacement: '$1$2[REDACTED]' },
  // Keys made by `mcp-guard keygen` (mcp_ + 8 + _ + 43), and long underscore-free mcp_ tokens.
  // Narrower than `mcp_` + anything, so that tool and metric names such as `mcp_search_docs` survive.
  { name: 'mcp-api-key', pattern: /mcp_(?:[A-Za-z0-9]{8}_[A-Za-z0-9_-]{16,}|[A-Za-z0-9]{20,})/g, replacement: '[REDACTED]' },
  // A JWT anywhere (header.payload.signature, both JSON parts base64url of "{").
  { name: 'jwt', pattern: /eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*/g, replacement: '[REDACTED]' },
];

/** Compiles `[[audit.redaction_rules]]`; throws an Error naming a rule that cannot be used. */
export function compileRedactionRules(rules: AuditConfig['redaction_rules']): RedactionRule[] {
  return (rules ?? []).map((rule) => {
    let pattern: RegExp;
    try {
      pattern = new RegExp(rule.pattern, 'g');
    } catch {
      throw new Error(`[[audit.redaction_rules]] ${JSON.stringify(rule.name)}: pattern is not a valid regular expression`);
    }
    // A pattern matching "" would put the replacement between every two characters of every line.
    if (new RegExp(rule.pattern).test('')) throw new Error(`[[audit.redaction_rules]] ${JSON.stringify(rule.name)}: pattern matches the empty string`);
    return { name: rule.name, pattern, replacement: rule.replacement };
  });
}

function applyRules(text: string, rules: readonly RedactionRule[]): string {
  let out = text;
  for (const rule of rules) out = out.replace(rule.pattern, rule.replacement);
  return out;
}

/**
 * Redacts one serialised line: the built-in rules, then the user's. A user rule that breaks the
 * JSON (its replacement holds a `"`, or it matched across fields) is applied to each string value
 * instead, so every written line stays valid JSON.
 */
export function redactLine(line: string, record: unknown, rules: readonly RedactionRule[]): string {
  const builtIn = applyRules(line, BUILT_IN_REDACTIONS);
  if (rules.length === 0) return builtIn;
  const redacted = applyRules(builtIn, rules);
  if (redacted === builtIn) return redacted;
  try {
    JSON.parse(redacted);
    return redacted;
  } catch {
    const all = [...BUILT_IN_REDACTIONS, ...rules];
    const perValue = JSON.stringify(record, (key, value: unknown) => {
      const kept = redactCredentialField(key, value);
      return typeof kept === 'string' ? applyRules(kept, all) : kept;
    });
    return applyRules(perValue, BUILT_IN_REDACTIONS);
  }
}
