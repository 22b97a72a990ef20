// Round-trip times summarised: percentiles and a text histogram.

export interface LatencySummary {
  count: number;
  minUs: number;
  meanUs: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  maxUs: number;
}

/** Summary of round trips given in nanoseconds (sorted in place). */
export function summarize(samplesNs: Float64Array | number[]): LatencySummary {
  const s = Float64Array.from(samplesNs).sort();
  const n = s.length;
  if (n === 0) return { count: 0, minUs: 0, meanUs: 0, p50Us: 0, p90Us: 0, p99Us: 0, maxUs: 0 };
  let sum = 0;
  for (const v of s) sum += v;
  const us = (ns: number) => Math.round(ns / 10) / 100; // 0.01 us resolution
  return {
    count: n,
    minUs: us(s[0]!),
    meanUs: us(sum / n),
    p50Us: us(percentile(s, 0.5)),
    p90Us: us(percentile(s, 0.9)),
    p99Us: us(percentile(s, 0.99)),
    maxUs: us(s[n - 1]!),
  };
}

/** Nearest-rank percentile of sorted samples. */
export function percentile(sorted: Float64Array, q: number): number {
  const n = sorted.length;
  if (n === 0) return 0;
  const rank = Math.min(n, Math.max(1, Math.ceil(q * n)));
  return sorted[rank - 1]!;
}

/**
 * A histogram with logarithmic buckets (2 per doubling), one line per non-empty
 * bucket: range in microseconds, count, and a bar scaled to `width`.
 */
export function textHistogram(samplesNs: Float64Array | number[], width = 40): string {
  const n = samplesNs.length;
  if (n === 0) return '(no samples)\n';
  const bucketOf = (ns: number) => Math.floor(Math.log2(Math.max(ns, 1000) / 1000) * 2);
  const counts = new Map<number, number>();
  for (const v of samplesNs) {
    const b = bucketOf(v);
    counts.set(b, (counts.get(b) ?? 0) + 1);
  }
  const keys = [...counts.keys()].sort((a, b) => a - b);
  const most = Math.max(...counts.values());
  const lo = (b: number) => 2 ** (b / 2);
  let out = '';
  for (const b of keys) {
    const c = counts.get(b)!;
    const range = `${fmt(lo(b))}-${fmt(lo(b + 1))} us`;
    out += `${range.padStart(22)} ${String(c).padStart(7)} ${'#'.repeat(Math.round((c / most) * width))}\n`;
  }
  return out;
}

function fmt(us: number): string {
  return us < 10 ? us.toFixed(2) : us < 100 ? us.toFixed(1) : us.toFixed(0);
}
