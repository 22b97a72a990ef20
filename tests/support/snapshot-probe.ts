// A tiny program for tests/startup-snapshot.test.ts, bundled by build.mjs into one classic
// script as the guest program is (dist/bundles/snapshot-probe.cjs); the test builds a
// startup snapshot of it. Its
// main prints, as one JSON line, what it sees: its arguments (process.argv.slice(2)), the
// program path (argv[1]), whether the top level ran while a snapshot was being built (it
// does not run again from the blob), a built-in module imported lazily (child_process,
// not vetted for snapshots), where the addon is searched for and its page size, and the
// clock: performance.now() against process.uptime() (startProgram loads perf_hooks into
// the snapshot; its time origin must be this process's start, not the build's).
import v8 from 'node:v8';
import { startProgram } from '../../kernel/guest/startup-snapshot.js';
import { addonCandidates, loadAddon } from '../../kernel/native/index.js';

const topLevelRanWhileBuilding = Boolean(v8.startupSnapshot.isBuildingSnapshot());

async function main(): Promise<void> {
  const perfNowMs = performance.now();
  const uptimeMs = process.uptime() * 1000;
  const childProcess = await import('node:child_process');
  let pageSize: number | string;
  try {
    pageSize = loadAddon().pageSize();
  } catch (e) {
    pageSize = (e as Error).message;
  }
  const report = {
    args: process.argv.slice(2),
    program: process.argv[1],
    topLevelRanWhileBuilding,
    lazyBuiltin: typeof childProcess.spawnSync,
    firstAddonCandidate: addonCandidates()[0],
    pageSize,
    perfNowMs,
    uptimeMs,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

startProgram(() => {
  main().catch((e: unknown) => {
    process.stderr.write(`snapshot-probe: ${String(e)}\n`);
    process.exitCode = 1;
  });
});
