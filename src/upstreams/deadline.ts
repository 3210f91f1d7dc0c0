/**
 * A client's own deadline over work it may share with other clients (the era probe, the opening
 * of the gateway's own upstream session, a stdio child still starting): the client stops waiting
 * when its `timeout_ms` is up, whatever the shared work does next. The work keeps its own
 * deadline (a request's timeout_ms, a stdio child's startup_timeout_ms) and, when it fails,
 * leaves nothing remembered; what it gives after its client stopped waiting goes to `abandoned`.
 */
import { settleWithin } from '../delay.js';
import { UpstreamError } from './errors.js';

/**
 * Settles as `work` does, or rejects with an UpstreamError of kind 'timeout' (504 and -32002 for
 * the client, src/http/errors.ts) when `work` has not settled within `ms`. A value `work` gives
 * after that is handed to `abandoned` (a session nobody will use: close it); its failure is
 * swallowed, since nobody waits for it any more. The timer is cleared as soon as `work` settles:
 * a timer that outlives its race holds its promises for its whole time (src/delay.ts).
 */
export function waitAtMost<T>(work: Promise<T>, ms: number, server: string, abandoned?: (value: T) => void): Promise<T> {
  return settleWithin(
    work,
    ms,
    () => {
      throw new UpstreamError('timeout', server, `Upstream '${server}' did not answer within ${ms} ms`);
    },
    abandoned,
  );
}
