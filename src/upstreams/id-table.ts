/**
 * What a transport keeps per request in flight, by a numeric id the table hands out (the wire id).
 *
 * Why not a Map: a long-lived Map that gains and loses an entry per request keeps those requests
 * alive past the young-generation GC. Each time the Map's hash table grows or shrinks, V8 leaves
 * the old table behind (for live iterators) with its entries in place; that old table sits in the
 * old generation, which the young-generation GC treats as a root until the next full GC. Every
 * request in flight at a rehash is pinned that way, and with a rehash every dozen requests that is
 * nearly all of them: in `npm run bench`, an HTTP gateway promoted ~6 KB per request to the old
 * generation and its scavenges took 3-5 ms instead of under 1 (docs/performance.md). Here a
 * request's slot is cleared when it ends, the arrays are replaced only when they grow, and nothing
 * outlives its request.
 *
 * Ids increase; one whose slot is still taken by a long request is skipped, so lookups stay one
 * array read. The table doubles when it is half full and never shrinks.
 *
 * It starts small (DEFAULT_CAPACITY): every upstream HTTP session has a table of its own (its
 * correlator), and most hold one request at a time. At 64 slots the two arrays were about 1 KB
 * per session, most of what an idle HTTP session cost beyond a stdio one (the `memory` bench). A
 * busy table (a stdio child's, a shared session's) doubles a few times to what its load needs and
 * then stays there: growing is a copy, once per doubling, never per request.
 */
const EMPTY = -1;

/**
 * A random first wire id for a session that several replicas may send on (a sealed session's
 * streamable HTTP session): each numbers its requests from its own point of a 2^52 range, so two
 * never send the server the same id (a run of a billion requests overlaps another's with a
 * chance of about 2^-22).
 */
export function wireIdStart(): number {
  return 2 ** 20 + Math.floor(Math.random() * (2 ** 52 - 2 ** 21));
}
/** Two requests in flight before the first doubling: a session's initialize, then one at a time. */
const DEFAULT_CAPACITY = 4;

export class IdTable<T> {
  private keys: number[];
  private values: Array<T | undefined>;
  private mask: number;
  private count = 0;
  private next: number;

  /** `first`: the first id claimed (1 unless ids must not meet another process's: wireIdStart()). */
  constructor(capacity = DEFAULT_CAPACITY, first = 1) {
    this.next = first;
    // Doubled from 2 rather than 2 ** n: a power is a double to V8, and `mask` would then be kept
    // as a boxed number (a heap number more per table, an unboxing per lookup).
    let size = 2;
    while (size < capacity) size *= 2;
    this.keys = new Array<number>(size).fill(EMPTY);
    this.values = new Array<T | undefined>(size).fill(undefined);
    this.mask = size - 1;
  }

  get size(): number {
    return this.count;
  }

  /** A fresh id whose slot is free: `set` it before claiming another. */
  claim(): number {
    if ((this.count + 1) * 2 > this.keys.length) this.grow();
    let id = this.next;
    // `&` keeps the low bits of ids past 2^31 too (ToInt32 is modulo 2^32).
    while (this.keys[id & this.mask] !== EMPTY) id++;
    this.next = id + 1;
    return id;
  }

  set(id: number, value: T): void {
    const slot = id & this.mask;
    if (this.keys[slot] !== EMPTY && this.keys[slot] !== id) throw new Error(`IdTable: id ${id} was not claimed`);
    if (this.keys[slot] === EMPTY) this.count++;
    this.keys[slot] = id;
    this.values[slot] = value;
  }

  /** The value of an id; undefined for any other number (or a non-number). */
  get(id: unknown): T | undefined {
    if (typeof id !== 'number') return undefined;
    const slot = id & this.mask;
    return this.keys[slot] === id ? this.values[slot] : undefined;
  }

  delete(id: number): boolean {
    const slot = id & this.mask;
    if (this.keys[slot] !== id) return false;
    this.keys[slot] = EMPTY;
    this.values[slot] = undefined;
    this.count--;
    return true;
  }

  /** The values, oldest id first (a copy: deleting while iterating it is safe). */
  ordered(): T[] {
    const live: Array<[number, T]> = [];
    for (let slot = 0; slot < this.keys.length; slot++) {
      if (this.keys[slot] !== EMPTY) live.push([this.keys[slot]!, this.values[slot]!]);
    }
    return live.sort((a, b) => a[0] - b[0]).map((entry) => entry[1]);
  }

  private grow(): void {
    const keys = this.keys;
    const values = this.values;
    const size = keys.length * 2;
    this.keys = new Array<number>(size).fill(EMPTY);
    this.values = new Array<T | undefined>(size).fill(undefined);
    this.mask = size - 1;
    // Ids that differ in their low bits still do with one bit more: no two land in one slot.
    for (let slot = 0; slot < keys.length; slot++) {
      const id = keys[slot]!;
      if (id === EMPTY) continue;
      this.keys[id & this.mask] = id;
      this.values[id & this.mask] = values[slot];
    }
  }
}
