// Launch to first response: the appliance started again and again, each path in turn
// (never two running), each stage on one timeline.
//   npm run bench -- boot [--rounds N] [--paths default,cold,baseline] [--no-load-check] [--node-options "OPTS"]
//
// Paths:
//   default   what `npm start` runs: microvm, our kernel, 128 MiB, restored from the
//             saved VM state of this image (appliance/run/vm-snapshot.ts: made by the
//             preparing start below, as by a user's first `npm start`), its devices
//             hotplugged on PCI;
//   cold      `npm start -- --cold-boot`: the same image booted (squashfs root on
//             virtio-blk, virtio-mmio devices, the program from a V8 startup snapshot);
//   baseline  the path before issue 17: q35 + SeaBIOS, Debian's cloud kernel with a
//             107 MB initramfs, PCI devices, the ESM bundle, 1024 MiB (`--machine q35`
//             without the snapshot).
// Each round starts every path once, in the opposite order to the round before (ABBA: on
// this machine a QEMU started right after another one was alternately slow and fast,
// 1.05-1.15 s against 0.85-0.92 s for the same boot, so a fixed order would favour one
// path; hence an even number of rounds by default), waits for the first 200 of big.html
// through the daemon's TCP forward, checks the page's bytes, and stops the guest before
// the next one starts. Images (and the default path's VM state) are made before the
// first round, so no round pays for a build; a default round that did not restore is an
// error. Stages (appliance/run/boot-stages.ts): QEMU start, firmware, kernel, init, exec,
// node start, DMA memory, devices, services, first response on a boot; QEMU start,
// restore, resume, hotplug, devices, services, first response on a restore. After the
// rounds, unless --no-load-check, the default path serves `ab -c 8 -n 1000` on big.html
// in its 128 MiB, and the failures are reported. --node-options "OPTS" gives every
// guest's node these options (the snapshot is built with them too).
//
// Writes bench/results/boot.json: firstResponseMs (median, default path),
// coldFirstResponseMs (median, cold), baselineFirstResponseMs (median, baseline), the
// ratio default / baseline, guestMemoryMiB, imageBytes and vmStateBytes (default path),
// the median waterfall of each path and every round.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_SITE, type ApplianceOptions, type RunningAppliance, startAppliance } from '../appliance/run/appliance.js';
import { RESTORE_WATERFALL_POINTS, WATERFALL_POINTS } from '../appliance/run/boot-stages.js';
import { type AbResult, percentile, printTable, runAb, writeResults } from './report.js';
import { BenchUsageError } from './usage.js';

const PAGE = '/big.html';

interface PathSpec {
  name: 'default' | 'cold' | 'baseline';
  describe: string;
  options: Partial<ApplianceOptions>;
}

export const BOOT_PATHS: readonly PathSpec[] = [
  { name: 'default', describe: 'microvm, our kernel, restored from its saved VM state, devices hotplugged on PCI, 128 MiB', options: { machine: 'microvm', vmSnapshot: true } },
  { name: 'cold', describe: 'microvm, our kernel, squashfs root, virtio-mmio, startup snapshot, 128 MiB, booted', options: { machine: 'microvm', vmSnapshot: false } },
  { name: 'baseline', describe: 'q35 + SeaBIOS, Debian kernel + initramfs, PCI, ESM bundle, 1024 MiB', options: { machine: 'q35', snapshot: false } },
];

/** Every step of either waterfall, in timeline order. */
const ALL_STEPS: readonly string[] = [
  ...WATERFALL_POINTS.slice(0, WATERFALL_POINTS.findIndex(([p]) => p === 'devices-ready')).map(([, step]) => step),
  ...RESTORE_WATERFALL_POINTS.slice(1).map(([, step]) => step),
];

interface Round {
  path: PathSpec['name'];
  round: number;
  /** QEMU's launch to the first 200 of big.html on the host. */
  firstResponseMs: number;
  /** startAppliance() called (image cache check, virtiofsd, daemon) to the same. */
  fromStartMs: number;
  memoryMiB: number;
  imageBytes: number;
  /** The saved VM state restored (default path), bytes; null on a boot. */
  vmStateBytes: number | null;
  /** Every timeline point, ms since QEMU's launch. */
  points: Record<string, number>;
  /** Each step's duration, ms. */
  steps: Record<string, number>;
}

export const usage = 'npm run bench -- boot [--rounds N (default 6)] [--paths default,cold,baseline] [--no-load-check] [--node-options "OPTS"]';

function parseArgs(argv: string[]): { rounds: number; paths: PathSpec[]; loadCheck: boolean; nodeOptions: string[] | null } {
  const out = { rounds: 6, paths: [...BOOT_PATHS], loadCheck: true, nodeOptions: null as string[] | null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (v === undefined) throw new BenchUsageError(`${a}: needs a value`);
      return v;
    };
    if (a.startsWith('--rounds')) {
      const v = value();
      if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 100) throw new BenchUsageError(`--rounds: expected 1..100, got ${JSON.stringify(v)}`);
      out.rounds = Number(v);
    } else if (a.startsWith('--paths')) {
      const names = value().split(',');
      out.paths = names.map((n) => {
        const p = BOOT_PATHS.find((x) => x.name === n);
        if (!p) throw new BenchUsageError(`--paths: unknown path ${JSON.stringify(n)} (have: ${BOOT_PATHS.map((x) => x.name).join(', ')})`);
        return p;
      });
    } else if (a === '--no-load-check') out.loadCheck = false;
    else if (a.startsWith('--node-options')) out.nodeOptions = value().split(/\s+/).filter(Boolean);
    else throw new BenchUsageError(`unknown flag ${JSON.stringify(a)} (flags: --rounds N, --paths default,cold,baseline, --no-load-check, --node-options "OPTS")`);
  }
  return out;
}

/** GET path; resolves with the status and the body. */
async function get(port: number, path: string): Promise<{ status: number; body: Buffer }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

async function bootOnce(spec: PathSpec, round: number, expected: Buffer, keep: boolean): Promise<{ round: Round; app: RunningAppliance | null }> {
  const t0 = performance.now();
  const app = await startAppliance({ port: 0, pingPongPort: 0, readinessPath: PAGE, ...spec.options, progress: () => {} });
  try {
    const firstResponseMs = app.timeline.at('first-response');
    if (firstResponseMs === null) throw new Error(`${spec.name}: no first response on the timeline`);
    const fromStartMs = performance.now() - t0;
    if (spec.options.vmSnapshot === true && app.vmState?.mode !== 'restored') throw new Error(`${spec.name} round ${round}: the VM state was ${app.vmState?.mode ?? 'not used'}, not restored (it should have been saved by the preparing start)`);
    const { status, body } = await get(app.webPort, PAGE);
    if (status !== 200 || !body.equals(expected)) throw new Error(`${spec.name} round ${round}: ${PAGE} answered ${status} with ${body.length} bytes, expected 200 with the ${expected.length} bytes of the file`);
    const steps: Record<string, number> = {};
    for (const s of app.timeline.waterfall()) steps[s.step] = Math.round(s.ms * 10) / 10;
    const r: Round = {
      path: spec.name,
      round,
      firstResponseMs: Math.round(firstResponseMs * 10) / 10,
      fromStartMs: Math.round(fromStartMs),
      memoryMiB: app.memoryMiB,
      imageBytes: app.image.imageBytes,
      vmStateBytes: app.vmState?.mode === 'restored' ? app.vmState.bytes : null,
      points: app.timeline.points(),
      steps,
    };
    if (keep) return { round: r, app };
    await app.stop();
    return { round: r, app: null };
  } catch (e) {
    await app.stop();
    throw e;
  }
}

const median = (xs: number[]): number => percentile(xs, 50);

export default async function boot(argv: string[]): Promise<void> {
  const opts = parseArgs(argv);
  const nodeOptions = opts.nodeOptions;
  const paths = nodeOptions === null ? opts.paths : opts.paths.map((p) => ({ ...p, options: { ...p.options, nodeOptions } }));
  opts.paths = paths;
  const expected = readFileSync(join(DEFAULT_SITE, PAGE));
  // Build every image first (the kernel too, once), so no round pays for a build.
  for (const spec of opts.paths) {
    console.log(`preparing ${spec.name} (${spec.describe})…`);
    const app = await startAppliance({ port: 0, pingPongPort: 0, readinessPath: PAGE, ...spec.options, progress: (l) => console.log(`  ${l}`) });
    await app.stop();
  }
  const rounds: Round[] = [];
  let load: AbResult | null = null;
  for (let r = 1; r <= opts.rounds; r++) {
    const order = r % 2 === 1 ? opts.paths : [...opts.paths].reverse();
    for (const spec of order) {
      const last = r === opts.rounds && spec.name === 'default' && opts.loadCheck;
      const { round, app } = await bootOnce(spec, r, expected, last);
      rounds.push(round);
      console.log(`round ${r} ${spec.name.padEnd(8)} launch to first response ${(round.firstResponseMs / 1000).toFixed(2)} s  (${Object.entries(round.steps).map(([k, v]) => `${k} ${Math.round(v)}`).join(', ')} ms)`);
      if (app) {
        try {
          load = await runAb(`http://127.0.0.1:${app.webPort}${PAGE}`, 8, 1000);
          console.log(`  ab -c 8 -n 1000 ${PAGE} in ${app.memoryMiB} MiB: ${load.requests} complete, ${load.failed} failed, ${load.non2xx} non-2xx, ${load.requestsPerSecond} req/s (a fresh guest: the JIT is cold)`);
        } finally {
          await app.stop();
        }
      }
    }
  }

  const summary = opts.paths.map((spec) => {
    const mine = rounds.filter((x) => x.path === spec.name);
    const firsts = mine.map((x) => x.firstResponseMs);
    const waterfall: Record<string, number> = {};
    for (const step of ALL_STEPS) {
      const v = mine.map((x) => x.steps[step]).filter((x): x is number => x !== undefined);
      if (v.length) waterfall[step] = Math.round(median(v));
    }
    return {
      path: spec.name,
      describe: spec.describe,
      firstResponseMs: Math.round(median(firsts)),
      minMs: Math.round(Math.min(...firsts)),
      maxMs: Math.round(Math.max(...firsts)),
      fromStartMs: Math.round(median(mine.map((x) => x.fromStartMs))),
      memoryMiB: mine[0]!.memoryMiB,
      imageBytes: mine[0]!.imageBytes,
      vmStateBytes: mine[0]!.vmStateBytes,
      waterfall,
    };
  });

  const def = summary.find((s) => s.path === 'default');
  const cold = summary.find((s) => s.path === 'cold');
  const base = summary.find((s) => s.path === 'baseline');
  const steps = ALL_STEPS;
  printTable(
    `Waterfall, median of ${opts.rounds} rounds (ms per step; launch = QEMU spawned)`,
    steps.map((step) => ({ step, ...Object.fromEntries(summary.map((s) => [s.path, s.waterfall[step] ?? '-'])) })),
  );
  printTable(
    'Launch to first 200 of big.html',
    summary.map((s) => ({ path: s.path, 'median s': s.firstResponseMs / 1000, 'min s': s.minMs / 1000, 'max s': s.maxMs / 1000, 'from npm-start-like call s': s.fromStartMs / 1000, 'RAM MiB': s.memoryMiB, 'image MB': s.imageBytes / 1e6, 'VM state MB': s.vmStateBytes === null ? '-' : s.vmStateBytes / 1e6 })),
  );
  const ratio = def && base ? def.firstResponseMs / base.firstResponseMs : null;
  if (ratio !== null) console.log(`\ndefault / baseline: ${ratio.toFixed(3)}x`);
  if (def && cold) console.log(`default / cold: ${(def.firstResponseMs / cold.firstResponseMs).toFixed(3)}x`);

  const path = writeResults('boot', {
    firstResponseMs: def?.firstResponseMs ?? null,
    coldFirstResponseMs: cold?.firstResponseMs ?? null,
    baselineFirstResponseMs: base?.firstResponseMs ?? null,
    ratio: ratio === null ? null : Math.round(ratio * 1000) / 1000,
    guestMemoryMiB: def?.memoryMiB ?? null,
    imageBytes: def?.imageBytes ?? null,
    vmStateBytes: def?.vmStateBytes ?? null,
    loadCheck: load && { command: `ab -c 8 -n 1000 ${PAGE}`, memoryMiB: def?.memoryMiB ?? null, complete: load.requests, failed: load.failed, non2xx: load.non2xx, requestsPerSecond: load.requestsPerSecond },
    paths: summary,
    rounds,
  });
  console.log(`\nwrote ${path}`);
}
