import { describe, expect, it } from 'vitest';
import { IdTable } from '../../src/upstreams/id-table.js';

function add(table: IdTable<string>, value: string): number {
  const id = table.claim();
  table.set(id, value);
  return id;
}

describe('IdTable', () => {
  it('hands out increasing ids and finds each value by its id only', () => {
    const table = new IdTable<string>(4);
    const a = add(table, 'a');
    const b = add(table, 'b');
    expect(b).toBeGreaterThan(a);
    expect(table.get(a)).toBe('a');
    expect(table.get(b)).toBe('b');
    expect(table.size).toBe(2);
    // Numbers that share a slot with a live id, and what is not a number, find nothing.
    for (const other of [a + 4, a + 8, a - 4, -1, 0, 1.5, Number.NaN, String(a), null, undefined]) {
      expect(table.get(other)).toBeUndefined();
    }
  });

  it('frees an id on delete, once', () => {
    const table = new IdTable<string>(4);
    const a = add(table, 'a');
    expect(table.delete(a)).toBe(true);
    expect(table.delete(a)).toBe(false);
    expect(table.get(a)).toBeUndefined();
    expect(table.size).toBe(0);
  });

  it('skips the slot of a long request instead of overwriting it', () => {
    const table = new IdTable<string>(4);
    const long = add(table, 'long');
    for (let i = 0; i < 100; i++) {
      const id = add(table, `short ${i}`);
      expect(id).not.toBe(long);
      expect(table.get(id)).toBe(`short ${i}`);
      table.delete(id);
    }
    expect(table.get(long)).toBe('long');
    expect(table.size).toBe(1);
  });

  it('grows past its capacity and keeps every entry', () => {
    const table = new IdTable<string>(2);
    const ids = Array.from({ length: 1000 }, (_, i) => add(table, `v${i}`));
    expect(new Set(ids).size).toBe(1000);
    expect(table.size).toBe(1000);
    ids.forEach((id, i) => expect(table.get(id)).toBe(`v${i}`));
    expect(table.ordered()).toEqual(ids.map((_, i) => `v${i}`));
  });

  it('starts small by default and grows as requests pile up, keeping every entry', () => {
    const table = new IdTable<string>();
    const ids = Array.from({ length: 100 }, (_, i) => add(table, `v${i}`));
    ids.forEach((id, i) => expect(table.get(id)).toBe(`v${i}`));
    for (const id of ids.slice(0, 99)) table.delete(id);
    expect(table.ordered()).toEqual(['v99']);
    // One at a time, as a session's requests usually come: ids go on increasing.
    let last = ids[99]!;
    for (let i = 0; i < 20; i++) {
      const id = add(table, `w${i}`);
      expect(id).toBeGreaterThan(last);
      table.delete(id);
      last = id;
    }
    expect(table.size).toBe(1);
  });

  it('lists values oldest first, whatever slots they sit in', () => {
    const table = new IdTable<string>(4);
    const first = add(table, 'first');
    for (let i = 0; i < 10; i++) table.delete(add(table, 'gone'));
    add(table, 'second');
    add(table, 'third');
    expect(table.get(first)).toBe('first');
    expect(table.ordered()).toEqual(['first', 'second', 'third']);
  });

  it('refuses to set an id whose slot another id holds', () => {
    const table = new IdTable<string>(4);
    const a = add(table, 'a');
    expect(() => table.set(a + 4, 'b')).toThrow(/not claimed/);
    expect(table.get(a)).toBe('a');
  });
});
