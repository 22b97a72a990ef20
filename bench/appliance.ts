// Level 2: the whole appliance in QEMU (TCG here), Toro's measurement and ours in one run.
// Our drivers run on the default machine (microvm, 128 MiB, startup snapshot) and, for the
// same page at -c 1 and -c 8, on the path before it (q35 + PCI, 1 GiB, no snapshot): the
// microvm path must serve at least as fast (`--machines microvm` skips the q35 guest).
//   npm run bench -- appliance [--requests N] [--rounds N] [--warm-up S] [--iterations N]
//                              [--modes auto,two-copy,...] [--no-kernel] [--no-packed] [--no-cold-boot]
//                              [--results NAME]  (bench/results/NAME.json and .svg; default appliance)
// For each guest: the webserver's 133 KB page with ab (-c 1 -n N, as Toro measured, and
// -c 8), through the daemon's TCP forward; ping-pong p50/p99 at 8192 and 16384 bytes.
// Guests: our drivers (ab with the default transmit mode "auto"; ping-pong once per
// transmit mode, the mode passed to the guest as an argument) and the same appliance
// code on the Linux kernel's own drivers (AF_VSOCK + mounted virtiofs) on the same
// daemon code and virtiofsd, reported as ratios; and our drivers with the vsock rings
// packed (virtio 1.2 2.8, QEMU's packed=on) beside the split rings (`--no-packed` skips it). Writes bench/results/appliance.json and
// bench/results/appliance.svg (a bar chart).
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseClientArgs } from '../appliance/pingpong/client-args.js';
import { runClient } from '../appliance/pingpong/client.js';
import type { Machine } from '../appliance/image/guest.js';
import { GUEST_NODE_OPTIONS, type RunningAppliance, startAppliance } from '../appliance/run/appliance.js';
import { type AbResult, printTable, runAb, writeResults } from './report.js';
import { type Bar, type Panel, barChartSvg } from '../appliance/run/svg-chart.js';
import { BenchUsageError } from './usage.js';

type TxMode = 'auto' | 'two-copy' | 'single-copy' | 'zero-copy';

interface PingPongRow {
  sizeBytes: number;
  p50Us: number;
  p99Us: number;
  meanUs: number;
}

interface GuestResult {
  drivers: 'ours' | 'kernel';
  /** The QEMU machine (microvm: the default path; q35: the path before it, PCI, 1 GiB, no snapshot). */
  machine: Machine;
  /**
   * no-cache: without the webserver's file cache (every request reads through virtio-fs);
   * packed: the vsock rings packed; cold-boot: microvm booted, its devices on virtio-mmio
   * (the default comes up from its saved VM state, the devices hotplugged on PCI).
   */
  variant?: 'no-cache' | 'packed' | 'cold-boot';
  txMode: TxMode | null;
  bootMs: number;
  ab: AbResult[];
  /** ab -c 1 on the small, cached index page: the per-connection cost without the 133 KB. */
  abSmall: AbResult | null;
  pingPong: PingPongRow[];
}

export const TORO = {
  machine: "Toro's own (2023 blog post, another machine, KVM, socat in front for ab)",
  abC1: { requestsPerSecond: 2.27, meanMsPerRequest: 441 },
  pingPongMs: { 8192: 1138, 16384: 1169 },
  tcgHereNote: 'Toro under TCG on this kind of machine serves the 133 KB page at about 470 req/s at concurrency 1 (2.1 ms per request): the figure to beat.',
  tcgHere: { requestsPerSecond: 470, meanMsPerRequest: 2.1 },
};

const PAGE = '/big.html';
const RESULTS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'results');
const SMALL_PAGE = '/index.html';

async function pingPong(port: number, iterations: number): Promise<PingPongRow[]> {
  const text = await runClient(parseClientArgs(['--connect', `127.0.0.1:${port}`, '--sizes', '8192,16384', '--iterations', String(iterations), '--warmup', '10', '--json']));
  const r = JSON.parse(text) as { results: PingPongRow[] };
  return r.results.map((x) => ({ sizeBytes: x.sizeBytes, p50Us: x.p50Us, p99Us: x.p99Us, meanUs: x.meanUs }));
}

/** Guest node options and vCPUs for every guest of the run (--node-options, --cpus). */
const guestSetup: { nodeOptions: string[]; cpus: number } = { nodeOptions: [...GUEST_NODE_OPTIONS], cpus: 1 };

async function withGuest<T>(
  drivers: 'ours' | 'kernel',
  txMode: TxMode | undefined,
  fn: (app: RunningAppliance) => Promise<T>,
  guestArgs: string[] = [],
  machine: Machine = 'microvm',
  ring?: 'split' | 'packed',
  coldBoot = false,
): Promise<T> {
  const label = `${machine}${coldBoot ? ' booted cold' : ''}, ${drivers === 'kernel' ? 'kernel drivers' : `our drivers, tx-mode ${txMode}${ring ? `, ${ring} rings` : ''}`}`;
  // q35 is the path before microvm as it was: PCI, 1 GiB, the ESM bundle (no snapshot).
  // microvm comes up from its saved VM state (devices hotplugged on PCI) unless coldBoot
  // (virtio-mmio devices, as `npm start -- --cold-boot`).
  const app = await startAppliance({
    port: 0,
    pingPongPort: 0,
    machine,
    ...(machine === 'q35' ? { snapshot: false } : {}),
    vmSnapshot: !coldBoot,
    drivers,
    txMode,
    ...(ring ? { ring } : {}),
    guestArgs,
    nodeOptions: guestSetup.nodeOptions,
    cpus: guestSetup.cpus,
    progress: (l) => console.log(`  [${label}] ${l}`),
  });
  const onSignal = (): void => {
    void app.stop().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  try {
    return await fn(app);
  } finally {
    process.off('SIGINT', onSignal);
    await app.stop();
  }
}

export const usage = 'npm run bench -- appliance [--requests N] [--iterations N] [--modes auto,two-copy,single-copy,zero-copy] [--no-kernel] [--no-packed] [--no-cold-boot] [--results NAME] [--ab-auto-only] [--no-uncached-run] [--warm-up SECONDS] [--rounds N] [--node-options "OPTS"] [--cpus N] [--machines microvm[,q35]] [--chart-only]';

function parseArgs(argv: string[]): { requests: number; iterations: number; modes: TxMode[]; kernel: boolean; abAllModes: boolean; noCacheRun: boolean; warmUpSeconds: number; rounds: number; q35: boolean; packed: boolean; coldBoot: boolean; results: string } {
  const o = { requests: 1000, iterations: 500, modes: ['auto', 'two-copy', 'single-copy', 'zero-copy'] as TxMode[], kernel: true, abAllModes: true, noCacheRun: true, warmUpSeconds: 20, rounds: 3, q35: true, packed: true, coldBoot: true, results: 'appliance' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new BenchUsageError(`${a}: needs a value`);
      return v;
    };
    if (a === '--requests') o.requests = Number(value());
    else if (a === '--iterations') o.iterations = Number(value());
    else if (a === '--modes') o.modes = value().split(',') as TxMode[];
    else if (a === '--no-kernel') o.kernel = false;
    else if (a === '--no-packed') o.packed = false;
    else if (a === '--no-cold-boot') o.coldBoot = false;
    else if (a === '--results') {
      o.results = value();
      if (!/^[a-z0-9-]+$/.test(o.results)) throw new BenchUsageError(`--results: a file name of a-z, 0-9 and -, got ${JSON.stringify(o.results)}`);
    }
    else if (a === '--ab-auto-only') o.abAllModes = false;
    else if (a === '--no-uncached-run') o.noCacheRun = false;
    else if (a === '--warm-up') o.warmUpSeconds = Number(value());
    else if (a === '--rounds') o.rounds = Number(value());
    else if (a === '--node-options') guestSetup.nodeOptions = value().split(/\s+/).filter(Boolean);
    else if (a === '--cpus') guestSetup.cpus = Number(value());
    else if (a === '--machines') {
      const v = value();
      if (v !== 'microvm' && v !== 'microvm,q35' && v !== 'q35,microvm') throw new BenchUsageError(`--machines: expected microvm or microvm,q35, got ${JSON.stringify(v)}`);
      o.q35 = v !== 'microvm';
    } else throw new BenchUsageError(`unknown flag ${a} (flags: --requests N, --iterations N, --modes auto,two-copy,single-copy,zero-copy, --no-kernel, --no-packed, --no-cold-boot, --results NAME, --ab-auto-only, --no-uncached-run, --warm-up SECONDS, --rounds N, --node-options \"OPTS\", --cpus N, --machines microvm[,q35]; or --chart-only alone)`);
  }
  if (!Number.isInteger(o.requests) || o.requests < 8) throw new BenchUsageError('--requests: expected an integer >= 8');
  if (!Number.isInteger(o.iterations) || o.iterations < 1) throw new BenchUsageError('--iterations: expected a positive integer');
  if (!Number.isInteger(o.warmUpSeconds) || o.warmUpSeconds < 1) throw new BenchUsageError('--warm-up: expected whole seconds >= 1');
  if (!Number.isInteger(o.rounds) || o.rounds < 1) throw new BenchUsageError('--rounds: expected a positive integer');
  for (const m of o.modes) if (!['auto', 'two-copy', 'single-copy', 'zero-copy'].includes(m)) throw new BenchUsageError(`--modes: unknown mode ${m}`);
  return o;
}

/**
 * `rounds` runs of ab, back to back; the median round (by req/s) stands for all, the
 * others are kept in `rounds`. This 2-core VM's neighbours make single short runs jump.
 */
async function abMedian(url: string, concurrency: number, requests: number, rounds: number): Promise<AbResult> {
  const all: AbResult[] = [];
  for (let i = 0; i < rounds; i++) all.push(await runAb(url, concurrency, requests));
  const sorted = [...all].sort((a, b) => a.requestsPerSecond - b.requestsPerSecond);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  return { ...median, failed: all.reduce((n, a) => n + a.failed, 0), non2xx: all.reduce((n, a) => n + a.non2xx, 0), rounds: all.map((a) => a.requestsPerSecond) };
}

/** ab for a while before measuring: V8's optimizing compiler needs a few thousand requests. */
async function warmUp(url: string, seconds: number): Promise<void> {
  await runAb(url, 1, 1_000_000, seconds);
}

/** After a warm-up: ab -c 1 and -c 8 on the page, then (if asked) -c 1 on the small page and ping-pong. */
async function measurePage(app: RunningAppliance, o: { requests: number; rounds: number; iterations: number; warmUpSeconds: number }, extras: boolean): Promise<Pick<GuestResult, 'ab' | 'abSmall' | 'pingPong'>> {
  const url = `http://127.0.0.1:${app.webPort}${PAGE}`;
  await warmUp(url, o.warmUpSeconds);
  const ab = [await abMedian(url, 1, o.requests, o.rounds), await abMedian(url, 8, o.requests, o.rounds)];
  if (!extras) return { ab, abSmall: null, pingPong: [] };
  const abSmall = await abMedian(`http://127.0.0.1:${app.webPort}${SMALL_PAGE}`, 1, o.requests, o.rounds);
  return { ab, abSmall, pingPong: await pingPong(app.pingPongPort, o.iterations) };
}

const r1 = (v: number): number => Math.round(v * 10) / 10;
const r2 = (v: number): number => Math.round(v * 100) / 100;

const guestName = (g: GuestResult): string =>
  g.drivers === 'kernel' ? 'linux drivers (q35)' : g.machine === 'q35' ? `ours ${g.txMode}, q35 (before)` : g.variant === 'no-cache' ? `ours ${g.txMode}, no file cache` : g.variant === 'packed' ? `ours ${g.txMode}, packed rings` : g.variant === 'cold-boot' ? `ours ${g.txMode}, booted cold (virtio-mmio)` : `ours ${g.txMode}`;

/** The chart of one run's guests (measured figures only): bench/results/appliance.svg. */
function writeChart(guests: readonly GuestResult[], o: { requests: number; rounds: number; iterations: number }, svgPath: string, when: Date): string {
  const name = guestName;
  // Measured figures only. req/s: the median round, the line from the slowest to the
  // fastest round; ms per request (ab's mean, concurrency / req/s): the same rounds.
  const roundRange = (a: AbResult): readonly [number, number] | undefined => (a.rounds && a.rounds.length > 1 ? [Math.min(...a.rounds), Math.max(...a.rounds)] : undefined);
  const bars: Bar[] = [
    ...guests.flatMap((g) => g.ab.map((a) => ({ group: `ab -c ${a.concurrency}: req/s`, label: name(g), value: a.requestsPerSecond, ...(roundRange(a) ? { range: roundRange(a)! } : {}) }))),
    ...guests.flatMap((g) =>
      g.ab.map((a) => {
        const r = roundRange(a);
        return { group: `ab -c ${a.concurrency}: ms per request`, label: name(g), value: a.meanMsPerRequest, ...(r ? { range: [(1000 * a.concurrency) / r[1], (1000 * a.concurrency) / r[0]] as const } : {}) };
      }),
    ),
    ...guests.flatMap((g) => g.pingPong.map((p) => ({ group: `ping-pong ${p.sizeBytes} B: p50 us`, label: name(g), value: p.p50Us }))),
  ];
  const page = `GET ${PAGE} (133 KB) via the TCP forward, a connection per request; median of ${o.rounds} rounds of ${o.requests}; line: slowest to fastest round`;
  const panels: Record<string, Panel> = {};
  for (const c of [1, 8]) {
    panels[`ab -c ${c}: req/s`] = { better: 'higher', note: page };
    panels[`ab -c ${c}: ms per request`] = { better: 'lower', note: page };
  }
  for (const size of [8192, 16384]) panels[`ping-pong ${size} B: p50 us`] = { better: 'lower', note: `p50 of ${o.iterations} round trips of ${size} bytes on one connection via the TCP forward (p99: appliance.json)` };
  writeFileSync(svgPath, barChartSvg(`appliance, QEMU TCG, one run (${when.toISOString().slice(0, 16)}Z)`, bars, panels));
  return svgPath;
}

export default async function appliance(argv: string[]): Promise<void> {
  if (argv[0] === '--chart-only') {
    // Draws the chart again from the last run's results (no guest is booted).
    const results = JSON.parse(readFileSync(join(RESULTS_DIR, 'appliance.json'), 'utf8')) as { guests: GuestResult[]; requests: number; abRounds: number; iterations: number; machine: { date: string } };
    const svg = writeChart(results.guests, { requests: results.requests, rounds: results.abRounds, iterations: results.iterations }, join(RESULTS_DIR, 'appliance.svg'), new Date(results.machine.date));
    console.log(`chart: ${svg} (from the run of ${results.machine.date})`);
    return;
  }
  let o;
  try {
    o = parseArgs(argv);
  } catch (e) {
    console.error(`bench appliance: ${(e as Error).message}`);
    process.exit(2);
  }
  if (spawnSync('ab', ['-V']).error) {
    console.error('bench appliance: ab not found (apt-get install -y apache2-utils)');
    process.exit(1);
  }
  const guests: GuestResult[] = [];
  const modes = o.modes.includes('auto') ? o.modes : ['auto' as TxMode, ...o.modes];
  for (const mode of modes) {
    console.log(`\nour drivers, tx-mode ${mode}`);
    guests.push(
      await withGuest('ours', mode, async (app) => {
        const url = `http://127.0.0.1:${app.webPort}${PAGE}`;
        const ab: AbResult[] = [];
        if (mode === 'auto' || o.abAllModes) {
          await warmUp(url, o.warmUpSeconds);
          ab.push(await abMedian(url, 1, o.requests, o.rounds));
          ab.push(await abMedian(url, 8, o.requests, o.rounds));
        }
        const abSmall = mode === 'auto' || o.abAllModes ? await abMedian(`http://127.0.0.1:${app.webPort}${SMALL_PAGE}`, 1, o.requests, o.rounds) : null;
        const pp = await pingPong(app.pingPongPort, o.iterations);
        return { drivers: 'ours' as const, machine: 'microvm' as const, txMode: mode, bootMs: Math.round(app.bootMs), ab, abSmall, pingPong: pp };
      }),
    );
  }
  /** Our drivers, tx-mode auto, on microvm, in one of the variants beside the default. */
  const variantRun = (variant: 'packed' | 'no-cache' | 'cold-boot', cached: boolean, guestArgs: string[], ring?: 'packed', coldBoot = false): Promise<GuestResult> =>
    withGuest(
      'ours',
      'auto',
      async (app) => ({ drivers: 'ours' as const, machine: 'microvm' as const, variant, txMode: 'auto' as TxMode, bootMs: Math.round(app.bootMs), ...(await measurePage(app, o, cached)) }),
      guestArgs,
      'microvm',
      ring,
      coldBoot,
    );
  if (o.packed) {
    // The same guest with the vsock rings packed (QEMU's vhost-user-vsock packed=on, our
    // daemon offers it, our driver insists on it); the virtio-fs rings stay split.
    console.log('\nour drivers, tx-mode auto, packed vsock rings');
    guests.push(await variantRun('packed', true, [], 'packed'));
  }
  if (o.noCacheRun) {
    // The same guest without the webserver's file cache: every request stats, opens and
    // reads the page through virtio-fs (as Toro does), so the difference to "ours auto"
    // is what the reads cost.
    console.log('\nour drivers, tx-mode auto, no file cache (every request reads the page through virtio-fs)');
    guests.push(await variantRun('no-cache', false, ['--no-cache']));
  }
  if (o.coldBoot) {
    // The same image booted cold, its devices on virtio-mmio: the default before saved VM
    // states, against which the restored guest (devices on hotplugged PCI) must not regress.
    console.log('\nour drivers, tx-mode auto, microvm booted cold (virtio-mmio devices)');
    guests.push(await variantRun('cold-boot', true, [], undefined, true));
  }
  if (o.q35) {
    console.log('\nthe path before microvm: q35 + PCI, 1 GiB, no snapshot; our drivers, tx-mode auto');
    guests.push(
      await withGuest(
        'ours',
        'auto',
        async (app) => ({ drivers: 'ours' as const, machine: 'q35' as const, txMode: 'auto' as TxMode, bootMs: Math.round(app.bootMs), ...(await measurePage(app, o, true)) }),
        [],
        'q35',
      ),
    );
  }
  if (o.kernel) {
    console.log('\nkernel drivers (vmw_vsock_virtio_transport + virtiofs), q35');
    guests.push(
      await withGuest('kernel', undefined, async (app) => ({ drivers: 'kernel' as const, machine: 'q35' as const, txMode: null, bootMs: Math.round(app.bootMs), ...(await measurePage(app, o, true)) }), [], 'q35'),
    );
  }

  const name = guestName;
  const ours = guests.find((g) => g.drivers === 'ours' && g.machine === 'microvm' && g.txMode === 'auto' && g.variant === undefined)!;
  const before = guests.find((g) => g.drivers === 'ours' && g.machine === 'q35');
  const packed = guests.find((g) => g.variant === 'packed');
  const kernel = guests.find((g) => g.drivers === 'kernel');

  const abRows: Array<Record<string, string | number>> = [];
  for (const g of guests) {
    for (const a of g.ab) {
      const k = kernel?.ab.find((x) => x.concurrency === a.concurrency);
      abRows.push({
        guest: name(g),
        c: a.concurrency,
        n: a.requests,
        failed: a.failed + a.non2xx,
        'req/s': r1(a.requestsPerSecond),
        'ms/req': r2(a.meanMsPerRequest),
        'ttfb ms': a.meanWaitingMs,
        'req/s vs linux': g.drivers === 'kernel' || !k ? '' : `${r2(a.requestsPerSecond / k.requestsPerSecond)}x`,
        'vs toro tcg 470': a.concurrency === 1 ? `${r2(a.requestsPerSecond / TORO.tcgHere.requestsPerSecond)}x` : '',
        'rounds req/s': (a.rounds ?? []).map((x) => Math.round(x)).join(' / '),
      });
    }
  }
  for (const g of guests) {
    if (!g.abSmall) continue;
    const k = kernel?.abSmall;
    abRows.push({ guest: `${name(g)}, ${SMALL_PAGE} (1.7 KB)`, c: 1, n: g.abSmall.requests, failed: g.abSmall.failed + g.abSmall.non2xx, 'req/s': r1(g.abSmall.requestsPerSecond), 'ms/req': r2(g.abSmall.meanMsPerRequest), 'ttfb ms': g.abSmall.meanWaitingMs, 'req/s vs linux': g.drivers === 'kernel' || !k ? '' : `${r2(g.abSmall.requestsPerSecond / k.requestsPerSecond)}x`, 'vs toro tcg 470': '' });
  }
  abRows.push({ guest: 'toro (blog, other machine)', c: 1, n: 1000, failed: '', 'req/s': TORO.abC1.requestsPerSecond, 'ms/req': TORO.abC1.meanMsPerRequest, 'ttfb ms': '', 'req/s vs linux': '', 'vs toro tcg 470': '' });
  abRows.push({ guest: 'toro (TCG, this kind of machine)', c: 1, n: '', failed: '', 'req/s': TORO.tcgHere.requestsPerSecond, 'ms/req': TORO.tcgHere.meanMsPerRequest, 'ttfb ms': '', 'req/s vs linux': '', 'vs toro tcg 470': '' });
  printTable(`webserver, ${PAGE} (133 KB), ab through the daemon's TCP forward (QEMU TCG, 2-core machine), median of ${o.rounds} rounds of ${o.requests} requests`, abRows);

  const ppRows: Array<Record<string, string | number>> = [];
  for (const g of guests) {
    for (const p of g.pingPong) {
      const k = kernel?.pingPong.find((x) => x.sizeBytes === p.sizeBytes);
      ppRows.push({
        guest: name(g),
        bytes: p.sizeBytes,
        'p50 us': r1(p.p50Us),
        'p99 us': r1(p.p99Us),
        'mean us': r1(p.meanUs),
        'p50 vs linux': g.drivers === 'kernel' || !k ? '' : `${r2(p.p50Us / k.p50Us)}x`,
        'p99 vs linux': g.drivers === 'kernel' || !k ? '' : `${r2(p.p99Us / k.p99Us)}x`,
      });
    }
  }
  printTable(`ping-pong over the TCP forward, ${o.iterations} round trips per size`, ppRows);
  console.log(`  toro (blog, another machine): 8192 B: ${TORO.pingPongMs[8192]} ms, 16384 B: ${TORO.pingPongMs[16384]} ms (the "time" its ping-pong test printed; the post does not say per what)`);
  if (packed) {
    const pp = (size: number): string => {
      const a = packed.pingPong.find((p) => p.sizeBytes === size);
      const b = ours.pingPong.find((p) => p.sizeBytes === size);
      return a && b ? `${r2(a.p50Us / b.p50Us)}x` : '?';
    };
    console.log(`\npacked vsock rings vs split, ${PAGE}: -c 1 ${r2(packed.ab[0]!.requestsPerSecond / ours.ab[0]!.requestsPerSecond)}x, -c 8 ${r2(packed.ab[1]!.requestsPerSecond / ours.ab[1]!.requestsPerSecond)}x req/s; ping-pong p50 8192 B ${pp(8192)}, 16384 B ${pp(16384)}`);
  }
  const coldBooted = guests.find((g) => g.variant === 'cold-boot');
  if (coldBooted) {
    console.log(`\nrestored (default, PCI devices) vs booted cold (virtio-mmio devices), ${PAGE}: -c 1 ${r2(ours.ab[0]!.requestsPerSecond / coldBooted.ab[0]!.requestsPerSecond)}x, -c 8 ${r2(ours.ab[1]!.requestsPerSecond / coldBooted.ab[1]!.requestsPerSecond)}x (>= 1: no regression)`);
  }
  if (before) {
    console.log(`\nmicrovm (default) vs q35 (the path before), ${PAGE}: -c 1 ${r2(ours.ab[0]!.requestsPerSecond / before.ab[0]!.requestsPerSecond)}x, -c 8 ${r2(ours.ab[1]!.requestsPerSecond / before.ab[1]!.requestsPerSecond)}x (>= 1: no regression)`);
  }
  console.log(`\n* Toro's figures are from ${TORO.machine}; they are typed in, not measured here, and not drawn in the chart.`);
  console.log(`  ${TORO.tcgHereNote}`);

  const path = writeResults(o.results, {
    command: `npm run bench -- appliance ${argv.join(' ')}`.trim(),
    page: PAGE,
    requests: o.requests,
    iterations: o.iterations,
    warmUpSeconds: o.warmUpSeconds,
    abRounds: o.rounds,
    guestNodeOptions: guestSetup.nodeOptions,
    guestCpus: guestSetup.cpus,
    guests,
    // The default (restored, PCI devices) against the same image booted cold (virtio-mmio devices), same run.
    restoredVsColdBoot: coldBooted
      ? {
          abC1RequestsPerSecond: r2(ours.ab[0]!.requestsPerSecond / coldBooted.ab[0]!.requestsPerSecond),
          abC8RequestsPerSecond: r2(ours.ab[1]!.requestsPerSecond / coldBooted.ab[1]!.requestsPerSecond),
        }
      : null,
    // The default path (microvm) against the path before it (q35), same run: >= 1 is no regression.
    microvmVsQ35: before
      ? {
          abC1RequestsPerSecond: r2(ours.ab[0]!.requestsPerSecond / before.ab[0]!.requestsPerSecond),
          abC8RequestsPerSecond: r2(ours.ab[1]!.requestsPerSecond / before.ab[1]!.requestsPerSecond),
        }
      : null,
    // Packed vsock rings against split, same machine and transmit mode, same run (req/s: > 1 is faster).
    packedVsSplit: packed
      ? {
          abC1RequestsPerSecond: r2(packed.ab[0]!.requestsPerSecond / ours.ab[0]!.requestsPerSecond),
          abC8RequestsPerSecond: r2(packed.ab[1]!.requestsPerSecond / ours.ab[1]!.requestsPerSecond),
        }
      : null,
    ratiosVsLinux: kernel
      ? {
          abC1RequestsPerSecond: r2(ours.ab[0]!.requestsPerSecond / kernel.ab[0]!.requestsPerSecond),
          abC8RequestsPerSecond: r2(ours.ab[1]!.requestsPerSecond / kernel.ab[1]!.requestsPerSecond),
          pingPongP50: Object.fromEntries(ours.pingPong.map((p) => [p.sizeBytes, r2(p.p50Us / kernel.pingPong.find((x) => x.sizeBytes === p.sizeBytes)!.p50Us)])),
        }
      : null,
    toro: TORO,
  });
  const svgPath = writeChart(guests, o, join(path, '..', `${o.results}.svg`), new Date());
  console.log(`\nresults: ${path}\nchart: ${svgPath}`);
}
