/**
 * What an HTTP upstream hands to everything that talks to its server (its sessions, its
 * 2026-07-28 calls, each HTTP request): the configuration, the one undici Agent, the logger and
 * the health record behind status(). Its own file so that the request helpers and the sessions
 * can name it without importing the upstream class that builds it (upstream.ts).
 */
import type { Agent } from 'undici';
import type { HttpServerConfig } from '../../config/schema.js';
import type { Logger } from '../../observability/logger.js';
import type { UpstreamSession } from '../upstream.js';
import type { UpstreamHealth } from './health.js';

/** What a session needs from the upstream that opened it. */
export interface HttpContext {
  readonly config: HttpServerConfig;
  /** The configured headers that may be sent (lower-cased, managed ones left out), computed once. */
  readonly configuredHeaders: Readonly<Record<string, string>>;
  readonly agent: Agent;
  readonly logger: Logger;
  readonly health: UpstreamHealth;
  /** Called once by a session when it has ended (closed or expired). */
  forget(session: UpstreamSession): void;
}
