import type { Logger } from "pino";

export interface PollingLoopOptions {
  /** What the loop does, for its log: a failed tick logs `<name> failed; will retry`. */
  name: string;
  /** Delay between the end of one tick and the start of the next, in milliseconds. */
  intervalMs: number;
  /**
   * One round of work. `signal` aborts when the loop stops: a tick that loops over a backlog
   * checks it between items, and `stop()` waits for the tick to return.
   */
  tick: (signal: AbortSignal) => Promise<void>;
  logger: Logger;
  /**
   * Delay after `failures` failed ticks in a row (1, 2, …), instead of `intervalMs`; for a
   * backoff while a dependency is down. Default: `intervalMs`.
   */
  retryMs?: (failures: number) => number;
}

/**
 * Runs `tick` every `intervalMs` (counted from the end of the previous tick) between `start()`
 * and `stop()`. `notify()` runs it now, or once more right after the tick in progress, so work
 * made in this process is taken up without waiting for the interval. Ticks never overlap. A tick
 * that throws is logged and the loop goes on. `stop()` ends the loop, aborts the running tick's
 * signal and resolves once that tick has returned.
 */
export class PollingLoop {
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private again = false;
  private failures = 0;
  private abort: AbortController | undefined;

  constructor(private readonly o: PollingLoopOptions) {}

  /** Whether the loop runs (started and not stopped). */
  get running(): boolean {
    return this.abort !== undefined && !this.abort.signal.aborted;
  }

  /** Starts the loop with a tick now; a second start while running does nothing. */
  start(): void {
    if (this.running) return;
    this.abort = new AbortController();
    this.failures = 0;
    this.notify();
  }

  /** Ticks now, or right after the tick in progress; nothing once stopped. */
  notify(): void {
    if (!this.running) return;
    if (this.ticking) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    const signal = this.abort!.signal;
    this.ticking = this.runTick(signal).finally(() => {
      this.ticking = undefined;
      if (!this.running) return;
      // Asked for during the tick, or a restart (stop, then start) while it ran.
      if (this.again || signal !== this.abort!.signal) {
        this.again = false;
        this.notify();
        return;
      }
      const delay = this.failures > 0 && this.o.retryMs ? this.o.retryMs(this.failures) : this.o.intervalMs;
      this.timer = setTimeout(() => this.notify(), delay);
    });
  }

  private async runTick(signal: AbortSignal): Promise<void> {
    try {
      await this.o.tick(signal);
      this.failures = 0;
    } catch (err) {
      this.failures++;
      this.o.logger.warn({ err, failures: this.failures }, `${this.o.name} failed; will retry`);
    }
  }

  /** Stops the loop: no tick starts after this; resolves when the running tick (if any) has returned. */
  async stop(): Promise<void> {
    this.abort?.abort();
    clearTimeout(this.timer);
    this.timer = undefined;
    this.again = false;
    await this.ticking;
  }
}
