// Coverage feedback from istanbul's counters. The code under test is instrumented
// (instrument.ts): every statement, function and branch path increments a counter in
// globalThis.__coverage__[file]. After each input the counters are read, bucketed by hit
// count as AFL and libFuzzer do (1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+) and zeroed; an
// input that reaches a (counter, bucket) pair never seen before is kept in the corpus.

interface FileCoverage {
  path: string;
  s: Record<number, number>;
  f: Record<number, number>;
  b: Record<number, number[]>;
}

type Kind = 'statements' | 'functions' | 'branches';

/** One run of counters: a file's statements, its functions, or one branch's paths. */
interface CounterGroup {
  kind: Kind;
  counts: Record<number, number>;
  n: number;
}

interface TrackedFile {
  path: string;
  base: number;
  groups: CounterGroup[];
}

export interface CoverageSummary {
  statements: { covered: number; total: number };
  branches: { covered: number; total: number };
  functions: { covered: number; total: number };
}

function bucketBit(v: number): number {
  if (v < 4) return 1 << (v - 1);
  if (v < 8) return 8;
  if (v < 16) return 16;
  if (v < 32) return 32;
  if (v < 128) return 64;
  return 128;
}

function countKeys(o: object): number {
  let n = 0;
  for (const _ in o) n++;
  return n;
}

export class CoverageMap {
  private files: TrackedFile[] = [];
  private known = new Set<string>();
  private seen = new Uint8Array(0);
  /** (counter, bucket) pairs seen so far. */
  features = 0;

  private get store(): Record<string, FileCoverage> {
    const g = globalThis as { __coverage__?: Record<string, FileCoverage> };
    return g.__coverage__ ?? {};
  }

  /** Picks up files loaded since the last call (their counters get new slots). */
  refresh(): void {
    const store = this.store;
    let total = this.seen.length;
    const added: TrackedFile[] = [];
    for (const path in store) {
      if (this.known.has(path)) continue;
      this.known.add(path);
      const c = store[path]!;
      const groups: CounterGroup[] = [
        { kind: 'statements', counts: c.s, n: countKeys(c.s) },
        { kind: 'functions', counts: c.f, n: countKeys(c.f) },
      ];
      for (const k in c.b) groups.push({ kind: 'branches', counts: c.b[k]!, n: c.b[k]!.length });
      const t: TrackedFile = { path, base: total, groups };
      for (const g of groups) total += g.n;
      added.push(t);
    }
    if (added.length === 0) return;
    const seen = new Uint8Array(total);
    seen.set(this.seen);
    this.seen = seen;
    this.files = this.files.concat(added);
  }

  /** Reads and zeroes the counters; returns how many new (counter, bucket) pairs the last input reached. */
  collect(): number {
    let fresh = 0;
    const seen = this.seen;
    for (const t of this.files) {
      let idx = t.base;
      for (const g of t.groups) {
        const counts = g.counts;
        for (let i = 0; i < g.n; i++, idx++) {
          const v = counts[i]!;
          if (v === 0) continue;
          counts[i] = 0;
          const bit = bucketBit(v);
          if ((seen[idx]! & bit) === 0) {
            seen[idx] = seen[idx]! | bit;
            fresh++;
          }
        }
      }
    }
    this.features += fresh;
    return fresh;
  }

  /** Counters (statements, functions, branch paths) reached at least once, over every instrumented file loaded. */
  countersHit(): number {
    let n = 0;
    for (const v of this.seen) if (v !== 0) n++;
    return n;
  }

  /** Statement, branch and function coverage of the files whose path ends with one of `suffixes`. */
  summary(suffixes: readonly string[]): CoverageSummary & { files: string[] } {
    const out = { statements: { covered: 0, total: 0 }, branches: { covered: 0, total: 0 }, functions: { covered: 0, total: 0 }, files: [] as string[] };
    for (const t of this.files) {
      if (!suffixes.some((s) => t.path.endsWith(s))) continue;
      out.files.push(t.path);
      let idx = t.base;
      for (const g of t.groups) {
        for (let i = 0; i < g.n; i++, idx++) {
          out[g.kind].total++;
          if (this.seen[idx] !== 0) out[g.kind].covered++;
        }
      }
    }
    return out;
  }
}
