/**
 * status() of an HTTP upstream. An HTTP upstream has no process to watch: it is healthy until a
 * request fails to reach the server (or the server answers 5xx), and again after the next answer.
 * request.ts and body.ts record what they see here.
 */
import type { UpstreamError } from '../errors.js';
import type { UpstreamState, UpstreamStatus } from '../upstream.js';

/** status() for an HTTP upstream: healthy until a failure is seen, again after a success. */
export class UpstreamHealth {
  private state: UpstreamState = 'idle';
  private healthy = true;
  private lastError: string | undefined;
  private since = Date.now();

  /** The server answered (any status below 500). */
  succeeded(): void {
    this.healthy = true;
    this.lastError = undefined;
    this.setState('ready');
  }

  /** A request could not reach the server, or it answered 5xx. */
  failed(error: UpstreamError): void {
    this.healthy = false;
    this.lastError = error.message;
    // 'idle' stays 'idle': http upstreams have no process that could be in backoff.
    if (this.state === 'ready') this.setState('idle');
  }

  stopped(): void {
    this.healthy = false;
    this.lastError = 'Upstream closed';
    this.setState('stopped');
  }

  snapshot(): UpstreamStatus {
    const status: UpstreamStatus = { state: this.state, healthy: this.healthy, restarts: 0, since: this.since };
    if (this.lastError !== undefined) status.lastError = this.lastError;
    return status;
  }

  private setState(state: UpstreamState): void {
    if (this.state === state) return;
    this.state = state;
    this.since = Date.now();
  }
}
