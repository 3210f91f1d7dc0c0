import { describe, expect, it } from 'vitest';
import { Cancellation } from '../../src/upstreams/cancellation.js';

describe('Cancellation', () => {
  it('calls each listener once, in order, with the reason readable', () => {
    const c = new Cancellation();
    const calls: string[] = [];
    c.signal.addEventListener('abort', () => calls.push(`a:${String(c.signal.reason)}`), { once: true });
    c.signal.addEventListener('abort', () => calls.push('b'));
    expect(c.signal.aborted).toBe(false);
    c.abort('client');
    c.abort('again');
    expect(calls).toEqual(['a:client', 'b']);
    expect(c.signal.aborted).toBe(true);
    expect(c.reason).toBe('client');
  });

  it('does not call a removed listener, whichever of several it was', () => {
    const c = new Cancellation();
    const calls: string[] = [];
    const a = () => calls.push('a');
    const b = () => calls.push('b');
    const d = () => calls.push('d');
    c.addEventListener('abort', a);
    c.addEventListener('abort', b);
    c.addEventListener('abort', d);
    c.removeEventListener('abort', b);
    c.removeEventListener('abort', a);
    c.abort();
    expect(calls).toEqual(['d']);
    const single = new Cancellation();
    single.addEventListener('abort', a);
    single.removeEventListener('abort', a);
    single.abort();
    expect(calls).toEqual(['d']);
  });

  it('calls no listener added after the abort (as an AbortSignal)', () => {
    const c = new Cancellation();
    c.abort();
    let called = false;
    c.addEventListener('abort', () => (called = true));
    expect(called).toBe(false);
  });
});
