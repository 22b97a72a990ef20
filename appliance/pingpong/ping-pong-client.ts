// Measures round trips over a connected echo socket: per message size, send the
// message, wait until all of it has come back (checking the bytes), take the time.
// One message is in flight at a time, as in Toro's ping-pong test.
import type { Duplex } from 'node:stream';
import { type LatencySummary, summarize, textHistogram } from './latency-summary.js';

export interface PingPongOptions {
  sizes: readonly number[];
  iterations: number;
  warmup?: number;
  /** Fail when one round trip takes longer (default 10 s). */
  timeoutMs?: number;
  /** Called now and then while a size runs (and once when it is done): size, round trips done, of how many. */
  onProgress?: (sizeBytes: number, done: number, of: number) => void;
}

export interface PingPongSizeResult extends LatencySummary {
  sizeBytes: number;
  /** Total time of the measured iterations, and bytes per second both ways. */
  totalMs: number;
  throughputMBps: number;
  /** Round trips in nanoseconds, in the order taken. */
  samplesNs: Float64Array;
}

export class PingPongError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PingPongError';
  }
}

/** Runs the round trips on `socket` (left open; the caller ends it). */
/** How often onProgress is called while a size runs. */
const PROGRESS_EVERY_NS = 1_000_000_000n;

export async function measurePingPong(socket: Duplex, opts: PingPongOptions): Promise<PingPongSizeResult[]> {
  const echo = new EchoReader(socket);
  try {
    const results: PingPongSizeResult[] = [];
    for (const size of opts.sizes) {
      const message = Buffer.allocUnsafeSlow(size);
      for (let i = 0; i < size; i++) message[i] = (i * 7 + (size & 0xff)) & 0xff;
      const timeoutMs = opts.timeoutMs ?? 10_000;
      for (let i = 0; i < (opts.warmup ?? 0); i++) await echo.roundTrip(message, timeoutMs);
      const samples = new Float64Array(opts.iterations);
      const t0 = process.hrtime.bigint();
      let lastReport = t0;
      for (let i = 0; i < opts.iterations; i++) {
        const start = process.hrtime.bigint();
        await echo.roundTrip(message, timeoutMs);
        const end = process.hrtime.bigint();
        samples[i] = Number(end - start);
        if (opts.onProgress && end - lastReport >= PROGRESS_EVERY_NS) {
          lastReport = end;
          opts.onProgress(size, i + 1, opts.iterations);
        }
      }
      opts.onProgress?.(size, opts.iterations, opts.iterations);
      const totalNs = Number(process.hrtime.bigint() - t0);
      results.push({
        sizeBytes: size,
        ...summarize(samples),
        totalMs: Math.round(totalNs / 1e4) / 100,
        throughputMBps: Math.round(((2 * size * opts.iterations) / (totalNs / 1e9) / 1e6) * 100) / 100,
        samplesNs: samples,
      });
    }
    return results;
  } finally {
    echo.detach();
  }
}

/** Text report: a percentile line and a histogram per size. */
export function formatPingPong(results: readonly PingPongSizeResult[]): string {
  let out = '';
  for (const r of results) {
    out += `size ${r.sizeBytes} bytes, ${r.count} round trips in ${r.totalMs} ms (${r.throughputMBps} MB/s both ways)\n`;
    out += `  p50 ${r.p50Us} us  p90 ${r.p90Us} us  p99 ${r.p99Us} us  max ${r.maxUs} us  (min ${r.minUs}, mean ${r.meanUs})\n`;
    out += textHistogram(r.samplesNs) + '\n';
  }
  return out;
}

/** JSON-ready results (no raw samples). */
export function pingPongJson(results: readonly PingPongSizeResult[]): object {
  return { results: results.map(({ samplesNs: _samples, ...rest }) => rest) };
}

/** Collects the echo of one message at a time, checking it byte for byte. */
class EchoReader {
  private expected: Buffer | null = null;
  private got = 0;
  private done: ((err?: Error) => void) | null = null;

  constructor(private readonly socket: Duplex) {
    socket.on('data', this.onData);
    socket.on('close', this.onClose);
    socket.on('error', this.onError);
  }

  detach(): void {
    this.socket.off('data', this.onData);
    this.socket.off('close', this.onClose);
    this.socket.off('error', this.onError);
  }

  roundTrip(message: Buffer, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => finish(new PingPongError(`no full echo of ${message.length} bytes within ${timeoutMs} ms (got ${this.got})`)), timeoutMs);
      const finish = (err?: Error) => {
        clearTimeout(timer);
        this.done = null;
        this.expected = null;
        if (err) reject(err);
        else resolve();
      };
      this.expected = message;
      this.got = 0;
      this.done = finish;
      this.socket.write(message);
    });
  }

  private readonly onData = (chunk: Buffer): void => {
    const exp = this.expected;
    if (exp === null || this.done === null) {
      this.socket.destroy(new PingPongError(`${chunk.length} unexpected bytes from the echo server`));
      return;
    }
    if (this.got + chunk.length > exp.length) return this.done(new PingPongError(`echo longer than the ${exp.length}-byte message`));
    if (!chunk.equals(exp.subarray(this.got, this.got + chunk.length))) return this.done(new PingPongError(`echo differs from the message near byte ${this.got}`));
    this.got += chunk.length;
    if (this.got === exp.length) this.done();
  };

  private readonly onClose = (): void => {
    this.done?.(new PingPongError('the connection closed during a round trip'));
  };

  private readonly onError = (err: Error): void => {
    this.done?.(err);
  };
}
