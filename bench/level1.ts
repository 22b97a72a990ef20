// Level-1 benchmark (DESIGN.md "Benchmarks, in three levels"): the vsock driver against
// the device emulator in a worker thread, guest memory a SharedArrayBuffer.
//
//   throughput  guest -> host 'sink', per transmit mode and write size (MB/s, 10^6 bytes)
//   pingpong    guest writes `size` bytes to a host 'echo' and waits for them back (p50/p99 us)
//   bounds      in the same run: Buffer.copy of the same bytes in the same write sizes,
//               and Node streaming them through a Unix socket pair
//
// Every (mode, size) and both bounds run in each of `--rounds` interleaved rounds (default
// 5); the tables give the median round, the min..max and the spread, and per MB the
// counts that say why a mode is fast or slow: packets, kicks, interrupts, credit stalls,
// bytes copied, and garbage collection (collections and ms, driver thread and device
// worker apart).
//
// `npm run bench -- level1 [--quick] [--rounds=N] [--modes=zero-copy,...] [--sizes=65536,...] [--no-pingpong] [--no-bounds]
//   [--windows=262144,...] [--sinks=views,stream]`.
//   --sinks: how the device's sink reads (default views of guest memory; stream: 'data'
//   events, a copy of each payload).
//   --windows: the credit window, the driver's and the device's buf_alloc alike (default
//   8 MiB, the writer's ring: the 256 KiB both default to let only four 64 KiB packets be in
//   flight, and every fourth waited for a CREDIT_UPDATE).
//   With several sinks or windows, each mode runs once per combination, interleaved like the
//   modes, in rows named mode@window and "mode sink".
// Writes bench/results/level1.json (only for a full run: with a filter it just prints).
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import type { DeviceWorkerEnv } from '../kernel/transport/inprocess-worker.js';
import type { VirtioDeviceModel } from '../kernel/transport/virtio-device.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { VsockDriver, type TxMode, type VsockSocket } from '../drivers/virtio-vsock/index.js';
import { percentile, printTable, spreadOf, writeResults } from './report.js';
import { rejectUnknownFlags } from './usage.js';

// The device worker runs this very module's createDevice (below): the vsock device with
// a count-only sink and an echo, so the figures measure the data path and not the
// SHA-256 (about 1 GB/s) that the test apps of device/worker-device.ts compute.
const DEVICE_MODULE = new URL(import.meta.url);
const SINK_PORT = 9000;
const ECHO_PORT = 9001;
const MODES: Exclude<TxMode, 'auto'>[] = ['two-copy', 'single-copy', 'zero-copy'];
const THROUGHPUT_SIZES = [4096, 65536, 1048576];
const PINGPONG_SIZES = [8192, 16384];
/** Bytes in flight per stream: the writer's ring of buffers (reused after each write callback). */
// 8 MiB: 128 writes of 64 KiB in flight. With 2 MiB (and the window alike) zero copy at
// 64 KiB made 6,572 and 7,556 MB/s against 10,821 and 8,887 with 8 MiB, interleaved runs
// of 3 rounds: fewer wake-ups per MB (kicks 1 -> 0.2, interrupts 2.2 -> 1.3-1.6).
const RING_BYTES = 8 << 20;
/** How the device's sink reads: views of guest memory (no copy), or a stream ('data': a copy per packet). */
type SinkKind = 'views' | 'stream';
/** The credit window of both sides by default: the writer's ring (see the top). */
const WINDOW_BYTES = RING_BYTES;

type ThroughputRow = {
  mode: string;
  size: number;
  /** Median of the rounds, then the smallest and largest round and (max - min) / median. */
  MBps: number;
  MBps_min: number;
  MBps_max: number;
  spread: number;
  /** CPU time of both threads per MB moved (median round). */
  cpu_us_per_MB: number;
  /** Per MB (median round): packets, kicks (driver -> device), interrupts, credit stalls; bytes copied per byte sent. */
  pkts_per_MB: number;
  kicks_per_MB: number;
  irqs_per_MB: number;
  stalls_per_MB: number;
  copies_per_byte: number;
  /** Garbage collection per MB (median round): collections and ms, driver thread / device worker. */
  gc_per_MB: string;
  gc_ms_per_MB: string;
};

/** Garbage collections seen by a PerformanceObserver of this thread: count and ms, cumulative. */
interface GcTotals {
  count: number;
  ms: number;
}

/** Starts counting this thread's garbage collections; returns the live totals. */
function watchGc(): GcTotals {
  const totals: GcTotals = { count: 0, ms: 0 };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      totals.count++;
      totals.ms += e.duration;
    }
  }).observe({ entryTypes: ['gc'] });
  return totals;
}
type PingpongRow = {
  mode: string;
  size: number;
  p50_us: number;
  p99_us: number;
};

interface Guest {
  transport: InProcessTransport;
  driver: VsockDriver;
  /** The device worker's GC totals in its last sink report (the start of the next stream). */
  deviceGc: GcTotals;
  /** The device's bytes copied out of guest memory for host readers, at its last sink report. */
  deviceCopied: number;
}

async function startGuest(mode: TxMode, window?: number, sink: SinkKind = 'views'): Promise<Guest> {
  const transport = await InProcessTransport.worker(
    { module: DEVICE_MODULE, options: { guestCid: 3, bufAlloc: window, sink } },
    { memoryBytes: 64 << 20 },
  );
  transport.on('error', (e: Error) => console.error(`device worker: ${e.message}`));
  const driver = await VsockDriver.start(transport, { txMode: mode, bufAlloc: window });
  return { transport, driver, deviceGc: { count: NaN, ms: NaN }, deviceCopied: 0 };
}

async function stopGuest(g: Guest): Promise<void> {
  g.driver.close();
  await g.transport.close();
}

async function connect(driver: VsockDriver, port: number): Promise<VsockSocket> {
  const s = driver.connect({ cid: 2, port });
  await once(s, 'connect');
  return s;
}

/** Buffers to write from: DMA memory for zero copy, ordinary Buffers otherwise. */
function makeRing(driver: VsockDriver, mode: TxMode, size: number): Buffer[] {
  const n = Math.max(4, Math.ceil(RING_BYTES / size));
  const ring: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const b = mode === 'zero-copy' ? driver.allocBuffer(size) : Buffer.allocUnsafe(size);
    b.fill(i & 0xff);
    ring.push(b);
  }
  return ring;
}

function freeRing(driver: VsockDriver, mode: TxMode, ring: Buffer[]): void {
  if (mode === 'zero-copy') for (const b of ring) driver.freeBuffer(b);
}

/** Waits for the sink's report of a closed connection: bytes received, and the worker's GC totals then. */
function sinkDone(t: InProcessTransport): Promise<{ received: number; gc: GcTotals; copied: number }> {
  return new Promise((resolve) => {
    const on = (m: { app?: string; port?: number; received?: number; gc?: GcTotals; copied?: number }): void => {
      if (m && m.app === 'sink' && m.port === SINK_PORT) {
        t.off('device-message', on);
        resolve({ received: m.received ?? -1, gc: m.gc ?? { count: NaN, ms: NaN }, copied: m.copied ?? NaN });
      }
    };
    t.on('device-message', on);
  });
}

/**
 * Streams `total` bytes in writes of `size` to the sink; returns MB/s until the sink saw
 * them all, and the CPU time of the whole process (both threads) per MB.
 */
interface StreamResult {
  MBps: number;
  cpuUsPerMB: number;
  /** Driver events per MB (counts, not times: they do not depend on how busy the machine is). */
  packetsPerMB: number;
  kicksPerMB: number;
  interruptsPerMB: number;
  creditStallsPerMB: number;
  copiedBytesPerByte: number;
  /** Garbage collection per MB: this (driver) thread and the device worker. */
  gcPerMB: { driver: number; device: number };
  gcMsPerMB: { driver: number; device: number };
}

/** The driver thread's collections (the device worker reports its own with each sink report). */
let driverGc: GcTotals = { count: 0, ms: 0 };

async function streamToSink(g: Guest, mode: TxMode, size: number, total: number): Promise<StreamResult> {
  const ring = makeRing(g.driver, mode, size);
  const sock = await connect(g.driver, SINK_PORT);
  const done = sinkDone(g.transport);
  const before = { ...g.driver.stats };
  const gc0 = { ...driverGc };
  const cpu0 = process.cpuUsage();
  const start = process.hrtime.bigint();
  let sent = 0;
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    const free = ring.slice();
    const pump = (): void => {
      while (sent < total && free.length > 0) {
        const b = free.pop()!;
        sent += size;
        sock.write(b, () => {
          free.push(b);
          pump();
        });
      }
      if (sent >= total && !sock.writableEnded) sock.end(resolve);
    };
    pump();
  });
  const { received, gc: deviceGc, copied: deviceCopied } = await done;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const gc1 = { ...driverGc };
  const deviceGc0 = g.deviceGc;
  g.deviceGc = deviceGc;
  const deviceCopied0 = g.deviceCopied;
  g.deviceCopied = deviceCopied;
  sock.destroy();
  freeRing(g.driver, mode, ring);
  if (received !== total) throw new Error(`sink received ${received} bytes of ${total}`);
  const st = g.driver.stats;
  const mb = total / 1e6;
  return {
    MBps: total / seconds / 1e6,
    cpuUsPerMB: (cpu.user + cpu.system) / mb,
    packetsPerMB: (st.txPackets - before.txPackets) / mb,
    kicksPerMB: (st.kicks - before.kicks) / mb,
    interruptsPerMB: (st.interrupts - before.interrupts) / mb,
    creditStallsPerMB: (st.txCreditStalls - before.txCreditStalls) / mb,
    // The driver's copies into DMA memory and the device's out of guest memory.
    copiedBytesPerByte: (st.txCopiedBytes - before.txCopiedBytes + deviceCopied - deviceCopied0) / total,
    gcPerMB: { driver: (gc1.count - gc0.count) / mb, device: (deviceGc.count - deviceGc0.count) / mb },
    gcMsPerMB: { driver: (gc1.ms - gc0.ms) / mb, device: (deviceGc.ms - deviceGc0.ms) / mb },
  };
}

/** The round whose MB/s is the median (its counts go with the median figure). */
function medianRound(rs: StreamResult[]): StreamResult {
  const m = percentile(rs.map((r) => r.MBps), 50);
  return rs.reduce((best, r) => (Math.abs(r.MBps - m) < Math.abs(best.MBps - m) ? r : best));
}



async function pingpong(g: Guest, mode: TxMode, size: number, iterations: number): Promise<{ p50: number; p99: number }> {
  const [msg] = makeRing(g.driver, mode, size);
  const sock = await connect(g.driver, ECHO_PORT);
  const samples = new Float64Array(iterations);
  let got = 0;
  let wake: (() => void) | null = null;
  sock.on('data', (d: Buffer) => {
    got += d.length;
    if (got >= size && wake) {
      const w = wake;
      wake = null;
      w();
    }
  });
  const warmup = Math.min(200, iterations);
  for (let i = -warmup; i < iterations; i++) {
    got = 0;
    const t0 = process.hrtime.bigint();
    const back = new Promise<void>((resolve) => (wake = resolve));
    sock.write(msg!);
    await back;
    if (i >= 0) samples[i] = Number(process.hrtime.bigint() - t0) / 1000;
  }
  sock.destroy();
  freeRing(g.driver, mode, [msg!]);
  return { p50: percentile(samples, 50), p99: percentile(samples, 99) };
}

/** Buffer.copy of `total` bytes in pieces of `size`, from and into rings like the stream's. */
function memcpyMBps(size: number, total: number): number {
  const n = Math.max(4, Math.ceil(RING_BYTES / size));
  const src = Buffer.alloc(n * size, 1);
  const dst = Buffer.alloc(n * size);
  const run = (bytes: number): number => {
    const start = process.hrtime.bigint();
    for (let off = 0, i = 0; off < bytes; off += size, i = (i + 1) % n) src.copy(dst, i * size, i * size, i * size + size);
    return Number(process.hrtime.bigint() - start) / 1e9;
  };
  run(Math.min(total, 16 << 20));
  return total / run(total) / 1e6;
}

/** Node streaming `total` bytes in writes of `size` through a Unix domain socket pair. */
async function unixSocketPairMBps(size: number, total: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'level1-'));
  const path = join(dir, 's');
  let received = 0;
  let finished: () => void = () => {};
  const allIn = new Promise<void>((resolve) => (finished = resolve));
  const server = net.createServer((s) => {
    s.on('data', (d: Buffer) => {
      received += d.length;
      if (received >= total) finished();
    });
  });
  server.listen(path);
  await once(server, 'listening');
  const client = net.connect(path);
  await once(client, 'connect');
  const msg = Buffer.alloc(size, 2);
  const start = process.hrtime.bigint();
  let sent = 0;
  while (sent < total) {
    sent += size;
    if (!client.write(msg)) await once(client, 'drain');
  }
  await allIn;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  client.destroy();
  server.close();
  rmSync(dir, { recursive: true, force: true });
  return total / seconds / 1e6;
}

const FLAGS = ['--quick', '--modes=', '--rounds=', '--windows=', '--sinks=', '--sizes=', '--no-pingpong', '--no-bounds'];
export const usage = 'npm run bench -- level1 [--quick] [--rounds=N] [--modes=two-copy,single-copy,zero-copy] [--windows=BYTES,...] [--sinks=views,stream] [--sizes=BYTES,...] [--no-pingpong] [--no-bounds]';

export default async function level1(args: string[]): Promise<void> {
  rejectUnknownFlags(args, FLAGS);
  const quick = args.includes('--quick');
  const listArg = (name: string): string[] | null => {
    const a = args.find((x) => x.startsWith(`--${name}=`));
    return a ? a.slice(name.length + 3).split(',') : null;
  };
  const txModes = (listArg('modes') as typeof MODES | null) ?? MODES;
  const windowsArg = listArg('windows')?.map(Number) ?? null;
  const windows = windowsArg ?? [WINDOW_BYTES];
  for (const w of windows) if (!Number.isInteger(w) || w < 4096) throw new Error(`bench level1: --windows takes byte counts of at least 4096 (got ${w})`);
  // What runs: each transmit mode, once per credit window when --windows is given.
  const sinksArg = listArg('sinks') as SinkKind[] | null;
  const sinks: SinkKind[] = sinksArg ?? ['views'];
  for (const k of sinks) if (k !== 'views' && k !== 'stream') throw new Error(`bench level1: --sinks takes views and/or stream (got ${k})`);
  const variants = new Map<string, { mode: Exclude<TxMode, 'auto'>; window?: number; sink: SinkKind }>();
  for (const mode of txModes) {
    for (const window of windows) {
      for (const sink of sinks) {
        const label = `${mode}${windows.length > 1 ? `@${window}` : ''}${sinks.length > 1 ? ` ${sink}` : ''}`;
        variants.set(label, { mode, window, sink });
      }
    }
  }
  const modes = [...variants.keys()];
  const sizes = listArg('sizes')?.map(Number) ?? THROUGHPUT_SIZES;
  const doPingpong = !args.includes('--no-pingpong');
  const doBounds = !args.includes('--no-bounds');
  const filtered = txModes !== MODES || windowsArg !== null || sinksArg !== null || sizes !== THROUGHPUT_SIZES || !doPingpong || !doBounds;
  // Long enough that a round is not one scheduling hiccup: at several GB/s, 128 MiB took
  // 20-40 ms and rounds swung 5x.
  const totalFor = (size: number): number => (quick ? 16 << 20 : size < 65536 ? 256 << 20 : 1 << 30);
  const iterations = quick ? 500 : 3000;
  const roundsArg = listArg('rounds');
  const runs = roundsArg ? Number(roundsArg[0]) : quick ? 1 : 5;
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`bench level1: --rounds takes a whole number of at least 1 (got ${roundsArg?.[0]})`);
  driverGc = watchGc();

  const throughput: ThroughputRow[] = [];
  const pingpongRows: PingpongRow[] = [];
  const zeroOverTwoByRound: Record<string, number[]> = {};
  // One guest (driver + device worker) per mode, all started up front, and the runs
  // interleaved: round r measures every (size, mode) and the bounds back to back, so a
  // busy spell on a shared machine hurts all of them alike; the median round counts.
  const guests = new Map<string, Guest>();
  const memcpyRounds: Record<string, number[]> = {};
  const unixRounds: Record<string, number[]> = {};
  const memcpy: Record<string, number> = {};
  const unix: Record<string, number> = {};
  try {
    for (const [label, v] of variants) {
      const g = await startGuest(v.mode, v.window, v.sink);
      guests.set(label, g);
      await streamToSink(g, v.mode, 65536, 16 << 20); // warm-up
    }
    const rounds = new Map<string, StreamResult[]>();
    for (let round = 0; round < runs; round++) {
      for (const size of sizes) {
        // The modes' order turns with the round, so none always runs first after the bounds.
        const order = modes.map((_, i) => modes[(i + round) % modes.length]!);
        for (const mode of order) {
          const r = await streamToSink(guests.get(mode)!, variants.get(mode)!.mode, size, totalFor(size));
          const key = `${mode}/${size}`;
          if (!rounds.has(key)) rounds.set(key, []);
          rounds.get(key)!.push(r);
        }
        if (doBounds) {
          (memcpyRounds[size] ??= []).push(memcpyMBps(size, totalFor(size)));
          (unixRounds[size] ??= []).push(await unixSocketPairMBps(size, totalFor(size)));
        }
      }
      console.error(`[level1] round ${round + 1} of ${runs} done`);
    }
    for (const size of Object.keys(memcpyRounds)) {
      memcpy[size] = Math.round(percentile(memcpyRounds[size]!, 50));
      unix[size] = Math.round(percentile(unixRounds[size]!, 50));
    }
    for (const mode of modes) {
      for (const size of sizes) {
        const rs = rounds.get(`${mode}/${size}`)!;
        const sp = spreadOf(rs.map((r) => r.MBps));
        const r = medianRound(rs);
        throughput.push({
          mode,
          size,
          MBps: Math.round(sp.median),
          MBps_min: Math.round(sp.min),
          MBps_max: Math.round(sp.max),
          spread: round2(sp.spread),
          cpu_us_per_MB: Math.round(r.cpuUsPerMB),
          pkts_per_MB: round1(r.packetsPerMB),
          kicks_per_MB: round1(r.kicksPerMB),
          irqs_per_MB: round1(r.interruptsPerMB),
          stalls_per_MB: round1(r.creditStallsPerMB),
          copies_per_byte: round2(r.copiedBytesPerByte),
          gc_per_MB: `${round2(r.gcPerMB.driver)} / ${round2(r.gcPerMB.device)}`,
          gc_ms_per_MB: `${round2(r.gcMsPerMB.driver)} / ${round2(r.gcMsPerMB.device)}`,
        });
      }
    }
    // Per round, not only the median: zero copy against two copies at each size.
    const perRound = (mode: string, size: number): number[] => (rounds.get(`${mode}/${size}`) ?? []).map((r) => r.MBps);
    for (const size of sizes) {
      const z = perRound('zero-copy', size);
      const t = perRound('two-copy', size);
      if (z.length > 0 && z.length === t.length) {
        zeroOverTwoByRound[size] = z.map((v, i) => round2(v / t[i]!));
      }
    }
    for (const mode of modes) {
      for (const size of doPingpong ? PINGPONG_SIZES : []) {
        const { p50, p99 } = await pingpong(guests.get(mode)!, variants.get(mode)!.mode, size, iterations);
        pingpongRows.push({ mode, size, p50_us: round1(p50), p99_us: round1(p99) });
      }
      console.error(`[level1] ${mode}: ${JSON.stringify(pickStats(guests.get(mode)!.driver))}`);
    }
  } finally {
    for (const g of guests.values()) await stopGuest(g);
  }

  const at = (mode: string, size: number): number => throughput.find((r) => r.mode === mode && r.size === size)?.MBps ?? NaN;
  const best64k = Math.max(...MODES.map((m) => at(m, 65536)));
  const ratios = {
    zeroCopy_over_twoCopy_64KiB: round2(at('zero-copy', 65536) / at('two-copy', 65536)),
    best_over_memcpy_64KiB: round2(best64k / memcpy[65536]!),
    best_over_unix_socketpair_64KiB: round2(best64k / unix[65536]!),
  };

  printTable(`level 1: guest -> host stream throughput (MB/s), device in a worker thread, credit window ${windows.map((w) => `${w / 1024} KiB`).join(' / ')}`, throughput);
  printTable('level 1: ping-pong round trip (us)', pingpongRows);
  printTable(
    'bounds, same run (MB/s)',
    THROUGHPUT_SIZES.map((size) => ({ size, memcpy_MBps: memcpy[size]!, unix_socketpair_MBps: unix[size]! })),
  );
  printTable('ratios of the medians (issue 12 targets: zero/two >= 1.5, best/memcpy >= 0.25, best/unix >= 2)', [ratios]);
  if (Object.keys(zeroOverTwoByRound).length > 0) {
    printTable('zero copy / two copies, round by round (target: above 1 in every round)', Object.entries(zeroOverTwoByRound).map(([size, rs]) => ({ size, rounds: rs.join(' ') })));
  }
  if (filtered) return;
  const path = writeResults('level1', {
    throughput,
    pingpong: pingpongRows,
    bounds: { memcpy_MBps: memcpy, unix_socketpair_MBps: unix, memcpyRounds, unixRounds },
    ratios,
    zeroOverTwoByRound,
    settings: { runs, windowBytes: windows[0], sink: 'count-only views (bench/level1.ts createDevice)', quick, iterations, ringBytes: RING_BYTES, totals: Object.fromEntries(THROUGHPUT_SIZES.map((s) => [s, totalFor(s)])) },
  });
  console.log(`\nwrote ${path}`);
}

function pickStats(d: VsockDriver): object {
  const s = d.stats;
  return { txPackets: s.txPackets, txCopies: s.txCopies, txZeroCopyPackets: s.txZeroCopyPackets, txCreditStalls: s.txCreditStalls, kicks: s.kicks, interrupts: s.interrupts };
}

const round1 = (v: number): number => Math.round(v * 10) / 10;
const round2 = (v: number): number => Math.round(v * 100) / 100;

/**
 * Device worker factory (runs in the worker thread): the vsock device, a sink that
 * counts bytes and reports { app: 'sink', port, received } when the guest ends, and an
 * echo for ping-pong.
 */
export function createDevice(options: unknown, env: DeviceWorkerEnv): VirtioDeviceModel {
  const o = options as { guestCid: number; bufAlloc?: number; sink?: SinkKind };
  const device = new VsockDevice({ guestCid: o.guestCid, bufAlloc: o.bufAlloc });
  const gc = watchGc();
  device.host.listen(SINK_PORT, (s) => {
    let received = 0;
    s.on('error', () => {});
    // Zero copy to the host: views of guest memory, finished at once (or, to compare,
    // the stream side: a copy of each payload).
    if (o.sink === 'stream') s.on('data', (d: Buffer) => (received += d.length));
    else {
      s.readViews((v, done) => {
        received += v.length;
        done();
      });
    }
    s.on('end', () => {
      env.post({ app: 'sink', port: SINK_PORT, received, gc: { ...gc }, copied: device.stats.toHostCopiedBytes });
      s.end();
    });
  });
  device.host.listen(ECHO_PORT, (s) => {
    s.on('error', () => {});
    s.on('data', (d: Buffer) => s.write(d));
    s.on('end', () => s.end());
  });
  return device;
}
