/**
 * What an API key looks like and how it is hashed for the config file.
 *
 * A key made by `mcp-guard keygen` is `mcp_` + 8 lowercase letters or digits + `_` + 43 base64url
 * characters (32 random bytes). Its first 12 characters are the prefix: not secret, stored next to
 * the hash as `key_prefix` so the gateway can find the one hash to check. The secret part alone
 * carries 256 bits, so the prefix costs the key nothing.
 */
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { ARGON2ID_PHC_PATTERN } from '../config/constants.js';
import { argon2 } from '../optional.js';

const PREFIX_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';
const PREFIX_RANDOM_CHARS = 8;
const SECRET_BYTES = 32;

/** The whole shape of a generated key; group 1 is its prefix. */
const GENERATED_KEY_PATTERN = /^(mcp_[a-z0-9]{8})_[A-Za-z0-9_-]{43}$/;

/** The longest token the gateway looks at; longer ones are refused before any hashing. */
export const MAX_TOKEN_LENGTH = 512;

/**
 * Visible ASCII only (0x21-0x7E): a bearer token cannot contain spaces (the Authorization header
 * splits on them) and control characters in a key are a paste accident, not a secret.
 */
const TOKEN_PATTERN = /^[\x21-\x7e]+$/;

/**
 * The argon2 package's own defaults (argon2id, 64 MiB, 3 passes, 4 lanes), pinned here so that a
 * change of library defaults cannot silently change what is written into config files. About
 * 100-150 ms per hash on purpose: that is the cost an attacker pays per guess of a leaked hash.
 */
const ARGON2_OPTIONS = { memoryCost: 65_536, timeCost: 3, parallelism: 4 } as const;

/**
 * Whether a token is worth looking at: 1 to MAX_TOKEN_LENGTH visible ASCII characters. Anything
 * else is refused by the verifier without hashing, and refused by `mcp-guard hash-key`, so that no
 * configured key can be one the gateway would never accept.
 */
export function isWellFormedToken(token: string): boolean {
  return token.length > 0 && token.length <= MAX_TOKEN_LENGTH && TOKEN_PATTERN.test(token);
}

/** A new random API key and its (non-secret) prefix. */
export function generateApiKey(): { key: string; prefix: string } {
  let prefix = 'mcp_';
  // randomInt rejects out-of-range draws, so every character is equally likely (no modulo bias).
  for (let i = 0; i < PREFIX_RANDOM_CHARS; i++) prefix += PREFIX_ALPHABET[randomInt(PREFIX_ALPHABET.length)];
  return { key: `${prefix}_${randomBytes(SECRET_BYTES).toString('base64url')}`, prefix };
}

/** The prefix (`mcp_` and 8 characters) of a token shaped like a generated key; undefined otherwise. */
export function keyPrefixOf(token: string): string | undefined {
  return GENERATED_KEY_PATTERN.exec(token)?.[1];
}

/**
 * The argon2id hash of a key as a PHC string, the form `key_hash` takes in the config file
 * (argon2's own parameter order, `m=,p=,t=`; the schema accepts any order, as argon2 does).
 */
export async function hashApiKey(key: string): Promise<string> {
  const { argon2id, hash } = argon2();
  const phc = await hash(key, { type: argon2id, ...ARGON2_OPTIONS });
  if (!ARGON2ID_PHC_PATTERN.test(phc)) throw new Error('argon2 produced a hash in an unexpected format');
  return phc;
}

/**
 * The earlier gateway's key hash: base64 of an unsalted SHA-256. Still accepted (with a warning)
 * so that existing configs keep working while keys are re-issued.
 */
export function legacyHash(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('base64');
}
