// `npm run bench -- scale`: one vhost-user-vsock daemon, N simulated VMs x M connections
// (default 64 x 100), no VM booted: bench/scale/ (README.md there) has the load
// generator, the phases and the figures. Writes bench/results/scale.json.
import { SCALE_USAGE, parseScaleArgs } from './scale/args.js';
import { ScaleRun } from './scale/coordinator.js';
import { printScaleSummary } from './scale/summary.js';
import { writeResults } from './report.js';

export const usage = SCALE_USAGE.replace(/^usage: /, '');

export default async function scale(argv: string[]): Promise<void> {
  const args = parseScaleArgs(argv);
  console.log(`scale: ${args.vms} VMs x ${args.conns} connections, ${args.workers} load processes, paced ${args.rate} B/s each way per connection; load average ${(await import('node:os')).loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  const run = new ScaleRun(args);
  let results: Record<string, unknown>;
  try {
    results = await run.run();
  } finally {
    await run.cleanup();
  }
  const path = writeResults(args.out, { args, ...results });
  printScaleSummary(results);
  console.log(`\nresults: ${path}`);
}
