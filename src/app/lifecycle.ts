/**
 * The gateway's life: started once every upstream has been started (readiness follows), and a
 * stop in two parts. First `shutdown_delay_ms` of draining: /ready answers 503 at once so that
 * load balancers take the replica out, while every request is still served, with
 * `Connection: close` (src/app.ts). Then the graceful stop: refuse new requests, let those in
 * flight finish within `shutdown_grace_ms`, then end the upstreams, the connections, the tracing
 * (its last spans exported) and the audit log, in that order.
 */
import type { FastifyInstance } from 'fastify';
import type { Lifecycle } from '../http/health.js';
import type { Services } from './services.js';

/** Requests in flight, for the graceful stop: counted from their first hook to the end of their answer. */
export class InFlight {
  private count = 0;
  private drained: (() => void) | undefined;

  enter(): void {
    this.count++;
  }

  leave(): void {
    if (--this.count === 0) this.drained?.();
  }

  /** Resolves once nothing is in flight, or after `graceMs` whatever is. */
  drain(graceMs: number): Promise<void> {
    if (this.count === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, graceMs);
      timer.unref();
      this.drained = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

export interface Running {
  lifecycle: Lifecycle;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Ends a running shutdown delay now (a second signal); false when none is running. */
  endDelay(): boolean;
}

/** A wait that can be cut short. */
function cancellableDelay(ms: number): { done: Promise<void>; end(): void } {
  let end = (): void => undefined;
  const done = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    end = () => {
      clearTimeout(timer);
      resolve();
    };
  });
  return { done, end };
}

export function lifecycleOf(app: FastifyInstance, services: Services, lifecycle: Lifecycle, inflight: InFlight): Running {
  // Read when used: a reload (src/app/reload.ts) replaces the audit log.
  const { gateway, recorder, config } = services;
  let delay: { done: Promise<void>; end(): void } | undefined;
  return {
    lifecycle,
    async start() {
      recorder.lifecycle('gateway_start');
      await services.tracingLoaded;
      await gateway.start();
      lifecycle.started = true;
    },
    async stop() {
      const delayMs = config.server.shutdown_delay_ms;
      if (delayMs > 0 && !lifecycle.draining) {
        lifecycle.draining = true;
        delay = cancellableDelay(delayMs);
        await delay.done;
        delay = undefined;
      }
      lifecycle.stopping = true;
      // Listen streams are POSTs that never end on their own: they must not hold the grace period.
      gateway.endListens();
      const closing = app.close();
      await inflight.drain(config.server.shutdown_grace_ms);
      await gateway.close();
      app.server.closeAllConnections();
      await closing;
      recorder.lifecycle('gateway_stop');
      // The spans of the last requests go out (a collector that is down cannot hold the stop: tracing.ts).
      await services.tracingLoaded;
      await services.tracing?.shutdown();
      await services.audit.close();
    },
    endDelay() {
      if (!delay) return false;
      delay.end();
      return true;
    },
  };
}
