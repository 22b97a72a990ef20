// Level 0: pure computation, one thread. Operations per second for
//  - the driver half: add a chain + publish (the kick decision) + collect it used;
//  - the device half: take a chain (walk and validate) + push + flush (the interrupt decision);
//  - a round trip through both;
// for chains of 1 and 2 descriptors, in batches as a batching driver would, on the split
// ring (virtio 1.2, 2.7) and the packed ring (2.8; and packed with VIRTIO_F_IN_ORDER).
// The round trips of every layout are measured in the same run, in interleaved rounds
// (the order rotates every round), and reported as medians with their spread; the
// ratio packed / split is the figure to read. Each round's worker also times the two
// halves after its round trips, so every row is a median of the rounds with its min and
// max. Also the vsock header codec (a median of as many runs).
//
// Every sample runs in a fresh worker thread (this module, started again): a V8 isolate
// of its own, so the loop's call sites see one ring class, as in a guest, where one
// layout is negotiated, and each sample is an independent JIT outcome (they differ by
// up to 1.6x from one process to the next here; the median is over them). Samples
// count CPU time, not wall time: the machine is shared.
//
//   npm run bench -- level0 [--ms=500] [--rounds=7]
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { decodeHeader, encodeHeader, VsockHeader, VSOCK_OP_RW } from '../drivers/virtio-vsock/header.js';
import type { RingLayout } from '../kernel/virtqueue/queue.js';
import { makeRingPair, type RingPair } from '../tests/support/ring-pair.js';
import { opsPerSecond, printTable, writeResults } from './report.js';
import { rejectUnknownFlags } from './usage.js';

const QUEUE = 256;
const BATCH = 64; // chains per publish/flush, as a driver batching its writes would

interface Variant {
  name: string;
  layout: RingLayout;
  inOrder: boolean;
}

const VARIANTS: readonly Variant[] = [
  { name: 'split', layout: 'split', inOrder: false },
  { name: 'packed', layout: 'packed', inOrder: false },
  { name: 'packed in-order', layout: 'packed', inOrder: true },
];

const pair = (v: Variant): RingPair<number> => makeRingPair<number>(QUEUE, { layout: v.layout, inOrder: v.inOrder, eventIdx: true });

/** A full round trip through both halves, a batch at a time, on one ring pair kept across rounds. */
function roundTripLoop(v: Variant, descs: 1 | 2): (n: number) => void {
  const p = pair(v);
  const [addr] = p.buffer(4096);
  const { driver, device } = p;
  const onUsed = (): void => {};
  return (n: number): void => {
    for (let done = 0; done < n; done += BATCH) {
      for (let i = 0; i < BATCH; i++) {
        driver.chainBegin();
        driver.chainAdd(addr, 64, false);
        if (descs === 2) driver.chainAdd(addr + 64, 64, true);
        driver.chainCommit(i);
      }
      driver.publish();
      let c;
      while ((c = device.take()) !== null) device.push(c, descs === 2 ? 64 : 0);
      device.flush();
      driver.drainUsed(onUsed);
    }
  };
}

/** Each half alone: the round-trip loop with a stopwatch around each half's part (wall time). */
function halves(v: Variant, descs: 1 | 2, ms: number): { driverNs: number; deviceNs: number } {
  const p = pair(v);
  const [addr] = p.buffer(4096);
  let deviceNs = 0;
  let driverNs = 0;
  let count = 0;
  const deadline = process.hrtime.bigint() + BigInt(ms) * 1_000_000n;
  const noop = (): void => {};
  while (process.hrtime.bigint() < deadline) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < BATCH; i++) {
      p.driver.chainBegin();
      p.driver.chainAdd(addr, 64, false);
      if (descs === 2) p.driver.chainAdd(addr + 64, 64, true);
      p.driver.chainCommit(i);
    }
    p.driver.publish();
    const t1 = process.hrtime.bigint();
    let c;
    while ((c = p.device.take()) !== null) p.device.push(c, descs === 2 ? 64 : 0);
    p.device.flush();
    const t2 = process.hrtime.bigint();
    p.driver.drainUsed(noop);
    const t3 = process.hrtime.bigint();
    driverNs += Number(t1 - t0 + (t3 - t2));
    deviceNs += Number(t2 - t1);
    count += BATCH;
  }
  return { driverNs: driverNs / count, deviceNs: deviceNs / count };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

type Request = { descs: 1 | 2; ms: number };
/** One round's sample of a configuration. */
type Sample = { roundTrips: number; driverNs: number; deviceNs: number };

/**
 * Round trips per CPU second for `ms` of CPU time after a warm-up: CPU time, not wall
 * time, so that other processes on a shared machine do not count (this thread is the
 * only one running: the main thread waits for it).
 */
function cpuRoundTrips(loop: (n: number) => void, ms: number): number {
  const batch = BATCH * 16;
  const cpuUs = (): number => {
    const c = process.cpuUsage();
    return c.user + c.system;
  };
  const warmEnd = cpuUs() + Math.max(ms, 500) * 1000;
  while (cpuUs() < warmEnd) loop(batch);
  const start = cpuUs();
  let n = 0;
  let now = start;
  while (now - start < ms * 1000) {
    loop(batch);
    n += batch;
    now = cpuUs();
  }
  return n / ((now - start) / 1e6);
}

/**
 * Worker side: one sample, then the worker ends (a fresh isolate, a fresh JIT, per
 * sample). The round trips first (their figure is the one compared), then the halves.
 */
function serveVariant(v: Variant): void {
  parentPort!.once('message', (m: Request) => {
    const roundTrips = cpuRoundTrips(roundTripLoop(v, m.descs), m.ms);
    const sample: Sample = { roundTrips, ...halves(v, m.descs, m.ms) };
    parentPort!.postMessage(sample);
  });
}

if (!isMainThread && (workerData as { level0Variant?: Variant } | null)?.level0Variant) serveVariant((workerData as { level0Variant: Variant }).level0Variant);

/** One measurement in a worker of its own (started from this module). */
async function inWorker<R>(v: Variant, m: Request): Promise<R> {
  const worker = new Worker(new URL(import.meta.url), { workerData: { level0Variant: v } });
  try {
    return await new Promise<R>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.postMessage(m);
    });
  } finally {
    await worker.terminate();
  }
}

const FLAGS = ['--ms=', '--rounds='];
export const usage = 'npm run bench -- level0 [--ms=MS per round (default 500)] [--rounds=N (default 7)]';

export default async function level0(args: string[]): Promise<void> {
  rejectUnknownFlags(args, FLAGS);
  const ms = Number(args.find((a) => a.startsWith('--ms='))?.slice(5) ?? 500);
  const rounds = Number(args.find((a) => a.startsWith('--rounds='))?.slice(9) ?? 7);
  const configs = VARIANTS.flatMap((v) => ([1, 2] as const).map((descs) => ({ v, descs, samples: [] as number[], driverOps: [] as number[], deviceOps: [] as number[] })));
  for (let r = 0; r < rounds; r++) {
    // Rotate the order every round: no configuration always runs first or last.
    for (let k = 0; k < configs.length; k++) {
      const c = configs[(k + r) % configs.length]!;
      const s = await inWorker<Sample>(c.v, { descs: c.descs, ms });
      c.samples.push(s.roundTrips);
      c.driverOps.push(1e9 / s.driverNs);
      c.deviceOps.push(1e9 / s.deviceNs);
    }
  }
  type Row = { layout: string; operation: string; descriptors: number; ops_per_s: number; ns_per_op: number; min_ops_per_s: number; max_ops_per_s: number };
  const row = (layout: string, operation: string, descriptors: number, opsPerS: number[]): Row => {
    const m = median(opsPerS);
    return { layout, operation, descriptors, ops_per_s: m, ns_per_op: 1e9 / m, min_ops_per_s: Math.min(...opsPerS), max_ops_per_s: Math.max(...opsPerS) };
  };
  const rows: Row[] = [];
  for (const c of configs) {
    rows.push(row(c.v.name, 'driver add+kick+collect', c.descs, c.driverOps));
    rows.push(row(c.v.name, 'device take+push', c.descs, c.deviceOps));
    rows.push(row(c.v.name, 'round trip (both halves)', c.descs, c.samples));
  }
  // Packed beside split: round trips per second, medians of the interleaved rounds.
  const ratios = VARIANTS.filter((v) => v.layout === 'packed').flatMap((v) =>
    ([1, 2] as const).map((descs) => {
      const splitSamples = configs.find((c) => c.v.name === 'split' && c.descs === descs)!.samples;
      const packed = configs.find((c) => c.v === v && c.descs === descs)!;
      // Spread of the ratio: each round's packed figure over the same round's split figure.
      const perRound = packed.samples.map((s, i) => s / splitSamples[i]!);
      const split = median(splitSamples);
      return { layout: v.name, descriptors: descs, split_rt_per_s: split, packed_rt_per_s: median(packed.samples), ratio: median(packed.samples) / split, ratio_min: Math.min(...perRound), ratio_max: Math.max(...perRound) };
    }),
  );
  // Header codec.
  const buf = new DataView(new ArrayBuffer(64));
  const h = new VsockHeader().set(3, 1024, 2, 80, VSOCK_OP_RW, 4096, 0, 262144, 0);
  const out = new VsockHeader();
  const codec: number[] = [];
  for (let r = 0; r < rounds; r++) {
    codec.push(
      opsPerSecond((n) => {
        for (let i = 0; i < n; i++) {
          h.fwdCnt = i;
          encodeHeader(h, buf, 0);
          decodeHeader(buf, 0, out);
        }
      }, ms, 10000),
    );
  }
  rows.push(row('-', 'vsock header encode+decode', 0, codec));
  printTable(
    `level 0: a fresh worker thread per sample, queue size ${QUEUE}, batches of ${BATCH} chains; medians of ${rounds} interleaved rounds (min, max); round trips per CPU second over ${ms} ms, then each half timed alone (wall time) for ${ms} ms in the same worker`,
    rows,
  );
  printTable('packed beside split: round trips per second (medians; ratio min/max over the rounds, each round packed / split)', ratios);
  const path = writeResults('level0', { queueSize: QUEUE, batch: BATCH, rounds, msPerRound: ms, rows, packedVsSplit: ratios, samples: configs.map((c) => ({ layout: c.v.name, descriptors: c.descs, roundTripsPerSecond: c.samples })) });
  console.log(`\nwrote ${path}`);
}
