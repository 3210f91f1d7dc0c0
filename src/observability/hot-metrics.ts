/**
 * Counters and histograms for the request path, as plain numbers that prom-client reads only when
 * /metrics is scraped. prom-client's own inc() and observe(), even on a child from labels(),
 * validate and hash the label object on every call: measured, about 10 µs per request for the
 * four series a forwarded request touches, several percent of the gateway's work. Here a label
 * combination is looked up once (cell()), and counting is a property increment.
 *
 * Label values must already be bounded (metrics.ts sees to that): every combination ever used
 * keeps its cell.
 */
import { Counter, type Registry } from 'prom-client';

/** One counter series: add to `value`. */
export interface CounterCell {
  value: number;
}

/** One histogram series. */
export interface HistogramCell {
  observe(value: number): void;
}

/** Cells of one label set per combination of values, made on first use. */
class Cells<T> {
  private readonly byKey = new Map<string, { labels: Record<string, string>; cell: T }>();

  constructor(
    private readonly labelNames: readonly string[],
    private readonly make: () => T,
  ) {}

  get(values: readonly string[]): T {
    const key = values.length === 1 ? (values[0] as string) : values.join('\u0000');
    let entry = this.byKey.get(key);
    if (entry === undefined) {
      const labels: Record<string, string> = {};
      this.labelNames.forEach((name, i) => (labels[name] = values[i] ?? ''));
      entry = { labels, cell: this.make() };
      this.byKey.set(key, entry);
    }
    return entry.cell;
  }

  entries(): IterableIterator<{ labels: Record<string, string>; cell: T }> {
    return this.byKey.values();
  }
}

/**
 * A prom-client Counter fed from cells: what the cells counted since the last scrape is added to
 * it when it is collected. The Counter stays a normal prom-client metric (exposition, JSON, reset).
 */
export class HotCounter<L extends string> {
  readonly metric: Counter<L>;
  private readonly cells: Cells<CounterCell & { reported: number; exported: boolean }>;

  constructor(options: { name: string; help: string; labelNames: readonly L[]; registers: Registry[] }) {
    this.cells = new Cells(options.labelNames, () => ({ value: 0, reported: 0, exported: false }));
    const cells = this.cells;
    this.metric = new Counter<L>({
      name: options.name,
      help: options.help,
      labelNames: options.labelNames,
      registers: options.registers,
      collect() {
        for (const { labels, cell } of cells.entries()) {
          // A cell made but never counted still shows, at 0: series that exist from the start.
          if (cell.value > cell.reported || !cell.exported) {
            this.inc(labels as Record<L, string>, cell.value - cell.reported);
            cell.reported = cell.value;
            cell.exported = true;
          }
        }
      },
    });
  }

  /** The cell of these label values, in labelNames order. */
  cell(...values: string[]): CounterCell {
    return this.cells.get(values);
  }
}

class BucketCell implements HistogramCell {
  /** Per bucket (not cumulative); the last one is +Inf. */
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(value: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    (this.counts[i] as number)++;
    this.sum += value;
    this.count++;
  }
}

interface ExportedValue {
  labels: Record<string, string | number>;
  sharedLabels?: Record<string, string>;
  value: number;
  metricName: string;
}

/**
 * A histogram registered directly in a prom-client Registry (the registry only needs name, help,
 * type, get() and reset()), with the exposition prom-client's Histogram writes: cumulative
 * `_bucket` series with `le` first, then `+Inf`, `_sum` and `_count`.
 */
export class HotHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly bounds: readonly number[];
  private readonly labelNames: readonly string[];
  private cells: Cells<BucketCell>;

  constructor(options: { name: string; help: string; labelNames: readonly string[]; buckets: readonly number[]; registers: Registry[] }) {
    this.name = options.name;
    this.help = options.help;
    this.bounds = [...options.buckets].sort((a, b) => a - b);
    this.labelNames = options.labelNames;
    this.cells = new Cells(options.labelNames, () => new BucketCell(this.bounds));
    for (const registry of options.registers) registry.registerMetric(this as never);
  }

  /** The cell of these label values, in labelNames order. */
  cell(...values: string[]): HistogramCell {
    return this.cells.get(values);
  }

  /** What prom-client's Registry reads for the text exposition (labels as prom-client's Histogram gives them). */
  async getForPromString(): Promise<{ name: string; help: string; type: string; aggregator: string; values: ExportedValue[] }> {
    const values: ExportedValue[] = [];
    const bucket = `${this.name}_bucket`;
    for (const { labels, cell } of this.cells.entries()) {
      let cumulative = 0;
      this.bounds.forEach((le, i) => {
        cumulative += cell.counts[i] as number;
        values.push({ labels: { le }, sharedLabels: labels, value: cumulative, metricName: bucket });
      });
      values.push({ labels: { le: '+Inf' }, sharedLabels: labels, value: cell.count, metricName: bucket });
      values.push({ labels: {}, sharedLabels: labels, value: cell.sum, metricName: `${this.name}_sum` });
      values.push({ labels: {}, sharedLabels: labels, value: cell.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** The same, each value's labels in one object (prom-client's get(), for JSON). */
  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: ExportedValue[] }> {
    const data = await this.getForPromString();
    return { ...data, values: data.values.map((v) => ({ labels: { ...v.sharedLabels, ...v.labels }, value: v.value, metricName: v.metricName })) };
  }

  reset(): void {
    this.cells = new Cells(this.labelNames, () => new BucketCell(this.bounds));
  }
}
