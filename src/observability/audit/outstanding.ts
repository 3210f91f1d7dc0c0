/**
 * The batching the local sinks (stdout, file) share: lines gathered during one drain of the audit
 * queue leave in one write at commit(), and stay counted until that write is acknowledged, so
 * that flush() can wait for them and the backlog limit covers lines still in flight.
 */

/** Lines taken but not yet written: gathered for the next commit, then waiting for their write. */
export class Outstanding {
  /** Lines whose write has not been acknowledged yet, plus those gathered. */
  count = 0;
  /** The gathered lines, each with its newline: the next write. */
  batch = '';
  batchLines = 0;
  private waiters: (() => void)[] = [];

  gather(line: string): void {
    this.batch += `${line}\n`;
    this.batchLines++;
    this.count++;
  }

  /** Empties the batch and returns it; its lines stay counted until done(lines). */
  take(): { text: string; lines: number } {
    const taken = { text: this.batch, lines: this.batchLines };
    this.batch = '';
    this.batchLines = 0;
    return taken;
  }

  done(lines: number): void {
    this.count -= lines;
    if (this.count === 0) {
      const waiters = this.waiters;
      this.waiters = [];
      for (const wake of waiters) wake();
    }
  }

  idle(): Promise<void> {
    return this.count === 0 ? Promise.resolve() : new Promise((wake) => this.waiters.push(wake));
  }
}
