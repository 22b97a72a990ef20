// What every benchmark's flags share: `--help` prints the benchmark's usage (run.ts), and
// a wrong flag is a BenchUsageError, which run.ts prints as one line (no stack) with exit
// status 2, before anything is measured.

export class BenchUsageError extends Error {
  override readonly name = 'BenchUsageError';
}

/**
 * Refuses flags outside `known` for benchmarks that read their flags by name
 * (`--name=value` or a bare `--name`): a typo would otherwise run minutes of defaults.
 */
export function rejectUnknownFlags(args: readonly string[], known: readonly string[]): void {
  for (const a of args) {
    const name = a.includes('=') ? a.slice(0, a.indexOf('=') + 1) : a;
    if (!known.includes(name)) throw new BenchUsageError(`unknown flag ${JSON.stringify(a)} (flags: ${known.map((k) => (k.endsWith('=') ? `${k}…` : k)).join(', ')})`);
  }
}
