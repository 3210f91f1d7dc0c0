/**
 * Counts failed authentications per client address, so that one address guessing keys cannot
 * keep the argon2 workers busy: past the limit, its attempts are refused before any
 * verification until its window ends. A fixed one-minute window per address; the table of
 * addresses is bounded, oldest first out, so a spray from many addresses cannot grow memory.
 */

const WINDOW_MS = 60_000;
const MAX_ADDRESSES = 50_000;

interface Window {
  start: number;
  failures: number;
}

export class FailureLimiter {
  private readonly windows = new Map<string, Window>();

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
