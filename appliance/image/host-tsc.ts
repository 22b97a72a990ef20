// The host's TSC rate, for a TCG guest's kernel (tsc_early_khz=).
//
// Under TCG a guest's rdtsc reads the host's time-stamp counter, so its TSC runs at the
// host's rate. The guest kernel calibrates it against the emulated PIT, and under host
// load that calibration fails ("tsc: Unable to calibrate against PIT ... Marking TSC
// unstable"): the guest then keeps time with jiffies (4 ms steps) and spends 130 ms in
// the delay-loop calibration. Measured here instead, against CLOCK_MONOTONIC: each end
// of the interval is the tightest of several (hrtime, rdtsc, hrtime) brackets, so a
// preemption between the two reads does not skew it.
import { tscNow } from '../../kernel/native/index.js';

/** Brackets taken at each end of the interval; the narrowest is used. */
const SAMPLES = 25;

interface Sample {
  tsc: bigint;
  ns: bigint;
  widthNs: bigint;
}

function bracket(): Sample {
  let best: Sample | null = null;
  for (let i = 0; i < SAMPLES; i++) {
    const h0 = process.hrtime.bigint();
    const tsc = tscNow();
    const h1 = process.hrtime.bigint();
    const s = { tsc, ns: (h0 + h1) / 2n, widthNs: h1 - h0 };
    if (best === null || s.widthNs < best.widthNs) best = s;
  }
  return best!;
}

let cached: Promise<number | null> | null = null;

/**
 * The host's TSC rate in kHz (measured once per process over `intervalMs`), or null
 * where there is no TSC or the addon is missing.
 */
export function hostTscKhz(intervalMs = 100): Promise<number | null> {
  cached ??= (async () => {
    let start: Sample;
    try {
      if (tscNow() < 0n) return null;
      start = bracket();
    } catch {
      return null; // no addon: the guest calibrates by itself
    }
    await new Promise((r) => setTimeout(r, intervalMs));
    const end = bracket();
    const ns = Number(end.ns - start.ns);
    const ticks = Number(end.tsc - start.tsc);
    if (!(ns > 0 && ticks > 0)) return null;
    return Math.round((ticks / ns) * 1e6);
  })();
  return cached;
}
