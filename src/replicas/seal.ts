/**
 * Sealed session ids: what a session fixed at its initialize, encrypted and authenticated with a
 * key every replica shares (`[server] session_keys`), so that any replica can serve the session
 * without asking the one that opened it.
 *
 *   <kid>.<base64url(iv 12 B | AES-256-GCM ciphertext | tag 16 B)>
 *
 * The key id is in clear, to pick the key (the first key seals, the others still open ids sealed
 * before a rotation). The route the session was opened on is the associated data: an id opened on
 * another route fails like a forged one. A key is derived once per configured secret (HKDF-SHA256
 * with the key id as info), never per request. Opening fails the same way whatever went wrong (an
 * unknown key id, a changed byte, an expired or foreign id): the caller answers 404.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

const IV_BYTES = 12;
const TAG_BYTES = 16;
/** The longest sealed id opened: a header longer than this is not ours, and is not decrypted. */
const MAX_SEALED_LENGTH = 8_192;
const SALT = 'mcp-guard session seal v1';

/** What a session fixed at its initialize: the same on every replica. */
export interface SealedState {
  /** The route (server or virtual server name) it was opened on. */
  route: string;
  /** The owner key of the identity that opened it (src/auth/identity.ts ownerKey). */
  owner: string;
  /** The protocol version negotiated. */
  version: string;
  /** A virtual server's scope (src/virtual/view.ts scopeOf); '' otherwise. */
  scope: string;
  /** Appended to the upstream url (prefix routing). */
  forwardPath: string;
  /** The client's initialize params (capabilities, clientInfo, protocolVersion). */
  client: Record<string, unknown>;
  /** What the upstream session needs to be taken up elsewhere (UpstreamSession.resumeState). */
  upstream: unknown;
  /** Ms since epoch after which the id is refused. */
  expires: number;
  /** Random: two sessions never share an id, even with the same state. */
  nonce: string;
}

interface Key {
  id: string;
  key: Buffer;
}

/** The `session_keys` entries, parsed: `kid:secret`. */
export function parseSessionKey(entry: string): { id: string; secret: string } | undefined {
  const at = entry.indexOf(':');
  if (at <= 0) return undefined;
  return { id: entry.slice(0, at), secret: entry.slice(at + 1) };
}

export class SessionSeal {
  private readonly keys: Key[];

  /** `entries`: the `session_keys` entries (`kid:secret`), validated by the config; the first seals. */
  constructor(entries: readonly string[]) {
    this.keys = entries.map((entry) => {
      const parsed = parseSessionKey(entry);
      if (!parsed) throw new Error('session_keys: expected "kid:secret"');
      const key = Buffer.from(hkdfSync('sha256', parsed.secret, SALT, `mcp-guard session key ${parsed.id}`, 32));
      return { id: parsed.id, key };
    });
    if (this.keys.length === 0) throw new Error('session_keys: at least one key');
  }

  seal(state: SealedState): string {
    const { id, key } = this.keys[0]!;
    return `${id}.${encrypt(key, aad(id, state.route), JSON.stringify(state))}`;
  }

  /**
   * The state of an id sealed with one of the keys for `route`, unexpired at `now`; undefined for
   * anything else (a random UUID of an unsealed session included).
   */
  open(sealed: string, route: string, now = Date.now()): SealedState | undefined {
    if (sealed.length > MAX_SEALED_LENGTH) return undefined;
    const dot = sealed.indexOf('.');
    if (dot <= 0) return undefined;
    const id = sealed.slice(0, dot);
    const found = this.keys.find((k) => k.id === id);
    if (!found) return undefined;
    const text = this.decrypt(sealed.slice(dot + 1), found, aad(id, route));
    if (text === undefined) return undefined;
    try {
      const state = JSON.parse(text) as SealedState;
      if (state.route !== route || typeof state.expires !== 'number' || state.expires <= now) return undefined;
      return state;
    } catch {
      return undefined;
    }
  }

  /** A message between replicas (src/replicas/bus.ts), encrypted and authenticated like a session id: `<kid>.<base64url>`. */
  sealMessage(text: string): string {
    const { id, key } = this.keys[0]!;
    return `${id}.${encrypt(key, Buffer.from(`${id}\u0000bus`, 'utf8'), text)}`;
  }

  /** A message another replica sealed with one of the keys; undefined for anything else. */
  openMessage(sealed: string): string | undefined {
    const dot = sealed.indexOf('.');
    if (dot <= 0) return undefined;
    const id = sealed.slice(0, dot);
    const found = this.keys.find((k) => k.id === id);
    return found && this.decrypt(sealed.slice(dot + 1), found, Buffer.from(`${id}\u0000bus`, 'utf8'));
  }

  /**
   * The plaintext of `encoded` (base64url of iv | ciphertext | tag), or undefined. Only the one
   * canonical encoding is accepted: Node's base64url decoder also takes padding, `+`, `/` and
   * stray characters, and an id that opened under several spellings could not be revoked by one.
   */
  private decrypt(encoded: string, found: Key, additional: Buffer): string | undefined {
    if (!BASE64URL.test(encoded)) return undefined;
    const raw = Buffer.from(encoded, 'base64url');
    if (raw.length < IV_BYTES + TAG_BYTES + 2 || raw.toString('base64url') !== encoded) return undefined;
    try {
      const decipher = createDecipheriv('aes-256-gcm', found.key, raw.subarray(0, IV_BYTES));
      decipher.setAAD(additional);
      decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
      return Buffer.concat([decipher.update(raw.subarray(IV_BYTES, raw.length - TAG_BYTES)), decipher.final()]).toString('utf8');
    } catch {
      return undefined;
    }
  }
}

const BASE64URL = /^[A-Za-z0-9_-]+$/;

/**
 * Random IVs, drawn from the system's generator a batch at a time: one randomBytes call costs
 * about as much as the whole encryption, and every IV is still 96 fresh random bits.
 */
const IV_BATCH = 256;
let ivPool = Buffer.alloc(0);
let ivAt = 0;

function nextIv(): Buffer {
  if (ivAt + IV_BYTES > ivPool.length) {
    ivPool = randomBytes(IV_BYTES * IV_BATCH);
    ivAt = 0;
  }
  const iv = ivPool.subarray(ivAt, ivAt + IV_BYTES);
  ivAt += IV_BYTES;
  return iv;
}

/** base64url of iv | AES-256-GCM ciphertext | tag. */
function encrypt(key: Buffer, additional: Buffer, text: string): string {
  const iv = nextIv();
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(additional);
  const body = Buffer.concat([cipher.update(text, 'utf8'), cipher.final()]);
  return Buffer.concat([iv, body, cipher.getAuthTag()]).toString('base64url');
}

function aad(keyId: string, route: string): Buffer {
  return Buffer.from(`${keyId}\u0000${route}`, 'utf8');
}
