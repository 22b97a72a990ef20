// How late the daemon's event loop runs things: a timer set every SAMPLE_INTERVAL_MS
// notes how much later than asked it fired (a kick, a socket read or a ping-pong round
// trip waits as long behind whatever the loop is busy with), counted in the buckets of a
// Prometheus histogram. Cumulative counts, so a scrape has no side effect and any window
// is the difference of two scrapes.
import { performance } from 'node:perf_hooks';

/** Upper bounds of the buckets, in seconds (the last bucket, +Inf, is implied). */
export const EVENT_LOOP_DELAY_BUCKETS_SECONDS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2] as const;

const SAMPLE_INTERVAL_MS = 20;

export class EventLoopDelaySampler {
  /** Samples per bucket (not cumulative); the last entry counts samples above every bound. */
  readonly counts = new Float64Array(EVENT_LOOP_DELAY_BUCKETS_SECONDS.length + 1);
  sumSeconds = 0;
  samples = 0;
  #timer: NodeJS.Timeout | null = null;
  #due = 0;

  start(): void {
    if (this.#timer !== null) return;
    this.#arm();
  }

  stop(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #arm(): void {
    this.#due = performance.now() + SAMPLE_INTERVAL_MS;
    this.#timer = setTimeout(this.#tick, SAMPLE_INTERVAL_MS);
    this.#timer.unref();
  }

  readonly #tick = (): void => {
    // libuv fires timers with millisecond granularity: up to 1 ms late is the clock, not load.
    this.record(Math.max(0, performance.now() - this.#due) / 1000);
    this.#arm();
  };

  /** Counts one delay (seconds). */
  record(seconds: number): void {
    const b = EVENT_LOOP_DELAY_BUCKETS_SECONDS;
    let i = 0;
    while (i < b.length && seconds > b[i]!) i++;
    this.counts[i] += 1;
    this.sumSeconds += seconds;
    this.samples++;
  }
}
