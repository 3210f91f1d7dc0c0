/**
 * Counts failed authentications per client address, so that one address guessing keys cannot
 * keep the argon2 workers busy: past the limit, its attempts are refused before any
 * verification until its window ends. Verifications under way count against the budget too
 * (reserve/release), so concurrent attempts cannot start more of them than the limit. A fixed
 * one-minute window per address; the table of addresses is bounded, oldest first out, so a spray
 * from many addresses cannot grow memory.
 */

const WINDOW_MS = 60_000;
const MAX_ADDRESSES = 50_000;

interface Window {
  start: number;
  failures: number;
}

export class FailureLimiter {
  private readonly windows = new Map<string, Window>();
  /** Verifications under way per address (reserve() to release()): as many entries as requests in flight at most. */
  private readonly pending = new Map<string, number>();

  constructor(
    private readonly maxPerWindow: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Seconds until the address may try again; 0 when it may try now. */
  blockedFor(address: string): number {
    const window = this.windows.get(address);
    if (!window) return 0;
    const elapsed = this.now() - window.start;
    if (elapsed >= WINDOW_MS) {
      this.windows.delete(address);
      return 0;
    }
    return window.failures >= this.maxPerWindow ? Math.ceil((WINDOW_MS - elapsed) / 1000) : 0;
  }

  /**
   * Takes one verification of the address's budget before it starts: its failures this window and
   * its verifications under way together stay below the limit, so that concurrent attempts cannot
   * overrun it (each of them may fail). False when the budget is taken. Pair a true with release().
   */
  reserve(address: string): boolean {
    const window = this.windows.get(address);
    const failures = window !== undefined && this.now() - window.start < WINDOW_MS ? window.failures : 0;
    const pending = this.pending.get(address) ?? 0;
    if (failures + pending >= this.maxPerWindow) return false;
    this.pending.set(address, pending + 1);
    return true;
  }

  /** Ends a reservation (record the failure, if it was one, with fail()). */
  release(address: string): void {
    const pending = this.pending.get(address);
    if (pending === undefined) return;
    if (pending <= 1) this.pending.delete(address);
    else this.pending.set(address, pending - 1);
  }

  /** Records one failed attempt from the address. */
  fail(address: string): void {
    const now = this.now();
    const window = this.windows.get(address);
    if (window && now - window.start < WINDOW_MS) {
      window.failures++;
      return;
    }
    if (window) this.windows.delete(address);
    else if (this.windows.size >= MAX_ADDRESSES) {
      const oldest = this.windows.keys().next().value;
      if (oldest !== undefined) this.windows.delete(oldest);
    }
    this.windows.set(address, { start: now, failures: 1 });
  }

  get size(): number {
    return this.windows.size;
  }
}
