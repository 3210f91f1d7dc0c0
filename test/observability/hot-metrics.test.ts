/** Hot-path counters and histograms: the same exposition as prom-client's own, read at scrape time. */
import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { HotCounter, HotHistogram } from '../../src/observability/hot-metrics.js';
import { expectValidExposition } from '../helpers/promtool.js';

const BUCKETS = [0.001, 0.01, 0.1, 1];
const OBSERVED: Array<[string, string, number]> = [
  ['POST', 'fs', 0.0004],
  ['POST', 'fs', 0.001],
  ['POST', 'fs', 0.05],
  ['GET', 'fs', 7],
  ['POST', 'web', 0.2],
  ['POST', 'fs', 0.0099],
];

describe('HotCounter and HotHistogram', () => {
  it('expose exactly what prom-client Counter and Histogram expose for the same counts', async () => {
    const reference = new Registry();
    const counter = new Counter({ name: 'x_requests_total', help: 'Requests.', labelNames: ['method', 'server'], registers: [reference] });
    const histogram = new Histogram({
      name: 'x_duration_seconds',
      help: 'Durations.',
      labelNames: ['method', 'server'],
      buckets: BUCKETS,
      registers: [reference],
    });
    const hot = new Registry();
    const hotCounter = new HotCounter({ name: 'x_requests_total', help: 'Requests.', labelNames: ['method', 'server'], registers: [hot] });
    const hotHistogram = new HotHistogram({
      name: 'x_duration_seconds',
      help: 'Durations.',
      labelNames: ['method', 'server'],
      buckets: BUCKETS,
      registers: [hot],
    });
    for (const [method, server, seconds] of OBSERVED) {
      counter.inc({ method, server });
      histogram.observe({ method, server }, seconds);
      hotCounter.cell(method, server).value++;
      hotHistogram.cell(method, server).observe(seconds);
    }
    const text = await hot.metrics();
    expect(text).toBe(await reference.metrics());
    expect(text).toContain('x_duration_seconds_bucket{le="0.01",method="POST",server="fs"} 3');
    expect(text).toContain('x_requests_total{method="POST",server="fs"} 4');
    expectValidExposition(text);
    // JSON too, with each value's labels in one object (prom-client adds empty exemplars).
    const withoutExemplars = (metrics: unknown): unknown =>
      JSON.parse(JSON.stringify(metrics, (key, value: unknown) => (key === 'exemplar' ? undefined : value)));
    expect(withoutExemplars(await hot.getMetricsAsJSON())).toEqual(withoutExemplars(await reference.getMetricsAsJSON()));
  });

  it('counts between scrapes add up; a cell made but never counted shows at 0', async () => {
    const registry = new Registry();
    const counter = new HotCounter({ name: 'y_total', help: 'Y.', labelNames: ['allowed'], registers: [registry] });
    counter.cell('false');
    const cell = counter.cell('true');
    cell.value += 2;
    expect(await registry.metrics()).toContain('y_total{allowed="true"} 2');
    expect(await registry.metrics()).toContain('y_total{allowed="false"} 0');
    cell.value += 3;
    await registry.metrics();
    cell.value++;
    expect(await registry.metrics()).toContain('y_total{allowed="true"} 6');
  });
});
