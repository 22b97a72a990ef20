// Fairness figures of the scale bench: spreads, Jain's fairness index and max-min fair
// shares (R. Jain, D. Chiu, W. Hawe, "A Quantitative Measure of Fairness and
// Discrimination for Resource Allocation in Shared Computer Systems", 1984).
//
// Jain's index of x_1..x_n is (sum x)^2 / (n * sum x^2): 1 when every x is equal, 1/n
// when one takes everything. Applied to raw throughput it calls a VM that asks for
// little "unfairly treated"; the paper's answer is to apply it to x_i = T_i / O_i, the
// throughput over the fair allocation. The fair allocation here is max-min fairness over
// the measured total: a VM asking for less than an equal share is owed what it asks,
// the rest is split equally among those that ask for more (a flooding VM asks for all).

export interface Spread {
  min: number;
  median: number;
  max: number;
}

/** The median of a sorted copy (the mean of the two middle values for an even count). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = Float64Array.from(xs).sort();
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function spreadOf(xs: readonly number[]): Spread {
  if (xs.length === 0) return { min: NaN, median: NaN, max: NaN };
  let min = Infinity;
  let max = -Infinity;
  for (const x of xs) {
    if (x < min) min = x;
    if (x > max) max = x;
  }
  return { min, median: median(xs), max };
}

/** Jain's index of `xs` (all >= 0): 1 for equal values, NaN for none; all zero counts as equal. */
export function jainIndex(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  let sum = 0;
  let squares = 0;
  for (const x of xs) {
    sum += x;
    squares += x * x;
  }
  return squares === 0 ? 1 : (sum * sum) / (xs.length * squares);
}

/**
 * Max-min fair shares of `capacity` among demands (Infinity: takes whatever is left), by
 * water-filling: the smallest demands are met first, the rest is split equally.
 */
export function maxMinFairShares(demands: readonly number[], capacity: number): number[] {
  const shares = new Array<number>(demands.length).fill(0);
  const order = demands.map((d, i) => i).sort((a, b) => demands[a]! - demands[b]!);
  let left = capacity;
  for (let k = 0; k < order.length; k++) {
    const i = order[k]!;
    const equal = left / (order.length - k);
    shares[i] = Math.min(demands[i]!, equal);
    left -= shares[i]!;
  }
  return shares;
}

/**
 * Jain's index of each throughput over its max-min fair share of the total achieved:
 * 1 when every VM got what it asked for or an equal share of what there was.
 */
export function demandNormalizedJain(achieved: readonly number[], demands: readonly number[]): number {
  let capacity = 0;
  for (const a of achieved) capacity += a;
  const shares = maxMinFairShares(demands, capacity);
  return jainIndex(achieved.map((a, i) => (shares[i]! > 0 ? a / shares[i]! : 1)));
}
