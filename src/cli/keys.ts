/**
 * `mcp-guard keygen` and `mcp-guard hash-key`: make API keys and the config entries that accept
 * them. A key is printed once, on stdout only; it never appears in an error message or on stderr.
 */
import { stringify } from 'smol-toml';
import { generateApiKey, hashApiKey, isWellFormedToken, MAX_TOKEN_LENGTH } from '../auth/key-format.js';
import { IDENTITY_ID_PATTERN } from '../config/constants.js';

/** What keygen needs, once the command line has been checked. */
export interface KeygenOptions {
  /** The identity id (IDENTITY_ID_PATTERN). */
  id: string;
  /** allowed_tools; absent = the entry has none (every tool). */
  tools?: string[];
  /** The key's own rate_limit (requests per second); absent = the `[rate_limit]` default. */
  rateLimit?: number;
}

/** keygen's command-line values, as parseArgs gives them. */
export interface KeygenArgs {
  id?: string | undefined;
  tools?: string | undefined;
  'rate-limit'?: string | undefined;
}

/** What --rate-limit accepts: a plain decimal number (what the printed TOML line repeats). */
const DECIMAL = /^(?:\d+(?:\.\d*)?|\.\d+)$/;
/** The schema's bound on `rate_limit`: a printed entry must be one the config accepts. */
const MAX_RATE_LIMIT = 1_000_000;

/** keygen's options, or the usage error to report (exit 2). */
export function keygenOptions(args: KeygenArgs): KeygenOptions | { error: string } {
  if (args.id === undefined) return { error: 'keygen needs --id ID' };
  if (!IDENTITY_ID_PATTERN.test(args.id)) return { error: `--id must be 1 to 128 letters, digits or ._@:+-, got ${JSON.stringify(args.id)}` };
  const options: KeygenOptions = { id: args.id };
  if (args['rate-limit'] !== undefined) {
    const rate = DECIMAL.test(args['rate-limit']) ? Number(args['rate-limit']) : Number.NaN;
    if (!(rate > 0 && rate <= MAX_RATE_LIMIT)) {
      return { error: `--rate-limit must be a number of requests per second above 0 and at most ${MAX_RATE_LIMIT}, got ${JSON.stringify(args['rate-limit'])}` };
    }
    options.rateLimit = rate;
  }
  if (args.tools === undefined) return options;
  const tools = args.tools.split(',').map((tool) => tool.trim());
  if (tools.some((tool) => tool === '')) return { error: '--tools must be a comma-separated list of tool names or globs, without empty entries' };
  // The config loader reads every `${` as a variable reference, and has no escape for it.
  if (tools.some((tool) => tool.includes('${')))
    return { error: '--tools: a tool name cannot contain "${" (the config file reads it as a variable reference)' };
  return { ...options, tools };
}

/** A string as a TOML basic string; smol-toml escapes what TOML requires (quotes, controls, DEL). */
function tomlString(value: string): string {
  return stringify({ v: value }).trim().slice('v = '.length);
}

/** Makes a key and returns what keygen prints: the key, then the config entry that accepts it. */
export async function keygen(options: KeygenOptions): Promise<string> {
  const { key, prefix } = generateApiKey();
  const hash = await hashApiKey(key);
  const lines = [
    `# API key for "${options.id}": shown once; store it now (only its hash is kept)`,
    key,
    '',
    '# Add this to the config file:',
    '[[auth.api_keys]]',
    `id = ${tomlString(options.id)}`,
    `key_prefix = ${tomlString(prefix)}`,
    `key_hash = ${tomlString(hash)}`,
  ];
  if (options.tools) lines.push(`allowed_tools = [${options.tools.map(tomlString).join(', ')}]`);
  // Enforced only with an enabled [rate_limit] section (the config refuses it otherwise).
  if (options.rateLimit !== undefined) lines.push(`rate_limit = ${options.rateLimit}`);
  return `${lines.join('\n')}\n`;
}

/**
 * The key hash-key hashes: the argument, or the first line of stdin (read to its end), without its
 * line ending. Throws (exit 1) on an empty or malformed key; the message never contains the key.
 */
export async function readKey(argument: string | undefined, stdin: NodeJS.ReadableStream & { isTTY?: boolean } = process.stdin): Promise<string> {
  let key = argument;
  if (key === undefined) {
    if (stdin.isTTY) process.stderr.write('mcp-guard: reading the key from standard input (end with Enter, then Ctrl-D)\n');
    const chunks: Buffer[] = [];
    for await (const chunk of stdin) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    key = /^[^\n]*/.exec(Buffer.concat(chunks).toString('utf8'))![0].replace(/\r$/, '');
  }
  if (key === '') throw new Error('hash-key: the key is empty');
  if (!isWellFormedToken(key)) {
    throw new Error(
      `hash-key: a key must be at most ${MAX_TOKEN_LENGTH} visible ASCII characters (no spaces or control characters); the gateway would never accept this one`,
    );
  }
  return key;
}

/** What hash-key prints: the key's argon2id PHC string, for `key_hash`. */
export async function hashKey(key: string): Promise<string> {
  return `${await hashApiKey(key)}\n`;
}
