/**
 * The one small interface every upstream transport implements. The gateway core (src/mcp/) talks
 * only to this: it never knows whether a server is a child process, a streamable HTTP endpoint or
 * a legacy SSE endpoint.
 *
 * Ids: the core hands each transport the client's own JSON-RPC ids and progress tokens, and gets
 * them back unchanged in responses and related messages. A transport that multiplexes several
 * clients over one connection (stdio, a shared session) rewrites them on the way out and restores
 * them on the way back (see correlator.ts), so that concurrent clients never see each other's
 * replies.
 */
import type { Logger } from '../observability/logger.js';
import type { ServerConfig } from '../config/schema.js';
import type { JsonRpcNotification, JsonRpcRequest, JsonRpcResponse } from '../jsonrpc/messages.js';
import type { CancelSignal } from './cancellation.js';

export type UpstreamState =
  /** Not started yet (http/sse upstreams connect lazily, per session). */
  | 'idle'
  | 'starting'
  | 'ready'
  /** Exited or failed; a restart is scheduled. */
  | 'backoff'
  /** Failed several times in a row soon after starting: restarts continue at the slowest pace. */
  | 'crash_loop'
  | 'stopped';

/**
 * The circuit breaker's state (circuit-breaker.ts): `closed` lets requests through; `open` refuses
 * them without trying, after consecutive failures; `half_open` lets one trial request through.
 */
export type CircuitState = 'closed' | 'open' | 'half_open';

export interface UpstreamStatus {
  state: UpstreamState;
  /** True when a request sent now can be expected to reach the server. */
  healthy: boolean;
  /** Why the server is not healthy, for /ready, /routes and check-upstream. Never holds secrets. */
  lastError?: string;
  /** Restarts since the gateway started (stdio). */
  restarts: number;
  /** When `state` last changed (ms since epoch). */
  since: number;
  /** stdio: the pid of the running child (isolated servers: only while exactly one runs). */
  pid?: number;
  /** stdio with isolation "identity" or "session": how many children run now. */
  children?: number;
  /** The circuit breaker's state; absent when the server has none (`circuit_failure_threshold = 0`). */
  circuit?: CircuitState;
}

/** Messages that travel from an upstream to a client that are not replies. */
export type ServerMessage = JsonRpcRequest | JsonRpcNotification;

export interface RequestOptions {
  /**
   * Aborting it cancels the request: the transport sends `notifications/cancelled` upstream (when
   * the request was sent) and the promise rejects with an UpstreamError of kind "cancelled".
   */
  signal?: CancelSignal;
  /**
   * The client capabilities of a request without a session (a 2026-07-28 client declares them
   * with each request): a request the server makes while this one runs is routed to it only for
   * a capability it has. Absent: the session's own, from its initialize.
   */
  capabilities?: Record<string, unknown>;
  /** Overrides the server's timeout_ms. Progress notifications for the request restart the clock. */
  timeoutMs?: number;
  /**
   * Notifications and server-to-client requests that belong to this request while it is in flight
   * (progress for its token, a sampling request made while handling it, ...), with the client's own
   * progress token restored.
   */
  onMessage(message: ServerMessage): void;
}

export interface SessionHandlers {
  /**
   * Messages of the session that belong to no request in flight: list_changed, logging, resource
   * updates, server-to-client requests made outside a request.
   */
  onMessage(message: ServerMessage): void;
  /**
   * The upstream ended this session for good (an HTTP upstream answered 404 for its session id, a
   * legacy SSE connection was lost and could not be re-established). The core ends the downstream
   * session.
   */
  onClose(reason: string): void;
}

export interface OpenSessionOptions {
  /**
   * The client's own `initialize` request, forwarded where the upstream keeps one session per
   * client (http, sse). Absent for the gateway's shared session that serves session-less requests
   * (a plain `curl -X POST` of one JSON-RPC request): the transport then initializes on its own.
   */
  initialize?: JsonRpcRequest;
  /** Appended to the upstream url (prefix routing for http/sse, query included); '' = url as is. */
  forwardPath: string;
  handlers: SessionHandlers;
  /**
   * Who the session is for: the owner key of the identity that opened it (src/auth/identity.ts
   * ownerKey). Upstream state never crosses owners: an isolated stdio server gives each owner its
   * own child, the circuit breaker counts a failure against its owner first.
   */
  owner: string;
  /**
   * Other replicas may send on this session too (sealed sessions): its wire ids start at a random
   * point, so that theirs and ours never meet (src/upstreams/id-table.ts wireIdStart).
   */
  shared?: boolean;
}

export interface UpstreamSession {
  /** The answer to the client's initialize, carrying the client's id (or id 0 when there was none). */
  readonly initializeResult: JsonRpcResponse;
  /**
   * Sends a request and resolves with its response (the client's id restored). Rejects with an
   * UpstreamError when there is no response: transport failure, timeout, cancellation, closed.
   */
  request(request: JsonRpcRequest, options: RequestOptions): Promise<JsonRpcResponse>;
  /** Sends a notification, or the client's answer to a server-to-client request. */
  send(message: JsonRpcNotification | JsonRpcResponse): Promise<void>;
  /**
   * Starts relaying the upstream's standalone server-to-client stream (streamable HTTP GET).
   * Idempotent. Resolves once the stream is established, refused (405) or has failed once; never
   * rejects. Transports whose every message already flows resolve at once.
   */
  openEventStream(): Promise<void>;
  closeEventStream(): void;
  /**
   * Ends the upstream session (HTTP DELETE, closing the SSE connection). Never throws.
   * `keepUpstream`: end it here only, without telling the server (a sealed session that another
   * replica may still serve: src/replicas/seal.ts).
   */
  close(options?: CloseOptions): Promise<void>;
  /**
   * What another replica needs to take this session up (a sealed session id carries it):
   * undefined when it cannot be, because a live connection of this process is the session.
   */
  resumeState?(): ResumeState | undefined;
}

export interface CloseOptions {
  keepUpstream?: boolean;
}

/**
 * How a session is taken up by another replica (docs/operations.md, "Sessions any replica can
 * serve"): `reopen`, opened again there as at the initialize (the gateway's own handshake, no
 * upstream traffic: a shared or per-identity stdio child, a translated 2026-07-28 server); `http`,
 * the streamable HTTP server's own session, by its id; `virtual`, each member by its own.
 */
export type ResumeState =
  { kind: 'reopen' } | { kind: 'http'; sid?: string; version?: string } | { kind: 'virtual'; members: Record<string, ResumeState | null> };

/** The era of MCP a server speaks (docs/eras.md). */
export type Era = 'legacy' | 'modern';

/** What the gateway knows of a server's era, and since when. */
export interface EraVerdict {
  era: Era;
  /**
   * modern: the protocol version both speak (2026-07-28). legacy: the version the server's
   * initialize answered, once known.
   */
  version: string | undefined;
  /** modern: the server's `server/discover` result, as it sent it. */
  discover?: Record<string, unknown>;
  /** When the verdict was reached (ms since epoch). A verdict older than a day is probed again. */
  decidedAt: number;
  /** `probe`: learned from the server. `config`: the server's `era` setting (never probed). */
  source: 'probe' | 'config';
}

/** How one stateless (2026-07-28) request travels to a modern server. */
export interface CallOptions {
  /** Appended to the upstream url (prefix routing for http, query included); '' = url as is. */
  forwardPath: string;
  /**
   * Cancels the request: over HTTP the response stream is closed (the 2026-07-28 cancellation),
   * over stdio `notifications/cancelled` is sent. The promise rejects with kind "cancelled".
   */
  signal?: CancelSignal;
  /** Overrides the server's timeout_ms. Progress notifications for the request restart the clock. */
  timeoutMs?: number;
  /**
   * Notifications that belong to the request (progress with the client's token restored, log
   * lines; for `subscriptions/listen`, the stream's change notifications) until it ends.
   */
  onMessage(message: JsonRpcNotification): void;
  /** HTTP only: headers passed along as they are (the client's `Mcp-Param-*`), names lower-case. */
  headers?: Record<string, string>;
  /** Who sends it: the owner key of the caller's identity (see OpenSessionOptions.owner). */
  owner: string;
}

export interface Upstream {
  readonly config: ServerConfig;
  /** stdio: spawns and initializes the child (resolves when ready or failed once). http/sse: no-op. */
  start(): Promise<void>;
  status(): UpstreamStatus;
  /**
   * The server's era: probed once (`server/discover`, the specification's fallback rules) and
   * remembered with its date, probed again when older than a day or when `refresh` is set; the
   * configured era when `era` is set; always legacy for sse. Rejects with an UpstreamError when
   * the server cannot be reached (no verdict is remembered then). stdio: the probe runs when the
   * child starts (era() starts an idle server and waits for it); a running child's verdict holds
   * whatever its age; `refresh` asks a running modern child again, and makes the next start of
   * a legacy child probe again (an initialized child cannot be asked).
   */
  era(options?: { forwardPath?: string; refresh?: boolean }): Promise<EraVerdict>;
  /**
   * The verdict already reached, without waiting or probing; undefined before the first one.
   * http: the url's own (forward path ''), else the latest reached for any path (shown only).
   */
  readonly verdict: EraVerdict | undefined;
  /**
   * http: the verdict already reached for requests to this forward path (each path is probed on
   * its own: src/upstreams/era.ts PathVerdicts). Absent: `verdict` holds for every request.
   */
  verdictFor?(forwardPath: string): EraVerdict | undefined;
  /** Legacy servers: opens a session (initialize). */
  openSession(options: OpenSessionOptions): Promise<UpstreamSession>;
  /**
   * Takes up a session another replica opened (its `http` ResumeState), without a handshake.
   * Absent for transports whose sessions cannot be.
   */
  resumeSession?(state: Extract<ResumeState, { kind: 'http' }>, options: OpenSessionOptions): Promise<UpstreamSession>;
  /**
   * Modern servers: sends one 2026-07-28 request as it is (its `_meta` envelope included; over
   * HTTP with the `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers it requires) and
   * resolves with the response, the request's own id restored. Rejects with an UpstreamError
   * when there is no response. Throws kind "protocol" for a server whose verdict is legacy.
   */
  call(request: JsonRpcRequest, options: CallOptions): Promise<JsonRpcResponse>;
  /** Ends every session and, for stdio, the whole process tree. Never throws. */
  close(): Promise<void>;
}

/** What every transport is built with. */
export interface UpstreamDeps {
  logger: Logger;
  /** Called each time a supervised child is restarted (stdio), for the audit log. */
  onRestart?: (server: string) => void;
  /**
   * Called when a server message is kept from every client because it cannot be attributed to one
   * identity (a shared stdio child: a log line or a server request while several identities'
   * calls are in flight), for the audit log and metrics. `method` is the message's own.
   */
  onContained?: (server: string, method: string, reason: string) => void;
  /**
   * True when `owner` has a task on `server` that may still be running (src/mcp/tasks.ts): an
   * isolated stdio server that must end an idle child to make room ends one whose owner has none
   * first, since a task lives in its child and ends with it.
   */
  ownerHasTasks?: (server: string, owner: string) => boolean;
}
