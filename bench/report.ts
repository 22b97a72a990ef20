// Shared helpers for benchmarks: a results file per benchmark, tables on stdout,
// percentiles. Benchmarks report ratios measured in one run, never a lone figure.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpus, release } from 'node:os';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Writes bench/results/<name>.json (with the machine it ran on) and returns its path. */
export function writeResults(name: string, results: object): string {
  const dir = join(repoRoot, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.json`);
  const machine = { node: process.version, cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, kernel: release(), date: new Date().toISOString() };
  writeFileSync(path, JSON.stringify({ benchmark: name, machine, ...results }, null, 2) + '\n');
  return path;
}

/** Prints rows as an aligned table. */
export function printTable(title: string, rows: Array<Record<string, string | number>>): void {
  console.log(`\n${title}`);
  if (rows.length === 0) return;
  const cols = Object.keys(rows[0]!);
  const cell = (v: string | number | undefined): string => (typeof v === 'number' ? formatNumber(v) : String(v ?? ''));
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  console.log(cols.map((c, i) => c.padStart(widths[i]!)).join('  '));
  for (const r of rows) console.log(cols.map((c, i) => cell(r[c]).padStart(widths[i]!)).join('  '));
}

export function formatNumber(v: number): string {
  if (!Number.isFinite(v) || Number.isInteger(v)) return Math.abs(v) >= 1000 ? v.toLocaleString('en-US') : String(v);
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString('en-US');
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(3);
}

/** The p-th percentile (0..100) of samples (sorts a copy). */
export function percentile(samples: ArrayLike<number>, p: number): number {
  const s = Float64Array.from(samples).sort();
  if (s.length === 0) return NaN;
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i]!;
}

/** Runs fn repeatedly for about `ms` milliseconds; returns operations per second. */
export function opsPerSecond(fn: (iterations: number) => void, ms = 1000, batch = 1000): number {
  fn(batch); // warm up
  let iterations = 0;
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(ms) * 1_000_000n;
  let now = start;
  while (now < deadline) {
    fn(batch);
    iterations += batch;
    now = process.hrtime.bigint();
  }
  return iterations / (Number(now - start) / 1e9);
}
