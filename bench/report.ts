// Shared helpers for benchmarks: a results file per benchmark, tables on stdout,
// percentiles. Benchmarks report ratios measured in one run, never a lone figure.
import { spawn } from 'node:child_process';
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

/** What ab (apache2-utils) reports for one run. */
export interface AbResult {
  concurrency: number;
  requests: number;
  failed: number;
  non2xx: number;
  requestsPerSecond: number;
  meanMsPerRequest: number;
  /** ab's "Waiting" mean: request sent -> first response byte (ms). */
  meanWaitingMs: number;
  /** req/s of every round; the figures above are the median round's. */
  rounds?: number[];
}

/** ab -c C -n N (and -t SECONDS: stop after that long). */
export function runAb(url: string, concurrency: number, requests: number, seconds?: number): Promise<AbResult> {
  return new Promise((resolve, reject) => {
    const time = seconds === undefined ? [] : ['-t', String(seconds)];
    const child = spawn('ab', ['-q', '-c', String(concurrency), ...time, '-n', String(requests), url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      const num = (re: RegExp): number => {
        const m = re.exec(out);
        return m ? Number(m[1]) : NaN;
      };
      if (code !== 0) return reject(new Error(`ab exited ${code}: ${out.slice(-1000)}`));
      resolve({
        concurrency,
        requests: num(/Complete requests:\s+(\d+)/),
        failed: num(/Failed requests:\s+(\d+)/),
        non2xx: Number.isNaN(num(/Non-2xx responses:\s+(\d+)/)) ? 0 : num(/Non-2xx responses:\s+(\d+)/),
        requestsPerSecond: num(/Requests per second:\s+([\d.]+)/),
        meanMsPerRequest: num(/Time per request:\s+([\d.]+) \[ms\] \(mean\)\n/),
        meanWaitingMs: num(/Waiting:\s+\d+\s+(\d+)/),
      });
    });
  });
}

/** The median of a list of figures with its smallest, largest and (max - min) / median. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  /** (max - min) / median */
  spread: number;
}

export function spreadOf(xs: readonly number[]): Spread {
  const median = percentile(xs, 50);
  const min = Math.min(...xs);
  const max = Math.max(...xs);
  return { median, min, max, spread: (max - min) / median };
}
