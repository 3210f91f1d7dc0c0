/**
 * Starts the tracing with telemetry on: the OpenTelemetry SDK is imported here, at start-up, and
 * never with telemetry off (tracing.ts).
 */
import type { TelemetryConfig } from '../../config/schema.js';
import type { Logger } from '../logger.js';
import type { Tracing } from './tracing.js';

/** Loads the SDK and starts the tracer: only called with telemetry on. */
export async function loadTracing(config: TelemetryConfig, log: Logger): Promise<Tracing> {
  const { SdkTracing } = await import('./sdk.js');
  return new SdkTracing(config, log);
}
